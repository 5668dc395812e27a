//! What users deploy must be right: every Envoy config under deploy/envoy
//! passes `envoy --mode validate`, and the Kubernetes manifests under
//! deploy/kubernetes parse and use only field names of the published
//! schemas (InferencePool inference.networking.k8s.io/v1, AIGatewayRoute
//! aigateway.envoyproxy.io/v1beta1, and the core kinds).

use std::process::Command;

use herd_tests::envoy::envoy_bin;
use herd_tests::{python, tests_dir};

#[test]
fn epp_deploy_envoy_configs_validate() {
    let dir = tests_dir().join("../deploy/envoy");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("deploy/envoy exists") {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        n += 1;
        let out = Command::new(envoy_bin())
            .args(["--mode", "validate", "--disable-hot-restart", "-c"])
            .arg(&p)
            .output()
            .expect("run envoy");
        assert!(
            out.status.success(),
            "{} does not validate:\n{}{}",
            p.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        n >= 2,
        "expected the standalone and fail-open Envoy configs"
    );
}

#[test]
fn epp_kubernetes_manifests_match_published_schemas() {
    let out = Command::new(python())
        .arg(tests_dir().join("py/extproc_k8s_manifests.py"))
        .arg(tests_dir().join("../deploy/kubernetes"))
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
