//! The structured JSON log: one JSON object per line, one file per UTC day
//! (`herd-YYYY-MM-DD.jsonl`), oldest files deleted when the directory's
//! total passes a bound. It sits beside the human-readable stderr output
//! (a second `tracing` layer), so operators' tools get JSON and people get text.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use herd_proto::time::utc_date as date_of;

fn system_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Where the log reads the time (Unix seconds); tests inject their own.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// One log file: `herd-DAY.jsonl` is part 0, `herd-DAY.N.jsonl` part N.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct LogFile {
    day: String,
    part: u32,
}

impl LogFile {
    fn parse(name: &str) -> Option<LogFile> {
        let stem = name.strip_prefix("herd-")?.strip_suffix(".jsonl")?;
        match stem.split_once('.') {
            None => Some(LogFile {
                day: stem.to_string(),
                part: 0,
            }),
            Some((day, n)) => Some(LogFile {
                day: day.to_string(),
                part: n.parse().ok()?,
            }),
        }
    }

    fn name(&self) -> String {
        match self.part {
            0 => format!("herd-{}.jsonl", self.day),
            n => format!("herd-{}.{n}.jsonl", self.day),
        }
    }
}

struct State {
    current: Option<LogFile>,
    written: u64,
    file: Option<File>,
}

/// A `MakeWriter` for `tracing_subscriber`'s JSON layer.
///
/// A new file starts each UTC day, and within a day whenever the current
/// file reaches a quarter of the bound; each time, the oldest files are
/// deleted so the directory stays within `max_total_bytes` (give or take
/// the line being written).
#[derive(Clone)]
pub struct DailyJson {
    dir: PathBuf,
    max_total_bytes: u64,
    clock: Clock,
    state: Arc<Mutex<State>>,
}

impl DailyJson {
    /// Log into `dir` (created if missing), keeping its files within
    /// `max_total_bytes` bytes; days follow the system clock in UTC.
    pub fn new(dir: PathBuf, max_total_bytes: u64) -> std::io::Result<Self> {
        Self::with_clock(dir, max_total_bytes, Arc::new(system_secs))
    }

    /// Like [`DailyJson::new`], reading the time from `clock`.
    pub fn with_clock(dir: PathBuf, max_total_bytes: u64, clock: Clock) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(DailyJson {
            dir,
            max_total_bytes,
            clock,
            state: Arc::new(Mutex::new(State {
                current: None,
                written: 0,
                file: None,
            })),
        })
    }

    /// Size at which the current file is closed and the next part begun.
    fn part_bytes(&self) -> u64 {
        (self.max_total_bytes / 4).max(1)
    }

    /// herd's log files in the directory, oldest first, with their sizes.
    fn files(&self) -> Vec<(LogFile, u64, PathBuf)> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut files: Vec<_> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let f = LogFile::parse(&e.file_name().to_string_lossy())?;
                Some((f, e.metadata().ok()?.len(), e.path()))
            })
            .collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        files
    }

    /// Delete the oldest files until the rest, with room for the current
    /// file to fill its part, fit the bound. The newest file stays.
    fn prune(&self) {
        let files = self.files();
        let budget = self.max_total_bytes.saturating_sub(self.part_bytes());
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        for (_, len, path) in files.iter().take(files.len().saturating_sub(1)) {
            if total <= budget {
                break;
            }
            if std::fs::remove_file(path).is_ok() {
                total -= len;
            }
        }
    }

    /// The file to write to next: the part after `full` (today's file that
    /// reached its size), else today's newest part (a new day, a restart).
    fn next_file(&self, full: Option<&LogFile>, day: &str) -> LogFile {
        if let Some(c) = full {
            return LogFile {
                day: day.to_string(),
                part: c.part + 1,
            };
        }
        self.files()
            .into_iter()
            .map(|f| f.0)
            .filter(|f| f.day == day)
            .max()
            .unwrap_or(LogFile {
                day: day.to_string(),
                part: 0,
            })
    }
}

