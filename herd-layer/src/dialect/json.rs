//! JSON request bodies kept as the bytes they came in.
//!
//! herd reads a handful of a body's fields and forwards the rest, often more
//! than once (retries, fallbacks). Parsing the whole body into a
//! `serde_json::Value` tree costs tens of times its size in small
//! allocations — a 30 MB body of a million tiny messages took 2.4 GB — and
//! keeping that tree for the life of the request kept the memory. So a body
//! is indexed instead: [`RawObject`] records where each top-level field's
//! value lies in the bytes, small fields are read from their slice when
//! asked, big ones (messages, inputs) are walked element by element, and the
//! body sent upstream is spliced from the original bytes with herd's few
//! changes ([`RawObject::write`]).
//!
//! [`cost`] estimates what parsing a body into values would take, before
//! anything is parsed, so the edges can refuse or budget it.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde_json::value::RawValue;

/// A JSON object: its bytes and where each top-level value lies in them.
#[derive(Clone, Default)]
pub struct RawObject {
    bytes: Bytes,
    /// In order of appearance; a key given twice keeps its last value (as
    /// `serde_json::Map` does).
    fields: Vec<(Box<str>, Range<usize>)>,
}

impl fmt::Debug for RawObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawObject")
            .field("bytes", &self.bytes.len())
            .field(
                "keys",
                &self.fields.iter().map(|(k, _)| &**k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Why a body is not a JSON object.
#[derive(Debug, thiserror::Error)]
pub enum NotAnObject {
    /// The bytes are not JSON.
    #[error("invalid JSON in request body: {0}")]
    Json(#[from] serde_json::Error),
    /// The JSON is not an object.
    #[error("request body must be a JSON object")]
    NotObject,
}

struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> de::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::new();
                while let Some(k) = m.next_key::<Cow<'de, str>>()? {
                    let v: &'de RawValue = m.next_value()?;
                    out.retain(|(old, _)| *old != k);
                    out.push((k, v));
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl RawObject {
    /// Index `bytes`, which must hold one JSON object.
    pub fn parse(bytes: Bytes) -> Result<Self, NotAnObject> {
        let base = bytes.as_ptr() as usize;
        let fields = match serde_json::from_slice::<Fields<'_>>(&bytes) {
            Ok(f) => f,
            Err(e) if e.is_data() => {
                // Valid JSON of the wrong shape, or invalid JSON a
                // type-directed parse reports late: tell them apart.
                return match serde_json::from_slice::<de::IgnoredAny>(&bytes) {
                    Ok(_) => Err(NotAnObject::NotObject),
                    Err(e) => Err(NotAnObject::Json(e)),
                };
            }
            Err(e) => return Err(NotAnObject::Json(e)),
        };
        let fields = fields
            .0
            .into_iter()
            .map(|(k, v)| {
                let start = v.get().as_ptr() as usize - base;
                (Box::from(&*k), start..start + v.get().len())
            })
            .collect();
        Ok(RawObject { bytes, fields })
    }

    /// The object `{}`.
    pub fn empty() -> Self {
        RawObject {
            bytes: Bytes::from_static(b"{}"),
            fields: Vec::new(),
        }
    }

    /// The bytes it was read from (fields removed since still in them).
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The raw JSON text of `key`'s value.
    pub fn raw(&self, key: &str) -> Option<&str> {
        let (_, r) = self.fields.iter().find(|(k, _)| &**k == key)?;
        // The range was cut from a `&str` serde_json validated.
        std::str::from_utf8(&self.bytes[r.clone()]).ok()
    }

    /// Whether `key` is present and not `null`.
    pub fn has(&self, key: &str) -> bool {
        self.raw(key).is_some_and(|r| r != "null")
    }

    /// `key`'s value read as `T`; `None` when absent or `null`.
    pub fn get<'a, T: de::Deserialize<'a>>(
        &'a self,
        key: &str,
    ) -> Result<Option<T>, serde_json::Error> {
        match self.raw(key) {
            None | Some("null") => Ok(None),
            Some(r) => serde_json::from_str(r).map(Some),
        }
    }

    /// `key`'s value as a `serde_json::Value` (for small fields only).
    pub fn value(&self, key: &str) -> Option<serde_json::Value> {
        self.get(key).ok().flatten()
    }

    /// Forget `key` (its bytes stay, unused).
    pub fn remove(&mut self, key: &str) {
        self.fields.retain(|(k, _)| &**k != key);
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(k, _)| &**k)
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether it has no field.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The object as JSON with `edits` applied: each `(key, Some(json))`
    /// replaces or adds the field (its value is raw JSON text, written as
    /// is), each `(key, None)` leaves it out. Everything else is copied
    /// from the original bytes.
    pub fn write(&self, edits: &[(&str, Option<&str>)]) -> Vec<u8> {
        let extra: usize = edits
            .iter()
            .map(|(k, v)| k.len() + v.map_or(0, str::len) + 8)
            .sum();
        let mut out = Vec::with_capacity(self.bytes.len() + extra);
        out.push(b'{');
        let mut first = true;
        let mut sep = |out: &mut Vec<u8>| {
            if !first {
                out.push(b',');
            }
            first = false;
        };
        for (k, r) in &self.fields {
            if edits.iter().any(|(e, _)| *e == &**k) {
                continue;
            }
            sep(&mut out);
            write_key(&mut out, k);
            out.extend_from_slice(&self.bytes[r.clone()]);
        }
        for (k, v) in edits {
            if let Some(v) = v {
                sep(&mut out);
                write_key(&mut out, k);
                out.extend_from_slice(v.as_bytes());
            }
        }
        out.push(b'}');
        out
    }

    /// Build an object from fields whose values are raw JSON text.
    pub fn from_fields<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut out = Vec::new();
        out.push(b'{');
        let mut spans = Vec::new();
        for (i, (k, v)) in fields.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_key(&mut out, k);
            let start = out.len();
            out.extend_from_slice(v.as_bytes());
            spans.push((Box::from(k), start..out.len()));
        }
        out.push(b'}');
        RawObject {
            bytes: Bytes::from(out),
            fields: spans,
        }
    }
}

