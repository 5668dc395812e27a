//! The load generator: open-loop Poisson arrivals or N closed-loop workers,
//! streaming-aware for Ollama NDJSON and OpenAI SSE.
//!
//! No packaged HTTP load tool measures time to first token or the gaps
//! between streamed chunks, so herd brings its own. Two habits matter more
//! than speed:
//!
//! - **Open loop does not wait for answers.** Every request is sent at its
//!   own Poisson time whatever the earlier ones are doing, so a slow proxy
//!   cannot slow the offered load down (coordinated omission). Latency is
//!   measured from the moment the request really leaves; how late that was
//!   against the schedule is recorded apart (`lag`), because tokio's timer
//!   wakes on millisecond ticks, and charging that tick to the target would
//!   bury a microsecond effect under a millisecond of uniform noise. A large
//!   lag means the box could not keep the schedule: the rate is too high to
//!   measure here.
//! - **Everything is bounded**: a run stops at its duration or request
//!   count, whichever comes first, and every request has a deadline; an
//!   unfinished request is an error, never a hang.
//!
//! The client is hyper-util's pooled keep-alive client, so steady-state
//! requests reuse connections like a real SDK does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

/// The pooled HTTP/1.1 client the generator uses.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A keep-alive client with `TCP_NODELAY`, like an SDK's.
pub fn http_client() -> HttpClient {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    conn.set_connect_timeout(Some(Duration::from_secs(3)));
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4096)
        .pool_idle_timeout(Duration::from_secs(90))
        .build(conn)
}

/// How the answer is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Wire {
    /// One JSON object (non-streaming).
    Json,
    /// Ollama's streaming: one JSON object per line.
    Ndjson,
    /// OpenAI's streaming: `data: {...}\n\n` events, ending in `data: [DONE]`.
    Sse,
}

impl Wire {
    /// The byte sequence that ends one logical chunk.
    fn delimiter(self) -> &'static [u8] {
        match self {
            Wire::Json | Wire::Ndjson => b"\n",
            Wire::Sse => b"\n\n",
        }
    }
}

/// One request to send.
#[derive(Clone, Debug)]
pub struct Req {
    pub url: String,
    pub body: Bytes,
    pub wire: Wire,
}

/// What happened to one request.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// When it was meant to be sent, from the start of the run.
    pub sent_at: Duration,
    /// How late it really left against that schedule.
    pub lag: Duration,
    /// HTTP status; 0 when no response arrived.
    pub status: u16,
    /// Transport or timeout error, if any.
    pub error: Option<String>,
    /// Time to the first body bytes (time to first token when streaming).
    pub ttft: Option<Duration>,
    /// Time to the end of the body.
    pub e2e: Duration,
    /// Logical chunks (NDJSON lines, SSE events) received.
    pub chunks: u32,
    /// Body frames that carried more than one logical chunk.
    pub coalesced: u32,
    /// Gaps between consecutive logical chunks, microseconds (0 for a chunk
    /// that arrived in the same frame as the previous one).
    pub gaps_us: Vec<u32>,
    /// The stream ended the way the protocol says it ends (`"done":true`,
    /// `[DONE]`), or the JSON answer is complete.
    pub complete: bool,
    /// `x-herd-node` of the answer.
    pub node: Option<String>,
    /// Which request of the run this was (`make(i)`'s `i`).
    pub seq: u64,
    /// The whole body as received, when the run asked to keep it
    /// ([`send_with`]); the chaos scenario checks every answer's framing.
    pub body: Option<Bytes>,
}

impl Outcome {
    /// A 2xx answer that arrived whole.
    pub fn ok(&self) -> bool {
        self.error.is_none() && (200..300).contains(&self.status) && self.complete
    }
}

/// Sends one request that was due at `due` and reads the answer chunk by
/// chunk; times are measured from when it really left.
pub async fn send(client: &HttpClient, req: &Req, due: Instant, timeout: Duration) -> Outcome {
    send_with(client, req, due, timeout, false).await
}

