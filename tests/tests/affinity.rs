//! Prefix-cache affinity and learned node limits, end to end on simulated
//! devices (whose slots keep a KV cache as Ollama's runners do):
//!
//! - a conversation's turns go back to the node that holds its prompt while
//!   that node has room, and spill to another when it does not — through
//!   the proxy and through Envoy with herd-epp;
//! - an agentless node's parallel slots are learned from how it answers:
//!   1 for a 1-slot node, 4 for a 4-slot one, shown in `/fleet/status`, and
//!   a burst then goes where the slots are.

use std::time::Duration;

use futures::future::join_all;
use herd_node::DeviceConfig;
use herd_node::config::ModelSpec;
use herd_tests::*;
use serde_json::{Value, json};

/// A model with room for long conversations.
fn long_model() -> ModelSpec {
    ModelSpec {
        context_length: 32_768,
        ..model("m:8b", 5.0)
    }
}

/// A device with one slot (so its cache holds one conversation), 0.5 ms of
/// prefill per prompt token and 50 tokens/s.
fn one_slot(name: &str) -> DeviceConfig {
    DeviceConfig {
        num_parallel: 1,
        speed: 50.0,
        ttft_base_ms: 5,
        ttft_ms_per_prompt_token: 0.5,
        ..device(name, 64, vec![long_model()], &["m:8b"])
    }
}

/// A conversation: a ~3,500-token system prompt of its own, then turns.
struct Conversation {
    messages: Vec<Value>,
}

impl Conversation {
    fn new(agent: &str) -> Self {
        let system = format!("You are agent {agent}; answer briefly. ").repeat(420);
        Conversation {
            messages: vec![json!({"role": "system", "content": system})],
        }
    }

    /// The body of the next turn, asking `question` (not yet added).
    fn ask(&self, question: &str, num_predict: u32) -> Value {
        let mut messages = self.messages.clone();
        messages.push(json!({"role": "user", "content": question}));
        json!({"model": "m:8b", "messages": messages, "stream": false,
               "options": {"num_predict": num_predict}})
    }

    /// Keep a turn: the question and the answer it got.
    fn keep(&mut self, question: &str, reply: &Reply) {
        let answer = reply.json()["message"]["content"]
            .as_str()
            .unwrap_or_else(|| panic!("no answer: {}", reply.text()))
            .to_string();
        self.messages
            .push(json!({"role": "user", "content": question}));
        self.messages
            .push(json!({"role": "assistant", "content": answer}));
    }
}

