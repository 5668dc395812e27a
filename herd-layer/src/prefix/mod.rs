//! Prompt prefixes, for prefix-cache affinity.
//!
//! Ollama's runner keeps each slot's KV cache and, for a new request,
//! reuses the longest prefix of the prompt's tokens that a free slot already
//! holds; only the rest is prefilled. Agents and chats resend the same long
//! head every turn (system prompt, tools, the history so far), so the node
//! that served the last turn can skip most of the next one's prefill, if
//! the request goes back there.
//!
//! herd cannot reproduce the engine's tokens (that takes the model's
//! template and tokenizer), so it approximates them the way llm-d's
//! tokenizer-free "estimate" backend does: the request, as Ollama's native
//! API carries it (tools, then each message's role, content, images and
//! tool calls, in order), is read as a byte stream cut into blocks of
//! [`BLOCK_BYTES`] (about 64 tokens at ~4 bytes a token); each block's hash
//! is chained to the previous one's, so a block hash names the whole prefix
//! up to it. Two requests share their first `n` block hashes exactly when
//! their first `n` blocks of bytes are equal. An image counts as
//! [`IMAGE_BYTES`] of the stream (herd's token estimate for it) and is
//! represented by a hash of its data.
//!
//! Hashing happens once, in [`crate::dialect::parse`], by walking the
//! body's raw fields ([`crate::dialect::json::each`]) without building a
//! tree, and stops after [`MAX_BLOCKS`] blocks (128k tokens), so a body of
//! tens of megabytes costs no more than its first half megabyte of prompt.
//!
//! [`PrefixIndex`] remembers which blocks herd sent to which node:model.

mod index;

pub use index::{IndexStats, PrefixIndex};

use serde::Deserialize;
use serde_json::value::RawValue;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::dialect::json::{self, RawObject};

/// Bytes of prompt per block: 64 tokens at about 4 bytes a token (the
/// block size llm-d's approximate index settles on for memory's sake).
pub const BLOCK_BYTES: usize = 256;

/// Tokens a block stands for.
pub const BLOCK_TOKENS: u32 = (BLOCK_BYTES / 4) as u32;

/// Blocks hashed at most: 2048 blocks, 131,072 tokens (llm-d's default cap).
pub const MAX_BLOCKS: usize = 2048;

/// What an image weighs in the stream: 150 tokens, as herd's estimate of
/// prompt tokens counts it ([`crate::request::estimate_tokens`]).
pub const IMAGE_BYTES: usize = 600;

/// The seed of the chain: changing it invalidates every index (not
/// persisted, so it only has to agree within one process).
const SEED: u64 = 0x6865_7264_2d6b_7631; // "herd-kv1"

/// A prompt's block hashes, chained: `blocks[i]` names the first `i + 1`
/// blocks of the prompt.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prefix {
    blocks: Vec<u64>,
    /// Bytes the stream held (images at their weight), capped at the
    /// blocks hashed.
    bytes: usize,
}

impl Prefix {
    /// The chained block hashes, first block first.
    pub fn blocks(&self) -> &[u64] {
        &self.blocks
    }

    /// True when nothing was hashed (embeddings, a body without a prompt,
    /// herd-epp routing on headers alone).
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Approximate tokens the first `n` blocks cover (the last block may
    /// be partial).
    pub fn tokens_in(&self, n: usize) -> u32 {
        let bytes = (n.min(self.blocks.len()) * BLOCK_BYTES).min(self.bytes);
        u32::try_from(bytes / 4).unwrap_or(u32::MAX)
    }

    /// Approximate tokens the hashed prompt covers.
    pub fn tokens(&self) -> u32 {
        self.tokens_in(self.blocks.len())
    }
}

/// Builds a [`Prefix`] from pieces of a prompt, in order.
#[derive(Debug)]
pub struct PrefixHasher {
    buf: [u8; BLOCK_BYTES],
    filled: usize,
    chain: u64,
    out: Prefix,
}

impl Default for PrefixHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl PrefixHasher {
    /// An empty stream.
    pub fn new() -> Self {
        PrefixHasher {
            buf: [0; BLOCK_BYTES],
            filled: 0,
            chain: SEED,
            out: Prefix::default(),
        }
    }

    /// True once [`MAX_BLOCKS`] blocks are hashed: the rest is ignored.
    pub fn full(&self) -> bool {
        self.out.blocks.len() >= MAX_BLOCKS
    }

