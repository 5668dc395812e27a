//! Learned latency changes routing, and the store keeps what was learned
//! across a router restart.

use std::time::Duration;

use futures::future::join_all;
use herd_tests::*;

async fn router(
    cfg: herd_layer::app::config::RouterConfig,
    n: usize,
) -> herd_layer::app::server::Running {
    let r = herd_layer::app::server::start(cfg).await.expect("router");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while r.fleet.snapshot().online().count() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "agentless nodes did not come online"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    r
}

fn slow_samples(r: &herd_layer::app::server::Running, slow: &str) -> u32 {
    r.live.history.perf(slow, "m:8b").map_or(0, |p| p.samples)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4x_slower_device_loses_traffic_and_stays_known_after_a_restart() {
    let m = || vec![model("m:8b", 5.0)];
    let mut slow = device("slow", 64, m(), &["m:8b"]);
    slow.speed /= 4.0;
    slow.ttft_base_ms *= 4;
    let devices = herd_node::start_fleet(
        herd_node::FleetConfig {
            devices: vec![
                device("f1", 64, m(), &["m:8b"]),
                slow,
                device("f2", 64, m(), &["m:8b"]),
            ],
            ..Default::default()
        },
        None,
    )
    .await
    .unwrap();
    let urls: Vec<String> = devices.iter().map(|d| d.url()).collect();
    let slow_id = herd_layer::discovery::agentless::node_id_for(&urls[1]).to_string();
    let mut cfg = router_config();
    cfg.routing.nodes = urls.clone();
    cfg.routing.poll_interval = Duration::from_millis(100);
    let data_dir = cfg.app.data_dir.clone();

    let r = router(cfg.clone(), 3).await;
    let c = client();
    let url = r.url();
    // Warm-up: concurrent traffic reaches every device, the slow one too.
    for round in 0..3 {
        let replies = join_all((0..12).map(|i| {
            let (c, url) = (c.clone(), url.clone());
            async move {
                post(
                    &c,
                    &format!("{url}/api/chat"),
                    chat("m:8b", &format!("warm {round} {i}"), true),
                )
                .await
            }
        }))
        .await;
        assert!(replies.iter().all(|r| r.status == 200));
    }
    assert!(
        slow_samples(&r, &slow_id) > 0,
        "the warm-up reached the slow device"
    );
    // One at a time, the fast devices win.
    for i in 0..12 {
        let rep = post(
            &c,
            &format!("{url}/api/chat"),
            chat("m:8b", &format!("q{i}"), false),
        )
        .await;
        assert_eq!(rep.status, 200);
        assert_ne!(
            rep.header("x-herd-node").as_deref(),
            Some(slow_id.as_str()),
            "request {i} went to the slow device"
        );
    }
    let learned = r.live.history.perf(&slow_id, "m:8b").unwrap();
    r.shutdown().await;

    // A new router on the same data dir knows the slow device at once.
    let mut cfg2 = cfg.clone();
    cfg2.app.data_dir = data_dir;
    let r = router(cfg2, 3).await;
    let restored = r
        .live
        .history
        .perf(&slow_id, "m:8b")
        .expect("history loaded from the store");
    assert_eq!(restored, learned);
    let url = r.url();
    for i in 0..12 {
        let rep = post(
            &c,
            &format!("{url}/api/chat"),
            chat("m:8b", &format!("after {i}"), false),
        )
        .await;
        assert_eq!(rep.status, 200);
        assert_ne!(
            rep.header("x-herd-node").as_deref(),
            Some(slow_id.as_str()),
            "after restart, request {i} went to the slow device"
        );
    }
    // The traces of both runs are in the store, queryable by tag-free filters.
    let t = get(&c, &format!("{url}/fleet/traces?limit=1000"))
        .await
        .json();
    assert!(
        t["traces"].as_array().unwrap().len() >= 36 + 12,
        "{}",
        t["traces"].as_array().unwrap().len()
    );
    let usage = get(&c, &format!("{url}/fleet/analytics/usage?by=node"))
        .await
        .json();
    assert_eq!(usage["groups"].as_array().unwrap().len(), 3, "{usage:#}");
    r.shutdown().await;
    for d in devices {
        d.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_are_stored_and_queryable_and_benchmarks_feed_scoring() {
    let m = || vec![model("m:8b", 5.0)];
    let fleet = start(
        router_config(),
        vec![
            device("a", 64, m(), &["m:8b"]),
            device("b", 64, m(), &["m:8b"]),
        ],
    )
    .await;
    let c = client();
    let url = fleet.url();
    let mut body = chat("m:8b", "hi", false);
    body["metadata"] = serde_json::json!({"tags": ["team-x"]});
    body["user"] = "ann".into();
    assert_eq!(post(&c, &format!("{url}/api/chat"), body).await.status, 200);
    assert_eq!(
        post(
            &c,
            &format!("{url}/api/chat"),
            chat("m:8b", "untagged", false)
        )
        .await
        .status,
        200
    );
    fleet.router.telemetry.flush().await;
    let t = get(&c, &format!("{url}/fleet/traces?tag=team-x"))
        .await
        .json();
    let t = t["traces"].as_array().unwrap();
    assert_eq!(t.len(), 1, "{t:#?}");
    assert_eq!(t[0]["tags"], serde_json::json!(["team-x", "user:ann"]));
    assert_eq!(t[0]["status"], "completed");
    assert!(t[0]["winner"]["signals"].is_object(), "{:#}", t[0]);
    assert!(t[0]["runner_up"]["node"].is_string(), "{:#}", t[0]);
    let by_tag = get(&c, &format!("{url}/fleet/analytics/usage?by=tag"))
        .await
        .json();
    assert_eq!(by_tag["groups"][0]["key"], "team-x");

    let b = post(&c, &format!("{url}/fleet/benchmark"), serde_json::json!({}))
        .await
        .json();
    let list = b["benchmarks"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{b:#}");
    assert!(
        list.iter()
            .all(|x| x["tokens_per_s_single"].as_f64().unwrap() > 0.0),
        "{b:#}"
    );
    let stored = get(&c, &format!("{url}/fleet/benchmark")).await.json();
    assert_eq!(stored["benchmarks"].as_array().unwrap().len(), 2);
    let ctx = get(&c, &format!("{url}/fleet/context")).await.json();
    assert_eq!(ctx["models"][0]["recommended_num_ctx"], 2048, "{ctx:#}");
    fleet.shutdown().await;
}
