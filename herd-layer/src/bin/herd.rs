//! `herd`: the standalone router.
//!
//! `herd` serves Ollama's and OpenAI's APIs on port 11435 and routes every
//! request to the best machine of the fleet. `herd demo` also starts a
//! simulated fleet of three devices, so herd can be tried without a fleet.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use herd_layer::app::config::RouterConfig;
use herd_layer::duration;

#[derive(Parser, Debug)]
#[command(
    name = "herd",
    version,
    about = "One smart endpoint for a fleet of Ollama machines"
)]
struct Cli {
    #[command(flatten)]
    opts: Opts,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the router (the default).
    Serve,
    /// Run the router with a simulated fleet of three devices (and the local Ollama, if one answers).
    Demo,
    /// Print the effective configuration as TOML and exit.
    PrintConfig,
    /// Calibrate node:models on a running router (TTFT, tokens/s alone and
    /// with every parallel slot busy); results are stored and feed scoring.
    Bench {
        /// The running router.
        #[arg(long, env = "HERD_ROUTER", default_value = "http://127.0.0.1:11435")]
        router: String,
        /// An admin API key, when the router has keys.
        #[arg(long, env = "HERD_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// Only this node.
        #[arg(long = "bench-node")]
        node: Option<String>,
        /// Only this model.
        #[arg(long)]
        model: Option<String>,
    },
    /// Client API keys: create, list, revoke. Talks to the running router
    /// (`--router`), or with `--offline` writes the store directly while
    /// herd is stopped (the first admin key, or a lost one).
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
        /// The running router.
        #[arg(
            long,
            env = "HERD_ROUTER",
            default_value = "http://127.0.0.1:11435",
            global = true
        )]
        router: String,
        /// An admin API key (not needed from the router's machine while no key exists).
        #[arg(long, env = "HERD_API_KEY", hide_env_values = true, global = true)]
        api_key: Option<String>,
        /// Use the store in --data-dir directly instead of a running router.
        #[arg(long, global = true)]
        offline: bool,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCmd {
    /// Make a key; it is printed once (herd keeps only its hash).
    Create {
        /// The key's name (its tenant in traces, analytics and metrics).
        name: String,
        /// inference (the default: inference, model lists, fleet state) or
        /// admin (also node commands, model management, traces, keys).
        #[arg(long, default_value = "inference")]
        scope: String,
        /// A model it may use (repeat; `qwen3:*` patterns); none: all.
        #[arg(long = "model")]
        models: Vec<String>,
        /// Requests per minute.
        #[arg(long)]
        rpm: Option<u32>,
        /// Tokens per minute (prompt and output).
        #[arg(long)]
        tpm: Option<u32>,
        /// Requests at once.
        #[arg(long)]
        concurrent: Option<u32>,
    },
    /// List the keys (names, scopes, limits, usage; never the keys).
    List,
    /// Revoke a key by name (or its first characters): refused at once.
    Revoke {
        /// The key's name.
        name: String,
    },
}