    /// Appends bytes to the stream.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.full() {
            let n = (BLOCK_BYTES - self.filled).min(bytes.len());
            self.buf[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            self.out.bytes += n;
            bytes = &bytes[n..];
            if self.filled == BLOCK_BYTES {
                self.close_block();
            }
        }
    }

    /// Appends an opaque piece (an image) as `weight` bytes of the stream,
    /// all derived from a hash of `data`.
    pub fn feed_opaque(&mut self, data: &[u8], weight: usize) {
        let digest = xxh3_64(data).to_le_bytes();
        let mut left = weight;
        while left > 0 && !self.full() {
            let n = left.min(digest.len());
            self.feed(&digest[..n]);
            left -= n;
        }
    }

    fn close_block(&mut self) {
        self.chain = xxh3_64_with_seed(&self.buf[..self.filled], self.chain);
        self.out.blocks.push(self.chain);
        self.filled = 0;
    }

    /// The prefix: every full block, and the last partial one.
    pub fn finish(mut self) -> Prefix {
        if self.filled > 0 && !self.full() {
            self.close_block();
        }
        self.out
    }
}

/// The parts of a native (Ollama) chat message that make its prompt.
#[derive(Deserialize)]
struct MessageParts<'a> {
    #[serde(borrow)]
    role: Option<&'a RawValue>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    #[serde(borrow)]
    images: Option<&'a RawValue>,
    #[serde(borrow)]
    tool_calls: Option<&'a RawValue>,
}

/// Field separators, so `"ab" + "c"` and `"a" + "bc"` differ.
const UNIT: &[u8] = &[0x1f];
const RECORD: &[u8] = &[0x1e];

/// Feeds a raw JSON value: a string's text between its quotes (escapes as
/// sent), anything else as its raw text.
fn feed_raw(h: &mut PrefixHasher, raw: &str) {
    let b = raw.as_bytes();
    if b.len() >= 2 && b[0] == b'"' {
        h.feed(&b[1..b.len() - 1]);
    } else if raw != "null" {
        h.feed(b);
    }
}

/// Feeds each image of a raw JSON array of base64 strings.
fn feed_images(h: &mut PrefixHasher, raw: &str) {
    if !raw.starts_with('[') {
        return;
    }
    let _ = json::each::<&RawValue, _>(raw, |_, v| {
        h.feed_opaque(v.get().as_bytes(), IMAGE_BYTES);
        if h.full() { Err(String::new()) } else { Ok(()) }
    });
}

/// Where a native body keeps its prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromptShape {
    /// `/api/chat`: `tools`, then `messages`.
    Chat,
    /// `/api/generate`: `system`, `prompt`, `images`.
    Generate,
}

