//! How many requests a node serves at once, learned from how it answers.
//!
//! Ollama serves `OLLAMA_NUM_PARALLEL` requests per loaded model and queues
//! the rest inside itself, and its API shows neither number. A herd-node
//! agent reads the setting; for an agentless node herd has to infer it.
//! Assuming a constant is wrong both ways: Ollama's default is 1 since
//! v0.10 (and some model families are forced to 1), while a tuned node may
//! serve 8, so a fixed guess either piles requests into a node's hidden
//! queue or leaves slots idle.
//!
//! Every answer from Ollama ends with its timings, and they say where the
//! request's time went on the node: `total_duration` from its arrival,
//! `load_duration`, then — after Ollama takes its slot semaphore —
//! `prompt_eval_duration` and `eval_duration`. So herd can place each
//! answer on its own clock (it ended when herd read the last line): when it
//! arrived, whether it waited for a slot (the time the four leave over),
//! and when it was running. From the recent answers of a node:model:
//!
//! - `k` answers running at the same moment prove `N ≥ k`;
//! - an answer that waited while `w` of herd's answers were running there
//!   says the node was full with `w`: `N ≤ w`.
//!
//! The estimate is a vote over these: `N̂` is the largest `k` that more
//! answers support (ran with `k` or more at once) than contradict (waited
//! with fewer than `k` running) — so a wait caused by another client of the
//! node does not pull down an estimate many answers back. Only recent
//! answers vote (the last [`WINDOW`], within [`HORIZON_S`]), so a node
//! restarted with another setting is learned again. Learning happens only
//! while demand reaches the limit, so to find out whether a node serves
//! more, admission allows `N̂ + 1` at once until an answer waits with `N̂`
//! running (then again once that wait has left the window): the upward
//! probe of Netflix's concurrency-limits `VegasLimit`, kept to one request.
//!
//! Why not the concurrency herd counted when it sent a request: requests
//! sent together reach the node in any order, and a slot that herd still
//! counts (the answer is finishing its way to the client) may already be
//! free on the node, so those counts say little about which request waited.
//! They are the fallback only when an answer has no timings (an OpenAI
//! engine): then a time to first token stepping up against the node's time
//! when it had nothing else to do counts as a wait at herd's count.

use std::collections::VecDeque;

use serde::Serialize;
use tokio::time::Instant;

/// Concurrency learned at most (per node:model).
pub const MAX_LEARNED: u32 = 16;

/// Answers that vote.
pub const WINDOW: usize = 128;

/// How old an answer may be to vote, seconds.
pub const HORIZON_S: u64 = 3600;

/// Slack on herd's clock when deciding what ran at the same time (the last
/// line reaches herd a little after the node finished).
const SLACK_MS: f64 = 20.0;

/// Where a node:model's slot count comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotSource {
    /// The node's agent reports `OLLAMA_NUM_PARALLEL`.
    Reported,
    /// `[scoring] default_parallel_slots` fixes it.
    Configured,
    /// Learned from how the node answered.
    Learned,
    /// Nothing known yet: one slot, as Ollama's default.
    Assumed,
}

/// What herd believes about a node:model's parallelism.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SlotEstimate {
    /// Requests it serves at once, as far as herd can tell (what scoring
    /// divides its load by).
    pub slots: u32,
    /// Requests herd lets it hold at once (admission's limit): `slots`, or
    /// one more while probing whether it serves more.
    pub limit: u32,
    /// Answers the estimate rests on.
    pub samples: u32,
    /// Most answers seen running there at once.
    pub no_wait_up_to: u32,
    /// Fewest requests in flight there (itself included) when one waited
    /// for a slot, if one did.
    pub waited_from: Option<u32>,
    /// Median wait inside the node of the answers that waited, ms.
    pub node_wait_ms: Option<f64>,
}

impl SlotEstimate {
    /// The estimate before anything is learned: one slot (Ollama's default
    /// since v0.10), and admission lets two through to find out more.
    pub fn assumed() -> Self {
        SlotEstimate {
            slots: 1,
            limit: 2,
            samples: 0,
            no_wait_up_to: 0,
            waited_from: None,
            node_wait_ms: None,
        }
    }
}

