//! Scenario `dashboard`: what open dashboards cost routing.
//!
//! One herd in front of one zero-think-time replay of a simulated device
//! (see [`super::echo`]), so the microseconds measured are herd's own. Each
//! round runs three phases on the same herd, in a rotated order: **0 tabs**;
//! **100 tabs** — a hundred `GET /fleet/events` streams read as fast as
//! they come (a hundred open dashboards, every decision published, in
//! batches, to each); **100 slow tabs** — a hundred streams whose client
//! never reads (a small receive buffer, so herd's send buffer fills soon;
//! the ring is shortened to 512 events so they fall off it within the
//! phase, and herd must drop them rather than buffer). In each phase: the
//! open-loop rates of scenario 1 (latency from the intended start, p50 and
//! p99), herd's CPU per 1k requests from `/proc`, and max throughput with
//! 32 in flight. *added* is each phase minus **0 tabs** within the round;
//! the report shows medians over rounds. Also measured: what each reading
//! tab received (events/s and KiB/s), streams herd ended early (a reading
//! tab must never be dropped), and herd's RSS after the slow tabs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::echo::Echo;
use super::load::{self, Bounds, HttpClient, Req, Summary, Wire, pct};
use super::scenarios::{Bench, BenchResult, rotated, small_chat};
use super::stats::{Metrics, Table, Verdict, f};
use super::targets::Herd;

/// The phases, in report order.
const PHASES: [&str; 3] = ["0 tabs", "100 tabs", "100 slow tabs"];
/// Tabs opened by the two loaded phases.
const TABS: usize = 100;

/// What the reading tabs saw.
#[derive(Debug, Default)]
struct TabStats {
    bytes: AtomicU64,
    events: AtomicU64,
    /// Streams that ended before the phase did (herd dropped them).
    ended_early: AtomicU64,
    /// Streams that could not be opened.
    refused: AtomicU64,
}

