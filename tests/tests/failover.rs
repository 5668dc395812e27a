//! Devices fail; clients should not notice more than they must.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::join_all;
use herd_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_killed_mid_run_costs_no_request() {
    let dev = |name: &str| {
        let mut d = device(name, 64, vec![model("m:8b", 5.0)], &["m:8b"]);
        d.speed = 400.0;
        d
    };
    let fleet = start(router_config(), vec![dev("a"), dev("b"), dev("c")]).await;
    let c = client();
    let url = fleet.url();
    let done = Arc::new(AtomicUsize::new(0));
    let victim = fleet.device("b").clone();
    const N: usize = 200;
    let work = join_all((0..8).map(|w| {
        let (c, url, done) = (c.clone(), url.clone(), done.clone());
        tokio::spawn(async move {
            let mut out = Vec::new();
            for i in (w..N).step_by(8) {
                let mut body = chat("m:8b", &format!("q{i}"), i % 2 == 0);
                body["options"] = serde_json::json!({"num_predict": 12});
                let r = post(&c, &format!("{url}/api/chat"), body).await;
                done.fetch_add(1, Ordering::SeqCst);
                out.push((i, r));
            }
            out
        })
    }));
    let killer = {
        let done = done.clone();
        tokio::spawn(async move {
            while done.load(Ordering::SeqCst) < N / 4 {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            victim.kill();
        })
    };
    let results: Vec<_> = work.await.into_iter().flat_map(|r| r.unwrap()).collect();
    killer.await.unwrap();
    let mut cut = 0;
    for (i, r) in &results {
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        let streamed = i % 2 == 0;
        if streamed {
            let lines = r.ndjson();
            let last = lines.last().unwrap();
            if last.get("error").is_some() {
                // Only a stream already running on the killed device may be cut.
                assert_eq!(
                    r.header("x-herd-node").as_deref(),
                    Some("b"),
                    "{i}: {}",
                    r.text()
                );
                cut += 1;
            } else {
                assert_eq!(last["done"], true, "{i}: {}", r.text());
            }
        } else {
            assert_eq!(r.json()["done"], true, "{i}: {}", r.text());
        }
    }
    assert!(
        cut <= 8,
        "at most the streams in flight on the device are cut ({cut})"
    );
    fleet
        .wait_for("killed device offline", |v| {
            v.node("b").is_some_and(|n| !n.online)
        })
        .await;
    let r = post(&c, &format!("{url}/api/chat"), chat("m:8b", "after", false)).await;
    assert_eq!(r.status, 200);
    assert_ne!(r.header("x-herd-node").as_deref(), Some("b"));
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_midway_ends_with_a_well_formed_error_in_both_formats() {
    let mut d = device("flaky", 64, vec![model("m:8b", 5.0)], &["m:8b"]);
    d.faults.die_mid_stream_after = 4;
    let fleet = start(router_config(), vec![d]).await;
    let c = client();
    let url = fleet.url();

    let mut body = chat("m:8b", "tell me a long story", true);
    body["options"] = serde_json::json!({"num_predict": 40});
    let r = post(&c, &format!("{url}/api/chat"), body).await;
    assert_eq!(r.status, 200);
    let lines = r.ndjson(); // every line parses as JSON: no torn line
    let last = lines.last().unwrap();
    assert!(
        last["error"].as_str().unwrap().contains("flaky"),
        "{}",
        r.text()
    );
    assert!(
        lines
            .iter()
            .all(|l| l.get("done") != Some(&serde_json::Value::Bool(true)))
    );
    assert!(
        lines.len() >= 2,
        "some tokens arrived before the cut: {}",
        r.text()
    );

    let r = post(
        &c,
        &format!("{url}/v1/chat/completions"),
        serde_json::json!({"model": "m:8b", "stream": true, "max_tokens": 40, "messages": [{"role": "user", "content": "long story"}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    let events: Vec<serde_json::Value> = r
        .text()
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("bad event {d:?}: {e}")))
        .collect();
    let last = events.last().unwrap();
    assert!(
        last["error"]["message"].as_str().unwrap().contains("flaky"),
        "{}",
        r.text()
    );
    assert!(
        !r.text().contains("[DONE]"),
        "an errored stream does not claim completion"
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_before_the_first_byte_are_retried_elsewhere() {
    let m = || vec![model("m:8b", 5.0)];
    let mut broken = device("broken", 192, m(), &["m:8b"]);
    broken.faults.error_500 = true;
    let mut refusing = device("refusing", 192, m(), &["m:8b"]);
    refusing.faults.refuse = true;
    let fleet = start(
        router_config(),
        vec![broken, refusing, device("ok", 16, m(), &["m:8b"])],
    )
    .await;
    let c = client();
    for stream in [false, true] {
        for _ in 0..5 {
            let r = post(
                &c,
                &format!("{}/api/chat", fleet.url()),
                chat("m:8b", "hi", stream),
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.header("x-herd-node").as_deref(), Some("ok"));
        }
    }
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_keeps_failing_stops_getting_first_attempts() {
    let m = || vec![model("m:8b", 5.0)];
    // "favourite" wins on role affinity (a small model, a smaller machine)
    // and, after a warm-up, on learned speed too; then it starts failing.
    let fleet = start(
        router_config(),
        vec![
            device("favourite", 64, m(), &["m:8b"]),
            device("spare", 192, m(), &["m:8b"]),
        ],
    )
    .await;
    let c = client();
    let url = fleet.url();
    for i in 0..3 {
        let r = post(
            &c,
            &format!("{url}/api/chat"),
            chat("m:8b", &format!("w{i}"), false),
        )
        .await;
        assert_eq!(r.header("x-herd-node").as_deref(), Some("favourite"));
    }
    fleet.device("favourite").set_faults(FaultsPatch {
        error_500: Some(true),
        ..Default::default()
    });
    let mut attempts = Vec::new();
    for i in 0..8 {
        let r = post(
            &c,
            &format!("{url}/api/chat"),
            chat("m:8b", &format!("q{i}"), false),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-herd-node").as_deref(), Some("spare"));
        attempts.push(r.header("x-herd-attempts").unwrap());
    }
    assert_eq!(
        attempts[0], "2",
        "the first request still tries the failing node"
    );
    assert!(
        attempts[2..].iter().all(|a| a == "1"),
        "after failures the failing node is no longer tried first: {attempts:?}"
    );
    fleet.shutdown().await;
}
