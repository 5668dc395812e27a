//! herd-epp behind a real Envoy: requests go to the device that has the
//! model loaded, and streamed responses arrive intact in every body mode
//! Envoy can be configured with.

use std::time::Duration;

use herd_tests::envoy::*;
use herd_tests::*;

fn quick(
    name: &str,
    models: Vec<herd_node::config::ModelSpec>,
    loaded: &[&str],
) -> herd_node::DeviceConfig {
    herd_node::DeviceConfig {
        ttft_ms_per_prompt_token: 0.0,
        ..device(name, 64, models, loaded)
    }
}

/// Served by the endpoint herd-epp picked (Envoy's `%UPSTREAM_HOST%`).
fn served_as_picked(r: &Reply) -> String {
    let served = r.header("x-served-by").expect("x-served-by");
    let picked = r
        .header("x-herd-epp-endpoint")
        .expect("x-herd-epp-endpoint");
    assert_eq!(
        served, picked,
        "Envoy served another endpoint than the pick"
    );
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epp_routes_by_model_to_the_device_that_has_it_loaded() {
    let m = || vec![model("m1:8b", 5.0), model("m2:8b", 5.0)];
    // TLS on the ext_proc port (the default, self-signed); nodes attach on a plaintext port.
    let mut cfg = epp_config();
    cfg.tls = herd_epp::TlsMode::SelfSigned;
    cfg.fleet_listen = Some("127.0.0.1:0".parse().unwrap());
    let fleet = start_epp(
        cfg,
        vec![
            quick("a", m(), &["m1:8b"]),
            quick("b", m(), &["m2:8b"]),
            quick("c", m(), &[]),
        ],
    )
    .await;
    assert!(fleet.epp.tls);
    let mut o = EnvoyOpts::new(fleet.epp.grpc_addr, BodyMode::FullDuplex);
    o.epp_tls = true;
    let envoy = Envoy::start(&o).await;
    let c = client();
    for i in 0..6 {
        let (m, want) = if i % 2 == 0 {
            ("m1:8b", "a")
        } else {
            ("m2:8b", "b")
        };
        // A client-supplied destination header must not steer the request.
        let r = post_with(
            &c,
            &format!("{}/api/chat", envoy.url()),
            &[(
                "x-gateway-destination-endpoint",
                &fleet.device("c").addr().to_string(),
            )],
            serde_json::to_vec(&chat(m, &format!("q{i}"), false)).unwrap(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let served = served_as_picked(&r);
        assert_eq!(served, fleet.device(want).addr().to_string());
        assert_eq!(r.json()["model"], m);
    }
    assert_eq!(fleet.device("a").stats().served_total, 3);
    assert_eq!(fleet.device("b").stats().served_total, 3);
    assert_eq!(fleet.device("c").stats().served_total, 0);
    drop(envoy);
    fleet.shutdown().await;
}

fn ndjson_content(r: &Reply) -> (String, usize, bool) {
    let lines = r.ndjson();
    let text: String = lines
        .iter()
        .filter_map(|l| l["message"]["content"].as_str())
        .collect();
    let done = lines.last().is_some_and(|l| l["done"] == true);
    (text, lines.len(), done)
}

fn sse_content(r: &Reply) -> (String, bool) {
    let text = r.text();
    let mut out = String::new();
    let mut done = false;
    for l in text.lines() {
        let Some(d) = l.strip_prefix("data: ") else {
            continue;
        };
        if d.trim() == "[DONE]" {
            done = true;
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(d).unwrap_or_else(|e| panic!("bad SSE {d:?}: {e}"));
        if let Some(s) = v["choices"][0]["delta"]["content"].as_str() {
            out.push_str(s);
        }
    }
    (out, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epp_streams_arrive_intact_in_every_body_mode() {
    let m = || vec![model("m:8b", 2.0)];
    let fleet = start_epp(
        epp_config(),
        vec![quick("a", m(), &["m:8b"]), quick("b", m(), &["m:8b"])],
    )
    .await;
    let c = client();
    // A prompt larger than Envoy's chunks and herd-epp's 62000-byte re-emission chunks.
    let big = "lorem ipsum dolor sit amet ".repeat(8_000);
    for mode in [
        BodyMode::None,
        BodyMode::Buffered,
        BodyMode::Streamed,
        BodyMode::FullDuplex,
    ] {
        let envoy = Envoy::start(&EnvoyOpts::new(fleet.epp.grpc_addr, mode)).await;
        let hdr: &[(&str, &str)] = if mode == BodyMode::None {
            &[("x-ai-eg-model", "m:8b")]
        } else {
            &[]
        };
        for prompt in ["tell me a story", big.as_str()] {
            // Ollama NDJSON stream.
            let body = serde_json::to_vec(&chat("m:8b", prompt, true)).unwrap();
            let r = post_with(&c, &format!("{}/api/chat", envoy.url()), hdr, body.clone()).await;
            assert_eq!(r.status, 200, "{mode:?}: {}", r.text());
            let served = served_as_picked(&r);
            let direct = post_with(&c, &format!("http://{served}/api/chat"), &[], body).await;
            let (got, want) = (ndjson_content(&r), ndjson_content(&direct));
            assert!(got.2, "{mode:?}: the stream must end with done:true");
            assert!(got.1 > 2, "{mode:?}: several chunks expected");
            assert_eq!(
                got, want,
                "{mode:?}: stream through Envoy differs from the device's"
            );

            // OpenAI SSE stream.
            let body = serde_json::to_vec(&serde_json::json!({
                "model": "m:8b", "stream": true,
                "messages": [{"role": "user", "content": prompt}],
            }))
            .unwrap();
            let r = post_with(
                &c,
                &format!("{}/v1/chat/completions", envoy.url()),
                hdr,
                body.clone(),
            )
            .await;
            assert_eq!(r.status, 200, "{mode:?}: {}", r.text());
            let served = served_as_picked(&r);
            let direct = post_with(
                &c,
                &format!("http://{served}/v1/chat/completions"),
                &[],
                body,
            )
            .await;
            let (got, want) = (sse_content(&r), sse_content(&direct));
            assert!(got.1, "{mode:?}: SSE must end with [DONE]");
            assert!(!got.0.is_empty());
            assert_eq!(
                got, want,
                "{mode:?}: SSE through Envoy differs from the device's"
            );
        }
        drop(envoy);
    }
    // Every pick was learned from: TTFT and usage went into the shared history.
    let learned = fleet.epp.live.history.summaries();
    assert!(
        learned
            .iter()
            .any(|s| s.completed > 0 && s.perf.is_some_and(|p| p.ttft_ms > 0.0)),
        "{learned:?}"
    );
    let metrics = fleet.epp.metrics.render();
    assert!(
        metrics.contains("herd_epp_request_output_tokens_total"),
        "{metrics}"
    );
    tokio::time::sleep(Duration::from_millis(1)).await;
    fleet.shutdown().await;
}