/// One reading tab: reads `/fleet/events` until `stop`.
async fn reading_tab(
    client: HttpClient,
    url: String,
    mut stop: watch::Receiver<bool>,
    stats: Arc<TabStats>,
) {
    let req = match http::Request::get(&url).body(Full::new(Bytes::new())) {
        Ok(r) => r,
        Err(_) => return,
    };
    let rsp = match client.request(req).await {
        Ok(r) if r.status().is_success() => r,
        _ => {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let mut body = rsp.into_body();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            f = body.frame() => match f {
                Some(Ok(frame)) => {
                    if let Ok(d) = frame.into_data() {
                        stats.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
                        let n = d.windows(7).filter(|w| w == b"event: ").count();
                        stats.events.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
                _ => {
                    if !*stop.borrow() {
                        stats.ended_early.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
            },
        }
    }
}

/// One slow tab: asks for `/fleet/events` and never reads the answer.
async fn slow_tab(port: u16, mut stop: watch::Receiver<bool>) {
    let Ok(sock) = tokio::net::TcpSocket::new_v4() else {
        return;
    };
    let _ = sock.set_recv_buffer_size(4096);
    let Ok(mut s) = sock
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await
    else {
        return;
    };
    let req = format!("GET /fleet/events HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return;
    }
    let _ = stop.changed().await;
    drop(s);
}

impl Bench {
    /// Routing latency and CPU with 0 and 100 open dashboards (and 100
    /// that never read), same herd, same run.
    pub async fn dashboard(&mut self) -> BenchResult<()> {
        eprintln!("== scenario dashboard: the cost of open dashboards to routing");
        let body = small_chat();
        let rec = self.zero_think_recording(&body).await?;
        let device = Echo::start(rec).await?;
        let herd = Herd::start(
            &self.env,
            &format!(
                "nodes = [\"http://{}\"]\n[scoring]\ndefault_parallel_slots = 4096\n[dashboard]\nring = 512\n",
                device.addr
            ),
        )
        .await?;
        herd.wait_online(&self.client, 1, Duration::from_secs(20))
            .await?;
        let url = format!("{}/api/chat", herd.url());
        let events = format!("{}/fleet/events", herd.url());
        let dur = self.opts.secs(if self.opts.smoke { 0.5 } else { 3.0 });
        let req = Req {
            url: url.clone(),
            body: body.clone(),
            wire: Wire::Json,
        };
        self.until_answered("dashboard", super::targets::Kind::Herd, &req)
            .await?;
        let warm = load::closed_loop(
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
        if let Some(e) = Summary::of(&warm).first_error {
            return Err(format!("dashboard: warm-up failed: {e}").into());
        }
        let order: Vec<usize> = (0..PHASES.len()).collect();
        for round in 0..self.opts.rounds {
            let mut p50 = vec![vec![0.0; self.opts.rates.len()]; PHASES.len()];
            let mut p99 = p50.clone();
            for i in rotated(&order, round) {
                let phase = PHASES[i];
                let (stop_tx, stop) = watch::channel(false);
                let stats = Arc::new(TabStats::default());
                let mut tabs = tokio::task::JoinSet::new();
                match phase {
                    "100 tabs" => {
                        for _ in 0..TABS {
                            tabs.spawn(reading_tab(
                                self.client.clone(),
                                events.clone(),
                                stop.clone(),
                                stats.clone(),
                            ));
                        }
                    }
                    "100 slow tabs" => {
                        for _ in 0..TABS {
                            tabs.spawn(slow_tab(herd.port, stop.clone()));
                        }
                    }
                    _ => {}
                }
                // Let the streams open and their snapshots go out.
                tokio::time::sleep(Duration::from_millis(700)).await;
                let bytes0 = stats.bytes.load(Ordering::Relaxed);
                let events0 = stats.events.load(Ordering::Relaxed);
                let t0 = tokio::time::Instant::now();
                let cpu0 = herd.proc.cpu_seconds();
                let mut sent = 0u64;
                let key = format!("dash/{phase}");
                for (ri, &rate) in self.opts.rates.iter().enumerate() {
                    let (url, body) = (url.clone(), body.clone());
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
                    sent += s.sent;
                    self.m
                        .add(format!("{key}/rate={rate}/p50"), pct(&s.e2e, 0.5));
                    self.m
                        .add(format!("{key}/rate={rate}/p99"), pct(&s.e2e, 0.99));
                    self.m
                        .add(format!("{key}/rate={rate}/errors"), s.errors as f64);
                    p50[i][ri] = pct(&s.e2e, 0.5);
                    p99[i][ri] = pct(&s.e2e, 0.99);
                }
                let cpu = herd.proc.cpu_seconds() - cpu0;
                self.m.add(
                    format!("{key}/cpu_s_per_1k"),
                    cpu / sent.max(1) as f64 * 1000.0,
                );
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
                self.m.add(format!("{key}/max_rps"), s.throughput());
                self.m.add(format!("{key}/max_errors"), s.errors as f64);
                let secs = t0.elapsed().as_secs_f64();
                if phase == "100 tabs" {
                    let per_tab = |n: u64| n as f64 / TABS as f64 / secs;
                    self.m.add(
                        format!("{key}/events_per_tab_s"),
                        per_tab(stats.events.load(Ordering::Relaxed) - events0),
                    );
                    self.m.add(
                        format!("{key}/kib_per_tab_s"),
                        per_tab(stats.bytes.load(Ordering::Relaxed) - bytes0) / 1024.0,
                    );
                }
                // What herd says about its streams, before they close.
                let snap = dashboard_stats(&self.client, &events).await;
                if let Some(st) = &snap {
                    self.m.add(
                        format!("{key}/subscribers"),
                        st["subscribers"].as_f64().unwrap_or(f64::NAN) - 1.0,
                    );
                    self.m.add(
                        format!("{key}/dropped_total"),
                        st["dropped"].as_f64().unwrap_or(f64::NAN),
                    );
                }
                self.m.add(
                    format!("{key}/ended_early"),
                    stats.ended_early.load(Ordering::Relaxed) as f64,
                );
                self.m.add(
                    format!("{key}/refused"),
                    stats.refused.load(Ordering::Relaxed) as f64,
                );
                self.m
                    .add(format!("{key}/rss_kib"), herd.proc.memory_kib().0 as f64);
                let _ = stop_tx.send(true);
                while tabs.join_next().await.is_some() {}
            }
            for i in 1..PHASES.len() {
                for (ri, rate) in self.opts.rates.iter().enumerate() {
                    let key = format!("dash/{}/rate={rate}", PHASES[i]);
                    self.m
                        .add(format!("{key}/added_p50"), p50[i][ri] - p50[0][ri]);
                    self.m
                        .add(format!("{key}/added_p99"), p99[i][ri] - p99[0][ri]);
                }
            }
            eprintln!("   round {} done", round + 1);
        }
        self.extra
            .insert("dashboard".into(), json!({"phases": PHASES, "tabs": TABS}));
        drop(herd);
        drop(device);
        Ok(())
    }
}

/// The `stats` of a fresh snapshot of `/fleet/events` (this stream counts
/// itself among the subscribers).
async fn dashboard_stats(client: &HttpClient, url: &str) -> Option<serde_json::Value> {
    let req = http::Request::get(url).body(Full::new(Bytes::new())).ok()?;
    let rsp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .ok()?
        .ok()?;
    let mut body = rsp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    // The snapshot is the first event: its `data:` line, to the blank line.
    loop {
        let text = String::from_utf8_lossy(&buf);
        if let Some(start) = text.find("data: ")
            && let Some(len) = text[start..].find("\n\n")
        {
            let v: serde_json::Value = serde_json::from_str(&text[start + 6..start + len]).ok()?;
            return Some(v["stats"].clone());
        }
        if buf.len() > 16 << 20 {
            return None;
        }
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .ok()??
            .ok()?;
        if let Ok(d) = frame.into_data() {
            buf.extend_from_slice(&d);
        }
    }
}

/// The scenario's tables.
pub fn markdown(m: &Metrics, rates: &[f64]) -> String {
    let mut out = format!(
        "### Scenario dashboard: {TABS} open dashboards against routing\n\n\
         Same herd, same run, one zero-think-time device: *0 tabs*; *{TABS} tabs* reading \
         `/fleet/events` (every decision published to each, in batches); *{TABS} slow tabs* that \
         never read (herd's ring shortened to 512 events, so they fall behind within the phase and \
         must be dropped, not buffered for). Latency from each request's intended start (µs, \
         open loop); *added* is minus *0 tabs* within each round; medians over rounds.\n\n"
    );
    let mut head: Vec<String> = vec!["phase".into()];
    for r in rates {
        head.push(format!("p50 @{r}/s"));
        head.push(format!("added p50 @{r}/s"));
        head.push(format!("p99 @{r}/s"));
        head.push(format!("added p99 @{r}/s"));
    }
    head.extend(
        ["CPU s/1k req", "max req/s (32 in flight)", "herd RSS (MiB)"]
            .iter()
            .map(|s| s.to_string()),
    );
    let head_refs: Vec<&str> = head.iter().map(String::as_str).collect();
    let mut t = Table::new(&head_refs);
    for p in PHASES {
        let k = format!("dash/{p}");
        let mut row = vec![p.to_string()];
        for r in rates {
            let added = |s: &str| {
                if p == PHASES[0] {
                    "–".to_string()
                } else {
                    f(m.med(&format!("{k}/rate={r}/{s}")), 0)
                }
            };
            row.push(f(m.med(&format!("{k}/rate={r}/p50")), 0));
            row.push(added("added_p50"));
            row.push(f(m.med(&format!("{k}/rate={r}/p99")), 0));
            row.push(added("added_p99"));
        }
        row.push(f(m.med(&format!("{k}/cpu_s_per_1k")), 3));
        row.push(f(m.med(&format!("{k}/max_rps")), 0));
        row.push(f(m.med(&format!("{k}/rss_kib")) / 1024.0, 1));
        t.row(row);
    }
    out += &t.render();
    out += &format!(
        "\nEach reading tab received {} events/s ({} KiB/s) while herd routed the load; reading tabs herd \
         ended early: {}; slow tabs dropped by herd by the end of their phase: {} (of {TABS}; \
         dropped counter over the whole run: {}).\n\n",
        f(m.med("dash/100 tabs/events_per_tab_s"), 1),
        f(m.med("dash/100 tabs/kib_per_tab_s"), 1),
        f(m.med("dash/100 tabs/ended_early"), 0),
        f(TABS as f64 - m.med("dash/100 slow tabs/subscribers"), 0),
        f(m.med("dash/100 slow tabs/dropped_total"), 0),
    );
    out
}

/// "100 open dashboards do not measurably slow routing": at every rate, the
/// p50 they add is within the run-to-run spread of the 0-tab p50 itself
/// (what the same phase varies by between rounds), and no reading tab was
/// dropped.
pub fn verdicts(m: &Metrics, rates: &[f64]) -> Vec<Verdict> {
    let mut parts = Vec::new();
    let mut met = true;
    for r in rates {
        let added = m.med(&format!("dash/100 tabs/rate={r}/added_p50"));
        let spread = m
            .get(&format!("dash/0 tabs/rate={r}/p50"))
            .map_or(f64::NAN, |s| s.max() - s.min());
        parts.push(format!(
            "@{r}/s +{} µs p50 (0-tab spread {} µs)",
            f(added, 0),
            f(spread, 0)
        ));
        met &= added.is_finite() && spread.is_finite() && added <= spread.max(1.0);
    }
    let early = m.med("dash/100 tabs/ended_early");
    met &= early == 0.0;
    vec![Verdict {
        target: format!("dashboard: {TABS} open dashboards do not measurably slow routing"),
        measured: parts.join("; "),
        met: Some(met),
        note: format!("reading tabs dropped: {}", f(early, 0)),
    }]
}
