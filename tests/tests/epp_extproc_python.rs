//! A Python ext_proc client built on `envoy-data-plane` (Envoy's own protos,
//! generated independently of herd's Rust types) drives raw streams against
//! herd-epp — headers, a body split across chunks, end of stream, the
//! response phase — and checks every reply field by field
//! (tests/py/extproc_client.py).

use std::process::Command;

use herd_tests::envoy::*;
use herd_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epp_raw_ext_proc_stream_from_python_checks_every_field() {
    let m = || vec![model("m:8b", 2.0)];
    let fleet = start_epp(
        epp_config(),
        vec![
            device("a", 64, m(), &["m:8b"]),
            device("b", 64, m(), &["m:8b"]),
        ],
    )
    .await;
    let (a, b) = (fleet.device("a").addr(), fleet.device("b").addr());
    let epp = fleet.epp.grpc_addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(tests_dir().join("py/extproc_client.py"))
            .args([epp, a.to_string(), b.to_string()])
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The full-duplex stream's response phase ended: its slot is free again.
    let snap = fleet.epp.live.admission.snapshot();
    assert!(snap.iter().all(|(_, _, l, _)| l.in_flight == 0), "{snap:?}");
    fleet.shutdown().await;
}
