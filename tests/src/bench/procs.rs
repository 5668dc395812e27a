//! Child processes of a benchmark and what `/proc` says about them.
//!
//! Every process the harness starts is a [`Proc`]: pinned with `taskset`
//! when asked (so the proxy under test and the load generator do not fight
//! over one core), stopped on drop (so a panicking run leaves nothing
//! listening), and measured from `/proc/PID/{stat,status}`: CPU seconds
//! (utime + stime, the process and its children such as nginx's worker) and
//! resident memory (current and peak, whose peak can be reset between
//! phases through `clear_refs`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Why a process could not be started or did not come up.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("starting {what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} did not come up within {within:?}: {detail}")]
    NotUp {
        what: String,
        within: Duration,
        detail: String,
    },
    #[error("{0}")]
    Other(String),
}

/// A running child, stopped (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
    /// SIGKILL on drop instead of a graceful stop (simulated devices drain
    /// for seconds on SIGTERM, which a benchmark has no use for).
    pub kill_on_drop: bool,
}

impl Proc {
    /// Starts `bin args…` pinned to `cpus` (e.g. `"1"`) when given, stderr
    /// and stdout to `log` unless `stdout` is piped for the caller.
    pub fn spawn(
        name: &str,
        bin: &Path,
        args: &[String],
        cpus: Option<&str>,
        log: PathBuf,
        pipe_stdout: bool,
        env: &[(&str, &str)],
    ) -> Result<Proc, ProcError> {
        let mut cmd = match cpus {
            Some(c) if have("taskset") => {
                let mut c0 = Command::new("taskset");
                c0.arg("-c").arg(c).arg(bin);
                c0
            }
            _ => Command::new(bin),
        };
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let err = |source| ProcError::Spawn {
            what: name.to_owned(),
            source,
        };
        let file = std::fs::File::create(&log).map_err(err)?;
        cmd.stderr(file.try_clone().map_err(err)?);
        if pipe_stdout {
            cmd.stdout(Stdio::piped());
        } else {
            cmd.stdout(file);
        }
        cmd.stdin(Stdio::null());
        let child = cmd.spawn().map_err(err)?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            log,
            kill_on_drop: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The end of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = s.len().saturating_sub(1500);
        format!("[{}] {}", self.name, &s[s.floor_char_boundary(start)..])
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        if !self.alive() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGKILL now (a machine losing power).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// CPU seconds of the process and its descendants.
    pub fn cpu_seconds(&self) -> f64 {
        tree(self.pid()).iter().map(|p| cpu_ticks(*p)).sum::<u64>() as f64 / clk_tck()
    }

    /// (VmRSS, VmHWM) in KiB of the process itself.
    pub fn memory_kib(&self) -> (u64, u64) {
        memory_kib(self.pid())
    }

    /// Resets the peak RSS (VmHWM) to the current RSS.
    pub fn reset_peak(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.kill_on_drop {
            self.kill();
            return;
        }
        self.stop(Duration::from_secs(3));
    }
}

/// Whether a command is on PATH.
pub fn have(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Waits until something accepts TCP connections on 127.0.0.1:port.
pub async fn wait_port(port: u16, within: Duration, what: &str) -> Result<(), ProcError> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(ProcError::NotUp {
                what: what.to_owned(),
                within,
                detail: format!("nothing listens on 127.0.0.1:{port}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn clk_tck() -> f64 {
    // Linux has used 100 for user-visible ticks on every mainstream arch.
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of one process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some(rest) = s.rfind(')').map(|i| &s[i + 2..]) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

fn ppid(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// A process and all its descendants.
fn tree(root: u32) -> Vec<u32> {
    let all: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|p| Some((p, ppid(p)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    out
}

/// (VmRSS, VmHWM) in KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Raises this process's open-file limit (1024 streams need more than
/// 1024 sockets), through util-linux's `prlimit` so no unsafe code is needed.
pub fn raise_nofile(n: u64) {
    if have("prlimit") {
        let _ = Command::new("prlimit")
            .arg("--pid")
            .arg(std::process::id().to_string())
            .arg(format!("--nofile={n}:{n}"))
            .stderr(Stdio::null())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_of_self_is_readable() {
        let me = std::process::id();
        assert!(tree(me).contains(&me));
        let (rss, hwm) = memory_kib(me);
        assert!(rss > 0 && hwm >= rss, "{rss} {hwm}");
    }
}
