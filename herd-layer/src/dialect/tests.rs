//! Parsing, field by field: what herd reads, refuses and strips.

use http::{StatusCode, header};

use super::*;

fn cfg() -> ParseConfig<'static> {
    static NONE: BTreeMap<String, Vec<String>> = BTreeMap::new();
    ParseConfig {
        fallback_models: &NONE,
        aliases: None,
    }
}

#[test]
fn aliases_resolve_the_model_and_its_fallbacks_and_keep_the_clients_name() {
    let aliases: crate::alias::Aliases = [
        (
            "claude-sonnet-4-5".to_string(),
            "qwen3-coder:30b".to_string(),
        ),
        ("backup".to_string(), "qwen3:8b".to_string()),
    ]
    .into_iter()
    .collect::<BTreeMap<_, _>>()
    .try_into()
    .unwrap();
    let tiers = crate::alias::AliasTiers {
        small: Some("qwen3:1.7b".into()),
        ..Default::default()
    };
    let none = BTreeMap::new();
    let cfg = ParseConfig {
        fallback_models: &none,
        aliases: Some((&aliases, &tiers)),
    };
    let run = |body: &str| {
        parse(
            Endpoint::AnthropicMessages,
            &HeaderMap::new(),
            Bytes::from(body.to_string()),
            cfg,
            Charge::none(),
        )
    };
    let r = run(r#"{"model":"claude-sonnet-4-5","max_tokens":9,"messages":[{"role":"user","content":"hi"}],"fallback_models":["backup","claude-haiku-4-5"]}"#).unwrap();
    assert_eq!(r.model, "qwen3-coder:30b");
    assert_eq!(r.client_model, "claude-sonnet-4-5");
    assert_eq!(r.fallback_models, ["qwen3:8b", "qwen3:1.7b"]);
    // A name no alias maps is routed as written.
    let r =
        run(r#"{"model":"llama3.2","max_tokens":9,"messages":[{"role":"user","content":"x"}]}"#)
            .unwrap();
    assert_eq!(
        (r.model.as_str(), r.client_model.as_str()),
        ("llama3.2", "llama3.2")
    );
}

fn p(endpoint: Endpoint, body: &str) -> Result<RouteRequest, ClientError> {
    with(endpoint, &HeaderMap::new(), body)
}

fn with(endpoint: Endpoint, h: &HeaderMap, body: &str) -> Result<RouteRequest, ClientError> {
    parse(
        endpoint,
        h,
        Bytes::copy_from_slice(body.as_bytes()),
        cfg(),
        Charge::none(),
    )
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
    let r = with(
        Endpoint::OllamaChat,
        &h,
        r#"{"model":"m","messages":[],"fallback_models":["f1","m"],"metadata":{"tags":["t"]},"options":{"num_predict":12,"num_ctx":4096}}"#,
    )
    .unwrap();
    assert_eq!(r.fallback_models, vec!["f1"]);
    assert_eq!(r.tags, vec!["t", "a", "b"]);
    assert_eq!(r.max_output_tokens, Some(12));
    assert_eq!(r.num_ctx, Some(4096));
    assert!(r.body.raw("fallback_models").is_none());
    assert!(r.body.raw("metadata").is_none());
    assert!(r.body.raw("options").is_some());
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
fn any_content_type_is_read_as_json_and_only_non_json_is_refused() {
    let body = r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#;
    for ct in [
        "application/json; charset=utf-8",
        "application/octet-stream",
        "text/plain",
        "application/x-www-form-urlencoded",
    ] {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
        assert!(with(Endpoint::OllamaChat, &h, body).is_ok(), "{ct}");
    }
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        "multipart/form-data; boundary=x".parse().unwrap(),
    );
    let e = with(Endpoint::OllamaChat, &h, "--x\r\n").unwrap_err();
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
    assert!(e.message.contains("multipart"), "{}", e.message);
}

#[test]
fn model_names_are_checked() {
    assert!(check_model_name("registry.local:5000/lib/qwen3:8b").is_ok());
    assert!(check_model_name("m@sha256:abc").is_ok());
    for bad in ["", "a b", "x\"y", &"a".repeat(MAX_MODEL_NAME + 1)] {
        assert!(check_model_name(bad).is_err(), "{bad:?}");
    }
    let long = "m".repeat(1_000_000);
    let e = p(
        Endpoint::OllamaChat,
        &format!(r#"{{"model":"{long}","messages":[]}}"#),
    )
    .unwrap_err();
    assert_eq!(e.code, Some("invalid_model"));
    assert!(
        e.message.len() < 300,
        "the refusal does not echo a huge name"
    );
}

#[test]
fn bodies_go_upstream_as_they_came() {
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi","images":["AA","BB"]}],"options":{"seed":1},"tags":["t"],"extra":{"kept":true}}"#;
    let r = p(Endpoint::OllamaChat, body).unwrap();
    assert_eq!(r.images, 2);
    let out: serde_json::Value =
        serde_json::from_slice(&r.body.write(&[("model", Some("\"n\""))])).unwrap();
    assert_eq!(
        out,
        serde_json::json!({"model":"n","messages":[{"role":"user","content":"hi","images":["AA","BB"]}],"options":{"seed":1},"extra":{"kept":true}})
    );
}

#[test]
fn a_million_tiny_messages_are_sized_without_a_tree() {
    // One element at a time: the peak is one message, not the array.
    let msgs = "{\"role\":\"user\",\"content\":\"x\"},".repeat(200_000);
    let body = format!(r#"{{"model":"m","messages":[{msgs}{{"role":"user","content":"y"}}]}}"#);
    let c = json::cost(body.as_bytes());
    assert!(c.parse_bytes(body.len()) < 3 * body.len(), "{c:?}");
    let r = p(Endpoint::OllamaChat, &body).unwrap();
    assert_eq!(r.est_prompt_tokens, estimate_tokens(200_001, 200_001, 0));
    let r = p(Endpoint::OpenAiChat, &body).unwrap();
    let native = r.native.as_ref().unwrap();
    let n = json::each::<serde::de::IgnoredAny, _>(native.raw("messages").unwrap(), |_, _| Ok(()))
        .unwrap();
    assert_eq!(n, 200_001);
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
