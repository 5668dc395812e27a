//! macOS probes: parsers for the output of the system's own commands.
//!
//! The parsers are plain functions compiled and tested on every OS against
//! committed fixtures (`tests/fixtures/macos/`), because CI and most of us
//! run Linux; only the functions that *run* the commands are behind
//! `cfg(target_os = "macos")`. Every parser returns `Err(reason)` on output
//! it does not recognise — a report then says `unknown` with that reason
//! instead of guessing, and nothing here can panic on odd input.

use herd_proto::v1::{MemoryPressure, ThermalState};

/// `sysctl kern.memorystatus_vm_pressure_level` → pressure.
///
/// The kernel reports 1 (normal), 2 (warn) or 4 (critical).
pub fn parse_vm_pressure_level(text: &str) -> Result<MemoryPressure, String> {
    let v = sysctl_value(text, "kern.memorystatus_vm_pressure_level")
        .ok_or("no kern.memorystatus_vm_pressure_level in sysctl output")?;
    match v.trim() {
        "1" => Ok(MemoryPressure::Normal),
        "2" => Ok(MemoryPressure::Warn),
        "4" => Ok(MemoryPressure::Critical),
        other => Err(format!("unexpected memory pressure level {other:?}")),
    }
}

/// What `memory_pressure` (no arguments) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPressureReport {
    /// Physical memory, bytes.
    pub total_bytes: u64,
    /// "System-wide memory free percentage", 0..=100.
    pub free_percent: u8,
}

/// Parses `memory_pressure`: the first line gives the size, the last the
/// free percentage.
pub fn parse_memory_pressure(text: &str) -> Result<MemoryPressureReport, String> {
    let total_bytes = text
        .lines()
        .find_map(|l| {
            let rest = l.trim().strip_prefix("The system has ")?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .ok_or("no \"The system has N\" line in memory_pressure output")?;
    let free_percent = text
        .lines()
        .find_map(|l| {
            let rest = l
                .trim()
                .strip_prefix("System-wide memory free percentage:")?;
            rest.trim().strip_suffix('%')?.trim().parse::<u8>().ok()
        })
        .filter(|p| *p <= 100)
        .ok_or("no valid \"System-wide memory free percentage\" in memory_pressure output")?;
    Ok(MemoryPressureReport {
        total_bytes,
        free_percent,
    })
}

/// Parses `pmset -g therm`.
///
/// macOS prints "Note: No thermal warning level has been recorded" when it
/// never throttled, a "Thermal Warning Level: N" line when it has, and a
/// `CPU_Speed_Limit` (percent of full speed) when it limited the CPU. The
/// worse of the two decides: a speed limit below 100 is `fair`, below 80
/// `serious`, below 50 `critical`; a warning level above 0 is at least
/// `serious`.
pub fn parse_pmset_therm(text: &str) -> Result<ThermalState, String> {
    let mut seen = false;
    let mut state = ThermalState::Nominal;
    let worse = |a: ThermalState, b: ThermalState| if (b as i32) > (a as i32) { b } else { a };
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("Note: No thermal warning level") {
            seen = true;
        } else if let Some(i) = l.find("Thermal Warning Level:") {
            seen = true;
            let n: u32 = l[i + "Thermal Warning Level:".len()..]
                .trim()
                .parse()
                .map_err(|_| format!("unreadable thermal warning level in {l:?}"))?;
            if n > 0 {
                state = worse(state, ThermalState::Serious);
            }
        } else if let Some(rest) = l.strip_prefix("CPU_Speed_Limit") {
            seen = true;
            let v: u32 = rest
                .trim()
                .trim_start_matches('=')
                .trim()
                .parse()
                .map_err(|_| format!("unreadable CPU_Speed_Limit in {l:?}"))?;
            let s = match v {
                100.. => ThermalState::Nominal,
                80..=99 => ThermalState::Fair,
                50..=79 => ThermalState::Serious,
                _ => ThermalState::Critical,
            };
            state = worse(state, s);
        }
    }
    if seen {
        Ok(state)
    } else {
        Err("pmset -g therm printed nothing we recognise".into())
    }
}

/// `sysctl hw.memsize machdep.cpu.brand_string`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineInfo {
    /// Physical memory, bytes.
    pub memsize: u64,
    /// e.g. `Apple M2 Max`.
    pub chip: String,
}