/// One write of one event.
pub struct LineWriter(DailyJson);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let log = &self.0;
        let mut st = log.state.lock().unwrap_or_else(|p| p.into_inner());
        let day = date_of((log.clock)());
        let today = st.current.as_ref().filter(|c| c.day == day);
        if today.is_none() || st.file.is_none() || st.written >= log.part_bytes() {
            let next = log.next_file(today.filter(|_| st.file.is_some()), &day);
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log.dir.join(next.name()))?;
            st.written = file.metadata().map_or(0, |m| m.len());
            st.file = Some(file);
            st.current = Some(next);
            log.prune();
        }
        let n = match st.file.as_mut() {
            Some(f) => f.write(buf)?,
            None => buf.len(),
        };
        st.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for DailyJson {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> LineWriter {
        LineWriter(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};
    use tracing_subscriber::fmt::MakeWriter;

    const DAY: i64 = 86_400;
    /// 2026-03-01T12:00:00Z
    const NOON: i64 = 20_513 * DAY + DAY / 2;

    fn log(dir: &std::path::Path, max: u64) -> (DailyJson, Arc<AtomicI64>) {
        let now = Arc::new(AtomicI64::new(NOON));
        let clock = now.clone();
        let log = DailyJson::with_clock(
            dir.to_path_buf(),
            max,
            Arc::new(move || clock.load(Ordering::SeqCst)),
        )
        .unwrap();
        (log, now)
    }

    fn line(log: &DailyJson, i: usize) {
        // 29 bytes for one digit, 31 for three.
        let mut w = log.make_writer();
        w.write_all(format!("{{\"n\":{i},\"pad\":\"xxxxxxxxxxxx\"}}\n").as_bytes())
            .unwrap();
    }

    /// (file name, contents) in the directory, sorted by name.
    fn listing(dir: &std::path::Path) -> Vec<(String, String)> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read_to_string(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn one_file_per_utc_day() {
        let d = crate::app::store::tests::dir("jsonlog-daily");
        let (log, now) = log(&d, 1 << 20);
        line(&log, 1);
        now.fetch_add(DAY / 2 - 1, Ordering::SeqCst); // 23:59:59
        line(&log, 2);
        now.fetch_add(1, Ordering::SeqCst); // midnight
        line(&log, 3);
        let files = listing(&d);
        let names: Vec<_> = files.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(names, ["herd-2026-03-01.jsonl", "herd-2026-03-02.jsonl"]);
        assert_eq!(files[0].1.lines().count(), 2);
        assert!(files[1].1.contains("\"n\":3,"));
        for l in files.iter().flat_map(|f| f.1.lines()) {
            serde_json::from_str::<serde_json::Value>(l).unwrap();
        }
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn the_directory_stays_within_its_bound_and_keeps_the_newest() {
        let d = crate::app::store::tests::dir("jsonlog-bound");
        let max = 1_000;
        let (log, now) = log(&d, max);
        let len = 31; // bytes per line, at most
        for i in 0..500 {
            if i % 150 == 149 {
                now.fetch_add(DAY, Ordering::SeqCst);
            }
            line(&log, i);
            let files = listing(&d);
            let total: usize = files.iter().map(|f| f.1.len()).sum();
            assert!(
                total as u64 <= max + len,
                "{total} bytes after line {i}: {files:?}"
            );
            let newest = files
                .iter()
                .map(|f| (LogFile::parse(&f.0).unwrap(), &f.1))
                .max()
                .unwrap();
            assert!(
                newest
                    .1
                    .ends_with(&format!("{{\"n\":{i},\"pad\":\"xxxxxxxxxxxx\"}}\n"))
            );
        }
        let files = listing(&d);
        // Only the newest day is left, in parts, the oldest parts deleted.
        assert!(
            files.iter().all(|f| f.0.starts_with("herd-2026-03-04")),
            "{files:?}"
        );
        assert!(files.len() >= 3, "{files:?}");
        assert!(
            !files.iter().any(|f| f.1.contains("\"n\":450,")),
            "{files:?}"
        );
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_restart_continues_today_s_newest_part() {
        let d = crate::app::store::tests::dir("jsonlog-restart");
        let newest = |d: &std::path::Path| {
            listing(d)
                .into_iter()
                .max_by_key(|f| LogFile::parse(&f.0).unwrap())
                .unwrap()
        };
        let (first, _) = log(&d, 400);
        for i in 0..9 {
            line(&first, i); // 100-byte parts of four lines: three of them
        }
        drop(first);
        let before = newest(&d);
        assert_eq!(before.0, "herd-2026-03-01.2.jsonl", "{:?}", listing(&d));
        let (second, _) = log(&d, 400);
        line(&second, 9);
        let after = newest(&d);
        assert_eq!(after.0, before.0);
        assert_eq!(
            after.1,
            format!("{}{{\"n\":9,\"pad\":\"xxxxxxxxxxxx\"}}\n", before.1)
        );
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn file_names_order_by_day_then_part() {
        let a = LogFile::parse("herd-2026-03-01.jsonl").unwrap();
        let b = LogFile::parse("herd-2026-03-01.2.jsonl").unwrap();
        let c = LogFile::parse("herd-2026-03-01.10.jsonl").unwrap();
        let d = LogFile::parse("herd-2026-03-02.jsonl").unwrap();
        assert!(a < b && b < c && c < d);
        assert_eq!(c.name(), "herd-2026-03-01.10.jsonl");
        assert_eq!(a.name(), "herd-2026-03-01.jsonl");
        assert_eq!(LogFile::parse("herd-2026-03-01.x.jsonl"), None);
        assert_eq!(LogFile::parse("other.jsonl"), None);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(super::date_of(0), "1970-01-01");
        assert_eq!(super::date_of(19_723 * 86_400), "2024-01-01");
        assert_eq!(super::date_of(20_513 * 86_400 + 86_399), "2026-03-01");
    }
}
