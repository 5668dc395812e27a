//! Turns the per-round metrics into the markdown tables and the JSON file
//! of a run, and checks issue 5's targets against them.

use serde_json::json;

use super::scenarios::Bench;
use super::stats::{Table, Verdict, f, ratio};
use super::targets::Kind;

const MIB: f64 = 1024.0;

fn labels(b: &Bench, key: &str) -> Vec<String> {
    b.extra
        .get(key)
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn ms(v: f64) -> String {
    f(v / 1000.0, 1)
}

/// Markdown for every scenario that ran, and the verdicts.
pub fn markdown(b: &Bench, verdicts: &[Verdict]) -> String {
    let m = &b.m;
    let mut out = String::new();
    if !verdicts.is_empty() {
        out += "### Targets\n\n";
        let mut t = Table::new(&["target", "measured", "verdict", "note"]);
        for v in verdicts {
            t.row(vec![
                v.target.clone(),
                v.measured.clone(),
                v.cell().into(),
                v.note.clone(),
            ]);
        }
        out += &t.render();
        out += "\n";
    }
    let s1 = labels(b, "s1_targets");
    if !s1.is_empty() {
        out += "### Scenario 1: non-streaming overhead (zero think time; open-loop Poisson)\n\n";
        out += "Latency in µs, medians of per-round percentiles; *added* is target minus direct within each round. \
                *lag p99*: how late the load generator sent against its Poisson schedule (timer ticks); \
                latencies are measured from the real send.\n\n";
        let mut t = Table::new(&[
            "target",
            "rate/s",
            "p50",
            "p99",
            "added p50",
            "added p99",
            "errors",
            "lag p99",
        ]);
        for rate in &b.opts.rates {
            for l in &s1 {
                let k = format!("s1/{l}/rate={rate}");
                t.row(vec![
                    l.clone(),
                    f(*rate, 0),
                    f(m.med(&format!("{k}/p50")), 0),
                    f(m.med(&format!("{k}/p99")), 0),
                    f(m.med(&format!("{k}/added_p50")), 0),
                    f(m.med(&format!("{k}/added_p99")), 0),
                    f(m.med(&format!("{k}/errors")), 0),
                    f(m.med(&format!("{k}/lag_p99")), 0),
                ]);
            }
        }
        out += &t.render();
        out += "\n";
        out += &throughput_table(m, "s1", &s1, "proxy", Kind::NginxRr);
        out += "\n";
    }
    let s2 = labels(b, "s2_targets");
    if !s2.is_empty() {
        let tokens = b
            .extra
            .get("s2_tokens")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        out += &format!(
            "### Scenario 2: streaming overhead (50 ms TTFT, {tokens} tokens at 20 ms)\n\n\
             TTFT and gaps in ms, *added* in µs (target minus direct, same round); chunks preserved = \
             logical chunks received through the target / received direct.\n\n"
        );
        let mut tags: Vec<String> = vec!["probe".into()];
        tags.extend(b.opts.streams.iter().map(|n| format!("n={n}")));
        if let Some(sse) = m.0.keys().find_map(|k| {
            k.strip_prefix("s2/direct/sse/")
                .map(|r| r.split('/').next().unwrap_or("").to_owned())
        }) {
            tags.push(format!("sse/{sse}"));
        }
        out += &streaming_table(m, "s2", &s2, &tags, "herd peak RSS MiB", |l, k| {
            if l == "herd" {
                f(m.med(&format!("{k}/peak_rss_kib")) / MIB, 1)
            } else {
                String::new()
            }
        });
        out += "\n*probe*: 1 stream at a time, short answers (5 tokens), many per round: the TTFT row to trust \
                at low concurrency. SSE rows: herd serves OpenAI requests from the node's native `/api/chat` and \
                translates, so its event count legitimately differs from the node's own `/v1` endpoint.\n";
        out += &format!(
            "\nherd idle RSS after warm-up: {} MiB.\n\n",
            f(m.med("s2/herd/idle_rss_kib") / MIB, 1)
        );
    }
    for (scen, title) in [
        (
            "s3",
            "Scenario 3: routing quality, heterogeneous fleet (mixed models, Poisson 20%→110% of capacity)",
        ),
        (
            "s3u",
            "Scenario 3b: uniform fleet (one model, 90% of capacity)",
        ),
    ] {
        let kinds: Vec<&str> = [
            Kind::Herd,
            Kind::NginxRr,
            Kind::NginxLeastConn,
            Kind::EnvoyLeastRequest,
        ]
        .iter()
        .map(|k| k.label())
        .filter(|l| m.0.keys().any(|k| k.starts_with(&format!("{scen}/{l}/"))))
        .collect();
        if kinds.is_empty() {
            continue;
        }
        let cap = b
            .extra
            .get(&format!("{scen}_capacity_rps"))
            .and_then(|v| v.as_f64())
            .unwrap_or(f64::NAN);
        out += &format!(
            "### {title}\n\nNominal capacity {} req/s. Times in ms.\n\n",
            f(cap, 1)
        );
        let mut loads: Vec<String> =
            m.0.keys()
                .filter_map(|k| {
                    k.strip_prefix(&format!("{scen}/herd/load="))
                        .map(|r| r.split('/').next().unwrap_or("").to_owned())
                })
                .collect();
        loads.sort_by_key(|l| {
            if l == "80-100" {
                10_000
            } else {
                l.parse::<i64>().unwrap_or(0)
            }
        });
        loads.dedup();
        let mut t = Table::new(&[
            "load %",
            "target",
            "TTFT p50",
            "TTFT p90",
            "TTFT p99",
            "e2e p90",
            "req/s",
            "errors",
            "TTFT p90 vs herd",
        ]);
        for load in &loads {
            let herd90 = m.med(&format!("{scen}/herd/load={load}/ttft_p90"));
            for l in &kinds {
                let k = format!("{scen}/{l}/load={load}");
                let p90 = m.med(&format!("{k}/ttft_p90"));
                t.row(vec![
                    load.clone(),
                    l.to_string(),
                    ms(m.med(&format!("{k}/ttft_p50"))),
                    ms(p90),
                    ms(m.med(&format!("{k}/ttft_p99"))),
                    ms(m.med(&format!("{k}/e2e_p90"))),
                    f(m.med(&format!("{k}/throughput")), 1),
                    f(m.med(&format!("{k}/errors")), 0),
                    ratio(p90, herd90),
                ]);
            }
        }
        out += &t.render();
        out += "\n";
        let devices: Vec<String> = {
            let mut d: Vec<String> =
                m.0.keys()
                    .filter_map(|k| {
                        k.strip_prefix(&format!("{scen}/herd/share/"))
                            .map(str::to_owned)
                    })
                    .collect();
            d.sort();
            d
        };
        let mut head = vec!["target", "requests", "errors", "cold loads"];
        let dev_heads: Vec<String> = devices.iter().map(|d| format!("share {d}")).collect();
        head.extend(dev_heads.iter().map(String::as_str));
        let mut t = Table::new(&head);
        for l in &kinds {
            let mut row = vec![
                l.to_string(),
                f(m.med(&format!("{scen}/{l}/all/sent")), 0),
                f(m.med(&format!("{scen}/{l}/all/errors")), 0),
                f(m.med(&format!("{scen}/{l}/all/cold_loads")), 0),
            ];
            for d in &devices {
                row.push(format!(
                    "{}%",
                    f(m.med(&format!("{scen}/{l}/share/{d}")) * 100.0, 0)
                ));
            }
            t.row(row);
        }
        out += &t.render();
        out += "\n";
    }
    if m.0.keys().any(|k| k.starts_with("s4/")) {
        let tl = b.extra.get("s4_timeline_s").cloned().unwrap_or_default();
        out += &format!(
            "### Scenario 4: adaptation (herd; 3 devices, load 50% of capacity)\n\n\
             Timeline (s): slow 4× at {}, killed (SIGKILL) at {}, back at {}, end {}.\n\n",
            tl["slow"], tl["kill"], tl["back"], tl["end"]
        );
        let mut t = Table::new(&["measure", "median", "min..max"]);
        for (key, what, scale, digits) in [
            ("share_before", "victim's share before (%)", 100.0, 0),
            ("share_slow", "victim's share while 4× slow (%)", 100.0, 0),
            (
                "slow_shift_s",
                "time until its share halves after the slowdown (s)",
                1.0,
                2,
            ),
            (
                "stop_after_kill_s",
                "time from kill to last request sent to it (s)",
                1.0,
                2,
            ),
            (
                "errors_after_kill",
                "client errors, requests sent after the kill",
                1.0,
                0,
            ),
            (
                "errors_cut_by_kill",
                "streams in flight on it when it died (cut)",
                1.0,
                0,
            ),
            ("errors_total", "client errors, whole run", 1.0, 0),
            (
                "reuse_after_back_s",
                "time from return to first request it served (s)",
                1.0,
                2,
            ),
            ("sent", "requests", 1.0, 0),
        ] {
            let s = m.get(&format!("s4/herd/{key}"));
            t.row(vec![
                what.into(),
                f(s.map_or(f64::NAN, |s| s.median()) * scale, digits),
                s.map_or("–".into(), |s| {
                    format!(
                        "{}..{}",
                        f(s.min() * scale, digits),
                        f(s.max() * scale, digits)
                    )
                }),
            ]);
        }
        out += &t.render();
        out += "\n";
    }
    if let Some(s5) = b.extra.get("s5") {
        out += &epp_markdown(b, s5);
    }
    if let Some(c) = b.extra.get("chaos") {
        out += &chaos_markdown(c);
    }
    if b.extra.contains_key("auth") {
        out += &super::auth::markdown(m);
    }
    if b.extra.contains_key("dashboard") {
        out += &super::dashboard::markdown(m, &b.opts.rates);
    }
    if let Some(a) = b.extra.get("affinity") {
        out += &super::affinity::markdown(m, a);
    }
    if !b.notes.is_empty() {
        out += "### Notes from the run\n\n";
        for n in &b.notes {
            out += &format!("- {n}\n");
        }
        out += "\n";
    }
    out
}

/// Max throughput and CPU per 1k requests of scenarios 1 and 5, CPU also as
/// a ratio to `reference`'s.
fn throughput_table(
    m: &super::stats::Metrics,
    scen: &str,
    targets: &[String],
    who: &str,
    reference: Kind,
) -> String {
    let mut t = Table::new(&[
        "target",
        "max req/s (32 in flight)",
        &format!("{who} CPU s / 1k req"),
        &format!("CPU vs {}", reference.label()),
    ]);
    let ref_cpu = m.med(&format!("{scen}/{}/cpu_s_per_1k", reference.label()));
    for l in targets {
        let cpu = m.med(&format!("{scen}/{l}/cpu_s_per_1k"));
        t.row(vec![
            l.clone(),
            f(m.med(&format!("{scen}/{l}/max_rps")), 0),
            f(cpu, 3),
            ratio(cpu, ref_cpu),
        ]);
    }
    t.render()
}

/// The streaming table of scenarios 2 and 5: a row per (run, target) with
/// TTFT, gaps and their additions over direct, chunks preserved, errors,
/// CPU per chunk, and one memory column (`mem(label, key)`).
fn streaming_table(
    m: &super::stats::Metrics,
    scen: &str,
    targets: &[String],
    tags: &[String],
    mem_head: &str,
    mem: impl Fn(&str, &str) -> String,
) -> String {
    let mut t = Table::new(&[
        "target",
        "streams",
        "TTFT p50",
        "TTFT p99",
        "added TTFT p50 µs",
        "added TTFT p99 µs",
        "gap p50",
        "gap p99",
        "added gap p99 µs",
        "chunks preserved",
        "coalesced frames",
        "errors",
        "proxy CPU µs/chunk",
        mem_head,
    ]);
    for tag in tags {
        for l in targets {
            let k = format!("{scen}/{l}/{tag}");
            let added = |x: &str| {
                if l == "direct" {
                    "–".into()
                } else {
                    f(m.med(&format!("{k}/{x}")), 0)
                }
            };
            let preserved = if tag == "probe" {
                "".into()
            } else if l == "direct" {
                "(reference)".into()
            } else {
                format!("{}%", f(m.med(&format!("{k}/chunks_preserved")) * 100.0, 2))
            };
            t.row(vec![
                l.clone(),
                tag.replace("n=", ""),
                ms(m.med(&format!("{k}/ttft_p50"))),
                ms(m.med(&format!("{k}/ttft_p99"))),
                added("added_ttft_p50"),
                added("added_ttft_p99"),
                ms(m.med(&format!("{k}/gap_p50"))),
                ms(m.med(&format!("{k}/gap_p99"))),
                added("added_gap_p99"),
                preserved,
                f(m.med(&format!("{k}/coalesced")), 0),
                f(m.med(&format!("{k}/errors")), 0),
                f(m.med(&format!("{k}/cpu_us_per_chunk")), 1),
                mem(l, &k),
            ]);
        }
    }
    t.render()
}

/// Scenario 5's tables: herd-epp behind Envoy against Envoy round robin.
fn epp_markdown(b: &Bench, s5: &serde_json::Value) -> String {
    let m = &b.m;
    let targets: Vec<String> = s5["targets"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let epp = Kind::EnvoyEpp.label();
    let mut out = format!(
        "### Scenario 5: herd-epp behind Envoy ({} endpoints; ext_proc FULL_DUPLEX_STREAMED, ORIGINAL_DST)\n\n\
         Non-streaming against zero-think replays. Latency in µs; *added* is target minus direct, \
         *over envoy-rr* is Envoy + herd-epp minus Envoy round robin, both within each round. \
         *pick*: herd-epp's own scheduling time per request (scoring and admission), from its \
         `/debug/picks`.\n\n",
        s5["endpoints"]
    );
    let mut t = Table::new(&[
        "target",
        "rate/s",
        "p50",
        "p99",
        "added p50",
        "added p99",
        "over envoy-rr p50",
        "over envoy-rr p99",
        "pick p50",
        "pick p99",
        "errors",
    ]);
    for rate in &b.opts.rates {
        for l in &targets {
            let k = format!("s5/{l}/rate={rate}");
            let only_epp = |x: &str, digits| {
                if l == epp {
                    f(m.med(&format!("{k}/{x}")), digits)
                } else {
                    "–".into()
                }
            };
            t.row(vec![
                l.clone(),
                f(*rate, 0),
                f(m.med(&format!("{k}/p50")), 0),
                f(m.med(&format!("{k}/p99")), 0),
                f(m.med(&format!("{k}/added_p50")), 0),
                f(m.med(&format!("{k}/added_p99")), 0),
                only_epp("over_envoy_rr_p50", 0),
                only_epp("over_envoy_rr_p99", 0),
                only_epp("pick_p50", 0),
                only_epp("pick_p99", 0),
                f(m.med(&format!("{k}/errors")), 0),
            ]);
        }
    }
    out += &t.render();
    out += "\n";
    out += &throughput_table(m, "s5", &targets, "gateway", Kind::EnvoyRr);
    out += &format!(
        "\nGateway CPU of Envoy + herd-epp counts both processes.\n\n\
         Streaming: {} tokens at 20 ms after a 50 ms TTFT, {} concurrent streams; TTFT and gaps in ms, \
         *added* in µs against direct.\n\n",
        s5["tokens"], s5["streams"]
    );
    let n = &s5["streams"];
    let tags = ["probe".to_owned(), format!("n={n}"), format!("sse/n={n}")];
    out += &streaming_table(m, "s5", &targets, &tags, "herd-epp peak RSS MiB", |l, k| {
        if l == epp && !k.ends_with("/probe") {
            f(m.med(&format!("{k}/sidecar_peak_rss_kib")) / MIB, 1)
        } else {
            String::new()
        }
    });
    out += "\n";
    out
}

/// The chaos scenario's tables (see [`super::chaos`]).
fn chaos_markdown(c: &serde_json::Value) -> String {
    let num = |v: &serde_json::Value, d: usize| f(v.as_f64().unwrap_or(f64::NAN), d);
    let plan = &c["plan"];
    let mut out = format!(
        "### Scenario chaos: faults and attacks under load (herd; {} devices)\n\n\
         {} requests from {} clients at once (closed loop; each gives up after {} s), a mix of Ollama \
         `/api/chat` and OpenAI `/v1/chat/completions`, streamed and not, and a few embeddings, over \
         {} s, while one fault per device runs on a schedule and herd is attacked. herd's config:\n\n\
         ```toml\n{}```\n\n",
        c["devices"].as_array().map_or(0, Vec::len),
        c["requests"],
        plan["workers"],
        plan["client_timeout_s"],
        num(&c["load_seconds"], 1),
        c["herd_config"].as_str().unwrap_or(""),
    );
    let lost = c["lost"].as_u64().unwrap_or(0);
    let mut t = Table::new(&["answer", "requests"]);
    t.row(vec![
        "success (200, well-formed to its end)".into(),
        c["ok"].to_string(),
    ]);
    t.row(vec!["well-formed error".into(), c["errors"].to_string()]);
    t.row(vec![
        "**lost** (no answer, or malformed)".into(),
        if lost == 0 {
            "0".into()
        } else {
            format!("**{lost}**")
        },
    ]);
    out += &t.render();
    out += &format!(
        "\nLatency of the successes: p50 {} ms, p99 {} ms (TTFT for streams, whole answer otherwise).\n\n",
        num(&c["latency_all_p50_ms"], 1),
        num(&c["latency_all_p99_ms"], 1)
    );
    let mut t = Table::new(&[
        "request", "sent", "success", "errors", "lost", "latency", "p50 ms", "p99 ms",
    ]);
    for k in c["by_kind"].as_array().into_iter().flatten() {
        t.row(vec![
            format!("`{}`", k["kind"].as_str().unwrap_or("")),
            k["sent"].to_string(),
            k["ok"].to_string(),
            k["errors"].to_string(),
            k["lost"].to_string(),
            k["latency"].as_str().unwrap_or("").into(),
            num(&k["p50_ms"], 1),
            num(&k["p99_ms"], 1),
        ]);
    }
    out += &t.render();
    out += "\nWell-formed errors by kind (*in stream*: a 200 stream that ended with a well-formed error line or event after its first byte):\n\n";
    let mut t = Table::new(&[
        "status",
        "code",
        "where",
        "count",
        "first at (s)",
        "example",
    ]);
    for e in c["errors_by_kind"].as_array().into_iter().flatten() {
        let ex: String = e["example"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(140)
            .collect();
        t.row(vec![
            e["status"].to_string(),
            format!("`{}`", e["code"].as_str().unwrap_or("")),
            if e["in_stream"] == json!(true) {
                "in stream".into()
            } else {
                "response".into()
            },
            e["count"].to_string(),
            num(&e["first_at_s"], 1),
            ex.replace('|', "\\|"),
        ]);
    }
    out += &t.render();
    out += "\nTimeline (s from the start of the load):\n\n";
    let mut t = Table::new(&["at", "who", "what", "result"]);
    for e in c["timeline"].as_array().into_iter().flatten() {
        t.row(vec![
            num(&e["at"], 1),
            e["who"].as_str().unwrap_or("").into(),
            e["what"].as_str().unwrap_or("").into(),
            e["result"].as_str().unwrap_or("").replace('|', "\\|"),
        ]);
    }
    out += &t.render();
    out += "\nWhat each device served while its fault was on (successes of requests sent in the window):\n\n";
    let mut t = Table::new(&[
        "device",
        "fault",
        "from (s)",
        "to (s)",
        "successes it served",
        "successes, whole fleet",
    ]);
    for d in c["during_faults"].as_array().into_iter().flatten() {
        t.row(vec![
            d["device"].as_str().unwrap_or("").into(),
            d["fault"].as_str().unwrap_or("").into(),
            num(&d["from_s"], 1),
            if d["to_s"].is_null() {
                "never cleared".into()
            } else {
                num(&d["to_s"], 1)
            },
            d["successes_from_it"].to_string(),
            d["successes_all"].to_string(),
        ]);
    }
    out += &t.render();
    let sl = &c["slowloris"];
    let fl = &c["flood"];
    let answered = |v: &serde_json::Value| {
        v.as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, n)| format!("{k}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "none".into())
    };
    out += "\nAttacks on herd:\n\n";
    let mut t = Table::new(&["attack", "measure", "value"]);
    for (what, v) in [
        ("sockets", sl["sockets"].to_string()),
        (
            "connections opened (reconnecting when cut)",
            sl["connections_opened"].to_string(),
        ),
        (
            "cut by herd without an answer",
            sl["cut_by_herd"].to_string(),
        ),
        (
            "cut after (median / max, s)",
            format!(
                "{} / {}",
                num(&sl["cut_after_p50_s"], 1),
                num(&sl["cut_after_max_s"], 1)
            ),
        ),
        ("answered", answered(&sl["answered"])),
        (
            "still open when the attack stopped",
            sl["open_at_end"].to_string(),
        ),
        ("connects that failed", sl["connect_failed"].to_string()),
    ] {
        t.row(vec!["slowloris".into(), what.into(), v]);
    }
    for (what, v) in [
        ("connections opened at once", fl["connections"].to_string()),
        ("connected", fl["connected"].to_string()),
        (
            "refused with 503 (over the cap)",
            fl["refused_503"].to_string(),
        ),
        (
            "accepted, then closed by herd without an answer",
            fl["closed_by_herd"].to_string(),
        ),
        ("  … after (median, s)", num(&fl["closed_after_p50_s"], 1)),
        (
            "connected, neither answered nor closed by the release (idle in herd's hands, or never reached it: see below)",
            fl["held_open"].to_string(),
        ),
        ("answered otherwise", answered(&fl["answered_other"])),
        (
            "connects that failed",
            format!(
                "{}{}",
                fl["connect_failed"],
                fl["first_connect_error"]
                    .as_str()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ),
        ),
        ("slowest connect (s)", num(&fl["connect_max_s"], 2)),
    ] {
        t.row(vec!["connection flood".into(), what.into(), v]);
    }
    out += &t.render();
    out += &format!(
        "\nherd's listen backlog (`ss -lnt`): {}. Kernel TCP counters over the flood (`/proc/net/netstat`, whole machine): {}. \
         A connection the kernel completes with a SYN cookie while herd's accept queue is full is established \
         for the client but unknown to herd until the client sends something.\n",
        fl["listen_backlog"],
        answered(&fl["kernel"])
    );
    let h = &c["herd"];
    let kib = |v: &serde_json::Value| f(v.as_f64().unwrap_or(f64::NAN) / MIB, 1);
    out += "\nherd itself:\n\n";
    let mut t = Table::new(&["measure", "value"]);
    t.row(vec![
        "peak RSS (VmHWM), MiB".into(),
        kib(&h["peak_rss_kib"]),
    ]);
    t.row(vec!["RSS at the end, MiB".into(), kib(&h["rss_end_kib"])]);
    t.row(vec![
        "sockets open, peak during the run (/proc/PID/fd)".into(),
        h["sockets_peak"].to_string(),
    ]);
    t.row(vec![
        "sockets open at the end".into(),
        h["sockets_end"].to_string(),
    ]);
    t.row(vec![
        "HTTP connections open at the end (`herd_http_connections`; the devices' attachments, the harness's keep-alive connection and the scrape itself)".into(),
        num(&h["http_connections_end"], 0),
    ]);
    t.row(vec![
        "retries on another node (`herd_retries_total`)".into(),
        num(&h["retries_total"], 0),
    ]);
    t.row(vec![
        "requests shed (`herd_shed_total`)".into(),
        num(&h["shed_total"], 0),
    ]);
    out += &t.render();
    let a = &c["after"];
    out += &format!(
        "\nAfter the attack: {} of {} requests (every kind) answered 200, well-formed; all devices online again: {}.\n\n",
        a["ok"], a["sent"], a["all_nodes_online"]
    );
    let by_node = answered(&c["answered_by_node"]);
    out += &format!("Successes by node (`x-herd-node`): {by_node}.\n\n");
    if lost > 0 {
        out += &format!("**Lost requests** ({lost}; the first 20):\n\n");
        let mut t = Table::new(&[
            "#",
            "request",
            "model",
            "sent at (s)",
            "took (s)",
            "status",
            "node",
            "faults in effect",
            "what the client saw",
        ]);
        for l in c["lost_requests"].as_array().into_iter().flatten().take(20) {
            let faults: Vec<&str> = l["faults"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str())
                .collect();
            t.row(vec![
                l["seq"].to_string(),
                format!("`{}`", l["kind"].as_str().unwrap_or("")),
                l["model"].as_str().unwrap_or("").into(),
                num(&l["sent_at_s"], 2),
                num(&l["took_s"], 2),
                l["status"].to_string(),
                l["node"].as_str().unwrap_or("–").into(),
                faults.join(", "),
                l["what"]
                    .as_str()
                    .unwrap_or("")
                    .replace('|', "\\|")
                    .replace('\n', "\\n"),
            ]);
        }
        out += &t.render();
        out += "\n";
    }
    out
}

/// Issue 5's targets against this run.
pub fn verdicts(b: &Bench) -> Vec<Verdict> {
    let m = &b.m;
    let mut v = Vec::new();
    if let Some(lost) = m.get("chaos/herd/lost") {
        let lost = lost.median();
        v.push(Verdict {
            target: "chaos: no request lost (no answer or a malformed one)".into(),
            measured: format!("{} lost of {}", f(lost, 0), f(m.med("chaos/herd/sent"), 0)),
            met: Some(lost == 0.0),
            note: String::new(),
        });
        let (sent, ok) = (m.med("chaos/herd/after_sent"), m.med("chaos/herd/after_ok"));
        v.push(Verdict {
            target: "chaos: herd answers normally after the attack".into(),
            measured: format!("{} of {} answered 200", f(ok, 0), f(sent, 0)),
            met: Some(sent > 0.0 && ok == sent),
            note: String::new(),
        });
    }
    if b.extra.contains_key("dashboard") {
        v.extend(super::dashboard::verdicts(m, &b.opts.rates));
    }
    if let Some(a) = b.extra.get("affinity") {
        v.extend(super::affinity::verdicts(m, a));
    }
    let rates = &b.opts.rates;
    if m.0.contains_key(&format!(
        "s1/herd/rate={}/added_p50",
        rates.first().copied().unwrap_or(0.0)
    )) {
        let mut parts = Vec::new();
        let mut met = true;
        let mut worst99 = f64::NEG_INFINITY;
        for r in rates {
            let h = m.med(&format!("s1/herd/rate={r}/added_p50"));
            let n = m.med(&format!("s1/nginx-rr/rate={r}/added_p50"));
            parts.push(format!(
                "@{r}/s herd {} µs vs nginx {} µs",
                f(h, 0),
                f(n, 0)
            ));
            if n.is_finite() {
                met &= h <= n;
            }
            worst99 = worst99.max(m.med(&format!("s1/herd/rate={r}/added_p99")));
        }
        v.push(Verdict {
            target: "non-streaming added latency p50 ≤ the nginx hop".into(),
            measured: parts.join("; "),
            met: m
                .0
                .contains_key(&format!("s1/nginx-rr/rate={}/added_p50", rates[0]))
                .then_some(met),
            note: String::new(),
        });
        v.push(Verdict {
            target: "non-streaming added latency p99 ≤ 300 µs".into(),
            measured: format!("worst rate: {} µs", f(worst99, 0)),
            met: Some(worst99 <= 300.0),
            note: if worst99 > 300.0 {
                format!("missed by {} µs", f(worst99 - 300.0, 0))
            } else {
                String::new()
            },
        });
    }
    let s2_levels: Vec<String> = b.opts.streams.iter().map(|n| format!("n={n}")).collect();
    if m.0.contains_key(&format!(
        "s2/herd/{}/added_ttft_p99",
        s2_levels.first().cloned().unwrap_or_default()
    )) {
        let (mut worst, mut at) = (m.med("s2/herd/probe/added_ttft_p99"), "probe".to_owned());
        let mut min_pres = f64::INFINITY;
        for (n, l) in b.opts.streams.iter().zip(&s2_levels) {
            let x = m.med(&format!("s2/herd/{l}/added_ttft_p99"));
            // One stream per round has no p99 to speak of; the probe covers it.
            if *n >= 16 && x > worst {
                worst = x;
                at = l.clone();
            }
            min_pres = min_pres.min(m.med(&format!("s2/herd/{l}/chunks_preserved")));
        }
        v.push(Verdict {
            target: "streaming added TTFT p99 ≤ 1 ms".into(),
            measured: format!("worst: {} µs ({at})", f(worst, 0)),
            met: Some(worst <= 1000.0),
            note: if worst > 1000.0 {
                format!("missed by {} µs", f(worst - 1000.0, 0))
            } else {
                String::new()
            },
        });
        v.push(Verdict {
            target: "streaming chunks preserved = 100%".into(),
            measured: format!("lowest: {}%", f(min_pres * 100.0, 3)),
            met: Some(min_pres >= 1.0),
            note: String::new(),
        });
        let idle = m.med("s2/herd/idle_rss_kib") / MIB;
        v.push(Verdict {
            target: "herd RSS idle ≤ 20 MB".into(),
            measured: format!("{} MiB", f(idle, 1)),
            met: Some(idle <= 20.0),
            note: String::new(),
        });
        let top = b.opts.streams.iter().max().copied().unwrap_or(0);
        let peak = m.med(&format!("s2/herd/n={top}/peak_rss_kib")) / MIB;
        v.push(Verdict {
            target: "herd RSS ≤ 64 MB with 1k open streams".into(),
            measured: format!(
                "{} MiB peak at {top} streams ({} KiB per stream above idle)",
                f(peak, 1),
                f((peak - idle) * MIB / top.max(1) as f64, 1)
            ),
            met: (top >= 1000).then_some(peak <= 64.0),
            note: if top < 1000 {
                "fewer than 1k streams in this run".into()
            } else {
                String::new()
            },
        });
    }
    if m.0.contains_key("s3/herd/load=80-100/ttft_p90") {
        let h = m.med("s3/herd/load=80-100/ttft_p90");
        for (l, want) in [("nginx-rr", 0.5), ("envoy-least_request", 0.7)] {
            let x = m.med(&format!("s3/{l}/load=80-100/ttft_p90"));
            v.push(Verdict {
                target: format!("routing TTFT p90 at 80–100% ≤ {want}× {l}"),
                measured: format!("herd {} ms vs {} ms = {}", ms(h), ms(x), ratio(h, x)),
                met: x.is_finite().then_some(h <= want * x),
                note: String::new(),
            });
        }
    }
    if m.0.contains_key("s3u/herd/load=90/ttft_p90") {
        let h = m.med("s3u/herd/load=90/ttft_p90");
        let x = m.med("s3u/nginx-rr/load=90/ttft_p90");
        let he = m.med("s3u/herd/load=90/e2e_p90");
        let xe = m.med("s3u/nginx-rr/load=90/e2e_p90");
        v.push(Verdict {
            target: "uniform fleet: never > 5% worse than nginx RR (TTFT p90, e2e p90)".into(),
            measured: format!("TTFT p90 {}, e2e p90 {}", ratio(h, x), ratio(he, xe)),
            met: x.is_finite().then_some(h <= 1.05 * x && he <= 1.05 * xe),
            note: String::new(),
        });
    }
    v
}

/// Everything of a run as one JSON document.
pub fn json(b: &Bench, verdicts: &[Verdict], meta: serde_json::Value) -> serde_json::Value {
    let medians: serde_json::Map<String, serde_json::Value> =
        b.m.0
            .iter()
            .map(|(k, s)| {
                (
                    k.clone(),
                    json!({"median": nan_null(s.median()), "rounds": s.0}),
                )
            })
            .collect();
    json!({
        "meta": meta,
        "opts": b.opts,
        "verdicts": verdicts,
        "notes": b.notes,
        "extra": b.extra,
        "metrics": medians,
    })
}

fn nan_null(v: f64) -> serde_json::Value {
    if v.is_finite() {
        json!(v)
    } else {
        serde_json::Value::Null
    }
}
