//! herd on a LAN, against a hostile client: bodies built to blow up memory,
//! slow or half-sent requests, idle and flooding connections, a node whose
//! URL leads back to the router, and client mistakes that must not be
//! blamed on nodes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use herd_tests::*;
use serde_json::{Value, json};

/// A body of `n` one-character user messages (about 30 bytes each).
fn tiny_messages(model: &str, n: usize) -> Vec<u8> {
    let mut b = format!(r#"{{"model":"{model}","stream":false,"messages":["#).into_bytes();
    for i in 0..n {
        if i > 0 {
            b.push(b',');
        }
        b.extend_from_slice(br#"{"role":"user","content":"x"}"#);
    }
    b.extend_from_slice(b"]}");
    b
}

fn config_file(text: &str) -> std::path::PathBuf {
    let p = temp_dir("cfg").join("herd.toml");
    std::fs::write(&p, text).unwrap();
    p
}

async fn metric(c: &Client, url: &str, name: &str) -> f64 {
    let text = get(c, &format!("{url}/metrics")).await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// A 30 MB body of a million tiny messages once took 2.4 GB to read, parse
/// and translate, and kept it for the life of the request. Now herd keeps
/// the body as it came and walks the messages one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_tiny_messages_do_not_take_gigabytes() {
    let cfg = config_file("[autopull]\nenabled = false\n");
    let (mut herd, addr) = spawn_herd(&["--config", cfg.to_str().unwrap()], &[]);
    let url = format!("http://{addr}");
    let c = client();
    let before = peak_rss(herd.id());
    let body = tiny_messages("nowhere:1b", 1_000_000);
    assert!(body.len() > 29_000_000, "{}", body.len());
    for path in ["/v1/chat/completions", "/api/chat"] {
        let r = post_raw(
            &c,
            &format!("{url}{path}"),
            Some("application/json"),
            body.clone(),
        )
        .await;
        // Parsed and translated in full, then refused: no node has the model.
        assert_eq!(r.status, 404, "{path}: {}", r.text());
    }
    let grew = peak_rss(herd.id()).saturating_sub(before);
    let _ = herd.kill();
    let _ = herd.wait();
    eprintln!("herd's peak RSS grew by {} MiB", grew / (1024 * 1024));
    assert!(
        grew < 400 * 1024 * 1024,
        "herd's peak RSS grew by {} MiB for one 30 MB body",
        grew / (1024 * 1024)
    );
}

/// Bodies share one memory budget: while two large bodies are held, a third
/// is shed with 503 and Retry-After, before memory runs out; a body whose
/// single element would blow up on its own is refused as too complex (413).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_share_a_memory_budget() {
    let mut cfg = router_config();
    cfg.routing.max_body_bytes = 24 * 1024 * 1024;
    cfg.routing.body_memory = 96 * 1024 * 1024;
    cfg.routing.response_timeout = Duration::from_secs(20);
    cfg.routing.autopull.enabled = false;
    let fleet = start(
        cfg,
        vec![device("slow", 64, vec![model("m:8b", 5.0)], &["m:8b"])],
    )
    .await;
    // The device never answers: the two first requests hold their bodies
    // until the response timeout.
    fleet
        .device("slow")
        .set_faults(herd_node::config::FaultsPatch {
            hang: Some(true),
            ..Default::default()
        });
    let (c, url) = (client(), fleet.url());

    // One message of 300,000 parts: the one element herd would build.
    let mut parts = String::new();
    for i in 0..300_000 {
        if i > 0 {
            parts.push(',');
        }
        parts.push_str(r#"{"type":"text","text":"x"}"#);
    }
    let complex =
        format!(r#"{{"model":"m:8b","messages":[{{"role":"user","content":[{parts}]}}]}}"#);
    let r = post_raw(
        &c,
        &format!("{url}/v1/chat/completions"),
        None,
        complex.into_bytes(),
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "request_too_complex");

    let body = tiny_messages("m:8b", 600_000);
    let held: Vec<_> = (0..2)
        .map(|_| {
            let (c, url, body) = (c.clone(), url.clone(), body.clone());
            tokio::spawn(async move {
                post_raw(&c, &format!("{url}/v1/chat/completions"), None, body).await
            })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while metric(&c, &url, "herd_body_memory_bytes").await < 60.0 * 1024.0 * 1024.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the two bodies never got held"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = post_raw(
        &c,
        &format!("{url}/v1/chat/completions"),
        None,
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "server_busy");
    assert!(r.header("retry-after").is_some());
    for h in held {
        h.abort();
    }
    fleet.shutdown().await;
}

/// Slow or half-sent requests and idle connections do not hold herd's
/// sockets: headers must arrive within the header timeout, a body that
/// stops short of its Content-Length is answered 408, and an idle
/// keep-alive connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_cut() {
    let mut cfg = router_config();
    cfg.app.server.header_timeout = Duration::from_millis(300);
    cfg.app.server.idle_timeout = Duration::from_millis(600);
    cfg.routing.body_timeout = Duration::from_millis(300);
    let fleet = start(
        cfg,
        vec![device("a", 64, vec![model("m:8b", 5.0)], &["m:8b"])],
    )
    .await;
    let addr = fleet.router.addr;

    // Slowloris: half a header, then nothing.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /api/chat HTTP/1.1\r\nHost: herd\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let n = s.read_to_end(&mut buf);
    assert!(
        n.is_ok(),
        "the connection is closed, not left waiting: {n:?}"
    );

    // A body shorter than its Content-Length: 408, in the caller's format.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"POST /api/chat HTTP/1.1\r\nHost: herd\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":",
    )
    .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(head.contains("no body bytes"), "{head}");

    // An idle keep-alive connection is closed after a request.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /api/version HTTP/1.1\r\nHost: herd\r\n\r\n")
        .unwrap();
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let mut rest = Vec::new();
    let closed = s.read_to_end(&mut rest);
    assert!(closed.is_ok(), "the idle connection is closed: {closed:?}");
    fleet.shutdown().await;
}

/// A connection that never sends a byte is closed after the header
/// timeout, not after the (much longer) idle timeout: a flood of silent
/// sockets cannot hold the connection cap for minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_get_the_header_timeout() {
    let mut cfg = router_config();
    cfg.app.server.header_timeout = Duration::from_millis(300);
    cfg.app.server.idle_timeout = Duration::from_secs(3600);
    let fleet = start(
        cfg,
        vec![device("a", 64, vec![model("m:8b", 5.0)], &["m:8b"])],
    )
    .await;
    let mut s = TcpStream::connect(fleet.router.addr).unwrap();
    // Far below the idle timeout: only the silent-connection rule closes it.
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = Vec::new();
    let closed = s.read_to_end(&mut buf);
    assert!(
        closed.is_ok() && buf.is_empty(),
        "a silent connection is closed with nothing sent: {closed:?} {buf:?}"
    );
    fleet.shutdown().await;
}

/// Past the connection cap, a new connection is told why (503) and closed,
/// and herd keeps serving once connections free up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_is_refused_clearly() {
    let mut cfg = router_config();
    cfg.app.server.max_connections = 8;
    cfg.app.server.header_timeout = Duration::from_secs(30);
    let fleet = start(cfg, vec![]).await;
    let addr = fleet.router.addr;
    let idle: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(b"GET /api/version HTTP/1.1\r\nHost: herd\r\n\r\n");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf).to_string();
        if text.starts_with("HTTP/1.1 503") {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never refused: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(refused.contains("connections open, its limit"), "{refused}");
    drop(idle);
    // Once the idle ones close, herd serves again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ =
            s.write_all(b"GET /api/version HTTP/1.1\r\nHost: herd\r\nConnection: close\r\n\r\n");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        if buf.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&buf)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fleet.shutdown().await;
}

