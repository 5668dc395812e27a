//! Requests that shape the fleet: a model no node has is pulled where it fits
//! best, and a queue building on one node warms the runner-up.

use std::time::Duration;

use futures::future::join_all;
use herd_tests::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_no_node_has_is_pulled_where_it_fits_best_then_served() {
    let mut cfgs = Vec::new();
    for (name, mem) in [("big", 128), ("small", 16)] {
        let mut d = device(name, mem, vec![model("m:8b", 5.0)], &[]);
        d.catalog = vec![model("fresh:3b", 2.0)];
        d.pull_bytes_per_sec = 4_000_000_000;
        cfgs.push(d);
    }
    let fleet = start(router_config(), cfgs).await;
    let c = client();
    let url = fleet.url();

    // Several clients ask at once: one pull, every request served.
    let replies = join_all((0..3).map(|i| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            post(
                &c,
                &format!("{url}/api/chat"),
                chat("fresh:3b", &format!("q{i}"), false),
            )
            .await
        }
    }))
    .await;
    let mut nodes = Vec::new();
    for r in &replies {
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            r.json()["message"]["content"]
                .as_str()
                .unwrap()
                .starts_with("Hello from fresh:3b")
        );
        nodes.push(r.header("x-herd-node").unwrap());
    }
    let pulls = get(&c, &format!("{url}/fleet/pulls")).await.json();
    let pulls = pulls["pulls"].as_array().unwrap();
    assert_eq!(pulls.len(), 1, "one pull for all requests: {pulls:?}");
    assert_eq!(pulls[0]["status"], "success");
    assert_eq!(pulls[0]["total"], pulls[0]["completed"]);
    let pulled_to = pulls[0]["node"].as_str().unwrap().to_string();
    assert!(
        nodes.iter().all(|n| *n == pulled_to),
        "{nodes:?} vs {pulled_to}"
    );
    let other = if pulled_to == "big" { "small" } else { "big" };
    assert_eq!(fleet.device(other).stats().served_total, 0);

    // A model in no registry: the pull fails and the client hears why, in its format.
    let r = post(
        &c,
        &format!("{url}/v1/chat/completions"),
        json!({"model": "imaginary:7b", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("auto-pull failed") && msg.contains("file does not exist"),
        "{msg}"
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_pull_can_be_turned_off() {
    let mut d = device("a", 64, vec![model("m:8b", 5.0)], &[]);
    d.catalog = vec![model("fresh:3b", 2.0)];
    let mut cfg = router_config();
    cfg.routing.autopull.enabled = false;
    let fleet = start(cfg, vec![d]).await;
    let r = post(
        &client(),
        &format!("{}/api/chat", fleet.url()),
        chat("fresh:3b", "hi", false),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(!r.json()["error"].as_str().unwrap().contains("auto-pull"));
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_building_queue_warms_the_runner_up() {
    // "fast" has the model loaded with one slot; "spare" has it on disk only.
    let mut fast = device("fast", 192, vec![model("m:32b", 20.0)], &["m:32b"]);
    fast.num_parallel = 1;
    fast.speed = 20.0;
    let mut spare = device("spare", 64, vec![model("m:32b", 20.0)], &[]);
    spare.load_ms_per_gb = 10;
    let mut cfg = router_config();
    cfg.routing.prewarm.interval = Duration::from_millis(100);
    cfg.routing.prewarm.queue_threshold = 2;
    let fleet = start(cfg, vec![fast, spare]).await;
    let c = client();
    let url = fleet.url();
    assert!(
        fleet
            .router
            .fleet
            .snapshot()
            .node("spare")
            .unwrap()
            .loaded
            .is_empty()
    );

    let burst = tokio::spawn({
        let (c, url) = (c.clone(), url.clone());
        async move {
            join_all((0..4).map(|i| {
                let (c, url) = (c.clone(), url.clone());
                async move {
                    let mut body = chat("m:32b", &format!("q{i}"), false);
                    body["options"] = json!({"num_predict": 20});
                    post(&c, &format!("{url}/api/chat"), body).await
                }
            }))
            .await
        }
    });
    fleet
        .wait_for("the runner-up has the model loaded", |v| {
            v.node("spare")
                .is_some_and(|n| n.loaded_model("m:32b").is_some())
        })
        .await;
    let status = get(&c, &format!("{url}/fleet/status")).await.json();
    let warms = status["prewarms"].as_array().unwrap();
    let w = warms
        .iter()
        .find(|w| w["node"] == "spare")
        .unwrap_or_else(|| panic!("no warm recorded: {status:#}"));
    assert_eq!(w["busy_node"], "fast");
    assert_eq!(w["model"], "m:32b");
    assert_eq!(w["via"], "herd.v1");
    for r in burst.await.unwrap() {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    fleet.shutdown().await;
}
