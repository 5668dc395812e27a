//! What the machine itself says: memory and its pressure, thermal state,
//! CPU, disk, GPUs, and whether its owner is in a meeting.
//!
//! sysinfo does the portable part (memory, CPU use, load, disks); the rest
//! comes from the OS's own sources ([`linux`]: PSI, sysfs, `nvidia-smi`;
//! [`macos`]: `sysctl`, `memory_pressure`, `pmset`, `ioreg`, `log`). A probe
//! that fails leaves its value at zero and says why in `unknown_reason` —
//! the router then treats the signal as unknown instead of trusting a zero.

pub mod linux;
pub mod macos;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_proto::v1::{Cpu, Disk, Gpu, Hardware, Memory, MemoryPressure, Thermal, ThermalState};

/// Longest a vendor tool may take before we call its answer unknown.
const TOOL_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether the owner is in a call (camera or microphone in use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Meeting {
    /// Camera or microphone is in use.
    InMeeting(String),
    /// Neither is in use.
    Free,
    /// Cannot tell, and why (always on Linux).
    Unknown(String),
}

/// Reads the machine. Cheap to clone; keeps sysinfo's state between calls
/// because CPU use needs two readings.
#[derive(Clone)]
pub struct Prober {
    sys: Arc<Mutex<Option<sysinfo::System>>>,
    /// Where to look for thermal zones (a test points it elsewhere).
    thermal_root: std::path::PathBuf,
    /// The disk that matters: where models live.
    disk_path: std::path::PathBuf,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober")
            .field("disk_path", &self.disk_path)
            .finish_non_exhaustive()
    }
}

impl Default for Prober {
    fn default() -> Self {
        Self::new(models_dir())
    }
}

/// Ollama's model directory (`OLLAMA_MODELS`, else `~/.ollama`), falling
/// back to `/`: free space there is what decides whether a pull fits.
pub(crate) fn models_dir() -> std::path::PathBuf {
    std::env::var_os("OLLAMA_MODELS")
        .map(Into::into)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".ollama")))
        .filter(|p: &std::path::PathBuf| p.exists())
        .unwrap_or_else(|| "/".into())
}

/// One reading of how busy the owner keeps the machine, for capacity
/// learning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// CPU use, 0..=1.
    pub cpu: f64,
    /// Memory in use, 0..=1.
    pub memory: f64,
    /// Total memory, bytes.
    pub memory_total: u64,
}

impl Prober {
    /// A prober measuring free space on the disk holding `disk_path`.
    pub fn new(disk_path: std::path::PathBuf) -> Self {
        Self {
            sys: Arc::new(Mutex::new(None)),
            thermal_root: "/sys/class/thermal".into(),
            disk_path,
        }
    }

    /// The whole hardware section of a report.
    pub async fn hardware(&self) -> Hardware {
        let this = self.clone();
        let mut hw = tokio::task::spawn_blocking(move || this.hardware_blocking())
            .await
            .unwrap_or_else(|e| Hardware {
                os: std::env::consts::OS.into(),
                arch: std::env::consts::ARCH.into(),
                gpu_unknown_reason: format!("probe task failed: {e}"),
                ..Hardware::default()
            });
        match gpus().await {
            Ok(g) => hw.gpus = g,
            Err(Some(reason)) => hw.gpu_unknown_reason = reason,
            Err(None) => {}
        }
        hw
    }

    /// Owner load right now (None until sysinfo has two CPU readings).
    pub fn load(&self) -> Option<Load> {
        let mut guard = self.sys.lock().unwrap_or_else(|e| e.into_inner());
        let sys = guard.as_mut()?;
        sys.refresh_memory();
        sys.refresh_cpu_usage();
        let total = sys.total_memory();
        if total == 0 {
            return None;
        }
        let used = total.saturating_sub(sys.available_memory());
        Some(Load {
            cpu: (f64::from(sys.global_cpu_usage()) / 100.0).clamp(0.0, 1.0),
            memory: used as f64 / total as f64,
            memory_total: total,
        })
    }

