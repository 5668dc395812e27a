//! The tenants' buckets, and the ticket an admitted request carries.
//!
//! One table behind one lock: admission is a few arithmetic operations, so
//! a lock is cheaper than anything cleverer. The table is bounded
//! ([`crate::limit::LimitsConfig::max_tenants`]): when it is full, the least
//! recently seen tenant with nothing in flight is forgotten.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Bucket, Limits, Quota, RateHeaders, RateLimited, Tenant, Which, go_duration};
use crate::history::Outcome;

#[derive(Debug)]
struct State {
    limits: Limits,
    /// Whether `limits` are the tenant's (false for buckets restored after
    /// a restart, until the tenant's next request says what its limits are).
    known: bool,
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    in_flight: u32,
    last: Instant,
    admitted: u64,
    limited: u64,
    tokens_charged: i64,
}

impl State {
    fn new(now: Instant) -> Self {
        State {
            limits: Limits::default(),
            known: false,
            requests: None,
            tokens: None,
            in_flight: 0,
            last: now,
            admitted: 0,
            limited: 0,
            tokens_charged: 0,
        }
    }

    /// Bring the buckets to `now` under `limits` (a limit set for the
    /// first time starts full; one removed drops its bucket).
    fn refill(&mut self, limits: Limits, now: Instant) {
        self.limits = limits;
        self.known = true;
        for (bucket, limit) in [
            (&mut self.requests, limits.requests_per_minute),
            (&mut self.tokens, limits.tokens_per_minute),
        ] {
            match limit {
                None => *bucket = None,
                Some(cap) => bucket
                    .get_or_insert_with(|| Bucket::full(cap, now))
                    .refill(cap, now),
            }
        }
    }

    /// Bring the buckets to `now` under the limits last seen (none yet
    /// for a restored tenant: its buckets wait as they were saved).
    fn refresh(&mut self, now: Instant) {
        if self.known {
            self.refill(self.limits, now);
        }
    }

    fn headers(&self) -> RateHeaders {
        let quota = |b: &Option<Bucket>, cap: Option<u32>| {
            Some(match (b, cap?) {
                (Some(b), cap) => Quota {
                    limit: cap,
                    remaining: b.remaining(),
                    reset: b.reset(cap),
                },
                (None, cap) => Quota {
                    limit: cap,
                    remaining: u64::from(cap),
                    reset: Duration::ZERO,
                },
            })
        };
        RateHeaders {
            requests: quota(&self.requests, self.limits.requests_per_minute),
            tokens: quota(&self.tokens, self.limits.tokens_per_minute),
            concurrent: self
                .limits
                .concurrent
                .map(|c| (c, c.saturating_sub(self.in_flight))),
        }
    }

    fn charge_tokens(&mut self, n: i64) {
        if let Some(b) = &mut self.tokens {
            b.level -= n as f64;
        }
        self.tokens_charged += n;
    }
}

#[derive(Debug)]
struct Table {
    tenants: HashMap<Arc<str>, State>,
    max: usize,
}

impl Table {
    /// The tenant's state, making room for a new one when the table is
    /// full; `None` when every tracked tenant has requests in flight.
    fn entry(&mut self, id: &Arc<str>, now: Instant) -> Option<&mut State> {
        if !self.tenants.contains_key(id) {
            if self.tenants.len() >= self.max {
                let idle = self
                    .tenants
                    .iter()
                    .filter(|(_, s)| s.in_flight == 0)
                    .min_by_key(|(_, s)| s.last)
                    .map(|(k, _)| k.clone())?;
                self.tenants.remove(&idle);
            }
            self.tenants.insert(id.clone(), State::new(now));
        }
        self.tenants.get_mut(id)
    }
}

/// Every tenant's usage. Cheap to clone; clones share the table.
#[derive(Clone, Debug)]
pub struct Limiter {
    table: Arc<Mutex<Table>>,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::new(super::LimitsConfig::default().max_tenants)
    }
}

/// What an admitted request gets: the headers to answer with and the
/// ticket that holds its slot and charges what its answer costs.
#[derive(Debug)]
pub struct Admitted {
    /// The tenant's quotas after this request was charged.
    pub headers: RateHeaders,
    /// Held until the answer ends.
    pub ticket: Ticket,
}

/// One tenant's usage as `/fleet/keys` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Requests left this minute (None: no request limit).
    pub remaining_requests: Option<u64>,
    /// Tokens left (None: no token limit).
    pub remaining_tokens: Option<u64>,
    /// Requests in flight now.
    pub in_flight: u32,
    /// Requests admitted since herd started (or the tenant was last forgotten).
    pub admitted: u64,
    /// Requests refused by a limit.
    pub limited: u64,
    /// Tokens charged: estimates corrected by what the engines counted.
    pub tokens_charged: i64,
}

