//! The scorer, signal by signal and elimination by elimination, without I/O.

use std::collections::HashMap;

use super::*;
use crate::fleet::{DiskModel, LoadedModel, NodeState, Source};

const G: u64 = 1024 * 1024 * 1024;
const NOW: i64 = 1_800_000_000_000;

fn node(id: &str, mem_gib: u64) -> NodeState {
    let mut n = NodeState::new(
        id.into(),
        Source::Attached,
        format!("http://127.0.0.1:{}", 10_000 + id.len()),
    );
    n.online = true;
    n.offline_reason = None;
    n.engine_reachable = true;
    n.memory_total_bytes = mem_gib * G;
    n.memory_available_bytes = mem_gib * G * 3 / 4;
    n.memory_pressure = Pressure::Normal;
    n.thermal = Thermal::Nominal;
    n.parallel_slots = 1;
    n
}

fn loaded(n: &mut NodeState, model: &str, gib: u64) {
    n.loaded.push(LoadedModel {
        name: model.into(),
        size_bytes: gib * G,
        vram_bytes: gib * G,
        context_length: 8192,
        expires_at_ms: 0,
        ..Default::default()
    });
    on_disk(n, model, gib);
}

fn on_disk(n: &mut NodeState, model: &str, gib: u64) {
    n.available.push(DiskModel {
        name: model.into(),
        size_bytes: gib * G,
        ..Default::default()
    });
}

fn view(nodes: Vec<NodeState>) -> FleetView {
    let mut v = FleetView::default();
    for n in nodes {
        v.insert(n);
    }
    v
}

fn input<'a>(model: &'a str, exclude: &'a [NodeId]) -> ScoreInput<'a> {
    ScoreInput {
        model,
        kind: Kind::Chat,
        format: Dialect::Ollama,
        est_prompt_tokens: 20,
        max_output_tokens: None,
        exclude,
        only: None,
        endpoint: crate::request::Endpoint::OllamaChat,
        native_only: false,
        now_ms: NOW,
        needs: crate::capability::Caps::NONE,
        prefix: None,
    }
}

#[derive(Default)]
struct Obs {
    load: HashMap<String, Load>,
    perf: HashMap<String, Perf>,
}

impl Observations for Obs {
    fn load(&self, node: &str, _: &str) -> Load {
        self.load.get(node).copied().unwrap_or_default()
    }
    fn perf(&self, node: &str, _: &str) -> Option<Perf> {
        self.perf.get(node).copied()
    }
}

fn rank(v: &FleetView, obs: &dyn Observations, i: &ScoreInput<'_>) -> Ranking {
    score(v, obs, i, &ScoringConfig::default())
}

fn cand<'a>(r: &'a Ranking, id: &str) -> &'a Candidate {
    r.candidates
        .iter()
        .find(|c| &*c.node == id)
        .unwrap_or_else(|| panic!("{id} is not a candidate: {r:?}"))
}

fn why(r: &Ranking, id: &str) -> Elimination {
    r.eliminated
        .iter()
        .find(|e| &*e.node == id)
        .unwrap_or_else(|| panic!("{id} was not eliminated: {r:?}"))
        .why
        .clone()
}

#[test]
fn loaded_beats_warm_beats_cold() {
    let mut hot = node("hot", 64);
    loaded(&mut hot, "m:8b", 5);
    let mut warm = node("warm", 64);
    on_disk(&mut warm, "m:8b", 5);
    warm.recently_unloaded.insert("m:8b".into(), NOW - 60_000);
    let mut cold = node("cold", 64);
    on_disk(&mut cold, "m:8b", 5);
    let v = view(vec![cold, warm, hot]);
    let r = rank(&v, &NoObservations, &input("m:8b", &[]));
    let order: Vec<&str> = r.candidates.iter().map(|c| &*c.node).collect();
    assert_eq!(order, ["hot", "warm", "cold"]);
    assert_eq!(cand(&r, "hot").signals.model_temperature, 50.0);
    assert_eq!(cand(&r, "warm").signals.model_temperature, 30.0);
    assert_eq!(cand(&r, "cold").signals.model_temperature, 10.0);
    assert_eq!(cand(&r, "warm").temperature, Temperature::Warm);
}

