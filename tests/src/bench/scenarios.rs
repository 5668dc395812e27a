//! The scenarios of issue 5, each a function that starts what it needs,
//! runs interleaved rounds and leaves its numbers in [`Metrics`].
//!
//! 1. non-streaming overhead (direct, herd, nginx, Envoy; zero think time)
//! 2. streaming overhead (50 ms TTFT, 200 tokens at 20 ms; 1..1024 streams)
//! 3. routing quality (heterogeneous fleet, mixed models, 20%→110% load;
//!    and a uniform fleet where herd must not be worse than round robin)
//! 4. adaptation (a device slows 4×, dies, comes back)
//!
//! Within a round every target runs once, in an order rotated per round,
//! so drift on the machine (another build starting) lands on all of them.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use herd_node::config::{GIB, ModelSpec};
use herd_node::{DeviceConfig, FleetConfig};
use serde_json::json;

use super::echo::{self, Echo};
use super::load::{self, Bounds, Hist, HttpClient, Outcome, Req, Summary, Wire, pct};
use super::procs::free_port;
use super::stats::Metrics;
use super::targets::{Env, Herd, Kind, Sims, Target, get_json, post_json};

/// Knobs of a whole run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Opts {
    /// Interleaved rounds per scenario.
    pub rounds: usize,
    /// Multiplies every phase's duration.
    pub scale: f64,
    /// Tiny counts for the test suite.
    pub smoke: bool,
    /// Scenarios to run (1..=4).
    pub scenarios: Vec<u8>,
    /// Fixed open-loop rates of scenario 1, requests/s.
    pub rates: Vec<f64>,
    /// Concurrent streams of scenario 2.
    pub streams: Vec<usize>,
}

impl Opts {
    fn secs(&self, s: f64) -> Duration {
        Duration::from_secs_f64(s * self.scale)
    }
}

/// The harness's working state.
pub struct Bench {
    pub env: Env,
    pub opts: Opts,
    pub client: HttpClient,
    pub m: Metrics,
    /// Things a reader must know (skipped targets, failures).
    pub notes: Vec<String>,
    /// Per-scenario extras that are not per-round metrics.
    pub extra: BTreeMap<String, serde_json::Value>,
}

pub type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub(super) const MODEL: &str = "bench:1b";

pub(super) fn model(name: &str, gib: f64) -> ModelSpec {
    ModelSpec {
        name: name.to_owned(),
        size_bytes: (gib * GIB as f64) as u64,
        context_length: 8192,
        ..ModelSpec::default()
    }
}

/// An Ollama chat whose answer has exactly `tokens` chunks of content.
///
/// The simulator caps generated replies at 24 tokens, but echoes a `tool`
/// message word by word ("Tool result received: …"), so a tool message of
/// `tokens - 3` words yields a reply of `tokens` tokens.
pub fn chat_body(model: &str, tokens: usize, stream: bool) -> Bytes {
    let words = tokens.saturating_sub(3).max(1);
    let filler = vec!["w"; words].join(" ");
    Bytes::from(
        json!({
            "model": model,
            "messages": [
                {"role": "user", "content": "go"},
                {"role": "tool", "content": filler},
            ],
            "stream": stream,
        })
        .to_string(),
    )
}

/// The same in OpenAI's format.
pub fn openai_body(model: &str, tokens: usize) -> Bytes {
    let words = tokens.saturating_sub(3).max(1);
    let filler = vec!["w"; words].join(" ");
    Bytes::from(
        json!({
            "model": model,
            "messages": [
                {"role": "user", "content": "go"},
                {"role": "tool", "content": filler, "tool_call_id": "call_1"},
            ],
            "stream": true,
        })
        .to_string(),
    )
}

/// A small non-streaming chat (≈200 B in, ≈0.5 KB out).
pub(super) fn small_chat() -> Bytes {
    Bytes::from(
        json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": "Say hello to the benchmark, briefly please."}],
            "stream": false,
            "options": {"num_predict": 8},
        })
        .to_string(),
    )
}

fn rotated<T: Clone>(v: &[T], r: usize) -> Vec<T> {
    let mut out = v.to_vec();
    if !out.is_empty() {
        out.rotate_left(r % v.len());
    }
    out
}

impl Bench {
    fn available(&mut self, kinds: &[Kind]) -> Vec<Kind> {
        let mut out = Vec::new();
        for k in kinds {
            if k.needs_nginx() && self.env.nginx.is_none() {
                self.note(format!("{}: skipped, nginx is not installed", k.label()));
                continue;
            }
            if k.needs_envoy() && self.env.envoy.is_none() {
                self.note(format!("{}: skipped, envoy is not installed", k.label()));
                continue;
            }
            out.push(*k);
        }
        out
    }

