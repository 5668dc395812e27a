//! A simulated device attaching to a (fake) router over herd.v1.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use herd_node::config::{GIB, ModelSpec};
use herd_node::{Device, DeviceConfig};
use herd_proto::v1::fleet_server::{Fleet, FleetServer};
use herd_proto::v1::{
    Command, NodeMessage, Rejected, RouterMessage, WarmModel, Welcome, command, node_message,
    router_message,
};
use tokio::sync::{Mutex, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// Rejects the first `reject_first` Hellos, then welcomes and sends one warm command.
struct FakeRouter {
    seen: mpsc::UnboundedSender<NodeMessage>,
    reject_first: Mutex<u32>,
}

#[tonic::async_trait]
impl Fleet for FakeRouter {
    type AttachStream = Pin<Box<dyn Stream<Item = Result<RouterMessage, Status>> + Send>>;

    async fn attach(
        &self,
        request: Request<Streaming<NodeMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(8);
        let reject = {
            let mut n = self.reject_first.lock().await;
            let r = *n > 0;
            *n = n.saturating_sub(1);
            r
        };
        let seen = self.seen.clone();
        tokio::spawn(async move {
            let Some(Ok(hello)) = inbound.next().await else {
                return;
            };
            let _ = seen.send(hello);
            let msg = if reject {
                router_message::Msg::Rejected(Rejected {
                    reason: "bad token".into(),
                })
            } else {
                router_message::Msg::Welcome(Welcome {
                    router_id: "fake".into(),
                    router_version: "0".into(),
                    report_interval_ms: 50,
                })
            };
            let _ = tx.send(Ok(RouterMessage { msg: Some(msg) })).await;
            if reject {
                return;
            }
            let warm = Command {
                id: "c1".into(),
                kind: Some(command::Kind::Warm(WarmModel {
                    model: "tiny:1b".into(),
                })),
            };
            let _ = tx
                .send(Ok(RouterMessage {
                    msg: Some(router_message::Msg::Command(warm)),
                }))
                .await;
            while let Some(Ok(m)) = inbound.next().await {
                if seen.send(m).is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn next(seen: &mut mpsc::UnboundedReceiver<NodeMessage>) -> node_message::Msg {
    tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .expect("router heard nothing")
        .and_then(|m| m.msg)
        .expect("message")
}

#[tokio::test]
async fn device_attaches_reports_and_obeys() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let router = FakeRouter {
        seen: seen_tx,
        reject_first: Mutex::new(1),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(FleetServer::new(router))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let cfg = DeviceConfig {
        name: "dev1".into(),
        models: vec![ModelSpec {
            name: "tiny:1b".into(),
            size_bytes: GIB / 4,
            ..ModelSpec::default()
        }],
        load_base_ms: 1,
        load_ms_per_gb: 0,
        ..DeviceConfig::default()
    };
    let d = Device::start(cfg, Some(format!("http://{addr}")))
        .await
        .expect("start");
    // Rejected first, then retried with backoff (not spinning).
    let node_message::Msg::Hello(h1) = next(&mut seen).await else {
        panic!("hello")
    };
    assert_eq!((h1.node_id.as_str(), h1.protocol_version), ("dev1", 1));
    let node_message::Msg::Hello(_) = next(&mut seen).await else {
        panic!("second hello")
    };

    let mut got_report = None;
    let mut got_result = None;
    while got_report.is_none() || got_result.is_none() {
        match next(&mut seen).await {
            node_message::Msg::Report(r) => got_report = Some(r),
            node_message::Msg::Result(r) => got_result = Some(r),
            node_message::Msg::Hello(_) => panic!("unexpected hello"),
        }
    }
    let report = got_report.expect("report");
    assert!(report.simulated);
    assert_eq!(report.node_id, "dev1");
    assert_eq!(report.ollama_url, d.url());
    let result = got_result.expect("result");
    assert!(result.ok && result.id == "c1", "{result:?}");
    assert_eq!(d.stats().per_model["tiny:1b"].cold_loads, 1);

    // Draining is reported.
    d.controls().set_draining(true);
    loop {
        if let node_message::Msg::Report(r) = next(&mut seen).await
            && r.draining
        {
            break;
        }
    }
    d.shutdown().await;
}