#[test]
fn warm_window_expires() {
    let mut n = node("n", 64);
    on_disk(&mut n, "m:8b", 5);
    n.recently_unloaded.insert("m:8b".into(), NOW - 3_600_000);
    let v = view(vec![n]);
    let r = rank(&v, &NoObservations, &input("m:8b", &[]));
    assert_eq!(r.candidates[0].temperature, Temperature::Cold);
}

#[test]
fn memory_fit_rewards_headroom() {
    let mut roomy = node("roomy", 128);
    on_disk(&mut roomy, "m:8b", 5);
    let mut tight = node("tight", 8);
    on_disk(&mut tight, "m:8b", 5);
    let v = view(vec![roomy, tight]);
    let r = rank(&v, &NoObservations, &input("m:8b", &[]));
    assert!(cand(&r, "roomy").signals.memory_fit > cand(&r, "tight").signals.memory_fit);
    assert_eq!(cand(&r, "roomy").signals.memory_fit, 20.0);
}

#[test]
fn queue_depth_prefers_idle_nodes() {
    let mut a = node("a", 64);
    loaded(&mut a, "m:8b", 5);
    let mut b = node("b", 64);
    loaded(&mut b, "m:8b", 5);
    let mut obs = Obs::default();
    obs.load.insert(
        "a".into(),
        Load {
            in_flight: 1,
            waiting: 2,
        },
    );
    let v = view(vec![a, b]);
    let r = rank(&v, &obs, &input("m:8b", &[]));
    assert_eq!(&*r.candidates[0].node, "b");
    assert!(cand(&r, "a").signals.queue_depth < 0.0);
    assert_eq!(cand(&r, "b").signals.queue_depth, 0.0);
    // Waiting behind a full slot costs expected time to first token too.
    assert!(cand(&r, "a").signals.expected_wait < cand(&r, "b").signals.expected_wait);
}

#[test]
fn queue_depth_is_normalised_by_speed() {
    let mut fast = node("fast", 64);
    loaded(&mut fast, "m:8b", 5);
    fast.parallel_slots = 4;
    let mut slow = node("slow", 64);
    loaded(&mut slow, "m:8b", 5);
    slow.parallel_slots = 4;
    let mut obs = Obs::default();
    let busy = Load {
        in_flight: 2,
        waiting: 0,
    };
    obs.load.insert("fast".into(), busy);
    obs.load.insert("slow".into(), busy);
    let p = |tps| Perf {
        ttft_ms: 100.0,
        tokens_per_s: tps,
        cold_load_ms: None,
        samples: 10,
        recent_failures: 0.0,
    };
    obs.perf.insert("fast".into(), p(80.0));
    obs.perf.insert("slow".into(), p(20.0));
    let v = view(vec![fast, slow]);
    let r = rank(&v, &obs, &input("m:8b", &[]));
    assert!(cand(&r, "fast").signals.queue_depth > cand(&r, "slow").signals.queue_depth);
    assert!(cand(&r, "fast").signals.generation_speed > cand(&r, "slow").signals.generation_speed);
    assert_eq!(&*r.candidates[0].node, "fast");
}

#[test]
fn expected_wait_uses_learned_latency() {
    let mut a = node("a", 64);
    loaded(&mut a, "m:8b", 5);
    let mut b = node("b", 64);
    loaded(&mut b, "m:8b", 5);
    let mut obs = Obs::default();
    obs.perf.insert(
        "a".into(),
        Perf {
            ttft_ms: 4_000.0,
            tokens_per_s: 30.0,
            cold_load_ms: None,
            samples: 5,
            recent_failures: 0.0,
        },
    );
    let v = view(vec![a, b]);
    let r = rank(&v, &obs, &input("m:8b", &[]));
    assert!(cand(&r, "a").expected_ttft_ms > 3_900.0);
    assert!(cand(&r, "a").signals.expected_wait < cand(&r, "b").signals.expected_wait);
}

