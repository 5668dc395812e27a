//! Simulated devices: a Mac running Ollama, in a few kilobytes of state.
//!
//! Every end-to-end test and benchmark of herd runs fleets of these, so they
//! must look like the real thing from outside: a faithful Ollama API on a real
//! socket, timing that follows the config (cold loads, TTFT, tokens/s, slots,
//! queue, prompt prefixes reused from each slot's KV cache as Ollama's
//! runners reuse them: [`kv`]), and reports to the router through the same
//! agent a real node uses.
//! Tests steer a running device through [`DeviceHandle`] or the `/_sim/*`
//! admin API: sensors, faults, kill and revive.
//!
//! Faults live at the level a real failure would: `refuse` drops TCP
//! connections, `kill` tears down every open connection mid-stream, and
//! `die_mid_stream_after` ends a chunked body without its terminating chunk.

mod api;
pub mod content;
pub mod engine;
pub mod kv;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use herd_proto::v1::{
    Availability, Cpu, Disk, DiskModel, EngineKind, EngineState, Hardware, LoadedModel, Memory,
    MemoryPressure, NodeReport, Thermal as ProtoThermal, ThermalState,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::ServiceExt;

pub use crate::config::{
    DeviceConfig, Faults, FaultsPatch, FleetConfig, ModelSpec, Pressure, Sensors, SensorsPatch,
    Thermal,
};
pub use engine::{DeviceStats, Engine, EngineError, ModelStats};

use crate::agent::{self, AgentConfig, Controls, StateSource};

/// Why a device could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The listener could not bind.
    #[error("device {name:?}: bind {addr}: {source}")]
    Bind {
        /// Device name.
        name: String,
        /// Address tried.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// A simulated device. Start one with [`Device::start`].
#[derive(Debug)]
pub struct Device;

/// A running device; cheap to clone, all clones steer the same device.
#[derive(Clone, Debug)]
pub struct DeviceHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    addr: SocketAddr,
    engine: Arc<Engine>,
    killed: AtomicBool,
    /// Bumped to tear down every open connection.
    kill_epoch: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
    server: Mutex<Option<JoinHandle<()>>>,
    agent: Mutex<Option<JoinHandle<()>>>,
    agent_cfg: Option<AgentConfig>,
    /// Set when the router is discovered (mDNS) instead of given.
    routers: Option<watch::Receiver<Option<String>>>,
    controls: Arc<Controls>,
    /// The engines beside this device's Ollama (`extra_engines`), each a
    /// device of its own without an agent, reported by this one.
    extras: Vec<DeviceHandle>,
}

impl Device {
    /// Binds the device's port, serves its API and, with a router URL,
    /// attaches it to that router.
    pub async fn start(
        cfg: DeviceConfig,
        router: Option<String>,
    ) -> Result<DeviceHandle, SimError> {
        Self::start_with_token(cfg, router, None).await
    }

    /// Like [`Device::start`], presenting a fleet token to the router.
    pub async fn start_with_token(
        cfg: DeviceConfig,
        router: Option<String>,
        fleet_token: Option<String>,
    ) -> Result<DeviceHandle, SimError> {
        Self::start_inner(cfg, router, None, fleet_token).await
    }

    /// Attaches to whichever router `routers` names, re-attaching as it
    /// changes (discovery drives it).
    pub async fn start_following(
        cfg: DeviceConfig,
        routers: watch::Receiver<Option<String>>,
        fleet_token: Option<String>,
    ) -> Result<DeviceHandle, SimError> {
        Self::start_inner(cfg, Some(String::new()), Some(routers), fleet_token).await
    }