/// [`send`], keeping the whole body in [`Outcome::body`] when `keep` is set
/// (also when the body broke off: what arrived until then).
pub async fn send_with(
    client: &HttpClient,
    req: &Req,
    due: Instant,
    timeout: Duration,
    keep: bool,
) -> Outcome {
    let t0 = Instant::now();
    let mut kept: Vec<u8> = Vec::new();
    let mut out = Outcome {
        lag: t0.saturating_duration_since(due),
        ..Outcome::default()
    };
    let run = async {
        let r = http::Request::post(&req.url)
            .header("content-type", "application/json")
            .body(Full::new(req.body.clone()))
            .map_err(|e| e.to_string())?;
        let rsp = client.request(r).await.map_err(|e| format!("{e:?}"))?;
        out.status = rsp.status().as_u16();
        out.node = rsp
            .headers()
            .get("x-herd-node")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = rsp.into_body();
        let delim = req.wire.delimiter();
        let mut last_event: Option<Instant> = None;
        // The last bytes seen, to find delimiters split across frames and
        // to check how the stream ended.
        let mut tail: Vec<u8> = Vec::with_capacity(256);
        let mut whole = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("body: {e}"))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            let now = Instant::now();
            if out.ttft.is_none() {
                out.ttft = Some(now - t0);
            }
            if keep {
                kept.extend_from_slice(data);
            }
            if req.wire == Wire::Json {
                whole.extend_from_slice(data);
                continue;
            }
            let carry = tail.len().min(delim.len() - 1);
            let mut scan = tail[tail.len() - carry..].to_vec();
            scan.extend_from_slice(data);
            let events = count(&scan, delim);
            if events > 0 {
                let gap = last_event.map_or(0, |t| (now - t).as_micros() as u32);
                out.gaps_us.push(gap);
                out.gaps_us
                    .extend(std::iter::repeat_n(0, events as usize - 1));
                if events > 1 {
                    out.coalesced += 1;
                }
                out.chunks += events;
                last_event = Some(now);
            }
            tail.extend_from_slice(data);
            if tail.len() > 256 {
                tail.drain(..tail.len() - 256);
            }
        }
        // The first chunk has no gap before it.
        if !out.gaps_us.is_empty() {
            out.gaps_us.remove(0);
        }
        out.complete = match req.wire {
            Wire::Json => {
                out.chunks = 1;
                whole.ends_with(b"}") || whole.ends_with(b"}\n")
            }
            Wire::Ndjson => contains(&tail, b"\"done\":true"),
            Wire::Sse => contains(&tail, b"data: [DONE]"),
        };
        Ok::<(), String>(())
    };
    match tokio::time::timeout_at(t0 + timeout, run).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => out.error = Some(e),
        Err(_) => out.error = Some(format!("timed out after {timeout:?}")),
    }
    out.e2e = t0.elapsed();
    if keep {
        out.body = Some(Bytes::from(kept));
    }
    out
}

fn count(hay: &[u8], needle: &[u8]) -> u32 {
    if needle.len() == 1 {
        return hay.iter().filter(|b| **b == needle[0]).count() as u32;
    }
    let mut n = 0;
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        if &hay[i..i + needle.len()] == needle {
            n += 1;
            i += needle.len();
        } else {
            i += 1;
        }
    }
    n
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Bounds of one run.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Stop starting requests after this long.
    pub duration: Duration,
    /// Stop starting requests after this many.
    pub max_requests: u64,
    /// Each request's own deadline.
    pub timeout: Duration,
}

/// Open loop: Poisson arrivals at `rate` per second. `make(i)` builds the
/// i-th request. Latency is measured from each request's *intended* start.
pub async fn open_loop(
    client: &HttpClient,
    rate: f64,
    bounds: Bounds,
    seed: u64,
    make: impl Fn(u64) -> Req,
) -> Vec<Outcome> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let start = Instant::now();
    let mut at = Duration::ZERO;
    let mut tasks = Vec::new();
    let mut i = 0u64;
    while i < bounds.max_requests {
        // Exponential inter-arrival time.
        let u = 1.0 - rng.f64();
        at += Duration::from_secs_f64(-u.ln() / rate.max(1e-9));
        if at > bounds.duration {
            break;
        }
        let due = start + at;
        tokio::time::sleep_until(due).await;
        let req = make(i);
        let client = client.clone();
        let sent_at = at;
        let seq = i;
        tasks.push(tokio::spawn(async move {
            let mut o = send(&client, &req, due, bounds.timeout).await;
            o.sent_at = sent_at;
            o.seq = seq;
            o
        }));
        i += 1;
    }
    join(tasks).await
}

/// Closed loop: `workers` loops, each sending its next request as soon as
/// the previous one ended.
pub async fn closed_loop(
    client: &HttpClient,
    workers: usize,
    bounds: Bounds,
    make: impl Fn(u64) -> Req + Send + Sync + 'static,
) -> Vec<Outcome> {
    closed_loop_with(client, workers, bounds, Instant::now(), false, make).await
}

