//! What a simulated model says.
//!
//! Content is a pure function of (model, prompt): never of the device, the
//! time or the load. That is what lets an end-to-end test send the same
//! request to two devices, or streamed and not, and compare the answers, and
//! what makes a retried request indistinguishable from the first attempt.

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

/// Replies are this many tokens unless `num_predict` says fewer.
pub const DEFAULT_REPLY_TOKENS: usize = 24;

const WORDS: &[&str] = &[
    "the", "herd", "moves", "across", "quiet", "fields", "while", "llamas", "graze", "under", "a",
    "bright", "sky", "and", "every", "model", "answers", "with", "patience", "because", "tokens",
    "flow", "like", "water", "through", "copper", "wires", "over", "distant", "hills", "softly",
    "counting", "stars", "near", "warm", "silicon", "valleys", "of", "memory", "light",
];

/// FNV-1a, 64 bit: stable across Rust releases, unlike `DefaultHasher`.
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// splitmix64: a tiny deterministic generator seeded from a hash.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A `sha256:`-looking digest derived from a name.
pub fn digest_of(name: &str) -> String {
    let mut r = SplitMix::new(fnv1a(&[b"digest", name.as_bytes()]));
    let hex: String = (0..4).map(|_| format!("{:016x}", r.next_u64())).collect();
    hex
}

/// The plain reply: `Hello from <model>. ` then words picked by the prompt's
/// hash, each token one word followed by a space. Returns the tokens and
/// whether `limit` cut the reply short.
pub fn reply_tokens(model: &str, prompt: &str, limit: Option<usize>) -> (Vec<String>, bool) {
    let want = DEFAULT_REPLY_TOKENS;
    let n = limit.map_or(want, |l| l.min(want));
    let mut rng = SplitMix::new(fnv1a(&[model.as_bytes(), prompt.as_bytes()]));
    let mut out: Vec<String> = [
        "Hello ".to_owned(),
        "from ".to_owned(),
        format!("{model}. "),
    ]
    .into_iter()
    .collect();
    while out.len() < want {
        let w = WORDS[(rng.next_u64() % WORDS.len() as u64) as usize];
        out.push(format!("{w} "));
    }
    out.truncate(n);
    (out, n < want)
}

/// What a reasoning model thinks before it answers: a short monologue that,
/// like the reply, depends only on the model and the prompt.
pub fn thinking_tokens(model: &str, prompt: &str) -> Vec<String> {
    let mut rng = SplitMix::new(fnv1a(&[b"think", model.as_bytes(), prompt.as_bytes()]));
    let mut text = String::from("Okay, the user wants an answer. Let me think about");
    for _ in 0..4 {
        let w = WORDS[(rng.next_u64() % WORDS.len() as u64) as usize];
        text.push(' ');
        text.push_str(w);
    }
    text.push_str(" first.");
    split_tokens(&text)
}

/// Splits fixed text into word tokens whose concatenation is the text.
pub fn split_tokens(text: &str) -> Vec<String> {
    text.split_inclusive(' ').map(str::to_owned).collect()
}

/// Splits JSON text into small chunks (about one token each).
pub fn split_json(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(4).map(|c| c.iter().collect()).collect()
}

/// An example value for a JSON schema: strings "sim", numbers 1, booleans
/// true, objects with every property filled, arrays with one item.
pub fn fill_schema(schema: &Value) -> Value {
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    {
        return first.clone();
    }
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    let ty = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match ty {
        "object" => {
            let mut m = Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    m.insert(k.clone(), fill_schema(v));
                }
            }
            Value::Object(m)
        }
        "array" => match schema.get("items") {
            Some(items) => Value::Array(vec![fill_schema(items)]),
            None => Value::Array(Vec::new()),
        },
        "number" | "integer" => json!(1),
        "boolean" => json!(true),
        "null" => Value::Null,
        _ => json!("sim"),
    }
}

/// Tool-call arguments: only the schema's required properties, filled.
pub fn tool_arguments(parameters: &Value) -> Map<String, Value> {
    let mut m = Map::new();
    let props = parameters.get("properties").and_then(Value::as_object);
    if let Some(required) = parameters.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            let schema = props
                .and_then(|p| p.get(name))
                .cloned()
                .unwrap_or(json!({}));
            m.insert(name.to_owned(), fill_schema(&schema));
        }
    }
    m
}

/// The JSON object text answered for `format: "json"` or a schema.
pub fn json_reply(model: &str, prompt: &str, format: &Value) -> String {
    let v = match format {
        Value::Object(_) => fill_schema(format),
        _ => {
            let (tokens, _) = reply_tokens(model, prompt, None);
            json!({ "response": tokens.concat().trim_end() })
        }
    };
    match v {
        Value::Object(_) => v.to_string(),
        other => json!({ "value": other }).to_string(),
    }
}

