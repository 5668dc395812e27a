//! `parse`: every dialect's request parse, and the upstream body built from it.
//!
//! Input: byte 0 picks the endpoint (low 4 bits: `ENDPOINTS[b % len]`) and,
//! in its high 4 bits, a set of client headers; the rest is the request body.
//!
//! Invariants (a panic is a bug in herd-layer):
//! - nothing panics: `json::cost`, `RawObject::parse`, `dialect::parse`,
//!   `dialect::parse_unknown`, `dialect::object_map`;
//! - `RawObject::write` always writes valid JSON, and with no edits the same
//!   JSON value it read;
//! - a parsed request's upstream body (the client's body, or for OpenAI its
//!   translation `native`), spliced the way the forward leaf splices it
//!   (model, `stream`, `options` without `num_ctx`), is a valid JSON object
//!   naming the model tried and holding no herd-only field;
//! - a refused body is refused with a 4xx, and its error body serialises.

#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use bytes::Bytes;
use herd_layer::budget::Charge;
use herd_layer::dialect::json::{self, RawObject};
use herd_layer::dialect::{self, MAX_FALLBACKS, ParseConfig};
use herd_layer::request::{Dialect, ENDPOINTS};
use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use serde_json::value::RawValue;

fn fallbacks() -> &'static BTreeMap<String, Vec<String>> {
    static F: OnceLock<BTreeMap<String, Vec<String>>> = OnceLock::new();
    F.get_or_init(|| {
        let mut m = BTreeMap::new();
        m.insert("m".to_string(), vec!["m2:1b".to_string(), "m3".to_string()]);
        m.insert("qwen3:8b".to_string(), vec!["qwen3:4b".to_string()]);
        m
    })
}

/// Known bugs, already reported, whose checks `HERD_FUZZ_KNOWN=a,b` (or
/// `all`) turns off so a long run can look for others. Unset (the smoke
/// test): every check is on.
fn known(issue: &str) -> bool {
    static K: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    K.get_or_init(|| std::env::var("HERD_FUZZ_KNOWN").unwrap_or_default())
        .split(',')
        .any(|s| s.trim() == issue || s.trim() == "all")
}

/// Known bug `model-char-boundary`: `request::normalized` slices a name at
/// a byte that may fall inside a character; `fallback_models` reach it
/// before they are checked.
fn non_ascii_fallback(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body).is_ok_and(|v| {
        v.get("fallback_models")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|m| m.as_str().is_some_and(|m| !m.is_ascii())))
    })
}

fn headers(bits: u8) -> HeaderMap {
    let mut h = HeaderMap::new();
    if bits & 1 != 0 {
        h.insert("x-herd-tags", "team-a, batch".parse().unwrap());
    }
    if bits & 2 != 0 {
        h.insert("x-herd-fallback-models", "llama3.2:1b, m".parse().unwrap());
    }
    if bits & 4 != 0 {
        h.insert(
            http::header::CONTENT_TYPE,
            "multipart/form-data; boundary=x".parse().unwrap(),
        );
        h.insert("x-request-id", "req-0123456789".parse().unwrap());
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
    }
    if bits & 8 != 0 {
        h.insert(dialect::HOP_HEADER, "herd-a, herd-b".parse().unwrap());
    }
    h
}

/// Whether `bytes` are one valid JSON text. A raw value is checked the way
/// herd reads bodies (no nesting limit), so deep bodies that herd accepted
/// are judged by the same rule.
fn valid_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<&RawValue>(bytes).is_ok()
}

/// The written body as a value, when serde_json can build one (it cannot
/// beyond 128 levels of nesting; herd itself never builds that tree).
fn value(bytes: &[u8]) -> Option<Value> {
    serde_json::from_slice(bytes).ok()
}

fn check_object(label: &str, out: &[u8]) {
    assert!(
        valid_json(out),
        "{label}: RawObject::write produced invalid JSON: {:?}",
        String::from_utf8_lossy(out)
    );
    assert_eq!(
        out.iter().find(|b| !b.is_ascii_whitespace()),
        Some(&b'{'),
        "{label}: not an object"
    );
}

