//! What a request needs of the model that serves it, read once at parse
//! from its body in Ollama's shape (see [`crate::capability`]).

use crate::capability::{Capability, Caps};
use crate::dialect::json::RawObject;
use crate::request::Kind;

/// What a request of `kind` needs, from its body in Ollama's shape
/// (`images` counted at parse): text generation needs `completion`, and
/// `vision` with images, `tools` with a non-empty tool list, `thinking`
/// when `think` is on; a transcription needs `audio`, an image generation
/// `image`. Embeddings need nothing: Ollama embeds with any model.
pub fn needs(kind: Kind, native: &RawObject, images: u32) -> Caps {
    match kind {
        Kind::Chat | Kind::Generate => Caps::NONE
            .with(Capability::Completion)
            .with_if(Capability::Vision, images > 0)
            .with_if(
                Capability::Tools,
                kind == Kind::Chat && non_empty_list(native.raw("tools")),
            )
            .with_if(Capability::Thinking, thinks(native.raw("think"))),
        Kind::Embed => Caps::NONE,
        Kind::Transcribe => Caps::NONE.with(Capability::Audio),
        Kind::Image => Caps::NONE.with(Capability::Image),
    }
}

fn non_empty_list(raw: Option<&str>) -> bool {
    raw.is_some_and(|r| r.starts_with('[') && r[1..].trim_start() != "]")
}

/// `think` on: `true`, or a level (`"high"`…); off: `false`, `null`, absent, `""`.
fn thinks(raw: Option<&str>) -> bool {
    match raw {
        Some("true") => true,
        Some(s) if s.starts_with('"') => !matches!(s, "\"\"" | "\"none\"" | "\"false\""),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(s: &str) -> RawObject {
        RawObject::parse(bytes::Bytes::from(s.to_owned())).unwrap()
    }

    #[test]
    fn needs_follow_the_content() {
        let plain = obj(r#"{"model":"m","messages":[]}"#);
        assert_eq!(needs(Kind::Chat, &plain, 0).names(), ["completion"]);
        let all = obj(r#"{"tools":[{"type":"function"}],"think":"high"}"#);
        assert_eq!(
            needs(Kind::Chat, &all, 2).names(),
            ["completion", "tools", "vision", "thinking"]
        );
        let off = obj(r#"{"tools":[ ],"think":false}"#);
        assert_eq!(needs(Kind::Chat, &off, 0).names(), ["completion"]);
        assert_eq!(
            needs(Kind::Generate, &obj(r#"{"think":true,"tools":[1]}"#), 0).names(),
            ["completion", "thinking"],
            "generate has no tools"
        );
        assert!(needs(Kind::Embed, &plain, 0).is_empty());
        assert_eq!(needs(Kind::Transcribe, &plain, 0).names(), ["audio"]);
        assert_eq!(needs(Kind::Image, &plain, 0).names(), ["image"]);
    }
}
