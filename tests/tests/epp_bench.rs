//! Benchmark (figures printed, not asserted): herd-epp's scheduling time per
//! pick, and the end-to-end latency Envoy+herd-epp adds over Envoy with plain
//! round robin on the same fleet, in one run.
//!
//! Run with: cargo nextest run -p herd-tests -E 'test(epp_bench)' --no-capture

use std::time::{Duration, Instant};

use herd_tests::envoy::*;
use herd_tests::*;

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn fast(name: &str) -> herd_node::DeviceConfig {
    herd_node::DeviceConfig {
        speed: 5000.0,
        ttft_base_ms: 1,
        ttft_ms_per_prompt_token: 0.0,
        ..device(name, 64, vec![model("m:8b", 2.0)], &["m:8b"])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epp_bench_scheduling_time_and_added_latency() {
    let fleet = start_epp(epp_config(), vec![fast("a"), fast("b"), fast("c")]).await;
    let mut o = EnvoyOpts::new(fleet.epp.grpc_addr, BodyMode::FullDuplex);
    o.round_robin = Some(fleet.addrs());
    let envoy = Envoy::start(&o).await;
    let c = client();
    let body = serde_json::json!({
        "model": "m:8b", "stream": false,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 8,
    });
    let n = 300;
    let run = async |url: String| {
        for _ in 0..20 {
            assert_eq!(post(&c, &url, body.clone()).await.status, 200);
        }
        let mut lat = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let r = post(&c, &url, body.clone()).await;
            lat.push(t.elapsed());
            assert_eq!(r.status, 200, "{}", r.text());
        }
        lat
    };
    let before = fleet.epp.metrics.recent_picks().len();
    let mut epp = run(format!("{}/v1/chat/completions", envoy.url())).await;
    let mut picks: Vec<Duration> = fleet.epp.metrics.recent_picks()[before..].to_vec();
    let mut rr = run(format!("{}/v1/chat/completions", envoy.rr_url())).await;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (e50, e99, r50, r99) = (
        pct(&mut epp, 0.5),
        pct(&mut epp, 0.99),
        pct(&mut rr, 0.5),
        pct(&mut rr, 0.99),
    );
    println!(
        "herd-epp bench ({n} sequential non-streamed chat requests, 3 simulated devices, debug build, loopback)"
    );
    println!(
        "  scheduling per pick: p50 {:.3} ms  p99 {:.3} ms  ({} picks)",
        ms(pct(&mut picks, 0.5)),
        ms(pct(&mut picks, 0.99)),
        picks.len()
    );
    println!(
        "  Envoy + herd-epp (FULL_DUPLEX_STREAMED): p50 {:.2} ms  p99 {:.2} ms",
        ms(e50),
        ms(e99)
    );
    println!(
        "  Envoy round robin:                       p50 {:.2} ms  p99 {:.2} ms",
        ms(r50),
        ms(r99)
    );
    println!(
        "  added by herd-epp:                       p50 {:+.2} ms  p99 {:+.2} ms",
        ms(e50) - ms(r50),
        ms(e99) - ms(r99)
    );
    assert!(picks.len() >= n);
    drop(envoy);
    fleet.shutdown().await;
}