    async fn start_inner(
        cfg: DeviceConfig,
        router: Option<String>,
        routers: Option<watch::Receiver<Option<String>>>,
        fleet_token: Option<String>,
    ) -> Result<DeviceHandle, SimError> {
        cfg.validate()?;
        let mut extras: Vec<DeviceHandle> = Vec::new();
        for (i, e) in cfg.extra_engines.iter().enumerate() {
            let e = DeviceConfig {
                name: format!(
                    "{}-{}{i}",
                    cfg.name,
                    herd_proto::engine::kind_name(engine_kind(e.engine))
                ),
                bind: cfg.bind,
                port: 0,
                ..e.clone()
            };
            match Box::pin(Device::start(e, None)).await {
                Ok(h) => extras.push(h),
                Err(err) => {
                    for h in extras {
                        h.shutdown().await;
                    }
                    return Err(err);
                }
            }
        }
        let want = SocketAddr::new(cfg.bind, cfg.port);
        let bind_err = |source| SimError::Bind {
            name: cfg.name.clone(),
            addr: want,
            source,
        };
        let listener = TcpListener::bind(want).await.map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let name = cfg.name.clone();
        let engine = Engine::new(cfg);
        let agent_cfg = router.map(|url| {
            let mut a = AgentConfig::new(url, name.clone());
            a.fleet_token = fleet_token.unwrap_or_default();
            a
        });
        let inner = Arc::new(Inner {
            name,
            addr,
            engine: engine.clone(),
            killed: AtomicBool::new(false),
            kill_epoch: watch::Sender::new(0),
            shutdown: watch::Sender::new(false),
            server: Mutex::new(None),
            agent: Mutex::new(None),
            agent_cfg,
            routers,
            controls: Arc::new(Controls::default()),
            extras,
        });
        let handle = DeviceHandle { inner };
        let app = router_for(handle.clone());
        let shutdown = handle.inner.shutdown.subscribe();
        let server = tokio::spawn(serve(listener, app, handle.inner.clone(), shutdown));
        *lock(&handle.inner.server) = Some(server);
        handle.start_agent();
        tracing::info!(device = %handle.name(), url = %handle.url(), "simulated device started");
        Ok(handle)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts every device of a fleet; `router` overrides the file's router.
pub async fn start_fleet(
    cfg: FleetConfig,
    router: Option<String>,
) -> Result<Vec<DeviceHandle>, SimError> {
    let router = router.or(cfg.router);
    let token = cfg.fleet_token;
    start_each(cfg.devices, |d| {
        Device::start_with_token(d, router.clone(), token.clone())
    })
    .await
}

/// Starts every device of `cfg`, each following the routers discovery
/// names.
pub async fn start_fleet_following(
    cfg: FleetConfig,
    routers: watch::Receiver<Option<String>>,
) -> Result<Vec<DeviceHandle>, SimError> {
    let token = cfg.fleet_token;
    start_each(cfg.devices, |d| {
        Device::start_following(d, routers.clone(), token.clone())
    })
    .await
}

/// Starts the devices one by one; if one fails, stops those already started.
async fn start_each<F, Fut>(
    devices: Vec<DeviceConfig>,
    start: F,
) -> Result<Vec<DeviceHandle>, SimError>
where
    F: Fn(DeviceConfig) -> Fut,
    Fut: std::future::Future<Output = Result<DeviceHandle, SimError>>,
{
    let mut out = Vec::with_capacity(devices.len());
    for d in devices {
        match start(d).await {
            Ok(h) => out.push(h),
            Err(e) => {
                for h in out {
                    h.shutdown().await;
                }
                return Err(e);
            }
        }
    }
    Ok(out)
}

impl DeviceHandle {
    /// Device name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Bound address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://ip:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// Counters.
    pub fn stats(&self) -> DeviceStats {
        self.inner.engine.stats()
    }

    /// Zeroes the counters.
    pub fn reset_stats(&self) {
        self.inner.engine.reset_stats();
    }

    /// Changes sensors; the next report carries them.
    pub fn set_sensors(&self, s: SensorsPatch) {
        self.inner.engine.set_sensors(&s);
        self.inner.controls.report_now();
    }

    /// Changes faults.
    pub fn set_faults(&self, f: FaultsPatch) {
        self.inner.engine.set_faults(&f);
    }

    /// Current sensors.
    pub fn sensors(&self) -> Sensors {
        self.inner.engine.sensors()
    }

    /// Current faults.
    pub fn faults(&self) -> Faults {
        self.inner.engine.faults()
    }

    /// The engine (models, slots, timing).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.inner.engine
    }

    /// Agent knobs (mode, draining).
    pub fn controls(&self) -> &Arc<Controls> {
        &self.inner.controls
    }

    /// Whether [`DeviceHandle::kill`] is in effect.
    pub fn is_killed(&self) -> bool {
        self.inner.killed.load(Ordering::SeqCst)
    }

    /// The device "loses power": open streams are cut, new connections are
    /// dropped, the router attachment goes away.
    pub fn kill(&self) {
        for e in &self.inner.extras {
            e.kill();
        }
        self.inner.killed.store(true, Ordering::SeqCst);
        self.inner.kill_epoch.send_modify(|e| *e += 1);
        if let Some(a) = lock(&self.inner.agent).take() {
            a.abort();
        }
        tracing::info!(device = %self.name(), "killed");
    }

    /// Undoes [`DeviceHandle::kill`].
    pub fn revive(&self) {
        for e in &self.inner.extras {
            e.revive();
        }
        self.inner.killed.store(false, Ordering::SeqCst);
        self.start_agent();
        tracing::info!(device = %self.name(), "revived");
    }

    /// Stops the device for good and waits for its server to end.
    pub async fn shutdown(self) {
        for e in self.inner.extras.clone() {
            Box::pin(e.shutdown()).await;
        }
        self.kill();
        self.inner.shutdown.send_replace(true);
        let server = lock(&self.inner.server).take();
        if let Some(s) = server {
            let _ = s.await;
        }
    }

    /// Waits until no request holds a slot, at most `limit`; true when idle.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.inner.engine.active() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The report this device sends to its router.
    pub fn report(&self) -> NodeReport {
        build_report(&self.inner.engine, &self.url(), &self.extras())
    }

    /// The engines beside this device's Ollama (`extra_engines`).
    pub fn extra_engines(&self) -> &[DeviceHandle] {
        &self.inner.extras
    }

    /// The extras as the report needs them: engine, URL, whether up.
    fn extras(&self) -> Vec<(Arc<Engine>, String, bool)> {
        self.inner
            .extras
            .iter()
            .map(|e| (e.inner.engine.clone(), e.url(), !e.is_killed()))
            .collect()
    }

    fn start_agent(&self) {
        let Some(cfg) = self.inner.agent_cfg.clone() else {
            return;
        };
        let mut slot = lock(&self.inner.agent);
        if slot.as_ref().is_some_and(|a| !a.is_finished()) {
            return;
        }
        let source = Arc::new(SimSource {
            engine: self.inner.engine.clone(),
            url: self.url(),
            extras: self.inner.extras.clone(),
        });
        let controls = self.inner.controls.clone();
        *slot = Some(match self.inner.routers.clone() {
            Some(routers) => tokio::spawn(agent::run_following(cfg, source, controls, routers)),
            None => tokio::spawn(agent::run(cfg, source, controls)),
        });
    }
}

/// Accepts connections, applying `refuse`/`kill`, and serves each one until
/// it ends or the device is killed.
async fn serve(
    listener: TcpListener,
    app: Router,
    inner: Arc<Inner>,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => break,
        };
        let (stream, _peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if inner.killed.load(Ordering::SeqCst) || inner.engine.faults().refuse {
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let mut kill = inner.kill_epoch.subscribe();
        let app = app.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    app.clone().oneshot(req.map(axum::body::Body::new))
                });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = kill.changed() => {}
            }
        });
    }
}

