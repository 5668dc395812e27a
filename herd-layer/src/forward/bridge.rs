//! An OpenAI-only engine's answer read as an Ollama's: the engine's body
//! wrapped so that what comes out of it is the NDJSON (or the embeddings
//! object) an Ollama would have sent ([`crate::dialect::openai::engine`]).
//! Everything after it — the first-line check, the relay, the collectors
//! — cannot tell the difference.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame};

use crate::dialect::openai::engine::Lines;

/// `inner`, an OpenAI engine's answer, as Ollama's lines.
pub struct Bridged<B> {
    inner: B,
    lines: Lines,
    pending: VecDeque<Bytes>,
    ended: bool,
}

impl<B> Bridged<B> {
    /// Read `inner` through `lines`.
    pub fn new(inner: B, lines: Lines) -> Self {
        Bridged {
            inner,
            lines,
            pending: VecDeque::new(),
            ended: false,
        }
    }
}

impl<B> Body for Bridged<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(b) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        let out = this.lines.feed(&d, std::time::Instant::now());
                        this.pending.extend(out);
                    }
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    this.ended = true;
                    let out = this.lines.finish(std::time::Instant::now());
                    this.pending.extend(out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::Bridge;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test]
    async fn sse_in_ndjson_out() {
        let chunks = [
            &b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n"[..],
            b"\ndata: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
        ];
        let s = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(c)))),
        );
        let b = Bridged::new(
            StreamBody::new(s),
            Lines::new(Bridge::Chat, "m", std::time::Instant::now()),
        );
        let text = String::from_utf8(b.collect().await.unwrap().to_bytes().to_vec()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains("\"content\":\"a\""));
        assert!(lines[1].contains("\"done\":true"));
    }
}
