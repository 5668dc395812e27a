//! Parse a request once into a [`RouteRequest`], validating what herd relies
//! on and leaving everything else for the engine to judge.

use std::sync::Arc;

use http::{HeaderMap, StatusCode, header};
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::config::RouterConfig;
use crate::request::{Endpoint, RouteRequest, estimate_tokens};

/// Fallback models a request may name (each one is a full routing pass).
pub const MAX_FALLBACKS: usize = 8;

/// herd-only fields that are removed before a body goes to a node.
const HERD_FIELDS: &[&str] = &["fallback_models", "tags"];

/// Accepted content types. Missing is fine, and so is curl's default form
/// type, because Ollama's own docs use `curl -d '{…}'` without a header.
pub fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    let ok = essence.is_empty()
        || essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
        || essence == "text/plain"
        || essence == "application/x-www-form-urlencoded";
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content type {essence:?} is not supported; send JSON (application/json)"),
        )
        .code("unsupported_media_type"))
    }
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:016x}", fastrand::u64(..)))
}

fn header_list(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn string_list(v: Option<&Value>, field: &str) -> Result<Vec<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::bad_request(format!("{field} must be a list of strings"))
                })
            })
            .collect(),
        Some(_) => Err(ApiError::bad_request(format!(
            "{field} must be a list of strings"
        ))),
    }
}

/// Characters of text and number of images in a message's `content`.
fn content_size(content: Option<&Value>) -> (usize, usize) {
    match content {
        Some(Value::String(s)) => (s.len(), 0),
        Some(Value::Array(parts)) => parts.iter().fold((0, 0), |(c, i), p| {
            match p.get("type").and_then(Value::as_str) {
                Some("text") => (
                    c + p.get("text").and_then(Value::as_str).map_or(0, str::len),
                    i,
                ),
                Some("image_url") | Some("input_image") => (c, i + 1),
                _ => (c, i),
            }
        }),
        _ => (0, 0),
    }
}

fn positive_u32(v: Option<&Value>) -> Option<u32> {
    v.and_then(Value::as_i64)
        .filter(|n| *n > 0)
        .map(|n| n.min(u32::MAX as i64) as u32)
}

