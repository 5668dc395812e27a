//! The herd.v1 attachment, driven by hand: a dropped stream marks the node
//! offline at once, a silent one after the report timeout, and bad input is
//! refused with a reason.

use std::time::Duration;

use herd_layer::proto::{self, fleet_client::FleetClient, node_message, router_message};
use herd_tests::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn hello(id: &str, version: u32) -> proto::NodeMessage {
    proto::NodeMessage {
        msg: Some(node_message::Msg::Hello(proto::Hello {
            node_id: id.into(),
            protocol_version: version,
            agent_version: "test".into(),
            fleet_token: String::new(),
        })),
    }
}

fn report(id: &str, url: &str) -> proto::NodeMessage {
    proto::NodeMessage {
        msg: Some(node_message::Msg::Report(proto::NodeReport {
            node_id: id.into(),
            ollama_url: url.into(),
            engine: Some(proto::EngineState {
                kind: proto::EngineKind::Ollama as i32,
                reachable: true,
                ..Default::default()
            }),
            ..Default::default()
        })),
    }
}

async fn attach(
    url: &str,
) -> (
    mpsc::Sender<proto::NodeMessage>,
    tonic::Streaming<proto::RouterMessage>,
) {
    let mut client = FleetClient::connect(url.to_string())
        .await
        .expect("connect");
    let (tx, rx) = mpsc::channel(8);
    let inbound = client
        .attach(ReceiverStream::new(rx))
        .await
        .expect("attach")
        .into_inner();
    (tx, inbound)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_streams_go_offline_at_once_and_silent_ones_after_the_timeout() {
    let fleet = start(router_config(), vec![]).await;
    let url = fleet.url();

    let (tx, mut inbound) = attach(&url).await;
    tx.send(hello("manual", 1)).await.unwrap();
    let welcome = inbound.message().await.unwrap().unwrap();
    assert!(matches!(welcome.msg, Some(router_message::Msg::Welcome(_))));
    tx.send(report("manual", "http://127.0.0.1:9"))
        .await
        .unwrap();
    fleet
        .wait_for("node online", |v| {
            v.node("manual").is_some_and(|n| n.online)
        })
        .await;

    // Silent: the stream stays open but no report comes.
    let silent_since = tokio::time::Instant::now();
    fleet
        .wait_for("silent node offline", |v| {
            v.node("manual").is_some_and(|n| !n.online)
        })
        .await;
    let took = silent_since.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "offline too early: {took:?}"
    );
    let reason = fleet
        .router
        .fleet
        .snapshot()
        .node("manual")
        .unwrap()
        .offline_reason
        .clone()
        .unwrap();
    assert!(reason.contains("no report"), "{reason}");

    // Reporting again brings it back; dropping the stream takes it down at once.
    tx.send(report("manual", "http://127.0.0.1:9"))
        .await
        .unwrap();
    fleet
        .wait_for("node back", |v| v.node("manual").is_some_and(|n| n.online))
        .await;
    let dropped_at = tokio::time::Instant::now();
    drop(tx);
    drop(inbound);
    fleet
        .wait_for("dropped node offline", |v| {
            v.node("manual").is_some_and(|n| !n.online)
        })
        .await;
    assert!(
        dropped_at.elapsed() < Duration::from_millis(1500),
        "not at once: {:?}",
        dropped_at.elapsed()
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_hellos_are_rejected_with_a_reason_and_bad_reports_ignored() {
    let fleet = start(router_config(), vec![]).await;
    let url = fleet.url();

    let (tx, mut inbound) = attach(&url).await;
    tx.send(hello("n1", 99)).await.unwrap();
    match inbound.message().await.unwrap().unwrap().msg {
        Some(router_message::Msg::Rejected(r)) => {
            assert!(r.reason.contains("protocol version 99"), "{}", r.reason)
        }
        other => panic!("expected Rejected, got {other:?}"),
    }

    let (tx, mut inbound) = attach(&url).await;
    tx.send(hello("bad id with spaces", 1)).await.unwrap();
    assert!(matches!(
        inbound.message().await.unwrap().unwrap().msg,
        Some(router_message::Msg::Rejected(_))
    ));

    // A report for another node, or without a usable URL, is ignored.
    let (tx, mut inbound) = attach(&url).await;
    tx.send(hello("honest", 1)).await.unwrap();
    inbound.message().await.unwrap().unwrap();
    tx.send(report("someone-else", "http://127.0.0.1:9"))
        .await
        .unwrap();
    tx.send(report("honest", "not a url")).await.unwrap();
    tx.send(report("honest", "http://127.0.0.1:9"))
        .await
        .unwrap();
    fleet
        .wait_for("honest online", |v| {
            v.node("honest").is_some_and(|n| n.online)
        })
        .await;
    let view = fleet.router.fleet.snapshot();
    assert!(view.node("someone-else").is_none());
    assert_eq!(view.node("honest").unwrap().url, "http://127.0.0.1:9");
    drop(tx);
    fleet.shutdown().await;
}

/// A node id belongs to one live attachment: a second Hello for it (another
/// machine, or a spoofer) is refused with a reason, and the first keeps its
/// place; once the first is gone, the id can attach again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_node_id_cannot_be_taken_over() {
    let fleet = start(router_config(), vec![]).await;
    let url = fleet.url();
    let (tx1, mut in1) = attach(&url).await;
    tx1.send(hello("mac", 1)).await.unwrap();
    let first = in1.message().await.unwrap().unwrap();
    assert!(
        matches!(first.msg, Some(router_message::Msg::Welcome(_))),
        "{first:?}"
    );
    tx1.send(report("mac", "http://10.0.0.5:11434"))
        .await
        .unwrap();
    fleet
        .wait_for("the first attachment reports", |v| {
            v.node("mac").is_some_and(|n| n.online)
        })
        .await;

    let (tx2, mut in2) = attach(&url).await;
    tx2.send(hello("mac", 1)).await.unwrap();
    match in2.message().await.unwrap().unwrap().msg {
        Some(router_message::Msg::Rejected(r)) => {
            assert!(r.reason.contains("attached already"), "{}", r.reason)
        }
        other => panic!("a second Hello for a live id must be refused: {other:?}"),
    }
    // The spoofer's report does not reach the fleet: the URL is the first's.
    let _ = tx2.send(report("mac", "http://10.6.6.6:11434")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fleet.router.fleet.snapshot().node("mac").unwrap().url,
        "http://10.0.0.5:11434"
    );

    // The first goes away: the id is free again.
    drop(tx1);
    drop(in1);
    fleet
        .wait_for("the first attachment is gone", |v| {
            v.node("mac").is_some_and(|n| !n.online)
        })
        .await;
    let (tx3, mut in3) = attach(&url).await;
    tx3.send(hello("mac", 1)).await.unwrap();
    let m = in3.message().await.unwrap().unwrap();
    assert!(
        matches!(m.msg, Some(router_message::Msg::Welcome(_))),
        "{m:?}"
    );
    drop((tx2, in2, tx3, in3));
    fleet.shutdown().await;
}

/// A reported engine URL is reduced to scheme://host:port: a path or query
/// would let a node point the router at any URL and have it relay the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_urls_lose_paths_and_queries() {
    let fleet = start(router_config(), vec![]).await;
    let (tx, mut inbound) = attach(&fleet.url()).await;
    tx.send(hello("n", 1)).await.unwrap();
    inbound.message().await.unwrap().unwrap();
    tx.send(report("n", "http://10.0.0.7:11434/admin/secret?x=1#y"))
        .await
        .unwrap();
    fleet
        .wait_for("the node reports", |v| {
            v.node("n").is_some_and(|n| n.online)
        })
        .await;
    assert_eq!(
        fleet.router.fleet.snapshot().node("n").unwrap().url,
        "http://10.0.0.7:11434"
    );
    drop((tx, inbound));
    fleet.shutdown().await;
}

