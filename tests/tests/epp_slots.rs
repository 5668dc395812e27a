//! The admission slot is held until the response ends, through Envoy: with
//! one parallel slot per device and no queue on the device (any request the
//! device cannot start at once is refused and counted in `rejected_busy`),
//! concurrency never exceeds 1 per device, in full duplex, in lockstep
//! BUFFERED mode, and for a headers-only pick (model from `x-ai-eg-model`)
//! with the response body STREAMED to herd-epp.
//!
//! (With the response body mode NONE and no trailers, Envoy closes the
//! ext_proc stream right after the response headers, so no picker can know
//! when the response ends; herd-epp then frees the slot at that point. The
//! deploy configs therefore always send the response body.)

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use herd_tests::envoy::*;
use herd_tests::*;
use http_body_util::{BodyExt, Full};

fn slow_single_slot(name: &str) -> herd_node::DeviceConfig {
    herd_node::DeviceConfig {
        num_parallel: 1,
        max_queue: 0,
        speed: 100.0,
        ttft_base_ms: 20,
        ttft_ms_per_prompt_token: 0.0,
        ..device(name, 64, vec![model("m:8b", 2.0)], &["m:8b"])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epp_one_slot_per_device_is_never_exceeded_through_envoy() {
    let fleet = start_epp(
        epp_config(),
        vec![slow_single_slot("a"), slow_single_slot("b")],
    )
    .await;
    for (mode, response) in [
        (BodyMode::FullDuplex, BodyMode::FullDuplex),
        (BodyMode::Buffered, BodyMode::Buffered),
        (BodyMode::None, BodyMode::Streamed),
    ] {
        for d in &fleet.devices {
            d.reset_stats();
        }
        let mut o = EnvoyOpts::new(fleet.epp.grpc_addr, mode);
        o.response_body = response;
        let envoy = Envoy::start(&o).await;
        let url = format!("{}/api/generate", envoy.url());
        let c = Arc::new(client());
        let replies: Vec<(u16, String)> = futures::stream::iter(0..12)
            .map(|i| {
                let (c, url) = (c.clone(), url.clone());
                async move {
                    let body = serde_json::json!({
                        "model": "m:8b", "prompt": format!("p{i}"), "stream": true,
                        "options": {"num_predict": 20},
                    });
                    let rsp = c
                        .request(
                            http::Request::post(&url)
                                .header("content-type", "application/json")
                                .header("x-ai-eg-model", "m:8b")
                                .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
                                .unwrap(),
                        )
                        .await
                        .unwrap();
                    let status = rsp.status().as_u16();
                    let b = rsp.into_body().collect().await.unwrap().to_bytes();
                    (status, String::from_utf8_lossy(&b).into_owned())
                }
            })
            .buffer_unordered(12)
            .collect()
            .await;
        for (status, text) in &replies {
            assert_eq!(*status, 200, "{mode:?}: {text}");
            assert!(
                text.trim_end().ends_with('}') && text.contains("\"done\":true"),
                "{mode:?}: {text}"
            );
        }
        let mut total = 0;
        for d in &fleet.devices {
            let s = d.stats();
            assert_eq!(
                s.rejected_busy,
                0,
                "{mode:?}: {} was sent a request while busy",
                d.name()
            );
            assert!(s.max_active_seen <= 1, "{mode:?}: {s:?}");
            total += s.served_total;
        }
        assert_eq!(total, 12, "{mode:?}");
        // Both devices took work: the queue spread it, it did not serialise on one.
        assert!(
            fleet.devices.iter().all(|d| d.stats().served_total > 0),
            "{mode:?}"
        );
        // Every slot was given back.
        let snap = fleet.epp.live.admission.snapshot();
        assert!(
            snap.iter()
                .all(|(_, _, l, _)| l.in_flight == 0 && l.waiting == 0),
            "{snap:?}"
        );
        drop(envoy);
    }
    fleet.shutdown().await;
}