    pub fn note(&mut self, s: String) {
        if !self.notes.contains(&s) {
            eprintln!("note: {s}");
            self.notes.push(s);
        }
    }

    /// herd on the proxy CPU with the fleet attached to it.
    async fn herd_with(&self, fleet: &FleetConfig) -> BenchResult<(Herd, Sims)> {
        let herd = Herd::start(&self.env, "").await?;
        let sims = Sims::start(&self.env, fleet, Some(&herd.url())).await?;
        herd.wait_online(&self.client, fleet.devices.len(), Duration::from_secs(20))
            .await?;
        Ok((herd, sims))
    }

    /// A simulated device's answers to `body` on `/api/chat` (and the GETs a
    /// router polls), recorded to be replayed with no timer by [`Echo`] (see
    /// [`super::echo`] for why).
    pub(super) async fn zero_think_recording(&self, body: &Bytes) -> BenchResult<echo::Recording> {
        let dev = DeviceConfig {
            name: "zero".into(),
            models: vec![model(MODEL, 1.0)],
            loaded: vec![MODEL.into()],
            speed: 1e9,
            ttft_base_ms: 0,
            ttft_ms_per_prompt_token: 0.0,
            num_parallel: 4096,
            max_queue: 100_000,
            keep_alive_secs: -1,
            ..DeviceConfig::default()
        };
        let fleet = FleetConfig {
            devices: vec![dev],
            ..FleetConfig::default()
        };
        let sims = Sims::start(&self.env, &fleet, None).await?;
        let base = format!("http://{}", sims.addrs()[0]);
        Ok(echo::record(&self.client, &base, "/api/chat", body.clone()).await?)
    }

    /// One short stream through every target, once it answers at all.
    pub(super) async fn warm_streams(&self, scen: &str, targets: &[Target]) -> BenchResult<()> {
        for t in targets {
            let req = Req {
                url: format!("{}/api/chat", t.base),
                body: chat_body(MODEL, 5, true),
                wire: Wire::Ndjson,
            };
            self.until_answered(scen, t.kind, &req).await?;
        }
        Ok(())
    }

    /// Sends `req` until it succeeds, for up to 20 s: a picker polls its
    /// endpoints before it can pick, a fresh proxy may still be connecting.
    async fn until_answered(&self, scen: &str, kind: Kind, req: &Req) -> BenchResult<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let o = load::send(
                &self.client,
                req,
                tokio::time::Instant::now(),
                Duration::from_secs(10),
            )
            .await;
            if o.ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("{scen}: {} never answered: {o:?}", kind.label()).into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // ------------------------------------------------------------ scenario 1

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

    // ------------------------------------------------------------ scenario 2

    /// Streaming overhead: TTFT, chunk gaps, chunks preserved, herd's memory.
    pub async fn s2(&mut self) -> BenchResult<()> {
        eprintln!("== scenario 2: streaming overhead");
        let tokens = if self.opts.smoke { 20 } else { 200 };
        let dev = stream_device("stream");
        let fleet = FleetConfig {
            devices: vec![dev],
            ..FleetConfig::default()
        };
        let (herd, sims) = self.herd_with(&fleet).await?;
        let addr = sims.addrs()[0];
        let mut targets = vec![Target::direct(addr), herd.into_target()];
        for k in self.available(&[Kind::NginxRr, Kind::EnvoyRr]) {
            targets.push(Target::proxy(&self.env, k, &[addr]).await?);
        }
        let kinds: Vec<Kind> = targets.iter().map(|t| t.kind).collect();
        // Warm up with one short stream each, then read herd's idle memory.
        self.warm_streams("s2", &targets).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Some(p) = targets
            .iter()
            .find(|t| t.kind == Kind::Herd)
            .and_then(|t| t.proc.as_ref())
        {
            let (rss, _) = p.memory_kib();
            self.m.add("s2/herd/idle_rss_kib", rss as f64);
        }
        let mut runs: Vec<(usize, Wire)> = self
            .opts
            .streams
            .iter()
            .map(|n| (*n, Wire::Ndjson))
            .collect();
        runs.push((if self.opts.smoke { 2 } else { 64 }, Wire::Sse));
        self.streaming("s2", &targets, tokens, &runs).await?;
        // Expected logical chunks per NDJSON stream: every token, then the final line.
        self.extra.insert("s2_tokens".into(), json!(tokens));
        self.extra.insert(
            "s2_targets".into(),
            json!(kinds.iter().map(|k| k.label()).collect::<Vec<_>>()),
        );
        drop(targets);
        drop(sims);
        Ok(())
    }

