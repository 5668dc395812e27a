//! The `herd` binary honours its configuration sources in order:
//! flags over `HERD_*` environment variables over the config file.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

struct Herd {
    child: Child,
    addr: String,
}

impl Drop for Herd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `herd` on an ephemeral port and read the address it logs.
fn start(args: &[&str], env: &[(&str, &str)]) -> Herd {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herd"));
    cmd.args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("HERD_LOG", "info")
        .env(
            "HERD_DATA_DIR",
            std::env::temp_dir().join(format!(
                "herd-cli-env-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            )),
        )
        .env_remove("HERD_MAX_BODY_BYTES")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn herd");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("addr=") {
                let addr: String = line[i + 5..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("herd did not log its listening address");
    Herd { child, addr }
}

async fn post(addr: &str, path: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let req = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let rsp = client.request(req).await.expect("request");
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

fn chat_body(pad: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "model": "nope:1b",
        "messages": [{"role": "user", "content": "x".repeat(pad)}]
    }))
    .unwrap()
}

#[tokio::test]
async fn env_var_overrides_the_default_and_a_flag_overrides_the_env() {
    let herd = start(&[], &[("HERD_MAX_BODY_BYTES", "64")]);
    let (status, body) = post(&herd.addr, "/api/chat", chat_body(200)).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("64 bytes"),
        "{body}"
    );
    drop(herd);

    let herd = start(
        &["--max-body-bytes", "100000"],
        &[("HERD_MAX_BODY_BYTES", "64")],
    );
    let (status, body) = post(&herd.addr, "/api/chat", chat_body(200)).await;
    assert_eq!(status, 404, "the flag must win over the env: {body}");
}

#[test]
fn print_config_shows_env_and_file_values_in_order() {
    let dir = std::env::temp_dir().join(format!("herd-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("herd.toml");
    std::fs::write(&file, "[queue]\nmax_waiting = 3\nmax_wait = \"9s\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(["--config", file.to_str().unwrap(), "print-config"])
        .env("HERD_QUEUE_MAX_WAITING", "7")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("max_waiting = 7"), "env beats file:\n{text}");
    assert!(
        text.contains("max_wait = \"9s\""),
        "file beats default:\n{text}"
    );

    let bad = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(["print-config"])
        .env("HERD_NODES", "not a url")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a URL like http://"));
}
