//! Scenario 1: non-streaming overhead (direct, herd, nginx, Envoy; zero
//! think time).
//!
//! Scenario 1 measures microseconds, which a simulated device answering on
//! a tokio timer would bury in millisecond jitter, so every target sits in
//! front of one zero-think-time replay of a simulated device (see
//! [`super::echo`]): herd reaches it as an agentless node, nginx and Envoy
//! as a plain upstream, so every target sees the same device. Each round
//! runs every target at fixed open-loop rates, then in a closed loop for
//! max throughput; the latency a target adds is computed against the
//! direct path from the same round's numbers, and its CPU per 1k requests
//! from `/proc`. Scenario 5 ([`super::epp`]) runs the same rounds through
//! Envoy with and without herd-epp, and there [`Bench::overhead`] also
//! reads herd-epp's scheduling time per pick.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use super::echo::Echo;
use super::load::{self, Bounds, Hist, HttpClient, Req, Summary, Wire, pct};
use super::scenarios::{Bench, BenchResult, rotated, small_chat};
use super::targets::{Herd, Kind, Target, get_json};

impl Bench {
    /// Non-streaming overhead against a device with zero think time.
    pub async fn s1(&mut self) -> BenchResult<()> {
        eprintln!("== scenario 1: non-streaming overhead");
        let body = small_chat();
        let rec = self.zero_think_recording(&body).await?;
        let device = Echo::start(rec).await?;
        let addr = device.addr;
        // herd reaches the replay as an agentless node; its slots are not
        // reported, so lift herd's default (4) to the device's own.
        let herd = Herd::start(
            &self.env,
            &format!("nodes = [\"http://{addr}\"]\n[scoring]\ndefault_parallel_slots = 4096\n"),
        )
        .await?;
        herd.wait_online(&self.client, 1, Duration::from_secs(20))
            .await?;
        let mut targets = vec![Target::direct(addr), herd.into_target()];
        for k in self.available(&[Kind::NginxRr, Kind::EnvoyRr]) {
            targets.push(Target::proxy(&self.env, k, &[addr]).await?);
        }
        let kinds = self.overhead("s1", &targets, "/api/chat", &body).await?;
        self.extra.insert(
            "s1_targets".into(),
            json!(kinds.iter().map(|k| k.label()).collect::<Vec<_>>()),
        );
        drop(targets);
        drop(device);
        Ok(())
    }