    /// Streaming rounds over `targets` (one of them the direct path): a TTFT
    /// probe (one short stream at a time), then each `(streams, wire)` run of
    /// `tokens`-token answers — TTFT, chunk gaps, chunks preserved against
    /// direct, CPU per chunk, herd's peak memory.
    pub(super) async fn streaming(
        &mut self,
        scen: &str,
        targets: &[Target],
        tokens: usize,
        runs: &[(usize, Wire)],
    ) -> BenchResult<()> {
        let kinds: Vec<Kind> = targets.iter().map(|t| t.kind).collect();
        let body_nd = chat_body(MODEL, tokens, true);
        let body_sse = openai_body(MODEL, tokens);
        let stagger = self.opts.secs(if self.opts.smoke { 0.1 } else { 1.0 });
        let probes = if self.opts.smoke { 5 } else { 30 };
        for round in 0..self.opts.rounds {
            // TTFT probe: one stream at a time, short answers, many samples
            // (a single 4 s stream gives one TTFT per round, too few for a p99).
            let mut probe: BTreeMap<Kind, (f64, f64)> = BTreeMap::new();
            for k in rotated(&kinds, round) {
                let t = targets.iter().find(|t| t.kind == k).expect("target");
                let req = Req {
                    url: format!("{}/api/chat", t.base),
                    body: chat_body(MODEL, 5, true),
                    wire: Wire::Ndjson,
                };
                let mut outs = Vec::with_capacity(probes);
                for _ in 0..probes {
                    outs.push(
                        load::send(
                            &self.client,
                            &req,
                            tokio::time::Instant::now(),
                            Duration::from_secs(10),
                        )
                        .await,
                    );
                }
                let s = Summary::of(&outs);
                let key = format!("{scen}/{}/probe", k.label());
                let (p50, p99) = (pct(&s.ttft, 0.5), pct(&s.ttft, 0.99));
                self.m.add(format!("{key}/ttft_p50"), p50);
                self.m.add(format!("{key}/ttft_p99"), p99);
                self.m.add(format!("{key}/errors"), s.errors as f64);
                probe.insert(k, (p50, p99));
            }
            if let Some(d) = probe.get(&Kind::Direct).copied() {
                for (k, v) in &probe {
                    if *k != Kind::Direct {
                        let key = format!("{scen}/{}/probe", k.label());
                        self.m.add(format!("{key}/added_ttft_p50"), v.0 - d.0);
                        self.m.add(format!("{key}/added_ttft_p99"), v.1 - d.1);
                    }
                }
            }
            for &(n, wire) in runs {
                let mut direct: Option<(f64, f64, f64, f64, u64)> = None;
                let order = rotated(&kinds, round);
                // Direct first would bias its position; instead keep the
                // rotation and compute deltas once all ran.
                let mut per: BTreeMap<Kind, (f64, f64, f64, f64, u64)> = BTreeMap::new();
                for k in order {
                    let t = targets.iter().find(|t| t.kind == k).expect("target");
                    let (path, body) = match wire {
                        Wire::Sse => ("/v1/chat/completions", body_sse.clone()),
                        _ => ("/api/chat", body_nd.clone()),
                    };
                    let req = Req {
                        url: format!("{}{path}", t.base),
                        body,
                        wire,
                    };
                    for p in t.proc.iter().chain(&t.sidecar) {
                        p.reset_peak();
                    }
                    let cpu0 = t.cpu_seconds();
                    let outs = streams(&self.client, &req, n, stagger).await;
                    let cpu = t.cpu_seconds() - cpu0;
                    let s = Summary::of(&outs);
                    let tag = match wire {
                        Wire::Sse => format!("sse/n={n}"),
                        _ => format!("n={n}"),
                    };
                    let key = format!("{scen}/{}/{tag}", k.label());
                    let (t50, t99) = (pct(&s.ttft, 0.5), pct(&s.ttft, 0.99));
                    let (g50, g99) = (pct(&s.gaps, 0.5), pct(&s.gaps, 0.99));
                    self.m.add(format!("{key}/ttft_p50"), t50);
                    self.m.add(format!("{key}/ttft_p99"), t99);
                    self.m.add(format!("{key}/gap_p50"), g50);
                    self.m.add(format!("{key}/gap_p99"), g99);
                    self.m.add(format!("{key}/gap_p999"), pct(&s.gaps, 0.999));
                    self.m.add(format!("{key}/chunks"), s.chunks as f64);
                    self.m.add(format!("{key}/coalesced"), s.coalesced as f64);
                    if t.proc.is_some() && s.chunks > 0 {
                        self.m.add(
                            format!("{key}/cpu_us_per_chunk"),
                            cpu * 1e6 / s.chunks as f64,
                        );
                    }
                    self.m.add(format!("{key}/errors"), s.errors as f64);
                    self.m.add(format!("{key}/sent"), s.sent as f64);
                    if let Some(e) = &s.first_error {
                        self.note(format!("{scen} {} {tag}: first error: {e}", k.label()));
                    }
                    if k == Kind::Herd
                        && let Some(p) = &t.proc
                    {
                        let (_, hwm) = p.memory_kib();
                        self.m.add(format!("{key}/peak_rss_kib"), hwm as f64);
                    }
                    if let Some(p) = &t.sidecar {
                        let (_, hwm) = p.memory_kib();
                        self.m
                            .add(format!("{key}/sidecar_peak_rss_kib"), hwm as f64);
                    }
                    per.insert(k, (t50, t99, g50, g99, s.chunks));
                    if k == Kind::Direct {
                        direct = Some((t50, t99, g50, g99, s.chunks));
                    }
                }
                if let Some(d) = direct {
                    for (k, v) in &per {
                        if *k == Kind::Direct {
                            continue;
                        }
                        let tag = match wire {
                            Wire::Sse => format!("sse/n={n}"),
                            _ => format!("n={n}"),
                        };
                        let key = format!("{scen}/{}/{tag}", k.label());
                        self.m.add(format!("{key}/added_ttft_p50"), v.0 - d.0);
                        self.m.add(format!("{key}/added_ttft_p99"), v.1 - d.1);
                        self.m.add(format!("{key}/added_gap_p50"), v.2 - d.2);
                        self.m.add(format!("{key}/added_gap_p99"), v.3 - d.3);
                        let preserved = if d.4 > 0 {
                            v.4 as f64 / d.4 as f64
                        } else {
                            f64::NAN
                        };
                        self.m.add(format!("{key}/chunks_preserved"), preserved);
                    }
                }
            }
            eprintln!("   round {} done", round + 1);
        }
        Ok(())
    }