    fn hardware_blocking(&self) -> Hardware {
        let mut guard = self.sys.lock().unwrap_or_else(|e| e.into_inner());
        let first = guard.is_none();
        if first {
            *guard = sysinfo::System::new().ok();
        }
        let (mut memory, cpu) = match guard.as_mut() {
            Some(sys) => {
                sys.refresh_memory();
                sys.refresh_cpu_usage();
                let memory = Memory {
                    total_bytes: sys.total_memory(),
                    available_bytes: sys.available_memory(),
                    pressure: MemoryPressure::Unknown as i32,
                    unknown_reason: String::new(),
                };
                let cores = sysinfo::System::physical_core_count()
                    .ok()
                    .filter(|c| *c > 0)
                    .unwrap_or(sys.cpus().len());
                let load = sysinfo::System::load_average().ok();
                let mut reasons = Vec::new();
                if first {
                    reasons.push("CPU use needs two readings; known from the next report");
                }
                if load.is_none() {
                    reasons.push("load average not available");
                }
                let cpu = Cpu {
                    cores: u32::try_from(cores).unwrap_or(u32::MAX),
                    utilization: if first {
                        0.0
                    } else {
                        (f64::from(sys.global_cpu_usage()) / 100.0).clamp(0.0, 1.0)
                    },
                    load_1m: load.map_or(0.0, |l| l.one),
                    unknown_reason: reasons.join("; "),
                };
                (memory, cpu)
            }
            None => (
                Memory {
                    unknown_reason: "sysinfo is not supported on this OS".into(),
                    ..Memory::default()
                },
                Cpu {
                    unknown_reason: "sysinfo is not supported on this OS".into(),
                    ..Cpu::default()
                },
            ),
        };
        drop(guard);
        let mut hw = Hardware {
            chip: String::new(),
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            memory: None,
            thermal: None,
            cpu: Some(cpu),
            disk: Some(self.disk()),
            memory_bandwidth_gbps: 0.0,
            gpus: Vec::new(),
            gpu_unknown_reason: String::new(),
        };
        let (pressure, thermal) = self.os_specific(&mut hw);
        match pressure {
            Ok(p) => memory.pressure = p as i32,
            Err(e) if memory.unknown_reason.is_empty() => {
                memory.unknown_reason = format!("pressure: {e}")
            }
            Err(_) => {}
        }
        hw.memory = Some(memory);
        hw.thermal = Some(thermal);
        hw
    }

    fn disk(&self) -> Disk {
        let disks = match sysinfo::Disks::new_with_refreshed_list() {
            Ok(d) => d,
            Err(e) => {
                return Disk {
                    unknown_reason: format!("disks: {e}"),
                    ..Disk::default()
                };
            }
        };
        let best = disks
            .iter()
            .filter(|d| self.disk_path.starts_with(d.mount_point()))
            .max_by_key(|d| d.mount_point().as_os_str().len());
        match best {
            Some(d) => Disk {
                total_bytes: d.total_space(),
                available_bytes: d.available_space(),
                unknown_reason: String::new(),
            },
            None => Disk {
                unknown_reason: format!("no mounted disk holds {}", self.disk_path.display()),
                ..Disk::default()
            },
        }
    }

    #[cfg(target_os = "macos")]
    fn os_specific(&self, hw: &mut Hardware) -> (Result<MemoryPressure, String>, Thermal) {
        let pressure = macos::run("sysctl", &["kern.memorystatus_vm_pressure_level"])
            .and_then(|t| macos::parse_vm_pressure_level(&t));
        let thermal = match macos::run("pmset", &["-g", "therm"])
            .and_then(|t| macos::parse_pmset_therm(&t))
        {
            Ok(s) => Thermal {
                state: s as i32,
                temperature_c: 0.0,
                unknown_reason: String::new(),
            },
            Err(e) => Thermal {
                unknown_reason: e,
                ..Thermal::default()
            },
        };
        if let Ok(info) = macos::run("sysctl", &["hw.memsize", "machdep.cpu.brand_string"])
            .and_then(|t| macos::parse_sysctl_hw(&t))
        {
            hw.memory_bandwidth_gbps = macos::chip_bandwidth_gbps(&info.chip).unwrap_or(0.0);
            hw.chip = info.chip;
        }
        (pressure, thermal)
    }

