//! `report`: a herd.v1 `NodeReport` off the network, folded into the fleet
//! the way the router does, then scored.
//!
//! Input: the bytes of one `herd_proto::v1::NodeReport` (protobuf). What the
//! request asks for is taken from the report itself (its models, and bits
//! of `sequence`), and its `hardware.gpus` list doubles as traffic outcomes
//! fed to `History` (ttft/total from |temperature|/|utilization| capped at
//! 1e9 ms, tokens from the memory fields, engine timings from the raw
//! doubles), so the fuzzer also controls what scoring has learned.
//!
//! Invariants (a panic is a bug):
//! - prost decoding, `herd_proto::node::{engine_url, valid_node_id,
//!   addr_of}` and `herd_proto::ollama::rfc3339_ms` never panic;
//!   `engine_url` is idempotent and says `http://host:port`; a time parsed
//!   by `rfc3339_ms` lies within years 1969..=10000;
//! - a report the router accepts (the checks of `attach.rs`'s private
//!   `valid_report`, repeated here) applied with `NodeState::apply_report`
//!   leaves the node within herd's bounds (memory ≤ total ≤ 1 PiB, cpu and
//!   availability in 0..=1, ≤ 256 loaded / 4096 on-disk models with valid
//!   names, ≤ 64 slots, short free text);
//! - `rank::score` over a `FleetView` holding that node (fresh, and after an
//!   earlier report) and a steady neighbour never panics, ranks or
//!   eliminates every node, and every score, signal and expected time is
//!   finite (times ≥ 0), best first.

#![no_main]

use std::sync::Arc;

use herd_layer::fleet::{FleetView, NodeId, NodeState, Source};
use herd_layer::history::{History, Outcome};
use herd_layer::rank::{self, Load, Observations, Perf, ScoreInput, ScoringConfig};
use herd_layer::request::ENDPOINTS;
use herd_proto::node::{addr_of, engine_url, valid_node_id};
use herd_proto::ollama::rfc3339_ms;
use herd_proto::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tokio::time::Instant;

const NOW_MS: i64 = 1_750_000_000_000;

struct Obs {
    history: History,
    load: Load,
    hung: Option<NodeId>,
}

impl Observations for Obs {
    fn load(&self, _: &str, _: &str) -> Load {
        self.load
    }
    fn perf(&self, node: &str, model: &str) -> Option<Perf> {
        self.history.perf(node, model)
    }
    fn unresponsive(&self, node: &str) -> Option<std::time::Duration> {
        (self.hung.as_deref() == Some(node)).then(|| std::time::Duration::from_millis(1500))
    }
}

fn finite(x: f64) -> f64 {
    if x.is_finite() { x } else { 0.0 }
}

fn check_time(s: &str) {
    if let Some(ms) = rfc3339_ms(s) {
        // 1970-01-01 minus a day of offset .. 9999-12-31 plus a day.
        assert!(
            (-86_400_000..=253_402_387_200_000).contains(&ms),
            "{s:?} → {ms}"
        );
    }
}

fn check_url(s: &str) {
    let _ = addr_of(s);
    if let Ok(u) = engine_url(s) {
        assert!(u.starts_with("http://"), "{s:?} → {u:?}");
        // Known bug `engine-url`: http::Uri takes "a[:1]" as a host "a[",
        // and engine_url then writes "http://a[:11434", which is no URL.
        if !known("engine-url") {
            assert_eq!(engine_url(&u).as_deref(), Ok(u.as_str()), "engine_url is not idempotent for {s:?}");
        }
        let _ = addr_of(&u);
    }
}

/// The router's own acceptance checks (`discovery::attach::valid_report`,
/// private), so only reports a router would apply are applied.
fn accepted(r: &pb::NodeReport) -> bool {
    valid_node_id(&r.node_id).is_ok()
        && engine_url(&r.ollama_url).is_ok()
        && !r
            .engine
            .as_ref()
            .is_some_and(|e| e.loaded.len() > 10_000 || e.available.len() > 100_000)
}

/// Known bugs, already reported, whose checks `HERD_FUZZ_KNOWN=a,b` (or
/// `all`) turns off so a long run can look for others. Unset (the smoke
/// test): every check is on.
fn known(issue: &str) -> bool {
    static K: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    K.get_or_init(|| std::env::var("HERD_FUZZ_KNOWN").unwrap_or_default())
        .split(',')
        .any(|s| s.trim() == issue || s.trim() == "all")
}

