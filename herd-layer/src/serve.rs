//! Serving HTTP on a LAN, where any client may be hostile.
//!
//! hyper serves each connection; this loop decides which connections it
//! gets and for how long. A client that sends its headers slowly is cut
//! after `header_timeout` (slowloris), a connection that sits idle between
//! requests is closed after `idle_timeout`, a client that stops reading
//! what herd writes (a stalled dashboard tab, a slow-read attack holding a
//! node's slot) is cut once a write has waited `send_timeout`, and no more than
//! `max_connections` are open at once — the next one is answered
//! `503 Service Unavailable` with a sentence saying why, then closed, so a
//! flood of idle sockets cannot take every file descriptor and leave the
//! router unable to accept the requests that matter. Accept errors (out of
//! descriptors) back off instead of spinning. Both HTTP/1.1 and HTTP/2 are
//! served on the one port (herd's gRPC attach service is HTTP/2); a
//! connection carrying a stream — a long generation, a node's attachment —
//! is never idle.
//!
//! With a certificate ([`serve_tls`]) the same port also speaks TLS: each
//! connection's first byte says whether it is a TLS handshake, so API
//! clients use `https://` while herd-node agents keep attaching over plain
//! HTTP/2.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::routed::BoxError;

/// `[server]`: connection limits of an HTTP listener.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// Most connections open at once; more are refused with 503.
    pub max_connections: usize,
    /// Longest time a client may take to send a request's headers.
    #[serde(with = "crate::duration")]
    pub header_timeout: Duration,
    /// A connection with no request in flight is closed after this long.
    #[serde(with = "crate::duration")]
    pub idle_timeout: Duration,
    /// A connection whose client has not taken a byte of what herd has to
    /// send for this long is closed (the client stopped reading).
    #[serde(with = "crate::duration")]
    pub send_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            send_timeout: Duration::from_secs(60),
        }
    }
}

/// Connections open right now, shared with whoever reports it.
#[derive(Clone, Debug, Default)]
pub struct Open(Arc<AtomicUsize>);