    /// Non-streaming overhead rounds over `targets` (the first is the direct
    /// path): fixed open-loop rates, CPU per 1k requests, max throughput,
    /// and for a target that reports picks (herd-epp), its scheduling time
    /// per pick in each rate's phase. Returns the targets' kinds.
    pub(super) async fn overhead(
        &mut self,
        scen: &str,
        targets: &[Target],
        path: &str,
        body: &Bytes,
    ) -> BenchResult<Vec<Kind>> {
        let dur = self.opts.secs(if self.opts.smoke { 0.5 } else { 3.0 });
        // Warm every path (connections, caches, herd's learned history),
        // once the target answers at all (a picker polls its endpoints first).
        for t in targets {
            let req = Req {
                url: format!("{}{path}", t.base),
                body: body.clone(),
                wire: Wire::Json,
            };
            self.until_answered(scen, t.kind, &req).await?;
            let outs = load::closed_loop(
                &self.client,
                4,
                Bounds {
                    duration: dur,
                    max_requests: if self.opts.smoke { 20 } else { 2000 },
                    timeout: Duration::from_secs(10),
                },
                move |_| req.clone(),
            )
            .await;
            let s = Summary::of(&outs);
            if s.errors > 0 {
                return Err(format!(
                    "{scen}: warm-up through {} failed: {:?}",
                    t.kind.label(),
                    s.first_error
                )
                .into());
            }
        }
        let kinds: Vec<Kind> = targets.iter().map(|t| t.kind).collect();
        for round in 0..self.opts.rounds {
            let mut base: BTreeMap<String, f64> = BTreeMap::new();
            // Direct first in each round's order is not required: ratios
            // are computed after the round, from this round's numbers.
            for k in rotated(&kinds, round) {
                let t = targets.iter().find(|t| t.kind == k).expect("target");
                let label = k.label();
                let url = format!("{}{path}", t.base);
                let cpu0 = t.cpu_seconds();
                let mut n_fixed = 0u64;
                for &rate in &self.opts.rates {
                    let (url, body) = (url.clone(), body.clone());
                    let picks_before = match &t.picks_url {
                        Some(u) => Some(picks_since(&self.client, u, u64::MAX).await?.0),
                        None => None,
                    };
                    let outs = load::open_loop(
                        &self.client,
                        rate,
                        Bounds {
                            duration: dur,
                            max_requests: (rate * dur.as_secs_f64() * 1.5) as u64 + 10,
                            timeout: Duration::from_secs(10),
                        },
                        round as u64 * 1000 + rate as u64,
                        move |_| Req {
                            url: url.clone(),
                            body: body.clone(),
                            wire: Wire::Json,
                        },
                    )
                    .await;
                    let s = Summary::of(&outs);
                    n_fixed += s.sent;
                    let key = format!("{scen}/{label}/rate={rate}");
                    if let (Some(u), Some(since)) = (&t.picks_url, picks_before) {
                        let (_, picks) = picks_since(&self.client, u, since).await?;
                        self.m.add(format!("{key}/picks"), picks.len() as f64);
                        self.m.add(format!("{key}/pick_p50"), pct(&picks, 0.5));
                        self.m.add(format!("{key}/pick_p99"), pct(&picks, 0.99));
                    }
                    self.m.add(format!("{key}/p50"), pct(&s.e2e, 0.5));
                    self.m.add(format!("{key}/p99"), pct(&s.e2e, 0.99));
                    self.m.add(format!("{key}/errors"), s.errors as f64);
                    self.m.add(format!("{key}/sent"), s.sent as f64);
                    self.m.add(format!("{key}/lag_p99"), pct(&s.lag, 0.99));
                    base.insert(format!("{label}/{rate}/p50"), pct(&s.e2e, 0.5));
                    base.insert(format!("{label}/{rate}/p99"), pct(&s.e2e, 0.99));
                }
                let cpu = t.cpu_seconds() - cpu0;
                if t.proc.is_some() && n_fixed > 0 {
                    self.m.add(
                        format!("{scen}/{label}/cpu_s_per_1k"),
                        cpu / n_fixed as f64 * 1000.0,
                    );
                }
                // Max throughput: closed loop, 32 in flight.
                let (url2, body2) = (url.clone(), body.clone());
                let outs = load::closed_loop(
                    &self.client,
                    32,
                    Bounds {
                        duration: dur,
                        max_requests: 1_000_000,
                        timeout: Duration::from_secs(10),
                    },
                    move |_| Req {
                        url: url2.clone(),
                        body: body2.clone(),
                        wire: Wire::Json,
                    },
                )
                .await;
                let s = Summary::of(&outs);
                self.m
                    .add(format!("{scen}/{label}/max_rps"), s.throughput());
                self.m
                    .add(format!("{scen}/{label}/max_errors"), s.errors as f64);
            }
            for &rate in &self.opts.rates {
                let d50 = base.get(&format!("direct/{rate}/p50")).copied();
                let d99 = base.get(&format!("direct/{rate}/p99")).copied();
                for k in &kinds {
                    if *k == Kind::Direct {
                        continue;
                    }
                    let l = k.label();
                    if let (Some(d50), Some(v)) = (d50, base.get(&format!("{l}/{rate}/p50"))) {
                        self.m
                            .add(format!("{scen}/{l}/rate={rate}/added_p50"), v - d50);
                    }
                    if let (Some(d99), Some(v)) = (d99, base.get(&format!("{l}/{rate}/p99"))) {
                        self.m
                            .add(format!("{scen}/{l}/rate={rate}/added_p99"), v - d99);
                    }
                    // The picker's own cost: Envoy with it against Envoy without.
                    if *k == Kind::EnvoyEpp {
                        let rr = Kind::EnvoyRr.label();
                        for q in ["p50", "p99"] {
                            if let (Some(v), Some(r)) = (
                                base.get(&format!("{l}/{rate}/{q}")),
                                base.get(&format!("{rr}/{rate}/{q}")),
                            ) {
                                self.m.add(
                                    format!("{scen}/{l}/rate={rate}/over_envoy_rr_{q}"),
                                    v - r,
                                );
                            }
                        }
                    }
                }
            }
            eprintln!("   round {} done", round + 1);
        }
        Ok(kinds)
    }
}

/// herd-epp's `/debug/picks?since=N`: its pick count now and the scheduling
/// times (µs) of the picks after the `since`-th.
async fn picks_since(client: &HttpClient, url: &str, since: u64) -> BenchResult<(u64, Hist)> {
    let v = get_json(client, &format!("{url}?since={since}")).await?;
    let total = v["total"]
        .as_u64()
        .ok_or_else(|| format!("{url}: no total in {v}"))?;
    if v["dropped"].as_u64().unwrap_or(0) > 0 {
        return Err(format!("{url}: herd-epp no longer holds every pick of the phase").into());
    }
    let mut h = load::hist();
    for us in v["micros"].as_array().into_iter().flatten() {
        if let Some(us) = us.as_f64() {
            h.record(us.round().max(1.0) as u64)?;
        }
    }
    Ok((total, h))
}
