use super::*;

/// A fresh path under the temp dir (not created).
pub(crate) fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "herd-store-{name}-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

pub(crate) fn trace(id: &str, ts_ms: i64, tags: &[&str]) -> TraceRecord {
    TraceRecord {
        seq: 0,
        request_id: id.into(),
        ts_ms,
        format: "ollama".into(),
        kind: "chat".into(),
        model_requested: "m:latest".into(),
        model_served: "m:latest".into(),
        node: Some("a".into()),
        winner: None,
        runner_up: None,
        status: TraceStatus::Completed,
        latency_ms: 10.0,
        ttft_ms: Some(2.0),
        queue_wait_ms: None,
        prompt_tokens: Some(3),
        output_tokens: Some(4),
        load_ms: None,
        retries: 0,
        fallback_used: false,
        excluded: vec![],
        tags: tags.iter().map(|s| s.to_string()).collect(),
        error: None,
        num_ctx: None,
        context_action: None,
        key: None,
    }
}

#[tokio::test]
async fn traces_round_trip_and_tags_are_queryable() {
    let d = dir("rt");
    let s = Store::open(&d, &StoreConfig::default()).unwrap();
    for i in 0..10 {
        let tags: &[&str] = if i % 2 == 0 {
            &["even"]
        } else {
            &["odd", "user:x"]
        };
        s.submit(Write::Trace(Box::new(trace(
            &format!("r{i}"),
            1000 + i,
            tags,
        ))));
    }
    s.flush().await;
    let all = s.all_traces(None).unwrap();
    assert_eq!(all.len(), 10);
    assert_eq!(all[0].request_id, "r0");
    let even = s
        .traces(&TraceFilter {
            tag: Some("even".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(even.len(), 5);
    assert_eq!(even[0].request_id, "r8", "newest first");
    assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
}

#[tokio::test]
async fn a_second_herd_is_refused_and_a_corrupt_file_is_an_error() {
    let d = dir("lock");
    let s = Store::open(&d, &StoreConfig::default()).unwrap();
    let err = Store::open(&d, &StoreConfig::default()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("another herd"), "{err}");
    s.close().await;
    Store::open(&d, &StoreConfig::default()).expect("the lock goes with the store");

    let d2 = dir("corrupt");
    std::fs::create_dir_all(&d2).unwrap();
    std::fs::write(file_in(&d2), vec![0x5au8; 64 * 1024]).unwrap();
    let err = Store::open(&d2, &StoreConfig::default()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("herd.redb"), "{err}");
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_an_older_one_migrated() {
    let d = dir("v1");
    std::fs::create_dir_all(&d).unwrap();
    schema::write_v1(
        &file_in(&d),
        &[trace("old", 5, &["t1"]), trace("old2", 6, &[])],
    );
    let s = Store::open(&d, &StoreConfig::default()).unwrap();
    assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
    assert!(s.keys().unwrap().is_empty(), "the keys table is made");
    let t = s
        .traces(&TraceFilter {
            tag: Some("t1".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(t.len(), 1, "the migration built the tag index");
    s.submit(Write::Trace(Box::new(trace("new", 7, &[]))));
    s.flush().await;
    assert_eq!(s.all_traces(None).unwrap().last().unwrap().seq, 3);
    s.close().await;

    {
        let db = Database::create(file_in(&d)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", 99)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Store::open(&d, &StoreConfig::default()).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
}

#[tokio::test]
async fn retention_drops_old_traces_and_their_tags() {
    let d = dir("ret");
    let cfg = StoreConfig {
        max_age: Duration::from_secs(10),
        ..Default::default()
    };
    let s = Store::open(&d, &cfg).unwrap();
    for i in 0..5 {
        s.submit(Write::Trace(Box::new(trace(
            &format!("o{i}"),
            1_000,
            &["g"],
        ))));
    }
    for i in 0..3 {
        s.submit(Write::Trace(Box::new(trace(
            &format!("n{i}"),
            50_000,
            &["g"],
        ))));
    }
    s.flush().await;
    assert_eq!(s.retain(&cfg, 55_000).unwrap(), 5);
    let left = s.all_traces(None).unwrap();
    assert_eq!(left.len(), 3);
    assert!(left.iter().all(|t| t.request_id.starts_with('n')));
    let g = s
        .traces(&TraceFilter {
            tag: Some("g".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(g.len(), 3);
    // Over the size limit the oldest go even when young.
    let tiny = StoreConfig {
        max_bytes: 1,
        ..cfg
    };
    assert!(s.retain(&tiny, 55_000).unwrap() >= 1);
}

#[tokio::test]
async fn history_survives_a_reopen() {
    let d = dir("perf");
    let h = crate::history::History::new();
    for _ in 0..5 {
        h.record(
            &"a".into(),
            "m",
            &crate::history::Outcome {
                ttft_ms: Some(40.0),
                total_ms: 1040.0,
                output_tokens: Some(100),
                eval_ms: Some(1000.0),
                ok: true,
                ..Default::default()
            },
        );
    }
    {
        let s = Store::open(&d, &StoreConfig::default()).unwrap();
        s.submit(Write::Perf {
            node: "a".into(),
            model: "m:latest".into(),
            book: h.export("a", "m").unwrap(),
        });
        s.close().await;
    }
    let s = Store::open(&d, &StoreConfig::default()).unwrap();
    let h2 = crate::history::History::new();
    for (n, m, b) in s.perf().unwrap() {
        h2.restore(&n, &m, &b);
    }
    assert_eq!(h2.perf("a", "m"), h.perf("a", "m"));
    assert_eq!(h2.perf("a", "m").unwrap().tokens_per_s, 100.0);
}

#[tokio::test]
async fn records_are_dropped_and_counted_when_the_writer_is_behind() {
    let d = dir("behind");
    let cfg = StoreConfig {
        queue: 16,
        batch: 1,
        ..StoreConfig::default()
    };
    let s = Store::open(&d, &cfg).unwrap();
    {
        // The writer stalls as it would on a slow disk or a long compaction:
        // it holds at most one record, the channel 16 more.
        let _stall = s.inner.db.write().unwrap();
        for i in 0..100 {
            s.submit(Write::Trace(Box::new(trace(&format!("r{i}"), i, &[]))));
        }
    }
    s.flush().await;
    let dropped = s.stats().dropped.load(Ordering::Relaxed);
    assert!(dropped >= 100 - 17, "dropped {dropped}");
    assert_eq!(s.all_traces(None).unwrap().len() as u64, 100 - dropped);
}

#[tokio::test]
async fn benchmark_runs_are_kept_over_time_newest_hundred_per_node_model() {
    let d = dir("bench-runs");
    let s = Store::open(&d, &StoreConfig::default()).unwrap();
    let run = |node: &str, ts_ms: i64, ttft_ms: f64| {
        Write::Bench(super::Benchmark {
            node: node.into(),
            model: "m:latest".into(),
            ts_ms,
            ttft_ms,
            tokens_per_s_single: 10.0,
            tokens_per_s_parallel: 20.0,
            parallel: 2,
        })
    };
    for i in 0..(super::BENCH_RUNS_KEPT as i64 + 5) {
        s.submit(run("a", 1_000 + i, i as f64));
    }
    s.submit(run("b", 5, 1.0));
    s.flush().await;
    let runs = s.benchmark_runs().unwrap();
    let a: Vec<f64> = runs
        .iter()
        .filter(|b| b.node == "a")
        .map(|b| b.ttft_ms)
        .collect();
    assert_eq!(a.len(), super::BENCH_RUNS_KEPT);
    assert_eq!(a[0], 5.0, "the oldest five are gone");
    assert_eq!(*a.last().unwrap(), super::BENCH_RUNS_KEPT as f64 + 4.0);
    assert_eq!(runs.iter().filter(|b| b.node == "b").count(), 1);
    // The latest per node:model is still what scoring is calibrated from.
    let latest = s.benchmarks().unwrap();
    assert_eq!(latest.len(), 2);
    assert!(
        latest
            .iter()
            .any(|b| b.node == "a" && b.ttft_ms == super::BENCH_RUNS_KEPT as f64 + 4.0)
    );
}
