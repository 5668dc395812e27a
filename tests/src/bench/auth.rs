//! Scenario `auth`: what API keys and per-key limits cost per request.
//!
//! Three herds in front of one zero-think-time replay of a simulated device
//! (see [`super::echo`]), the same binary, in the same run: **off** — no
//! key exists, so the auth check ends at "inference is open" and the limit
//! layer sees no tenant (herd's zero-config path); **key** — a key without
//! limits, sent as `Authorization: Bearer` (hash, lookup, scope, the
//! tenant on the request, the trace and metrics per key); **key+limits** —
//! the same with requests/min, tokens/min and concurrency limits high
//! enough never to refuse (admission, the `x-ratelimit-*` headers, the
//! ticket and its usage correction at the end of the answer).
//!
//! Each round runs every herd in a rotated order: sequential requests (one
//! in flight: the latency a request pays) and a closed loop of 8 (herd's
//! CPU time per request, from `/proc`). The added cost is each herd minus
//! **off** within the round; the report shows medians over rounds.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::json;

use super::echo::Echo;
use super::load::{HttpClient, pct};
use super::scenarios::{Bench, BenchResult, rotated, small_chat};
use super::stats::{Metrics, Table, f};
use super::targets::Herd;

/// The three herds' labels, in report order.
const LABELS: [&str; 3] = ["off", "key", "key+limits"];

/// One POST with an optional key; the time to the end of the answer.
async fn once(
    client: &HttpClient,
    url: &str,
    body: &Bytes,
    auth: Option<&str>,
) -> Result<Duration, String> {
    let mut b = http::Request::post(url).header("content-type", "application/json");
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    let req = b.body(Full::new(body.clone())).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let rsp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = rsp.status();
    let bytes = rsp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let took = t0.elapsed();
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
    }
    Ok(took)
}

/// `POST /fleet/keys`: the answer, with the key in it.
async fn make_key(
    client: &HttpClient,
    url: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let rsp = client.request(req).await.map_err(|e| e.to_string())?;
    let bytes = rsp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&bytes)))
}

struct AuthTarget {
    label: &'static str,
    herd: Herd,
    auth: Option<String>,
}