fn check_raw_object(o: &RawObject, original: &[u8]) {
    let out = o.write(&[]);
    check_object("write(&[])", &out);
    if let (Some(a), Some(b)) = (value(original), value(&out)) {
        assert_eq!(a, b, "write(&[]) changed the body");
    }
    for k in o.keys() {
        let raw = o.raw(k).expect("a listed key has a value");
        assert!(valid_json(raw.as_bytes()), "field {k:?} is not JSON: {raw:?}");
    }
    // Replacing, adding and dropping fields keeps it valid.
    let first = o.keys().next().map(str::to_string);
    let mut edits: Vec<(&str, Option<&str>)> = vec![("model", Some("\"m\"")), ("k\"\n\u{0}", Some("[1]"))];
    if let Some(f) = &first {
        edits.push((f, None));
    }
    check_object("write(edits)", &o.write(&edits));
}

fn check_upstream(label: &str, src: &RawObject, model: &str) {
    let model_json = serde_json::to_string(model).unwrap();
    let options;
    let mut edits: Vec<(&str, Option<&str>)> = vec![("model", Some(&model_json))];
    // What the leaf adds for Ollama generation: an explicit stream, and
    // options without num_ctx under context protection.
    edits.push(("stream", Some("true")));
    if let Some(Value::Object(mut o)) = src.value("options") {
        o.remove("num_ctx");
        options = Value::Object(o).to_string();
        edits.push(("options", Some(&options)));
    }
    for n in [1, edits.len()] {
        let out = src.write(&edits[..n]);
        check_object(label, &out);
        if let Some(v) = value(&out) {
            assert_eq!(v.get("model").and_then(Value::as_str), Some(model), "{label}: model");
            for f in ["fallback_models", "tags"] {
                assert!(v.get(f).is_none(), "{label}: herd-only field {f} sent upstream");
            }
        }
    }
    // The fallback the retry layer may try instead.
    check_object(label, &src.write(&[("model", Some("\"fallback:1b\""))]));
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let spec = &ENDPOINTS[(sel & 0x0f) as usize % ENDPOINTS.len()];
    let h = headers(sel >> 4);
    if known("model-char-boundary") && non_ascii_fallback(body) {
        return;
    }

    let cost = json::cost(body);
    let _ = (cost.tree_bytes(body.len()), cost.parse_bytes(body.len()));

    let bytes = Bytes::copy_from_slice(body);
    if let Ok(o) = RawObject::parse(bytes.clone()) {
        check_raw_object(&o, body);
    }

    let cfg = ParseConfig {
        fallback_models: fallbacks(),
        aliases: None,
    };
    match dialect::parse(spec.endpoint, &h, bytes.clone(), cfg, Charge::none()) {
        Ok(r) => {
            assert!(dialect::check_model_name(&r.model).is_ok(), "{:?}", r.model);
            assert!(r.fallback_models.len() <= MAX_FALLBACKS);
            for m in &r.fallback_models {
                assert!(dialect::check_model_name(m).is_ok(), "{m:?}");
            }
            assert!(r.tags.len() <= 32);
            assert!(!r.stream || spec.can_stream);
            assert!(r.est_prompt_tokens >= 1);
            assert_eq!(r.native.is_some(), spec.dialect != Dialect::Ollama);
            assert!(r.body.raw("fallback_models").is_none() && r.body.raw("tags").is_none());
            check_upstream("body", &r.body, &r.model);
            if let Some(n) = &r.native {
                check_upstream("native", n, &r.model);
            }
            for v in ["0.12.6", "99.0.0"] {
                let _ = dialect::plan(r.endpoint, herd_layer::fleet::Engine::Ollama, v, r.stream);
            }
        }
        Err(e) => {
            assert!(e.status.is_client_error(), "parse answered {}: {}", e.status, e.message);
            let v = dialect::error_body(spec.dialect, &e);
            assert!(serde_json::to_vec(&v).is_ok());
        }
    }

    match dialect::parse_unknown(&h, bytes.clone()) {
        Ok(r) => assert!(dialect::check_model_name(&r.model).is_ok()),
        Err(e) => assert!(e.status.is_client_error()),
    }
    if let Err(e) = dialect::object_map(&h, bytes) {
        assert!(e.status.is_client_error());
    }
});
