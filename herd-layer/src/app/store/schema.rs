//! The store's tables and its schema version, with migrations run on open.
//!
//! Version 1 had traces, history, benchmarks and settings. Version 2 added the
//! tag index (`trace_tags`); opening a version-1 file builds it from the
//! traces. Version 3 added the client API keys (`api_keys`, by name; only
//! their hashes) and the history of benchmark runs (`benchmark_runs`, by
//! node, model and time; `benchmarks` keeps the latest of each). A file from a newer herd is refused rather than misread:
//! an older herd would not see the keys and would leave the router open.

use std::path::Path;

use redb::{Database, MultimapTableDefinition, ReadableDatabase, ReadableTable, TableDefinition};

use super::{StoreError, TraceRecord};

/// The schema version this herd writes, and the newest it reads.
pub const SCHEMA_VERSION: u64 = 3;

pub(super) const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
pub(super) const TRACES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("traces");
pub(super) const TAGS: MultimapTableDefinition<'_, &str, u64> =
    MultimapTableDefinition::new("trace_tags");
pub(super) const PERF: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("perf");
pub(super) const BENCH: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("benchmarks");
pub(super) const SETTINGS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("settings");
pub(super) const KEYS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("api_keys");
pub(super) const BENCH_RUNS: TableDefinition<'_, &str, &[u8]> =
    TableDefinition::new("benchmark_runs");

fn db(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

/// Check the version, migrate an older file, create a fresh one.
pub(super) fn prepare(database: &Database, path: &Path) -> Result<(), StoreError> {
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt {
        path: path.to_path_buf(),
        cause: e.to_string(),
    };
    let found = {
        let txn = database.begin_read().map_err(|e| corrupt(&e))?;
        match txn.open_table(META) {
            Ok(t) => t
                .get("schema_version")
                .map_err(|e| corrupt(&e))?
                .map(|v| v.value())
                .unwrap_or(0),
            Err(redb::TableError::TableDoesNotExist(_)) => 0,
            Err(e) => return Err(corrupt(&e)),
        }
    };
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    let txn = database.begin_write().map_err(db)?;
    {
        txn.open_table(TRACES).map_err(db)?;
        txn.open_table(PERF).map_err(db)?;
        txn.open_table(BENCH).map_err(db)?;
        txn.open_table(SETTINGS).map_err(db)?;
        // 2 → 3: the keys table (created empty).
        txn.open_table(KEYS).map_err(db)?;
        // …and the benchmark history (created empty).
        txn.open_table(BENCH_RUNS).map_err(db)?;
        let mut tags = txn.open_multimap_table(TAGS).map_err(db)?;
        if found == 1 {
            // 1 → 2: build the tag index from the stored traces.
            let traces = txn.open_table(TRACES).map_err(db)?;
            let mut n = 0u64;
            for row in traces.iter().map_err(db)? {
                let (k, v) = row.map_err(db)?;
                if let Ok(t) = serde_json::from_slice::<TraceRecord>(v.value()) {
                    for g in &t.tags {
                        tags.insert(g.as_str(), k.value()).map_err(db)?;
                    }
                    n += 1;
                }
            }
            tracing::info!(path = %path.display(), traces = n, "store migrated from schema 1 to 2 (tag index built)");
        }
        let mut meta = txn.open_table(META).map_err(db)?;
        meta.insert("schema_version", SCHEMA_VERSION).map_err(db)?;
    }
    txn.commit().map_err(db)?;
    Ok(())
}

/// Write a version-1 file (tests of the migration).
#[cfg(test)]
pub(super) fn write_v1(path: &Path, traces: &[TraceRecord]) {
    let d = Database::create(path).unwrap();
    let txn = d.begin_write().unwrap();
    {
        let mut meta = txn.open_table(META).unwrap();
        meta.insert("schema_version", 1).unwrap();
        meta.insert("next_seq", traces.len() as u64 + 1).unwrap();
        let mut t = txn.open_table(TRACES).unwrap();
        for (i, r) in traces.iter().enumerate() {
            t.insert(i as u64 + 1, serde_json::to_vec(r).unwrap().as_slice())
                .unwrap();
        }
        txn.open_table(PERF).unwrap();
        txn.open_table(BENCH).unwrap();
        txn.open_table(SETTINGS).unwrap();
    }
    txn.commit().unwrap();
}
