//! Scenario 3: routing quality (heterogeneous fleet, mixed models, 20%→110%
//! load; and a uniform fleet where herd must not be worse than round robin).
//!
//! herd against nginx (round robin, least connections) and Envoy (least
//! request) on four Macs that differ in every way that matters to routing
//! ([`hetero_fleet`]), with a ladder of load steps as fractions of the
//! fleet's nominal [`capacity`]. Every run starts fresh devices, so no
//! target inherits another's loaded models, and reads TTFT, end-to-end
//! time, goodput and errors per step and for the 80–100% steps together,
//! then each device's share and cold loads from the devices' own counters.
//! Then four identical devices ([`uniform_fleet`]) at 90%, herd against
//! nginx round robin. Scenario 4 ([`super::adaptation`]) reuses the
//! workload ([`Mix`]), the uniform fleet and [`capacity`].

use std::collections::BTreeMap;
use std::time::Duration;

use herd_node::config::{GIB, ModelSpec};
use herd_node::{DeviceConfig, FleetConfig};
use serde_json::json;

use super::load::{self, Bounds, Outcome, Req, Summary, Wire, pct};
use super::scenarios::{Bench, BenchResult, chat_body, model, rotated};
use super::targets::{Kind, Sims, Target, get_json};

impl Bench {
    /// Routing quality on a heterogeneous fleet, and on a uniform one.
    pub async fn s3(&mut self) -> BenchResult<()> {
        eprintln!("== scenario 3: routing quality");
        let kinds = self.available(&[
            Kind::Herd,
            Kind::NginxRr,
            Kind::NginxLeastConn,
            Kind::EnvoyLeastRequest,
        ]);
        let fleet = hetero_fleet();
        let cap = capacity(&fleet, MEAN_TOKENS);
        self.extra.insert("s3_capacity_rps".into(), json!(cap));
        self.extra
            .insert("s3_fleet".into(), serde_json::to_value(&fleet)?);
        let steps: Vec<f64> = if self.opts.smoke {
            vec![0.5]
        } else {
            vec![0.2, 0.5, 0.8, 1.0, 1.1]
        };
        let step_len = self.opts.secs(if self.opts.smoke { 1.0 } else { 5.0 });
        // The smoke run checks that the scenario works, not its spread: one
        // round at half load (the baselines' queues on the slow devices
        // would otherwise take most of the suite's time to drain).
        let s3_rounds = if self.opts.smoke { 1 } else { self.opts.rounds };
        for round in 0..s3_rounds {
            for k in rotated(&kinds, round) {
                let r = self
                    .routing_run(k, &fleet, cap, &steps, step_len, round as u64, Mix::Hetero)
                    .await?;
                self.record_routing("s3", k, &steps, r);
            }
            eprintln!("   round {} done", round + 1);
        }
        // Uniform fleet: herd must not be worse than round robin.
        let uniform = uniform_fleet();
        let ucap = capacity(&uniform, MEAN_TOKENS);
        self.extra.insert("s3u_capacity_rps".into(), json!(ucap));
        let ukinds = self.available(&[Kind::Herd, Kind::NginxRr]);
        let usteps = vec![0.9];
        let ulen = self.opts.secs(if self.opts.smoke { 1.0 } else { 10.0 });
        for round in 0..s3_rounds {
            for k in rotated(&ukinds, round) {
                let r = self
                    .routing_run(k, &uniform, ucap, &usteps, ulen, round as u64, Mix::Uniform)
                    .await?;
                self.record_routing("s3u", k, &usteps, r);
            }
        }
        Ok(())
    }

