//! Support for herd's end-to-end tests: a router and a fleet of simulated
//! devices on loopback, real sockets, started and stopped by each test.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use herd_layer::app::config::RouterConfig;
use herd_layer::app::server::Running;
use herd_node::config::{GIB, ModelSpec};
use herd_node::{DeviceConfig, DeviceHandle};
use http_body_util::{BodyExt, Full};

pub use herd_node::config::{Pressure, Thermal};
pub use herd_node::{FaultsPatch, SensorsPatch};

/// Envoy in front of herd-epp (the Endpoint Picker's end-to-end tests).
pub mod envoy;
/// Network namespaces standing in for machines on a LAN.
pub mod netns;
/// A real OTLP receiver (Python) for the telemetry tests.
pub mod otlp;

/// A router with simulated devices attached.
pub struct Fleet {
    pub router: Running,
    pub devices: Vec<DeviceHandle>,
}

impl Fleet {
    pub fn url(&self) -> String {
        self.router.url()
    }

    pub fn device(&self, name: &str) -> &DeviceHandle {
        self.devices
            .iter()
            .find(|d| d.name() == name)
            .unwrap_or_else(|| panic!("no device {name}"))
    }

    /// Wait until the router's view satisfies `f` (reports arrive every 100 ms).
    pub async fn wait_for(&self, what: &str, f: impl Fn(&herd_layer::fleet::FleetView) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if f(&self.router.fleet.snapshot()) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for: {what}; fleet: {:#?}",
                    self.router
                        .fleet
                        .snapshot()
                        .nodes
                        .values()
                        .map(|n| (&n.id, n.online, n.thermal, n.memory_pressure))
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn shutdown(self) {
        for d in self.devices {
            d.shutdown().await;
        }
        self.router.shutdown().await;
    }
}

/// A router config for tests: loopback, ephemeral port, fast reports, its
/// own fresh data directory (store and JSON log).
pub fn router_config() -> RouterConfig {
    let mut c = RouterConfig::default();
    c.app.listen = "127.0.0.1:0".parse().unwrap();
    c.app.data_dir = Some(temp_dir("router"));
    c.routing.report_interval = Duration::from_millis(100);
    c.routing.report_timeout = Duration::from_secs(2);
    c
}

/// A fresh, empty directory under the system temp dir.
pub fn temp_dir(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "herd-test-{what}-{}-{:08x}",
        std::process::id(),
        rand_u32()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish() as u32
}

/// Start a router and the given devices, and wait until all are online.
pub async fn start(cfg: RouterConfig, devices: Vec<DeviceConfig>) -> Fleet {
    init_tracing();
    let router = herd_layer::app::server::start(cfg)
        .await
        .expect("start router");
    let url = router.node_url();
    let n = devices.len();
    let devices = herd_node::start_fleet(
        herd_node::FleetConfig {
            devices,
            ..Default::default()
        },
        Some(url),
    )
    .await
    .expect("start devices");
    let fleet = Fleet { router, devices };
    fleet
        .wait_for("every device online", |v| v.online().count() == n)
        .await;
    fleet
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HERD_TEST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A model spec with a given size.
pub fn model(name: &str, gib: f64) -> ModelSpec {
    ModelSpec {
        name: name.to_string(),
        size_bytes: (gib * GIB as f64) as u64,
        context_length: 8192,
        ..ModelSpec::default()
    }
}

/// An embedding model.
pub fn embed_model(name: &str) -> ModelSpec {
    ModelSpec {
        embedding_dims: Some(64),
        ..model(name, 0.3)
    }
}

/// A simulated device: `mem_gib` of memory, `models` on disk, `loaded` in memory.
pub fn device(name: &str, mem_gib: u64, models: Vec<ModelSpec>, loaded: &[&str]) -> DeviceConfig {
    DeviceConfig {
        name: name.to_string(),
        memory_total_bytes: mem_gib * GIB,
        models,
        loaded: loaded.iter().map(|s| s.to_string()).collect(),
        speed: 200.0,
        ttft_base_ms: 5,
        load_base_ms: 50,
        load_ms_per_gb: 20,
        ..DeviceConfig::default()
    }
}

/// One HTTP response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// NDJSON lines as JSON values.
    pub fn ndjson(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad NDJSON line {l:?}: {e}"))
            })
            .collect()
    }
}