/// Ollama's timings of one answer (its final chunk), in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NodeTimings {
    /// `total_duration`: from the request's arrival to its end.
    pub total_ms: f64,
    /// `load_duration`: loading the model (and scheduling).
    pub load_ms: f64,
    /// `prompt_eval_duration`: prefill.
    pub prompt_eval_ms: f64,
    /// `eval_duration`: generation.
    pub eval_ms: f64,
}

impl NodeTimings {
    /// The timings of Ollama's final chunk (or whole answer); `None` unless
    /// all four are there and sane.
    pub fn from_final(v: &serde_json::Value) -> Option<Self> {
        let ms = |k: &str| {
            v.get(k)
                .and_then(serde_json::Value::as_f64)
                .map(|ns| ns / 1e6)
                .filter(|m| m.is_finite() && *m >= 0.0 && *m < 1e9)
        };
        Some(NodeTimings {
            total_ms: ms("total_duration")?,
            load_ms: ms("load_duration")?,
            prompt_eval_ms: ms("prompt_eval_duration")?,
            eval_ms: ms("eval_duration")?,
        })
    }

    /// Time the request waited for a slot (what the four leave over; it
    /// includes templating and tokenizing, a few milliseconds).
    pub fn wait_ms(&self) -> f64 {
        (self.total_ms - self.load_ms - self.prompt_eval_ms - self.eval_ms).max(0.0)
    }

    /// Time it held its slot.
    pub fn running_ms(&self) -> f64 {
        self.prompt_eval_ms + self.eval_ms
    }
}

/// One finished answer, as the learner reads it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// Requests herd had in flight on the node:model when this one got its
    /// slot, itself included (used only without timings).
    pub concurrency: u32,
    /// The engine's timings, when it sent them.
    pub timings: Option<NodeTimings>,
    /// Time to first token, ms.
    pub ttft_ms: Option<f64>,
    /// Model load time, ms (a cold load is not a wait).
    pub load_ms: f64,
    /// Milliseconds since herd sent the request (its arrival at the node,
    /// on herd's clock; the rest is placed from the node's own timings, so
    /// a delay in herd reading the end does not shift it).
    pub sent_ms_ago: f64,
}

/// Whether `wait_ms` is a real wait for a slot, not the engine's own
/// overhead: more than 50 ms and 5% of the time it held the slot.
fn is_wait(wait_ms: f64, running_ms: f64) -> bool {
    wait_ms > 50.0 + 0.05 * running_ms
}

/// One answer placed on herd's clock.
#[derive(Clone, Copy, Debug)]
struct Span {
    /// When it reached the node.
    arrived: Instant,
    /// When it got its slot.
    start: Instant,
    /// When it ended.
    end: Instant,
    /// How long it waited for the slot, when it did.
    waited_ms: Option<f64>,
}

/// The learner of one node:model: see the module docs.
#[derive(Debug, Default)]
pub struct SlotLearner {
    spans: VecDeque<Span>,
    /// Without timings: fading counts of answers at herd's concurrency `k`
    /// that did (`late`) or did not (`prompt`) step up.
    fallback_prompt: [f64; MAX_LEARNED as usize + 2],
    fallback_late: [f64; MAX_LEARNED as usize + 2],
    /// Time to first token at concurrency 1 (the fallback's baseline).
    base_ttft_ms: Option<f64>,
}

/// The largest `k` that more answers support than contradict, and
/// whether anything contradicts `k + 1`: `support(k)` answers saw `k` or
/// more at once, `against(k)` say the node was full with fewer than `k`.
fn vote(support: impl Fn(usize) -> f64, against: impl Fn(usize) -> f64) -> (u32, bool) {
    let top = MAX_LEARNED as usize;
    let n = (1..=top)
        .rev()
        .find(|&k| support(k) > against(k))
        .unwrap_or(1);
    let probe = n < top && against(n + 1) < 0.5;
    (n as u32, probe)
}