#[test]
fn cold_load_time_counts_in_expected_wait() {
    let mut hot = node("hot", 64);
    loaded(&mut hot, "m:8b", 5);
    let mut cold = node("cold", 64);
    on_disk(&mut cold, "m:8b", 5);
    let v = view(vec![hot, cold]);
    let r = rank(&v, &NoObservations, &input("m:8b", &[]));
    let diff = cand(&r, "cold").expected_ttft_ms - cand(&r, "hot").expected_ttft_ms;
    assert!((diff - 5.0 * 700.0).abs() < 1.0, "{diff}");
}

#[test]
fn role_affinity_sends_big_models_to_big_machines() {
    let mut big = node("big", 192);
    on_disk(&mut big, "m:70b", 40);
    let mut mid = node("mid", 64);
    on_disk(&mut mid, "m:70b", 40);
    let v = view(vec![mid, big]);
    let r = rank(&v, &NoObservations, &input("m:70b", &[]));
    assert!(cand(&r, "big").signals.role_affinity > cand(&r, "mid").signals.role_affinity);
    assert_eq!(&*r.candidates[0].node, "big");
    // and small models lean to small machines
    let mut big = node("big", 192);
    on_disk(&mut big, "s:1b", 1);
    let mut small = node("small", 16);
    on_disk(&mut small, "s:1b", 1);
    let v = view(vec![big, small]);
    let r = rank(&v, &NoObservations, &input("s:1b", &[]));
    assert!(cand(&r, "small").signals.role_affinity > cand(&r, "big").signals.role_affinity);
}

#[test]
fn availability_is_neutral_when_unknown() {
    let mut known_low = node("low", 64);
    loaded(&mut known_low, "m:8b", 5);
    known_low.availability = Some(0.1);
    let mut unknown = node("unknown", 64);
    loaded(&mut unknown, "m:8b", 5);
    let mut high = node("high", 64);
    loaded(&mut high, "m:8b", 5);
    high.availability = Some(0.9);
    let v = view(vec![known_low, unknown, high]);
    let r = rank(&v, &NoObservations, &input("m:8b", &[]));
    assert_eq!(cand(&r, "unknown").signals.availability, 0.0);
    assert!(cand(&r, "low").signals.availability < 0.0);
    assert!(cand(&r, "high").signals.availability > 0.0);
    let order: Vec<&str> = r.candidates.iter().map(|c| &*c.node).collect();
    assert_eq!(order, ["high", "unknown", "low"]);
}

#[test]
fn context_fit_penalises_overflow() {
    let mut n = node("n", 64);
    loaded(&mut n, "m:8b", 5);
    let v = view(vec![n]);
    let mut i = input("m:8b", &[]);
    i.est_prompt_tokens = 100;
    assert_eq!(
        rank(&v, &NoObservations, &i).candidates[0]
            .signals
            .context_fit,
        5.0
    );
    i.est_prompt_tokens = 20_000;
    assert_eq!(
        rank(&v, &NoObservations, &i).candidates[0]
            .signals
            .context_fit,
        -15.0
    );
}

#[test]
fn device_thermal_and_pressure_are_penalised() {
    let mut cool = node("cool", 64);
    loaded(&mut cool, "m:8b", 5);
    let mut warm = node("warm", 64);
    loaded(&mut warm, "m:8b", 5);
    warm.thermal = Thermal::Serious;
    let mut squeezed = node("squeezed", 64);
    loaded(&mut squeezed, "m:8b", 5);
    squeezed.memory_pressure = Pressure::Warn;
    let v = view(vec![warm, squeezed, cool]);
    let r = rank(&v, &NoObservations, &input("m:8b", &[]));
    assert_eq!(&*r.candidates[0].node, "cool");
    assert_eq!(cand(&r, "warm").signals.device_thermal, -25.0);
    assert_eq!(cand(&r, "squeezed").signals.memory_pressure, -15.0);
}