    fn record_routing(&mut self, scen: &str, k: Kind, steps: &[f64], r: RoutingRun) {
        let l = k.label();
        for (i, s) in r.steps.iter().enumerate() {
            let key = format!("{scen}/{l}/load={:.0}", steps[i] * 100.0);
            self.m.add(format!("{key}/ttft_p50"), pct(&s.ttft, 0.5));
            self.m.add(format!("{key}/ttft_p90"), pct(&s.ttft, 0.9));
            self.m.add(format!("{key}/ttft_p99"), pct(&s.ttft, 0.99));
            self.m.add(format!("{key}/e2e_p90"), pct(&s.e2e, 0.9));
            self.m.add(format!("{key}/throughput"), r.step_goodput[i]);
            self.m.add(format!("{key}/errors"), s.errors as f64);
            self.m.add(format!("{key}/sent"), s.sent as f64);
        }
        let hi = &r.high;
        let key = format!("{scen}/{l}/load=80-100");
        self.m.add(format!("{key}/ttft_p50"), pct(&hi.ttft, 0.5));
        self.m.add(format!("{key}/ttft_p90"), pct(&hi.ttft, 0.9));
        self.m.add(format!("{key}/ttft_p99"), pct(&hi.ttft, 0.99));
        self.m.add(format!("{key}/e2e_p90"), pct(&hi.e2e, 0.9));
        let all = &r.all;
        let key = format!("{scen}/{l}/all");
        self.m.add(format!("{key}/throughput"), all.throughput());
        self.m.add(format!("{key}/errors"), all.errors as f64);
        self.m.add(format!("{key}/sent"), all.sent as f64);
        self.m.add(format!("{key}/cold_loads"), r.cold_loads as f64);
        let total: u64 = r.served.values().sum();
        for (dev, n) in &r.served {
            self.m.add(
                format!("{scen}/{l}/share/{dev}"),
                if total > 0 {
                    *n as f64 / total as f64
                } else {
                    0.0
                },
            );
        }
        if let Some(e) = &all.first_error {
            self.note(format!("{scen} {l}: first error seen: {e}"));
        }
    }

    /// One run of a fleet behind one target: fresh devices (so no target
    /// inherits another's loaded models), the load ladder, then the
    /// devices' own counters.
    async fn routing_run(
        &mut self,
        k: Kind,
        fleet: &FleetConfig,
        cap: f64,
        steps: &[f64],
        step_len: Duration,
        seed: u64,
        mix: Mix,
    ) -> BenchResult<RoutingRun> {
        let t_up = std::time::Instant::now();
        let (target, sims) = if k == Kind::Herd {
            let (herd, sims) = self.herd_with(fleet).await?;
            (herd.into_target(), sims)
        } else {
            let sims = Sims::start(&self.env, fleet, None).await?;
            let t = Target::proxy(&self.env, k, &sims.addrs()).await?;
            (t, sims)
        };
        eprintln!(
            "   {} up in {:.1} s",
            k.label(),
            t_up.elapsed().as_secs_f64()
        );
        let url = format!("{}/api/chat", target.base);
        let mut all_outs: Vec<Outcome> = Vec::new();
        let mut step_sums = Vec::new();
        let mut offset = Duration::ZERO;
        let mut high: Vec<Outcome> = Vec::new();
        for (i, frac) in steps.iter().enumerate() {
            let rate = (cap * frac).max(0.5);
            let url = url.clone();
            let stream_seed = seed * 7919 + i as u64;
            let mut outs = load::open_loop(
                &self.client,
                rate,
                Bounds {
                    duration: step_len,
                    max_requests: (rate * step_len.as_secs_f64() * 2.0) as u64 + 10,
                    timeout: Duration::from_secs(120),
                },
                stream_seed,
                move |j| mix.request(&url, stream_seed * 1_000_003 + j),
            )
            .await;
            for o in &mut outs {
                o.sent_at += offset;
            }
            offset += step_len;
            step_sums.push(Summary::of(&outs));
            if (0.8..=1.0).contains(frac) {
                high.extend(outs.iter().cloned());
            }
            all_outs.extend(outs);
        }
        let step_goodput = (0..steps.len())
            .map(|i| {
                let from = step_len * i as u32;
                load::completions_per_s(&all_outs, from, from + step_len)
            })
            .collect();
        let mut served = BTreeMap::new();
        let mut cold_loads = 0;
        for (name, addr) in &sims.devices {
            let v = get_json(&self.client, &format!("http://{addr}/_sim/stats")).await?;
            served.insert(name.clone(), v["served_total"].as_u64().unwrap_or(0));
            if let Some(pm) = v["per_model"].as_object() {
                cold_loads += pm
                    .values()
                    .map(|m| m["cold_loads"].as_u64().unwrap_or(0))
                    .sum::<u64>();
            }
        }
        drop(target);
        drop(sims);
        Ok(RoutingRun {
            steps: step_sums,
            step_goodput,
            high: Summary::of(&high),
            all: Summary::of(&all_outs),
            served,
            cold_loads,
        })
    }
}

