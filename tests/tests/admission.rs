//! With one parallel slot per device, herd never runs two requests at once on
//! a device; the rest wait their turn or are shed with 429/503 and a
//! Retry-After, and none is lost.

use std::time::Duration;

use futures::future::join_all;
use herd_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_slot_per_device_is_never_exceeded_and_nothing_is_lost() {
    let dev = |name: &str| {
        let mut d = device(name, 64, vec![model("m:8b", 5.0)], &["m:8b"]);
        d.num_parallel = 1;
        // No waiting room on the device: a second request arriving while the
        // slot is busy gets the device's own 503 and shows in rejected_busy.
        d.max_queue = 0;
        d.speed = 100.0; // 20 tokens ≈ 200 ms per request
        d
    };
    let mut cfg = router_config();
    cfg.routing.queue.max_waiting = 2;
    cfg.routing.queue.max_wait = Duration::from_secs(20);
    let fleet = start(cfg, vec![dev("a"), dev("b"), dev("c")]).await;
    let c = client();
    let url = fleet.url();
    const N: usize = 40;
    let replies = join_all((0..N).map(|i| {
        let (c, url) = (c.clone(), url.clone());
        tokio::spawn(async move {
            let mut body = chat("m:8b", &format!("question {i}"), true);
            body["options"] = serde_json::json!({"num_predict": 20});
            post(&c, &format!("{url}/api/chat"), body).await
        })
    }))
    .await;
    let (mut served, mut shed) = (0, 0);
    for r in replies {
        let r = r.unwrap();
        match r.status {
            200 => {
                let lines = r.ndjson();
                assert_eq!(
                    lines.last().unwrap()["done"],
                    true,
                    "incomplete stream: {}",
                    r.text()
                );
                served += 1;
            }
            429 | 503 => {
                let retry_after: u64 = r
                    .header("retry-after")
                    .expect("Retry-After")
                    .parse()
                    .unwrap();
                assert!(retry_after >= 1);
                assert!(r.json()["error"].is_string(), "{}", r.text());
                shed += 1;
            }
            other => panic!("unexpected status {other}: {}", r.text()),
        }
    }
    assert_eq!(served + shed, N, "every request answered");
    // 3 slots + 3×2 waiting places: the burst cannot all fit.
    assert!(shed > 0, "nothing was shed");
    assert!(served >= 9, "only {served} served");
    let mut total = 0;
    for d in &fleet.devices {
        let s = d.stats();
        assert!(
            s.max_active_seen <= 1,
            "{} ran {} at once",
            d.name(),
            s.max_active_seen
        );
        assert_eq!(
            s.rejected_busy,
            0,
            "{} was sent a request while its slot was busy",
            d.name()
        );
        total += s.served_total;
    }
    assert_eq!(
        total as usize, served,
        "devices served exactly the successes"
    );
    fleet.shutdown().await;
}
