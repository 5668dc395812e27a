//! `GET /fleet/events`: the hub as a Server-Sent Events stream.
//!
//! A tab gets a `snapshot` event first (the whole state, with the last
//! decisions), then deltas as they happen, sent in batches at most every
//! [`FLUSH`] — so a tab costs a few wake-ups a second however busy the
//! router is. A tab that reconnects with `Last-Event-ID` (the header the
//! browser's `EventSource` sends, or `?last_event_id=`) resumes where it
//! stopped when the ring still holds every event since; otherwise it gets
//! a fresh snapshot. A tab whose connection stops draining falls off the
//! ring and its stream ends ("dropped, not buffered"): nothing is held for
//! it but its cursor and the one batch in flight.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::value::RawValue;
use tokio::sync::watch;
use tokio::time::Instant;

use super::hub::{Hub, Since, Subscription};
use crate::routed::{Body, BoxError};

/// Shortest time between two batches to one tab.
pub const FLUSH: Duration = Duration::from_millis(200);
/// A comment is sent after this much silence (proxies, dead peers).
pub const PING: Duration = Duration::from_secs(15);
/// Most events in one batch.
const BATCH: usize = 256;

struct Tab {
    hub: Hub,
    first: Option<Bytes>,
    cursor: u64,
    wake: watch::Receiver<u64>,
    closed: watch::Receiver<bool>,
    last_sent: Instant,
    _sub: Subscription,
}

impl Tab {
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(b) = self.first.take() {
            self.last_sent = Instant::now();
            return Some(b);
        }
        loop {
            if *self.closed.borrow() {
                return None;
            }
            // Mark what we have seen before looking, so an event published
            // after the look wakes us.
            self.wake.borrow_and_update();
            match self.hub.since(self.cursor, BATCH) {
                Since::Lagged => {
                    self.hub.note_dropped();
                    return None;
                }
                Since::Events(ev) if !ev.is_empty() => {
                    let mut out = BytesMut::new();
                    for e in &ev {
                        out.extend_from_slice(e.frame(self.hub.id()));
                    }
                    self.cursor = ev.last().map_or(self.cursor, |e| e.seq + 1);
                    self.last_sent = Instant::now();
                    return Some(out.freeze());
                }
                Since::Events(_) => {}
            }
            let ping_at = self.last_sent + PING;
            tokio::select! {
                r = self.wake.changed() => {
                    if r.is_err() {
                        return None;
                    }
                }
                _ = tokio::time::sleep_until(ping_at) => {
                    self.last_sent = Instant::now();
                    return Some(Bytes::from_static(b": ping\n\n"));
                }
                _ = self.closed.changed() => return None,
            }
            // Let a burst gather into one batch.
            let due = self.last_sent + FLUSH;
            if due > Instant::now() {
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    _ = self.closed.changed() => return None,
                }
            }
        }
    }
}

/// The `Last-Event-ID` a request resumes from, if any.
pub fn last_event_id<'a>(headers: &'a http::HeaderMap, query: Option<&'a str>) -> Option<String> {
    if let Some(v) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        return Some(v.to_string());
    }
    let q = query?;
    serde_urlencoded::from_str::<Vec<(String, String)>>(q)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == "last_event_id")
        .map(|(_, v)| v)
}

/// The stream for one tab, or a 503 when herd is stopping or too many are
/// open.
pub fn response(hub: &Hub, last: Option<&str>, info: &RawValue) -> http::Response<Body> {
    if *hub.closed().borrow() {
        return super::json_error(http::StatusCode::SERVICE_UNAVAILABLE, "herd is stopping");
    }
    let sub = match hub.subscribe() {
        Ok(s) => s,
        Err(e) => {
            return super::json_error(http::StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
        }
    };
    let start = hub.start(last, info);
    let tab = Tab {
        hub: hub.clone(),
        first: start.first,
        cursor: start.cursor,
        wake: hub.watch(),
        closed: hub.closed(),
        last_sent: Instant::now(),
        _sub: sub,
    };
    let stream = futures::stream::unfold(tab, |mut t| async move {
        let b = t.next().await?;
        Some((Ok::<_, BoxError>(Frame::data(b)), t))
    });
    let mut rsp = http::Response::new(StreamBody::new(stream).boxed());
    let h = rsp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    h.insert("x-accel-buffering", http::HeaderValue::from_static("no"));
    rsp
}
