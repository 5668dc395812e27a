//! Zero-config discovery across machines, for real: network namespaces
//! joined by veth pairs on a bridge stand in for hosts on a LAN, and the
//! real `herd` and `herd-node` binaries run inside them with no addresses
//! configured. Multicast never leaves the namespaces.
//!
//! Needs root and `ip` (iproute2). When they are missing the tests fail and
//! say so — they do not skip.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use herd_tests::netns::{Lan, bin, rand};

fn python() -> String {
    herd_tests::python().display().to_string()
}

fn free_port() -> u16 {
    20_000 + (rand() % 20_000) as u16
}

fn router_cmd(lan: &Lan, port: u16, extra: &[&str]) -> Vec<String> {
    let data = lan.tmp.join(format!("router-{port}"));
    let mut v = vec![
        bin("herd").display().to_string(),
        "--listen".into(),
        format!("0.0.0.0:{port}"),
        "--data-dir".into(),
        data.display().to_string(),
        "--report-timeout".into(),
        "3s".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn sim_cmd(lan: &Lan, host: usize, name: &str, extra: &[&str]) -> Vec<String> {
    let fleet = lan.tmp.join(format!("{name}.toml"));
    std::fs::write(&fleet, format!("[[devices]]\nname = \"{name}\"\n")).unwrap();
    let mut v = vec![
        bin("herd-node").display().to_string(),
        "simulate".into(),
        "--fleet".into(),
        fleet.display().to_string(),
        "--bind".into(),
        lan.host_ip(host),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[test]
fn mdns_nodes_find_the_router_and_follow_it_to_a_new_port() {
    let mut lan = Lan::new(2);
    let p1 = free_port();
    let cmd = router_cmd(&lan, p1, &[]);
    let hub = lan.hub.clone();
    let r1 = lan.spawn(&hub, "router1.log", &cmd);
    for (i, name) in ["node-a", "node-b"].iter().enumerate() {
        let ns = lan.hosts[i].clone();
        let cmd = sim_cmd(&lan, i, name, &[]);
        lan.spawn(&ns, &format!("{name}.log"), &cmd);
    }
    // No addresses given anywhere: the nodes find the router by mDNS.
    let took = lan
        .wait_online(p1, &["node-a", "node-b"], Duration::from_secs(20))
        .unwrap_or_else(|got| {
            panic!(
                "nodes did not attach by mDNS (online: {got:?})\nrouter:\n{}\nnode-a:\n{}",
                lan.log("router1.log"),
                lan.log("node-a.log")
            )
        });
    eprintln!("attached by mDNS in {took:?}");

    // Restart the router on another port: both follow within seconds.
    lan.stop(r1);
    let p2 = loop {
        let p = free_port();
        if p != p1 {
            break p;
        }
    };
    let cmd = router_cmd(&lan, p2, &[]);
    lan.spawn(&hub, "router2.log", &cmd);
    let took = lan
        .wait_online(p2, &["node-a", "node-b"], Duration::from_secs(8))
        .unwrap_or_else(|got| {
            panic!(
                "nodes did not re-attach to the restarted router (online: {got:?})\nnode-a:\n{}",
                lan.log("node-a.log")
            )
        });
    eprintln!("re-attached to the new port in {took:?}");
    assert!(took < Duration::from_secs(8));
}

#[test]
fn mdns_zeroconf_sees_the_router_and_herd_node_finds_a_zeroconf_router() {
    let mut lan = Lan::new(2);
    let hub = lan.hub.clone();
    // 1. herd advertises; python-zeroconf (an independent stack) in another
    //    namespace sees the right port and TXT.
    let p1 = free_port();
    let token_file = lan.tmp.join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let cmd = router_cmd(
        &lan,
        p1,
        &["--fleet-token-file", token_file.to_str().unwrap()],
    );
    let r1 = lan.spawn(&hub, "router1.log", &cmd);
    let out = Command::new("ip")
        .args(["netns", "exec", &lan.hosts[0], &python()])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/py/mdns_browse.py"))
        .args([&lan.host_ip(0), "15"])
        .output()
        .expect("run zeroconf browser");
    assert!(
        out.status.success(),
        "zeroconf did not see _herd._tcp: {}\nrouter:\n{}",
        String::from_utf8_lossy(&out.stderr),
        lan.log("router1.log")
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(seen["port"], p1, "{seen}");
    assert_eq!(seen["txt"]["protocol"], "1", "{seen}");
    assert_eq!(seen["txt"]["token"], "required", "{seen}");
    assert_eq!(seen["txt"]["version"], env!("CARGO_PKG_VERSION"), "{seen}");
    assert!(
        seen["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == &Value::from(lan.hub_ip())),
        "{seen}"
    );
    lan.stop(r1);

    // 2. A router that does not advertise itself; zeroconf advertises it
    //    instead, and herd-node (no flags) finds it through that advert.
    let p2 = free_port();
    let cmd = router_cmd(&lan, p2, &["--no-mdns"]);
    lan.spawn(&hub, "router2.log", &cmd);
    let mut publisher = Command::new("ip")
        .args(["netns", "exec", &lan.hosts[1], &python()])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/py/mdns_publish.py"))
        .args([lan.host_ip(1), lan.hub_ip(), p2.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run zeroconf publisher");
    let mut line = String::new();
    BufReader::new(publisher.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "published");
    let ns = lan.hosts[0].clone();
    let cmd = sim_cmd(&lan, 0, "node-z", &[]);
    lan.spawn(&ns, "node-z.log", &cmd);
    let r = lan.wait_online(p2, &["node-z"], Duration::from_secs(20));
    let _ = publisher.stdin.take().map(|mut s| s.write_all(b""));
    let _ = publisher.kill();
    let _ = publisher.wait();
    r.unwrap_or_else(|got| {
        panic!(
            "herd-node did not attach through the zeroconf advert (online: {got:?})\nnode:\n{}",
            lan.log("node-z.log")
        )
    });
}

#[test]
fn mdns_router_lists_advertised_nodes_that_are_refused() {
    let mut lan = Lan::new(1);
    let hub = lan.hub.clone();
    let p = free_port();
    let cmd = router_cmd(&lan, p, &["--fleet-token", "right"]);
    lan.spawn(&hub, "router.log", &cmd);
    let ns = lan.hosts[0].clone();
    let cmd = sim_cmd(&lan, 0, "node-w", &["--fleet-token", "wrong"]);
    lan.spawn(&ns, "node-w.log", &cmd);
    let url = format!("http://{}:{p}/fleet/status", lan.hub_ip());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Some(v) = lan.get_json(&hub, &url) {
            let hit = v["unattached"].as_array().into_iter().flatten().any(|u| {
                u["node_id"] == "node-w"
                    && u["why"]
                        .as_str()
                        .is_some_and(|w| w.contains("wrong fleet token"))
            });
            if hit {
                assert!(lan.online(p).is_empty(), "a wrong token must not attach");
                // And the node says so too.
                let log = lan.log("node-w.log");
                assert!(log.contains("wrong fleet token"), "node log:\n{log}");
                return;
            }
            last = v;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!(
        "router did not list the refused node with its reason: {}\nnode:\n{}",
        last["unattached"],
        lan.log("node-w.log")
    );
}