impl Bench {
    /// The added cost of auth + limits per request, on and off, same run.
    pub async fn auth(&mut self) -> BenchResult<()> {
        eprintln!("== scenario auth: the cost of API keys and limits per request");
        let body = small_chat();
        let rec = self.zero_think_recording(&body).await?;
        let device = Echo::start(rec).await?;
        let toml = format!(
            "nodes = [\"http://{}\"]\n[scoring]\ndefault_parallel_slots = 4096\n",
            device.addr
        );
        let mut targets = Vec::new();
        for label in LABELS {
            let herd = Herd::start(&self.env, &toml).await?;
            herd.wait_online(&self.client, 1, Duration::from_secs(20))
                .await?;
            let limits = match label {
                "off" => None,
                "key" => Some(json!({})),
                _ => Some(json!({
                    "requests_per_minute": 4_000_000_000u32,
                    "tokens_per_minute": 4_000_000_000u32,
                    "concurrent": 100_000,
                })),
            };
            let auth = match limits {
                None => None,
                Some(limits) => {
                    // From loopback while no key exists: allowed.
                    let v = make_key(
                        &self.client,
                        &format!("{}/fleet/keys", herd.url()),
                        &json!({"name": "bench", "limits": limits}),
                    )
                    .await?;
                    let key = v["key"]
                        .as_str()
                        .ok_or_else(|| format!("no key made: {v}"))?;
                    Some(format!("Bearer {key}"))
                }
            };
            targets.push(AuthTarget { label, herd, auth });
        }
        let smoke = self.opts.smoke;
        let sequential = if smoke { 50 } else { 4000 };
        let loop_for = self.opts.secs(if smoke { 0.5 } else { 4.0 });
        // Warm every path.
        for t in &targets {
            let url = format!("{}/api/chat", t.herd.url());
            for _ in 0..(if smoke { 20 } else { 500 }) {
                once(&self.client, &url, &body, t.auth.as_deref())
                    .await
                    .map_err(|e| format!("auth: warm-up through {}: {e}", t.label))?;
            }
        }
        let order: Vec<usize> = (0..targets.len()).collect();
        for round in 0..self.opts.rounds {
            let mut p50 = [0.0; 3];
            let mut cpu = [0.0; 3];
            for i in rotated(&order, round) {
                let t = &targets[i];
                let url = format!("{}/api/chat", t.herd.url());
                // One in flight: what each request pays.
                let mut h = super::load::hist();
                for _ in 0..sequential {
                    let d = once(&self.client, &url, &body, t.auth.as_deref())
                        .await
                        .map_err(|e| format!("auth: {}: {e}", t.label))?;
                    h.record(d.as_micros().max(1) as u64)?;
                }
                let key = format!("auth/{}", t.label);
                self.m.add(format!("{key}/p50"), pct(&h, 0.5));
                self.m.add(format!("{key}/p99"), pct(&h, 0.99));
                p50[i] = pct(&h, 0.5);
                // Eight in flight: herd's CPU per request.
                let cpu0 = t.herd.proc.cpu_seconds();
                let deadline = Instant::now() + loop_for;
                let mut workers = tokio::task::JoinSet::new();
                for _ in 0..8 {
                    let (client, url, body, auth) = (
                        self.client.clone(),
                        url.clone(),
                        body.clone(),
                        t.auth.clone(),
                    );
                    workers.spawn(async move {
                        let mut n = 0u64;
                        while Instant::now() < deadline {
                            once(&client, &url, &body, auth.as_deref()).await?;
                            n += 1;
                        }
                        Ok::<u64, String>(n)
                    });
                }
                let mut n = 0;
                while let Some(r) = workers.join_next().await {
                    n += r.map_err(|e| e.to_string())??;
                }
                let used = t.herd.proc.cpu_seconds() - cpu0;
                cpu[i] = used / n.max(1) as f64 * 1e6;
                self.m.add(format!("{key}/cpu_us_per_req"), cpu[i]);
                self.m
                    .add(format!("{key}/rps"), n as f64 / loop_for.as_secs_f64());
            }
            for i in 1..targets.len() {
                let l = targets[i].label;
                self.m.add(format!("auth/{l}/added_p50"), p50[i] - p50[0]);
                self.m
                    .add(format!("auth/{l}/added_cpu_us"), cpu[i] - cpu[0]);
            }
            eprintln!("   round {} done", round + 1);
        }
        self.extra.insert("auth".into(), json!(LABELS));
        drop(targets);
        drop(device);
        Ok(())
    }
}

/// The scenario's table.
pub fn markdown(m: &Metrics) -> String {
    let mut out = String::from(
        "### Scenario auth: API keys and per-key limits, cost per request\n\n\
         Same run, same binary, one zero-think-time device: *off* has no key (the zero-config path), \
         *key* sends a key without limits, *key+limits* one with requests/min, tokens/min and \
         concurrency limits that never refuse. Latency with one request in flight (µs); herd's CPU \
         per request with eight in flight (µs, from /proc); *added* is minus *off* within each round, \
         medians over rounds.\n\n",
    );
    let mut t = Table::new(&[
        "herd",
        "p50",
        "p99",
        "added p50",
        "CPU/request",
        "added CPU/request",
        "req/s (8 in flight)",
    ]);
    for l in LABELS {
        let k = format!("auth/{l}");
        let added = |s: &str| {
            if l == "off" {
                "–".to_string()
            } else {
                f(m.med(&format!("{k}/{s}")), 1)
            }
        };
        t.row(vec![
            l.to_string(),
            f(m.med(&format!("{k}/p50")), 0),
            f(m.med(&format!("{k}/p99")), 0),
            added("added_p50"),
            f(m.med(&format!("{k}/cpu_us_per_req")), 1),
            added("added_cpu_us"),
            f(m.med(&format!("{k}/rps")), 0),
        ]);
    }
    out += &t.render();
    out += "\n";
    out
}