#[test]
fn every_elimination_has_its_reason() {
    let with = |id: &str, f: &dyn Fn(&mut NodeState)| {
        let mut n = node(id, 64);
        loaded(&mut n, "m:8b", 5);
        f(&mut n);
        n
    };
    let nodes = vec![
        with("offline", &|n| n.mark_offline("stream closed")),
        with("draining", &|n| n.draining = true),
        with("paused", &|n| n.mode = Mode::Paused),
        with("excluded", &|_| {}),
        with("pressure", &|n| n.memory_pressure = Pressure::Critical),
        with("thermal", &|n| n.thermal = Thermal::Critical),
        with("unreachable", &|n| n.engine_reachable = false),
        // A speech-to-text engine serves no chat (an OpenAI-only LLM
        // engine does, through the bridge).
        with("stt", &|n| n.engine = Engine::Stt),
        with("absent", &|n| {
            n.loaded.clear();
            n.available.clear();
        }),
        with("ok", &|_| {}),
    ];
    let v = view(nodes);
    let exclude: Vec<NodeId> = vec!["excluded".into()];
    let r = rank(&v, &NoObservations, &input("m:8b", &exclude));
    assert_eq!(r.candidates.len(), 1);
    assert_eq!(&*r.candidates[0].node, "ok");
    assert!(
        matches!(why(&r, "offline"), Elimination::Offline { detail } if detail == "stream closed")
    );
    assert_eq!(why(&r, "draining"), Elimination::Draining);
    assert_eq!(why(&r, "paused"), Elimination::Paused);
    assert_eq!(why(&r, "excluded"), Elimination::Excluded);
    assert_eq!(why(&r, "pressure"), Elimination::MemoryPressureCritical);
    assert_eq!(why(&r, "thermal"), Elimination::ThermalCritical);
    assert_eq!(why(&r, "unreachable"), Elimination::EngineUnreachable);
    assert!(matches!(why(&r, "stt"), Elimination::EngineMismatch { .. }));
    assert_eq!(why(&r, "absent"), Elimination::ModelAbsent);
    assert!(!r.model_unknown());
    // A model no node has is unknown even when some nodes are offline or
    // otherwise ineligible (that is a 404 and an auto-pull, not a 503).
    let r = rank(&v, &NoObservations, &input("nope:1b", &exclude));
    assert!(r.model_unknown());
}

#[test]
fn a_model_that_does_not_fit_is_eliminated() {
    let mut small = node("small", 16);
    on_disk(&mut small, "m:70b", 40);
    let mut big = node("big", 128);
    on_disk(&mut big, "m:70b", 40);
    let v = view(vec![small, big]);
    let r = rank(&v, &NoObservations, &input("m:70b", &[]));
    assert!(
        matches!(why(&r, "small"), Elimination::DoesNotFit { need_gib, .. } if need_gib > 40.0)
    );
    assert_eq!(&*r.candidates[0].node, "big");
}

#[test]
fn idle_loaded_models_count_as_reclaimable() {
    let mut n = node("n", 32);
    loaded(&mut n, "other:14b", 20);
    n.memory_available_bytes = 6 * G; // only 6 GiB free, but 20 GiB held by an idle model
    on_disk(&mut n, "m:8b", 5);
    let v = view(vec![n]);
    let r = rank(&v, &NoObservations, &input("m:8b", &[]));
    assert_eq!(r.candidates.len(), 1, "{r:?}");
}

#[test]
fn small_only_mode_refuses_big_models() {
    let mut n = node("n", 64);
    n.mode = Mode::SmallOnly;
    loaded(&mut n, "m:32b", 20);
    loaded(&mut n, "s:1b", 1);
    let v = view(vec![n]);
    let r = rank(&v, &NoObservations, &input("m:32b", &[]));
    assert!(matches!(why(&r, "n"), Elimination::SmallOnly { .. }));
    let r = rank(&v, &NoObservations, &input("s:1b", &[]));
    assert_eq!(r.candidates.len(), 1);
}

#[test]
fn subset_restricts_candidates() {
    let mut a = node("a", 64);
    loaded(&mut a, "m:8b", 5);
    let mut b = node("b", 64);
    loaded(&mut b, "m:8b", 5);
    let v = view(vec![a, b]);
    let only: Vec<NodeId> = vec!["b".into()];
    let mut i = input("m:8b", &[]);
    i.only = Some(&only);
    let r = rank(&v, &NoObservations, &i);
    assert_eq!(r.candidates.len(), 1);
    assert_eq!(why(&r, "a"), Elimination::NotInSubset);
}

#[test]
fn unknown_model_is_reported_as_such() {
    let mut a = node("a", 64);
    loaded(&mut a, "m:8b", 5);
    let v = view(vec![a]);
    let r = rank(&v, &NoObservations, &input("nope:1b", &[]));
    assert!(r.model_unknown());
    assert!(r.best().is_none());
}

