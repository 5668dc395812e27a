//! Scenario `affinity`: multi-turn agent conversations, where the node that
//! served a conversation's last turn still holds its prompt in a slot's KV
//! cache (the simulated devices reuse it as Ollama's runner does; see
//! `herd_node::simulate::kv`).
//!
//! Each conversation belongs to one of four agents, whose system prompts
//! are 4k, 8k, 12k and 16k tokens; every turn resends the system prompt and
//! the history so far, plus a new question, and waits for the answer
//! (closed loop, a short think time between turns). 16, 32 and 64
//! conversations at once on a four-device fleet (two faster, two slower;
//! four slots each), against: herd with prefix affinity, herd without it
//! (`[scoring] prefix_affinity = false`), nginx round robin, Envoy least
//! request, and Envoy with herd-epp. Then a uniform fleet of four identical
//! devices where every conversation shares one agent's prompt — the case
//! where affinity could pile everything on the nodes that hold it — herd
//! with affinity against herd without it and nginx round robin: affinity
//! must not make it worse by more than 5%.
//!
//! Time is compressed about five-fold against a Mac (prefill at 3,300–6,700
//! tokens/s, 40–60 tokens/s of generation), and herd is told the fleet's
//! typical prefill rate (`default_prefill_tokens_per_s = 5000`), as an
//! operator would for their machines. Every run starts fresh devices, so no
//! target inherits another's caches. Reported per target: TTFT p50/p90 of
//! every turn, turns per second, and the share of prompt tokens the devices
//! found in their caches (their own counters).

use std::time::Duration;

use bytes::Bytes;
use herd_node::config::{GIB, ModelSpec};
use herd_node::{DeviceConfig, FleetConfig};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::load::{self, HttpClient, Outcome, Req, Summary, Wire, pct};
use super::scenarios::{Bench, BenchResult, rotated};
use super::stats::{Metrics, Table, Verdict, f};
use super::targets::{Herd, Kind, Sims, Target, envoy_epp_with, get_json};

const MODEL: &str = "agent:8b";

/// herd's scoring for these devices: their typical prefill rate.
const SCORING: &str = "[scoring]\ndefault_prefill_tokens_per_s = 5000.0\n";

/// The targets, by label.
const TARGETS: &[&str] = &[
    "herd",
    "herd-no-affinity",
    "nginx-rr",
    "envoy-least_request",
    "envoy+herd-epp",
];

/// The uniform fleet's targets.
const UNIFORM_TARGETS: &[&str] = &["herd", "herd-no-affinity", "nginx-rr"];

fn agent_model() -> ModelSpec {
    ModelSpec {
        name: MODEL.into(),
        size_bytes: 5 * GIB,
        context_length: 32_768,
        ..ModelSpec::default()
    }
}

/// A device: `ms_per_token` of prefill, `speed` tokens/s, four slots.
fn agent_device(name: &str, ms_per_token: f64, speed: f64) -> DeviceConfig {
    DeviceConfig {
        name: name.into(),
        memory_total_bytes: 64 * GIB,
        models: vec![agent_model()],
        loaded: vec![MODEL.into()],
        speed,
        ttft_base_ms: 20,
        ttft_ms_per_prompt_token: ms_per_token,
        num_parallel: 4,
        max_queue: 10_000,
        keep_alive_secs: -1,
        ..DeviceConfig::default()
    }
}

/// Two faster devices and two slower ones.
pub fn mixed_fleet() -> FleetConfig {
    FleetConfig {
        devices: vec![
            agent_device("fast-1", 0.15, 60.0),
            agent_device("fast-2", 0.15, 60.0),
            agent_device("slow-1", 0.3, 40.0),
            agent_device("slow-2", 0.3, 40.0),
        ],
        ..FleetConfig::default()
    }
}

/// Four identical devices.
pub fn uniform_fleet() -> FleetConfig {
    FleetConfig {
        devices: (1..=4)
            .map(|i| agent_device(&format!("same-{i}"), 0.2, 50.0))
            .collect(),
        ..FleetConfig::default()
    }
}

/// The workload of one run.
#[derive(Clone, Copy, Debug)]
struct Work {
    conversations: usize,
    turns: usize,
    /// System prompt tokens per agent (conversation `i` is agent `i % n`).
    agents: &'static [usize],
}

/// An agent's system prompt of about `tokens` tokens (4 characters each),
/// different from every other agent's from its first words.
fn system_prompt(agent: usize, tokens: usize) -> String {
    let head = format!("You are agent {agent}, one of a team of coding assistants. ");
    let mut s = head.clone();
    let mut i = 0;
    while s.len() < tokens * 4 {
        s.push_str(&format!(
            "Rule {agent}.{i}: keep answers short, cite files, never guess. "
        ));
        i += 1;
    }
    s
}

