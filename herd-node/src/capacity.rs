//! Learned availability: how busy the owner keeps this machine, per hour of
//! the week.
//!
//! 168 slots (Monday 00:00 local time is slot 0). Each sample of CPU and
//! memory use lands in the slot of its hour; older samples fade with a
//! half-life measured in weeks, so a changed routine wins within a few weeks
//! and one odd week does not dominate. The model lives in a redb file on the
//! node and survives restarts.
//!
//! What we do differently from the Python anchor, on purpose: a slot with too
//! little data is **unknown**, not "busy". A new node reports `known = false`
//! (the router's neutral value) instead of being blacked out for a week, and
//! it becomes specific slot by slot as the hours pass.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_proto::v1::Availability;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// Slots in a week.
pub(crate) const SLOTS: usize = 168;

/// Samples minutes apart have decayed a hair; five of them still count as five.
const WEIGHT_SLACK: f64 = 0.01;

const SLOT_TABLE: TableDefinition<'_, u32, &[u8]> = TableDefinition::new("capacity_slots");

/// Where "now" comes from. Tests inject one; production reads the system
/// clock and the local UTC offset.
pub trait Clock: Send + Sync + 'static {
    /// Unix time, milliseconds.
    fn now_ms(&self) -> i64;
    /// Local time minus UTC, seconds (so 09:00 local is the 09:00 slot).
    fn utc_offset_s(&self) -> i64;
}

/// The system clock with a UTC offset read once at start.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    offset_s: i64,
}

impl SystemClock {
    /// Reads the local offset with `date +%z` (works on Linux and macOS);
    /// UTC when that fails. A DST change is picked up at the next restart.
    pub fn local() -> Self {
        let offset_s = std::process::Command::new("date")
            .arg("+%z")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| parse_utc_offset(&s))
            .unwrap_or(0);
        Self { offset_s }
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
    fn utc_offset_s(&self) -> i64 {
        self.offset_s
    }
}

/// `+0200` / `-0530` → seconds.
pub(crate) fn parse_utc_offset(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.len() != 5 {
        return None;
    }
    let sign = match &s[..1] {
        "+" => 1,
        "-" => -1,
        _ => return None,
    };
    let h: i64 = s[1..3].parse().ok()?;
    let m: i64 = s[3..5].parse().ok()?;
    (h <= 14 && m < 60).then_some(sign * (h * 3600 + m * 60))
}

/// Hour-of-week slot of a moment: Monday 00:00–00:59 local is 0.
pub(crate) fn slot_of(unix_ms: i64, utc_offset_s: i64) -> usize {
    let local_s = unix_ms.div_euclid(1000) + utc_offset_s;
    let hours = local_s.div_euclid(3600);
    // 1970-01-01 was a Thursday: hour 0 of the epoch is Thursday 00:00,
    // which is slot 3 * 24 in a Monday-first week.
    (hours + 3 * 24).rem_euclid(SLOTS as i64) as usize
}

/// Tuning of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct CapacityConfig {
    /// A sample's weight halves after this long.
    pub half_life: Duration,
    /// Decayed samples a slot needs before it is trusted.
    pub min_weight: f64,
    /// Share of total memory always left to the owner.
    pub headroom: f64,
}

impl Default for CapacityConfig {
    fn default() -> Self {
        Self {
            half_life: Duration::from_secs(14 * 24 * 3600),
            min_weight: 5.0,
            headroom: 0.10,
        }
    }
}

/// One hour-of-week: decayed sums of samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Slot {
    /// Decayed sample count.
    pub weight: f64,
    /// Decayed sum of CPU use (0..=1 each).
    pub cpu: f64,
    /// Decayed sum of memory use (0..=1 each).
    pub memory: f64,
    /// When the sums were last decayed, Unix ms.
    pub updated_ms: i64,
}

impl Slot {
    fn decayed(&self, now_ms: i64, half_life: Duration) -> Slot {
        let dt = (now_ms - self.updated_ms).max(0) as f64 / 1000.0;
        let f = 0.5f64.powf(dt / half_life.as_secs_f64().max(1.0));
        Slot {
            weight: self.weight * f,
            cpu: self.cpu * f,
            memory: self.memory * f,
            updated_ms: now_ms.max(self.updated_ms),
        }
    }

    fn to_bytes(self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[0..8].copy_from_slice(&self.weight.to_le_bytes());
        b[8..16].copy_from_slice(&self.cpu.to_le_bytes());
        b[16..24].copy_from_slice(&self.memory.to_le_bytes());
        b[24..32].copy_from_slice(&self.updated_ms.to_le_bytes());
        b
    }

