//! The dashboard in a real browser: Debian's chromium, driven by
//! `tests/js/dashboard_check.mjs` through playwright-core, against a router
//! (and herd-epp behind a real Envoy) with a fleet of simulated devices.
//!
//! The script checks the page (every view with data, live updates without a
//! reload, the control actions, keyboard tabs, 390 px, no request to another
//! origin, no console error) and prints what it measured; the test reads
//! that and checks the fleet itself agrees. Screenshots of every view go to
//! `$HERD_DASHBOARD_SHOTS` (default: a fresh directory under the system
//! temp dir, printed); `docs/dashboard/` holds a committed set.

use std::path::PathBuf;

use herd_tests::envoy::*;
use herd_tests::*;
use serde_json::{Value, json};

/// Node.js with the browser test's packages (installed by tests/run.sh);
/// missing pieces fail the test with how to install them.
fn node() -> PathBuf {
    let node = std::env::var_os("HERD_TEST_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/node"));
    assert!(
        node.exists(),
        "{} is missing: install Node.js (apt-get install -y nodejs npm; tests/run.sh does) or set HERD_TEST_NODE",
        node.display()
    );
    let pw = tests_dir().join("node_modules/playwright-core/package.json");
    assert!(
        pw.exists(),
        "playwright-core is not installed: run `npm ci --prefix tests` (tests/run.sh does)"
    );
    node
}

/// Run `tests/js/<script>` with `cfg`; its last stdout line is the summary.
async fn run_node(script: &str, cfg: &Value) -> Value {
    let out = tokio::process::Command::new(node())
        .arg(tests_dir().join("js").join(script))
        .arg(cfg.to_string())
        .kill_on_drop(true)
        .output()
        .await
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{script}: no summary ({e}): {stdout}"))
}

fn shots_dir(what: &str) -> PathBuf {
    match std::env::var_os("HERD_DASHBOARD_SHOTS") {
        Some(d) => PathBuf::from(d),
        None => temp_dir(what),
    }
}