#[test]
fn ties_break_on_load_then_name() {
    let mut a = node("a", 64);
    loaded(&mut a, "m:8b", 5);
    a.parallel_slots = 100; // makes one in-flight request nearly free in points
    let mut b = node("b", 64);
    loaded(&mut b, "m:8b", 5);
    b.parallel_slots = 100;
    let v = view(vec![b.clone(), a.clone()]);
    let r = rank(&v, &NoObservations, &input("m:8b", &[]));
    assert_eq!(r.candidates[0].score, r.candidates[1].score);
    assert_eq!(&*r.candidates[0].node, "a", "equal scores: name decides");
    let mut obs = Obs::default();
    obs.load.insert(
        "a".into(),
        Load {
            in_flight: 1,
            waiting: 0,
        },
    );
    let r = rank(&v, &obs, &input("m:8b", &[]));
    assert_eq!(&*r.candidates[0].node, "b", "fewer in flight wins");
}

#[test]
fn model_names_match_with_latest() {
    let mut a = node("a", 64);
    loaded(&mut a, "llama3.2:latest", 2);
    let v = view(vec![a]);
    let r = rank(&v, &NoObservations, &input("llama3.2", &[]));
    assert_eq!(r.candidates.len(), 1);
}

#[test]
fn name_size_heuristic() {
    assert!((name_size_gib("qwen3:8b") - 4.8).abs() < 0.01);
    assert!((name_size_gib("gemma3:27b") - 16.2).abs() < 0.01);
    assert!((name_size_gib("qwen2.5:0.5b") - 0.3).abs() < 0.01);
    assert_eq!(name_size_gib("nomic-embed-text"), 0.3);
}

#[test]
fn a_failing_node_loses_to_a_healthy_one() {
    let mut a = node("a", 192);
    loaded(&mut a, "m:8b", 5);
    let mut b = node("b", 64);
    loaded(&mut b, "m:8b", 5);
    let v = view(vec![a, b]);
    let winner = rank(&v, &NoObservations, &input("m:8b", &[])).candidates[0]
        .node
        .to_string();
    let other = if winner == "a" { "b" } else { "a" };
    let mut obs = Obs::default();
    obs.perf.insert(
        winner.clone(),
        Perf {
            recent_failures: 2.0,
            ..Perf::default()
        },
    );
    let r = rank(&v, &obs, &input("m:8b", &[]));
    assert_eq!(cand(&r, &winner).signals.reliability, -40.0);
    assert_eq!(&*r.candidates[0].node, other);
}

// ---- prefix-cache affinity and learned slots (issue 15)

/// Load, cached prompt tokens (with when they were sent) and learned slots
/// per node.
#[derive(Default)]
struct CacheObs {
    load: HashMap<String, Load>,
    cached: HashMap<String, (u32, i64)>,
    slots: HashMap<String, crate::slots::SlotEstimate>,
}

impl Observations for CacheObs {
    fn load(&self, node: &str, _: &str) -> Load {
        self.load.get(node).copied().unwrap_or_default()
    }
    fn perf(&self, _: &str, _: &str) -> Option<Perf> {
        None
    }
    fn cached_tokens(
        &self,
        node: &str,
        _: &str,
        _: &crate::prefix::Prefix,
        since_ms: i64,
        _: i64,
    ) -> u32 {
        match self.cached.get(node) {
            Some((tokens, sent_at)) if *sent_at >= since_ms => *tokens,
            _ => 0,
        }
    }
    fn learned_slots(&self, node: &str, _: &str) -> Option<crate::slots::SlotEstimate> {
        self.slots.get(node).copied()
    }
}

fn some_prefix() -> crate::prefix::Prefix {
    let mut h = crate::prefix::PrefixHasher::new();
    h.feed(&[7u8; 1000]);
    h.finish()
}