impl SlotLearner {
    /// Learn from one answer, which ended now.
    pub fn sample(&mut self, s: &Sample) {
        let now = Instant::now();
        match s.timings {
            Some(t) => {
                let ms = |x: f64| std::time::Duration::from_secs_f64(x.clamp(0.0, 1e9) / 1000.0);
                let arrived = now.checked_sub(ms(s.sent_ms_ago)).unwrap_or(now);
                let end = arrived + ms(t.total_ms);
                let start = end.checked_sub(ms(t.running_ms())).unwrap_or(arrived);
                let wait = t.wait_ms();
                self.spans.push_back(Span {
                    arrived,
                    start,
                    end,
                    waited_ms: is_wait(wait, t.running_ms()).then_some(wait),
                });
                let horizon = std::time::Duration::from_secs(HORIZON_S);
                while self.spans.len() > WINDOW
                    || self
                        .spans
                        .front()
                        .is_some_and(|f| now.duration_since(f.end) > horizon)
                {
                    self.spans.pop_front();
                }
            }
            None => self.fallback(s),
        }
    }

    fn fallback(&mut self, s: &Sample) {
        let Some(t) = s.ttft_ms.map(|t| (t - s.load_ms).max(0.0)) else {
            return;
        };
        if s.concurrency == 0 {
            return;
        }
        for x in self
            .fallback_prompt
            .iter_mut()
            .chain(self.fallback_late.iter_mut())
        {
            *x *= 0.98;
        }
        let k = s.concurrency.min(MAX_LEARNED + 1) as usize;
        if k == 1 {
            self.base_ttft_ms = Some(match self.base_ttft_ms {
                Some(b) => b * 0.8 + t * 0.2,
                None => t,
            });
            self.fallback_prompt[1] += 1.0;
            return;
        }
        let Some(base) = self.base_ttft_ms else {
            return;
        };
        if t > 2.0 * base + 250.0 {
            self.fallback_late[k] += 1.0;
        } else {
            self.fallback_prompt[k] += 1.0;
        }
    }

    /// Answers running at `t` (within the clock's slack).
    fn running_at(&self, t: Instant) -> usize {
        let slack = std::time::Duration::from_secs_f64(SLACK_MS / 1000.0);
        self.spans
            .iter()
            .filter(|s| {
                s.start <= t + slack && t + slack < s.end.checked_sub(slack).unwrap_or(s.end)
            })
            .count()
    }

    /// What the answers so far say, once there are any.
    pub fn estimate(&self) -> Option<SlotEstimate> {
        if !self.spans.is_empty() {
            return Some(self.estimate_from_spans());
        }
        let samples: f64 = self.fallback_prompt.iter().chain(&self.fallback_late).sum();
        if samples < 0.5 {
            return None;
        }
        let prompt = &self.fallback_prompt;
        let late = &self.fallback_late;
        let (slots, probe) = vote(
            |k| prompt[k..].iter().sum::<f64>(),
            |k| late[1..=k].iter().sum::<f64>(),
        );
        let seen = |c: &[f64]| {
            c.iter()
                .enumerate()
                .filter(|(_, x)| **x >= 0.5)
                .map(|(k, _)| k as u32)
                .collect::<Vec<_>>()
        };
        Some(SlotEstimate {
            slots,
            limit: slots + u32::from(probe),
            samples: samples.round() as u32,
            no_wait_up_to: seen(prompt).last().copied().unwrap_or(0),
            waited_from: seen(late).first().copied(),
            node_wait_ms: None,
        })
    }