    #[cfg(not(target_os = "macos"))]
    fn os_specific(&self, hw: &mut Hardware) -> (Result<MemoryPressure, String>, Thermal) {
        let pressure = std::fs::read_to_string("/proc/pressure/memory")
            .map_err(|e| format!("/proc/pressure/memory: {e}"))
            .and_then(|t| linux::parse_psi_some_avg10(&t))
            .map(linux::psi_to_pressure);
        let thermal = match linux::read_thermal_zones(&self.thermal_root) {
            Ok(c) => Thermal {
                state: linux::temp_to_state(c) as i32,
                temperature_c: c,
                unknown_reason: String::new(),
            },
            Err(e) => Thermal {
                state: ThermalState::Unknown as i32,
                temperature_c: 0.0,
                unknown_reason: e,
            },
        };
        hw.chip = cpu_brand().unwrap_or_default();
        (pressure, thermal)
    }

    /// Camera or microphone in use (macOS); unknown elsewhere.
    pub async fn meeting(&self) -> Meeting {
        #[cfg(target_os = "macos")]
        {
            tokio::task::spawn_blocking(meeting_macos)
                .await
                .unwrap_or_else(|e| Meeting::Unknown(format!("probe task failed: {e}")))
        }
        #[cfg(not(target_os = "macos"))]
        {
            Meeting::Unknown("meeting detection is only implemented on macOS".into())
        }
    }
}

#[cfg(target_os = "macos")]
fn meeting_macos() -> Meeting {
    let mic = macos::run("ioreg", &["-l", "-w0", "-r", "-c", "IOAudioEngine"])
        .and_then(|t| macos::parse_ioreg_audio_input(&t));
    let cam = macos::run(
        "log",
        &[
            "show",
            "--last",
            "1h",
            "--style",
            "syslog",
            "--predicate",
            "subsystem == \"com.apple.cmio\"",
        ],
    )
    .and_then(|t| macos::parse_cmio_log(&t));
    match (cam, mic) {
        (Ok(true), _) => Meeting::InMeeting("camera in use".into()),
        (_, Ok(true)) => Meeting::InMeeting("microphone in use".into()),
        (Ok(false), Ok(false)) | (Err(_), Ok(false)) => Meeting::Free,
        (Ok(false), Err(e)) => Meeting::Unknown(format!("microphone: {e}")),
        (Err(c), Err(m)) => Meeting::Unknown(format!("camera: {c}; microphone: {m}")),
    }
}

#[cfg(not(target_os = "macos"))]
fn cpu_brand() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "model name").then(|| v.trim().chars().take(128).collect())
    })
}

/// GPUs from `nvidia-smi`; `Err(None)` when there is no such tool (no
/// discrete NVIDIA GPU to report), `Err(Some(reason))` when it failed.
async fn gpus() -> Result<Vec<Gpu>, Option<String>> {
    let run = tokio::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total,memory.used,utilization.gpu,temperature.gpu",
            "--format=csv,noheader,nounits",
        ])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(TOOL_TIMEOUT, run).await {
        Err(_) => {
            return Err(Some(format!(
                "nvidia-smi did not answer in {TOOL_TIMEOUT:?}"
            )));
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return Err(None),
        Ok(Err(e)) => return Err(Some(format!("nvidia-smi: {e}"))),
        Ok(Ok(o)) => o,
    };
    if !out.status.success() {
        return Err(Some(format!("nvidia-smi exited with {}", out.status)));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    linux::parse_nvidia_smi(&text).map_err(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn real_probe_reports_values_or_reasons() {
        let p = Prober::new("/".into());
        let _ = p.hardware().await;
        let hw = p.hardware().await;
        let m = hw.memory.expect("memory");
        assert!(m.total_bytes > 0 || !m.unknown_reason.is_empty());
        let t = hw.thermal.expect("thermal");
        assert!(t.state != 0 || !t.unknown_reason.is_empty());
        let c = hw.cpu.expect("cpu");
        assert!(c.cores > 0, "{c:?}");
        // Second reading: CPU use is known now.
        assert!(!c.unknown_reason.contains("two readings"), "{c:?}");
        let d = hw.disk.expect("disk");
        assert!(d.total_bytes > 0 || !d.unknown_reason.is_empty(), "{d:?}");
        assert!(p.load().is_some());
        #[cfg(not(target_os = "macos"))]
        assert!(matches!(p.meeting().await, Meeting::Unknown(_)));
    }
}