/// What one routing run measured.
struct RoutingRun {
    steps: Vec<Summary>,
    /// Goodput of each step: answers that ended within it, per second.
    step_goodput: Vec<f64>,
    /// The 80–100% steps together.
    high: Summary,
    all: Summary,
    /// Requests each device admitted (its own counter).
    served: BTreeMap<String, u64>,
    cold_loads: u64,
}

/// Mean answer length of the routing workload, tokens.
pub(super) const MEAN_TOKENS: f64 = 32.0;

/// The workload of scenarios 3 and 4.
#[derive(Clone, Copy, Debug)]
pub(super) enum Mix {
    /// 60% small, 30% medium, 10% large model; 16..48 tokens.
    Hetero,
    /// One model; 16..48 tokens.
    Uniform,
}

impl Mix {
    pub(super) fn request(self, url: &str, seed: u64) -> Req {
        let mut rng = fastrand::Rng::with_seed(seed);
        let tokens = rng.usize(16..=48);
        let model = match self {
            Mix::Uniform => "small:3b",
            Mix::Hetero => match rng.u32(0..100) {
                0..60 => "small:3b",
                60..90 => "medium:8b",
                _ => "large:14b",
            },
        };
        Req {
            url: url.to_owned(),
            body: chat_body(model, tokens, true),
            wire: Wire::Ndjson,
        }
    }
}

fn small() -> ModelSpec {
    model("small:3b", 2.0)
}
fn medium() -> ModelSpec {
    model("medium:8b", 5.0)
}
fn large() -> ModelSpec {
    model("large:14b", 9.0)
}

/// Four Macs that differ in every way that matters to routing.
fn hetero_fleet() -> FleetConfig {
    let base = DeviceConfig {
        ttft_base_ms: 30,
        ttft_ms_per_prompt_token: 0.2,
        load_base_ms: 500,
        load_ms_per_gb: 250,
        keep_alive_secs: -1,
        max_queue: 512,
        ..DeviceConfig::default()
    };
    let devices = vec![
        DeviceConfig {
            name: "fast-a".into(),
            memory_total_bytes: 64 * GIB,
            models: vec![small(), medium(), large()],
            loaded: vec!["small:3b".into(), "medium:8b".into(), "large:14b".into()],
            speed: 200.0,
            num_parallel: 4,
            max_loaded_models: 3,
            ..base.clone()
        },
        DeviceConfig {
            name: "fast-b".into(),
            memory_total_bytes: 32 * GIB,
            models: vec![small(), medium(), large()],
            loaded: vec!["small:3b".into(), "medium:8b".into()],
            speed: 200.0,
            num_parallel: 4,
            max_loaded_models: 2,
            ..base.clone()
        },
        DeviceConfig {
            name: "half".into(),
            memory_total_bytes: 16 * GIB,
            models: vec![small(), medium(), large()],
            loaded: vec!["medium:8b".into()],
            speed: 100.0,
            num_parallel: 2,
            max_loaded_models: 2,
            ..base.clone()
        },
        DeviceConfig {
            name: "quarter".into(),
            memory_total_bytes: 8 * GIB,
            models: vec![small(), medium()],
            loaded: vec!["small:3b".into()],
            speed: 50.0,
            num_parallel: 1,
            max_loaded_models: 1,
            ..base
        },
    ];
    FleetConfig {
        devices,
        ..FleetConfig::default()
    }
}

/// Four identical devices with one model loaded everywhere.
pub(super) fn uniform_fleet() -> FleetConfig {
    let devices = (0..4)
        .map(|i| DeviceConfig {
            name: format!("u{i}"),
            memory_total_bytes: 32 * GIB,
            models: vec![small()],
            loaded: vec!["small:3b".into()],
            speed: 200.0,
            num_parallel: 2,
            ttft_base_ms: 30,
            ttft_ms_per_prompt_token: 0.2,
            keep_alive_secs: -1,
            ..DeviceConfig::default()
        })
        .collect();
    FleetConfig {
        devices,
        ..FleetConfig::default()
    }
}

/// Nominal capacity in requests/s: every slot generating at the device's
/// speed, ignoring TTFT and loads (so 100% is slightly above what the fleet
/// can really sustain, and 110% is overload).
pub(super) fn capacity(fleet: &FleetConfig, mean_tokens: f64) -> f64 {
    fleet
        .devices
        .iter()
        .map(|d| f64::from(d.num_parallel) * d.speed / mean_tokens)
        .sum()
}
