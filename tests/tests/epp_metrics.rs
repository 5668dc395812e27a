//! herd-epp's `/metrics` after real picks through Envoy (picked, shed and
//! no-model outcomes, TTFT, tokens) is Prometheus text `promtool check
//! metrics` accepts, encoded the same way as herd's own.

use herd_tests::envoy::*;
use herd_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epp_metrics_pass_promtool() {
    let fleet = start_epp(
        epp_config(),
        vec![device("a", 64, vec![model("m:8b", 5.0)], &["m:8b"])],
    )
    .await;
    let envoy = Envoy::start(&EnvoyOpts::new(fleet.epp.grpc_addr, BodyMode::FullDuplex)).await;
    let c = client();
    for i in 0..3 {
        let r = post(
            &c,
            &format!("{}/api/chat", envoy.url()),
            chat("m:8b", &format!("q{i}"), i % 2 == 0),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = post(
        &c,
        &format!("{}/api/chat", envoy.url()),
        chat("absent:1b", "x", false),
    )
    .await;
    assert!(r.status >= 400, "{} {}", r.status, r.text());
    let r = get(
        &client(),
        &format!("http://{}/metrics", fleet.epp.metrics_addr),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some(herd_layer::app::telemetry::metrics::CONTENT_TYPE)
    );
    let text = r.text();
    for series in [
        "herd_epp_request_total{outcome=\"picked\"} 3",
        "# TYPE herd_epp_request_total counter",
        "herd_epp_scheduler_e2e_duration_seconds_count 3",
        "herd_epp_request_ttft_seconds_bucket{",
        "herd_epp_request_output_tokens_total{",
        "herd_epp_streams_total",
    ] {
        assert!(text.contains(series), "{series} missing from:\n{text}");
    }
    promtool_check_metrics(&text);
    drop(envoy);
    fleet.shutdown().await;
}
