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
