//! One token bucket: the arithmetic of "N per minute", apart from tenants,
//! clocks and locks so it can be tested exactly.
//!
//! A bucket holds up to `capacity` units and refills continuously at
//! `capacity` per minute, so a fresh tenant may spend its whole minute in a
//! burst and then `capacity / 60` per second. The level may go below zero:
//! usage learnt after admission (the tokens a stream produced beyond the
//! estimate) is still charged, and the tenant waits until the debt is paid.

use std::time::Duration;

use tokio::time::Instant;

/// A bucket's level at an instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// Units available (negative: in debt).
    pub level: f64,
    /// When `level` was true.
    pub at: Instant,
}

impl Bucket {
    /// A full bucket of `capacity`.
    pub fn full(capacity: u32, now: Instant) -> Self {
        Bucket {
            level: f64::from(capacity),
            at: now,
        }
    }

    /// Refill for the time since `at`, at `capacity` per minute, up to
    /// `capacity` (a lowered limit clamps a fuller bucket at once).
    pub fn refill(&mut self, capacity: u32, now: Instant) {
        let cap = f64::from(capacity);
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + secs * per_second(capacity)).min(cap);
        self.at = now;
    }

    /// How long until the level reaches `need`; zero when it already has.
    pub fn wait_for(&self, need: f64, capacity: u32) -> Duration {
        if self.level >= need || capacity == 0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((need - self.level) / per_second(capacity))
    }

    /// Whole units left, never below zero (what `x-ratelimit-remaining-*` says).
    pub fn remaining(&self) -> u64 {
        if self.level <= 0.0 {
            0
        } else {
            self.level.floor() as u64
        }
    }

    /// How long until the bucket is full again (`x-ratelimit-reset-*`).
    pub fn reset(&self, capacity: u32) -> Duration {
        self.wait_for(f64::from(capacity), capacity)
    }
}

/// The refill rate of a bucket of `capacity` per minute.
fn per_second(capacity: u32) -> f64 {
    f64::from(capacity) / 60.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_minute_of_capacity_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::full(60, t0);
        for _ in 0..60 {
            assert!(b.level >= 1.0);
            b.level -= 1.0;
        }
        assert_eq!(b.remaining(), 0);
        assert_eq!(b.wait_for(1.0, 60), Duration::from_secs(1));
        assert_eq!(b.reset(60), Duration::from_secs(60));
        b.refill(60, t0 + Duration::from_millis(2500));
        assert_eq!(b.remaining(), 2);
        b.refill(60, t0 + Duration::from_secs(3600));
        assert_eq!(b.level, 60.0, "never above capacity");
    }

    #[tokio::test(start_paused = true)]
    async fn debt_is_paid_before_the_next_admission() {
        let t0 = Instant::now();
        let mut b = Bucket::full(600, t0);
        b.level -= 900.0;
        assert_eq!(b.remaining(), 0);
        // 300 tokens of debt plus 10 wanted, at 10 per second.
        assert_eq!(b.wait_for(10.0, 600), Duration::from_secs(31));
        b.refill(100, t0);
        assert_eq!(b.level, -300.0, "a lower limit does not forgive debt");
    }
}