fn check_node(n: &NodeState) {
    const PIB: u64 = 1 << 50;
    assert!(n.memory_total_bytes <= PIB && n.memory_available_bytes <= n.memory_total_bytes);
    assert!(n.disk_total_bytes <= PIB && n.disk_available_bytes <= n.disk_total_bytes);
    assert!(n.memory_ceiling_bytes <= PIB);
    if !(known("cpu-nan") && n.cpu_utilization.is_nan()) {
        assert!((0.0..=1.0).contains(&n.cpu_utilization), "{}", n.cpu_utilization);
    }
    assert!((0.0..=100_000.0).contains(&n.memory_bandwidth_gbps));
    if let Some(a) = n.availability {
        assert!((0.0..=1.0).contains(&a), "{a}");
    }
    assert!(n.loaded.len() <= 256 && n.available.len() <= 4096);
    assert!(n.parallel_slots <= herd_layer::fleet::MAX_SLOTS);
    for t in [&n.chip, &n.agent_version, &n.engine_version] {
        assert!(t.len() <= 128);
    }
    for m in &n.loaded {
        assert!(herd_layer::dialect::check_model_name(&m.name).is_ok(), "{:?}", m.name);
        assert!(m.size_bytes <= PIB && m.vram_bytes <= PIB);
    }
    for m in &n.available {
        assert!(herd_layer::dialect::check_model_name(&m.name).is_ok(), "{:?}", m.name);
        assert!(m.family.len() <= 128 && m.parameter_size.len() <= 128 && m.quantization.len() <= 128);
    }
    assert!(n.online && n.url.starts_with("http://"));
}