/// A deterministic, L2-normalised embedding of `text`.
pub fn embedding(text: &str, dims: usize) -> Vec<f32> {
    let mut r = SplitMix::new(fnv1a(&[b"embed", text.as_bytes()]));
    let mut v: Vec<f32> = (0..dims)
        .map(|_| ((r.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32)
        .collect();
    normalize(&mut v);
    v
}

/// Scales a vector to unit length.
pub fn normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        for x in v.iter_mut() {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
}

/// Rough token count the way herd estimates it: chars / 4.
pub fn approx_tokens(text: &str) -> u32 {
    u32::try_from(text.chars().count() / 4).unwrap_or(u32::MAX)
}

/// RFC 3339 in UTC with nanoseconds, as Ollama prints times.
pub fn rfc3339(t: SystemTime) -> String {
    herd_proto::time::rfc3339_at(t)
}

/// How long a model stays loaded after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// Unload this long after the last request ends (zero: at once).
    For(Duration),
    /// Never unload.
    Forever,
}

/// Parses Ollama's `keep_alive`: a Go duration string ("5m", "1h30m", "0"),
/// a number of seconds, negative meaning forever.
pub fn parse_keep_alive(v: &Value) -> Option<KeepAlive> {
    match v {
        Value::Number(n) => {
            let s = n.as_f64()?;
            Some(if s < 0.0 {
                KeepAlive::Forever
            } else {
                KeepAlive::For(Duration::from_secs_f64(s))
            })
        }
        Value::String(s) => parse_duration(s),
        _ => None,
    }
}

fn parse_duration(s: &str) -> Option<KeepAlive> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('-') {
        return parse_duration(rest).map(|_| KeepAlive::Forever);
    }
    if let Ok(n) = s.parse::<f64>() {
        return Some(KeepAlive::For(Duration::from_secs_f64(n)));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Some(KeepAlive::For(Duration::from_secs_f64(total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_depends_only_on_model_and_prompt() {
        let (a, cut) = reply_tokens("qwen3:8b", "why is the sky blue?", None);
        let (b, _) = reply_tokens("qwen3:8b", "why is the sky blue?", None);
        let (c, _) = reply_tokens("qwen3:8b", "why is grass green?", None);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(!cut);
        assert_eq!(a.len(), DEFAULT_REPLY_TOKENS);
        assert!(a.concat().starts_with("Hello from qwen3:8b. "));
        assert!(a.iter().all(|t| t.ends_with(' ')));
        let (short, cut) = reply_tokens("qwen3:8b", "why is the sky blue?", Some(5));
        assert_eq!(short[..], a[..5]);
        assert!(cut);
    }

    #[test]
    fn thinking_is_short_and_deterministic() {
        let a = thinking_tokens("r:1", "why?");
        assert_eq!(a, thinking_tokens("r:1", "why?"));
        assert_ne!(a, thinking_tokens("r:1", "how?"));
        assert!(a.concat().starts_with("Okay, the user wants an answer."));
        assert!(a.len() < DEFAULT_REPLY_TOKENS);
    }

    #[test]
    fn tool_arguments_fill_required_properties_only() {
        let params = json!({
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "optional": {"type": "string"}
            },
            "required": ["city", "days", "metric", "unit"]
        });
        let args = Value::Object(tool_arguments(&params));
        assert_eq!(
            args,
            json!({"city": "sim", "days": 1, "metric": true, "unit": "celsius"})
        );
    }

    #[test]
    fn json_replies_are_objects() {
        let schema = json!({"type":"object","properties":{"name":{"type":"string"},"age":{"type":"number"},"tags":{"type":"array","items":{"type":"string"}}}});
        let v: Value = serde_json::from_str(&json_reply("m", "p", &schema)).expect("valid json");
        assert_eq!(v, json!({"name":"sim","age":1,"tags":["sim"]}));
        let v: Value = serde_json::from_str(&json_reply("m", "p", &json!("json"))).expect("json");
        assert!(v.get("response").is_some_and(Value::is_string));
    }

    #[test]
    fn embeddings_are_deterministic_and_unit_length() {
        let a = embedding("hello", 384);
        assert_eq!(a, embedding("hello", 384));
        assert_ne!(a, embedding("world", 384));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }

    #[test]
    fn keep_alive_forms() {
        let f = |v: Value| parse_keep_alive(&v);
        assert_eq!(
            f(json!("5m")),
            Some(KeepAlive::For(Duration::from_secs(300)))
        );
        assert_eq!(
            f(json!("1h30m")),
            Some(KeepAlive::For(Duration::from_secs(5400)))
        );
        assert_eq!(f(json!(0)), Some(KeepAlive::For(Duration::ZERO)));
        assert_eq!(f(json!("0")), Some(KeepAlive::For(Duration::ZERO)));
        assert_eq!(f(json!(-1)), Some(KeepAlive::Forever));
        assert_eq!(f(json!("-1m")), Some(KeepAlive::Forever));
        assert_eq!(f(json!("soon")), None);
    }

    #[test]
    fn rfc3339_known_instant() {
        let t = std::time::UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.000000005Z");
    }
}
