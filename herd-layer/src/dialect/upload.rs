//! Multipart uploads (audio to transcribe, an image to edit): read until
//! the form names its model, then streamed through.
//!
//! herd must know the model before it can route, and the model is a field
//! of the form — usually ahead of the file (the openai SDK sends its fields
//! first), sometimes after it. So the body is read only as far as the
//! `model` field (parsed by `multer`, every byte read kept), and what the
//! node gets is those bytes followed by the rest of the client's body as it
//! arrives. A file ahead of the model is held in memory, charged to the
//! body budget and bounded by `max_body_bytes` like any body; one behind it
//! never is, beyond a first [`REPLAY_BYTES`].
//!
//! The bytes read are kept until the request ends, so an attempt that fails
//! before it took more than them (the node refused the connection; the
//! whole upload was small enough to be read ahead) is replayed on another
//! node like any request. Once the rest of the body went to a node, it is
//! gone: such a failure is final ([`Upload::replayable`]).
//!
//! When the model routed differs from the one written (an alias, a
//! fallback), the `model` field's value is replaced in the bytes kept;
//! nothing else of the form is touched.

use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use tokio::sync::oneshot;

use crate::budget::{BodyBudget, Charge, ReadError};
use crate::error::ClientError;

/// Errors of the bodies here (the stack's own type, spelled out: this file
/// sits below the request it belongs to).
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bytes read ahead beyond the `model` field, so that a small upload is
/// held whole and can be replayed on another node if the first fails.
pub const REPLAY_BYTES: usize = 1 << 20;

/// The longest `model` field read.
const MAX_MODEL_FIELD: u64 = 1024;

/// The rest of a client's body, not yet read.
pub type Rest = UnsyncBoxBody<Bytes, BoxError>;

/// An upload failed while it was being sent to a node: the client's fault
/// (too large, stalled, broken off), not the node's.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct UploadFailed(pub ClientError);

/// One upload: the bytes read before routing, and the rest of the body.
pub struct Upload {
    content_type: HeaderValue,
    prefix: Bytes,
    model_at: Option<Range<usize>>,
    /// The prefix is the whole body.
    complete: bool,
    rest: Mutex<Option<Rest>>,
    /// An attempt took the rest of the body.
    taken: AtomicBool,
    /// Why sending the upload failed, when the client caused it.
    failure: Mutex<Option<ClientError>>,
    /// The body's `Content-Length`, when it had one.
    length: Option<u64>,
    limit: usize,
    idle: Duration,
    _charge: Charge,
}