fn router_for(handle: DeviceHandle) -> Router {
    let surface = api::router(handle.inner.engine.clone(), handle.inner.controls.clone()).layer(
        axum::middleware::from_fn_with_state(handle.clone(), hang_layer),
    );
    let admin = Router::new()
        .route("/_sim/stats", get(admin_stats))
        .route("/_sim/stats/reset", post(admin_reset))
        .route("/_sim/sensors", get(admin_get_sensors).post(admin_sensors))
        .route("/_sim/faults", get(admin_get_faults).post(admin_faults))
        .route("/_sim/kill", post(admin_kill))
        .with_state(handle);
    surface.merge(admin)
}

/// `hang`: read the request, never answer (until the client gives up).
async fn hang_layer(State(h): State<DeviceHandle>, req: Request, next: Next) -> Response {
    // Remember the trace context a caller sent, so tests can check that a
    // router continues traces to the node (a real Ollama ignores it).
    if let Some(tp) = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
    {
        h.inner.engine.note_traceparent(tp);
    }
    if let Some(route) = req.extensions().get::<axum::extract::MatchedPath>() {
        h.inner
            .engine
            .note_path(req.method().as_str(), route.as_str());
    }
    if h.inner.engine.faults().hang {
        std::future::pending::<()>().await;
    }
    next.run(req).await
}

fn bad_json(e: serde_json::Error) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({"error": e.to_string()})),
    )
        .into_response()
}

async fn admin_stats(State(h): State<DeviceHandle>) -> axum::Json<DeviceStats> {
    axum::Json(h.stats())
}

async fn admin_reset(State(h): State<DeviceHandle>) -> axum::Json<DeviceStats> {
    h.reset_stats();
    axum::Json(h.stats())
}

async fn admin_get_sensors(State(h): State<DeviceHandle>) -> axum::Json<Sensors> {
    axum::Json(h.sensors())
}

async fn admin_sensors(State(h): State<DeviceHandle>, body: Bytes) -> Response {
    match serde_json::from_slice::<SensorsPatch>(&body) {
        Ok(p) => {
            h.set_sensors(p);
            axum::Json(h.sensors()).into_response()
        }
        Err(e) => bad_json(e),
    }
}

