//! The binary: environment variables really override, the demo config
//! round-trips, and `simulate` prints one line per device.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use herd_node::FleetConfig;

const BIN: &str = env!("CARGO_BIN_EXE_herd-node");

#[test]
fn print_demo_config_via_env_round_trips() {
    let out = Command::new(BIN)
        .args(["simulate"])
        .env("HERD_NODE_PRINT_DEMO_CONFIG", "true")
        .output()
        .expect("run herd-node");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    assert_eq!(
        FleetConfig::from_toml(&text).expect("parse"),
        FleetConfig::demo()
    );
}

#[test]
fn simulate_prints_devices_bound_where_env_says() {
    let dir = std::env::temp_dir().join(format!("herd-node-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let fleet = dir.join("fleet.toml");
    std::fs::write(&fleet, "[[devices]]\nname = \"solo\"\nbind = \"0.0.0.0\"\n").expect("write");
    let mut child = Command::new(BIN)
        .args(["simulate"])
        .env("HERD_NODE_FLEET", &fleet)
        .env("HERD_NODE_BIND", "127.0.0.1")
        .env("HERD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn herd-node");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    let read = BufReader::new(stdout).read_line(&mut line);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    read.expect("read line");
    let mut parts = line.split_whitespace();
    assert_eq!(parts.next(), Some("solo"));
    let url = parts.next().expect("url");
    assert!(
        url.starts_with("http://127.0.0.1:"),
        "HERD_NODE_BIND did not override: {url}"
    );
}