/// A node whose engine URL is the router itself: as an agentless node it is
/// refused (a herd is not an Ollama); attached with a report naming the
/// router, the request that loops comes back carrying the router's own hop
/// and is refused with 508 — one nested request, not hundreds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_the_router_does_not_loop() {
    let fleet = start(router_config(), vec![]).await;
    let url = fleet.url();
    let c = client();

    // Another herd's hop is not a loop.
    let r = post_with(
        &c,
        &format!("{url}/api/chat"),
        &[("x-herd-hop", "herd-someone-else")],
        serde_json::to_vec(&chat("nowhere:1b", "hi", false)).unwrap(),
    )
    .await;
    assert_ne!(r.status, 508, "{}", r.text());

    // Attached, reporting the router's own URL as its engine.
    use herd_layer::proto::{self, fleet_client::FleetClient, node_message};
    let mut fc = FleetClient::connect(url.clone()).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut inbound = fc
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(proto::NodeMessage {
        msg: Some(node_message::Msg::Hello(proto::Hello {
            node_id: "loop".into(),
            protocol_version: 1,
            agent_version: "test".into(),
            fleet_token: String::new(),
        })),
    })
    .await
    .unwrap();
    inbound.message().await.unwrap().unwrap();
    tx.send(proto::NodeMessage {
        msg: Some(node_message::Msg::Report(proto::NodeReport {
            node_id: "loop".into(),
            ollama_url: url.clone(),
            engine: Some(proto::EngineState {
                kind: proto::EngineKind::Ollama as i32,
                reachable: true,
                available: vec![proto::DiskModel {
                    name: "m:8b".into(),
                    size_bytes: 1 << 30,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    fleet
        .wait_for("the looping node reports", |v| {
            v.node("loop").is_some_and(|n| n.online)
        })
        .await;
    let r = post(&c, &format!("{url}/api/chat"), chat("m:8b", "hi", false)).await;
    assert!(r.status >= 500, "{} {}", r.status, r.text());
    assert!(
        r.text().contains("508") || r.text().contains("already passed"),
        "{}",
        r.text()
    );
    // One client request made one nested request, refused at once: the
    // router counted two requests, not hundreds.
    let m = get(&c, &format!("{url}/metrics")).await.text();
    let total: f64 = m
        .lines()
        .filter(|l| l.starts_with("herd_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(total <= 3.0, "{total} requests counted:\n{m}");
    drop((tx, inbound));

    // As an agentless node, the router is refused outright.
    let mut cfg = router_config();
    cfg.routing.nodes = vec![url.clone()];
    cfg.routing.poll_interval = Duration::from_millis(100);
    let other = start(cfg, vec![]).await;
    let id = herd_layer::discovery::agentless::node_id_for(&url);
    other
        .wait_for("the herd URL is refused as an engine", |v| {
            v.node(&id).is_some_and(|n| {
                !n.online
                    && n.offline_reason
                        .as_deref()
                        .is_some_and(|r| r.contains("herd router"))
            })
        })
        .await;
    other.shutdown().await;
    fleet.shutdown().await;
}

/// A client's mistake is not a node's failure: a 400 the node answers for a
/// bad request (embeddings from a chat model) is passed on, recorded as
/// "rejected", and no health check blames the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mistakes_are_not_node_failures() {
    let mut cfg = router_config();
    cfg.app.health.recent = 10;
    cfg.app.health.min_requests = 5;
    cfg.routing.autopull.enabled = false;
    let fleet = start(
        cfg,
        vec![device("a", 64, vec![model("m:8b", 5.0)], &["m:8b"])],
    )
    .await;
    let (c, url) = (client(), fleet.url());
    for _ in 0..8 {
        let r = post(
            &c,
            &format!("{url}/api/embed"),
            json!({"model": "m:8b", "input": "not an embedding model"}),
        )
        .await;
        assert_eq!(r.status, 400, "{}", r.text());
    }
    fleet.router.telemetry.flush().await;
    let traces: Value = get(&c, &format!("{url}/fleet/traces?limit=20"))
        .await
        .json();
    let health: Value = get(&c, &format!("{url}/fleet/health")).await.json();
    let blamed: Vec<&Value> = health["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["subject"] == "a")
        .collect();
    assert!(
        blamed.is_empty(),
        "node blamed for client mistakes: {blamed:#?}\ntraces: {traces:#}"
    );
    let statuses: Vec<&str> = traces["traces"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["status"].as_str())
        .collect();
    assert!(
        !statuses.is_empty() && statuses.iter().all(|s| *s == "rejected"),
        "{statuses:?}"
    );
    // The node is still first choice.
    let r = post(&c, &format!("{url}/api/chat"), chat("m:8b", "hi", false)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    fleet.shutdown().await;
}