impl Upload {
    /// The body's size as its `Content-Length` said (none when chunked).
    pub fn declared_len(&self) -> Option<u64> {
        self.length
    }
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("content_type", &self.content_type)
            .field("read", &self.prefix.len())
            .field("complete", &self.complete)
            .field("taken", &self.taken.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Upload {
    /// The `Content-Type` to send on (it carries the boundary).
    pub fn content_type(&self) -> &HeaderValue {
        &self.content_type
    }

    /// Bytes read before routing (kept for replays).
    pub fn read_bytes(&self) -> usize {
        self.prefix.len()
    }

    /// Whether another attempt can still send the whole upload: it was read
    /// whole, or no attempt has taken the rest of it yet.
    pub fn replayable(&self) -> bool {
        self.complete || !self.taken.load(Ordering::SeqCst)
    }

    /// The client-caused failure of the last send, if there was one.
    pub fn failure(&self) -> Option<ClientError> {
        lock(&self.failure).take()
    }

    fn fail(&self, e: ClientError) {
        *lock(&self.failure) = Some(e);
    }

    /// The body for one attempt, with `model` written into the form when
    /// given (the model routed is not the one the client wrote), and a
    /// receiver told when the upload was sent whole (or gave up).
    pub fn body(
        self: &Arc<Self>,
        model: Option<&str>,
    ) -> Result<(UploadBody, oneshot::Receiver<()>), ClientError> {
        if !self.replayable() {
            return Err(ClientError::new(
                StatusCode::BAD_GATEWAY,
                "the upload went to a node that failed, and was too large to keep for another attempt; send it again",
            )
            .code("upload_spent"));
        }
        let head = match (model, &self.model_at) {
            (None, _) => self.prefix.clone(),
            (Some(m), Some(at)) => {
                let mut b = BytesMut::with_capacity(self.prefix.len() + m.len());
                b.extend_from_slice(&self.prefix[..at.start]);
                b.extend_from_slice(m.as_bytes());
                b.extend_from_slice(&self.prefix[at.end..]);
                b.freeze()
            }
            (Some(_), None) => {
                return Err(ClientError::bad_request(
                    "the form's model field could not be rewritten for the model served; name the model itself, not an alias",
                ));
            }
        };
        let remaining = self
            .length
            .map(|l| l.saturating_sub(self.prefix.len() as u64) + head.len() as u64);
        let (tx, rx) = oneshot::channel();
        Ok((
            UploadBody {
                upload: self.clone(),
                head: Some(head),
                rest: None,
                state: State::Head,
                sent: 0,
                remaining: if self.complete { None } else { remaining },
                done: Some(tx),
                idle: None,
            },
            rx,
        ))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Head,
    Rest,
    Done,
}

/// One attempt's request body: the bytes read before routing, then the
/// rest of the client's body, bounded in size and in silence.
pub struct UploadBody {
    upload: Arc<Upload>,
    head: Option<Bytes>,
    rest: Option<Rest>,
    state: State,
    sent: usize,
    remaining: Option<u64>,
    done: Option<oneshot::Sender<()>>,
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl std::fmt::Debug for UploadBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadBody")
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl UploadBody {
    fn finish(&mut self) {
        self.state = State::Done;
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
    }

    fn failed(&mut self, e: ReadError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let client = ClientError::from(e);
        let message = client.message.clone();
        self.upload.fail(client);
        self.finish();
        Poll::Ready(Some(Err(message.into())))
    }
}

impl Body for UploadBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            match this.state {
                State::Done => return Poll::Ready(None),
                State::Head => {
                    this.state = State::Rest;
                    if let Some(h) = this.head.take().filter(|h| !h.is_empty()) {
                        this.sent += h.len();
                        return Poll::Ready(Some(Ok(Frame::data(h))));
                    }
                }
                State::Rest => {
                    if this.upload.complete {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    if this.rest.is_none() {
                        this.upload.taken.store(true, Ordering::SeqCst);
                        let taken = lock(&this.upload.rest).take();
                        match taken {
                            Some(r) => this.rest = Some(r),
                            None => {
                                return this.failed(ReadError::Broken(
                                    "the upload was already sent to another node".into(),
                                ));
                            }
                        }
                    }
                    let rest = this.rest.as_mut().expect("taken above");
                    match Pin::new(rest).poll_frame(cx) {
                        Poll::Ready(Some(Ok(frame))) => {
                            this.idle = None;
                            if let Some(d) = frame.data_ref() {
                                this.sent += d.len();
                                if this.sent > this.upload.limit {
                                    return this.failed(ReadError::TooLarge(this.upload.limit));
                                }
                            }
                            return Poll::Ready(Some(Ok(frame)));
                        }
                        Poll::Ready(Some(Err(e))) => {
                            return this.failed(ReadError::Broken(e.to_string()));
                        }
                        Poll::Ready(None) => {
                            this.finish();
                            return Poll::Ready(None);
                        }
                        Poll::Pending => {
                            let idle = this.upload.idle;
                            let sleep = this
                                .idle
                                .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                            if sleep.as_mut().poll(cx).is_ready() {
                                return this.failed(ReadError::Stalled(idle));
                            }
                            return Poll::Pending;
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        let head = self.head.as_ref().map_or(0, |h| h.len() as u64);
        if self.upload.complete {
            return SizeHint::with_exact(head);
        }
        match self.remaining {
            Some(total) if self.state == State::Head => SizeHint::with_exact(total),
            _ => SizeHint::default(),
        }
    }
}

/// The boundary of a `multipart/form-data` content type, or why there is none.
pub fn boundary(headers: &HeaderMap) -> Result<(HeaderValue, String), ClientError> {
    let ct = headers.get(http::header::CONTENT_TYPE);
    let text = ct.and_then(|v| v.to_str().ok()).unwrap_or("");
    if !text
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        return Err(ClientError::bad_request(format!(
            "this endpoint takes a multipart/form-data upload (fields `file`, `model`, …), not {}",
            if text.is_empty() {
                "a body without a content type".to_string()
            } else {
                format!("{text:?}")
            }
        ))
        .code("multipart_required"));
    }
    let b = multer::parse_boundary(text)
        .map_err(|e| ClientError::bad_request(format!("multipart content type: {e}")))?;
    Ok((ct.cloned().expect("checked above"), b))
}

/// What reading an upload found.
#[derive(Debug)]
pub struct Read {
    /// The upload, ready to be sent.
    pub upload: Arc<Upload>,
    /// The `model` field, as written.
    pub model: String,
}

/// What the bytes read so far hold, and what went wrong reading them.
struct Tee<'a> {
    buf: BytesMut,
    charge: Charge,
    budget: &'a BodyBudget,
    limit: usize,
    ended: bool,
    error: Option<ReadError>,
}

impl Tee<'_> {
    fn push(&mut self, chunk: &[u8]) -> Result<(), ReadError> {
        if self.buf.len() + chunk.len() > self.limit {
            return Err(ReadError::TooLarge(self.limit));
        }
        self.buf.extend_from_slice(chunk);
        if self.buf.len() > self.charge.held() {
            let want = (self.buf.len() * 2).min(self.limit).max(self.buf.len());
            self.budget.grow(&mut self.charge, want)?;
        }
        Ok(())
    }
}

/// The next data of `body`, `None` at its end; silence for `idle` fails.
async fn pull<B>(body: &mut B, idle: Duration) -> Result<Option<Bytes>, ReadError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    loop {
        match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(ReadError::Stalled(idle)),
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => return Err(ReadError::Broken(e.to_string())),
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data()
                    && !d.is_empty()
                {
                    return Ok(Some(d));
                }
            }
        }
    }
}

/// Read a multipart upload as far as its `model` field (and up to
/// [`REPLAY_BYTES`] more), at most `limit` bytes in all, charging what is
/// held to `budget`; a client silent for `idle` is given up on.
pub async fn read<B>(
    headers: &HeaderMap,
    mut body: B,
    limit: usize,
    idle: Duration,
    budget: &BodyBudget,
) -> Result<Read, ClientError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError> + std::fmt::Display,
{
    let (content_type, boundary) = boundary(headers)?;
    let length = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if length.is_some_and(|l| l > limit as u64) {
        return Err(ReadError::TooLarge(limit).into());
    }
    let tee = Mutex::new(Tee {
        buf: BytesMut::new(),
        charge: budget.charge(1024)?,
        budget,
        limit,
        ended: false,
        error: None,
    });
    let found = {
        let stream = futures::stream::unfold((&mut body, &tee), |(body, tee)| async move {
            let r = match pull(body, idle).await {
                Ok(Some(chunk)) => lock(tee).push(&chunk).map(|()| Some(chunk)),
                Ok(None) => {
                    lock(tee).ended = true;
                    Ok(None)
                }
                Err(e) => Err(e),
            };
            match r {
                Ok(Some(chunk)) => Some((Ok::<_, ReadError>(chunk), (body, tee))),
                Ok(None) => None,
                Err(e) => {
                    let message = e.to_string();
                    lock(tee).error = Some(e);
                    Some((Err(ReadError::Broken(message)), (body, tee)))
                }
            }
        });
        model_field(OneAtATime::new(stream), &boundary).await
    };
    let model = match found {
        Ok(m) => m,
        Err(e) => {
            return Err(match lock(&tee).error.take() {
                Some(read) => read.into(),
                None => e,
            });
        }
    };
    let mut tee = tee.into_inner().unwrap_or_else(|p| p.into_inner());
    // Read ahead: a small upload is then held whole, and replayable.
    while !tee.ended && tee.buf.len() < REPLAY_BYTES {
        match pull(&mut body, idle).await? {
            Some(chunk) => tee.push(&chunk)?,
            None => tee.ended = true,
        }
    }
    let prefix = tee.buf.freeze();
    let model_at = model_span(&prefix, &boundary);
    let complete = tee.ended;
    let rest = (!complete).then(|| body.map_err(Into::into).boxed_unsync());
    let upload = Upload {
        content_type,
        prefix,
        model_at,
        complete,
        rest: Mutex::new(rest),
        taken: AtomicBool::new(false),
        failure: Mutex::new(None),
        length,
        limit,
        idle,
        _charge: tee.charge,
    };
    Ok(Read {
        upload: Arc::new(upload),
        model,
    })
}

/// A stream that says "not yet" after every item: `multer` reads its
/// stream until it is pending, which for a fast client would be the whole
/// upload; this way it reads one chunk at a time, and stops at the model.
struct OneAtATime<S> {
    inner: Pin<Box<S>>,
    paused: bool,
}

impl<S> OneAtATime<S> {
    fn new(inner: S) -> Self {
        OneAtATime {
            inner: Box::pin(inner),
            paused: false,
        }
    }
}

impl<S: futures::Stream> futures::Stream for OneAtATime<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if self.paused {
            self.paused = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let r = self.inner.as_mut().poll_next(cx);
        self.paused = matches!(r, Poll::Ready(Some(_)));
        r
    }
}

