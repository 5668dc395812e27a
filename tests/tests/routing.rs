//! Where requests go: to the device that has the model loaded, to the device
//! where a cold model fits best, and never to a device that is thermally or
//! memory critical.

use futures::future::join_all;
use herd_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_loaded_on_one_device_goes_to_that_device() {
    let m = || vec![model("m:8b", 5.0)];
    let fleet = start(
        router_config(),
        vec![
            device("a", 64, m(), &[]),
            device("b", 64, m(), &["m:8b"]),
            device("c", 64, m(), &[]),
        ],
    )
    .await;
    let c = client();
    for i in 0..10 {
        let r = post(
            &c,
            &format!("{}/api/chat", fleet.url()),
            chat("m:8b", &format!("q{i}"), false),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-herd-node").as_deref(), Some("b"));
    }
    assert_eq!(fleet.device("b").stats().served_total, 10);
    assert_eq!(fleet.device("a").stats().served_total, 0);
    assert_eq!(fleet.device("c").stats().served_total, 0);
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_model_goes_where_it_fits_best() {
    let m = || vec![model("big:32b", 20.0), model("s:1b", 1.0)];
    let fleet = start(
        router_config(),
        vec![
            device("small", 24, m(), &["s:1b"]),
            device("mid", 64, m(), &["s:1b"]),
            device("large", 192, m(), &["s:1b"]),
        ],
    )
    .await;
    let c = client();
    let r = get(&c, &format!("{}/fleet/explain?model=big:32b", fleet.url())).await;
    let explain = r.json();
    assert_eq!(explain["winner"], "large", "{explain:#}");
    let small = explain["ranking"]["eliminated"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["node"] == "small")
        .expect("the 24 GiB device cannot hold a 20 GiB model");
    assert_eq!(small["reason"], "does_not_fit");

    let r = post(
        &c,
        &format!("{}/api/generate", fleet.url()),
        serde_json::json!({"model": "big:32b", "prompt": "hi", "stream": false}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-herd-node").as_deref(), Some("large"));
    assert_eq!(
        fleet.device("large").stats().per_model["big:32b"].cold_loads,
        1
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_devices_receive_nothing() {
    let m = || vec![model("m:8b", 5.0)];
    let fleet = start(
        router_config(),
        vec![
            device("hot", 64, m(), &["m:8b"]),
            device("squeezed", 64, m(), &["m:8b"]),
            device("fine", 16, m(), &["m:8b"]),
        ],
    )
    .await;
    fleet.device("hot").set_sensors(SensorsPatch {
        thermal: Some(Thermal::Critical),
        ..Default::default()
    });
    fleet.device("squeezed").set_sensors(SensorsPatch {
        memory_pressure: Some(Pressure::Critical),
        ..Default::default()
    });
    fleet
        .wait_for("critical sensors reported", |v| {
            v.node("hot")
                .is_some_and(|n| n.thermal == herd_layer::fleet::Thermal::Critical)
                && v.node("squeezed")
                    .is_some_and(|n| n.memory_pressure == herd_layer::fleet::Pressure::Critical)
        })
        .await;
    let c = client();
    let url = fleet.url();
    let replies = join_all((0..24).map(|i| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            post(
                &c,
                &format!("{url}/api/chat"),
                chat("m:8b", &format!("q{i}"), true),
            )
            .await
        }
    }))
    .await;
    for r in &replies {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-herd-node").as_deref(), Some("fine"));
        assert_eq!(r.ndjson().last().unwrap()["done"], true);
    }
    assert_eq!(fleet.device("hot").stats().served_total, 0);
    assert_eq!(fleet.device("squeezed").stats().served_total, 0);
    assert_eq!(fleet.device("fine").stats().served_total, 24);

    // When the cause goes, the device is used again.
    fleet.device("hot").set_sensors(SensorsPatch {
        thermal: Some(Thermal::Nominal),
        ..Default::default()
    });
    fleet
        .wait_for("thermal back to nominal", |v| {
            v.node("hot")
                .is_some_and(|n| n.thermal == herd_layer::fleet::Thermal::Nominal)
        })
        .await;
    let r = get(&c, &format!("{url}/fleet/explain?model=m:8b")).await;
    let cands: Vec<String> = r.json()["ranking"]["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["node"].as_str().unwrap().to_string())
        .collect();
    assert!(cands.contains(&"hot".to_string()), "{cands:?}");
    assert!(!cands.contains(&"squeezed".to_string()), "{cands:?}");
    fleet.shutdown().await;
}
