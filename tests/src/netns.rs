//! A little LAN for tests that need machines: network namespaces joined by
//! veth pairs on a bridge, with the real binaries started inside them.
//! Multicast never leaves the namespaces. Needs root and `ip` (iproute2);
//! without them a test fails and says so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A random number, for names that must not collide between runs.
pub fn rand() -> u32 {
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

/// A binary of the workspace beside the test (`target/<profile>/<name>`).
pub fn bin(name: &str) -> PathBuf {
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

/// Run a command; its stderr in the error.
pub fn sh(args: &[&str]) -> Result<(), String> {
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
pub struct Lan {
    /// The hub namespace (the router's host).
    pub hub: String,
    /// The other hosts' namespaces.
    pub hosts: Vec<String>,
    /// `10.a.b.` prefix; the hub is .1, host i is .(i+2).
    prefix: String,
    /// Logs and files of the processes started in the LAN.
    pub tmp: PathBuf,
    children: Vec<Child>,
}

impl Lan {
    pub fn new(hosts: usize) -> Lan {
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

    pub fn hub_ip(&self) -> String {
        format!("{}1", self.prefix)
    }

    pub fn host_ip(&self, i: usize) -> String {
        format!("{}{}", self.prefix, i + 2)
    }

    /// Starts `cmd` inside `ns`, logging to a file under the LAN's temp dir.
    pub fn spawn(&mut self, ns: &str, log: &str, cmd: &[String]) -> usize {
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

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.tmp.join(name)).unwrap_or_default()
    }

    /// SIGTERM (graceful: the router withdraws its advert) and wait.
    pub fn stop(&mut self, i: usize) {
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
    pub fn get_json(&self, ns: &str, url: &str) -> Option<Value> {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, &crate::python().display().to_string(), "-c"])
            .arg("import sys,urllib.request;print(urllib.request.urlopen(sys.argv[1],timeout=2).read().decode())")
            .arg(url)
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Online node ids the router in the hub reports.
    pub fn online(&self, port: u16) -> Vec<String> {
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

    pub fn wait_online(
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