/// Every flag has a `HERD_*` environment variable; flags win over the
/// environment, which wins over the config file.
#[derive(Args, Debug)]
struct Opts {
    /// TOML config file.
    #[arg(long, env = "HERD_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "HERD_LISTEN", global = true)]
    listen: Option<SocketAddr>,
    /// Agentless Ollama URL (repeat, or comma-separate in HERD_NODES).
    #[arg(
        long = "node",
        env = "HERD_NODES",
        value_delimiter = ',',
        global = true
    )]
    nodes: Vec<String>,
    /// Token nodes must present to attach.
    #[arg(long, env = "HERD_FLEET_TOKEN", global = true, hide_env_values = true)]
    fleet_token: Option<String>,
    /// File holding the fleet token (first line; beats --fleet-token).
    #[arg(long, env = "HERD_FLEET_TOKEN_FILE", global = true)]
    fleet_token_file: Option<PathBuf>,
    /// Do not advertise over mDNS nor list unattached herd-nodes.
    #[arg(long, env = "HERD_NO_MDNS", global = true)]
    no_mdns: bool,
    /// Advertise over mDNS on this interface only (e.g. en0).
    #[arg(long, env = "HERD_MDNS_INTERFACE", global = true)]
    mdns_interface: Option<String>,
    /// Largest request body, bytes.
    #[arg(long, env = "HERD_MAX_BODY_BYTES", global = true)]
    max_body_bytes: Option<usize>,
    /// Requests that may wait per node:model before shedding with 429.
    #[arg(long, env = "HERD_QUEUE_MAX_WAITING", global = true)]
    queue_max_waiting: Option<u32>,
    /// Longest wait for a slot before shedding with 503 (e.g. 30s).
    #[arg(long, env = "HERD_QUEUE_MAX_WAIT", value_parser = duration::parse, global = true)]
    queue_max_wait: Option<Duration>,
    /// A node silent for this long is offline (e.g. 10s).
    #[arg(long, env = "HERD_REPORT_TIMEOUT", value_parser = duration::parse, global = true)]
    report_timeout: Option<Duration>,
    /// On SIGTERM, how long requests in flight may take to finish (e.g. 30s).
    #[arg(long, env = "HERD_SHUTDOWN_GRACE", value_parser = duration::parse, global = true)]
    shutdown_grace: Option<Duration>,
    /// Where the store and the JSON log live (default: $XDG_DATA_HOME/herd or ~/.local/share/herd).
    #[arg(long, env = "HERD_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// TLS certificate chain (PEM) for https on the listener (with --tls-key).
    #[arg(long, env = "HERD_TLS_CERT", global = true)]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "HERD_TLS_KEY", global = true)]
    tls_key: Option<PathBuf>,
    /// Log filter, e.g. info or herd_layer=debug.
    #[arg(long, env = "HERD_LOG", default_value = "info", global = true)]
    log: String,
}

impl Opts {
    fn config(&self) -> Result<RouterConfig, Box<dyn std::error::Error>> {
        let mut c = match &self.config {
            Some(p) => RouterConfig::from_file(p)?,
            None => RouterConfig::default(),
        };
        if let Some(v) = self.listen {
            c.app.listen = v;
        }
        if !self.nodes.is_empty() {
            c.routing.nodes = self.nodes.clone();
        }
        if let Some(v) = &self.fleet_token {
            c.routing.fleet_token = Some(v.clone());
        }
        if let Some(p) = &self.fleet_token_file {
            c.routing.fleet_token = Some(herd_layer::config::read_token_file(p)?);
        }
        if self.no_mdns {
            c.routing.mdns.enabled = false;
        }
        if let Some(v) = &self.mdns_interface {
            c.routing.mdns.interface = Some(v.clone());
        }
        if let Some(v) = self.max_body_bytes {
            c.routing.max_body_bytes = v;
        }
        if let Some(v) = self.queue_max_waiting {
            c.routing.queue.max_waiting = v;
        }
        if let Some(v) = self.queue_max_wait {
            c.routing.queue.max_wait = v;
        }
        if let Some(v) = self.report_timeout {
            c.routing.report_timeout = v;
        }
        if let Some(v) = self.shutdown_grace {
            c.app.shutdown_grace = v;
        }
        if let Some(v) = &self.data_dir {
            c.app.data_dir = Some(v.clone());
        }
        if let Some(v) = &self.tls_cert {
            c.app.tls.cert = Some(v.clone());
        }
        if let Some(v) = &self.tls_key {
            c.app.tls.key = Some(v.clone());
        }
        c.validate()?;
        Ok(c)
    }
}

fn herd_node_binary() -> Option<PathBuf> {
    let beside = std::env::current_exe().ok()?.parent()?.join("herd-node");
    if beside.exists() {
        return Some(beside);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("herd-node"))
            .find(|p| p.exists())
    })
}