/// What every run must show, whatever the shape.
fn common_checks(s: &Value, views: usize) {
    assert_eq!(
        s["violations"],
        json!([]),
        "requests to another origin: {s}"
    );
    assert_eq!(s["console_errors"], json!([]), "console errors: {s}");
    let thermal = s["thermal_ms"].as_f64().expect("thermal_ms");
    assert!(thermal < 3000.0, "thermal change took {thermal} ms");
    let shots = s["screenshots"].as_array().expect("screenshots");
    // Every view at 1280 px light and dark and at 390 px, plus the live ones.
    assert!(shots.len() >= views * 3, "{} screenshots", shots.len());
    for p in shots {
        let p = p.as_str().unwrap();
        let len = std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .len();
        assert!(len > 10_000, "{p} is only {len} bytes");
    }
    // Only herd's own routes were asked for.
    for r in s["requests"].as_array().unwrap() {
        let r = r.as_str().unwrap();
        assert!(
            r.starts_with("/dashboard") || r.starts_with("/fleet/") || r.starts_with("/api/"),
            "unexpected request {r}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_view_of_herd_s_dashboard_renders_live_in_chromium() {
    let models = || vec![model("small:3b", 2.0), model("medium:8b", 5.0)];
    let mut alpha = device("alpha", 32, models(), &["small:3b"]);
    // A model no node has, in alpha's registry: herd pulls it on demand.
    alpha.catalog = vec![model("fresh:1b", 1.0)];
    alpha.pull_bytes_per_sec = 2_000_000_000;
    let mut beta = device("beta", 64, models(), &["small:3b", "medium:8b"]);
    beta.catalog = alpha.catalog.clone();
    beta.pull_bytes_per_sec = alpha.pull_bytes_per_sec;
    let gamma = device("gamma", 16, vec![model("small:3b", 2.0)], &[]);
    let fleet = start(router_config(), vec![alpha, beta, gamma]).await;
    let c = client();
    let url = fleet.url();

    // Traffic for the trends and usage views: tagged requests, one
    // auto-pull.
    for i in 0..6 {
        let mut body = chat("small:3b", &format!("question {i}"), false);
        body["tags"] = json!(["team-a"]);
        let r = post(&c, &format!("{url}/api/chat"), body).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = post(
        &c,
        &format!("{url}/api/chat"),
        chat("fresh:1b", "hi", false),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    fleet.router.telemetry.flush().await;

    let out = shots_dir("dashboard-shots");
    let devices: serde_json::Map<String, Value> = fleet
        .devices
        .iter()
        .map(|d| (d.name().to_string(), json!(d.url())))
        .collect();
    let summary = run_node(
        "dashboard_check.mjs",
        &json!({
            "mode": "herd",
            "url": url,
            "send": url,
            "out": out,
            "devices": devices,
            "model": "small:3b",
            "hot": "alpha",
            "drain": "beta",
            "kill": "gamma",
            "tag": "team-a",
            "bench": {"node": "beta", "model": "medium:8b"},
            "pulled": "fresh:1b",
        }),
    )
    .await;
    eprintln!("dashboard screenshots in {}", out.display());
    eprintln!("summary: {summary}");
    common_checks(&summary, 8);
    // The request the script sent was served by the node the feed named.
    let winner = summary["winner"].as_str().expect("winner");
    assert!(["alpha", "beta"].contains(&winner), "{winner}");
    let traces = get(&c, &format!("{url}/fleet/traces?limit=50"))
        .await
        .json();
    let id = summary["request_id"].as_str().unwrap();
    let t = traces["traces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["request_id"] == id)
        .unwrap_or_else(|| panic!("no trace of {id}: {traces}"));
    assert_eq!(t["node"], winner);
    // The page's actions took effect on the fleet, and it saw what happened.
    assert!(summary["drain_ms"].as_f64().is_some() && summary["undrain_ms"].as_f64().is_some());
    fleet
        .wait_for("beta undrained, alpha hot, gamma offline", |v| {
            let n = |id: &str| v.node(id).unwrap();
            !n("beta").draining
                && n("alpha").thermal == herd_layer::fleet::Thermal::Serious
                && !n("gamma").online
        })
        .await;
    // The benchmark the page ran is stored.
    let b = get(&c, &format!("{url}/fleet/benchmark")).await.json();
    assert!(
        b["runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["node"] == "beta" && r["model"] == "medium:8b"),
        "{b}"
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herd_epp_serves_the_read_only_views_on_its_metrics_port() {
    let models = || vec![model("small:3b", 2.0)];
    let quick = |name: &str, loaded: &[&str]| herd_node::DeviceConfig {
        ttft_ms_per_prompt_token: 0.0,
        ..device(name, 32, models(), loaded)
    };
    let fleet = start_epp(
        epp_config(),
        vec![quick("a", &["small:3b"]), quick("b", &[]), quick("c", &[])],
    )
    .await;
    let envoy = Envoy::start(&EnvoyOpts::new(fleet.epp.grpc_addr, BodyMode::FullDuplex)).await;
    let url = format!("http://{}", fleet.epp.metrics_addr);
    // The proxy's store-backed and control routes are not there.
    let c = client();
    for path in [
        "/fleet/benchmark",
        "/fleet/nodes/a/command",
        "/fleet/analytics/usage",
    ] {
        assert_eq!(get(&c, &format!("{url}{path}")).await.status, 404, "{path}");
    }
    let info = get(&c, &format!("{url}/dashboard/info")).await.json();
    assert_eq!(info["read_only"], true);
    assert_eq!(
        info["views"],
        json!(["fleet", "routing", "models", "health"])
    );

    let out = shots_dir("epp-dashboard-shots");
    let devices: serde_json::Map<String, Value> = fleet
        .devices
        .iter()
        .map(|d| (d.name().to_string(), json!(d.url())))
        .collect();
    let summary = run_node(
        "dashboard_check.mjs",
        &json!({
            "mode": "herd-epp",
            "url": url,
            "send": envoy.url(),
            "out": out,
            "devices": devices,
            "model": "small:3b",
            "hot": "b",
            "kill": "c",
        }),
    )
    .await;
    eprintln!("herd-epp dashboard screenshots in {}", out.display());
    common_checks(&summary, 4);
    assert_eq!(summary["winner"], "a", "{summary}");
    drop(envoy);
    fleet.shutdown().await;
}