/// Parse and validate one inference request.
pub fn parse(
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: &[u8],
    cfg: &RouterConfig,
) -> Result<RouteRequest, ApiError> {
    check_content_type(headers)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "request body is empty; send a JSON object",
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON in request body: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(ApiError::bad_request("request body must be a JSON object"));
    };
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.trim().to_string(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(ApiError::bad_request("model is required").code("model_required"));
        }
        Some(_) => return Err(ApiError::bad_request("model must be a string")),
    };
    let format = endpoint.format();

    let stream = match obj.get("stream") {
        None | Some(Value::Null) => {
            matches!(endpoint, Endpoint::OllamaChat | Endpoint::OllamaGenerate)
        }
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad_request("stream must be true or false")),
    };
    let stream = stream
        && !matches!(
            endpoint,
            Endpoint::OllamaEmbed | Endpoint::OllamaEmbeddings | Endpoint::OpenAiEmbeddings
        );
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);

    // Size of the prompt, for context fit and expected time.
    let (mut chars, mut messages, mut images) = (0usize, 0usize, 0usize);
    match endpoint {
        Endpoint::OllamaChat | Endpoint::OpenAiChat => match obj.get("messages") {
            None | Some(Value::Null) if endpoint == Endpoint::OllamaChat => {}
            Some(Value::Array(ms)) => {
                if endpoint == Endpoint::OpenAiChat && ms.is_empty() {
                    return Err(ApiError::bad_request("messages must not be empty"));
                }
                for (i, m) in ms.iter().enumerate() {
                    let role = m.get("role").and_then(Value::as_str);
                    if role.is_none() {
                        return Err(ApiError::bad_request(format!(
                            "messages[{i}] needs a string role"
                        )));
                    }
                    let (c, im) = content_size(m.get("content"));
                    chars += c;
                    images += im;
                    images += m
                        .get("images")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len);
                    messages += 1;
                }
            }
            _ => return Err(ApiError::bad_request("messages must be a list of messages")),
        },
        Endpoint::OllamaGenerate | Endpoint::OpenAiCompletions => {
            match obj.get("prompt") {
                None | Some(Value::Null) if endpoint == Endpoint::OllamaGenerate => {}
                Some(Value::String(s)) => chars += s.len(),
                Some(Value::Array(a)) if endpoint == Endpoint::OpenAiCompletions => {
                    chars += a
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::len)
                        .sum::<usize>()
                }
                _ => return Err(ApiError::bad_request("prompt must be a string")),
            }
            chars += obj
                .get("system")
                .and_then(Value::as_str)
                .map_or(0, str::len);
            images += obj
                .get("images")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
        }
        Endpoint::OllamaEmbed | Endpoint::OpenAiEmbeddings => match obj.get("input") {
            Some(Value::String(s)) => chars += s.len(),
            Some(Value::Array(a)) if !a.is_empty() => {
                for x in a {
                    match x {
                        Value::String(s) => chars += s.len(),
                        _ if endpoint == Endpoint::OpenAiEmbeddings => {
                            return Err(ApiError::bad_request(
                                "input must be a string or a list of strings",
                            ));
                        }
                        _ => {}
                    }
                }
            }
            _ => {
                return Err(ApiError::bad_request(
                    "input is required (a string or a list of strings)",
                ));
            }
        },
        Endpoint::OllamaEmbeddings => match obj.get("prompt") {
            Some(Value::String(s)) => chars += s.len(),
            _ => return Err(ApiError::bad_request("prompt is required (a string)")),
        },
    }

    let options = obj.get("options").and_then(Value::as_object);
    if obj
        .get("options")
        .is_some_and(|o| !o.is_object() && !o.is_null())
    {
        return Err(ApiError::bad_request("options must be an object"));
    }
    let max_output_tokens = match format {
        crate::request::ClientFormat::Ollama => {
            positive_u32(options.and_then(|o| o.get("num_predict")))
        }
        crate::request::ClientFormat::OpenAi => positive_u32(obj.get("max_completion_tokens"))
            .or_else(|| positive_u32(obj.get("max_tokens"))),
    };
    let num_ctx = positive_u32(options.and_then(|o| o.get("num_ctx")));

    // Tags: body metadata.tags or tags, the x-herd-tags header, OpenAI's user.
    let mut tags = string_list(
        obj.get("metadata").and_then(|m| m.get("tags")),
        "metadata.tags",
    )?;
    tags.extend(string_list(obj.get("tags"), "tags")?);
    tags.extend(header_list(headers, "x-herd-tags"));
    if let Some(u) = obj.get("user").and_then(Value::as_str) {
        tags.push(format!("user:{u}"));
    }
    let mut seen = std::collections::HashSet::new();
    tags.retain(|t| t.len() <= 128 && seen.insert(t.clone()));
    tags.truncate(32);

    let mut fallback_models = string_list(obj.get("fallback_models"), "fallback_models")?;
    if fallback_models.is_empty() {
        fallback_models = header_list(headers, "x-herd-fallback-models");
    }
    if fallback_models.is_empty() {
        fallback_models = cfg
            .fallback_models
            .iter()
            .find(|(k, _)| crate::request::same_model(k, &model))
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
    }
    fallback_models.retain(|m| !crate::request::same_model(m, &model));
    let mut seen = std::collections::HashSet::new();
    fallback_models
        .retain(|m| !m.trim().is_empty() && seen.insert(crate::request::normalize_model(m)));
    if fallback_models.len() > MAX_FALLBACKS {
        return Err(ApiError::bad_request(format!(
            "fallback_models lists {} models; at most {MAX_FALLBACKS} are tried",
            fallback_models.len()
        )));
    }

    for f in HERD_FIELDS {
        obj.remove(*f);
    }
    if format == crate::request::ClientFormat::Ollama {
        // Ollama has no metadata field; herd reads tags from it.
        obj.remove("metadata");
    }
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|s| s.len() <= 128)
        .map(str::to_string);

    // OpenAI bodies are translated to Ollama's API here, once: what cannot
    // be translated is refused before the request waits for a slot.
    let translated = match endpoint {
        Endpoint::OpenAiChat => Some(crate::translate::chat_request(&obj, &model)),
        Endpoint::OpenAiCompletions => Some(crate::translate::completion_request(&obj, &model)),
        Endpoint::OpenAiEmbeddings => Some(crate::translate::embeddings_request(&obj, &model)),
        _ => None,
    };
    let ollama_body = translated
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?
        .map(Arc::new);

    Ok(RouteRequest {
        id: request_id(headers),
        endpoint,
        model,
        fallback_models,
        stream,
        include_usage,
        est_prompt_tokens: estimate_tokens(chars, messages, images),
        max_output_tokens,
        images: images as u32,
        num_ctx,
        tags,
        body: Arc::new(obj),
        ollama_body,
        traceparent,
    })
}

/// A JSON object body for the non-inference endpoints.
pub fn object(headers: &HeaderMap, body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    check_content_type(headers)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "request body is empty; send a JSON object",
        ));
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(ApiError::bad_request("request body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!(
            "invalid JSON in request body: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(endpoint: Endpoint, body: &str) -> Result<RouteRequest, ApiError> {
        parse(
            endpoint,
            &HeaderMap::new(),
            body.as_bytes(),
            &RouterConfig::default(),
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
        let r = parse(
            Endpoint::OllamaChat,
            &h,
            br#"{"model":"m","messages":[],"fallback_models":["f1","m"],"metadata":{"tags":["t"]},"options":{"num_predict":12,"num_ctx":4096}}"#,
            &RouterConfig::default(),
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
}