    fn from_bytes(b: &[u8]) -> Option<Slot> {
        if b.len() != 32 {
            return None;
        }
        let f = |i: usize| f64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let s = Slot {
            weight: f(0),
            cpu: f(8),
            memory: f(16),
            updated_ms: i64::from_le_bytes(b[24..32].try_into().unwrap_or([0; 8])),
        };
        let sane = s.weight.is_finite()
            && s.weight >= 0.0
            && (0.0..=s.weight + 1e-9).contains(&s.cpu)
            && (0.0..=s.weight + 1e-9).contains(&s.memory);
        sane.then_some(s)
    }
}

/// Why the model could not be opened or saved.
#[derive(Debug, thiserror::Error)]
pub enum CapacityError {
    /// The redb file.
    #[error("capacity store {path}: {message}")]
    Store {
        /// File.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// The 168-slot model, optionally backed by a redb file.
#[derive(Clone)]
pub struct CapacityModel {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<dyn Clock>,
    cfg: CapacityConfig,
}

struct Inner {
    slots: [Slot; SLOTS],
    db: Option<(Database, PathBuf)>,
}

impl std::fmt::Debug for CapacityModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapacityModel")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// What the model says about now.
#[derive(Debug, Clone, PartialEq)]
pub enum Estimate {
    /// Enough data for this hour.
    Known {
        /// 0..=1: 1 = the owner leaves the machine idle at this hour.
        score: f64,
        /// Memory herd may use, bytes.
        memory_ceiling: u64,
    },
    /// Not enough data yet: neutral, with why.
    Unknown(String),
}

impl CapacityModel {
    /// A model in memory only.
    pub fn in_memory(clock: Arc<dyn Clock>, cfg: CapacityConfig) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                slots: [Slot::default(); SLOTS],
                db: None,
            })),
            clock,
            cfg,
        }
    }

    /// Opens (or creates) `dir/capacity.redb` and loads what it learned.
    /// Slots that do not decode are dropped, not trusted.
    pub fn open(
        dir: &Path,
        clock: Arc<dyn Clock>,
        cfg: CapacityConfig,
    ) -> Result<Self, CapacityError> {
        let path = dir.join("capacity.redb");
        let err = |m: String| CapacityError::Store {
            path: path.clone(),
            message: m,
        };
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let db = Database::create(&path).map_err(|e| err(e.to_string()))?;
        {
            let w = db.begin_write().map_err(|e| err(e.to_string()))?;
            w.open_table(SLOT_TABLE).map_err(|e| err(e.to_string()))?;
            w.commit().map_err(|e| err(e.to_string()))?;
        }
        let mut slots = [Slot::default(); SLOTS];
        {
            let r = db.begin_read().map_err(|e| err(e.to_string()))?;
            let t = r.open_table(SLOT_TABLE).map_err(|e| err(e.to_string()))?;
            for row in t.iter().map_err(|e| err(e.to_string()))? {
                let (k, v) = row.map_err(|e| err(e.to_string()))?;
                let i = k.value() as usize;
                if i < SLOTS
                    && let Some(s) = Slot::from_bytes(v.value())
                {
                    slots[i] = s;
                }
            }
        }
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                slots,
                db: Some((db, path)),
            })),
            clock,
            cfg,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The slot of now.
    pub fn current_slot(&self) -> usize {
        slot_of(self.clock.now_ms(), self.clock.utc_offset_s())
    }

    /// Adds one sample (CPU and memory use, 0..=1) at the clock's now and
    /// saves the slot. Out-of-range values are clamped; NaN is ignored.
    pub fn record(&self, cpu: f64, memory: f64) -> Result<(), CapacityError> {
        if !cpu.is_finite() || !memory.is_finite() {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let i = slot_of(now, self.clock.utc_offset_s());
        let mut inner = self.lock();
        let mut s = inner.slots[i].decayed(now, self.cfg.half_life);
        s.weight += 1.0;
        s.cpu += cpu.clamp(0.0, 1.0);
        s.memory += memory.clamp(0.0, 1.0);
        inner.slots[i] = s;
        if let Some((db, path)) = &inner.db {
            let err = |m: String| CapacityError::Store {
                path: path.clone(),
                message: m,
            };
            let w = db.begin_write().map_err(|e| err(e.to_string()))?;
            {
                let mut t = w.open_table(SLOT_TABLE).map_err(|e| err(e.to_string()))?;
                t.insert(i as u32, &s.to_bytes()[..])
                    .map_err(|e| err(e.to_string()))?;
            }
            w.commit().map_err(|e| err(e.to_string()))?;
        }
        Ok(())
    }

    /// The slot's learned availability (1 − decayed mean CPU use), or
    /// `None` while it has too little data.
    pub fn slot_availability(&self, slot: usize) -> Option<f64> {
        let s = self.slot_now(slot)?;
        (s.weight >= self.cfg.min_weight - WEIGHT_SLACK)
            .then(|| (1.0 - s.cpu / s.weight).clamp(0.0, 1.0))
    }

    /// Decayed samples a slot holds now.
    pub fn slot_weight(&self, slot: usize) -> f64 {
        self.slot_now(slot).map_or(0.0, |s| s.weight)
    }

    fn slot_now(&self, slot: usize) -> Option<Slot> {
        let s = *self.lock().slots.get(slot)?;
        Some(s.decayed(self.clock.now_ms(), self.cfg.half_life))
    }

    /// Availability now: the slot's history, blended half and half with the
    /// current CPU use when it is known (the owner may be unusually busy or
    /// idle today), and the memory the owner usually leaves free.
    pub fn estimate(&self, current_cpu: Option<f64>, memory_total: u64) -> Estimate {
        let slot = self.current_slot();
        let Some(s) = self.slot_now(slot) else {
            return Estimate::Unknown("no slot".into());
        };
        if s.weight < self.cfg.min_weight - WEIGHT_SLACK {
            return Estimate::Unknown(format!(
                "learning: {} has {:.1} of {:.0} samples needed; neutral until then",
                slot_name(slot),
                s.weight,
                self.cfg.min_weight
            ));
        }
        let hist = (1.0 - s.cpu / s.weight).clamp(0.0, 1.0);
        let score = match current_cpu.filter(|c| c.is_finite()) {
            Some(c) => 0.5 * hist + 0.5 * (1.0 - c.clamp(0.0, 1.0)),
            None => hist,
        };
        let owner_mem = (s.memory / s.weight).clamp(0.0, 1.0);
        let share = (1.0 - owner_mem - self.cfg.headroom).clamp(0.0, 1.0);
        Estimate::Known {
            score,
            memory_ceiling: (memory_total as f64 * share) as u64,
        }
    }

    /// The report's `availability`.
    pub fn availability(&self, current_cpu: Option<f64>, memory_total: u64) -> Availability {
        match self.estimate(current_cpu, memory_total) {
            Estimate::Known {
                score,
                memory_ceiling,
            } => Availability {
                score,
                known: true,
                memory_ceiling_bytes: memory_ceiling,
                reason: format!("learned for {}", slot_name(self.current_slot())),
            },
            Estimate::Unknown(reason) => Availability {
                score: 0.0,
                known: false,
                memory_ceiling_bytes: 0,
                reason,
            },
        }
    }
}

