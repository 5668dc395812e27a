//! Fleet health checks, each triggered by a scenario on simulated devices
//! and cleared when the cause goes away.

use std::time::Duration;

use herd_tests::*;
use serde_json::Value;

async fn checks(c: &Client, url: &str) -> Value {
    get(c, &format!("{url}/fleet/health")).await.json()
}

fn has(report: &Value, id: &str, subject: Option<&str>) -> bool {
    report["checks"].as_array().unwrap().iter().any(|c| {
        c["id"] == id
            && subject.is_none_or(|s| c["subject"] == s)
            && c["message"].is_string()
            && c["fix"].is_string()
            && c["severity"].is_string()
            && c["evidence"].is_object()
    })
}

/// Poll until the check is (or is not) reported.
async fn expect(c: &Client, url: &str, id: &str, subject: Option<&str>, present: bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = checks(c, url).await;
        if has(&r, id, subject) == present {
            if present {
                assert!(r["score"].as_u64().unwrap() < 100, "{r:#}");
            }
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} ({subject:?}) should be {}: {r:#}",
            if present { "reported" } else { "cleared" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn cfg() -> herd_layer::app::config::RouterConfig {
    let mut c = router_config();
    c.app.health.recent = 10;
    c.app.health.min_requests = 5;
    c.app.health.cold_load_ms = 40.0;
    c.app.health.retry_rate = 0.05;
    c
}

async fn good(c: &Client, url: &str, model: &str, n: usize) {
    stream(c, url, model, n, false).await
}

async fn stream(c: &Client, url: &str, model: &str, n: usize, stream: bool) {
    for i in 0..n {
        let r = post(
            c,
            &format!("{url}/api/chat"),
            chat(model, &format!("good {i}"), stream),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensor_and_state_checks_follow_the_devices() {
    let m = || vec![model("m:8b", 5.0)];
    let mut old = device("old", 64, m(), &["m:8b"]);
    old.ollama_version = "0.1.0".into();
    let fleet = start(
        cfg(),
        vec![
            device("a", 64, m(), &["m:8b"]),
            device("b", 64, m(), &["m:8b"]),
            old,
        ],
    )
    .await;
    let (c, url) = (client(), fleet.url());

    let r = checks(&c, &url).await;
    assert!(r["watched"].as_array().unwrap().len() >= 17);
    assert!(has(&r, "version_mismatch", Some("fleet")), "{r:#}");

    fleet.device("a").set_sensors(SensorsPatch {
        thermal: Some(Thermal::Serious),
        memory_pressure: Some(Pressure::Warn),
        ..Default::default()
    });
    expect(&c, &url, "thermal_throttling", Some("a"), true).await;
    expect(&c, &url, "memory_pressure", Some("a"), true).await;
    fleet.device("a").set_sensors(SensorsPatch {
        thermal: Some(Thermal::Nominal),
        memory_pressure: Some(Pressure::Normal),
        ..Default::default()
    });
    expect(&c, &url, "thermal_throttling", Some("a"), false).await;
    expect(&c, &url, "memory_pressure", Some("a"), false).await;

    let paused = post(
        &c,
        &format!("{url}/fleet/nodes/b/command"),
        serde_json::json!({"type": "mode", "mode": "paused"}),
    )
    .await;
    assert_eq!(paused.status, 202, "{}", paused.text());
    expect(&c, &url, "node_paused", Some("b"), true).await;
    post(
        &c,
        &format!("{url}/fleet/nodes/b/command"),
        serde_json::json!({"type": "mode", "mode": "full"}),
    )
    .await;
    expect(&c, &url, "node_paused", Some("b"), false).await;

    fleet.device("old").kill();
    expect(&c, &url, "node_offline", Some("old"), true).await;
    expect(&c, &url, "version_mismatch", None, false).await;
    fleet.device("old").revive();
    expect(&c, &url, "node_offline", Some("old"), false).await;
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_checks_follow_the_recent_requests() {
    let m = || vec![model("m:8b", 5.0), model("n:8b", 5.0), model("o:8b", 5.0)];
    let mut one = device("one", 64, m(), &["m:8b"]);
    one.max_loaded_models = 1;
    let fleet = start(
        cfg(),
        vec![
            one,
            device("flaky", 64, vec![model("m:8b", 5.0)], &["m:8b"]),
        ],
    )
    .await;
    let (c, url) = (client(), fleet.url());

    // Errors and retries: the flaky device answers 500, herd retries elsewhere.
    fleet.device("flaky").set_faults(FaultsPatch {
        error_500: Some(true),
        ..Default::default()
    });
    fleet.device("one").set_faults(FaultsPatch {
        slowdown: Some(1.0),
        ..Default::default()
    });
    for i in 0..10 {
        let mut b = chat("m:8b", &format!("e{i}"), false);
        b["options"] = serde_json::json!({"num_ctx": 4096});
        let r = post(&c, &format!("{url}/api/chat"), b).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    expect(&c, &url, "high_error_rate", Some("flaky"), true).await;
    expect(&c, &url, "high_retry_rate", None, true).await;
    expect(&c, &url, "context_protection_active", None, true).await;
    fleet.device("flaky").set_faults(FaultsPatch {
        clear: true,
        ..Default::default()
    });
    good(&c, &url, "m:8b", 10).await;
    expect(&c, &url, "high_error_rate", None, false).await;
    expect(&c, &url, "high_retry_rate", None, false).await;
    expect(&c, &url, "context_protection_active", None, false).await;
    // Ten small requests against an 8192-token context.
    expect(&c, &url, "context_waste", None, true).await;

    // A model no node has.
    for _ in 0..3 {
        assert_eq!(
            post(
                &c,
                &format!("{url}/api/chat"),
                chat("absent:1b", "x", false)
            )
            .await
            .status,
            404
        );
    }
    expect(&c, &url, "model_not_found", None, true).await;
    // A fallback.
    let mut b = chat("absent:1b", "x", false);
    b["fallback_models"] = serde_json::json!(["m:8b"]);
    assert_eq!(post(&c, &format!("{url}/api/chat"), b).await.status, 200);
    expect(&c, &url, "fallback_in_use", None, true).await;
    good(&c, &url, "m:8b", 10).await;
    expect(&c, &url, "model_not_found", None, false).await;
    expect(&c, &url, "fallback_in_use", None, false).await;

    // Thrashing: two models take turns on a device that holds one.
    for i in 0..6 {
        let model = if i % 2 == 0 { "n:8b" } else { "o:8b" };
        let r = post(
            &c,
            &format!("{url}/api/generate"),
            serde_json::json!({"model": model, "prompt": "x", "stream": false, "x": i}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    expect(&c, &url, "model_thrashing", Some("one"), true).await;
    good(&c, &url, "o:8b", 10).await;
    expect(&c, &url, "model_thrashing", None, false).await;

    // Streams cut short.
    fleet.device("one").set_faults(FaultsPatch {
        die_mid_stream_after: Some(2),
        ..Default::default()
    });
    fleet.device("flaky").set_faults(FaultsPatch {
        die_mid_stream_after: Some(2),
        ..Default::default()
    });
    for i in 0..3 {
        post(
            &c,
            &format!("{url}/api/chat"),
            chat("m:8b", &format!("a long answer please {i}"), true),
        )
        .await;
    }
    expect(&c, &url, "incomplete_streams", None, true).await;
    fleet.device("one").set_faults(FaultsPatch {
        clear: true,
        ..Default::default()
    });
    fleet.device("flaky").set_faults(FaultsPatch {
        clear: true,
        ..Default::default()
    });
    good(&c, &url, "m:8b", 10).await;
    expect(&c, &url, "incomplete_streams", None, false).await;

    // Time to first token far above the baseline a benchmark measured.
    let b = post(
        &c,
        &format!("{url}/fleet/benchmark"),
        serde_json::json!({"model": "m:8b"}),
    )
    .await;
    assert_eq!(b.status, 200);
    for d in ["one", "flaky"] {
        fleet.device(d).set_faults(FaultsPatch {
            slowdown: Some(20.0),
            ..Default::default()
        });
    }
    stream(&c, &url, "m:8b", 6, true).await;
    expect(&c, &url, "ttft_regression", None, true).await;
    for d in ["one", "flaky"] {
        fleet.device(d).set_faults(FaultsPatch {
            clear: true,
            ..Default::default()
        });
    }
    stream(&c, &url, "m:8b", 10, true).await;
    expect(&c, &url, "ttft_regression", None, false).await;
    fleet.shutdown().await;
}

/// The check `id` in a report (the first, when several subjects have it).
fn find<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {report:#}"))
}

/// Requests that must fail (with a 5xx).
async fn failing(c: &Client, url: &str, model: &str, n: usize) {
    for i in 0..n {
        let r = post(
            c,
            &format!("{url}/api/chat"),
            chat(model, &format!("bad {i}"), false),
        )
        .await;
        assert!(r.status >= 500, "{} {}", r.status, r.text());
    }
}

fn clear(d: &herd_node::DeviceHandle) {
    d.set_faults(FaultsPatch {
        clear: true,
        ..Default::default()
    });
}

/// A device that stops answering: its queue backs up in the router, more
/// requests are shed, an idle node with free memory is pointed at, and the
/// clients that give up count as disconnects. All clear once it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_device_backs_up_sheds_and_loses_clients() {
    let mut c = cfg();
    c.routing.queue.max_waiting = 3;
    let mut stuck = device("stuck", 64, vec![model("q:8b", 5.0)], &["q:8b"]);
    stuck.num_parallel = 1;
    let fleet = start(
        c,
        vec![
            stuck,
            device("idle", 64, vec![model("m:8b", 5.0)], &["m:8b"]),
        ],
    )
    .await;
    let (c, url) = (client(), fleet.url());
    good(&c, &url, "m:8b", 5).await;
    expect(&c, &url, "queue_backlog", None, false).await;
    expect(&c, &url, "memory_idle_while_queued", None, false).await;

    fleet.device("stuck").set_faults(FaultsPatch {
        hang: Some(true),
        ..Default::default()
    });
    // One request holds the only slot and hangs; three wait behind it.
    let waiting: Vec<_> = (0..4)
        .map(|i| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move {
                post(
                    &c,
                    &format!("{url}/api/chat"),
                    chat("q:8b", &format!("w{i}"), false),
                )
                .await
            })
        })
        .collect();
    expect(&c, &url, "queue_backlog", Some("stuck:q:8b"), true).await;
    expect(&c, &url, "memory_idle_while_queued", Some("idle"), true).await;
    let r = checks(&c, &url).await;
    let backlog = find(&r, "queue_backlog");
    assert_eq!(backlog["evidence"]["waiting"], 3, "{r:#}");

    // The queue is full: the next ones are shed at once.
    for i in 0..2 {
        let r = post(
            &c,
            &format!("{url}/api/chat"),
            chat("q:8b", &format!("s{i}"), false),
        )
        .await;
        assert_eq!(r.status, 429, "{}", r.text());
    }
    expect(&c, &url, "requests_shed", None, true).await;

    // The clients give up.
    for w in &waiting {
        w.abort();
    }
    for w in waiting {
        assert!(w.await.unwrap_err().is_cancelled());
    }
    expect(&c, &url, "client_disconnects", None, true).await;
    expect(&c, &url, "queue_backlog", None, false).await;
    expect(&c, &url, "memory_idle_while_queued", None, false).await;

    clear(fleet.device("stuck"));
    good(&c, &url, "q:8b", 5).await;
    good(&c, &url, "m:8b", 5).await;
    expect(&c, &url, "requests_shed", None, false).await;
    expect(&c, &url, "client_disconnects", None, false).await;
    fleet.shutdown().await;
}

/// A node whose engine hangs on a model (times out) or refuses connections
/// while its agent still reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_refused_connections_are_flagged() {
    let mut c = cfg();
    c.routing.response_timeout = Duration::from_millis(700);
    c.routing.unresponsive_pause = Duration::from_secs(1);
    let fleet = start(
        c,
        vec![
            device("slow", 64, vec![model("q:8b", 5.0)], &["q:8b"]),
            device("down", 64, vec![model("r:8b", 5.0)], &["r:8b"]),
            device("ok", 64, vec![model("m:8b", 5.0)], &["m:8b"]),
        ],
    )
    .await;
    let (c, url) = (client(), fleet.url());
    good(&c, &url, "m:8b", 3).await;

    fleet.device("slow").set_faults(FaultsPatch {
        hang: Some(true),
        ..Default::default()
    });
    // Silent past its first-byte deadline: the node is named and left out
    // of routing for the pause; a request for its model meanwhile is
    // refused at once, naming why, instead of hanging too.
    failing(&c, &url, "q:8b", 1).await;
    expect(&c, &url, "node_unresponsive", Some("slow"), true).await;
    let r = post(
        &c,
        &format!("{url}/api/chat"),
        chat("q:8b", "meanwhile", false),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("first-byte deadline"), "{}", r.text());
    // Tried again after the pause: still silent, and a second timeout on
    // the node is a load-timeout warning too.
    expect(&c, &url, "node_unresponsive", None, false).await;
    failing(&c, &url, "q:8b", 1).await;
    expect(&c, &url, "model_load_timeout", Some("slow"), true).await;
    clear(fleet.device("slow"));
    expect(&c, &url, "node_unresponsive", None, false).await;
    good(&c, &url, "q:8b", 10).await;
    expect(&c, &url, "model_load_timeout", None, false).await;

    fleet.device("down").set_faults(FaultsPatch {
        refuse: Some(true),
        ..Default::default()
    });
    failing(&c, &url, "r:8b", 3).await;
    // Its agent still reports (the node is online); herd's own attempts say otherwise.
    assert!(fleet.router.fleet.snapshot().node("down").unwrap().online);
    expect(&c, &url, "engine_unreachable", Some("down"), true).await;
    clear(fleet.device("down"));
    good(&c, &url, "r:8b", 1).await;
    expect(&c, &url, "engine_unreachable", None, false).await;
    fleet.shutdown().await;
}

/// An agentless Ollama that stops answering its polls goes stale, then
/// offline; it is fresh again once it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agentless_node_goes_stale() {
    let dev = herd_node::Device::start(
        device("lone", 64, vec![model("m:8b", 5.0)], &["m:8b"]),
        None,
    )
    .await
    .unwrap();
    let mut c = cfg();
    c.routing.nodes = vec![dev.url()];
    c.routing.poll_interval = Duration::from_millis(100);
    let fleet = start(c, vec![]).await;
    let id = herd_layer::discovery::agentless::node_id_for(&dev.url());
    fleet
        .wait_for("the agentless node is online", |v| {
            v.node(&id).is_some_and(|n| n.online)
        })
        .await;
    let (c, url) = (client(), fleet.url());
    expect(&c, &url, "node_stale", None, false).await;

    dev.set_faults(FaultsPatch {
        hang: Some(true),
        ..Default::default()
    });
    expect(&c, &url, "node_stale", Some(&id), true).await;
    clear(&dev);
    // The hung poll gives up after its own timeout; the next one answers.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = checks(&c, &url).await;
        if !has(&r, "node_stale", None) && !has(&r, "node_offline", None) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{r:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fleet.shutdown().await;
    dev.shutdown().await;
}

/// Pulling a large model onto a small disk leaves it nearly full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filling_the_disk_raises_disk_low() {
    let mut d = device("d", 64, vec![model("m:8b", 5.0)], &["m:8b"]);
    d.disk_total_bytes = 40 * herd_node::config::GIB;
    d.catalog = vec![model("big:70b", 28.0)];
    d.pull_bytes_per_sec = 1 << 40;
    let fleet = start(cfg(), vec![d]).await;
    let (c, url) = (client(), fleet.url());
    expect(&c, &url, "disk_low", None, false).await;

    let r = post(
        &c,
        &format!("{url}/fleet/nodes/d/command"),
        serde_json::json!({"type": "pull", "model": "big:70b"}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    expect(&c, &url, "disk_low", Some("d"), true).await;
    let r = checks(&c, &url).await;
    let low = find(&r, "disk_low");
    assert_eq!(
        low["evidence"]["available_bytes"],
        7 * herd_node::config::GIB,
        "{r:#}"
    );
    assert_eq!(low["evidence"]["total_bytes"], 40 * herd_node::config::GIB);
    fleet.shutdown().await;
}