async fn ollama_answers(url: &str) -> bool {
    let Some(addr) = herd_layer::fleet::addr_of(url) else {
        return false;
    };
    matches!(
        tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(addr)
        )
        .await,
        Ok(Ok(_))
    )
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herd: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Human-readable lines on stderr, and the JSON log under the data dir.
fn init_logging(cli: &Cli) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = || {
        tracing_subscriber::EnvFilter::try_new(&cli.opts.log)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    let human = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter());
    let serving = matches!(cli.cmd, None | Some(Cmd::Serve) | Some(Cmd::Demo));
    let json = cli
        .opts
        .config()
        .ok()
        .filter(|c| serving && c.app.log.json)
        .and_then(|c| {
            herd_layer::app::telemetry::jsonlog::DailyJson::new(
                c.data_dir().join("logs"),
                c.app.log.max_total_bytes,
            )
            .ok()
        })
        .map(|w| {
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_writer(w)
                .with_filter(filter())
        });
    tracing_subscriber::registry().with(human).with(json).init();
}

async fn bench(
    router: &str,
    api_key: Option<&str>,
    node: Option<String>,
    model: Option<String>,
) -> Result<(), Box<dyn std::error::Error>> {
    use http_body_util::BodyExt;
    let client = herd_layer::client::client(Duration::from_secs(3));
    let body = serde_json::json!({"node": node, "model": model});
    let mut req = http::Request::post(format!("{}/fleet/benchmark", router.trim_end_matches('/')))
        .header("content-type", "application/json");
    if let Some(k) = api_key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let req = req.body(http_body_util::Full::new(bytes::Bytes::from(
        body.to_string(),
    )))?;
    let rsp = client
        .request(req)
        .await
        .map_err(|e| format!("cannot reach the router at {router}: {e}"))?;
    let status = rsp.status();
    let bytes = rsp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        return Err(format!(
            "the router answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        )
        .into());
    }
    let v: serde_json::Value = serde_json::from_slice(&bytes)?;
    println!(
        "{:<14} {:<24} {:>10} {:>12} {:>14}",
        "node", "model", "ttft ms", "tok/s (1)", "tok/s (slots)"
    );
    for b in v["benchmarks"].as_array().into_iter().flatten() {
        println!(
            "{:<14} {:<24} {:>10.1} {:>12.1} {:>10.1} ({})",
            b["node"].as_str().unwrap_or(""),
            b["model"].as_str().unwrap_or(""),
            b["ttft_ms"].as_f64().unwrap_or(0.0),
            b["tokens_per_s_single"].as_f64().unwrap_or(0.0),
            b["tokens_per_s_parallel"].as_f64().unwrap_or(0.0),
            b["parallel"],
        );
    }
    for e in v["errors"].as_array().into_iter().flatten() {
        eprintln!("herd bench: {}", e.as_str().unwrap_or(""));
    }
    Ok(())
}