/// A tenant's buckets as they are saved across a restart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedTenant {
    /// The tenant.
    pub id: String,
    /// The request bucket's level, when it has a limit.
    pub requests: Option<f64>,
    /// The token bucket's level, when it has a limit.
    pub tokens: Option<f64>,
    /// When the levels were true, milliseconds since the Unix epoch.
    pub at_ms: i64,
}

impl Limiter {
    /// A limiter tracking at most `max_tenants` tenants.
    pub fn new(max_tenants: usize) -> Self {
        Limiter {
            table: Arc::new(Mutex::new(Table {
                tenants: HashMap::new(),
                max: max_tenants.max(1),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admit one request of `tenant` whose prompt is estimated at
    /// `est_tokens`, or say which limit refuses it and until when.
    pub fn admit(&self, tenant: &Tenant, est_tokens: u32) -> Result<Admitted, Box<RateLimited>> {
        let now = Instant::now();
        let mut table = self.lock();
        let Some(s) = table.entry(&tenant.id, now) else {
            return Err(Box::new(RateLimited {
                tenant: tenant.id.clone(),
                which: Which::Tenants,
                retry_after: Duration::from_secs(1),
                headers: RateHeaders::default(),
                message: "herd tracks as many callers as it may and all of them have requests in flight; try again in a moment".into(),
            }));
        };
        s.last = now;
        let l = tenant.limits;
        s.refill(l, now);
        let est = f64::from(est_tokens.max(1));
        let mut refused: Vec<(Which, Duration)> = Vec::new();
        if let Some(c) = l.concurrent
            && s.in_flight >= c
        {
            refused.push((Which::Concurrent, Duration::from_secs(1)));
        }
        if let (Some(b), Some(cap)) = (&s.requests, l.requests_per_minute)
            && b.level < 1.0
        {
            refused.push((Which::Requests, b.wait_for(1.0, cap)));
        }
        if let (Some(b), Some(cap)) = (&s.tokens, l.tokens_per_minute) {
            // The estimate must fit in what is left; one bigger than the
            // whole minute is let in on a full bucket (and paid as debt).
            let need = est.min(f64::from(cap));
            if b.level < need {
                refused.push((Which::Tokens, b.wait_for(need, cap)));
            }
        }
        if let Some(&(which, retry_after)) = refused.iter().max_by_key(|(_, d)| *d) {
            s.limited += 1;
            let message = refusal(&tenant.id, which, l, retry_after);
            return Err(Box::new(RateLimited {
                tenant: tenant.id.clone(),
                which,
                retry_after,
                headers: s.headers(),
                message,
            }));
        }
        if let Some(b) = &mut s.requests {
            b.level -= 1.0;
        }
        s.charge_tokens(est as i64);
        s.in_flight += 1;
        s.admitted += 1;
        let headers = s.headers();
        drop(table);
        Ok(Admitted {
            headers,
            ticket: Ticket {
                limiter: self.clone(),
                tenant: tenant.id.clone(),
                estimate: est as u64,
                streamed: AtomicU64::new(0),
                settled: AtomicBool::new(false),
            },
        })
    }

    fn with(&self, id: &str, f: impl FnOnce(&mut State)) {
        let now = Instant::now();
        let mut t = self.lock();
        if let Some(s) = t.tenants.get_mut(id) {
            s.refresh(now);
            f(s);
        }
    }

    /// A tenant's usage now, as last limited (None: not tracked).
    pub fn usage(&self, id: &str) -> Option<Usage> {
        let now = Instant::now();
        let mut t = self.lock();
        let s = t.tenants.get_mut(id)?;
        s.refresh(now);
        Some(Usage {
            remaining_requests: s.requests.map(|b| b.remaining()),
            remaining_tokens: s.tokens.map(|b| b.remaining()),
            in_flight: s.in_flight,
            admitted: s.admitted,
            limited: s.limited,
            tokens_charged: s.tokens_charged,
        })
    }

    /// Forget a tenant (a revoked key): a new one of the same name starts
    /// afresh. Requests in flight finish uncounted.
    pub fn forget(&self, id: &str) {
        self.lock().tenants.remove(id);
    }

    /// The buckets worth keeping across a restart: those not full.
    pub fn save(&self) -> Vec<SavedTenant> {
        let now = Instant::now();
        let wall = crate::fleet::now_ms();
        let mut t = self.lock();
        let mut out = Vec::new();
        for (id, s) in t.tenants.iter_mut() {
            s.refresh(now);
            let (known, l) = (s.known, s.limits);
            // A bucket not yet seen again since a restore is kept as it is.
            let below = |b: &Option<Bucket>, cap: Option<u32>| {
                b.filter(|b| !known || cap.is_some_and(|c| b.level < f64::from(c)))
            };
            let requests = below(&s.requests, l.requests_per_minute);
            let tokens = below(&s.tokens, l.tokens_per_minute);
            let Some(at) = requests.or(tokens).map(|b| b.at) else {
                continue;
            };
            let ago = i64::try_from(now.saturating_duration_since(at).as_millis()).unwrap_or(0);
            out.push(SavedTenant {
                id: id.to_string(),
                requests: requests.map(|b| b.level),
                tokens: tokens.map(|b| b.level),
                at_ms: wall - ago,
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Take back buckets saved by [`Limiter::save`]: each refills for the
    /// time herd was down once its tenant's limits are known again.
    pub fn restore(&self, saved: &[SavedTenant]) {
        let now = Instant::now();
        let wall = crate::fleet::now_ms();
        let mut t = self.lock();
        for s in saved {
            let ago = Duration::from_millis(u64::try_from(wall - s.at_ms).unwrap_or(0));
            let Some(at) = now.checked_sub(ago) else {
                continue; // longer ago than this clock reaches: full again
            };
            let id: Arc<str> = Arc::from(s.id.as_str());
            let Some(st) = t.entry(&id, now) else {
                return;
            };
            st.requests = s.requests.map(|level| Bucket { level, at });
            st.tokens = s.tokens.map(|level| Bucket { level, at });
            st.last = at;
        }
    }

    /// Tenants tracked now.
    pub fn len(&self) -> usize {
        self.lock().tenants.len()
    }

    /// Whether no tenant is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn refusal(tenant: &str, which: Which, l: Limits, retry_after: Duration) -> String {
    let what = match which {
        Which::Requests => format!(
            "{} requests per minute",
            l.requests_per_minute.unwrap_or_default()
        ),
        Which::Tokens => format!(
            "{} tokens per minute",
            l.tokens_per_minute.unwrap_or_default()
        ),
        Which::Concurrent => format!("{} requests at once", l.concurrent.unwrap_or_default()),
        Which::Tenants => "the number of callers tracked".into(),
    };
    format!(
        "rate limit reached for {tenant}: {what}; try again in {}",
        go_duration(retry_after)
    )
}

/// An admitted request's hold on its tenant: its concurrency slot until
/// dropped, and the meter its answer's tokens are charged through (see
/// [`crate::routed::Meter`]).
#[derive(Debug)]
pub struct Ticket {
    limiter: Limiter,
    tenant: Arc<str>,
    estimate: u64,
    streamed: AtomicU64,
    settled: AtomicBool,
}

impl Ticket {
    /// The request failed before any answer: give back the estimate (the
    /// request itself still counts).
    pub fn refund(&self) {
        if !self.settled.swap(true, Ordering::SeqCst) {
            let back = self.estimate + self.streamed.load(Ordering::SeqCst);
            self.limiter
                .with(&self.tenant, |s| s.charge_tokens(-(back as i64)));
        }
    }
}

impl crate::routed::Meter for Ticket {
    fn streamed(&self, tokens: u64) {
        if tokens == 0 || self.settled.load(Ordering::SeqCst) {
            return;
        }
        self.streamed.fetch_add(tokens, Ordering::SeqCst);
        self.limiter
            .with(&self.tenant, |s| s.charge_tokens(tokens as i64));
    }

    fn finished(&self, o: &Outcome) {
        if self.settled.swap(true, Ordering::SeqCst) {
            return;
        }
        let streamed = self.streamed.load(Ordering::SeqCst);
        let real = o.prompt_tokens.unwrap_or(self.estimate) + o.output_tokens.unwrap_or(streamed);
        let delta = real as i64 - (self.estimate + streamed) as i64;
        if delta != 0 {
            self.limiter.with(&self.tenant, |s| s.charge_tokens(delta));
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.limiter.with(&self.tenant, |s| {
            s.in_flight = s.in_flight.saturating_sub(1)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routed::Meter;

    fn tenant(rpm: Option<u32>, tpm: Option<u32>, conc: Option<u32>) -> Tenant {
        Tenant {
            id: Arc::from("k"),
            limits: Limits {
                requests_per_minute: rpm,
                tokens_per_minute: tpm,
                concurrent: conc,
            },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_gets_the_minute_then_one_a_second() {
        let l = Limiter::default();
        let t = tenant(Some(60), None, None);
        let ok = (0..200).filter(|_| l.admit(&t, 10).is_ok()).count();
        assert_eq!(ok, 60);
        let e = l.admit(&t, 10).unwrap_err();
        assert_eq!(
            (e.which, e.retry_after),
            (Which::Requests, Duration::from_secs(1))
        );
        let q = e.headers.requests.unwrap();
        assert_eq!(
            (q.limit, q.remaining, q.reset),
            (60, 0, Duration::from_secs(60))
        );
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(l.admit(&t, 10).is_ok());
        assert!(l.admit(&t, 10).is_err());
        assert_eq!(l.usage("k").unwrap().limited, 142);
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_corrected_by_what_the_engine_counted() {
        let l = Limiter::default();
        let t = tenant(None, Some(1000), None);
        let a = l.admit(&t, 100).unwrap();
        assert_eq!(a.headers.tokens.unwrap().remaining, 900);
        a.ticket.streamed(50);
        assert_eq!(l.usage("k").unwrap().remaining_tokens, Some(850));
        // The engine says: 120 prompt tokens, 60 output.
        a.ticket.finished(&Outcome {
            prompt_tokens: Some(120),
            output_tokens: Some(60),
            ..Default::default()
        });
        let u = l.usage("k").unwrap();
        assert_eq!((u.remaining_tokens, u.tokens_charged), (Some(820), 180));
        // Late chunks after the end change nothing.
        a.ticket.streamed(5);
        assert_eq!(l.usage("k").unwrap().tokens_charged, 180);
        drop(a);
        assert_eq!(l.usage("k").unwrap().in_flight, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_past_the_budget_is_debt_paid_by_waiting() {
        let l = Limiter::default();
        let t = tenant(None, Some(600), None);
        let a = l.admit(&t, 100).unwrap();
        a.ticket.finished(&Outcome {
            prompt_tokens: Some(100),
            output_tokens: Some(800),
            ..Default::default()
        });
        let e = l.admit(&t, 10).unwrap_err();
        assert_eq!(e.which, Which::Tokens);
        // 300 of debt and 10 wanted, at 10 tokens a second.
        assert_eq!(e.retry_after, Duration::from_secs(31));
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(l.admit(&t, 10).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_held_until_the_ticket_goes() {
        let l = Limiter::default();
        let t = tenant(None, None, Some(2));
        let a = l.admit(&t, 1).unwrap();
        let b = l.admit(&t, 1).unwrap();
        assert_eq!(b.headers.concurrent, Some((2, 0)));
        assert_eq!(l.admit(&t, 1).unwrap_err().which, Which::Concurrent);
        drop(a);
        assert!(l.admit(&t, 1).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_before_the_answer_gives_the_estimate_back() {
        let l = Limiter::default();
        let t = tenant(Some(10), Some(1000), None);
        let a = l.admit(&t, 300).unwrap();
        a.ticket.refund();
        let u = l.usage("k").unwrap();
        assert_eq!(
            (u.remaining_tokens, u.remaining_requests),
            (Some(1000), Some(9))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_bounded_and_forgets_the_idle_first() {
        let l = Limiter::new(2);
        let mk = |id: &str| Tenant {
            id: Arc::from(id),
            limits: Limits {
                requests_per_minute: Some(1),
                ..Default::default()
            },
        };
        let busy = l.admit(&mk("a"), 1).unwrap();
        tokio::time::advance(Duration::from_millis(1)).await;
        drop(l.admit(&mk("b"), 1).unwrap());
        tokio::time::advance(Duration::from_millis(1)).await;
        drop(l.admit(&mk("c"), 1).unwrap());
        assert_eq!(l.len(), 2);
        assert!(l.usage("b").is_none(), "the idle one went");
        assert!(l.usage("a").is_some(), "the busy one stayed");
        drop(busy);
    }

    #[tokio::test(start_paused = true)]
    async fn saved_buckets_come_back_refilled_for_the_downtime() {
        let l = Limiter::default();
        let t = tenant(Some(60), None, None);
        for _ in 0..60 {
            l.admit(&t, 1).unwrap();
        }
        let saved = l.save();
        assert_eq!(saved.len(), 1);
        assert!(saved[0].requests.unwrap() < 1.0);
        let fresh = Limiter::default();
        fresh.restore(&saved);
        assert_eq!(fresh.admit(&t, 1).unwrap_err().which, Which::Requests);
        // Saved 30 s ago: 30 requests came back meanwhile.
        let mut old = saved.clone();
        old[0].at_ms -= 30_000;
        let fresh = Limiter::default();
        fresh.restore(&old);
        assert_eq!((0..100).filter(|_| fresh.admit(&t, 1).is_ok()).count(), 30);
    }
}
