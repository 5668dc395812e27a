//! A bound on the memory request bodies hold at once.
//!
//! A body under the size limit can still be expensive: read, parsed and
//! translated, a 30 MB body of a million tiny messages once took 2.4 GB,
//! and ten of them at once would have taken the machine down. So every body
//! is charged against one shared budget before it is read, for what reading
//! and parsing it may take ([`crate::dialect::json::cost`]); what is left
//! charged afterwards — the bytes kept for retries — stays charged until
//! the request is over. A body that would take more than a share of the
//! whole budget on its own is refused as too large (413); one that fits but
//! finds the budget spent waits for nobody: it is shed at once (503 with
//! `Retry-After`), before memory runs out rather than after.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget is counted in KiB (a semaphore's permits are `u32`).
const UNIT: usize = 1024;

/// Why a body cannot be charged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OverBudget {
    /// The body alone needs more than one request may take.
    #[error(
        "the request body would take about {need_mib} MiB of memory to read and parse; one request may take at most {cap_mib} MiB (send fewer, larger values, or split the request)"
    )]
    TooLarge {
        /// What it needs, MiB.
        need_mib: usize,
        /// What one request may take, MiB.
        cap_mib: usize,
    },
    /// Other requests hold the budget right now.
    #[error("herd is holding {in_use_mib} MiB of request bodies, its limit; try again in a moment")]
    Exhausted {
        /// MiB in use.
        in_use_mib: usize,
    },
}

/// The shared budget. Cheap to clone; clones share it.
#[derive(Clone, Debug)]
pub struct BodyBudget {
    sem: Arc<Semaphore>,
    total: usize,
    per_request: usize,
}

/// Memory charged to the budget, given back when dropped.
#[derive(Debug)]
pub struct Charge {
    permit: Option<OwnedSemaphorePermit>,
}

impl BodyBudget {
    /// A budget of `total_bytes`; one request may take `per_request_bytes`.
    pub fn new(total_bytes: usize, per_request_bytes: usize) -> Self {
        let units = (total_bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        BodyBudget {
            sem: Arc::new(Semaphore::new(units)),
            total: units,
            per_request: (per_request_bytes / UNIT).clamp(1, units),
        }
    }

    /// Take `bytes` from the budget now, or say why not.
    pub fn charge(&self, bytes: usize) -> Result<Charge, OverBudget> {
        let units = bytes.div_ceil(UNIT).max(1);
        if units > self.per_request {
            return Err(OverBudget::TooLarge {
                need_mib: units.div_ceil(1024),
                cap_mib: self.per_request / 1024,
            });
        }
        let n = u32::try_from(units).unwrap_or(u32::MAX);
        match self.sem.clone().try_acquire_many_owned(n) {
            Ok(permit) => Ok(Charge {
                permit: Some(permit),
            }),
            Err(_) => Err(OverBudget::Exhausted {
                in_use_mib: self.in_use() / (1024 * 1024),
            }),
        }
    }

    /// Grow `charge` to `bytes` in all (a charge never shrinks here).
    pub fn grow(&self, charge: &mut Charge, bytes: usize) -> Result<(), OverBudget> {
        let held = charge.held();
        if bytes <= held {
            return Ok(());
        }
        let more = self.charge(bytes - held)?;
        if held.div_ceil(UNIT) + more.held() / UNIT > self.per_request {
            return Err(OverBudget::TooLarge {
                need_mib: bytes.div_ceil(1024 * 1024),
                cap_mib: self.per_request / 1024,
            });
        }
        match (charge.permit.as_mut(), more.permit) {
            (Some(p), Some(m)) => p.merge(m),
            (None, m) => charge.permit = m,
            (Some(_), None) => {}
        }
        Ok(())
    }

    /// Bytes charged right now.
    pub fn in_use(&self) -> usize {
        (self.total - self.sem.available_permits()) * UNIT
    }

    /// The whole budget, bytes.
    pub fn total(&self) -> usize {
        self.total * UNIT
    }
}

impl Charge {
    /// Give back all but `bytes` (what stays held for the rest of the
    /// request).
    pub fn keep(&mut self, bytes: usize) {
        let keep = u32::try_from(bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX);
        if let Some(p) = self.permit.as_mut() {
            let held = p.num_permits() as u32;
            if keep < held {
                // The split-off part is dropped at once: back to the budget.
                drop(p.split((held - keep) as usize));
            }
        }
    }

    /// Bytes held.
    pub fn held(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits() * UNIT)
    }

    /// A charge of nothing (requests that were not budgeted).
    pub fn none() -> Self {
        Charge { permit: None }
    }
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Larger than the body limit, bytes.
    #[error("request body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    /// The budget said no.
    #[error(transparent)]
    Budget(#[from] OverBudget),
    /// The client stopped sending for this long.
    #[error("the client sent no body bytes for {0:?}")]
    Stalled(std::time::Duration),
    /// The body broke off.
    #[error("could not read the request body: {0}")]
    Broken(String),
}

/// Read a body of at most `limit` bytes, charging `budget` as it grows (so
/// many large bodies arriving at once are shed, not buffered), giving up
/// when the client sends nothing for `idle` (a body shorter than its
/// `Content-Length` must not hold a connection forever).
pub async fn read<B>(
    mut body: B,
    limit: usize,
    idle: std::time::Duration,
    budget: &BodyBudget,
) -> Result<(bytes::Bytes, Charge), ReadError>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    use http_body_util::BodyExt;
    let hint = usize::try_from(body.size_hint().exact().unwrap_or(0)).unwrap_or(usize::MAX);
    if hint > limit {
        return Err(ReadError::TooLarge(limit));
    }
    let mut charge = budget.charge(hint.max(UNIT))?;
    let mut buf = bytes::BytesMut::with_capacity(hint);
    loop {
        match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(ReadError::Stalled(idle)),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(ReadError::Broken(e.to_string())),
            Ok(Some(Ok(frame))) => {
                if let Ok(d) = frame.into_data() {
                    if buf.len() + d.len() > limit {
                        return Err(ReadError::TooLarge(limit));
                    }
                    buf.extend_from_slice(&d);
                    if buf.len() > charge.held() {
                        // Grow in steps, not per frame.
                        let want = (buf.len() * 2).min(limit).max(buf.len());
                        budget.grow(&mut charge, want)?;
                    }
                }
            }
        }
    }
    Ok((buf.freeze(), charge))
}