/// `Tue 14:00` for a slot.
pub(crate) fn slot_name(slot: usize) -> String {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    format!("{} {:02}:00", DAYS[(slot / 24) % 7], slot % 24)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};

    /// A clock tests move by hand.
    #[derive(Default)]
    pub struct ManualClock(AtomicI64);

    impl ManualClock {
        fn set(&self, ms: i64) {
            self.0.store(ms, Ordering::SeqCst);
        }
    }

    impl Clock for ManualClock {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
        fn utc_offset_s(&self) -> i64 {
            0
        }
    }

    /// Monday 2024-01-01 00:00 UTC.
    const MONDAY: i64 = 1_704_067_200_000;
    const HOUR: i64 = 3_600_000;

    #[test]
    fn slots_start_monday_midnight_local() {
        assert_eq!(slot_of(MONDAY, 0), 0);
        assert_eq!(slot_of(MONDAY + 25 * HOUR, 0), 25);
        assert_eq!(slot_of(MONDAY - 1, 0), 167);
        // 23:30 UTC Sunday is 01:30 Monday in UTC+2.
        assert_eq!(slot_of(MONDAY - HOUR / 2, 7200), 1);
        assert_eq!(slot_name(25), "Tue 01:00");
        assert_eq!(parse_utc_offset("+0200\n"), Some(7200));
        assert_eq!(parse_utc_offset("-0530"), Some(-19_800));
        assert_eq!(parse_utc_offset("0200"), None);
    }

    /// The owner works Mon–Fri 09:00–17:00 at 80 % CPU; the machine idles
    /// at 5 % otherwise. One sample a minute for a week.
    fn synthetic_week(m: &CapacityModel, clock: &ManualClock, start: i64) {
        for minute in 0..(7 * 24 * 60) {
            let t = start + minute * 60_000;
            clock.set(t);
            let slot = slot_of(t, 0);
            let (day, hour) = (slot / 24, slot % 24);
            let busy = day < 5 && (9..17).contains(&hour);
            let (cpu, mem) = if busy { (0.8, 0.6) } else { (0.05, 0.2) };
            m.record(cpu, mem).unwrap();
        }
    }

    #[test]
    fn new_node_is_neutral_not_blacked_out() {
        let clock = Arc::new(ManualClock::default());
        clock.set(MONDAY + 10 * HOUR);
        let m = CapacityModel::in_memory(clock.clone(), CapacityConfig::default());
        let a = m.availability(Some(0.1), 1 << 30);
        assert!(!a.known, "{a:?}");
        assert!(a.reason.contains("learning"), "{}", a.reason);
        assert_eq!(a.memory_ceiling_bytes, 0, "no ceiling while unknown");
        // Five samples in this hour make it known — not a week.
        for i in 0..5 {
            clock.set(MONDAY + 10 * HOUR + i * 60_000);
            m.record(0.1, 0.2).unwrap();
        }
        assert!(m.availability(None, 1 << 30).known);
    }

    #[test]
    fn a_week_of_samples_gives_per_slot_availability() {
        let clock = Arc::new(ManualClock::default());
        let m = CapacityModel::in_memory(clock.clone(), CapacityConfig::default());
        synthetic_week(&m, &clock, MONDAY);
        for slot in 0..SLOTS {
            let (day, hour) = (slot / 24, slot % 24);
            let busy = day < 5 && (9..17).contains(&hour);
            let a = m
                .slot_availability(slot)
                .expect("every slot has 60 samples");
            let want = if busy { 0.2 } else { 0.95 };
            assert!((a - want).abs() < 1e-6, "slot {slot}: {a} != {want}");
        }
        // Wednesday 10:00: historically busy, and the memory ceiling leaves
        // the owner's 60 % plus 10 % headroom.
        clock.set(MONDAY + 7 * 24 * HOUR + 2 * 24 * HOUR + 10 * HOUR);
        match m.estimate(None, 100) {
            Estimate::Known {
                score,
                memory_ceiling,
            } => {
                assert!((score - 0.2).abs() < 0.01, "{score}");
                assert!((29..=30).contains(&memory_ceiling), "{memory_ceiling}");
            }
            e => panic!("{e:?}"),
        }
        // Saturday 10:00 is free; today the owner is busy anyway.
        clock.set(MONDAY + 7 * 24 * HOUR + 5 * 24 * HOUR + 10 * HOUR);
        match m.estimate(Some(0.9), 100) {
            Estimate::Known { score, .. } => assert!((score - 0.525).abs() < 0.01, "{score}"),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn old_weeks_fade() {
        let clock = Arc::new(ManualClock::default());
        let m = CapacityModel::in_memory(clock.clone(), CapacityConfig::default());
        synthetic_week(&m, &clock, MONDAY);
        // Six weeks later the owner has stopped working Mondays at 10:00.
        let later = MONDAY + 6 * 7 * 24 * HOUR + 10 * HOUR;
        for i in 0..60 {
            clock.set(later + i * 60_000);
            m.record(0.05, 0.2).unwrap();
        }
        let a = m.slot_availability(10).unwrap();
        // Old weight 60 × 0.5^3 = 7.5 busy samples vs 60 idle ones.
        assert!(a > 0.85, "{a}");
        // A slot not touched for long enough falls back to unknown.
        clock.set(MONDAY + 20 * 7 * 24 * HOUR + 11 * HOUR);
        assert_eq!(m.slot_availability(11), None);
    }

    #[test]
    fn persistence_survives_restart() {
        let dir = std::env::temp_dir().join(format!("herd-capacity-{}", fastrand::u64(..)));
        let clock = Arc::new(ManualClock::default());
        {
            let m = CapacityModel::open(&dir, clock.clone(), CapacityConfig::default()).unwrap();
            synthetic_week(&m, &clock, MONDAY);
        }
        let m = CapacityModel::open(&dir, clock.clone(), CapacityConfig::default()).unwrap();
        let busy = m.slot_availability(10).unwrap();
        let idle = m.slot_availability(3).unwrap();
        assert!((busy - 0.2).abs() < 1e-6 && (idle - 0.95).abs() < 1e-6);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupt_slots_are_dropped_not_trusted() {
        assert_eq!(Slot::from_bytes(&[0; 5]), None);
        let bad = Slot {
            weight: 1.0,
            cpu: 5.0,
            memory: 0.0,
            updated_ms: 0,
        };
        assert_eq!(Slot::from_bytes(&bad.to_bytes()), None);
        let nan = Slot {
            weight: f64::NAN,
            ..Slot::default()
        };
        assert_eq!(Slot::from_bytes(&nan.to_bytes()), None);
    }
}
