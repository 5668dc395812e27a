//! A zero-think-time device: the simulator's own answers, recorded once
//! and replayed instantly.
//!
//! Scenario 1 measures microseconds, but the simulated device answers on
//! a tokio timer (`sleep_until(done_at)` in herd-node's `api.rs`), which
//! fires on the next millisecond tick even when the answer is already due;
//! measured here, that puts the direct path's p50 at about 2.3 ms with
//! millisecond jitter, far above the effect being measured. So scenario 1
//! records a simulated device's `/api/version`, `/api/tags`, `/api/ps` and a
//! non-streaming `/api/chat` answer, and serves the same bytes with no
//! timer at all. herd reaches it as an agentless node (it polls those GETs),
//! nginx and Envoy as a plain upstream, so every target sees the same device.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Answers by path; POSTs read their body first (as a real server must).
#[derive(Clone, Debug, Default)]
pub struct Recording {
    pub by_path: HashMap<String, Bytes>,
}

/// A running replay server; stops when dropped.
#[derive(Debug)]
pub struct Echo {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Echo {
    pub async fn start(rec: Recording) -> std::io::Result<Echo> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let rec = Arc::new(rec);
        let task = tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (rec, builder) = (rec.clone(), builder.clone());
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| answer(rec.clone(), req));
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Ok(Echo { addr, task })
    }
}

async fn answer(
    rec: Arc<Recording>,
    req: http::Request<Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let _ = req.into_body().collect().await;
    let rsp = match rec.by_path.get(&path) {
        Some(b) => http::Response::builder()
            .header("content-type", "application/json; charset=utf-8")
            .body(Full::new(b.clone())),
        None => http::Response::builder()
            .status(404)
            .header("content-type", "application/json; charset=utf-8")
            .body(Full::new(Bytes::from_static(b"{\"error\":\"not found\"}"))),
    };
    Ok(rsp.unwrap_or_else(|_| http::Response::new(Full::new(Bytes::new()))))
}

/// Records a device's answers to the GETs herd polls and to one POST.
pub async fn record(
    client: &super::load::HttpClient,
    base: &str,
    post_path: &str,
    post_body: Bytes,
) -> Result<Recording, String> {
    let mut by_path = HashMap::new();
    for p in ["/api/version", "/api/tags", "/api/ps", "/v1/models", "/"] {
        let req = http::Request::get(format!("{base}{p}"))
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let body = fetch(client, req).await?;
        by_path.insert(p.to_owned(), body);
    }
    let req = http::Request::post(format!("{base}{post_path}"))
        .header("content-type", "application/json")
        .body(Full::new(post_body))
        .map_err(|e| e.to_string())?;
    let body = fetch(client, req).await?;
    by_path.insert(post_path.to_owned(), body);
    Ok(Recording { by_path })
}

async fn fetch(
    client: &super::load::HttpClient,
    req: http::Request<Full<Bytes>>,
) -> Result<Bytes, String> {
    let uri = req.uri().clone();
    let rsp = client
        .request(req)
        .await
        .map_err(|e| format!("{uri}: {e}"))?;
    if !rsp.status().is_success() {
        return Err(format!("{uri}: status {}", rsp.status()));
    }
    Ok(rsp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes())
}