/// Parses `sysctl hw.memsize machdep.cpu.brand_string`.
pub fn parse_sysctl_hw(text: &str) -> Result<MachineInfo, String> {
    let memsize = sysctl_value(text, "hw.memsize")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|m| *m > 0)
        .ok_or("no valid hw.memsize in sysctl output")?;
    let chip = sysctl_value(text, "machdep.cpu.brand_string")
        .map(|v| v.trim().to_owned())
        .filter(|c| !c.is_empty() && c.len() <= 128)
        .ok_or("no machdep.cpu.brand_string in sysctl output")?;
    Ok(MachineInfo { memsize, chip })
}

/// Unified memory bandwidth of an Apple chip in GB/s (Apple's published
/// figures; the higher-binned variant where a chip has two), or `None` for a
/// chip we do not know — better no number than a wrong one.
pub fn chip_bandwidth_gbps(chip: &str) -> Option<f64> {
    let c = chip.trim();
    let c = c.strip_prefix("Apple ").unwrap_or(c);
    let table: &[(&str, f64)] = &[
        ("M1", 68.25),
        ("M1 Pro", 200.0),
        ("M1 Max", 400.0),
        ("M1 Ultra", 800.0),
        ("M2", 100.0),
        ("M2 Pro", 200.0),
        ("M2 Max", 400.0),
        ("M2 Ultra", 800.0),
        ("M3", 100.0),
        ("M3 Pro", 150.0),
        ("M3 Max", 400.0),
        ("M3 Ultra", 819.0),
        ("M4", 120.0),
        ("M4 Pro", 273.0),
        ("M4 Max", 546.0),
        ("M5", 153.0),
    ];
    table.iter().find(|(n, _)| *n == c).map(|(_, b)| *b)
}

/// Whether a microphone or other audio input is running, from
/// `ioreg -l -w0 -r -c IOAudioEngine`: an engine with
/// `"IOAudioEngineState" = 1` and input direction (2) or active user
/// clients. `Err` when the output has no audio engine at all.
pub fn parse_ioreg_audio_input(text: &str) -> Result<bool, String> {
    let mut engines = 0;
    let mut state_on = false;
    let mut input = false;
    let mut any = false;
    let mut flush = |state_on: &mut bool, input: &mut bool| {
        if *state_on && *input {
            any = true;
        }
        *state_on = false;
        *input = false;
    };
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("+-o ") || l.starts_with("| +-o") {
            flush(&mut state_on, &mut input);
            engines += 1;
        } else if let Some(v) = l.strip_prefix("\"IOAudioEngineState\" =") {
            state_on = v.trim() == "1";
        } else if let Some(v) = l.strip_prefix("\"IOAudioEngineDirection\" =") {
            input = v.trim() == "2";
        }
    }
    flush(&mut state_on, &mut input);
    if engines == 0 {
        return Err("ioreg listed no audio engines".into());
    }
    Ok(any)
}

/// Whether the camera is streaming, from
/// `log show --last 1h --predicate 'subsystem == "com.apple.cmio"'`: the
/// last `startStream`/`stopStream` event wins. `Err` when neither appears
/// (we cannot tell "never used" from "log not readable").
pub fn parse_cmio_log(text: &str) -> Result<bool, String> {
    let mut last = None;
    for line in text.lines() {
        let l = line.to_ascii_lowercase();
        if l.contains("stopstream") || l.contains("streamstopped") {
            last = Some(false);
        } else if l.contains("startstream") || l.contains("streamstarted") {
            last = Some(true);
        }
    }
    last.ok_or_else(|| "no camera stream events in the log window".into())
}

/// The value of `name: value` in sysctl output.
fn sysctl_value<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then_some(v)
    })
}