/// The next turn's body: the system prompt, the history, a new question.
fn turn_body(system: &str, history: &[Value], conv: usize, turn: usize) -> (Bytes, Value) {
    let question = json!({"role": "user", "content": format!(
        "Conversation {conv}, turn {turn}: please look at module {} and tell me what changed since the last review, in a few words.",
        (conv * 31 + turn * 7) % 97
    )});
    let mut messages = vec![json!({"role": "system", "content": system})];
    messages.extend(history.iter().cloned());
    messages.push(question.clone());
    let body = json!({"model": MODEL, "messages": messages, "stream": true});
    (Bytes::from(body.to_string()), question)
}

/// The answer's text from an NDJSON stream.
fn answer_text(body: &[u8]) -> String {
    body.split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
        .filter_map(|v| v["message"]["content"].as_str().map(str::to_owned))
        .collect()
}

/// Runs `work` against `base`: each conversation in its own task, turn after
/// turn. Returns every turn's outcome and the run's wall time.
async fn converse(
    client: &HttpClient,
    base: &str,
    work: Work,
    seed: u64,
) -> (Vec<Outcome>, Duration) {
    let prompts: Vec<String> = work
        .agents
        .iter()
        .enumerate()
        .map(|(a, t)| system_prompt(a, *t))
        .collect();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..work.conversations {
        let system = prompts[c % prompts.len()].clone();
        let client = client.clone();
        let url = format!("{base}/api/chat");
        let mut rng = fastrand::Rng::with_seed(seed * 1_000 + c as u64);
        tasks.push(tokio::spawn(async move {
            // Conversations start spread over the first two seconds.
            tokio::time::sleep(Duration::from_millis(rng.u64(0..2_000))).await;
            let mut history: Vec<Value> = Vec::new();
            let mut outs = Vec::new();
            for turn in 1..=work.turns {
                let (body, question) = turn_body(&system, &history, c, turn);
                let req = Req {
                    url: url.clone(),
                    body,
                    wire: Wire::Ndjson,
                };
                let t0 = Instant::now();
                let mut o =
                    load::send_with(&client, &req, t0, Duration::from_secs(300), true).await;
                o.sent_at = t0 - start;
                let ok = o.ok();
                let text = o.body.take().map(|b| answer_text(&b)).unwrap_or_default();
                outs.push(o);
                if !ok {
                    break;
                }
                history.push(question);
                history.push(json!({"role": "assistant", "content": text}));
                // Reading the answer, typing the next question.
                tokio::time::sleep(Duration::from_millis(rng.u64(100..600))).await;
            }
            outs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(o) = t.await {
            all.extend(o);
        }
    }
    (all, start.elapsed())
}

/// What one run measured.
struct Run {
    summary: Summary,
    wall: Duration,
    prompt_tokens: u64,
    cached_tokens: u64,
}

impl Bench {
    /// Multi-turn conversations on a mixed and on a uniform fleet.
    pub async fn affinity(&mut self) -> BenchResult<()> {
        eprintln!("== scenario affinity: multi-turn conversations and KV-cache affinity");
        let smoke = self.opts.smoke;
        let levels: Vec<usize> = if smoke { vec![4] } else { vec![16, 32, 64] };
        let turns = if smoke { 2 } else { 6 };
        let agents: &'static [usize] = if smoke {
            &[1_000, 2_000]
        } else {
            &[4_000, 8_000, 12_000, 16_000]
        };
        let rounds = if smoke { 1 } else { self.opts.rounds };
        let targets = self.available_labels(TARGETS);
        let mixed = mixed_fleet();
        for round in 0..rounds {
            for &n in &levels {
                for label in rotated(&targets, round + n) {
                    let work = Work {
                        conversations: n,
                        turns,
                        agents,
                    };
                    let r = self
                        .conversation_run(label, &mixed, work, round as u64)
                        .await?;
                    self.record_affinity("aff", label, n, &r);
                }
            }
            eprintln!("   mixed fleet: round {} done", round + 1);
        }
        // The uniform fleet, every conversation on one agent's 8k prompt.
        let uniform = uniform_fleet();
        let un = if smoke { 4 } else { 32 };
        let shared: &'static [usize] = if smoke { &[2_000] } else { &[8_000] };
        let utargets = self.available_labels(UNIFORM_TARGETS);
        for round in 0..rounds {
            for label in rotated(&utargets, round) {
                let work = Work {
                    conversations: un,
                    turns,
                    agents: shared,
                };
                let r = self
                    .conversation_run(label, &uniform, work, round as u64)
                    .await?;
                self.record_affinity("affu", label, un, &r);
            }
            eprintln!("   uniform fleet: round {} done", round + 1);
        }
        self.extra.insert(
            "affinity".into(),
            json!({
                "levels": levels,
                "uniform_conversations": un,
                "turns": turns,
                "agents_system_tokens": agents,
                "uniform_system_tokens": shared,
                "mixed_fleet": serde_json::to_value(&mixed)?,
                "uniform_fleet": serde_json::to_value(&uniform)?,
                "herd_config": SCORING,
            }),
        );
        Ok(())
    }

    fn available_labels(&mut self, labels: &[&'static str]) -> Vec<&'static str> {
        let mut out = Vec::new();
        for l in labels {
            let kind = kind_of(l);
            if !self.available(&[kind]).is_empty() {
                out.push(*l);
            }
        }
        out
    }

    fn record_affinity(&mut self, scen: &str, label: &str, n: usize, r: &Run) {
        let key = format!("{scen}/{label}/c={n}");
        self.m
            .add(format!("{key}/ttft_p50"), pct(&r.summary.ttft, 0.5));
        self.m
            .add(format!("{key}/ttft_p90"), pct(&r.summary.ttft, 0.9));
        self.m.add(
            format!("{key}/throughput"),
            r.summary.ok as f64 / r.wall.as_secs_f64().max(1e-9),
        );
        self.m.add(format!("{key}/errors"), r.summary.errors as f64);
        self.m.add(format!("{key}/turns"), r.summary.sent as f64);
        self.m.add(
            format!("{key}/cached_share"),
            if r.prompt_tokens > 0 {
                r.cached_tokens as f64 / r.prompt_tokens as f64
            } else {
                0.0
            },
        );
        if let Some(e) = &r.summary.first_error {
            self.note(format!("{scen} {label} c={n}: first error seen: {e}"));
        }
    }

    /// One run: fresh devices, the target in front of them, the
    /// conversations, then the devices' cache counters.
    async fn conversation_run(
        &mut self,
        label: &str,
        fleet: &FleetConfig,
        work: Work,
        seed: u64,
    ) -> BenchResult<Run> {
        let (target, sims) = match label {
            "herd" | "herd-no-affinity" => {
                let toml = if label == "herd" {
                    SCORING.to_owned()
                } else {
                    format!("{SCORING}prefix_affinity = false\n")
                };
                let herd = Herd::start(&self.env, &toml).await?;
                let sims = Sims::start(&self.env, fleet, Some(&herd.url())).await?;
                herd.wait_online(&self.client, fleet.devices.len(), Duration::from_secs(20))
                    .await?;
                (herd.into_target(), sims)
            }
            "envoy+herd-epp" => {
                let sims = Sims::start(&self.env, fleet, None).await?;
                // Agentless endpoints: told their four slots and the
                // prefill rate, as an operator would.
                let toml = format!("{SCORING}default_parallel_slots = 4\n");
                let t = envoy_epp_with(&self.env, &sims.addrs(), &toml).await?;
                (t, sims)
            }
            other => {
                let sims = Sims::start(&self.env, fleet, None).await?;
                let t = Target::proxy(&self.env, kind_of(other), &sims.addrs()).await?;
                (t, sims)
            }
        };
        // Until it answers (a picker polls its endpoints first); a tiny
        // prompt, so no cache is warmed for the run.
        let probe = Req {
            url: format!("{}/api/chat", target.base),
            body: Bytes::from(
                json!({"model": MODEL, "messages": [{"role": "user", "content": "ping"}], "stream": true})
                    .to_string(),
            ),
            wire: Wire::Ndjson,
        };
        self.until_answered("affinity", target.kind, &probe).await?;
        for (_, addr) in &sims.devices {
            let _ = super::targets::post_json(
                &self.client,
                &format!("http://{addr}/_sim/stats/reset"),
                &json!({}),
            )
            .await;
        }
        let (outs, wall) = converse(&self.client, &target.base, work, seed).await;
        let mut prompt_tokens = 0;
        let mut cached_tokens = 0;
        for (_, addr) in &sims.devices {
            let v = get_json(&self.client, &format!("http://{addr}/_sim/stats")).await?;
            prompt_tokens += v["prompt_tokens"].as_u64().unwrap_or(0);
            cached_tokens += v["cached_tokens"].as_u64().unwrap_or(0);
        }
        eprintln!(
            "   {label} c={}: {} turns in {:.1} s, cached {:.0}%",
            work.conversations,
            outs.len(),
            wall.as_secs_f64(),
            100.0 * cached_tokens as f64 / prompt_tokens.max(1) as f64
        );
        drop(target);
        drop(sims);
        Ok(Run {
            summary: Summary::of(&outs),
            wall,
            prompt_tokens,
            cached_tokens,
        })
    }
}

fn kind_of(label: &str) -> Kind {
    match label {
        "nginx-rr" => Kind::NginxRr,
        "envoy-least_request" => Kind::EnvoyLeastRequest,
        "envoy+herd-epp" => Kind::EnvoyEpp,
        _ => Kind::Herd,
    }
}

fn ms(us: f64) -> String {
    f(us / 1000.0, 0)
}

/// The scenario's tables.
pub fn markdown(m: &Metrics, extra: &Value) -> String {
    let mut out = String::from(
        "### Scenario affinity: multi-turn conversations, prefix-cache affinity\n\n\
         Conversations of four agents (system prompts of 4k, 8k, 12k and 16k tokens), each turn \
         resending the system prompt and the history, closed loop; a four-device fleet (two at \
         0.15 ms/token of prefill and 60 tokens/s, two at 0.3 ms and 40 tokens/s; four slots each, \
         whose KV caches are reused as Ollama's runner reuses them). TTFT of every turn (ms, \
         at the client), turns per second, and the share of prompt tokens the devices found \
         cached; medians over rounds.\n\n",
    );
    let levels: Vec<u64> = extra["levels"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let mut t = Table::new(&[
        "conversations",
        "target",
        "TTFT p50",
        "TTFT p90",
        "turns/s",
        "cached",
        "errors",
    ]);
    for n in &levels {
        for l in TARGETS {
            let k = format!("aff/{l}/c={n}");
            if m.get(&format!("{k}/ttft_p50")).is_none() {
                continue;
            }
            t.row(vec![
                n.to_string(),
                l.to_string(),
                ms(m.med(&format!("{k}/ttft_p50"))),
                ms(m.med(&format!("{k}/ttft_p90"))),
                f(m.med(&format!("{k}/throughput")), 2),
                format!("{}%", f(100.0 * m.med(&format!("{k}/cached_share")), 0)),
                f(m.med(&format!("{k}/errors")), 0),
            ]);
        }
    }
    out += &t.render();
    let un = extra["uniform_conversations"].as_u64().unwrap_or(0);
    out += &format!(
        "\nUniform fleet (four identical devices, 0.2 ms/token, 50 tokens/s), {un} conversations \
         all on one agent's {}-token prompt:\n\n",
        extra["uniform_system_tokens"][0]
    );
    let mut t = Table::new(&[
        "target", "TTFT p50", "TTFT p90", "turns/s", "cached", "errors",
    ]);
    for l in UNIFORM_TARGETS {
        let k = format!("affu/{l}/c={un}");
        if m.get(&format!("{k}/ttft_p50")).is_none() {
            continue;
        }
        t.row(vec![
            l.to_string(),
            ms(m.med(&format!("{k}/ttft_p50"))),
            ms(m.med(&format!("{k}/ttft_p90"))),
            f(m.med(&format!("{k}/throughput")), 2),
            format!("{}%", f(100.0 * m.med(&format!("{k}/cached_share")), 0)),
            f(m.med(&format!("{k}/errors")), 0),
        ]);
    }
    out += &t.render();
    out += "\n";
    out
}

/// The scenario's targets against this run.
pub fn verdicts(m: &Metrics, extra: &Value) -> Vec<Verdict> {
    let mut v = Vec::new();
    let levels: Vec<u64> = extra["levels"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let mut parts = Vec::new();
    let mut met = true;
    for n in &levels {
        let h = m.med(&format!("aff/herd/c={n}/ttft_p90"));
        let best_other = TARGETS[1..]
            .iter()
            .filter_map(|l| {
                m.get(&format!("aff/{l}/c={n}/ttft_p90"))
                    .map(|s| s.median())
            })
            .fold(f64::INFINITY, f64::min);
        met &= h < best_other;
        parts.push(format!(
            "{n}: {} ms vs best other {} ms",
            ms(h),
            ms(best_other)
        ));
    }
    if !levels.is_empty() {
        v.push(Verdict {
            target: "affinity: herd's TTFT p90 is the lowest at every concurrency".into(),
            measured: parts.join("; "),
            met: Some(met),
            note: String::new(),
        });
    }
    let un = extra["uniform_conversations"].as_u64().unwrap_or(0);
    let k = |l: &str, s: &str| m.med(&format!("affu/{l}/c={un}/{s}"));
    if m.get(&format!("affu/herd/c={un}/ttft_p50")).is_some() {
        let (p50, p90, tput) = (
            k("herd", "ttft_p50") / k("herd-no-affinity", "ttft_p50"),
            k("herd", "ttft_p90") / k("herd-no-affinity", "ttft_p90"),
            k("herd", "throughput") / k("herd-no-affinity", "throughput"),
        );
        v.push(Verdict {
            target: "affinity: on a uniform fleet, no worse than without it by more than 5%".into(),
            measured: format!(
                "TTFT p50 ×{}, p90 ×{}, turns/s ×{} of herd without affinity",
                f(p50, 2),
                f(p90, 2),
                f(tput, 2)
            ),
            met: Some(p50 <= 1.05 && p90 <= 1.05 && tput >= 0.95),
            note: String::new(),
        });
    }
    v
}