    // ------------------------------------------------------------ scenario 3

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

    // ------------------------------------------------------------ scenario 4

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

/// A device that streams: 50 ms to the first token, then one every 20 ms,
/// with slots for every stream a scenario opens.
pub(super) fn stream_device(name: &str) -> DeviceConfig {
    DeviceConfig {
        name: name.into(),
        models: vec![model(MODEL, 1.0)],
        loaded: vec![MODEL.into()],
        speed: 50.0, // one token every 20 ms
        ttft_base_ms: 50,
        ttft_ms_per_prompt_token: 0.0,
        num_parallel: 8192,
        max_queue: 100_000,
        keep_alive_secs: -1,
        ..DeviceConfig::default()
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

/// Exactly `n` streams, their starts spread over `stagger`.
async fn streams(client: &HttpClient, req: &Req, n: usize, stagger: Duration) -> Vec<Outcome> {
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (client, req) = (client.clone(), req.clone());
        let at = start + stagger.mul_f64(i as f64 / n.max(1) as f64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let mut o = load::send(&client, &req, at, Duration::from_secs(120)).await;
            o.sent_at = at - start;
            o
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap_or_else(|e| Outcome {
            error: Some(format!("task failed: {e}")),
            ..Outcome::default()
        }));
    }
    out
}

/// What one routing run measured.
pub struct RoutingRun {
    pub steps: Vec<Summary>,
    /// Goodput of each step: answers that ended within it, per second.
    pub step_goodput: Vec<f64>,
    /// The 80–100% steps together.
    pub high: Summary,
    pub all: Summary,
    /// Requests each device admitted (its own counter).
    pub served: BTreeMap<String, u64>,
    pub cold_loads: u64,
}

/// Mean answer length of the routing workload, tokens.
const MEAN_TOKENS: f64 = 32.0;

/// The workload of scenarios 3 and 4.
#[derive(Clone, Copy, Debug)]
pub enum Mix {
    /// 60% small, 30% medium, 10% large model; 16..48 tokens.
    Hetero,
    /// One model; 16..48 tokens.
    Uniform,
}

impl Mix {
    fn request(self, url: &str, seed: u64) -> Req {
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
pub fn hetero_fleet() -> FleetConfig {
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
pub fn uniform_fleet() -> FleetConfig {
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
pub fn capacity(fleet: &FleetConfig, mean_tokens: f64) -> f64 {
    fleet
        .devices
        .iter()
        .map(|d| f64::from(d.num_parallel) * d.speed / mean_tokens)
        .sum()
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
