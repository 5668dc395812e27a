//! The hub, the event stream and the decision trail, without sockets.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;

use super::event::{Decision, Outcome};
use super::*;
use crate::fleet::{LoadedModel, NodeState, Source};
use crate::live::Live;
use crate::rank::{Ranking, ScoringConfig};
use crate::routed::{Body, Routed};

fn cfg(ring: usize, per_s: f64) -> DashboardConfig {
    DashboardConfig {
        ring,
        decisions_per_s: per_s,
        max_subscribers: 2,
        ..DashboardConfig::default()
    }
}

fn info() -> Box<serde_json::value::RawValue> {
    serde_json::value::to_raw_value(&serde_json::json!({"shape": "test"})).unwrap()
}

fn decision(id: &str) -> Decision {
    Decision {
        id: id.into(),
        ts_ms: 1,
        model: "m".into(),
        tried: "m".into(),
        kind: "chat",
        api: "ollama",
        prompt_tokens: 10,
        attempt: 1,
        excluded: Vec::new(),
        ranking: Arc::new(Ranking {
            model: "m".into(),
            candidates: Vec::new(),
            eliminated: Vec::new(),
            model_known: true,
        }),
        error: None,
    }
}

fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn decisions_above_the_rate_are_counted_not_shown() {
    let hub = Hub::new(&cfg(64, 2.0));
    // A burst of twice the rate is shown, the rest only counted.
    let shown: Vec<bool> = (0..6)
        .map(|i| hub.decision(decision(&i.to_string())))
        .collect();
    assert_eq!(shown, [true, true, true, true, false, false]);
    let c = hub.counters();
    assert_eq!((c.decisions, c.shown), (6, 4));
    // An outcome of a decision not shown is counted, not published.
    let before = hub.watch().borrow().to_owned();
    hub.outcome(
        Outcome {
            id: "5".into(),
            status: "failed",
            ..Default::default()
        },
        false,
        500.0,
    );
    assert_eq!(*hub.watch().borrow(), before);
    assert_eq!((hub.counters().finished, hub.counters().errors), (1, 1));
}

#[test]
fn a_cursor_that_falls_off_the_ring_is_lagged_and_a_recent_id_resumes() {
    let hub = Hub::new(&cfg(16, 1000.0));
    for i in 0..40 {
        hub.state_event("queues", Bytes::from(format!("[{i}]")));
    }
    // The ring holds the last 16 of 40 (seq 25..=40).
    assert!(matches!(hub.since(1, 100), hub::Since::Lagged));
    let hub::Since::Events(ev) = hub.since(30, 100) else {
        panic!("lagged")
    };
    assert_eq!(ev.len(), 11);
    assert_eq!(ev[0].seq, 30);
    // A Last-Event-ID inside the ring resumes after it, no snapshot.
    let s = hub.start(Some(&format!("{}:35", hub.id())), &info());
    assert!(s.first.is_none());
    assert_eq!(s.cursor, 36);
    // Too old, another run's hub, or nonsense: a fresh snapshot.
    for last in [format!("{}:3", hub.id()), "ffffffff:35".into(), "x".into()] {
        let s = hub.start(Some(&last), &info());
        let first = text(s.first.as_ref().expect("snapshot"));
        assert!(first.contains("event: snapshot"), "{first}");
        assert_eq!(s.cursor, 41);
    }
}

