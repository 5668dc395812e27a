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

fn cfg() -> herd_layer::config::RouterConfig {
    let mut c = router_config();
    c.health.recent = 10;
    c.health.min_requests = 5;
    c.health.cold_load_ms = 40.0;
    c.health.retry_rate = 0.05;
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