fn write_key(out: &mut Vec<u8>, k: &str) {
    // serde_json writes a string with exactly JSON's escapes.
    let _ = serde_json::to_writer(&mut *out, k);
    out.push(b':');
}

/// Walk a JSON array element by element without keeping it: each element
/// is handed to `f` as `T` and dropped before the next is read.
pub fn each<'de, T, F>(raw: &'de str, mut f: F) -> Result<usize, serde_json::Error>
where
    T: de::Deserialize<'de>,
    F: FnMut(usize, T) -> Result<(), String>,
{
    struct Seed<'f, T, F> {
        f: &'f mut F,
        _t: std::marker::PhantomData<T>,
    }
    impl<'de, T: de::Deserialize<'de>, F: FnMut(usize, T) -> Result<(), String>> Visitor<'de>
        for Seed<'_, T, F>
    {
        type Value = usize;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array")
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
            let mut i = 0;
            while let Some(x) = seq.next_element::<T>()? {
                (self.f)(i, x).map_err(de::Error::custom)?;
                i += 1;
            }
            Ok(i)
        }
    }
    impl<'de, T: de::Deserialize<'de>, F: FnMut(usize, T) -> Result<(), String>>
        DeserializeSeed<'de> for Seed<'_, T, F>
    {
        type Value = usize;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
            d.deserialize_seq(self)
        }
    }
    let mut de = serde_json::Deserializer::from_str(raw);
    let n = Seed {
        f: &mut f,
        _t: std::marker::PhantomData,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(n)
}

/// What parsing a body would cost, from one pass over its bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Objects and arrays.
    pub containers: usize,
    /// Strings, numbers, booleans and nulls (keys included).
    pub scalars: usize,
    /// Deepest nesting.
    pub depth: usize,
    /// Values inside the largest single element of a top-level field (one
    /// message, one input): herd builds a tree of at most one element at a
    /// time.
    pub largest_element: usize,
}

/// What one value of a `serde_json::Value` tree takes, at most: a map node
/// per small object dominates.
const BYTES_PER_VALUE: usize = 640;

impl Cost {
    /// A bound on the memory a `serde_json::Value` tree of the whole body
    /// takes (what parsing it naïvely would cost).
    pub fn tree_bytes(&self, len: usize) -> usize {
        len.saturating_add(self.containers.saturating_mul(BYTES_PER_VALUE))
            .saturating_add(self.scalars.saturating_mul(48))
    }

    /// What herd's own parse of the body holds at its peak: the body, its
    /// translation, and one element's tree.
    pub fn parse_bytes(&self, len: usize) -> usize {
        len.saturating_mul(2)
            .saturating_add(self.largest_element.saturating_mul(BYTES_PER_VALUE))
    }
}

