//! What herd exports: OTLP spans and metrics to a real receiver (Python,
//! opentelemetry-proto + grpcio), with the client's trace continued; and
//! Prometheus text that `promtool check metrics` accepts.

use std::time::Duration;

use herd_tests::otlp::receiver;
use herd_tests::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_reach_a_real_otlp_receiver_with_the_clients_trace() {
    let rx = receiver();
    let mut cfg = router_config();
    cfg.app.telemetry.otlp_endpoint = Some(format!("http://127.0.0.1:{}", rx.port));
    cfg.app.telemetry.export_interval = Duration::from_millis(300);
    let m = || vec![model("m:8b", 5.0)];
    let fleet = start(
        cfg,
        vec![device("a", 64, m(), &["m:8b"]), device("b", 64, m(), &[])],
    )
    .await;
    let c = client();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let req = http::Request::post(format!("{}/api/chat", fleet.url()))
        .header("traceparent", format!("00-{trace_id}-{parent}-01"))
        .header("x-herd-tags", "otel-test")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            serde_json::to_vec(&chat("m:8b", "hello", false)).unwrap(),
        )))
        .unwrap();
    let rsp = c.request(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    let node = rsp.headers()["x-herd-node"].to_str().unwrap().to_string();
    let _ = http_body_util::BodyExt::collect(rsp.into_body()).await;

    let mut spans: Vec<Value> = Vec::new();
    let mut metrics = std::collections::HashSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let want = [
        "gen_ai.server.request.duration",
        "gen_ai.client.token.usage",
        "herd.requests",
    ];
    while std::time::Instant::now() < deadline {
        if let Ok(v) = rx.lines.recv_timeout(Duration::from_millis(200)) {
            match v["type"].as_str() {
                Some("span") => spans.push(v),
                _ => {
                    metrics.insert(v["name"].as_str().unwrap_or("").to_string());
                }
            }
        }
        let have_spans = spans.iter().any(|s| s["name"] == "chat m:8b")
            && spans.iter().any(|s| s["name"] == "herd.upstream");
        if have_spans && want.iter().all(|w| metrics.contains(*w)) {
            break;
        }
    }
    let root = spans
        .iter()
        .find(|s| s["name"] == "chat m:8b")
        .unwrap_or_else(|| panic!("no request span among {spans:#?}"));
    let a = &root["attributes"];
    assert_eq!(root["service"], "herd");
    assert_eq!(
        root["trace_id"], trace_id,
        "the client's trace is continued"
    );
    assert_eq!(
        root["parent_span_id"], parent,
        "the client's span is the parent"
    );
    assert_eq!(a["gen_ai.operation.name"], "chat");
    assert_eq!(a["gen_ai.request.model"], "m:8b");
    assert_eq!(a["gen_ai.response.model"], "m:8b");
    assert!(
        a["gen_ai.usage.output_tokens"].as_i64().unwrap() > 0,
        "{a:#}"
    );
    assert!(a["gen_ai.usage.input_tokens"].as_i64().is_some(), "{a:#}");
    assert_eq!(a["herd.node"], node.as_str());
    assert_eq!(a["server.address"], "127.0.0.1");
    let port = fleet.device(&node).addr().port() as i64;
    assert_eq!(a["server.port"], port, "server.port is the chosen node's");
    let up = spans.iter().find(|s| s["name"] == "herd.upstream").unwrap();
    assert_eq!(up["parent_span_id"], root["span_id"]);
    assert_eq!(up["attributes"]["herd.node"], node.as_str());
    let q = spans
        .iter()
        .find(|s| s["name"] == "herd.queue")
        .expect("a queueing span");
    assert_eq!(q["parent_span_id"], root["span_id"]);
    // The node received the trace context with herd's upstream span as parent.
    let seen = fleet
        .device(&node)
        .stats()
        .last_traceparent
        .expect("the device received a traceparent");
    let parts: Vec<&str> = seen.split('-').collect();
    assert_eq!(parts.len(), 4, "{seen}");
    assert_eq!(parts[1], trace_id, "same trace at the node: {seen}");
    assert_eq!(
        parts[2],
        up["span_id"].as_str().unwrap(),
        "herd's attempt span is the node's parent: {seen}"
    );
    for w in want {
        assert!(metrics.contains(w), "metric {w} missing from {metrics:?}");
    }
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool() {
    let m = || vec![model("m:8b", 5.0)];
    let fleet = start(router_config(), vec![device("a", 64, m(), &["m:8b"])]).await;
    let c = client();
    for i in 0..3 {
        let r = post(
            &c,
            &format!("{}/api/chat", fleet.url()),
            chat("m:8b", &format!("q{i}"), i % 2 == 0),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let r = post(
        &c,
        &format!("{}/api/chat", fleet.url()),
        chat("absent:1b", "x", false),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    let text = get(&c, &format!("{}/metrics", fleet.url())).await.text();
    for series in [
        "herd_requests_total{",
        "gen_ai_server_request_duration_seconds_bucket{",
        "gen_ai_server_time_to_first_token_seconds_count{",
        "gen_ai_client_token_usage_bucket{",
        "herd_routing_overhead_seconds_count",
        "herd_node_up{node=\"a\"} 1",
        "herd_health_score",
    ] {
        assert!(text.contains(series), "{series} missing from:\n{text}");
    }
    promtool_check_metrics(&text);
    fleet.shutdown().await;
}