pub type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http()
}

/// Send a request and read the whole answer (a body error is kept in the
/// body text, so a test's assertion shows it).
pub async fn send(c: &Client, req: http::request::Builder, body: Vec<u8>) -> Reply {
    let what = format!(
        "{} {}",
        req.method_ref().map_or("?", |m| m.as_str()),
        req.uri_ref().map_or(String::new(), |u| u.to_string())
    );
    let rsp = c
        .request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = rsp.status().as_u16();
    let headers = rsp.headers().clone();
    let body = rsp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_else(|e| Bytes::from(format!("<<body error: {e}>>")));
    Reply {
        status,
        headers,
        body,
    }
}

/// POST raw bytes with a content type and read the whole answer.
pub async fn post_raw(c: &Client, url: &str, content_type: Option<&str>, body: Vec<u8>) -> Reply {
    let mut b = http::Request::post(url);
    if let Some(ct) = content_type {
        b = b.header("content-type", ct);
    }
    send(c, b, body).await
}

/// POST JSON bytes with extra headers and read the whole answer.
pub async fn post_with(c: &Client, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    let mut b = http::Request::post(url).header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(c, b, body).await
}

pub async fn post(c: &Client, url: &str, body: serde_json::Value) -> Reply {
    post_raw(
        c,
        url,
        Some("application/json"),
        serde_json::to_vec(&body).unwrap(),
    )
    .await
}

pub async fn get(c: &Client, url: &str) -> Reply {
    send(c, http::Request::get(url), Vec::new()).await
}

/// A chat body in Ollama's format.
pub fn chat(model: &str, text: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
    })
}

/// The Python interpreter with the test peers installed (by tests/run.sh).
/// A missing interpreter fails the test with the command that installs it.
pub fn python() -> PathBuf {
    let p = std::env::var_os("HERD_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    if !p.exists() {
        panic!(
            "the Python test peers are not installed ({} is missing).\n\
             Install them with: python3 -m venv tests/.venv && tests/.venv/bin/pip install -r tests/requirements.txt\n\
             (tests/run.sh does this for you)",
            p.display()
        );
    }
    p
}

/// Runs `tests/py/<script>` with `args` under the test peers' Python and
/// returns its output; a non-zero exit fails the test with both streams.
pub async fn run_python(script: &str, args: &[&str]) -> String {
    let out = tokio::process::Command::new(python())
        .arg(tests_dir().join("py").join(script))
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} {args:?} failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    stdout
}

/// Path of a file under tests/.
pub fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run `promtool check metrics` on a `/metrics` text; fails the test with
/// promtool's complaint (or how to install it).
pub fn promtool_check_metrics(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let promtool = std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("promtool"))
                .find(|p| p.exists())
        })
        .expect(
            "promtool is missing; install it with: apt-get install -y --no-install-recommends prometheus (tests/run.sh does)",
        );
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `herd` binary built beside the tests' `herd-bench` (tests/run.sh
/// builds every binary before the tests run).
pub fn herd_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> → target/<profile>/herd
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join("herd");
    assert!(
        bin.is_file(),
        "{} is missing: build the workspace's binaries first (cargo build --workspace, as tests/run.sh does)",
        bin.display()
    );
    bin
}

/// The real `herd` on an ephemeral loopback port with `args` and `env`,
/// its own data dir; returns the child and its `ip:port` once it listens.
pub fn spawn_herd(args: &[&str], env: &[(&str, &str)]) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(herd_bin());
    cmd.args(["--listen", "127.0.0.1:0"])
        .args(args)
        .arg("--data-dir")
        .arg(temp_dir("herd-bin"))
        .env("HERD_LOG", "info")
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
            if line.contains("herd router listening")
                && let Some(i) = line.find("addr=")
            {
                let a: String = line[i + 5..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                let _ = tx.send(a);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("herd did not start listening");
    (child, addr)
}

/// A process's peak resident memory (`VmHWM`), bytes.
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmHWM in /proc status")
}

/// A fresh self-signed certificate for `names` (host names or IPs), as PEM
/// files in a temp dir: (certificate, private key). The certificate is its
/// own CA, so a client trusts it by loading the certificate file.
pub fn self_signed_cert(names: &[&str]) -> (PathBuf, PathBuf) {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("generate a certificate");
    let dir = temp_dir("tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key)
}