/// Sends `bodies` 60 ms apart (each is scored after the one before holds
/// its slot) and waits for all answers.
async fn staggered(c: &Client, url: &str, bodies: Vec<Value>) -> Vec<Reply> {
    let sends = bodies.into_iter().enumerate().map(|(i, b)| {
        let (c, url) = (c.clone(), url.to_string());
        async move {
            tokio::time::sleep(Duration::from_millis(60 * i as u64)).await;
            post(&c, &url, b).await
        }
    });
    let replies = join_all(sends).await;
    for r in &replies {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    replies
}

/// Three conversations on three 1-slot nodes, sent three at a time in a
/// different order each round: each goes back to the node that holds it.
/// Then a turn of one conversation and two long forks of it arrive
/// together: its node takes what it has room for, the rest move.
async fn conversations_stick_while_there_is_room(
    url: &str,
    served_by: impl Fn(&Reply) -> String,
    cached_tokens: impl Fn() -> u64,
) {
    let c = client();
    let mut convs: Vec<Conversation> = ["A", "B", "C"]
        .iter()
        .map(|a| Conversation::new(a))
        .collect();
    let first: Vec<Value> = convs.iter().map(|v| v.ask("turn 1", 20)).collect();
    let replies = staggered(&c, url, first).await;
    let homes: Vec<String> = replies.iter().map(&served_by).collect();
    let mut distinct = homes.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "the first turns spread: {homes:?}");
    for (v, r) in convs.iter_mut().zip(&replies) {
        v.keep("turn 1", r);
    }
    let before = cached_tokens();
    for round in 2..=4 {
        // Rotate who comes first, so arrival order alone would reshuffle.
        let order: Vec<usize> = (0..3).map(|i| (i + round) % 3).collect();
        let q = format!("turn {round}");
        let bodies = order.iter().map(|&i| convs[i].ask(&q, 20)).collect();
        let replies = staggered(&c, url, bodies).await;
        for (&i, r) in order.iter().zip(&replies) {
            assert_eq!(served_by(r), homes[i], "conversation {i}, round {round}");
            convs[i].keep(&q, r);
        }
    }
    // Three rounds of three turns, each reusing ~3,400 cached tokens.
    let reused = cached_tokens() - before;
    assert!(reused > 9 * 3_000, "{reused} tokens reused");

    // Conversation 0's next turn and two long forks of it, together.
    let bodies = vec![
        convs[0].ask("turn 5", 100),
        convs[0].ask("fork 1", 100),
        convs[0].ask("fork 2", 100),
    ];
    let replies = staggered(&c, url, bodies).await;
    let nodes: Vec<String> = replies.iter().map(&served_by).collect();
    assert_eq!(nodes[0], homes[0], "its turn goes home while it has room");
    let at_home = nodes.iter().filter(|n| **n == homes[0]).count();
    assert!(
        at_home <= 2,
        "a warm but busy node does not take everything: {nodes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_go_back_to_the_node_that_holds_them_until_it_is_full() {
    let fleet = start(
        router_config(),
        vec![one_slot("a"), one_slot("b"), one_slot("c")],
    )
    .await;
    let url = format!("{}/api/chat", fleet.url());
    let cached = || {
        ["a", "b", "c"]
            .iter()
            .map(|d| fleet.device(d).stats().cached_tokens)
            .sum::<u64>()
    };
    conversations_stick_while_there_is_room(
        &url,
        |r| r.header("x-herd-node").expect("x-herd-node"),
        cached,
    )
    .await;
    // What scoring expected shows in the traces and in explain.
    let c = client();
    fleet.router.telemetry.flush().await;
    let t = get(&c, &format!("{}/fleet/traces?limit=20", fleet.url()))
        .await
        .json();
    let records = t["traces"].as_array().cloned().unwrap_or_default();
    assert!(
        records
            .iter()
            .any(|r| r["winner"]["expected_cached_tokens"].as_u64().unwrap_or(0) > 3_000),
        "{t}"
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_tokens_each_node_holds_and_the_switch_turns_it_off() {
    for affinity in [true, false] {
        let mut cfg = router_config();
        cfg.routing.scoring.prefix_affinity = affinity;
        let fleet = start(cfg, vec![one_slot("a"), one_slot("b")]).await;
        let c = client();
        let mut conv = Conversation::new("E");
        let r = post(&c, &format!("{}/api/chat", fleet.url()), conv.ask("q1", 10)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let home = r.header("x-herd-node").unwrap();
        conv.keep("q1", &r);
        let e = post(
            &c,
            &format!("{}/fleet/explain", fleet.url()),
            conv.ask("q2", 10),
        )
        .await;
        assert_eq!(e.status, 200, "{}", e.text());
        let e = e.json();
        let held = |node: &str| {
            e["ranking"]["candidates"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["node"] == node)
                .map(|c| c["expected_cached_tokens"].as_u64().unwrap())
                .unwrap()
        };
        let other = if home == "a" { "b" } else { "a" };
        if affinity {
            assert!(held(&home) > 3_000, "{e:#}");
            assert_eq!(e["winner"], home.as_str());
            let hit = &e["ranking"]["candidates"][0]["signals"]["prefix_hit"];
            assert!(hit.as_f64().unwrap() > 10.0, "{e:#}");
        } else {
            assert_eq!(held(&home), 0, "{e:#}");
        }
        assert_eq!(held(other), 0);
        // A bad path is refused in Ollama's shape.
        let bad = post(
            &c,
            &format!("{}/fleet/explain?path=/api/pull", fleet.url()),
            conv.ask("q2", 10),
        )
        .await;
        assert_eq!(bad.status, 400);
        assert!(bad.json()["error"].as_str().unwrap().contains("/api/pull"));
        fleet.shutdown().await;
    }
}

/// A turn that had to load the model first still leaves its prompt
/// counted where it went: the load takes seconds, the fleet learns the
/// model is loaded only after it, and the cache is no older than the load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_that_loaded_the_model_is_remembered_there() {
    // 5 GB at 500 ms/GB: a load spans many 100 ms reports.
    let one = |name: &str| DeviceConfig {
        loaded: Vec::new(),
        ..one_slot(name)
    };
    let fleet = start(router_config(), vec![one("a"), one("b")]).await;
    let c = client();
    let mut conv = Conversation::new("L");
    let r = post(&c, &format!("{}/api/chat", fleet.url()), conv.ask("q1", 10)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let home = r.header("x-herd-node").unwrap();
    conv.keep("q1", &r);
    // Once the fleet shows the model loaded there, explain counts the
    // prompt the first turn left.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let held = loop {
        let e = post(
            &c,
            &format!("{}/fleet/explain", fleet.url()),
            conv.ask("q2", 10),
        )
        .await
        .json();
        let cand = e["ranking"]["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["node"] == home.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("{e:#}"));
        if cand["temperature"] == "hot" {
            break cand["expected_cached_tokens"].as_u64().unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never loaded: {e:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(held > 3_000, "the first turn's prompt is counted: {held}");
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herd_epp_sends_turns_back_to_the_node_that_holds_them() {
    use herd_tests::envoy::*;
    let fleet = start_epp(
        epp_config(),
        vec![one_slot("a"), one_slot("b"), one_slot("c")],
    )
    .await;
    let envoy = Envoy::start(&EnvoyOpts::new(fleet.epp.grpc_addr, BodyMode::FullDuplex)).await;
    let url = format!("{}/api/chat", envoy.url());
    let cached = || {
        ["a", "b", "c"]
            .iter()
            .map(|d| fleet.device(d).stats().cached_tokens)
            .sum::<u64>()
    };
    conversations_stick_while_there_is_room(
        &url,
        |r| r.header("x-served-by").expect("x-served-by"),
        cached,
    )
    .await;
    drop(envoy);
    fleet.shutdown().await;
}

/// An agentless device with `slots` slots and quick answers (~0.4 s).
fn agentless(name: &str, slots: u32) -> DeviceConfig {
    DeviceConfig {
        num_parallel: slots,
        speed: 50.0,
        ttft_base_ms: 5,
        ttft_ms_per_prompt_token: 0.0,
        ..device(name, 64, vec![long_model()], &["m:8b"])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agentless_slots_are_learned_from_a_one_slot_and_a_four_slot_node() {
    let devices = herd_node::start_fleet(
        herd_node::FleetConfig {
            devices: vec![agentless("one", 1), agentless("four", 4)],
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap();
    let urls: Vec<String> = devices.iter().map(|d| d.url()).collect();
    let id = |i: usize| herd_layer::discovery::agentless::node_id_for(&urls[i]).to_string();
    let (one, four) = (id(0), id(1));
    let mut cfg = router_config();
    cfg.routing.nodes = urls.clone();
    cfg.routing.poll_interval = Duration::from_millis(100);
    let fleet = start(cfg, vec![]).await;
    fleet
        .wait_for("both agentless nodes online", |v| v.online().count() == 2)
        .await;
    let c = client();
    let url = format!("{}/api/chat", fleet.url());
    let learned = |status: &Value, node: &str| -> Option<Value> {
        status["history"]
            .as_array()?
            .iter()
            .find(|h| h["node"] == node)
            .map(|h| h["learned_slots"].clone())
            .filter(|l| !l.is_null())
    };
    // Before any answer: nothing learned, one slot assumed.
    let e = get(&c, &format!("{}/fleet/explain?model=m:8b", fleet.url()))
        .await
        .json();
    for cand in e["ranking"]["candidates"].as_array().unwrap() {
        assert_eq!(cand["slots_source"], "assumed", "{e:#}");
        assert_eq!(cand["slots"], 1);
    }
    // Bursts of ten at once, until both are known (demand has to reach a
    // node's limit for anything to be learned).
    let mut status = Value::Null;
    for round in 0..12 {
        let bodies = (0..10).map(|i| chat("m:8b", &format!("burst {round} {i}"), false));
        let replies = join_all(bodies.map(|b| post(&c, &url, b))).await;
        assert!(replies.iter().all(|r| r.status == 200));
        status = get(&c, &format!("{}/fleet/status", fleet.url()))
            .await
            .json();
        let done = |n: &str, want: u64| {
            learned(&status, n).is_some_and(|l| l["slots"] == want && l["limit"] == want)
        };
        if done(&one, 1) && done(&four, 4) {
            break;
        }
    }
    let (l1, l4) = (learned(&status, &one), learned(&status, &four));
    let l1 = l1.unwrap_or_else(|| panic!("nothing learned for the 1-slot node: {status:#}"));
    let l4 = l4.unwrap_or_else(|| panic!("nothing learned for the 4-slot node: {status:#}"));
    assert_eq!(l1["slots"], 1, "{status:#}");
    assert_eq!(l1["limit"], 1, "{status:#}");
    assert_eq!(l1["waited_from"], 2, "{status:#}");
    assert!(l1["node_wait_ms"].as_f64().unwrap() > 100.0, "{l1}");
    assert_eq!(l4["slots"], 4, "{status:#}");
    assert_eq!(l4["no_wait_up_to"], 4, "{status:#}");
    // Admission's limit per node:model, as the queues show it.
    let e = get(&c, &format!("{}/fleet/explain?model=m:8b", fleet.url()))
        .await
        .json();
    let slots = |n: &str| {
        e["ranking"]["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["node"] == n)
            .map(|c| (c["slots"].as_u64().unwrap(), c["slots_source"].clone()))
            .unwrap()
    };
    assert_eq!(slots(&one), (1, json!("learned")));
    assert_eq!(slots(&four).0, 4);
    // Eight at once now go where the slots are.
    for d in &devices {
        d.reset_stats();
    }
    let bodies = (0..8).map(|i| chat("m:8b", &format!("eight {i}"), false));
    let replies = join_all(bodies.map(|b| post(&c, &url, b))).await;
    assert!(replies.iter().all(|r| r.status == 200));
    let served: Vec<u64> = devices.iter().map(|d| d.stats().served_total).collect();
    assert!(served[0] <= 3 && served[1] >= 5, "one, four: {served:?}");
    assert!(devices[0].stats().max_active_seen <= 1);
    fleet.shutdown().await;
    for d in devices {
        d.shutdown().await;
    }
}
