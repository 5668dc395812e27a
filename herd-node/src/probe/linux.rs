//! Linux probes that sysinfo does not cover: memory pressure from PSI,
//! thermal zones from sysfs, GPUs from `nvidia-smi`.
//!
//! Parsers are pure and tested against fixtures on every OS; the readers are
//! thin and say why they failed.

use std::path::Path;

use herd_proto::v1::{Gpu, MemoryPressure, ThermalState};

/// `/proc/pressure/memory`: the share of time (avg10, percent) in which some
/// task stalled on memory.
pub fn parse_psi_some_avg10(text: &str) -> Result<f64, String> {
    let line = text
        .lines()
        .find(|l| l.starts_with("some "))
        .ok_or("no \"some\" line in PSI output")?;
    let v = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("avg10="))
        .ok_or("no avg10 in PSI output")?;
    let v: f64 = v.parse().map_err(|_| format!("unreadable avg10 {v:?}"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("avg10 {v} is out of range"));
    }
    Ok(v)
}

/// PSI stall share → pressure level. A few percent of stall is already
/// felt by the owner; tens of percent means the machine is thrashing.
pub fn psi_to_pressure(some_avg10: f64) -> MemoryPressure {
    if some_avg10 >= 25.0 {
        MemoryPressure::Critical
    } else if some_avg10 >= 5.0 {
        MemoryPressure::Warn
    } else {
        MemoryPressure::Normal
    }
}

/// Millidegrees from a `thermal_zone*/temp` file → degrees Celsius.
pub fn parse_thermal_millideg(text: &str) -> Result<f64, String> {
    let m: i64 = text
        .trim()
        .parse()
        .map_err(|_| format!("unreadable temperature {:?}", text.trim()))?;
    let c = m as f64 / 1000.0;
    if !(-50.0..=150.0).contains(&c) {
        return Err(format!("temperature {c} °C is implausible"));
    }
    Ok(c)
}

/// Hottest zone → state, using common laptop/desktop trip points.
pub fn temp_to_state(celsius: f64) -> ThermalState {
    if celsius >= 95.0 {
        ThermalState::Critical
    } else if celsius >= 85.0 {
        ThermalState::Serious
    } else if celsius >= 75.0 {
        ThermalState::Fair
    } else {
        ThermalState::Nominal
    }
}

/// The hottest readable zone under `root` (normally `/sys/class/thermal`).
pub fn read_thermal_zones(root: &Path) -> Result<f64, String> {
    let dir = std::fs::read_dir(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let mut hottest: Option<f64> = None;
    let mut last_err = None;
    for entry in dir.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("thermal_zone") {
            continue;
        }
        match std::fs::read_to_string(entry.path().join("temp"))
            .map_err(|e| e.to_string())
            .and_then(|t| parse_thermal_millideg(&t))
        {
            Ok(c) => hottest = Some(hottest.map_or(c, |h: f64| h.max(c))),
            Err(e) => last_err = Some(e),
        }
    }
    hottest.ok_or_else(|| {
        last_err.unwrap_or_else(|| format!("no thermal zones under {}", root.display()))
    })
}

/// Parses `nvidia-smi --query-gpu=name,memory.total,memory.used,utilization.gpu,temperature.gpu
/// --format=csv,noheader,nounits` (memory in MiB, utilization in percent).
pub fn parse_nvidia_smi(text: &str) -> Result<Vec<Gpu>, String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() != 5 {
            return Err(format!("expected 5 CSV fields, got {}: {line:?}", f.len()));
        }
        let mib = |s: &str| -> Result<u64, String> {
            s.parse::<u64>()
                .ok()
                .and_then(|m| m.checked_mul(1024 * 1024))
                .ok_or_else(|| format!("unreadable memory {s:?}"))
        };
        // "[N/A]" is what nvidia-smi prints for an unsupported field.
        let num = |s: &str| s.parse::<f64>().ok().filter(|v| v.is_finite());
        out.push(Gpu {
            name: f[0].chars().take(128).collect(),
            memory_total_bytes: mib(f[1])?,
            memory_used_bytes: mib(f[2])?,
            utilization: num(f[3]).map_or(0.0, |u| (u / 100.0).clamp(0.0, 1.0)),
            temperature_c: num(f[4]).unwrap_or(0.0),
        });
    }
    if out.is_empty() {
        return Err("nvidia-smi listed no GPUs".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_reads_some_avg10() {
        let text = include_str!("../../tests/fixtures/linux/pressure_memory.txt");
        assert_eq!(parse_psi_some_avg10(text), Ok(12.5));
        assert_eq!(psi_to_pressure(12.5), MemoryPressure::Warn);
        assert_eq!(psi_to_pressure(0.0), MemoryPressure::Normal);
        assert_eq!(psi_to_pressure(40.0), MemoryPressure::Critical);
        assert!(parse_psi_some_avg10("full avg10=1.0").is_err());
        assert!(parse_psi_some_avg10("some avg10=abc").is_err());
        assert!(parse_psi_some_avg10("some avg10=500").is_err());
    }

    #[test]
    fn thermal_zone_values() {
        assert_eq!(parse_thermal_millideg("45000\n"), Ok(45.0));
        assert!(parse_thermal_millideg("-274000").is_err());
        assert!(parse_thermal_millideg("hot").is_err());
        assert_eq!(temp_to_state(45.0), ThermalState::Nominal);
        assert_eq!(temp_to_state(90.0), ThermalState::Serious);
    }

    #[test]
    fn thermal_zones_pick_the_hottest() {
        let dir = std::env::temp_dir().join(format!("herd-thermal-{}", fastrand::u64(..)));
        for (z, t) in [("thermal_zone0", "41000"), ("thermal_zone1", "67500")] {
            std::fs::create_dir_all(dir.join(z)).unwrap();
            std::fs::write(dir.join(z).join("temp"), t).unwrap();
        }
        std::fs::create_dir_all(dir.join("cooling_device0")).unwrap();
        assert_eq!(read_thermal_zones(&dir), Ok(67.5));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(read_thermal_zones(Path::new("/nonexistent/thermal")).is_err());
    }

    #[test]
    fn nvidia_smi_csv() {
        let g =
            parse_nvidia_smi(include_str!("../../tests/fixtures/linux/nvidia_smi.csv")).unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].name, "NVIDIA GeForce RTX 4090");
        assert_eq!(g[0].memory_total_bytes, 24_564 * 1024 * 1024);
        assert!((g[1].utilization - 0.93).abs() < 1e-9);
        assert_eq!(g[1].temperature_c, 77.0);
        let na = parse_nvidia_smi("Tesla T4, 15360, 0, [N/A], [N/A]").unwrap();
        assert_eq!(na[0].utilization, 0.0);
        assert!(parse_nvidia_smi("").is_err());
        assert!(parse_nvidia_smi("a, b").is_err());
        assert!(parse_nvidia_smi("x, lots, 1, 2, 3").is_err());
    }
}