impl Open {
    /// How many.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Activity of one connection: requests in flight and the last byte moved.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    /// Whether the client has sent a byte yet.
    heard: std::sync::atomic::AtomicBool,
    /// Milliseconds since `born` at the last read or write.
    last: AtomicU64,
    /// Milliseconds since `born` (plus one, so 0 means none) when a write
    /// first found the socket full and has not got through since.
    blocked: AtomicU64,
    born: Instant,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Note how a write went: blocked (the client's receive window and
    /// our send buffer are full) or through.
    fn wrote<T>(&self, r: &Poll<std::io::Result<T>>) {
        match r {
            Poll::Pending => {
                let _ = self.blocked.compare_exchange(
                    0,
                    self.now_ms().saturating_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            Poll::Ready(_) => self.blocked.store(0, Ordering::Relaxed),
        }
    }

    /// How long a write has waited for the client to read, if one is.
    fn blocked_for(&self) -> Option<Duration> {
        match self.blocked.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(
                self.now_ms().saturating_sub(since - 1),
            )),
        }
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.born.elapsed().saturating_sub(last)
    }
}

pin_project! {
    /// A socket that notes when bytes move.
    struct Watched<T> {
        #[pin]
        io: T,
        activity: Arc<Activity>,
    }
}

impl<T: AsyncRead> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.io.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.heard.store(true, Ordering::Relaxed);
            this.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.io.poll_write(cx, buf);
        this.activity.wrote(&r);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.io.poll_write_vectored(cx, bufs);
        this.activity.wrote(&r);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

pin_project! {
    /// A response body that counts as in flight until it ends or is dropped.
    pub struct InFlight<B> {
        #[pin]
        inner: B,
        guard: Option<FlightGuard>,
    }
}

/// One request in flight on a connection.
#[derive(Debug)]
pub struct FlightGuard(Arc<Activity>);

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

impl<B: http_body::Body<Data = Bytes>> http_body::Body for InFlight<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        if matches!(r, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.guard.take();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The peer's address, in each request's extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// In a request's extensions when it came over TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tls;

/// Serve `svc` on `listener` under `cfg` until `stop` turns true; then stop
/// accepting and let open connections finish (hyper's graceful shutdown).
/// `open` counts the connections.
pub async fn serve<S, B>(
    listener: TcpListener,
    svc: S,
    cfg: ServeConfig,
    open: Open,
    stop: watch::Receiver<bool>,
) where
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    serve_tls(listener, svc, cfg, open, stop, None).await
}

/// [`serve`], and with `tls` each connection whose first byte opens a TLS
/// handshake is served over TLS (its requests carry [`Tls`]); the others
/// stay plain HTTP on the same port — herd-node attaches over plain HTTP/2,
/// and it is the service's business which plain requests it answers. The
/// handshake, like the headers, must come within `header_timeout`.
pub async fn serve_tls<S, B>(
    listener: TcpListener,
    svc: S,
    cfg: ServeConfig,
    open: Open,
    mut stop: watch::Receiver<bool>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) where
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let max = effective_max_connections(cfg.max_connections);
    let slots = Arc::new(Semaphore::new(max));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(5);
                a
            }
            Err(e) => {
                // Out of descriptors (EMFILE) and the like: back off, do
                // not spin; connections that close make room.
                tracing::warn!(error = %e, ?backoff, "cannot accept a connection");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse(tcp, max));
            continue;
        };
        let activity = Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            heard: std::sync::atomic::AtomicBool::new(false),
            last: AtomicU64::new(0),
            blocked: AtomicU64::new(0),
            born: Instant::now(),
        });
        let per_conn = {
            let svc = svc.clone();
            let activity = activity.clone();
            move |over_tls: bool| {
                hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                    activity.in_flight.fetch_add(1, Ordering::Relaxed);
                    let guard = FlightGuard(activity.clone());
                    req.extensions_mut().insert(Peer(peer));
                    if over_tls {
                        req.extensions_mut().insert(Tls);
                    }
                    let mut svc = svc.clone();
                    async move {
                        let rsp = tower::ServiceExt::ready(&mut svc).await?.call(req).await?;
                        Ok::<_, Infallible>(rsp.map(|inner| InFlight {
                            inner,
                            guard: Some(guard),
                        }))
                    }
                })
            }
        };
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let tls = tls.clone();
        let watched = Watched {
            io: tcp,
            activity: activity.clone(),
        };
        let open = open.clone();
        let idle = cfg.idle_timeout;
        let silent_for = cfg.header_timeout;
        let send_timeout = cfg.send_timeout;
        open.0.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let io = match tls {
                None => Conn::Plain(watched),
                Some(acceptor) => match handshake(watched, &acceptor, silent_for).await {
                    Some(io) => io,
                    None => {
                        open.0.fetch_sub(1, Ordering::Relaxed);
                        drop(slot);
                        return;
                    }
                },
            };
            let over_tls = matches!(io, Conn::Tls(_));
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(io), per_conn(over_tls))
                .into_owned();
            let conn = watcher.watch(conn);
            let mut conn = std::pin::pin!(conn);
            let every = (idle / 4)
                .min(silent_for / 2)
                .min(send_timeout / 4)
                .max(Duration::from_millis(50));
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = tick.tick() => {
                        // A connection that never sends a byte holds a slot
                        // of the cap for nothing: it gets the time a client
                        // has for its headers, not the idle allowance.
                        if !activity.heard.load(Ordering::Relaxed)
                            && activity.born.elapsed() >= silent_for
                        {
                            tracing::debug!(%peer, ?silent_for, "closing a connection that sent nothing");
                            break;
                        }
                        // Bytes to send that the client has not taken for
                        // this long: it stopped reading. Its answer (and
                        // the node slot or dashboard stream behind it)
                        // would otherwise be held for as long as the
                        // client likes.
                        if activity.blocked_for().is_some_and(|d| d >= send_timeout) {
                            tracing::debug!(%peer, ?send_timeout, "closing a connection whose client stopped reading");
                            break;
                        }
                        if activity.in_flight.load(Ordering::Relaxed) == 0
                            && activity.idle_for() >= idle
                        {
                            tracing::debug!(%peer, ?idle, "closing an idle connection");
                            break;
                        }
                    }
                }
            }
            open.0.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A connection as served: plain, or TLS over the watched socket.