/// A node that reported before: two models loaded, three on disk.
fn earlier_report(id: &str) -> pb::NodeReport {
    let loaded = |name: &str, gib: u64| pb::LoadedModel {
        name: name.into(),
        size_bytes: gib << 30,
        vram_bytes: gib << 30,
        context_length: 8192,
        expires_at_ms: NOW_MS + 300_000,
        ..Default::default()
    };
    let disk = |name: &str, gib: u64| pb::DiskModel {
        name: name.into(),
        size_bytes: gib << 30,
        family: "qwen3".into(),
        parameter_size: "8.2B".into(),
        quantization: "Q4_K_M".into(),
        ..Default::default()
    };
    pb::NodeReport {
        node_id: id.into(),
        ollama_url: "http://10.0.0.5:11434".into(),
        sequence: 1,
        timestamp_ms: NOW_MS - 2000,
        agent_version: "0.1.0".into(),
        hardware: Some(pb::Hardware {
            chip: "Apple M2 Max".into(),
            memory: Some(pb::Memory {
                total_bytes: 64 << 30,
                available_bytes: 40 << 30,
                pressure: pb::MemoryPressure::Normal as i32,
                ..Default::default()
            }),
            memory_bandwidth_gbps: 400.0,
            ..Default::default()
        }),
        engine: Some(pb::EngineState {
            kind: pb::EngineKind::Ollama as i32,
            reachable: true,
            version: "0.12.6".into(),
            loaded: vec![loaded("qwen3:8b", 5), loaded("m:latest", 1)],
            available: vec![disk("qwen3:8b", 5), disk("m:latest", 1), disk("llama3.3:70b", 40)],
            parallel_slots: 4,
            max_loaded_models: 3,
            max_queue: 512,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn check_ranking(view: &FleetView, r: &rank::Ranking) {
    // Known bug `name-size-inf`: a model no node gives a size for is sized
    // from its name, and "x:infb" or "x:1e999b" is an infinite size.
    let inf_name = known("name-size-inf") && rank::name_size_gib(&r.model).is_infinite();
    assert_eq!(r.candidates.len() + r.eliminated.len(), view.nodes.len());
    for c in &r.candidates {
        let s = &c.signals;
        let all = [
            c.score,
            s.model_temperature,
            s.memory_fit,
            s.queue_depth,
            s.expected_wait,
            s.generation_speed,
            s.role_affinity,
            s.availability,
            s.context_fit,
            s.device_thermal,
            s.memory_pressure,
            s.reliability,
        ];
        assert!(all.iter().all(|x| x.is_finite()), "non-finite score for {}: {c:?}", c.node);
        assert!(
            (c.expected_ttft_ms.is_finite() || inf_name) && c.expected_ttft_ms >= 0.0,
            "expected_ttft_ms {c:?}"
        );
        assert!(
            c.expected_generation_ms.is_finite() && c.expected_generation_ms >= 0.0,
            "expected_generation_ms {c:?}"
        );
        assert!(c.slots >= 1);
    }
    for w in r.candidates.windows(2) {
        assert!(w[0].score >= w[1].score, "not best first: {} < {}", w[0].score, w[1].score);
    }
    let _ = r.elimination_summary();
    serde_json::to_vec(r).expect("a ranking serialises");
}

fuzz_target!(|data: &[u8]| {
    let Ok(r) = pb::NodeReport::decode(data) else {
        return;
    };
    let _ = valid_node_id(&r.node_id);
    check_url(&r.ollama_url);
    check_time(&r.agent_version);
    if let Some(hw) = &r.hardware {
        check_time(&hw.chip);
        check_time(&hw.os);
        for g in &hw.gpus {
            check_time(&g.name);
        }
    }
    if let Some(e) = &r.engine {
        check_time(&e.version);
        check_url(&e.unreachable_reason);
        for m in &e.available {
            check_time(&m.family);
            check_time(&m.parameter_size);
        }
    }
    if !accepted(&r) {
        return;
    }

    let id: NodeId = r.node_id.as_str().into();
    let now = Instant::now();
    let now_ms = NOW_MS + (r.sequence % 86_400_000) as i64;
    let url = engine_url(&r.ollama_url).unwrap_or_default();

    let mut fresh = NodeState::new(id.clone(), Source::Attached, url.clone());
    fresh.apply_report(&r, now, now_ms);
    check_node(&fresh);

    let mut seasoned = NodeState::new("seasoned".into(), Source::Attached, url);
    seasoned.apply_report(&earlier_report("seasoned"), now, now_ms - 60_000);
    let mut again = r.clone();
    again.node_id = "seasoned".into();
    seasoned.apply_report(&again, now, now_ms);
    check_node(&seasoned);

    let mut steady = NodeState::new("steady".into(), Source::Attached, String::new());
    steady.apply_report(&earlier_report("steady"), now, now_ms);

    let mut view = FleetView::default();
    for n in [fresh, seasoned, steady] {
        view.nodes.insert(n.id.clone(), n.into());
    }

    // Models to rank for: the report's own, and a few the fleet knows.
    let mut models: Vec<String> = Vec::new();
    if let Some(e) = &r.engine {
        models.extend(e.loaded.iter().take(3).map(|m| m.name.clone()));
        models.extend(e.available.iter().take(3).map(|m| m.name.clone()));
    }
    models.extend(["qwen3:8b", "m", "llama3.3:70b", "nomic-embed-text"].map(String::from));
    if known("model-char-boundary") {
        models.retain(|m| m.is_ascii());
    }
    models.truncate(8);

    let history = History::new();
    let model0 = models[0].clone();
    for g in r.hardware.iter().flat_map(|h| &h.gpus).take(40) {
        // Times herd measures with its clock: finite, ≥ 0, below ~12 days.
        // What the node reports (tokens, eval and load durations) is any
        // number JSON can carry.
        let clock = |x: f64| finite(x).abs().min(1e9);
        let ttft = clock(g.temperature_c);
        let o = Outcome {
            ttft_ms: Some(ttft),
            total_ms: ttft + clock(g.utilization),
            prompt_tokens: Some(g.memory_used_bytes),
            output_tokens: Some(g.memory_total_bytes),
            eval_ms: Some(finite(g.utilization)),
            load_ms: Some(finite(g.temperature_c)),
            ok: g.name != "fail",
            ..Default::default()
        };
        for node in [&id, &NodeId::from("seasoned")] {
            history.record(node, &model0, &o);
            if !o.ok {
                history.node_failed(node, &model0);
            }
        }
    }
    let seq = r.sequence;
    let obs = Obs {
        history,
        load: Load {
            in_flight: (seq >> 8 & 0xff) as u32,
            waiting: (seq >> 16 & 0xff) as u32,
        },
        hung: (seq >> 24 & 1 == 1).then(|| id.clone()),
    };
    let cfg = ScoringConfig::default();
    let exclude: Vec<NodeId> = if seq >> 25 & 1 == 1 {
        vec!["steady".into()]
    } else {
        Vec::new()
    };
    let only: Vec<NodeId> = vec![id.clone(), "seasoned".into()];
    for (i, model) in models.iter().enumerate() {
        let bits = seq.rotate_right(i as u32 * 7);
        let spec = &ENDPOINTS[(bits % ENDPOINTS.len() as u64) as usize];
        let input = ScoreInput {
            model,
            kind: spec.kind,
            format: spec.dialect,
            est_prompt_tokens: (r.timestamp_ms as u64).rotate_left(i as u32) as u32,
            max_output_tokens: (bits >> 4 & 1 == 1).then_some((bits >> 5) as u32),
            exclude: &exclude,
            only: (bits >> 36 & 1 == 1).then_some(&only[..]),
            endpoint: spec.endpoint,
            native_only: bits >> 37 & 1 == 1,
            now_ms,
            // Any set of needs, from the high bits.
            needs: herd_layer::capability::Capability::ALL
                .iter()
                .enumerate()
                .filter(|(j, _)| bits >> (40 + j) & 1 == 1)
                .fold(herd_layer::capability::Caps::NONE, |c, (_, x)| c.with(*x)),
            prefix: None,
        };
        let ranking = rank::score(&view, &obs, &input, &cfg);
        check_ranking(&view, &ranking);
        let g = rank::name_size_gib(model);
        assert!((g.is_finite() || known("name-size-inf")) && g > 0.0, "name_size_gib({model:?}) = {g}");
    }
    for n in view.nodes.values() {
        assert!(rank::slots_of(n, &cfg) >= 1);
    }
    let _ = Arc::new(view);
});