/// `herd keys …`: over the running router's admin API, or on the store
/// itself with `--offline`.
async fn keys(
    cmd: KeysCmd,
    router: &str,
    api_key: Option<&str>,
    offline: bool,
    cfg: &RouterConfig,
) -> Result<(), Box<dyn std::error::Error>> {
    use herd_layer::app::auth::{Keys, NewKey, Scope};
    use serde_json::{Value, json};
    let new_key =
        |name: String, scope: &str, models, rpm, tpm, concurrent| -> Result<NewKey, String> {
            let scope = match scope {
                "inference" => Scope::Inference,
                "admin" => Scope::Admin,
                other => return Err(format!("--scope {other:?} is not inference or admin")),
            };
            Ok(NewKey {
                name,
                scope: Some(scope),
                models,
                limits: herd_layer::limit::Limits {
                    requests_per_minute: rpm,
                    tokens_per_minute: tpm,
                    concurrent,
                },
            })
        };
    let print_list = |keys: &[Value]| {
        println!(
            "{:<24} {:<10} {:<12} {:<24} limits",
            "name", "scope", "prefix", "models"
        );
        for k in keys {
            let models: Vec<&str> = k["models"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            println!(
                "{:<24} {:<10} {:<12} {:<24} {}",
                k["name"].as_str().unwrap_or(""),
                k["scope"].as_str().unwrap_or(""),
                k["prefix"].as_str().unwrap_or(""),
                if models.is_empty() {
                    "(all)".to_string()
                } else {
                    models.join(",")
                },
                k["limits_in_force"],
            );
        }
    };
    let print_created = |v: &Value| {
        println!("{}", v["key"].as_str().unwrap_or(""));
        eprintln!(
            "herd: key {:?} ({}) created; it is shown this once, herd keeps only its hash. Clients send it as `Authorization: Bearer <key>` or `x-api-key: <key>`.",
            v["name"].as_str().unwrap_or(""),
            v["scope"].as_str().unwrap_or("")
        );
    };
    if offline {
        let dir = cfg.data_dir();
        let store = herd_layer::app::store::Store::open(&dir, &cfg.app.store)
            .map_err(|e| format!("{e} (is herd running? then drop --offline)"))?;
        let keys = Keys::load(Some(store.clone()), cfg.app.auth.max_keys)?;
        let out = match cmd {
            KeysCmd::Create {
                name,
                scope,
                models,
                rpm,
                tpm,
                concurrent,
            } => {
                let new = new_key(name, &scope, models, rpm, tpm, concurrent)?;
                let (key, rec) = keys.create(&new).await?;
                print_created(&json!({"key": key, "name": rec.name, "scope": rec.scope}));
                Ok(())
            }
            KeysCmd::List => {
                let v: Vec<Value> = keys
                    .list()
                    .iter()
                    .map(|k| {
                        json!({"name": k.name, "scope": k.scope, "prefix": k.prefix, "models": k.models,
                            "limits_in_force": cfg.routing.limits.limits_for(&k.name, k.limits)})
                    })
                    .collect();
                print_list(&v);
                Ok(())
            }
            KeysCmd::Revoke { name } => {
                let rec = keys.revoke(&name).await?;
                eprintln!("herd: key {:?} revoked", rec.name);
                Ok(())
            }
        };
        drop(keys);
        store.close().await;
        return out;
    }
    use http_body_util::BodyExt;
    let base = router.trim_end_matches('/');
    let (method, url, body) = match &cmd {
        KeysCmd::Create {
            name,
            scope,
            models,
            rpm,
            tpm,
            concurrent,
        } => {
            let new = new_key(name.clone(), scope, models.clone(), *rpm, *tpm, *concurrent)?;
            (
                "POST",
                format!("{base}/fleet/keys"),
                serde_json::to_vec(&new)?,
            )
        }
        KeysCmd::List => ("GET", format!("{base}/fleet/keys"), Vec::new()),
        KeysCmd::Revoke { name } => ("DELETE", format!("{base}/fleet/keys/{name}"), Vec::new()),
    };
    let mut req = http::Request::builder()
        .method(method)
        .uri(&url)
        .header("content-type", "application/json");
    if let Some(k) = api_key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let req = req.body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
    let client = herd_layer::client::client(Duration::from_secs(3));
    let rsp = client.request(req).await.map_err(|e| {
        format!(
            "no router answers at {router} ({e}); start herd, point --router at it, or use --offline to write the store in {} while herd is stopped",
            cfg.data_dir().display()
        )
    })?;
    let status = rsp.status();
    let bytes = rsp.into_body().collect().await?.to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        let msg = herd_layer::dialect::error_message(&bytes);
        return Err(format!("the router answered {status}: {msg}").into());
    }
    match cmd {
        KeysCmd::Create { .. } => print_created(&v),
        KeysCmd::List => print_list(v["keys"].as_array().map_or(&[][..], |a| a.as_slice())),
        KeysCmd::Revoke { .. } => eprintln!(
            "herd: key {:?} revoked",
            v["revoked"].as_str().unwrap_or("")
        ),
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = cli.opts.config()?;
    match cli.cmd.unwrap_or(Cmd::Serve) {
        Cmd::Bench {
            router,
            api_key,
            node,
            model,
        } => bench(&router, api_key.as_deref(), node, model).await,
        Cmd::Keys {
            cmd,
            router,
            api_key,
            offline,
        } => keys(cmd, &router, api_key.as_deref(), offline, &cfg).await,
        Cmd::PrintConfig => {
            print!("{}", toml::to_string_pretty(&cfg)?);
            Ok(())
        }
        Cmd::Serve => {
            let running = herd_layer::app::server::start(cfg).await?;
            let stop = running.stopper();
            tokio::spawn(async move {
                shutdown_signal().await;
                let _ = stop.send(true);
            });
            running.wait().await?;
            Ok(())
        }
        Cmd::Demo => {
            let local = "http://127.0.0.1:11434";
            let with_ollama = ollama_answers(local).await;
            if with_ollama && !cfg.routing.nodes.iter().any(|n| n.contains("11434")) {
                cfg.routing.nodes.push(local.into());
            }
            let running = herd_layer::app::server::start(cfg).await?;
            let port = running.addr.port();
            let router = format!("http://127.0.0.1:{port}");
            let bin = herd_node_binary().ok_or(
                "herd-node was not found next to herd or on PATH; build both with `cargo build --release`",
            )?;
            let mut sim = tokio::process::Command::new(bin)
                .args(["simulate", "--demo", "--router", &router])
                .stdout(Stdio::inherit())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()?;
            // Wait for the simulated devices to attach.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            while running.fleet.snapshot().online().count() < 3
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let view = running.fleet.snapshot();
            println!();
            println!("herd demo is up: router {router}");
            for n in view.online() {
                let loaded: Vec<&str> = n.loaded.iter().map(|m| m.name.as_str()).collect();
                println!(
                    "  node {:<10} {}  {:>4.0} GiB  loaded: {}{}",
                    n.id,
                    n.url,
                    n.memory_total_gib(),
                    loaded.join(", "),
                    if n.simulated { "  (simulated)" } else { "" }
                );
            }
            if with_ollama {
                println!("  (your local Ollama at {local} is part of the fleet too)");
            }
            println!();
            println!("try:");
            println!(
                "  curl -s {router}/api/chat -d '{{\"model\":\"llama3.2:3b\",\"messages\":[{{\"role\":\"user\",\"content\":\"hello\"}}],\"stream\":false}}'"
            );
            println!("  curl -s '{router}/fleet/explain?model=qwen3:32b'");
            println!("  curl -s {router}/fleet/status");
            println!("Ctrl-C stops everything.");
            let stop = running.stopper();
            tokio::select! {
                _ = shutdown_signal() => {}
                status = sim.wait() => eprintln!("herd: the simulated fleet exited ({status:?})"),
            }
            let _ = stop.send(true);
            let _ = sim.kill().await;
            running.wait().await?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_env_and_file() {
        let dir = std::env::temp_dir().join(format!("herd-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("herd.toml");
        std::fs::write(&file, "max_body_bytes = 100\n[queue]\nmax_waiting = 5\n").unwrap();
        let cli = Cli::try_parse_from([
            "herd",
            "--config",
            file.to_str().unwrap(),
            "--queue-max-waiting",
            "9",
            "--listen",
            "127.0.0.1:1",
        ])
        .unwrap();
        let c = cli.opts.config().unwrap();
        assert_eq!(c.routing.max_body_bytes, 100, "file value kept");
        assert_eq!(c.routing.queue.max_waiting, 9, "flag beats file");
        assert_eq!(c.app.listen.port(), 1);
    }
}
