//! The Gateway API Inference Extension conformance cases, mirrored without
//! Kubernetes: Envoy → herd-epp → simulated devices on loopback.
//!
//! - routing follows the picker when a subset hint pins 1, 2 or 3 endpoints
//!   (100 requests, 10 at a time, only those endpoints serve), with `ip:port`
//!   and bare `ip` entries (the data-parallel case);
//! - the served endpoint is the pick;
//! - picker down: failure_mode_allow true still serves, false gives a 5xx;
//! - a bad body gives 400, no eligible endpoint 503, in OpenAI's error shape.

use std::sync::Arc;

use futures::StreamExt;
use herd_tests::envoy::*;
use herd_tests::*;

async fn pinned(c: &Client, url: &str, subset: Option<&str>, body: &[u8]) -> Reply {
    let hint: Vec<(&str, &str)> = subset
        .map(|s| ("x-gateway-destination-endpoint-subset", s))
        .into_iter()
        .collect();
    post_with(c, url, &hint, body.to_vec()).await
}

fn body(i: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "model": "conformance-fake-model",
        "messages": [{"role": "user", "content": format!("request {i}")}],
    }))
    .unwrap()
}

fn devices() -> Vec<herd_node::DeviceConfig> {
    let m = || vec![model("conformance-fake-model", 1.0)];
    vec![
        device("pod0", 64, m(), &["conformance-fake-model"]),
        device("pod1", 64, m(), &["conformance-fake-model"]),
        device("pod2", 64, m(), &["conformance-fake-model"]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epp_routing_follows_the_subset_hint_for_one_two_three_endpoints() {
    let fleet = start_epp(epp_config(), devices()).await;
    let envoy = Envoy::start(&EnvoyOpts::new(fleet.epp.grpc_addr, BodyMode::FullDuplex)).await;
    let url = format!("{}/v1/chat/completions", envoy.url());
    let c = client();
    let ep = |n: &str| fleet.device(n).addr().to_string();
    // Pin to each pod in turn: 200 from that pod (GatewayDestinationEndpointServed).
    for pod in ["pod0", "pod1", "pod2"] {
        let r = pinned(&c, &url, Some(&ep(pod)), &body(0)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-served-by"), Some(ep(pod)));
        assert_eq!(r.header("x-herd-epp-endpoint"), Some(ep(pod)));
    }
    let cases: Vec<(String, Vec<&str>)> = vec![
        (ep("pod2"), vec!["pod2"]),
        (
            format!("{},{}", ep("pod0"), ep("pod1")),
            vec!["pod0", "pod1"],
        ),
        (
            format!("{}, {}, {}", ep("pod0"), ep("pod1"), ep("pod2")),
            vec!["pod0", "pod1", "pod2"],
        ),
        // A bare IP admits every port on it.
        ("127.0.0.1".to_string(), vec!["pod0", "pod1", "pod2"]),
    ];
    for (hint, allowed) in cases {
        for d in &fleet.devices {
            d.reset_stats();
        }
        let allowed_eps: Vec<String> = allowed.iter().map(|p| ep(p)).collect();
        let c = Arc::new(client());
        let replies: Vec<Reply> = futures::stream::iter(0..100)
            .map(|i| {
                let (c, url, hint) = (c.clone(), url.clone(), hint.clone());
                async move { pinned(&c, &url, Some(&hint), &body(i)).await }
            })
            .buffer_unordered(10)
            .collect()
            .await;
        for r in &replies {
            assert_eq!(r.status, 200, "{hint}: {}", r.text());
            let served = r.header("x-served-by").unwrap();
            assert!(allowed_eps.contains(&served), "{hint}: served by {served}");
            assert_eq!(r.header("x-herd-epp-endpoint").as_ref(), Some(&served));
        }
        let total: u64 = fleet.devices.iter().map(|d| d.stats().served_total).sum();
        assert_eq!(total, 100, "{hint}");
        for d in &fleet.devices {
            if !allowed.contains(&d.name()) {
                assert_eq!(d.stats().served_total, 0, "{hint}: {} served", d.name());
            }
        }
        // With several allowed endpoints, load spreads over more than one.
        if allowed.len() > 1 {
            let used = fleet
                .devices
                .iter()
                .filter(|d| d.stats().served_total > 0)
                .count();
            assert!(used > 1, "{hint}: all 100 requests went to one endpoint");
        }
    }
    drop(envoy);
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epp_bad_body_is_400_and_no_eligible_endpoint_is_503() {
    let fleet = start_epp(epp_config(), devices()).await;
    for mode in [BodyMode::FullDuplex, BodyMode::Buffered] {
        let envoy = Envoy::start(&EnvoyOpts::new(fleet.epp.grpc_addr, mode)).await;
        let url = format!("{}/v1/chat/completions", envoy.url());
        let c = client();
        let error = |r: &Reply, status: u16, code: &str| {
            assert_eq!(r.status, status, "{mode:?}: {}", r.text());
            let v = r.json();
            assert_eq!(v["error"]["code"], code, "{v}");
            assert!(
                v["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
            assert!(v["error"]["type"].is_string());
        };
        let r = pinned(&c, &url, None, b"{not json").await;
        error(&r, 400, "invalid_request");
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("invalid JSON")
        );
        let r = pinned(
            &c,
            &url,
            None,
            br#"{"messages":[{"role":"user","content":"x"}]}"#,
        )
        .await;
        error(&r, 400, "model_required");
        // Subset names an endpoint herd does not know.
        let r = pinned(&c, &url, Some("127.0.0.1:1"), &body(1)).await;
        error(&r, 503, "no_eligible_endpoint");
        assert_eq!(
            r.header("x-llm-d-request-dropped-reason").as_deref(),
            Some("rejected-no-endpoints")
        );
        // A model no endpoint has.
        let r = pinned(
            &c,
            &url,
            None,
            br#"{"model":"nowhere:1b","messages":[{"role":"user","content":"x"}]}"#,
        )
        .await;
        error(&r, 503, "model_not_found");
        let total: u64 = fleet.devices.iter().map(|d| d.stats().served_total).sum();
        assert_eq!(
            total, 0,
            "{mode:?}: refused requests must not reach a device"
        );
        drop(envoy);
    }
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epp_picker_down_fails_open_or_closed_as_configured() {
    let fleet = start_epp(epp_config(), devices()).await;
    let pool = fleet.addrs();
    // Envoy fails open in FULL_DUPLEX_STREAMED only until the first body
    // chunk went to the picker (envoyproxy/envoy#41276), which it does at
    // once; the conformance FailOpen case is therefore run in BUFFERED mode.
    let mut open = EnvoyOpts::new(fleet.epp.grpc_addr, BodyMode::Buffered);
    open.failure_mode_allow = true;
    open.pool = Some(pool.clone());
    open.timeout = std::time::Duration::from_secs(2);
    let mut closed = EnvoyOpts::new(fleet.epp.grpc_addr, BodyMode::FullDuplex);
    closed.timeout = std::time::Duration::from_secs(2);
    let (open, closed) = (Envoy::start(&open).await, Envoy::start(&closed).await);
    let c = client();
    let pod2 = fleet.device("pod2").addr().to_string();
    // Picker up: both follow the pick.
    for e in [&open, &closed] {
        let r = pinned(
            &c,
            &format!("{}/v1/chat/completions", e.url()),
            Some(&pod2),
            &body(0),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-served-by"), Some(pod2.clone()));
    }
    let devices = fleet.devices.clone();
    fleet.epp.shutdown().await;
    // Picker down: fail open serves from the pool, fail closed is a 5xx.
    for i in 0..5 {
        let r = pinned(
            &c,
            &format!("{}/v1/chat/completions", open.url()),
            Some(&pod2),
            &body(i),
        )
        .await;
        assert_eq!(r.status, 200, "fail open: {:?} {}", r.headers, r.text());
        let served = r.header("x-served-by").unwrap();
        assert!(pool.iter().any(|a| a.to_string() == served), "{served}");
        assert!(r.header("x-herd-epp-endpoint").is_none());
        let r = pinned(
            &c,
            &format!("{}/v1/chat/completions", closed.url()),
            Some(&pod2),
            &body(i),
        )
        .await;
        assert!(
            (500..600).contains(&r.status),
            "fail closed: {} {}",
            r.status,
            r.text()
        );
    }
    drop((open, closed));
    for d in devices {
        d.shutdown().await;
    }
}