/// Runs a command with a timeout and returns its stdout.
#[cfg(target_os = "macos")]
pub(crate) fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd} exited with {}", out.status));
    }
    String::from_utf8(out.stdout).map_err(|_| format!("{cmd} printed non-UTF-8 output"))
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../../tests/fixtures/macos/", $name))
        };
    }

    #[test]
    fn vm_pressure_levels() {
        assert_eq!(
            parse_vm_pressure_level(fixture!("sysctl_pressure_normal.txt")),
            Ok(MemoryPressure::Normal)
        );
        assert_eq!(
            parse_vm_pressure_level(fixture!("sysctl_pressure_warn.txt")),
            Ok(MemoryPressure::Warn)
        );
        assert_eq!(
            parse_vm_pressure_level(fixture!("sysctl_pressure_critical.txt")),
            Ok(MemoryPressure::Critical)
        );
        assert!(parse_vm_pressure_level("kern.memorystatus_vm_pressure_level: 3").is_err());
        assert!(parse_vm_pressure_level("sysctl: unknown oid").is_err());
        assert!(parse_vm_pressure_level("").is_err());
    }

    #[test]
    fn memory_pressure_tool() {
        assert_eq!(
            parse_memory_pressure(fixture!("memory_pressure.txt")),
            Ok(MemoryPressureReport {
                total_bytes: 34_359_738_368,
                free_percent: 57
            })
        );
        assert!(parse_memory_pressure("System-wide memory free percentage: 57%").is_err());
        assert!(
            parse_memory_pressure("The system has 1 (x)\nSystem-wide memory free percentage: 300%")
                .is_err()
        );
    }

    #[test]
    fn pmset_thermal_states() {
        assert_eq!(
            parse_pmset_therm(fixture!("pmset_therm_nominal.txt")),
            Ok(ThermalState::Nominal)
        );
        assert_eq!(
            parse_pmset_therm(fixture!("pmset_therm_throttled.txt")),
            Ok(ThermalState::Serious)
        );
        assert_eq!(
            parse_pmset_therm(fixture!("pmset_therm_warning.txt")),
            Ok(ThermalState::Critical)
        );
        assert!(parse_pmset_therm("").is_err());
        assert!(parse_pmset_therm("CPU_Speed_Limit = lots").is_err());
    }

    #[test]
    fn chip_and_memory() {
        let m = parse_sysctl_hw(fixture!("sysctl_hw_m2max.txt")).unwrap();
        assert_eq!(m.memsize, 64 * 1024 * 1024 * 1024);
        assert_eq!(m.chip, "Apple M2 Max");
        assert_eq!(chip_bandwidth_gbps(&m.chip), Some(400.0));
        let intel = parse_sysctl_hw(fixture!("sysctl_hw_intel.txt")).unwrap();
        assert_eq!(chip_bandwidth_gbps(&intel.chip), None);
        assert_eq!(chip_bandwidth_gbps("Apple M4 Pro"), Some(273.0));
        assert_eq!(chip_bandwidth_gbps("Apple M9 Hyper"), None);
        assert!(parse_sysctl_hw("hw.memsize: zero").is_err());
        assert!(parse_sysctl_hw("hw.memsize: 1024\n").is_err(), "no chip");
    }

    #[test]
    fn meeting_signals() {
        assert_eq!(
            parse_ioreg_audio_input(fixture!("ioreg_audio_in_use.txt")),
            Ok(true)
        );
        assert_eq!(
            parse_ioreg_audio_input(fixture!("ioreg_audio_idle.txt")),
            Ok(false)
        );
        assert!(parse_ioreg_audio_input("").is_err());
        assert_eq!(parse_cmio_log(fixture!("log_cmio_streaming.txt")), Ok(true));
        assert_eq!(parse_cmio_log(fixture!("log_cmio_stopped.txt")), Ok(false));
        assert!(parse_cmio_log("Timestamp Thread Type\n").is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let inputs = [
            "\u{0}\u{1}",
            ":::",
            "hw.memsize:",
            "Thermal Warning Level:",
            "+-o\n\"IOAudioEngineState\" =",
            "The system has \nSystem-wide memory free percentage: %",
            &"x".repeat(100_000),
        ];
        for i in inputs {
            let _ = parse_vm_pressure_level(i);
            let _ = parse_memory_pressure(i);
            let _ = parse_pmset_therm(i);
            let _ = parse_sysctl_hw(i);
            let _ = parse_ioreg_audio_input(i);
            let _ = parse_cmio_log(i);
            let _ = chip_bandwidth_gbps(i);
        }
    }
}