/// Two identical nodes with the model loaded and four slots each; an
/// 8,000-token prompt of which `a` holds 7,000.
fn warm_pair() -> (FleetView, CacheObs) {
    let mut a = node("a", 64);
    let mut b = node("b", 64);
    for n in [&mut a, &mut b] {
        loaded(n, "m:8b", 5);
        n.parallel_slots = 4;
    }
    let mut obs = CacheObs::default();
    obs.cached.insert("a".into(), (7_000, NOW - 10_000));
    (view(vec![a, b]), obs)
}

fn prompt<'a>(p: &'a crate::prefix::Prefix) -> ScoreInput<'a> {
    ScoreInput {
        est_prompt_tokens: 8_000,
        prefix: Some(p),
        ..input("m:8b", &[])
    }
}

#[test]
fn a_node_holding_the_prompt_wins_while_it_has_room() {
    let (v, obs) = warm_pair();
    let p = some_prefix();
    let r = rank(&v, &obs, &prompt(&p));
    assert_eq!(&*r.candidates[0].node, "a");
    let (a, b) = (cand(&r, "a"), cand(&r, "b"));
    assert_eq!(a.expected_cached_tokens, 7_000);
    assert_eq!(b.expected_cached_tokens, 0);
    // 7,000 tokens at 1,000 tokens/s: 7 s of prefill saved, 30·(1−e^−1.4).
    assert!((a.signals.prefix_hit - 22.6).abs() < 0.1, "{:?}", a.signals);
    assert_eq!(b.signals.prefix_hit, 0.0);
    assert!((b.expected_ttft_ms - a.expected_ttft_ms - 7_000.0).abs() < 1.0);
    // All slots busy: no bonus, but waiting ~2.4 s for a slot still beats
    // prefilling 7,000 tokens elsewhere (expected_wait weighs both).
    let mut obs = obs;
    obs.load.insert(
        "a".into(),
        Load {
            in_flight: 4,
            waiting: 0,
        },
    );
    let r = rank(&v, &obs, &prompt(&p));
    assert_eq!(&*r.candidates[0].node, "a", "{r:#?}");
    assert_eq!(cand(&r, "a").signals.prefix_hit, 0.0);
}

#[test]
fn a_warm_but_busy_node_does_not_attract_everything() {
    let (v, mut obs) = warm_pair();
    let p = some_prefix();
    obs.load.insert(
        "a".into(),
        Load {
            in_flight: 4,
            waiting: 8,
        },
    );
    let r = rank(&v, &obs, &prompt(&p));
    assert_eq!(&*r.candidates[0].node, "b", "{r:#?}");
    let a = cand(&r, "a");
    // No slot free: its hit earns no bonus.
    assert_eq!(a.signals.prefix_hit, 0.0, "{:?}", a.signals);
    assert!(a.expected_ttft_ms > cand(&r, "b").expected_ttft_ms);
}

#[test]
fn no_hit_without_the_model_loaded_since_or_with_affinity_off() {
    let p = some_prefix();
    // Unloaded and loaded again after the prompt was sent: the cache is gone.
    let (mut v, obs) = warm_pair();
    let mut a = (*v.nodes["a"]).clone();
    a.loaded_since.insert("m:8b".into(), NOW - 5_000);
    v.insert(a);
    let r = rank(&v, &obs, &prompt(&p));
    assert_eq!(cand(&r, "a").expected_cached_tokens, 0);
    // Only on disk: nothing cached either.
    let (v, obs) = warm_pair();
    let mut a = (*v.nodes["a"]).clone();
    a.loaded.clear();
    let mut v = v;
    v.insert(a);
    let r = rank(&v, &obs, &prompt(&p));
    assert_eq!(cand(&r, "a").expected_cached_tokens, 0);
    assert_eq!(cand(&r, "a").signals.prefix_hit, 0.0);
    // Affinity switched off.
    let (v, obs) = warm_pair();
    let cfg = ScoringConfig {
        prefix_affinity: false,
        ..ScoringConfig::default()
    };
    let r = score(&v, &obs, &prompt(&p), &cfg);
    assert_eq!(cand(&r, "a").expected_cached_tokens, 0);
    assert_eq!(cand(&r, "a").signals.prefix_hit, 0.0);
    assert_eq!(cand(&r, "a").score, cand(&r, "b").score);
    // No prompt known (explain by model name): no hit.
    let r = rank(&v, &obs, &input("m:8b", &[]));
    assert_eq!(cand(&r, "a").expected_cached_tokens, 0);
}