async fn admin_get_faults(State(h): State<DeviceHandle>) -> axum::Json<Faults> {
    axum::Json(h.faults())
}

async fn admin_faults(State(h): State<DeviceHandle>, body: Bytes) -> Response {
    match serde_json::from_slice::<FaultsPatch>(&body) {
        Ok(p) => {
            h.set_faults(p);
            axum::Json(h.faults()).into_response()
        }
        Err(e) => bad_json(e),
    }
}

/// Kills the device (its connection, this one included, is cut).
async fn admin_kill(State(h): State<DeviceHandle>) -> StatusCode {
    h.kill();
    StatusCode::NO_CONTENT
}

/// The simulator as the agent sees it.
#[derive(Debug)]
struct SimSource {
    engine: Arc<Engine>,
    url: String,
    extras: Vec<DeviceHandle>,
}

impl StateSource for SimSource {
    async fn report(&self) -> NodeReport {
        let extras: Vec<_> = self
            .extras
            .iter()
            .map(|e| (e.inner.engine.clone(), e.url(), !e.is_killed()))
            .collect();
        build_report(&self.engine, &self.url, &extras)
    }

    async fn pull(&self, model: String) -> Result<String, String> {
        let (spec, steps) = self.engine.pull_plan(&model).map_err(|e| e.to_string())?;
        if let Some((last, _)) = steps.last() {
            tokio::time::sleep(*last).await;
        }
        let name = spec.name.clone();
        self.engine.finish_pull(spec);
        Ok(format!("pulled {name}"))
    }

