//! Scenario 4: adaptation (a device slows 4×, dies, comes back).
//!
//! herd alone in front of three of scenario 3's uniform devices, one of
//! them the victim, at 50% of their capacity with scenario 3's one-model
//! workload ([`super::routing`]). On a fixed timeline the victim slows 4×,
//! is killed, and comes back with the same name and port. Read from the
//! requests' own outcomes ([`Adaptation`]): the victim's share before and
//! during the slowdown, how long herd takes to shift load off it, to stop
//! sending to it after the kill and to use it again once it is back, and
//! the errors, counting apart the streams the kill cut mid-way, which no
//! router can retry once bytes reached the client.

use std::time::Duration;

use herd_node::FleetConfig;
use serde_json::json;

use super::load::{self, Bounds, Outcome};
use super::procs::free_port;
use super::routing::{MEAN_TOKENS, Mix, capacity, uniform_fleet};
use super::scenarios::{Bench, BenchResult};
use super::targets::{Herd, Sims, post_json};

impl Bench {
    /// Adaptation: one device slows 4×, is killed, comes back.
    pub async fn s4(&mut self) -> BenchResult<()> {
        eprintln!("== scenario 4: adaptation");
        let mut fleet = uniform_fleet();
        fleet.devices.truncate(3);
        let mut victim = fleet.devices.pop().expect("three devices");
        victim.name = "victim".into();
        victim.port = free_port();
        let victim_fleet = FleetConfig {
            devices: vec![victim.clone()],
            ..FleetConfig::default()
        };
        let cap = capacity(&fleet, MEAN_TOKENS) + capacity(&victim_fleet, MEAN_TOKENS);
        let s = if self.opts.smoke { 0.15 } else { 1.0 };
        let (t_slow, t_kill, t_back, t_end) = (
            self.opts.secs(4.0 * s),
            self.opts.secs(10.0 * s),
            self.opts.secs(16.0 * s),
            self.opts.secs(28.0 * s),
        );
        for round in 0..self.opts.rounds {
            let herd = Herd::start(&self.env, "").await?;
            let sims = Sims::start(&self.env, &fleet, Some(&herd.url())).await?;
            let mut vsim = Some(Sims::start(&self.env, &victim_fleet, Some(&herd.url())).await?);
            herd.wait_online(&self.client, 3, Duration::from_secs(20))
                .await?;
            let vaddr = vsim
                .as_ref()
                .and_then(|v| v.addr("victim"))
                .expect("victim");
            let url = format!("{}/api/chat", herd.url());
            let rate = cap * 0.5;
            let client = self.client.clone();
            let seed = round as u64;
            let load = tokio::spawn(async move {
                load::open_loop(
                    &client,
                    rate,
                    Bounds {
                        duration: t_end,
                        max_requests: (rate * t_end.as_secs_f64() * 2.0) as u64 + 10,
                        timeout: Duration::from_secs(60),
                    },
                    seed,
                    move |j| Mix::Uniform.request(&url, seed * 1_000_003 + j),
                )
                .await
            });
            let t0 = tokio::time::Instant::now();
            tokio::time::sleep_until(t0 + t_slow).await;
            post_json(
                &self.client,
                &format!("http://{vaddr}/_sim/faults"),
                &json!({"slowdown": 4.0}),
            )
            .await?;
            tokio::time::sleep_until(t0 + t_kill).await;
            if let Some(mut v) = vsim.take() {
                v.proc.kill();
            }
            tokio::time::sleep_until(t0 + t_back).await;
            // Same name, same port: the machine came back.
            let revived = Sims::start(&self.env, &victim_fleet, Some(&herd.url())).await?;
            let outs = load.await?;
            let a = adaptation(&outs, t_slow, t_kill, t_back);
            let l = "herd";
            self.m.add(format!("s4/{l}/share_before"), a.share_before);
            self.m.add(format!("s4/{l}/share_slow"), a.share_slow);
            self.m.add(format!("s4/{l}/slow_shift_s"), a.slow_shift_s);
            self.m
                .add(format!("s4/{l}/stop_after_kill_s"), a.stop_after_kill_s);
            self.m.add(format!("s4/{l}/errors_total"), a.errors as f64);
            self.m.add(
                format!("s4/{l}/errors_after_kill"),
                a.errors_after_kill as f64,
            );
            self.m.add(
                format!("s4/{l}/errors_cut_by_kill"),
                a.errors_cut_by_kill as f64,
            );
            self.m
                .add(format!("s4/{l}/reuse_after_back_s"), a.reuse_after_back_s);
            self.m.add(format!("s4/{l}/sent"), outs.len() as f64);
            drop(revived);
            drop(sims);
            drop(herd);
            eprintln!("   round {} done", round + 1);
        }
        self.extra.insert(
            "s4_timeline_s".into(),
            json!({"slow": t_slow.as_secs_f64(), "kill": t_kill.as_secs_f64(), "back": t_back.as_secs_f64(), "end": t_end.as_secs_f64(), "load": "50% of capacity"}),
        );
        Ok(())
    }
}

/// Scenario 4's reading of one run.
#[derive(Debug, Default)]
struct Adaptation {
    share_before: f64,
    share_slow: f64,
    /// From the slowdown until the victim's share (1 s windows) first falls
    /// below half of its share before.
    slow_shift_s: f64,
    /// From the kill to the last request sent to the victim that was sent
    /// after the kill.
    stop_after_kill_s: f64,
    errors: u64,
    errors_after_kill: u64,
    /// Requests sent before the kill that failed after it: streams cut
    /// mid-way, which no router can retry once bytes reached the client.
    errors_cut_by_kill: u64,
    /// From the victim's return to the first request it served.
    reuse_after_back_s: f64,
}

fn adaptation(outs: &[Outcome], slow: Duration, kill: Duration, back: Duration) -> Adaptation {
    let is_v = |o: &Outcome| o.node.as_deref() == Some("victim");
    let share = |from: Duration, to: Duration| {
        let w: Vec<&Outcome> = outs
            .iter()
            .filter(|o| o.sent_at >= from && o.sent_at < to && o.ok())
            .collect();
        if w.is_empty() {
            return f64::NAN;
        }
        w.iter().filter(|o| is_v(o)).count() as f64 / w.len() as f64
    };
    let mut a = Adaptation {
        share_before: share(Duration::ZERO, slow),
        share_slow: share(slow, kill),
        ..Adaptation::default()
    };
    a.slow_shift_s = f64::NAN;
    let mut t = slow;
    while t < kill {
        let s = share(t, t + Duration::from_secs(1));
        if s.is_finite() && s < a.share_before / 2.0 {
            a.slow_shift_s = (t - slow).as_secs_f64();
            break;
        }
        t += Duration::from_millis(250);
    }
    a.stop_after_kill_s = outs
        .iter()
        .filter(|o| o.sent_at >= kill && o.sent_at < back && (is_v(o) || !o.ok()))
        .map(|o| (o.sent_at - kill).as_secs_f64())
        .fold(0.0, f64::max);
    a.errors = outs.iter().filter(|o| !o.ok()).count() as u64;
    a.errors_after_kill = outs.iter().filter(|o| o.sent_at >= kill && !o.ok()).count() as u64;
    a.errors_cut_by_kill = outs
        .iter()
        .filter(|o| o.sent_at < kill && o.sent_at + o.e2e >= kill && !o.ok())
        .count() as u64;
    a.reuse_after_back_s = outs
        .iter()
        .filter(|o| o.sent_at >= back && is_v(o))
        .map(|o| (o.sent_at - back).as_secs_f64())
        .fold(f64::NAN, f64::min);
    a
}
