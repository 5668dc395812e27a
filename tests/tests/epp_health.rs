//! herd-epp answers gRPC health SERVING for every name Envoy, Kubernetes and
//! the reference EPPs ask about, on the health port and on the ext_proc
//! port, and serves Prometheus text on the metrics port.

use herd_tests::envoy::*;
use herd_tests::*;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epp_health_on_both_ports_and_metrics() {
    let fleet = start_epp(epp_config(), vec![]).await;
    for addr in [fleet.epp.health_addr, fleet.epp.grpc_addr] {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut h = HealthClient::new(channel);
        for service in herd_epp::server::HEALTH_SERVICES {
            let r = h
                .check(HealthCheckRequest {
                    service: service.to_string(),
                })
                .await
                .unwrap_or_else(|e| panic!("{addr} {service:?}: {e}"))
                .into_inner();
            assert_eq!(
                r.status,
                ServingStatus::Serving as i32,
                "{addr} {service:?}"
            );
        }
        let unknown = h
            .check(HealthCheckRequest {
                service: "no.such.Service".into(),
            })
            .await;
        assert_eq!(unknown.unwrap_err().code(), tonic::Code::NotFound);
    }
    let r = get(
        &client(),
        &format!("http://{}/metrics", fleet.epp.metrics_addr),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    for name in [
        "herd_epp_scheduler_e2e_duration_seconds",
        "herd_epp_request_ttft_seconds",
        "herd_epp_request_running",
    ] {
        assert!(r.text().contains(name), "{name} missing:\n{}", r.text());
    }
    fleet.shutdown().await;
}
