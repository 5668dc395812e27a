//! Scenario 2: streaming overhead (50 ms TTFT, 200 tokens at 20 ms;
//! 1..1024 streams): TTFT, chunk gaps, chunks preserved, herd's memory.
//!
//! One simulated streaming device ([`stream_device`]) behind the direct
//! path, herd, nginx and Envoy. Each round starts with a TTFT probe, one
//! short stream at a time with many samples, because a single 4 s stream
//! gives one TTFT per round, too few for a p99. Then each number of
//! concurrent streams (NDJSON, and one run in OpenAI's SSE) goes through
//! every target: TTFT, chunk gaps, chunks preserved against direct, CPU per
//! chunk, herd's peak memory. herd's idle memory is read once, after the
//! warm-up. Scenario 5 ([`super::epp`]) runs the same rounds through Envoy
//! with and without herd-epp.

use std::collections::BTreeMap;
use std::time::Duration;

use herd_node::FleetConfig;
use serde_json::json;

use super::load::{self, HttpClient, Outcome, Req, Summary, Wire, pct};
use super::scenarios::{Bench, BenchResult, MODEL, chat_body, openai_body, rotated, stream_device};
use super::targets::{Kind, Target};

impl Bench {
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
