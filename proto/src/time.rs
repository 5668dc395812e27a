//! Times as Ollama writes them (RFC 3339: `expires_at`, `modified_at`,
//! `created_at`), to and from Unix milliseconds, which is how herd.v1 and
//! herd's own state carry them. One place, so the router, the agent and the
//! simulated device agree.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The years a node's time may fall in; anything else is taken as malformed
/// (a node's data must never overflow herd's arithmetic).
const YEARS: std::ops::RangeInclusive<i32> = 1970..=9999;

/// An RFC 3339 time in Unix milliseconds; `None` for anything malformed or
/// out of range.
pub fn rfc3339_ms(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s.trim(), &Rfc3339).ok()?;
    if !YEARS.contains(&t.year()) {
        return None;
    }
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Unix milliseconds as RFC 3339 in UTC (`2026-12-03T07:55:03.123Z`);
/// times out of range are clamped to its ends.
pub fn rfc3339(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    let t = OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .filter(|t| YEARS.contains(&t.year()))
        .unwrap_or(if ms < 0 {
            OffsetDateTime::UNIX_EPOCH
        } else {
            OffsetDateTime::UNIX_EPOCH + time::Duration::days(2_932_896)
        });
    t.format(&Rfc3339).unwrap_or_default()
}

/// Now, as [`rfc3339`] writes it, with nanoseconds (Ollama's `created_at`).
pub fn rfc3339_now() -> String {
    rfc3339_at(std::time::SystemTime::now())
}

/// A wall-clock time in RFC 3339, UTC, to the nanosecond.
pub fn rfc3339_at(t: std::time::SystemTime) -> String {
    OffsetDateTime::from(t).format(&Rfc3339).unwrap_or_default()
}

/// The UTC date (`YYYY-MM-DD`) of a Unix time in seconds.
pub fn utc_date(unix_secs: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp(unix_secs).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let d = t.date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_parse() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(rfc3339_ms("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(
            rfc3339_ms("2023-11-14T22:13:20.5Z"),
            Some(1_700_000_000_500)
        );
        assert_eq!(
            rfc3339_ms("2023-11-14T23:13:20.123456789+01:00"),
            Some(1_700_000_000_123)
        );
        assert_eq!(
            rfc3339_ms("2024-06-04T14:38:31.5-07:00"),
            Some(1_717_537_111_500)
        );
    }

    #[test]
    fn malformed_or_huge_times_are_refused() {
        for bad in [
            "yesterday",
            "",
            "2024-13-01T00:00:00Z",
            "99999999999999-01-01T00:00:00Z",
            "2024-01-01T99999999999999:00:00Z",
            "2024-01-01T00:00:00+99999999999:00",
            "2024-01-01T00:00:00.5x",
        ] {
            assert_eq!(rfc3339_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn milliseconds_format_and_read_back() {
        for ms in [0, 1_000, 1_700_000_000_500, 1_717_537_111_123] {
            assert_eq!(rfc3339_ms(&rfc3339(ms)), Some(ms), "{ms}");
        }
        assert_eq!(rfc3339(1_700_000_000_500), "2023-11-14T22:13:20.5Z");
        assert_eq!(rfc3339(-5), "1970-01-01T00:00:00Z");
        assert!(rfc3339(i64::MAX).starts_with("9999-"));
        assert_eq!(utc_date(1_700_000_000), "2023-11-14");
        assert!(rfc3339_ms(&rfc3339_now()).is_some());
    }
}
