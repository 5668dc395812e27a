//! Zero-config discovery across machines, for real: network namespaces
//! joined by veth pairs on a bridge stand in for hosts on a LAN, and the
//! real `herd` and `herd-node` binaries run inside them with no addresses
//! configured. Multicast never leaves the namespaces.
//!
//! Needs root and `ip` (iproute2). When they are missing the tests fail and
//! say so — they do not skip.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn rand() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish() as u32
}

fn bin(name: &str) -> PathBuf {
    // target/debug/deps/<test> → target/debug/<name>
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: build it first (cargo build -p herd-layer -p herd-node)",
        p.display()
    );
    p
}

fn python() -> String {
    std::env::var("HERD_TEST_PYTHON").unwrap_or_else(|_| {
        let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
        if Path::new(venv).exists() {
            venv.to_owned()
        } else {
            "python3".to_owned()
        }
    })
}

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A little LAN: a hub namespace with a bridge (the router's host) and
/// `hosts` more namespaces, each joined to the bridge by a veth pair.
/// Everything is deleted on drop, also when a test fails.
struct Lan {
    hub: String,
    hosts: Vec<String>,
    /// `10.a.b.` prefix; the hub is .1, host i is .(i+2).
    prefix: String,
    tmp: PathBuf,
    children: Vec<Child>,
}

impl Lan {
    fn new(hosts: usize) -> Lan {
        let id = format!("{:05x}", rand() & 0xfffff);
        let tmp = std::env::temp_dir().join(format!("herd-netns-{id}"));
        std::fs::create_dir_all(&tmp).unwrap();
        let mut lan = Lan {
            hub: format!("herd-hub-{id}"),
            hosts: (0..hosts).map(|i| format!("herd-h{i}-{id}")).collect(),
            prefix: format!("10.{}.{}.", 200 + rand() % 50, rand() % 256),
            tmp,
            children: Vec::new(),
        };
        if let Err(e) = lan.build(&id) {
            panic!(
                "cannot build network namespaces ({e}); these tests need root (CAP_NET_ADMIN) and iproute2's `ip`"
            );
        }
        lan
    }

    fn build(&mut self, id: &str) -> Result<(), String> {
        let hub = self.hub.clone();
        sh(&["ip", "netns", "add", &hub])?;
        sh(&["ip", "-n", &hub, "link", "set", "lo", "up"])?;
        let br = "hbr0";
        sh(&["ip", "-n", &hub, "link", "add", br, "type", "bridge"])?;
        sh(&[
            "ip",
            "-n",
            &hub,
            "link",
            "set",
            br,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        let hub_ip = format!("{}1/24", self.prefix);
        sh(&["ip", "-n", &hub, "addr", "add", &hub_ip, "dev", br])?;
        sh(&["ip", "-n", &hub, "link", "set", br, "up"])?;
        for (i, ns) in self.hosts.clone().iter().enumerate() {
            sh(&["ip", "netns", "add", ns])?;
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
            // Interface names must stay under 16 bytes.
            let (a, b) = (format!("hv{i}{id}"), format!("hp{i}{id}"));
            sh(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b])?;
            sh(&["ip", "link", "set", &a, "netns", ns])?;
            sh(&["ip", "link", "set", &b, "netns", &hub])?;
            sh(&["ip", "-n", &hub, "link", "set", &b, "master", br])?;
            sh(&["ip", "-n", &hub, "link", "set", &b, "up"])?;
            let ip = format!("{}{}/24", self.prefix, i + 2);
            sh(&["ip", "-n", ns, "addr", "add", &ip, "dev", &a])?;
            sh(&["ip", "-n", ns, "link", "set", &a, "up"])?;
            // Multicast goes out of the veth.
            sh(&["ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", &a])?;
        }
        sh(&["ip", "-n", &hub, "route", "add", "224.0.0.0/4", "dev", br])?;
        Ok(())
    }

    fn hub_ip(&self) -> String {
        format!("{}1", self.prefix)
    }

    fn host_ip(&self, i: usize) -> String {
        format!("{}{}", self.prefix, i + 2)
    }

    /// Starts `cmd` inside `ns`, logging to a file under the LAN's temp dir.
    fn spawn(&mut self, ns: &str, log: &str, cmd: &[String]) -> usize {
        let f = std::fs::File::create(self.tmp.join(log)).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn in namespace");
        self.children.push(child);
        self.children.len() - 1
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.tmp.join(name)).unwrap_or_default()
    }

    /// SIGTERM (graceful: the router withdraws its advert) and wait.
    fn stop(&mut self, i: usize) {
        let pid = self.children[i].id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.children[i].try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.children[i].kill();
        let _ = self.children[i].wait();
    }

    /// GET a JSON URL from inside `ns` (the test itself lives outside).
    fn get_json(&self, ns: &str, url: &str) -> Option<Value> {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, &python(), "-c"])
            .arg("import sys,urllib.request;print(urllib.request.urlopen(sys.argv[1],timeout=2).read().decode())")
            .arg(url)
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Online node ids the router in the hub reports.
    fn online(&self, port: u16) -> Vec<String> {
        let url = format!("http://{}:{port}/fleet/status", self.hub_ip());
        let Some(v) = self.get_json(&self.hub, &url) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = v["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["online"] == true)
            .filter_map(|n| n["id"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    }

    fn wait_online(
        &self,
        port: u16,
        want: &[&str],
        within: Duration,
    ) -> Result<Duration, Vec<String>> {
        let start = Instant::now();
        loop {
            let got = self.online(port);
            if want.iter().all(|w| got.iter().any(|g| g == w)) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > within {
                return Err(got);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.hosts.iter().chain(std::iter::once(&self.hub)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.tmp);
        } else {
            eprintln!("logs kept in {}", self.tmp.display());
        }
    }
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