#[test]
fn the_snapshot_holds_the_state_and_the_last_decisions() {
    let hub = Hub::new(&cfg(64, 1000.0));
    hub.node("a".into(), Bytes::from_static(br#"{"id":"a"}"#));
    hub.node("b".into(), Bytes::from_static(br#"{"id":"b"}"#));
    hub.node_gone(&"b".into());
    hub.state_event("queues", Bytes::from_static(b"[]"));
    hub.state_event(
        "health",
        Bytes::from_static(
            br#"{"score":90,"checks":[{"id":"x","subject":"a","severity":"warning"}]}"#,
        ),
    );
    hub.decision(decision("r1"));
    hub.outcome(
        Outcome {
            id: "r1".into(),
            status: "ok",
            ..Default::default()
        },
        true,
        500.0,
    );
    let s = hub.start(None, &info());
    let first = text(s.first.as_ref().unwrap());
    let data = first
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(v["info"]["shape"], "test");
    assert_eq!(v["nodes"], serde_json::json!([{"id": "a"}]));
    assert_eq!(v["queues"], serde_json::json!([]));
    assert_eq!(v["health_history"][0]["score"], 90);
    assert_eq!(v["feed"][0]["event"], "decision");
    assert_eq!(v["feed"][0]["data"]["id"], "r1");
    assert_eq!(v["feed"][1]["data"]["status"], "ok");
    assert_eq!(v["pulls"], serde_json::Value::Null);
}

#[test]
fn health_history_keeps_changes_only_and_repeats_are_not_events() {
    let hub = Hub::new(&cfg(64, 1.0));
    let h = |score: u32, silent: u32| {
        Bytes::from(format!(
            r#"{{"score":{score},"checks":[{{"id":"node_offline","subject":"a","severity":"critical","evidence":{{"silent_ms":{silent}}}}}]}}"#
        ))
    };
    hub.state_event("health", h(80, 1));
    hub.state_event("health", h(80, 1)); // same bytes: no event
    hub.state_event("health", h(80, 2)); // evidence moved: an event, same point
    hub.state_event("health", h(100, 0));
    let hub::Since::Events(ev) = hub.since(1, 100) else {
        panic!()
    };
    assert_eq!(ev.len(), 3);
    let s = hub.start(None, &info());
    let first = text(s.first.as_ref().unwrap());
    let data = first
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(data).unwrap();
    let scores: Vec<u64> = v["health_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["score"].as_u64().unwrap())
        .collect();
    assert_eq!(scores, [80, 100]);
}

#[test]
fn subscribers_are_capped_and_freed() {
    let hub = Hub::new(&cfg(16, 1.0));
    let a = hub.subscribe().unwrap();
    let b = hub.subscribe().unwrap();
    assert!(hub.subscribe().is_err());
    assert_eq!(hub.counters().subscribers, 2);
    drop(a);
    let _c = hub.subscribe().unwrap();
    drop(b);
    assert_eq!(hub.counters().subscribers, 1);
}

fn board(ring: usize) -> (Dashboard, crate::fleet::Fleet) {
    let fleet = crate::fleet::Fleet::new();
    let info = Info {
        shape: "test",
        version: "0",
        read_only: true,
        views: vec!["fleet"],
        usage_by: Vec::new(),
    };
    (
        Dashboard::new(&cfg(ring, 1000.0), &info, fleet.clone(), Live::default()),
        fleet,
    )
}

async fn next(body: &mut Body) -> Option<String> {
    let f = tokio::time::timeout(Duration::from_secs(60), body.frame())
        .await
        .expect("a frame in time")?;
    Some(text(&f.ok()?.into_data().ok()?))
}

#[tokio::test(start_paused = true)]
async fn a_stream_sends_a_snapshot_then_batches_and_ends_when_closed() {
    let (board, _) = board(64);
    let mut body = board.events(&http::HeaderMap::new(), None).into_body();
    let first = next(&mut body).await.unwrap();
    assert!(first.starts_with("retry: 2000\n"), "{first}");
    assert!(first.contains("event: snapshot"), "{first}");
    // Two events published together arrive in one batch.
    board
        .hub()
        .state_event("queues", Bytes::from_static(b"[1]"));
    board.hub().state_event("pulls", Bytes::from_static(b"[2]"));
    let batch = next(&mut body).await.unwrap();
    assert!(
        batch.contains("event: queues\ndata: [1]\n\n")
            && batch.contains("event: pulls\ndata: [2]\n\n"),
        "{batch}"
    );
    // Silence brings a ping.
    let ping = next(&mut body).await.unwrap();
    assert_eq!(ping, ": ping\n\n");
    board.close();
    assert!(
        next(&mut body).await.is_none(),
        "the stream ends when herd stops"
    );
    let refused = board.events(&http::HeaderMap::new(), None);
    assert_eq!(refused.status(), 503);
}

#[tokio::test(start_paused = true)]
async fn a_tab_that_stops_reading_is_dropped_and_resumes_from_a_snapshot() {
    let (board, _) = board(16);
    let mut body = board.events(&http::HeaderMap::new(), None).into_body();
    let first = next(&mut body).await.unwrap();
    let id = first
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap()
        .to_string();
    // The tab reads nothing while 40 events go by: more than the ring.
    for i in 0..40 {
        board
            .hub()
            .state_event("queues", Bytes::from(format!("[{i}]")));
    }
    assert!(next(&mut body).await.is_none(), "dropped, not buffered");
    assert_eq!(board.hub().counters().dropped, 1);
    drop(body);
    assert_eq!(board.hub().counters().subscribers, 0);
    // Its reconnect (the old id) is too far behind: a fresh snapshot.
    let mut h = http::HeaderMap::new();
    h.insert("last-event-id", id.parse().unwrap());
    let mut again = board.events(&h, None).into_body();
    assert!(next(&mut again).await.unwrap().contains("event: snapshot"));
    // A tab a few events behind resumes with exactly what it missed.
    let last = format!("{}:{}", board.hub().id(), 40);
    board
        .hub()
        .state_event("queues", Bytes::from_static(b"[41]"));
    let mut resumed = board
        .events(
            &http::HeaderMap::new(),
            Some(&format!("last_event_id={last}")),
        )
        .into_body();
    let got = next(&mut resumed).await.unwrap();
    assert!(
        got.starts_with(&format!(
            "id: {}:41\nevent: queues\ndata: [41]",
            board.hub().id()
        )),
        "{got}"
    );
}

fn node(id: &str) -> NodeState {
    let mut n = NodeState::new(
        id.into(),
        Source::Attached,
        format!("http://127.0.0.1:{}", 20_000 + id.len()),
    );
    n.online = true;
    n.offline_reason = None;
    n.engine_reachable = true;
    n.memory_total_bytes = 64 << 30;
    n.memory_available_bytes = 48 << 30;
    n.parallel_slots = 2;
    n.loaded.push(LoadedModel {
        name: "m:1b".into(),
        size_bytes: 1 << 30,
        ..Default::default()
    });
    n
}

#[tokio::test]
async fn the_trail_publishes_the_pick_then_how_the_request_ended() {
    let (board, fleet) = board(64);
    fleet.update(|v| {
        v.insert(node("a"));
        v.insert(node("bb"));
    });
    let tracer = board.tracer(false, 500.0);
    let req = Arc::new(crate::dialect::model_only(
        crate::request::Endpoint::OllamaChat,
        "m:1b".into(),
        &http::HeaderMap::new(),
    ));
    let trail = tracer.start(&req);
    let mut routed = Routed::new(req.clone());
    routed.view = Some(fleet.snapshot());
    let pick = crate::scoring::pick(&routed, &Live::default(), &ScoringConfig::default()).unwrap();
    trail.attempt(&pick, "m:1b");
    trail.outcome(
        &crate::history::Outcome {
            ttft_ms: Some(12.0),
            output_tokens: Some(7),
            load_ms: Some(900.0),
            ok: true,
            ..Default::default()
        },
        false,
    );
    drop(trail);
    let hub::Since::Events(ev) = board.hub().since(1, 10) else {
        panic!()
    };
    assert_eq!(
        ev.iter().map(|e| e.kind).collect::<Vec<_>>(),
        ["decision", "outcome"]
    );
    let d: serde_json::Value = serde_json::from_slice(&ev[0].data()).unwrap();
    assert_eq!(d["id"], req.id.as_str());
    assert_eq!(d["winner"]["node"], pick.node.as_ref());
    assert!(d["runner_up"]["node"].is_string(), "{d}");
    assert!(
        d["winner"]["signals"]["model_temperature"]
            .as_f64()
            .unwrap()
            > 0.0,
        "{d}"
    );
    let o: serde_json::Value = serde_json::from_slice(&ev[1].data()).unwrap();
    assert_eq!(
        (o["status"].as_str(), o["ttft_ms"].as_f64()),
        (Some("ok"), Some(12.0))
    );
    // The 900 ms load counted as a cold load of that node:model.
    let cold = board.hub().cold_loads();
    assert_eq!(cold[0]["count"], 1);
    assert_eq!(cold[0]["node"], pick.node.as_ref());
}

#[tokio::test]
async fn nothing_to_pick_is_a_decision_with_the_eliminations() {
    let (board, fleet) = board(64);
    let mut n = node("a");
    n.draining = true;
    fleet.update(|v| v.insert(n));
    let tracer = board.tracer(true, 500.0);
    let req = Arc::new(crate::dialect::model_only(
        crate::request::Endpoint::OllamaChat,
        "m:1b".into(),
        &http::HeaderMap::new(),
    ));
    let trail = tracer.start(&req);
    let mut routed = Routed::new(req.clone());
    routed.view = Some(fleet.snapshot());
    let err =
        crate::scoring::pick(&routed, &Live::default(), &ScoringConfig::default()).unwrap_err();
    trail.failed(&err);
    drop(trail);
    let hub::Since::Events(ev) = board.hub().since(1, 10) else {
        panic!()
    };
    let d: serde_json::Value = serde_json::from_slice(&ev[0].data()).unwrap();
    assert_eq!(d["winner"], serde_json::Value::Null);
    assert_eq!(d["eliminated"][0]["node"], "a");
    assert_eq!(d["eliminated"][0]["why"], "draining");
    let o: serde_json::Value = serde_json::from_slice(&ev[1].data()).unwrap();
    assert_eq!(o["status"], "failed");
}