    async fn warm(&self, model: String) -> Result<String, String> {
        let took = self
            .engine
            .warm(&model, None)
            .await
            .map_err(|e| e.to_string())?;
        Ok(format!("{model} loaded in {} ms", took.as_millis()))
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// herd.v1's kind for a simulated engine.
fn engine_kind(e: crate::config::SimEngine) -> EngineKind {
    match e {
        crate::config::SimEngine::Ollama => EngineKind::Ollama,
        crate::config::SimEngine::OpenAi => EngineKind::Openai,
        crate::config::SimEngine::Stt => EngineKind::Stt,
        crate::config::SimEngine::Image => EngineKind::Image,
    }
}

/// What an engine that is not an Ollama reports: what it serves (its
/// `/v1/models`), its slots and its URL; no version.
fn extra_engine_state(engine: &Engine, url: &str, up: bool) -> EngineState {
    let cfg = engine.config();
    let kind = engine_kind(cfg.engine);
    let caps = |m: &crate::config::ModelSpec| match cfg.engine {
        crate::config::SimEngine::Stt => vec!["audio".to_owned()],
        crate::config::SimEngine::Image => vec!["image".to_owned()],
        _ => m.capabilities(),
    };
    let disk = engine.disk();
    EngineState {
        kind: kind as i32,
        reachable: up,
        unreachable_reason: if up {
            String::new()
        } else {
            format!("{url}: connection refused")
        },
        url: url.to_owned(),
        loaded: disk
            .iter()
            .map(|m| LoadedModel {
                name: m.spec.name.clone(),
                context_length: m.spec.context_length,
                ..LoadedModel::default()
            })
            .collect(),
        available: disk
            .iter()
            .map(|m| DiskModel {
                name: m.spec.name.clone(),
                capabilities: caps(&m.spec),
                ..DiskModel::default()
            })
            .collect(),
        parallel_slots: cfg.num_parallel,
        ..EngineState::default()
    }
}

/// The report of a simulated device: everything a real agent would fill,
/// from the simulator's state and sensors; `extras` are the engines beside
/// its Ollama (engine, URL, whether up).
pub(crate) fn build_report(
    engine: &Engine,
    url: &str,
    extras: &[(Arc<Engine>, String, bool)],
) -> NodeReport {
    let cfg = engine.config();
    let sensors = engine.sensors();
    let loaded = engine.loaded();
    let disk = engine.disk();
    let used: u64 = loaded.iter().map(|l| l.spec.size_bytes).sum();
    let available = sensors
        .memory_available_bytes
        .unwrap_or(cfg.memory_total_bytes.saturating_sub(used));
    let disk_used: u64 = disk.iter().map(|m| m.spec.size_bytes).sum();
    let now = SystemTime::now();
    let pressure = match sensors.memory_pressure {
        Pressure::Normal => MemoryPressure::Normal,
        Pressure::Warn => MemoryPressure::Warn,
        Pressure::Critical => MemoryPressure::Critical,
    };
    let thermal = match sensors.thermal {
        Thermal::Nominal => ThermalState::Nominal,
        Thermal::Fair => ThermalState::Fair,
        Thermal::Serious => ThermalState::Serious,
        Thermal::Critical => ThermalState::Critical,
    };
    let mut report = NodeReport {
        ollama_url: url.to_owned(),
        simulated: true,
        hardware: Some(Hardware {
            chip: cfg.chip.clone(),
            os: "macOS".to_owned(),
            arch: "arm64".to_owned(),
            memory: Some(Memory {
                total_bytes: cfg.memory_total_bytes,
                available_bytes: available,
                pressure: pressure as i32,
                unknown_reason: String::new(),
            }),
            thermal: Some(ProtoThermal {
                state: thermal as i32,
                temperature_c: 0.0,
                unknown_reason: "simulated: no temperature sensor".to_owned(),
            }),
            cpu: Some(Cpu {
                cores: cfg.cpu_cores,
                utilization: sensors.cpu_utilization,
                load_1m: sensors.cpu_utilization * f64::from(cfg.cpu_cores),
                unknown_reason: String::new(),
            }),
            disk: Some(Disk {
                total_bytes: cfg.disk_total_bytes,
                available_bytes: cfg.disk_total_bytes.saturating_sub(disk_used),
                unknown_reason: String::new(),
            }),
            memory_bandwidth_gbps: 0.0,
            ..Hardware::default()
        }),
        engine: Some(EngineState {
            kind: EngineKind::Ollama as i32,
            reachable: true,
            unreachable_reason: String::new(),
            version: cfg.ollama_version.clone(),
            loaded: loaded
                .iter()
                .map(|l| LoadedModel {
                    name: l.spec.name.clone(),
                    size_bytes: l.spec.size_bytes,
                    vram_bytes: l.spec.size_bytes,
                    context_length: l.spec.context_length,
                    expires_at_ms: l.expires_in.map_or(0, |d| unix_ms(now + d)),
                    digest: l.digest.clone(),
                })
                .collect(),
            available: disk
                .iter()
                .map(|m| DiskModel {
                    name: m.spec.name.clone(),
                    size_bytes: m.spec.size_bytes,
                    family: m.spec.family.clone(),
                    parameter_size: m.spec.parameter_size.clone(),
                    quantization: m.spec.quantization.clone(),
                    digest: m.digest.clone(),
                    modified_at_ms: unix_ms(m.modified_at),
                    format: "gguf".to_owned(),
                    families: vec![m.spec.family.clone()],
                    parent_model: m.parent_model.clone(),
                    // A real agent learns these from /api/show (or /api/tags
                    // since Ollama 0.30); the simulator knows them.
                    capabilities: m.spec.capabilities(),
                })
                .collect(),
            parallel_slots: cfg.num_parallel,
            max_loaded_models: cfg.max_loaded_models,
            max_queue: cfg.max_queue,
            ..EngineState::default()
        }),
        availability: Some(Availability {
            score: 0.0,
            known: false,
            memory_ceiling_bytes: engine.model_budget(),
            reason: "simulated device: availability not learned".to_owned(),
        }),
        extra_engines: extras
            .iter()
            .map(|(e, url, up)| extra_engine_state(e, url, *up))
            .collect(),
        ..NodeReport::default()
    };
    // A device that is not an Ollama reports what such a server shows.
    if cfg.engine != crate::config::SimEngine::Ollama {
        report.engine = Some(extra_engine_state(engine, url, true));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn report_reflects_models_and_sensors() {
        let cfg = FleetConfig::demo().devices.remove(1);
        let h = Device::start(cfg, None).await.expect("start");
        h.set_sensors(SensorsPatch {
            memory_pressure: Some(Pressure::Warn),
            thermal: Some(Thermal::Serious),
            ..SensorsPatch::default()
        });
        let r = h.report();
        assert!(r.simulated);
        assert_eq!(r.ollama_url, h.url());
        let hw = r.hardware.expect("hardware");
        assert_eq!(
            hw.memory.expect("mem").pressure,
            MemoryPressure::Warn as i32
        );
        assert_eq!(
            hw.thermal.expect("thermal").state,
            ThermalState::Serious as i32
        );
        let e = r.engine.expect("engine");
        assert_eq!(
            e.loaded.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
            ["qwen3:8b"]
        );
        assert_eq!(e.available.len(), 3);
        assert_eq!((e.parallel_slots, e.max_queue), (4, 512));
        h.shutdown().await;
    }
}