/// Count a body's JSON values without parsing it (strings and escapes are
/// skipped; malformed input is counted as far as it goes — the real parse
/// reports it).
pub fn cost(bytes: &[u8]) -> Cost {
    let mut c = Cost::default();
    let mut depth = 0usize;
    let mut i = 0;
    let mut in_scalar = false;
    // Values since the current depth-3 element began.
    let mut element = 0usize;
    while i < bytes.len() {
        let b = bytes[i];
        if depth >= 3 && matches!(b, b'"' | b'{' | b'[') {
            element += 1;
            c.largest_element = c.largest_element.max(element);
        }
        match b {
            b'"' => {
                c.scalars += 1;
                in_scalar = false;
                i += 1;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
            }
            b'{' | b'[' => {
                c.containers += 1;
                depth += 1;
                c.depth = c.depth.max(depth);
                if depth == 3 {
                    element = 1;
                    c.largest_element = c.largest_element.max(element);
                }
                in_scalar = false;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                in_scalar = false;
            }
            b',' | b':' | b' ' | b'\n' | b'\r' | b'\t' => in_scalar = false,
            _ => {
                if !in_scalar {
                    c.scalars += 1;
                    in_scalar = true;
                }
            }
        }
        i += 1;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(s: &str) -> RawObject {
        RawObject::parse(Bytes::copy_from_slice(s.as_bytes())).unwrap()
    }

    #[test]
    fn fields_are_found_where_they_lie() {
        let o = obj(r#" {"model":"m:1b", "messages":[{"role":"user"}],"n":2, "x":null} "#);
        assert_eq!(o.raw("model"), Some(r#""m:1b""#));
        assert_eq!(o.raw("messages"), Some(r#"[{"role":"user"}]"#));
        assert_eq!(o.get::<u32>("n").unwrap(), Some(2));
        assert_eq!(o.get::<u32>("x").unwrap(), None);
        assert!(!o.has("x") && o.has("n"));
        assert_eq!(
            o.keys().collect::<Vec<_>>(),
            ["model", "messages", "n", "x"]
        );
    }

    #[test]
    fn the_last_of_a_repeated_key_wins() {
        let o = obj(r#"{"a":1,"b":2,"a":3}"#);
        assert_eq!(o.get::<u32>("a").unwrap(), Some(3));
        assert_eq!(o.len(), 2);
    }

    #[test]
    fn escaped_keys_and_unicode_survive() {
        let o = obj(r#"{"k\"ey":"v\u00e9","é":[1,"}"]}"#);
        assert_eq!(o.get::<String>("k\"ey").unwrap().as_deref(), Some("vé"));
        let back: serde_json::Value = serde_json::from_slice(&o.write(&[])).unwrap();
        assert_eq!(back, serde_json::json!({"k\"ey": "vé", "é": [1, "}"]}));
    }

    #[test]
    fn writing_replaces_adds_and_drops() {
        let o = obj(r#"{"model":"a","stream":true,"tags":["t"],"messages":[]}"#);
        let w = o.write(&[
            ("model", Some(r#""b""#)),
            ("tags", None),
            ("keep_alive", Some("0")),
        ]);
        let v: serde_json::Value = serde_json::from_slice(&w).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"model":"b","stream":true,"messages":[],"keep_alive":0})
        );
        let mut o = o;
        o.remove("messages");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&o.write(&[])).unwrap(),
            serde_json::json!({"model":"a","stream":true,"tags":["t"]})
        );
        let built = RawObject::from_fields([("a", "1"), ("b", r#"{"c":[]}"#)]);
        assert_eq!(built.bytes().as_ref(), br#"{"a":1,"b":{"c":[]}}"#);
        assert_eq!(built.raw("b"), Some(r#"{"c":[]}"#));
    }

    #[test]
    fn non_objects_and_bad_json_are_told_apart() {
        assert!(matches!(
            RawObject::parse(Bytes::from_static(b"[1]")),
            Err(NotAnObject::NotObject)
        ));
        assert!(matches!(
            RawObject::parse(Bytes::from_static(b"{\"a\":")),
            Err(NotAnObject::Json(_))
        ));
        assert!(matches!(
            RawObject::parse(Bytes::from_static(b"{} x")),
            Err(NotAnObject::Json(_))
        ));
    }

    #[test]
    fn arrays_are_walked_one_element_at_a_time() {
        let mut seen = Vec::new();
        let n = each::<serde_json::Value, _>(r#"[1, {"a":2}, "x"]"#, |i, v| {
            seen.push((i, v));
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 3);
        assert_eq!(seen[1].1["a"], 2);
        let e = each::<u32, _>(
            "[1,2,3]",
            |i, _| if i == 1 { Err("no".into()) } else { Ok(()) },
        )
        .unwrap_err();
        assert!(e.to_string().contains("no"), "{e}");
        assert!(each::<u32, _>("{}", |_, _| Ok(())).is_err());
    }

    #[test]
    fn cost_counts_values_not_bytes() {
        let c = cost(br#"{"messages":[{"role":"user","content":"a,b{c}"},{"role":"x"}],"n":12}"#);
        assert_eq!(c.containers, 4);
        // messages, role, user, content, "a,b{c}", role, x, n, 12
        assert_eq!(c.scalars, 9);
        assert_eq!(c.depth, 3);
        let tiny = "{\"role\":\"u\"},".repeat(1000);
        let c = cost(format!("{{\"messages\":[{tiny}1]}}").as_bytes());
        assert_eq!(c.containers, 1002);
        assert!(c.tree_bytes(12_000) > 600_000);
        // One element at a time: a message of one object and two strings.
        assert_eq!(c.largest_element, 3);
        assert!(c.parse_bytes(12_000) < 30_000);
        let parts = "{\"type\":\"text\"},".repeat(1000);
        let big = cost(format!("{{\"messages\":[{{\"content\":[{parts}1]}}]}}").as_bytes());
        assert!(big.largest_element > 3000, "{big:?}");
        assert_eq!(cost(br#""\\\"{""#).containers, 0);
    }
}