#[test]
fn slots_come_from_the_report_the_config_what_was_learned_or_one() {
    use crate::slots::{SlotEstimate, SlotSource};
    let mut one = node("one", 64);
    let mut four = node("four", 64);
    for n in [&mut one, &mut four] {
        loaded(n, "m:8b", 5);
        n.parallel_slots = 0; // agentless: nothing reported
    }
    let v = view(vec![one, four]);
    let mut obs = CacheObs::default();
    for (n, slots) in [("one", 1), ("four", 4)] {
        obs.slots.insert(
            n.into(),
            SlotEstimate {
                slots,
                limit: slots,
                ..SlotEstimate::assumed()
            },
        );
        obs.load.insert(
            n.into(),
            Load {
                in_flight: 1,
                waiting: 0,
            },
        );
    }
    // One request in flight on each: the 1-slot node is full, the other is not.
    let r = rank(&v, &obs, &input("m:8b", &[]));
    assert_eq!(&*r.candidates[0].node, "four", "{r:#?}");
    assert_eq!(cand(&r, "one").slots, 1);
    assert_eq!(cand(&r, "one").slots_source, SlotSource::Learned);
    assert_eq!(cand(&r, "four").slots, 4);
    let n = &v.nodes["one"];
    assert_eq!(
        slots_for(n, &obs, "m:8b", &ScoringConfig::default()),
        (1, 1, SlotSource::Learned)
    );
    assert_eq!(
        slots_for(n, &NoObservations, "m:8b", &ScoringConfig::default()),
        (1, 2, SlotSource::Assumed)
    );
    let fixed = ScoringConfig {
        default_parallel_slots: Some(6),
        ..ScoringConfig::default()
    };
    assert_eq!(
        slots_for(n, &obs, "m:8b", &fixed),
        (6, 6, SlotSource::Configured)
    );
    let mut reported = (**n).clone();
    reported.parallel_slots = 3;
    assert_eq!(
        slots_for(&reported, &obs, "m:8b", &fixed),
        (3, 3, SlotSource::Reported)
    );
}

fn capable(n: &mut NodeState, model: &str, caps: &[&str]) {
    on_disk(n, model, 5);
    n.available.last_mut().unwrap().capabilities = caps.iter().map(|c| c.to_string()).collect();
}

fn needing<'a>(
    model: &'a str,
    endpoint: crate::request::Endpoint,
    needs: &[&str],
) -> ScoreInput<'a> {
    ScoreInput {
        kind: endpoint.kind(),
        format: endpoint.dialect(),
        endpoint,
        needs: crate::capability::Caps::from_names(needs.iter().copied()),
        ..input(model, &[])
    }
}

#[test]
fn a_model_that_cannot_do_what_the_request_needs_is_eliminated_with_what_it_lacks() {
    use crate::request::Endpoint;
    let mut sees = node("sees", 64);
    capable(&mut sees, "m:8b", &["completion", "vision", "tools"]);
    let mut blind = node("blind", 64);
    capable(&mut blind, "m:8b", &["completion", "tools"]);
    let mut unknown = node("unknown", 64);
    on_disk(&mut unknown, "m:8b", 5);
    let v = view(vec![sees, blind, unknown]);
    let r = rank(
        &v,
        &NoObservations,
        &needing("m:8b", Endpoint::OllamaChat, &["completion", "vision"]),
    );
    let names: Vec<&str> = r.candidates.iter().map(|c| &*c.node).collect();
    assert!(
        names.contains(&"sees") && names.contains(&"unknown"),
        "{names:?}"
    );
    match why(&r, "blind") {
        Elimination::Incapable { lacks, can } => {
            assert_eq!(lacks.names(), ["vision"]);
            assert_eq!(can.names(), ["completion", "tools"]);
        }
        other => panic!("{other:?}"),
    }
    let text = why(&r, "blind").to_string();
    assert!(text.contains("cannot read images"), "{text}");
    assert_eq!(r.incapable(), None, "others can: not a refusal");
    // Plain text: every copy serves it.
    let r = rank(
        &v,
        &NoObservations,
        &needing("m:8b", Endpoint::OllamaChat, &["completion"]),
    );
    assert_eq!(r.candidates.len(), 3);

    // Only the blind copy: the request cannot be served, and says why.
    let mut blind = node("blind", 64);
    capable(&mut blind, "m:8b", &["completion"]);
    let mut other = node("other", 64);
    on_disk(&mut other, "x:1b", 1);
    let v = view(vec![blind, other]);
    let r = rank(
        &v,
        &NoObservations,
        &needing(
            "m:8b",
            Endpoint::OllamaChat,
            &["completion", "tools", "thinking"],
        ),
    );
    let why = r.incapable().expect("a refusal");
    assert!(why.contains("lacks tools, thinking"), "{why}");
}