/// The prefix of a request body in Ollama's native shape (the client's
/// body for Ollama's API, herd's translation for the others): chat
/// messages or a generate prompt. Embeddings have none (Ollama does not
/// reuse a cache for them). The body was validated by the parse that
/// calls this; what does not read as expected is simply not hashed.
pub fn of_native(shape: Option<PromptShape>, native: &RawObject) -> Prefix {
    let mut h = PrefixHasher::new();
    match shape {
        Some(PromptShape::Chat) => {
            if let Some(tools) = native.raw("tools").filter(|t| *t != "null") {
                h.feed(b"tools");
                h.feed(UNIT);
                h.feed(tools.as_bytes());
                h.feed(RECORD);
            }
            if let Some(messages) = native.raw("messages").filter(|r| r.starts_with('[')) {
                let _ = json::each::<MessageParts<'_>, _>(messages, |_, m| {
                    if let Some(r) = m.role {
                        feed_raw(&mut h, r.get());
                    }
                    h.feed(UNIT);
                    if let Some(c) = m.content {
                        feed_raw(&mut h, c.get());
                    }
                    if let Some(im) = m.images {
                        feed_images(&mut h, im.get());
                    }
                    if let Some(t) = m.tool_calls.filter(|t| t.get() != "null") {
                        h.feed(UNIT);
                        h.feed(t.get().as_bytes());
                    }
                    h.feed(RECORD);
                    // Stop walking once the cap is reached.
                    if h.full() { Err(String::new()) } else { Ok(()) }
                });
            }
        }
        Some(PromptShape::Generate) => {
            if let Some(s) = native.raw("system") {
                feed_raw(&mut h, s);
                h.feed(RECORD);
            }
            if let Some(p) = native.raw("prompt") {
                feed_raw(&mut h, p);
            }
            if let Some(im) = native.raw("images") {
                feed_images(&mut h, im);
            }
        }
        // Embeddings (Ollama reuses no cache for them), audio, images.
        None => return Prefix::default(),
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn chat(messages: &[(&str, &str)]) -> Prefix {
        let msgs: Vec<serde_json::Value> = messages
            .iter()
            .map(|(r, c)| serde_json::json!({"role": r, "content": c}))
            .collect();
        let body = serde_json::json!({"model": "m", "messages": msgs});
        let o = RawObject::parse(Bytes::from(serde_json::to_vec(&body).unwrap())).unwrap();
        of_native(Some(PromptShape::Chat), &o)
    }

    fn common(a: &Prefix, b: &Prefix) -> usize {
        a.blocks()
            .iter()
            .zip(b.blocks())
            .take_while(|(x, y)| x == y)
            .count()
    }

    #[test]
    fn a_growing_conversation_shares_its_head() {
        let system = "You are a careful agent. ".repeat(400); // 10,000 bytes
        let t1 = chat(&[("system", &system), ("user", "first question")]);
        let t2 = chat(&[
            ("system", &system),
            ("user", "first question"),
            ("assistant", "first answer"),
            ("user", "second question"),
        ]);
        // Every full block of the first turn is a block of the second.
        let full = system.len() / BLOCK_BYTES;
        assert!(common(&t1, &t2) >= full, "{} < {full}", common(&t1, &t2));
        assert_eq!(
            common(&t1, &t2),
            t1.blocks().len() - 1,
            "all but the partial tail"
        );
        assert!(
            t1.tokens() > 2_400 && t1.tokens() < 2_600,
            "{}",
            t1.tokens()
        );
        // Another agent's system prompt shares nothing.
        let other = chat(&[("system", &"Another agent. ".repeat(700)), ("user", "x")]);
        assert_eq!(common(&t1, &other), 0);
        // The same prompt hashes the same; a change in the middle splits there.
        assert_eq!(t1, chat(&[("system", &system), ("user", "first question")]));
        let mut edited = system.clone();
        edited.replace_range(5_000..5_001, "X");
        let e = chat(&[("system", &edited), ("user", "first question")]);
        assert_eq!(common(&t1, &e), 5_000 / BLOCK_BYTES);
    }

    #[test]
    fn roles_and_boundaries_count() {
        let a = chat(&[("user", "ab"), ("user", "c")]);
        let b = chat(&[("user", "a"), ("user", "bc")]);
        let c = chat(&[("assistant", "ab"), ("user", "c")]);
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn hashing_stops_at_the_cap_and_embeddings_have_no_prefix() {
        let huge = "z".repeat(MAX_BLOCKS * BLOCK_BYTES * 3);
        let p = chat(&[("user", &huge), ("user", "more")]);
        assert_eq!(p.blocks().len(), MAX_BLOCKS);
        assert_eq!(p.tokens(), (MAX_BLOCKS * BLOCK_BYTES / 4) as u32);
        let o = RawObject::parse(Bytes::from_static(br#"{"model":"m","input":"hello"}"#)).unwrap();
        assert!(of_native(None, &o).is_empty());
    }

    #[test]
    fn images_weigh_like_tokens_and_differ_by_content() {
        let with = |img: &str| {
            let body = serde_json::json!({"model": "m", "messages": [
                {"role": "user", "content": "look", "images": [img]},
                {"role": "user", "content": "again"}]});
            let o = RawObject::parse(Bytes::from(serde_json::to_vec(&body).unwrap())).unwrap();
            of_native(Some(PromptShape::Chat), &o)
        };
        let a = with(&"A".repeat(100_000));
        let b = with(&"B".repeat(100_000));
        // An image of 100 kB weighs 150 tokens, not 25,000.
        assert!(a.tokens() > 150 && a.tokens() < 170, "{}", a.tokens());
        assert_ne!(a.blocks()[0], b.blocks()[0]);
        assert_eq!(a, with(&"A".repeat(100_000)));
    }

    #[test]
    fn generate_hashes_system_then_prompt() {
        let g = |sys: &str, p: &str| {
            let body = serde_json::json!({"model": "m", "system": sys, "prompt": p});
            let o = RawObject::parse(Bytes::from(serde_json::to_vec(&body).unwrap())).unwrap();
            of_native(Some(PromptShape::Generate), &o)
        };
        let long = "s".repeat(2_000);
        assert_eq!(
            common(&g(&long, "one"), &g(&long, "two")),
            2_000 / BLOCK_BYTES
        );
    }
}
