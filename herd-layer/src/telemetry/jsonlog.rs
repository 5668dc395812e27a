//! The structured JSON log: one JSON object per line, one file per UTC day
//! (`herd-YYYY-MM-DD.jsonl`), oldest files deleted when the directory's
//! total passes a bound. It sits beside the human-readable stderr output
//! (a second `tracing` layer), so operators' tools get JSON and people get text.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Civil date (UTC) of a Unix day number.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (y, m, d) = civil(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

struct State {
    day: String,
    file: Option<File>,
}

/// A `MakeWriter` for `tracing_subscriber`'s JSON layer.
#[derive(Clone)]
pub struct DailyJson {
    dir: PathBuf,
    max_total_bytes: u64,
    state: Arc<Mutex<State>>,
}

impl DailyJson {
    pub fn new(dir: PathBuf, max_total_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(DailyJson {
            dir,
            max_total_bytes,
            state: Arc::new(Mutex::new(State {
                day: String::new(),
                file: None,
            })),
        })
    }

    fn prune(&self) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(String, u64, PathBuf)> = rd
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name().to_string_lossy().starts_with("herd-")
                    && e.file_name().to_string_lossy().ends_with(".jsonl")
            })
            .filter_map(|e| {
                Some((
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().ok()?.len(),
                    e.path(),
                ))
            })
            .collect();
        files.sort();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        // Never delete today's file (the last one).
        for (_, len, path) in files.iter().take(files.len().saturating_sub(1)) {
            if total <= self.max_total_bytes {
                break;
            }
            if std::fs::remove_file(path).is_ok() {
                total -= len;
            }
        }
    }
}

/// One write of one event.
pub struct LineWriter(DailyJson);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut st = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        let day = today();
        if st.day != day || st.file.is_none() {
            let path = self.0.dir.join(format!("herd-{day}.jsonl"));
            st.file = Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            );
            st.day = day;
            drop(st);
            self.0.prune();
            st = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        }
        match st.file.as_mut() {
            Some(f) => f.write(buf),
            None => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for DailyJson {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> LineWriter {
        LineWriter(self.clone())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil(0), (1970, 1, 1));
        assert_eq!(super::civil(19_723), (2024, 1, 1));
        assert_eq!(super::civil(20_513), (2026, 3, 1));
    }
}