#[test]
fn media_requests_go_to_engines_that_serve_them() {
    use crate::request::Endpoint;
    let mut old = node("old-ollama", 64);
    old.engine_version = "0.19.2".into();
    capable(&mut old, "whisper:latest", &["completion", "audio"]);
    let mut new = node("new-ollama", 64);
    new.engine_version = "0.20.1".into();
    capable(&mut new, "whisper:latest", &["completion", "audio"]);
    let mut llm = node("llm-only", 64);
    llm.engine_version = "0.20.1".into();
    capable(&mut llm, "whisper:latest", &["completion"]);
    let mut stt = node("box/stt", 64);
    stt.engine = Engine::Stt;
    on_disk(&mut stt, "whisper:latest", 1);
    let mut img = node("box/image", 64);
    img.engine = Engine::Image;
    on_disk(&mut img, "sd:latest", 4);
    let v = view(vec![old, new, llm, stt, img]);
    let r = rank(
        &v,
        &NoObservations,
        &needing("whisper", Endpoint::AudioTranscriptions, &["audio"]),
    );
    let mut names: Vec<&str> = r.candidates.iter().map(|c| &*c.node).collect();
    names.sort();
    assert_eq!(names, ["box/stt", "new-ollama"], "{r:#?}");
    assert!(matches!(
        why(&r, "old-ollama"),
        Elimination::EngineMismatch {
            since: Some("Ollama 0.20.0"),
            ..
        }
    ));
    assert!(matches!(why(&r, "llm-only"), Elimination::Incapable { .. }));
    assert!(matches!(
        why(&r, "box/image"),
        Elimination::EngineMismatch { .. }
    ));
    // Translations: no Ollama has them; the speech-to-text engine does.
    let r = rank(
        &v,
        &NoObservations,
        &needing("whisper", Endpoint::AudioTranslations, &["audio"]),
    );
    assert_eq!(r.candidates.len(), 1);
    assert_eq!(&*r.candidates[0].node, "box/stt");
    // Images: the image engine, whose models draw without saying so.
    let r = rank(
        &v,
        &NoObservations,
        &needing("sd", Endpoint::ImageGenerations, &["image"]),
    );
    assert_eq!(r.candidates.len(), 1);
    assert_eq!(&*r.candidates[0].node, "box/image");
    // A chat to the image engine's model: no node serves it.
    let r = rank(
        &v,
        &NoObservations,
        &needing("sd", Endpoint::OllamaChat, &["completion"]),
    );
    assert!(r.candidates.is_empty());
}

#[test]
fn an_openai_only_engine_serves_every_dialect_but_only_openais_natively() {
    use crate::request::Endpoint;
    let mut n = node("vllm", 64);
    n.engine = Engine::OpenAi;
    loaded(&mut n, "m:8b", 5);
    let v = view(vec![n]);
    for ep in [
        Endpoint::OllamaChat,
        Endpoint::OpenAiChat,
        Endpoint::AnthropicMessages,
        Endpoint::OllamaEmbed,
    ] {
        let r = rank(&v, &NoObservations, &needing("m:8b", ep, &[]));
        assert_eq!(r.candidates.len(), 1, "{ep:?}");
        let native = ScoreInput {
            native_only: true,
            ..needing("m:8b", ep, &[])
        };
        let r = rank(&v, &NoObservations, &native);
        assert_eq!(
            r.candidates.len(),
            usize::from(ep == Endpoint::OpenAiChat),
            "{ep:?} natively"
        );
    }
}