/// [`closed_loop`] with times measured from `start` (so the caller can lay
/// other events on the same clock) and, with `keep`, every answer's whole
/// body kept ([`send_with`]).
pub async fn closed_loop_with(
    client: &HttpClient,
    workers: usize,
    bounds: Bounds,
    start: Instant,
    keep: bool,
    make: impl Fn(u64) -> Req + Send + Sync + 'static,
) -> Vec<Outcome> {
    let make = Arc::new(make);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..workers.max(1) {
        let (client, make, next) = (client.clone(), make.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut outs = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= bounds.max_requests || start.elapsed() >= bounds.duration {
                    break;
                }
                let req = make(i);
                let t0 = Instant::now();
                let mut o = send_with(&client, &req, t0, bounds.timeout, keep).await;
                o.sent_at = t0 - start;
                o.seq = i;
                outs.push(o);
            }
            outs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        match t.await {
            Ok(v) => all.extend(v),
            Err(e) => all.push(Outcome {
                error: Some(format!("worker panicked: {e}")),
                ..Outcome::default()
            }),
        }
    }
    all
}

async fn join(tasks: Vec<tokio::task::JoinHandle<Outcome>>) -> Vec<Outcome> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.unwrap_or_else(|e| Outcome {
            error: Some(format!("task failed: {e}")),
            ..Outcome::default()
        }));
    }
    out
}

/// A histogram of microseconds, 3 significant digits, up to 10 minutes.
pub type Hist = hdrhistogram::Histogram<u64>;

pub fn hist() -> Hist {
    Hist::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn us(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, 600_000_000)
}

/// What a set of outcomes says, summarised.
#[derive(Debug)]
pub struct Summary {
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub ttft: Hist,
    pub e2e: Hist,
    pub gaps: Hist,
    /// Scheduling lag (see [`Outcome::lag`]).
    pub lag: Hist,
    pub chunks: u64,
    pub coalesced: u64,
    pub incomplete: u64,
    pub per_node: BTreeMap<String, u64>,
    /// Time from the first intended send to the last answer.
    pub span: Duration,
    pub first_error: Option<String>,
}

impl Summary {
    pub fn of(outs: &[Outcome]) -> Self {
        let mut s = Summary {
            sent: outs.len() as u64,
            ok: 0,
            errors: 0,
            statuses: BTreeMap::new(),
            ttft: hist(),
            e2e: hist(),
            gaps: hist(),
            lag: hist(),
            chunks: 0,
            coalesced: 0,
            incomplete: 0,
            per_node: BTreeMap::new(),
            span: Duration::ZERO,
            first_error: None,
        };
        for o in outs {
            *s.statuses.entry(o.status).or_default() += 1;
            let _ = s.lag.record(us(o.lag));
            s.span = s.span.max(o.sent_at + o.e2e);
            if !o.ok() {
                s.errors += 1;
                if s.first_error.is_none() {
                    s.first_error =
                        Some(o.error.clone().unwrap_or_else(|| {
                            format!("status {} complete={}", o.status, o.complete)
                        }));
                }
                if o.error.is_none() && !o.complete {
                    s.incomplete += 1;
                }
                continue;
            }
            s.ok += 1;
            if let Some(t) = o.ttft {
                let _ = s.ttft.record(us(t));
            }
            let _ = s.e2e.record(us(o.e2e));
            for g in &o.gaps_us {
                let _ = s.gaps.record(u64::from(*g).max(1));
            }
            s.chunks += u64::from(o.chunks);
            s.coalesced += u64::from(o.coalesced);
            if let Some(n) = &o.node {
                *s.per_node.entry(n.clone()).or_default() += 1;
            }
        }
        s
    }

    /// Successful answers per second over the run (first intended send
    /// to last answer).
    pub fn throughput(&self) -> f64 {
        if self.span.is_zero() {
            return 0.0;
        }
        self.ok as f64 / self.span.as_secs_f64()
    }
}

/// Successful answers that *ended* within `[from, to)` of the run, per
/// second: the goodput of one load step, whichever step sent them.
pub fn completions_per_s(outs: &[Outcome], from: Duration, to: Duration) -> f64 {
    let n = outs
        .iter()
        .filter(|o| o.ok() && o.sent_at + o.e2e >= from && o.sent_at + o.e2e < to)
        .count();
    n as f64 / (to - from).as_secs_f64().max(1e-9)
}

/// A percentile in microseconds (0 when empty).
pub fn pct(h: &Hist, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    h.value_at_quantile(q) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiters_are_counted_across_frame_edges() {
        assert_eq!(count(b"a\nb\n", b"\n"), 2);
        assert_eq!(count(b"data: x\n\ndata: y\n\n", b"\n\n"), 2);
        assert_eq!(count(b"\n\n\n\n", b"\n\n"), 2);
        assert!(contains(b"..{\"done\":true}\n", b"\"done\":true"));
    }
}
