//! The rest of the API surface: fleet-wide model lists, show, pull, version,
//! agentless nodes, fallback models, and commands to attached nodes.

use herd_tests::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_merged_across_the_fleet() {
    let fleet = start(
        router_config(),
        vec![
            device(
                "a",
                64,
                vec![model("m:8b", 5.0), model("only-a:1b", 1.0)],
                &["m:8b"],
            ),
            device("b", 32, vec![model("m:8b", 5.0)], &[]),
        ],
    )
    .await;
    let c = client();
    let url = fleet.url();

    let tags = get(&c, &format!("{url}/api/tags")).await.json();
    let models = tags["models"].as_array().unwrap();
    let m = models
        .iter()
        .find(|m| m["name"] == "m:8b")
        .expect("m:8b listed once");
    assert_eq!(m["nodes"], json!(["a", "b"]));
    assert_eq!(models.iter().filter(|m| m["name"] == "m:8b").count(), 1);
    assert!(models.iter().any(|m| m["name"] == "only-a:1b"));

    let ps = get(&c, &format!("{url}/api/ps")).await.json();
    let loaded: Vec<(String, String)> = ps["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().into(),
                m["node"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(loaded, vec![("m:8b".to_string(), "a".to_string())]);

    let v = get(&c, &format!("{url}/api/version")).await.json();
    assert_eq!(v["version"], "0.12.6");

    let ids: Vec<String> = get(&c, &format!("{url}/v1/models")).await.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec!["m:8b", "only-a:1b"]);

    let show = post(
        &c,
        &format!("{url}/api/show"),
        json!({"model": "only-a:1b"}),
    )
    .await;
    assert_eq!(show.status, 200, "{}", show.text());
    assert_eq!(show.header("x-herd-node").as_deref(), Some("a"));
    assert!(show.json()["details"].is_object());
    let missing = post(&c, &format!("{url}/api/show"), json!({"model": "zzz:1b"})).await;
    assert_eq!(missing.status, 404);

    let status = get(&c, &format!("{url}/fleet/status")).await.json();
    assert_eq!(status["nodes_online"], 2);
    assert_eq!(status["nodes"][0]["simulated"], true);
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_goes_to_the_chosen_or_roomiest_node_and_streams_progress() {
    let catalog = vec![model("new:3b", 2.0)];
    let mut small = device("small", 16, vec![model("m:8b", 5.0)], &[]);
    small.catalog = catalog.clone();
    small.pull_bytes_per_sec = 8_000_000_000;
    let mut big = device("big", 128, vec![model("m:8b", 5.0)], &[]);
    big.catalog = catalog;
    big.pull_bytes_per_sec = 8_000_000_000;
    let fleet = start(router_config(), vec![small, big]).await;
    let c = client();
    let url = fleet.url();

    let r = post(&c, &format!("{url}/api/pull"), json!({"model": "new:3b"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-herd-node").as_deref(), Some("big"));
    let lines = r.ndjson();
    assert_eq!(lines.first().unwrap()["status"], "pulling manifest");
    assert_eq!(lines.last().unwrap()["status"], "success");

    let r = post(
        &c,
        &format!("{url}/api/pull"),
        json!({"model": "new:3b", "node": "small", "stream": false}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-herd-node").as_deref(), Some("small"));
    assert_eq!(r.json()["status"], "success");

    fleet
        .wait_for("pulled models reported", |v| {
            ["small", "big"]
                .iter()
                .all(|n| v.node(n).is_some_and(|n| n.has_model("new:3b")))
        })
        .await;
    let r = post(
        &c,
        &format!("{url}/api/pull"),
        json!({"model": "new:3b", "node": "nowhere"}),
    )
    .await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().unwrap().contains("nowhere"));
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agentless_nodes_are_polled_and_routable() {
    // A device that does not attach: the router polls its Ollama API.
    let dev = herd_node::Device::start(
        device("plain", 64, vec![model("m:8b", 5.0)], &["m:8b"]),
        None,
    )
    .await
    .unwrap();
    let mut cfg = router_config();
    cfg.routing.nodes = vec![dev.url()];
    cfg.routing.poll_interval = std::time::Duration::from_millis(100);
    let fleet = start(cfg, vec![]).await;
    fleet
        .wait_for("agentless node online", |v| v.online().count() == 1)
        .await;
    let c = client();
    let r = post(
        &c,
        &format!("{}/api/chat", fleet.url()),
        chat("m:8b", "hi", false),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-herd-node"), Some(dev.addr().to_string()));
    dev.kill();
    fleet
        .wait_for("agentless node offline", |v| v.online().count() == 0)
        .await;
    let r = post(
        &c,
        &format!("{}/api/chat", fleet.url()),
        chat("m:8b", "hi", false),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    fleet.shutdown().await;
    dev.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_models_serve_when_the_primary_cannot() {
    let mut broken = device(
        "broken",
        64,
        vec![model("primary:8b", 5.0)],
        &["primary:8b"],
    );
    broken.faults.error_500 = true;
    let fleet = start(
        router_config(),
        vec![
            broken,
            device("other", 64, vec![model("backup:3b", 2.0)], &["backup:3b"]),
        ],
    )
    .await;
    let c = client();
    let url = fleet.url();
    // In the body (Ollama) …
    let mut body = chat("primary:8b", "hi", false);
    body["fallback_models"] = json!(["backup:3b"]);
    let r = post(&c, &format!("{url}/api/chat"), body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-herd-fallback").as_deref(), Some("backup:3b"));
    assert_eq!(r.json()["model"], "backup:3b");
    // … in a header (OpenAI), for a model no node has at all.
    let req = http::Request::post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-herd-fallback-models", "backup:3b")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            serde_json::to_vec(
                &json!({"model": "absent:70b", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .unwrap(),
        )))
        .unwrap();
    let rsp = c.request(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.headers()["x-herd-model"], "backup:3b");
    // Without a fallback, the failing primary ends in a 502 in the client's format.
    let r = post(
        &c,
        &format!("{url}/api/chat"),
        chat("primary:8b", "hi", false),
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        r.json()["error"].as_str().unwrap().contains("broken"),
        "{}",
        r.text()
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_takes_no_new_work() {
    let m = || vec![model("m:8b", 5.0)];
    let fleet = start(
        router_config(),
        vec![
            device("a", 192, m(), &["m:8b"]),
            device("b", 16, m(), &["m:8b"]),
        ],
    )
    .await;
    let c = client();
    let url = fleet.url();
    let r = post(
        &c,
        &format!("{url}/fleet/nodes/a/command"),
        json!({"type": "drain"}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    fleet
        .wait_for("a reports draining", |v| {
            v.node("a").is_some_and(|n| n.draining)
        })
        .await;
    for _ in 0..5 {
        let r = post(&c, &format!("{url}/api/chat"), chat("m:8b", "hi", false)).await;
        assert_eq!(r.header("x-herd-node").as_deref(), Some("b"));
    }
    let bad = post(
        &c,
        &format!("{url}/fleet/nodes/a/command"),
        json!({"type": "explode"}),
    )
    .await;
    assert_eq!(bad.status, 400);
    let gone = post(
        &c,
        &format!("{url}/fleet/nodes/zzz/command"),
        json!({"type": "drain"}),
    )
    .await;
    assert_eq!(gone.status, 404);
    fleet.shutdown().await;
}