enum Conn {
    Plain(Watched<TcpStream>),
    Tls(Box<tokio_rustls::server::TlsStream<Watched<TcpStream>>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Conn::Tls(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Conn::Tls(io) => Pin::new(io).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_flush(cx),
            Conn::Tls(io) => Pin::new(io).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Conn::Tls(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Conn::Tls(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(io) => io.is_write_vectored(),
            Conn::Tls(io) => io.is_write_vectored(),
        }
    }
}

/// The first byte says which: a TLS record of type handshake (22) starts a
/// TLS connection, anything else is plain HTTP. Waiting for it, and the
/// handshake, get `within` (the header timeout); `None` closes the socket.
async fn handshake(
    io: Watched<TcpStream>,
    acceptor: &tokio_rustls::TlsAcceptor,
    within: Duration,
) -> Option<Conn> {
    let deadline = Instant::now() + within;
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, io.io.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return None,
    }
    if first[0] != 0x16 {
        return Some(Conn::Plain(io));
    }
    match tokio::time::timeout_at(deadline, acceptor.accept(io)).await {
        Ok(Ok(tls)) => Some(Conn::Tls(Box::new(tls))),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}

/// A TLS acceptor for a PEM certificate chain and private key (HTTP/2 and
/// HTTP/1.1 offered by ALPN).
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, TlsFilesError> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let named = |path: &std::path::Path, e: &dyn std::fmt::Display| TlsFilesError {
        path: path.display().to_string(),
        cause: e.to_string(),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| named(cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| named(cert, &e))?;
    if certs.is_empty() {
        return Err(named(cert, &"no certificate in the file"));
    }
    let pk = PrivateKeyDer::from_pem_file(key).map_err(|e| named(key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| named(cert, &e))?
        .with_no_client_auth()
        .with_single_cert(certs, pk)
        .map_err(|e| named(key, &e))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// A certificate or key file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("TLS: cannot use {path}: {cause}")]
pub struct TlsFilesError {
    /// The file.
    pub path: String,
    /// Why.
    pub cause: String,
}

/// The listen backlog: connections the kernel completes before herd
/// accepts them. tokio's default (128) overflows under a burst, and the
/// overflow is silence for the client (SYN cookies, then nothing) where herd
/// would rather answer 503.
pub const BACKLOG: u32 = 4096;

/// A listener on `addr` with [`BACKLOG`] (the kernel caps it at
/// `net.core.somaxconn`).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Descriptors kept free for what else herd opens: upstream connections,
/// the store, logs, its listeners.
const FD_RESERVE: u64 = 256;

/// The connection cap in effect: the configured one, but never more than
/// the process's file-descriptor limit allows (raised to its hard limit
/// first) — past it `accept` fails and the router could not take even the
/// one connection that matters.
pub fn effective_max_connections(configured: usize) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        let raised = rustix::process::Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            lim = raised;
        }
    }
    let by_fds = lim.current.map_or(usize::MAX, |c| {
        c.saturating_sub(FD_RESERVE).max(16) as usize
    });
    let max = configured.clamp(1, by_fds);
    if max < configured {
        tracing::warn!(
            configured,
            max,
            "the file-descriptor limit allows fewer connections than configured; raise it (ulimit -n) to allow more"
        );
    }
    max
}

/// Tell a client over the connection cap why it is refused, then close.
async fn refuse(mut tcp: TcpStream, max: usize) {
    let body = format!(
        "{{\"error\":\"herd has {max} connections open, its limit; close idle connections or try again in a moment\"}}"
    );
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let write = async {
        tcp.write_all(head.as_bytes()).await?;
        tcp.write_all(body.as_bytes()).await?;
        tcp.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), write).await;
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::atomic::AtomicBool;

    use super::*;

    /// A response body without end, that says when it is dropped.
    struct Endless(Arc<AtomicBool>);

    static CHUNK: [u8; 65536] = [b'x'; 65536];

    impl http_body::Body for Endless {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK)))))
        }
    }

    impl Drop for Endless {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// A client that asks and then reads nothing has its connection cut
    /// once a write has waited `send_timeout`, and what herd was sending
    /// it is dropped (a slot or a dashboard stream behind it is freed).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_stops_reading_is_cut() {
        let dropped = Arc::new(AtomicBool::new(false));
        let d = dropped.clone();
        let svc = tower::service_fn(move |_: http::Request<Incoming>| {
            let d = d.clone();
            async move { Ok::<_, Infallible>(http::Response::new(Endless(d))) }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cfg = ServeConfig {
            send_timeout: Duration::from_millis(300),
            ..ServeConfig::default()
        };
        let (_stop, rx) = watch::channel(false);
        let server = tokio::spawn(serve(listener, svc, cfg, Open::default(), rx));

        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: herd\r\n\r\n")
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !dropped.load(Ordering::SeqCst) {
            assert!(
                Instant::now() < deadline,
                "the answer to a client that stopped reading is still held"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The socket is closed: what was already buffered drains, then it
        // ends (an endless answer would never end).
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (mut total, mut buf) = (0usize, vec![0u8; 65536]);
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    total += n;
                    assert!(total < 512 << 20, "still sending after the cut");
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("the connection was not closed: {e}"),
            }
        }
        server.abort();
    }
}