/// Numbers a node reports are clamped: 5,000 parallel slots is not a
/// machine, and admission (and a benchmark) would open that many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implausible_numbers_are_clamped() {
    let fleet = start(router_config(), vec![]).await;
    let (tx, mut inbound) = attach(&fleet.url()).await;
    tx.send(hello("big", 1)).await.unwrap();
    inbound.message().await.unwrap().unwrap();
    let mut r = report("big", "http://10.0.0.8:11434");
    if let Some(node_message::Msg::Report(rep)) = &mut r.msg {
        let e = rep.engine.as_mut().unwrap();
        e.parallel_slots = 5_000;
        e.max_queue = u32::MAX;
        rep.hardware = Some(proto::Hardware {
            chip: "x".repeat(10_000),
            memory_bandwidth_gbps: f64::NAN,
            ..Default::default()
        });
    }
    tx.send(r).await.unwrap();
    fleet
        .wait_for("the node reports", |v| {
            v.node("big").is_some_and(|n| n.online)
        })
        .await;
    let v = fleet.router.fleet.snapshot();
    let n = v.node("big").unwrap();
    assert_eq!(n.parallel_slots, herd_layer::fleet::MAX_SLOTS);
    assert!(n.max_queue <= 100_000);
    assert!(n.chip.len() <= 128);
    assert_eq!(n.memory_bandwidth_gbps, 0.0);
    drop((tx, inbound));
    fleet.shutdown().await;
}