    fn estimate_from_spans(&self) -> SlotEstimate {
        // What ran at once when each answer got its slot (the most that
        // ever ran at once is reached at some answer's start).
        let ran: Vec<usize> = self
            .spans
            .iter()
            .map(|s| self.running_at(s.start))
            .collect();
        // What was running when each wait began: the node was full then.
        let full: Vec<usize> = self
            .spans
            .iter()
            .filter(|s| s.waited_ms.is_some())
            .map(|s| self.running_at(s.arrived))
            .collect();
        let (slots, probe) = vote(
            |k| ran.iter().filter(|r| **r >= k).count() as f64,
            |k| full.iter().filter(|w| **w < k).count() as f64,
        );
        let mut waits: Vec<f64> = self.spans.iter().filter_map(|s| s.waited_ms).collect();
        waits.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        SlotEstimate {
            slots,
            limit: slots + u32::from(probe),
            samples: self.spans.len() as u32,
            no_wait_up_to: ran.iter().copied().max().unwrap_or(0) as u32,
            waited_from: full.iter().copied().min().map(|w| w as u32 + 1),
            node_wait_ms: waits
                .get(waits.len() / 2)
                .map(|w| (w * 10.0).round() / 10.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn timings(wait: f64, running: f64) -> Sample {
        Sample {
            sent_ms_ago: wait + running,
            timings: Some(NodeTimings {
                total_ms: wait + running,
                load_ms: 0.0,
                prompt_eval_ms: running / 4.0,
                eval_ms: running * 3.0 / 4.0,
            }),
            ..Sample::default()
        }
    }

    /// A node with `n` slots gets `k` requests at once, each running
    /// 400 ms, FIFO: answers come back in waves, recorded as they end.
    async fn burst(l: &mut SlotLearner, n: usize, k: usize) {
        let mut waited = 0.0;
        let mut left = k;
        while left > 0 {
            tokio::time::advance(Duration::from_millis(400)).await;
            for _ in 0..left.min(n) {
                l.sample(&timings(waited, 400.0));
            }
            left -= left.min(n);
            waited += 400.0;
        }
        tokio::time::advance(Duration::from_secs(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn one_slot_and_four_slots_are_told_apart() {
        let mut one = SlotLearner::default();
        assert_eq!(one.estimate(), None);
        burst(&mut one, 1, 4).await;
        let e = one.estimate().unwrap();
        assert_eq!((e.slots, e.limit), (1, 1), "{e:?}");
        assert_eq!(e.waited_from, Some(2));
        assert_eq!(e.node_wait_ms, Some(800.0));

        let mut four = SlotLearner::default();
        // Demand grows with the limit: each limit reached without a wait
        // raises the estimate by one.
        for k in 1..=4 {
            burst(&mut four, 4, k).await;
            assert_eq!(four.estimate().unwrap().limit, k as u32 + 1);
        }
        burst(&mut four, 4, 5).await;
        let e = four.estimate().unwrap();
        assert_eq!((e.slots, e.limit), (4, 4), "{e:?}");
        assert_eq!((e.no_wait_up_to, e.waited_from), (4, Some(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stray_wait_does_not_pull_down_a_well_known_node() {
        let mut l = SlotLearner::default();
        for _ in 0..5 {
            burst(&mut l, 4, 4).await;
        }
        // Another client held the slots once: a wait with nothing of herd's running.
        tokio::time::advance(Duration::from_secs(5)).await;
        l.sample(&timings(900.0, 400.0));
        tokio::time::advance(Duration::from_secs(1)).await;
        let e = l.estimate().unwrap();
        assert_eq!(e.slots, 4, "{e:?}");
        // Overhead is not a wait.
        l.sample(&timings(30.0, 400.0));
        assert_eq!(l.estimate().unwrap().waited_from, Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_restarted_node_is_learned_again() {
        let mut l = SlotLearner::default();
        for _ in 0..3 {
            burst(&mut l, 4, 5).await;
        }
        assert_eq!(l.estimate().unwrap().slots, 4);
        // An hour later it serves two.
        tokio::time::advance(Duration::from_secs(HORIZON_S + 1)).await;
        burst(&mut l, 2, 3).await;
        let e = l.estimate().unwrap();
        assert_eq!((e.slots, e.limit), (2, 2), "{e:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn without_timings_the_ttft_step_is_the_signal() {
        let mut l = SlotLearner::default();
        let s = |k: u32, ttft: f64| Sample {
            concurrency: k,
            ttft_ms: Some(ttft),
            ..Sample::default()
        };
        l.sample(&s(2, 5_000.0)); // no baseline yet: nothing learned
        assert_eq!(l.estimate(), None);
        l.sample(&s(1, 100.0));
        l.sample(&s(2, 120.0));
        l.sample(&s(3, 2_000.0));
        l.sample(&s(3, 2_100.0));
        let e = l.estimate().unwrap();
        assert_eq!((e.slots, e.limit), (2, 2), "{e:?}");
    }

    #[test]
    fn timings_place_the_wait() {
        let v = serde_json::json!({"total_duration": 3_000_000_000u64, "load_duration": 500_000_000u64,
            "prompt_eval_duration": 200_000_000u64, "eval_duration": 1_000_000_000u64});
        let t = NodeTimings::from_final(&v).unwrap();
        assert_eq!(t.wait_ms(), 1300.0);
        assert_eq!(t.running_ms(), 1200.0);
        assert_eq!(
            NodeTimings::from_final(&serde_json::json!({"total_duration": 1})),
            None
        );
    }
}
