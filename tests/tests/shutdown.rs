//! Stopping the `herd` binary with SIGTERM: requests in flight get
//! `shutdown_grace` to finish, a stream longer than that is cut when it
//! runs out, and an attached node's long-lived gRPC stream does not keep
//! herd alive (before, herd waited for the node to hang up — forever).

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bytes::Bytes;
use herd_tests::*;
use http_body_util::{BodyExt, Full};

/// herd on an ephemeral port with `grace`; returns it and its address.
fn spawn_herd(grace: &str) -> (Child, String) {
    herd_tests::spawn_herd(&["--shutdown-grace", grace], &[])
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -TERM failed");
}

/// Waits until the child has exited or `within` has passed since `t`;
/// how long after `t` it exited.
async fn exited_within(child: &mut Child, t: Instant, within: Duration) -> Option<Duration> {
    while t.elapsed() < within {
        if child.try_wait().expect("try_wait").is_some() {
            return Some(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// A device that generates 2 tokens a second, attached to `router`.
async fn slow_device(router: &str) -> herd_node::DeviceHandle {
    let dev = herd_node::DeviceConfig {
        speed: 2.0,
        ..device("slow", 64, vec![model("m:1b", 1.0)], &["m:1b"])
    };
    let mut devices = herd_node::start_fleet(
        herd_node::FleetConfig {
            devices: vec![dev],
            ..Default::default()
        },
        Some(format!("http://{router}")),
    )
    .await
    .expect("start device");
    devices.remove(0)
}

async fn wait_online(c: &Client, addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = get(c, &format!("http://{addr}/fleet/status")).await;
        if r.status == 200 && r.json()["nodes_online"] == 1 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the device never attached: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A streamed chat of `tokens` tokens; resolves once its first line has
/// arrived, with a task that reads the rest and returns every line.
async fn stream(
    c: &Client,
    addr: &str,
    tokens: u32,
) -> tokio::task::JoinHandle<Vec<serde_json::Value>> {
    let body = serde_json::json!({
        "model": "m:1b",
        "messages": [{"role": "user", "content": "talk"}],
        "stream": true,
        "options": {"num_predict": tokens},
    });
    let req = http::Request::post(format!("http://{addr}/api/chat"))
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let rsp = c.request(req).await.expect("stream starts");
    assert_eq!(rsp.status(), 200);
    let mut body = rsp.into_body();
    let mut buf = Vec::new();
    while !buf.contains(&b'\n') {
        match body.frame().await {
            Some(Ok(f)) => buf.extend_from_slice(f.data_ref().map_or(&[][..], |d| &d[..])),
            other => panic!("stream ended before its first line: {other:?}"),
        }
    }
    tokio::spawn(async move {
        while let Some(Ok(f)) = body.frame().await {
            if let Some(d) = f.data_ref() {
                buf.extend_from_slice(d);
            }
        }
        String::from_utf8_lossy(&buf)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    })
}

fn done(lines: &[serde_json::Value]) -> bool {
    lines.last().is_some_and(|l| l["done"] == true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_short_streams_finish_and_cuts_long_ones_at_the_grace() {
    let (mut herd, addr) = spawn_herd("4s");
    let dev = slow_device(&addr).await;
    let c = client();
    wait_online(&c, &addr).await;
    // 3 tokens at 2/s end well inside the grace; 24 tokens take ~12 s.
    let short = stream(&c, &addr, 3).await;
    let long = stream(&c, &addr, 24).await;
    sigterm(&herd);
    let t = Instant::now();
    let short = short.await.unwrap();
    assert!(
        done(&short),
        "a stream that fits in the grace must finish: {short:?}"
    );
    let took = exited_within(&mut herd, t, Duration::from_secs(15)).await;
    let _ = herd.kill();
    let took = took.expect("herd did not exit within 15 s of SIGTERM with a 4 s grace");
    assert!(
        took >= Duration::from_millis(3500),
        "herd exited after {took:?}, before the 4 s grace, with a stream in flight"
    );
    let long = long.await.unwrap();
    assert!(
        !done(&long),
        "a 12 s stream cannot have finished in a 4 s grace: {long:?}"
    );
    dev.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attached_node_does_not_keep_herd_from_stopping() {
    // A long grace: only the node's open attachment could hold herd now.
    let (mut herd, addr) = spawn_herd("60s");
    let dev = slow_device(&addr).await;
    let c = client();
    wait_online(&c, &addr).await;
    sigterm(&herd);
    let took = exited_within(&mut herd, Instant::now(), Duration::from_secs(20)).await;
    let _ = herd.kill();
    let took = took.expect("herd still running 20 s after SIGTERM with only a node attached");
    assert!(
        took < Duration::from_secs(10),
        "idle herd took {took:?} to stop"
    );
    dev.shutdown().await;
}