/// The `model` field of a multipart stream, reading no further than it
/// (fields before it are read through and dropped); the caller checks the
/// name (see [`super::media`]).
async fn model_field<S>(stream: S, boundary: &str) -> Result<String, ClientError>
where
    S: futures::Stream<Item = Result<Bytes, ReadError>> + Send,
{
    let constraints = multer::Constraints::new()
        .size_limit(multer::SizeLimit::new().for_field("model", MAX_MODEL_FIELD));
    let mut form = multer::Multipart::with_constraints(stream, boundary, constraints);
    let bad = |e: multer::Error| {
        ClientError::bad_request(format!("the multipart form cannot be read: {e}"))
    };
    loop {
        let Some(mut field) = form.next_field().await.map_err(bad)? else {
            return Err(ClientError::bad_request(
                "model is required: the form has no `model` field",
            )
            .code("model_required"));
        };
        if field.name() == Some("model") {
            let m = field.text().await.map_err(bad)?;
            let m = m.trim();
            if m.is_empty() {
                return Err(ClientError::bad_request("model is required").code("model_required"));
            }
            return Ok(m.to_string());
        }
        while field.chunk().await.map_err(bad)?.is_some() {}
    }
}

/// The `model` field of a whole multipart body (herd-epp holds the body
/// whole before it picks).
pub fn model_of(headers: &HeaderMap, body: Bytes) -> Result<String, ClientError> {
    let (_, boundary) = boundary(headers)?;
    let stream = futures::stream::once(std::future::ready(Ok::<_, ReadError>(body)));
    futures::executor::block_on(model_field(stream, &boundary))
}

