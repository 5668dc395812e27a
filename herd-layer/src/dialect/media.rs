//! OpenAI's media endpoints: speech to text (`/v1/audio/transcriptions`,
//! `/v1/audio/translations`) and images (`/v1/images/generations`,
//! `/v1/images/edits`).
//!
//! herd routes these, it does not do them: the request goes to a node
//! whose engine serves the endpoint and whose model can (an Ollama since
//! 0.20 with an audio-capable model, a speech-to-text or image engine a
//! herd-node declares, an OpenAI-compatible server), and the answer comes
//! back as the engine sends it (a JSON transcript, plain text, subtitles,
//! base64 images). So herd reads only what routing needs — the model —
//! and checks only what no engine could make sense of.
//!
//! Uploads are multipart forms read as far as their model
//! ([`super::upload`]); an image generation is a small JSON body.

use std::sync::Arc;

use http::HeaderMap;
use serde_json::Value;

use super::json::RawObject;
use super::{ParseConfig, Size};
use crate::budget::Charge;
use crate::error::ClientError;
use crate::request::{Endpoint, RouteRequest};

/// Longest image prompt accepted, characters (OpenAI's own limit is 32000).
pub const MAX_PROMPT_CHARS: usize = 32_000;

/// Most images one request may ask for.
pub const MAX_IMAGES: i64 = 10;

/// Checks an image generation body; its size for the estimates.
pub fn image_request(obj: &RawObject) -> Result<Size, ClientError> {
    let mut size = Size::default();
    match obj.value("prompt") {
        Some(Value::String(p)) if !p.trim().is_empty() => {
            if p.chars().count() > MAX_PROMPT_CHARS {
                return Err(ClientError::bad_request(format!(
                    "prompt is longer than {MAX_PROMPT_CHARS} characters"
                )));
            }
            size.chars = p.len();
        }
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(ClientError::bad_request("prompt is required"));
        }
        Some(_) => return Err(ClientError::bad_request("prompt must be a string")),
    }
    match obj.value("n") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_i64().is_some_and(|n| (1..=MAX_IMAGES).contains(&n)) => {}
        Some(_) => {
            return Err(ClientError::bad_request(format!(
                "n must be a whole number from 1 to {MAX_IMAGES}"
            )));
        }
    }
    for key in [
        "size",
        "response_format",
        "quality",
        "style",
        "output_format",
    ] {
        if let Some(v) = obj.value(key)
            && !(v.is_string() || v.is_null())
        {
            return Err(ClientError::bad_request(format!("{key} must be a string")));
        }
    }
    size.messages = 1;
    Ok(size)
}

/// A request for a multipart upload already read as far as its model.
pub fn upload_request(
    endpoint: Endpoint,
    headers: &HeaderMap,
    read: super::upload::Read,
    cfg: ParseConfig<'_>,
) -> Result<RouteRequest, ClientError> {
    let mut r = form_request(endpoint, headers, read.model, cfg)?;
    r.upload = Some(read.upload);
    Ok(r)
}

/// A request known by its form's model (herd-epp: the body goes on as it
/// is, unread beyond the model).
pub fn form_request(
    endpoint: Endpoint,
    headers: &HeaderMap,
    model: String,
    cfg: ParseConfig<'_>,
) -> Result<RouteRequest, ClientError> {
    super::check_model_name(&model)?;
    let served = match cfg.aliases.and_then(|(a, t)| a.resolve(t, &model)) {
        Some(to) => to.to_string(),
        None => model.clone(),
    };
    let mut r = super::model_only(endpoint, served, headers);
    r.client_model = model;
    let mut fallbacks = super::header_list(headers, "x-herd-fallback-models");
    fallbacks.truncate(super::MAX_FALLBACKS);
    for m in &fallbacks {
        super::check_model_name(m)?;
    }
    fallbacks.retain(|m| !crate::request::same_model(m, &r.model));
    r.fallback_models = fallbacks;
    r.tags = super::header_list(headers, "x-herd-tags");
    r.tags.retain(|t| t.len() <= 128);
    r.tags.truncate(32);
    r.traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|s| s.len() <= 128)
        .map(str::to_string);
    Ok(r)
}

/// A whole multipart body (herd-epp holds the body before it picks): its
/// model, read from the form.
pub fn parse_form(
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: bytes::Bytes,
    cfg: ParseConfig<'_>,
    charge: Charge,
) -> Result<RouteRequest, ClientError> {
    let model = super::upload::model_of(headers, body)?;
    let mut r = form_request(endpoint, headers, model, cfg)?;
    r.charge = Arc::new(charge);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(s: &str) -> RawObject {
        RawObject::parse(bytes::Bytes::from(s.to_owned())).unwrap()
    }

    #[test]
    fn image_bodies_are_checked() {
        assert!(
            image_request(&obj(
                r#"{"model":"m","prompt":"a cat","n":2,"size":"512x512"}"#
            ))
            .is_ok()
        );
        for (body, says) in [
            (r#"{"model":"m"}"#, "prompt is required"),
            (r#"{"model":"m","prompt":3}"#, "prompt must be a string"),
            (r#"{"model":"m","prompt":"x","n":0}"#, "n must be"),
            (r#"{"model":"m","prompt":"x","n":99}"#, "n must be"),
            (
                r#"{"model":"m","prompt":"x","size":512}"#,
                "size must be a string",
            ),
        ] {
            let e = image_request(&obj(body)).unwrap_err();
            assert!(e.message.contains(says), "{body}: {e}");
        }
    }

    #[test]
    fn a_form_request_takes_its_routing_from_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-herd-fallback-models", "b, whisper".parse().unwrap());
        h.insert("x-herd-tags", "team:a".parse().unwrap());
        let cfg = ParseConfig {
            fallback_models: &Default::default(),
            aliases: None,
        };
        let r = form_request(Endpoint::AudioTranscriptions, &h, "whisper".into(), cfg).unwrap();
        assert_eq!(r.model, "whisper");
        assert_eq!(r.fallback_models, ["b"]);
        assert_eq!(r.tags, ["team:a"]);
        assert_eq!(r.needs.names(), ["audio"]);
        assert!(r.upload.is_none());
        let e = form_request(
            Endpoint::AudioTranscriptions,
            &h,
            "not a model!".into(),
            cfg,
        )
        .unwrap_err();
        assert_eq!(e.code, Some("invalid_model"), "{e}");
    }
}
