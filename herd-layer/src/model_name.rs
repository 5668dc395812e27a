//! Model names as Ollama resolves them.
//!
//! A leaf module: the request model, the prefix index and the fleet all key
//! maps by model name, so the canonical form lives below all of them.

/// Ollama's model naming, as one canonical key: a name without a tag means
/// `:latest`, the default registry and namespace may be written or not
/// (`registry.ollama.ai/library/qwen3` is `qwen3`), and letter case does not
/// matter (Ollama matches names case-insensitively).
pub fn normalize_model(name: &str) -> String {
    normalized(name).into_owned()
}

/// The default registry and namespace, which Ollama leaves out of names.
const DEFAULT_PREFIXES: [&str; 2] = ["registry.ollama.ai/", "library/"];

/// [`normalize_model`] without allocating when the name already is in its
/// canonical form (the common case on the request path).
pub fn normalized(name: &str) -> std::borrow::Cow<'_, str> {
    let mut short = name.trim();
    for p in DEFAULT_PREFIXES {
        // `get`, not slicing: byte p.len() may fall inside a multi-byte
        // character of a name nobody has checked yet.
        if short.len() > p.len()
            && short
                .get(..p.len())
                .is_some_and(|h| h.eq_ignore_ascii_case(p))
        {
            short = &short[p.len()..];
        }
    }
    // A tag follows the last ':' that comes after the last '/' (registry hosts may carry ports).
    let last_segment = short.rsplit('/').next().unwrap_or(short);
    let tagged = last_segment.contains(':');
    let lower = !short.bytes().any(|b| b.is_ascii_uppercase());
    match (tagged, lower) {
        (true, true) => std::borrow::Cow::Borrowed(short),
        (true, false) => std::borrow::Cow::Owned(short.to_ascii_lowercase()),
        (false, _) => std::borrow::Cow::Owned(format!("{}:latest", short.to_ascii_lowercase())),
    }
}