/// Where the value of the form's `model` field sits in `bytes`, when it is
/// there whole.
fn model_span(bytes: &[u8], boundary: &str) -> Option<Range<usize>> {
    let delim = format!("--{boundary}");
    let next = format!("\r\n--{boundary}");
    let mut at = find(bytes, delim.as_bytes(), 0)?;
    loop {
        let after = at + delim.len();
        if bytes.get(after..after + 2) == Some(b"--") {
            return None;
        }
        let headers_start = after + 2;
        let headers_end = find(bytes, b"\r\n\r\n", headers_start)?;
        let value_start = headers_end + 4;
        let value_end = find(bytes, next.as_bytes(), value_start)?;
        let headers = String::from_utf8_lossy(bytes.get(headers_start..headers_end)?);
        if names_model(&headers) {
            return Some(value_start..value_end);
        }
        at = value_end + 2;
    }
}

/// Whether a part's headers say `Content-Disposition: form-data; name="model"`.
fn names_model(headers: &str) -> bool {
    headers.split("\r\n").any(|line| {
        let Some((k, v)) = line.split_once(':') else {
            return false;
        };
        k.trim().eq_ignore_ascii_case("content-disposition")
            && v.split(';').skip(1).any(|p| {
                p.split_once('=').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("name") && v.trim().trim_matches('"') == "model"
                })
            })
    })
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    const B: &str = "XyZ123";

    fn form(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, file, data) in parts {
            out.extend_from_slice(format!("--{B}\r\n").as_bytes());
            match file {
                Some(f) => out.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: audio/wav\r\n\r\n").as_bytes(),
                ),
                None => out.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                ),
            }
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{B}--\r\n").as_bytes());
        out
    }

    fn headers(len: Option<usize>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_str(&format!("multipart/form-data; boundary={B}")).unwrap(),
        );
        if let Some(l) = len {
            h.insert(http::header::CONTENT_LENGTH, l.into());
        }
        h
    }

    fn budget() -> BodyBudget {
        BodyBudget::new(64 << 20, 32 << 20)
    }

    /// A body that sends `chunks` one by one, then ends.
    fn chunked(chunks: Vec<Vec<u8>>) -> UnsyncBoxBody<Bytes, std::io::Error> {
        let s = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Frame::data(Bytes::from(c)))),
        );
        StreamBody::new(s).boxed_unsync()
    }

    async fn all(b: UploadBody) -> Result<Vec<u8>, BoxError> {
        Ok(b.collect().await?.to_bytes().to_vec())
    }

    #[tokio::test]
    async fn the_model_is_found_and_the_bytes_pass_through_unchanged() {
        let file = vec![7u8; 3 * REPLAY_BYTES];
        let body = form(&[("model", None, b"whisper"), ("file", Some("a.wav"), &file)]);
        let chunks: Vec<Vec<u8>> = body.chunks(64 * 1024).map(<[u8]>::to_vec).collect();
        let b = budget();
        let r = read(
            &headers(Some(body.len())),
            chunked(chunks),
            32 << 20,
            Duration::from_secs(5),
            &b,
        )
        .await
        .unwrap();
        assert_eq!(r.model, "whisper");
        let up = r.upload;
        assert!(
            up.read_bytes() >= REPLAY_BYTES && up.read_bytes() < body.len(),
            "read ahead, not whole: {}",
            up.read_bytes()
        );
        assert!(up.replayable());
        let (ub, done) = up.body(None).unwrap();
        assert_eq!(ub.size_hint().exact(), Some(body.len() as u64));
        assert_eq!(all(ub).await.unwrap(), body);
        assert!(done.await.is_ok(), "told when the upload was sent");
        assert!(!up.replayable(), "the rest went to a node: no replay");
        assert!(up.body(None).is_err());
    }

    #[tokio::test]
    async fn a_model_after_the_file_is_found_and_a_small_upload_replays_renamed() {
        let body = form(&[
            ("file", Some("a.wav"), b"RIFF....WAVE"),
            ("model", None, b"whisper-1"),
            ("response_format", None, b"text"),
        ]);
        let b = budget();
        let r = read(
            &headers(None),
            Full::new(Bytes::from(body.clone())),
            1 << 20,
            Duration::from_secs(5),
            &b,
        )
        .await
        .unwrap();
        assert_eq!(r.model, "whisper-1");
        assert!(b.in_use() > 0, "what is held is charged");
        let up = r.upload;
        assert_eq!(all(up.body(None).unwrap().0).await.unwrap(), body);
        assert!(up.replayable(), "held whole");
        let renamed = all(up.body(Some("whisper-large-v3:latest")).unwrap().0)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&renamed);
        assert!(
            text.contains("\r\n\r\nwhisper-large-v3:latest\r\n--"),
            "{text}"
        );
        assert!(!text.contains("whisper-1"));
        assert_eq!(
            futures::executor::block_on(model_field(
                futures::stream::once(std::future::ready(Ok(Bytes::from(renamed)))),
                B
            ))
            .unwrap(),
            "whisper-large-v3:latest"
        );
        drop(up);
        assert_eq!(b.in_use(), 0, "the charge ends with the request");
    }

    #[tokio::test]
    async fn bad_forms_get_clear_errors() {
        let b = budget();
        let idle = Duration::from_secs(5);
        let no_model = form(&[("file", Some("a.wav"), b"x")]);
        let e = read(
            &headers(None),
            Full::new(Bytes::from(no_model)),
            1 << 20,
            idle,
            &b,
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, Some("model_required"), "{e}");
        let mut json = HeaderMap::new();
        json.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let e = read(
            &json,
            Full::new(Bytes::from_static(b"{}")),
            1 << 20,
            idle,
            &b,
        )
        .await
        .unwrap_err();
        assert!(e.message.contains("multipart/form-data"), "{e}");
        let big = form(&[
            ("file", Some("a.wav"), &vec![0u8; 4096]),
            ("model", None, b"m"),
        ]);
        let e = read(
            &headers(None),
            Full::new(Bytes::from(big.clone())),
            1024,
            idle,
            &b,
        )
        .await
        .unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE, "{e}");
        let e = read(
            &headers(Some(big.len())),
            Full::new(Bytes::from(big)),
            1024,
            idle,
            &b,
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "by its length: {e}"
        );
        assert_eq!(b.in_use(), 0);
    }

    #[tokio::test]
    async fn the_streamed_rest_is_bounded() {
        let file = vec![1u8; 3 * REPLAY_BYTES];
        let body = form(&[("model", None, b"m"), ("file", Some("a.wav"), &file)]);
        let chunks: Vec<Vec<u8>> = body.chunks(64 * 1024).map(<[u8]>::to_vec).collect();
        let b = budget();
        let r = read(
            &headers(None),
            chunked(chunks),
            2 * REPLAY_BYTES,
            Duration::from_secs(5),
            &b,
        )
        .await
        .unwrap();
        let e = all(r.upload.body(None).unwrap().0).await.unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        let f = r.upload.failure().expect("the client's fault is kept");
        assert_eq!(f.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn the_model_span_is_the_fields_value_only() {
        let body = form(&[
            ("file", Some("model"), b"--XyZ12 not a boundary"),
            ("model", None, b"qwen"),
        ]);
        let at = model_span(&body, B).unwrap();
        assert_eq!(&body[at], b"qwen");
        assert!(names_model("Content-Disposition: form-data; name=model"));
        assert!(!names_model(
            "Content-Disposition: form-data; name=\"file\"; filename=\"model\""
        ));
    }
}
