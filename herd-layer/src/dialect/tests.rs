//! Parsing, field by field: what herd reads, refuses and strips.

use http::{StatusCode, header};

use super::*;

fn cfg() -> ParseConfig<'static> {
    static NONE: BTreeMap<String, Vec<String>> = BTreeMap::new();
    ParseConfig {
        fallback_models: &NONE,
    }
}

fn p(endpoint: Endpoint, body: &str) -> Result<RouteRequest, ClientError> {
    parse(endpoint, &HeaderMap::new(), body.as_bytes(), cfg())
}

#[test]
fn ollama_chat_defaults_to_streaming() {
    let r = p(
        Endpoint::OllamaChat,
        r#"{"model":"m","messages":[{"role":"user","content":"hello there"}]}"#,
    )
    .unwrap();
    assert!(r.stream);
    assert_eq!(r.model, "m");
    assert_eq!(r.est_prompt_tokens, 2 + 4);
    let r = p(
        Endpoint::OpenAiChat,
        r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
    )
    .unwrap();
    assert!(!r.stream);
}

#[test]
fn bad_bodies_are_refused_with_reasons() {
    let e = p(Endpoint::OllamaChat, "{not json").unwrap_err();
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
    assert!(e.message.contains("invalid JSON"));
    assert!(
        p(Endpoint::OllamaChat, "[1]")
            .unwrap_err()
            .message
            .contains("object")
    );
    assert!(
        p(Endpoint::OllamaChat, r#"{"messages":[]}"#)
            .unwrap_err()
            .message
            .contains("model")
    );
    assert!(p(Endpoint::OllamaChat, r#"{"model":"m","messages":"x"}"#).is_err());
    assert!(
        p(
            Endpoint::OllamaChat,
            r#"{"model":"m","messages":[{"content":"x"}]}"#
        )
        .is_err()
    );
    assert!(p(Endpoint::OpenAiChat, r#"{"model":"m","messages":[]}"#).is_err());
    assert!(p(Endpoint::OllamaEmbed, r#"{"model":"m"}"#).is_err());
    assert!(p(Endpoint::OllamaChat, r#"{"model":"m","stream":"yes"}"#).is_err());
}

#[test]
fn herd_fields_are_read_and_stripped() {
    let mut h = HeaderMap::new();
    h.insert("x-herd-tags", "a, b".parse().unwrap());
    let r = parse(
        Endpoint::OllamaChat,
        &h,
        br#"{"model":"m","messages":[],"fallback_models":["f1","m"],"metadata":{"tags":["t"]},"options":{"num_predict":12,"num_ctx":4096}}"#,
        cfg(),
    )
    .unwrap();
    assert_eq!(r.fallback_models, vec!["f1"]);
    assert_eq!(r.tags, vec!["t", "a", "b"]);
    assert_eq!(r.max_output_tokens, Some(12));
    assert_eq!(r.num_ctx, Some(4096));
    assert!(!r.body.contains_key("fallback_models"));
    assert!(!r.body.contains_key("metadata"));
}

#[test]
fn fallbacks_are_bounded_and_deduplicated() {
    let r = p(
        Endpoint::OllamaChat,
        r#"{"model":"m","fallback_models":["a","a:latest","b",""]}"#,
    )
    .unwrap();
    assert_eq!(r.fallback_models, vec!["a", "b"]);
    let many: Vec<String> = (0..9).map(|i| format!("f{i}")).collect();
    let body = serde_json::json!({"model": "m", "fallback_models": many}).to_string();
    let e = p(Endpoint::OllamaChat, &body).unwrap_err();
    assert!(e.message.contains("at most 8"), "{}", e.message);
}

#[test]
fn untranslatable_openai_bodies_fail_early() {
    let e = p(
        Endpoint::OpenAiChat,
        r#"{"model":"m","n":2,"messages":[{"role":"user","content":"x"}]}"#,
    )
    .unwrap_err();
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
}

#[test]
fn content_types() {
    let mut h = HeaderMap::new();
    assert!(check_content_type(&h).is_ok());
    h.insert(
        header::CONTENT_TYPE,
        "application/json; charset=utf-8".parse().unwrap(),
    );
    assert!(check_content_type(&h).is_ok());
    h.insert(
        header::CONTENT_TYPE,
        "application/x-www-form-urlencoded".parse().unwrap(),
    );
    assert!(check_content_type(&h).is_ok());
    h.insert(
        header::CONTENT_TYPE,
        "multipart/form-data; boundary=x".parse().unwrap(),
    );
    assert_eq!(
        check_content_type(&h).unwrap_err().status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
}

#[test]
fn openai_images_and_user_count() {
    let r = p(
        Endpoint::OpenAiChat,
        r#"{"model":"m","user":"u1","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"abcd"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]}"#,
    )
    .unwrap();
    assert_eq!(r.images, 1);
    assert_eq!(r.tags, vec!["user:u1"]);
    assert_eq!(r.max_output_tokens, Some(5));
}
