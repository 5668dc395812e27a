//! What a model can do, and what a request needs of it.
//!
//! Nodes say what each model can do (Ollama's `capabilities`: from
//! `/api/show`, or `/api/tags` since 0.30; an engine's declaration for the
//! others), and a request's needs follow from its content — images need
//! `vision`, tools need `tools`, `think` needs `thinking`, a transcription
//! needs `audio`, an image generation `image`. Both become a [`Caps`] set,
//! so the scorer can eliminate a node whose copy of the model cannot serve
//! the request with one comparison, and say which capability was missing.
//!
//! Needs are read once, at parse, from the body in Ollama's shape (the
//! client's own, or its translation; see [`crate::dialect::needs`]): every
//! dialect's images, tools and reasoning switches end up in the same three
//! fields there.

use serde::Serialize;

/// One thing a model can do, as Ollama names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Text generation (chat, generate).
    Completion,
    /// Tool calling.
    Tools,
    /// Image input.
    Vision,
    /// Reasoning (`think`).
    Thinking,
    /// Embeddings.
    Embedding,
    /// Audio input (speech to text).
    Audio,
    /// Image generation.
    Image,
}

impl Capability {
    /// Every capability, in the order they are listed.
    pub const ALL: [Capability; 7] = [
        Capability::Completion,
        Capability::Tools,
        Capability::Vision,
        Capability::Thinking,
        Capability::Embedding,
        Capability::Audio,
        Capability::Image,
    ];

    /// Its name in Ollama's `capabilities` lists.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Completion => "completion",
            Capability::Tools => "tools",
            Capability::Vision => "vision",
            Capability::Thinking => "thinking",
            Capability::Embedding => "embedding",
            Capability::Audio => "audio",
            Capability::Image => "image",
        }
    }

    /// The capability a name stands for (case-insensitive); `None` for the
    /// ones herd does not route by (`insert`, and anything newer).
    pub fn parse(name: &str) -> Option<Capability> {
        Capability::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(name.trim()))
    }

    /// What a request lacking it is told the model cannot do.
    pub fn doing(self) -> &'static str {
        match self {
            Capability::Completion => "generate text",
            Capability::Tools => "call tools",
            Capability::Vision => "read images",
            Capability::Thinking => "think",
            Capability::Embedding => "embed",
            Capability::Audio => "transcribe audio",
            Capability::Image => "generate images",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of capabilities: what a model can do, or what a request needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Caps(u8);

impl Caps {
    /// The empty set.
    pub const NONE: Caps = Caps(0);

    /// This set and `c`.
    pub fn with(self, c: Capability) -> Caps {
        Caps(self.0 | c.bit())
    }

    /// This set with `c` when `on`.
    pub fn with_if(self, c: Capability, on: bool) -> Caps {
        if on { self.with(c) } else { self }
    }

    /// Both sets.
    pub fn union(self, other: Caps) -> Caps {
        Caps(self.0 | other.0)
    }

    /// Whether `c` is in the set.
    pub fn has(self, c: Capability) -> bool {
        self.0 & c.bit() != 0
    }

    /// What of `need` this set lacks.
    pub fn lacking(self, need: Caps) -> Caps {
        Caps(need.0 & !self.0)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The capabilities in the set, in [`Capability::ALL`]'s order.
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        Capability::ALL.into_iter().filter(move |c| self.has(*c))
    }

    /// The set a list of names makes (names herd does not route by are
    /// left out).
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Caps {
        names
            .into_iter()
            .filter_map(Capability::parse)
            .fold(Caps::NONE, Caps::with)
    }

    /// The names, in order.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Capability::as_str).collect()
    }
}

impl std::fmt::Display for Caps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.names().join(", "))
    }
}

impl Serialize for Caps {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.names())
    }
}

impl FromIterator<Capability> for Caps {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> Self {
        iter.into_iter().fold(Caps::NONE, Caps::with)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Engine declarations (herd-proto, below this crate) check `caps=`
    /// against their own list of the names: it must be this one.
    #[test]
    fn declarations_know_the_same_names() {
        let names: Vec<&str> = Capability::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names, herd_proto::engine::CAPABILITY_NAMES);
    }

    #[test]
    fn names_round_trip_and_unknown_ones_are_left_out() {
        let c = Caps::from_names(["completion", "Vision", "insert", "tools", ""]);
        assert_eq!(c.names(), ["completion", "tools", "vision"]);
        assert!(c.has(Capability::Vision) && !c.has(Capability::Audio));
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"["completion","tools","vision"]"#
        );
        assert_eq!(c.to_string(), "completion, tools, vision");
        for cap in Capability::ALL {
            assert_eq!(Capability::parse(cap.as_str()), Some(cap));
        }
    }

    #[test]
    fn lacking_is_what_the_need_has_and_the_model_does_not() {
        let model = Caps::from_names(["completion", "tools"]);
        let need = Caps::from_names(["completion", "vision", "thinking"]);
        assert_eq!(model.lacking(need).names(), ["vision", "thinking"]);
        assert!(model.lacking(Caps::NONE).is_empty());
    }
}
