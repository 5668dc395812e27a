//! The store survives `kill -9` of herd in the middle of a write burst: it
//! reopens, keeps every committed record whole, and loses at most the tail
//! that was not committed. A store that cannot be opened (corrupt, or in use
//! by another herd) stops herd with a message that names the file.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use herd_layer::app::store::{Store, StoreConfig};
use http_body_util::{BodyExt, Full};

fn data_dir(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "herd-crash-{what}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn spawn(dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("HERD_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herd")
}

/// The listening address, or everything herd said when it exited instead.
fn addr_or_exit(child: &mut Child) -> Result<String, String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("addr=") {
                let a: String = line[i + 5..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                let _ = tx.send(Ok(a));
            }
            all.push_str(&line);
            all.push('\n');
        }
        let _ = tx.send(Err(all));
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("herd neither listened nor exited")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_survives_kill_9_during_a_write_burst() {
    let dir = data_dir("kill");
    let mut child = spawn(&dir);
    let addr = addr_or_exit(&mut child).expect("herd starts");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    // No node serves this model: every request fails fast and is traced.
    let burst = |i: usize| {
        let client = client.clone();
        let addr = addr.clone();
        async move {
            let body = format!(
                r#"{{"model":"nowhere:{i}","messages":[{{"role":"user","content":"x"}}],"stream":false,"tags":["burst"]}}"#
            );
            let req = http::Request::post(format!("http://{addr}/api/chat"))
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            client.request(req).await.is_ok()
        }
    };
    let mut sent = 0usize;
    for round in 0..20 {
        let ok = futures::future::join_all((0..25).map(|i| burst(round * 25 + i))).await;
        sent += ok.iter().filter(|o| **o).count();
    }
    // What herd itself reads back from the store is committed: wait until
    // most of the burst is (the writer commits on a short time window).
    let committed = {
        let mut seen = 0usize;
        for _ in 0..100 {
            let req =
                http::Request::get(format!("http://{addr}/fleet/traces?tag=burst&limit=1000"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
            if let Ok(rsp) = client.request(req).await {
                let body = rsp.into_body().collect().await.unwrap().to_bytes();
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                seen = v["traces"].as_array().map_or(0, Vec::len);
                if seen >= 300 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        seen
    };
    assert!(
        committed >= 300,
        "the store committed the burst ({committed})"
    );
    // Keep writing while the kill lands.
    let tail = tokio::spawn(futures::future::join_all((0..200).map(burst)));
    tokio::time::sleep(Duration::from_millis(30)).await;
    child.kill().expect("kill -9");
    let _ = child.wait();
    let _ = tail.await;
    assert!(sent >= 400, "the burst reached herd ({sent})");

    let store =
        Store::open(&dir, &StoreConfig::default()).expect("the store reopens after kill -9");
    let traces = store
        .all_traces(None)
        .expect("every record reads back whole");
    assert!(
        traces.len() >= committed,
        "every record committed before the kill survived: {} < {committed}",
        traces.len()
    );
    assert!(traces.len() <= sent + 200);
    for (i, t) in traces.iter().enumerate() {
        assert_eq!(t.seq, i as u64 + 1, "no gap and no torn record");
        assert!(t.model_requested.starts_with("nowhere:"));
        assert_eq!(t.tags, vec!["burst".to_string()]);
    }
    store.close().await;

    // And herd itself starts again on it.
    let mut again = spawn(&dir);
    addr_or_exit(&mut again).expect("herd restarts on the recovered store");
    let _ = again.kill();
    let _ = again.wait();
}

#[tokio::test]
async fn a_corrupt_or_locked_store_stops_herd_with_a_clear_message() {
    let dir = data_dir("corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("herd.redb"), vec![0xA5u8; 128 * 1024]).unwrap();
    let mut child = spawn(&dir);
    let said = addr_or_exit(&mut child).expect_err("herd must not start on a corrupt store");
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(
        said.contains("herd.redb") && said.contains("cannot be opened"),
        "{said}"
    );
    assert!(
        std::fs::metadata(dir.join("herd.redb")).unwrap().len() == 128 * 1024,
        "the file is left as it was"
    );

    let dir = data_dir("locked");
    let held = Store::open(&dir, &StoreConfig::default()).unwrap();
    let mut child = spawn(&dir);
    let said = addr_or_exit(&mut child).expect_err("a second herd on the same store must stop");
    assert!(!child.wait().unwrap().success());
    assert!(said.contains("in use by another herd"), "{said}");
    held.close().await;
}