impl BodyBudget {
    /// Grow `charge` to what parsing `body` will hold at its peak
    /// ([`crate::dialect::json::Cost::parse_bytes`]), before it is parsed.
    pub fn for_parse(&self, charge: &mut Charge, body: &[u8]) -> Result<(), OverBudget> {
        let need = crate::dialect::json::cost(body).parse_bytes(body.len());
        self.grow(charge, need)
    }
}

impl From<ReadError> for crate::error::ClientError {
    fn from(e: ReadError) -> Self {
        use crate::error::ClientError;
        use http::StatusCode;
        match &e {
            ReadError::TooLarge(_) => {
                ClientError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
                    .code("request_too_large")
            }
            ReadError::Budget(OverBudget::TooLarge { .. }) => {
                ClientError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
                    .code("request_too_complex")
            }
            ReadError::Budget(OverBudget::Exhausted { .. }) => {
                ClientError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                    .code("server_busy")
                    .retry_after(std::time::Duration::from_secs(1))
            }
            ReadError::Stalled(_) => {
                ClientError::new(StatusCode::REQUEST_TIMEOUT, e.to_string()).code("request_timeout")
            }
            ReadError::Broken(_) => ClientError::bad_request(e.to_string()),
        }
    }
}

impl From<OverBudget> for crate::error::ClientError {
    fn from(e: OverBudget) -> Self {
        ReadError::Budget(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn charges_are_held_until_dropped_and_shed_when_spent() {
        let b = BodyBudget::new(10 * MIB, 6 * MIB);
        let a = b.charge(4 * MIB).unwrap();
        let c = b.charge(4 * MIB).unwrap();
        assert_eq!(b.in_use(), 8 * MIB);
        assert!(matches!(
            b.charge(4 * MIB),
            Err(OverBudget::Exhausted { in_use_mib: 8 })
        ));
        drop(a);
        assert!(b.charge(4 * MIB).is_ok(), "dropped charges come back");
        drop(c);
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn one_request_cannot_take_more_than_its_share() {
        let b = BodyBudget::new(10 * MIB, 6 * MIB);
        let e = b.charge(7 * MIB).unwrap_err();
        assert_eq!(
            e,
            OverBudget::TooLarge {
                need_mib: 7,
                cap_mib: 6
            }
        );
        assert!(e.to_string().contains("at most 6 MiB"), "{e}");
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn keeping_part_gives_the_rest_back() {
        let b = BodyBudget::new(10 * MIB, 10 * MIB);
        let mut c = b.charge(8 * MIB).unwrap();
        c.keep(2 * MIB);
        assert_eq!(c.held(), 2 * MIB);
        assert_eq!(b.in_use(), 2 * MIB);
        c.keep(5 * MIB);
        assert_eq!(c.held(), 2 * MIB, "keep never grows a charge");
        drop(c);
        assert_eq!(b.in_use(), 0);
        assert_eq!(Charge::none().held(), 0);
    }
}

#[cfg(test)]
mod read_tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    const MIB: usize = 1024 * 1024;

    #[tokio::test]
    async fn bodies_are_read_and_charged() {
        let b = BodyBudget::new(10 * MIB, 10 * MIB);
        let (bytes, charge) = read(
            Full::new(bytes::Bytes::from(vec![b'x'; 3 * MIB])),
            4 * MIB,
            std::time::Duration::from_secs(1),
            &b,
        )
        .await
        .unwrap();
        assert_eq!(bytes.len(), 3 * MIB);
        assert!(charge.held() >= 3 * MIB);
        assert_eq!(b.in_use(), charge.held());
        let e = read(
            Full::new(bytes::Bytes::from(vec![b'x'; 5 * MIB])),
            4 * MIB,
            std::time::Duration::from_secs(1),
            &b,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, ReadError::TooLarge(_)), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_times_out() {
        let b = BodyBudget::new(10 * MIB, 10 * MIB);
        let (_tx, rx) =
            tokio::sync::mpsc::channel::<Result<http_body::Frame<bytes::Bytes>, std::io::Error>>(1);
        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed();
        let e = read(body, MIB, std::time::Duration::from_secs(5), &b)
            .await
            .unwrap_err();
        assert!(matches!(e, ReadError::Stalled(_)), "{e}");
        assert_eq!(b.in_use(), 0, "a failed read gives its charge back");
    }

    #[tokio::test]
    async fn many_bodies_at_once_are_shed() {
        let b = BodyBudget::new(4 * MIB, 4 * MIB);
        let (_a, _ca) = read(
            Full::new(bytes::Bytes::from(vec![b'x'; 3 * MIB])),
            8 * MIB,
            std::time::Duration::from_secs(1),
            &b,
        )
        .await
        .unwrap();
        let e = read(
            Full::new(bytes::Bytes::from(vec![b'x'; 2 * MIB])),
            8 * MIB,
            std::time::Duration::from_secs(1),
            &b,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e, ReadError::Budget(OverBudget::Exhausted { .. })),
            "{e}"
        );
    }
}
