//! The zero-config defaults seen from two machines: the router runs in one
//! network namespace with a simulated device, a client calls from its own
//! loopback there and from another namespace (another address on the LAN).
//! With no key made, the other machine may infer and read fleet state, but
//! not drain a node, pull a model or read traces — and is told how to make
//! an admin key; the router's own machine may do all of it.
//!
//! Needs root and `ip` (iproute2); without them the test fails and says so.

use std::time::{Duration, Instant};

use herd_tests::netns::{Lan, bin, rand};
use serde_json::{Value, json};

/// One call made from inside `ns` (tests/py/http_call.py).
fn call(ns: &str, method: &str, url: &str, body: Option<Value>, headers: &[&str]) -> Value {
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(herd_tests::python())
        .arg(herd_tests::tests_dir().join("py/http_call.py"))
        .args([method, url]);
    if let Some(b) = body {
        cmd.arg(b.to_string());
    }
    cmd.args(headers);
    let out = cmd.output().expect("run http_call.py in the namespace");
    assert!(
        out.status.success(),
        "{method} {url} from {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("http_call.py prints JSON")
}

/// herd (with `extra` flags) and one simulated device in the hub, the
/// device attached over plain HTTP; returns herd's port.
fn router_with_a_node(lan: &mut Lan, extra: &[String]) -> u16 {
    let port = 20_000 + (rand() % 20_000) as u16;
    let hub = lan.hub.clone();
    let data = lan.tmp.join(format!("router-{port}"));
    let mut router = vec![
        bin("herd").display().to_string(),
        "--listen".into(),
        format!("0.0.0.0:{port}"),
        "--data-dir".into(),
        data.display().to_string(),
        "--no-mdns".into(),
    ];
    router.extend_from_slice(extra);
    lan.spawn(&hub, "router.log", &router);
    let fleet = lan.tmp.join("fleet.toml");
    std::fs::write(
        &fleet,
        "[[devices]]\nname = \"node-a\"\nloaded = [\"m1:latest\"]\n\n[[devices.models]]\nname = \"m1:latest\"\nsize_bytes = 1000000000\n",
    )
    .unwrap();
    let sim = vec![
        bin("herd-node").display().to_string(),
        "simulate".into(),
        "--fleet".into(),
        fleet.display().to_string(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--no-mdns".into(),
        "--router".into(),
        format!("http://127.0.0.1:{port}"),
    ];
    lan.spawn(&hub, "node.log", &sim);
    // The router's own machine sees the node come online.
    let local = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let online = std::process::Command::new("ip")
            .args(["netns", "exec", &hub])
            .arg(herd_tests::python())
            .arg(herd_tests::tests_dir().join("py/http_call.py"))
            .args(["GET", &format!("{local}/fleet/status")])
            .output()
            .ok()
            .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
            .is_some_and(|v| v["body"]["nodes_online"] == 1);
        if online {
            return port;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not attach\nrouter:\n{}\nnode:\n{}",
            lan.log("router.log"),
            lan.log("node.log")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn other_machines_may_infer_but_not_change_the_fleet_until_there_is_an_admin_key() {
    let mut lan = Lan::new(1);
    let port = router_with_a_node(&mut lan, &[]);
    let hub = lan.hub.clone();
    let local = format!("http://127.0.0.1:{port}");
    let other = lan.hosts[0].clone();
    let lan_url = format!("http://{}:{port}", lan.hub_ip());
    let chat =
        json!({"model": "m1", "messages": [{"role": "user", "content": "hi"}], "stream": false});

    // Another machine: inference and fleet state are open (a dummy key is ignored)…
    let r = call(
        &other,
        "POST",
        &format!("{lan_url}/api/chat"),
        Some(chat.clone()),
        &["Authorization: Bearer ollama"],
    );
    assert_eq!(r["status"], 200, "{r}");
    let r = call(&other, "GET", &format!("{lan_url}/fleet/status"), None, &[]);
    assert_eq!(r["status"], 200, "{r}");
    // …changing the fleet or reading traces is not, and says how to allow it.
    for (method, path, body) in [
        (
            "POST",
            "/fleet/nodes/node-a/command",
            Some(json!({"type": "drain"})),
        ),
        ("POST", "/api/pull", Some(json!({"model": "m2"}))),
        ("DELETE", "/api/delete", Some(json!({"model": "m1"}))),
        ("POST", "/fleet/benchmark", Some(json!({}))),
        ("GET", "/fleet/traces", None),
        ("GET", "/fleet/analytics/usage?by=model", None),
        (
            "POST",
            "/fleet/keys",
            Some(json!({"name": "mine", "scope": "admin"})),
        ),
    ] {
        let r = call(&other, method, &format!("{lan_url}{path}"), body, &[]);
        assert_eq!(r["status"], 403, "{method} {path}: {r}");
        let msg = r["body"]["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains("herd keys create <name> --scope admin"),
            "{method} {path}: {msg}"
        );
    }
    // An unload everywhere and an auto-pull are admin things too.
    let r = call(
        &other,
        "POST",
        &format!("{lan_url}/api/generate"),
        Some(json!({"model": "m1", "keep_alive": 0})),
        &[],
    );
    assert_eq!(r["status"], 403, "{r}");
    let r = call(
        &other,
        "POST",
        &format!("{lan_url}/api/chat"),
        Some(
            json!({"model": "m9:1b", "messages": [{"role": "user", "content": "hi"}], "stream": false}),
        ),
        &[],
    );
    assert_eq!(r["status"], 404, "{r}");
    assert!(
        r["body"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("admin"),
        "{r}"
    );

    // The router's own machine may drain (no key needed)…
    let r = call(
        &hub,
        "POST",
        &format!("{local}/fleet/nodes/node-a/command"),
        Some(json!({"type": "drain"})),
        &[],
    );
    assert_eq!(r["status"], 202, "{r}");
    // …and make an admin key, which then lets the other machine in.
    let r = call(
        &hub,
        "POST",
        &format!("{local}/fleet/keys"),
        Some(json!({"name": "ops", "scope": "admin"})),
        &[],
    );
    assert_eq!(r["status"], 201, "{r}");
    let key = r["body"]["key"].as_str().unwrap().to_string();
    let auth = format!("Authorization: Bearer {key}");
    let r = call(
        &other,
        "POST",
        &format!("{lan_url}/fleet/nodes/node-a/command"),
        Some(json!({"type": "undrain"})),
        &[&auth],
    );
    assert_eq!(r["status"], 202, "{r}");
    let r = call(
        &other,
        "GET",
        &format!("{lan_url}/fleet/traces"),
        None,
        &[&format!("x-api-key: {key}")],
    );
    assert_eq!(r["status"], 200, "{r}");
    // Now that a key exists, no key means 401 — from here too.
    let r = call(
        &other,
        "POST",
        &format!("{lan_url}/api/chat"),
        Some(chat),
        &[],
    );
    assert_eq!(r["status"], 401, "{r}");
    let r = call(
        &hub,
        "POST",
        &format!("{local}/fleet/nodes/node-a/command"),
        Some(json!({"type": "drain"})),
        &[],
    );
    assert_eq!(
        r["status"], 401,
        "loopback needs the key too once one exists: {r}"
    );
}

#[test]
fn with_tls_other_machines_must_use_https() {
    let mut lan = Lan::new(1);
    let (cert, key) = herd_tests::self_signed_cert(&[&lan.hub_ip()]);
    let extra = [
        "--tls-cert".to_string(),
        cert.display().to_string(),
        "--tls-key".to_string(),
        key.display().to_string(),
    ];
    // The node attached over plain HTTP/2 on the TLS port.
    let port = router_with_a_node(&mut lan, &extra);
    let other = lan.hosts[0].clone();
    let chat =
        json!({"model": "m1", "messages": [{"role": "user", "content": "hi"}], "stream": false});
    let plain = format!("http://{}:{port}", lan.hub_ip());
    let r = call(
        &other,
        "POST",
        &format!("{plain}/api/chat"),
        Some(chat.clone()),
        &[],
    );
    assert_eq!(r["status"], 403, "{r}");
    assert!(
        r["body"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("https"),
        "{r}"
    );
    // Over https, with the certificate trusted, the same call is served.
    let script = "import ssl,sys,json,urllib.request as u;ctx=ssl.create_default_context(cafile=sys.argv[2]);r=u.urlopen(u.Request(sys.argv[1],data=sys.argv[3].encode(),headers={'Content-Type':'application/json'}),context=ctx,timeout=10);print(json.dumps({'status':r.status,'body':json.load(r)}))";
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &other])
        .arg(herd_tests::python())
        .args(["-c", script])
        .arg(format!("https://{}:{port}/api/chat", lan.hub_ip()))
        .arg(&cert)
        .arg(chat.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], 200, "{v}");
    assert!(
        v["body"]["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("Hello from"),
        "{v}"
    );
}
