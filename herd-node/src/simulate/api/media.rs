//! Speech to text and image generation, as the engines that serve them do:
//! Ollama's `/v1/audio/transcriptions` (since 0.20, for models with the
//! `audio` capability), a speech-to-text server's (`stt`: transcriptions
//! and translations, every OpenAI response format) and an image server's
//! `/v1/images/generations` and `/v1/images/edits` (`image`, streamed
//! with partial images when asked) — plus the `/v1/models` list such
//! servers answer, and the check that refuses images to a model that
//! cannot see.
//!
//! The work is simulated, the timing and the plumbing are not: a request
//! takes a slot of the model (loading it cold first), holds it for as long
//! as the config says the work takes — per second of audio (read from the
//! WAV header), per image and its pixels — and answers with what proves
//! the upload arrived whole: the transcript names the audio's length, its
//! byte count and a hash of its bytes.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use super::plan::injected_failure;
use super::{ApiError, AppState};
use crate::config::{ModelSpec, SimEngine};
use crate::simulate::engine::{Admission, EngineError};

/// The first Ollama with `POST /v1/audio/transcriptions` (commit 96b202d3).
pub(crate) const TRANSCRIPTIONS_SINCE: (u64, u64, u64) = (0, 20, 0);

/// The largest upload read (Ollama parses 25 MB in memory and spills the
/// rest; a simulator keeps it bounded).
const MAX_UPLOAD: u64 = 64 * 1024 * 1024;

/// A 1×1 PNG: what every generated image is.
const PNG_1X1: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

/// Images refused to a model without `vision`, as Ollama's runner does.
pub(super) fn check_vision(spec: &ModelSpec, has_images: bool) -> Result<(), ApiError> {
    if has_images && !spec.vision {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "this model is missing data required for image input",
        ));
    }
    Ok(())
}

/// Whether a chat body carries an image: Ollama's `images` on a message,
/// or an OpenAI `image_url` part.
pub(super) fn has_images(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Chat {
        #[serde(default)]
        messages: Vec<Value>,
    }
    let Ok(chat) = serde_json::from_slice::<Chat>(body) else {
        return false;
    };
    chat.messages.iter().any(|m| {
        m.get("images")
            .and_then(Value::as_array)
            .is_some_and(|i| !i.is_empty())
            || m.get("content")
                .and_then(Value::as_array)
                .is_some_and(|parts| {
                    parts
                        .iter()
                        .any(|p| p.get("type").and_then(Value::as_str) == Some("image_url"))
                })
    })
}

/// Unix seconds now.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `GET /v1/models` of a server that speaks only OpenAI's API: its models
/// with their context (as vLLM's `max_model_len`) and what they can do.
pub(super) async fn models(State(s): State<Arc<AppState>>) -> Json<Value> {
    let cfg = s.engine.config();
    let data: Vec<Value> = s
        .engine
        .disk()
        .into_iter()
        .map(|m| {
            let mut caps = m.spec.capabilities();
            match cfg.engine {
                SimEngine::Stt => caps = vec!["audio".into()],
                SimEngine::Image => caps = vec!["image".into()],
                _ => {}
            }
            json!({
                "id": m.spec.name, "object": "model", "created": unix_now(), "owned_by": "sim",
                "max_model_len": m.spec.context_length, "capabilities": caps,
            })
        })
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// One multipart form, read whole (bounded).
#[derive(Debug, Default)]
struct Form {
    fields: Vec<(String, String)>,
    file: Option<(String, Bytes)>,
}

impl Form {
    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a multipart body; `file_field` is the part holding the upload.
async fn read_form(headers: &HeaderMap, body: Body, file_field: &str) -> Result<Form, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary = multer::parse_boundary(ct).map_err(|e| {
        ApiError::bad_request(format!(
            "request Content-Type isn't multipart/form-data: {e}"
        ))
    })?;
    let limits =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(MAX_UPLOAD));
    let mut mp = multer::Multipart::with_constraints(body.into_data_stream(), boundary, limits);
    let mut form = Form::default();
    let bad = |e: multer::Error| ApiError::bad_request(format!("invalid multipart form: {e}"));
    while let Some(field) = mp.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or("").to_owned();
        if name == file_field {
            let file_name = field.file_name().unwrap_or("upload").to_owned();
            let data = field.bytes().await.map_err(bad)?;
            form.file = Some((file_name, data));
        } else {
            let text = field.text().await.map_err(bad)?;
            if form.fields.len() < 64 {
                form.fields.push((name, text));
            }
        }
    }
    Ok(form)
}

/// Seconds of audio: from a WAV header's byte rate and data size, else
/// as 128 kbit/s compressed audio.
pub fn audio_seconds(bytes: &[u8]) -> f64 {
    wav_seconds(bytes).unwrap_or(bytes.len() as f64 / 16_000.0)
}

fn wav_seconds(b: &[u8]) -> Option<f64> {
    if b.get(0..4)? != b"RIFF" || b.get(8..12)? != b"WAVE" {
        return None;
    }
    let u32_at = |i: usize| Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?));
    let mut at = 12;
    let mut byte_rate = None;
    while at + 8 <= b.len() {
        let id = &b[at..at + 4];
        let size = u32_at(at + 4)? as usize;
        let body = at + 8;
        if id == b"fmt " {
            byte_rate = u32_at(body + 8).filter(|r| *r > 0);
        } else if id == b"data" {
            // A streamed WAV says 0 or 0xffffffff: what is there counts.
            let len = size.min(b.len() - body);
            let len = if size == 0 { b.len() - body } else { len };
            return Some(len as f64 / f64::from(byte_rate?));
        }
        at = body + size + (size & 1);
    }
    None
}

/// Ollama's own error shape for the OpenAI-compatible routes.
fn openai_err(e: impl Into<ApiError>) -> Response {
    e.into().openai()
}

/// The model named, checked: on disk, and (for an Ollama) able to hear.
fn audio_model(s: &AppState, model: Option<&str>) -> Result<ModelSpec, ApiError> {
    let model = model.map(str::trim).unwrap_or("");
    if model.is_empty() {
        return Err(ApiError::bad_request("model is required"));
    }
    let spec = s
        .engine
        .find(model)
        .ok_or_else(|| EngineError::NotFound(model.to_owned()))?;
    if s.engine.config().engine == SimEngine::Ollama && !spec.audio {
        return Err(EngineError::Unsupported {
            model: model.to_owned(),
            what: "audio",
        }
        .into());
    }
    Ok(spec)
}

/// `POST /v1/audio/transcriptions`
pub(super) async fn transcriptions(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    audio(&s, &headers, body, "transcribe")
        .await
        .unwrap_or_else(openai_err)
}

/// `POST /v1/audio/translations` (speech-to-text servers only)
pub(super) async fn translations(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    audio(&s, &headers, body, "translate")
        .await
        .unwrap_or_else(openai_err)
}

async fn audio(
    s: &Arc<AppState>,
    headers: &HeaderMap,
    body: Body,
    task: &'static str,
) -> Result<Response, ApiError> {
    let form = read_form(headers, body, "file").await?;
    let spec = audio_model(s, form.get("model"))?;
    let Some((_, file)) = &form.file else {
        return Err(ApiError::bad_request(
            "file is required: http: no such file",
        ));
    };
    if file.is_empty() {
        return Err(ApiError::bad_request("audio file is empty"));
    }
    let format = form.get("response_format").unwrap_or("json").to_owned();
    let ollama = s.engine.config().engine == SimEngine::Ollama;
    if !ollama
        && !matches!(
            format.as_str(),
            "json" | "text" | "verbose_json" | "srt" | "vtt"
        )
    {
        return Err(ApiError::bad_request(format!(
            "response_format {format:?} is not one of json, text, srt, verbose_json, vtt"
        )));
    }
    injected_failure(&s.engine)?;
    let arrival = tokio::time::Instant::now();
    let admission = s.engine.admit(&spec.name, None).await?;
    let secs = audio_seconds(file);
    let cfg = s.engine.config();
    let work = Duration::from_secs_f64(
        (cfg.ttft_base_ms as f64 + secs * cfg.transcribe_ms_per_audio_s)
            * s.engine.faults().slowdown
            / 1000.0,
    );
    tokio::time::sleep_until(arrival + admission.load_duration + work).await;
    drop(admission);
    let text = format!(
        "[{}] {secs:.2} seconds of audio, {} bytes, fnv1a {:016x}",
        spec.name,
        file.len(),
        // A hash of the upload, so a test can tell the bytes arrived as sent.
        crate::simulate::content::fnv1a(&[&file[..]])
    );
    let plain = |t: String| {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            t,
        )
            .into_response()
    };
    // Ollama answers text for `text` and `{"text"}` for everything else.
    if ollama {
        return Ok(if format == "text" {
            plain(text)
        } else {
            Json(json!({"text": text})).into_response()
        });
    }
    let stamp = |t: f64, sep: char| {
        let ms = (t * 1000.0).round() as u64;
        format!(
            "{:02}:{:02}:{:02}{sep}{:03}",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        )
    };
    Ok(match format.as_str() {
        "text" => plain(format!("{text}\n")),
        "srt" => plain(format!(
            "1\n{} --> {}\n{text}\n\n",
            stamp(0.0, ','),
            stamp(secs, ',')
        )),
        "vtt" => plain(format!(
            "WEBVTT\n\n{} --> {}\n{text}\n\n",
            stamp(0.0, '.'),
            stamp(secs, '.')
        )),
        "verbose_json" => Json(json!({
            "task": task,
            "language": form.get("language").unwrap_or("english"),
            "duration": secs,
            "text": text,
            "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": secs, "text": text, "tokens": [],
                          "temperature": 0.0, "avg_logprob": -0.2, "compression_ratio": 1.0, "no_speech_prob": 0.01}],
            "usage": {"type": "duration", "seconds": secs.ceil() as u64},
        }))
        .into_response(),
        _ => Json(json!({"text": text, "usage": {"type": "duration", "seconds": secs.ceil() as u64}}))
            .into_response(),
    })
}

/// What an image request asks for.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ImageRequest {
    model: String,
    prompt: Option<String>,
    n: Option<u32>,
    size: Option<String>,
    response_format: Option<String>,
    stream: bool,
    partial_images: Option<u32>,
}

/// Pixels of `WxH` over a 1024×1024 image (1 for `auto` or none).
fn pixel_scale(size: Option<&str>) -> Result<f64, ApiError> {
    match size {
        None | Some("auto") | Some("") => Ok(1.0),
        Some(s) => {
            let bad = || ApiError::bad_request(format!("invalid size {s:?}: use WIDTHxHEIGHT"));
            let (w, h) = s.split_once('x').ok_or_else(bad)?;
            let (w, h) = (
                w.parse::<u32>().map_err(|_| bad())?,
                h.parse::<u32>().map_err(|_| bad())?,
            );
            if w == 0 || h == 0 || w > 8192 || h > 8192 {
                return Err(bad());
            }
            Ok(f64::from(w) * f64::from(h) / (1024.0 * 1024.0))
        }
    }
}

/// `POST /v1/images/generations`
pub(super) async fn generations(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    let run = async {
        let req: ImageRequest = super::wire::parse(&body)?;
        image(&s, req).await
    };
    run.await.unwrap_or_else(openai_err)
}

/// `POST /v1/images/edits` (the image to edit is read and not used)
pub(super) async fn edits(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let run = async {
        let form = read_form(&headers, body, "image").await?;
        if form.file.is_none() {
            return Err(ApiError::bad_request("image is required"));
        }
        let req = ImageRequest {
            model: form.get("model").unwrap_or("").to_owned(),
            prompt: form.get("prompt").map(str::to_owned),
            n: form.get("n").and_then(|n| n.parse().ok()),
            size: form.get("size").map(str::to_owned),
            response_format: form.get("response_format").map(str::to_owned),
            stream: form.get("stream") == Some("true"),
            partial_images: form.get("partial_images").and_then(|n| n.parse().ok()),
        };
        image(&s, req).await
    };
    run.await.unwrap_or_else(openai_err)
}

fn image_entry(format: Option<&str>) -> Value {
    match format {
        Some("url") => json!({"url": format!("data:image/png;base64,{PNG_1X1}")}),
        _ => json!({"b64_json": PNG_1X1}),
    }
}

async fn image(s: &Arc<AppState>, req: ImageRequest) -> Result<Response, ApiError> {
    if req.model.trim().is_empty() {
        return Err(ApiError::bad_request("model is required"));
    }
    let spec = s
        .engine
        .find(&req.model)
        .ok_or_else(|| EngineError::NotFound(req.model.clone()))?;
    if req.prompt.as_deref().is_none_or(|p| p.trim().is_empty()) {
        return Err(ApiError::bad_request("prompt is required"));
    }
    let n = req.n.unwrap_or(1);
    if !(1..=10).contains(&n) {
        return Err(ApiError::bad_request("n must be between 1 and 10"));
    }
    let scale = pixel_scale(req.size.as_deref())?;
    injected_failure(&s.engine)?;
    let arrival = tokio::time::Instant::now();
    let admission = s.engine.admit(&spec.name, None).await?;
    let cfg = s.engine.config();
    let per_image =
        Duration::from_secs_f64(cfg.image_ms as f64 * scale * s.engine.faults().slowdown / 1000.0);
    let start = arrival + admission.load_duration;
    let created = unix_now();
    let format = req.response_format.clone();
    if !req.stream {
        tokio::time::sleep_until(start + per_image * n).await;
        drop(admission);
        let data: Vec<Value> = (0..n).map(|_| image_entry(format.as_deref())).collect();
        return Ok(Json(json!({
            "created": created, "data": data,
            "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
        }))
        .into_response());
    }
    // Streamed: partial images as the work goes, then the image; the slot
    // is held until the last event.
    let partials = req.partial_images.unwrap_or(cfg.image_partials).min(3);
    let steps = partials + 1;
    let events = (0..n).flat_map(move |i| (0..steps).map(move |k| (i, k)));
    let stream = futures::stream::unfold(
        (events, Some(admission)),
        move |(mut events, mut held): (_, Option<Admission>)| async move {
            let (i, k) = events.next()?;
            let at = start + per_image * i + per_image * (k + 1) / steps;
            tokio::time::sleep_until(at).await;
            let last = k + 1 == steps;
            let v = if last {
                json!({"type": "image_generation.completed", "b64_json": PNG_1X1, "created_at": created,
                       "size": "1024x1024", "quality": "auto", "background": "opaque", "output_format": "png",
                       "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}})
            } else {
                json!({"type": "image_generation.partial_image", "b64_json": PNG_1X1, "created_at": created,
                       "size": "1024x1024", "quality": "auto", "background": "opaque", "output_format": "png",
                       "partial_image_index": k})
            };
            if last && i + 1 == n {
                held.take();
            }
            let event = v["type"].as_str().unwrap_or("").to_owned();
            let bytes = Bytes::from(format!("event: {event}\ndata: {v}\n\n"));
            Some((Ok::<_, std::io::Error>(bytes), (events, held)))
        },
    );
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(stream),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(seconds: f64, rate: u32) -> Vec<u8> {
        let data = (seconds * f64::from(rate) * 2.0) as u32;
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36 + data).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * 2).to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&data.to_le_bytes());
        b.resize(b.len() + data as usize, 0);
        b
    }

    #[test]
    fn audio_length_comes_from_the_wav_header() {
        assert!((audio_seconds(&wav(1.5, 22050)) - 1.5).abs() < 0.001);
        let mut streamed = wav(2.0, 16000);
        streamed[40..44].copy_from_slice(&0u32.to_le_bytes());
        assert!(
            (audio_seconds(&streamed) - 2.0).abs() < 0.001,
            "size 0: what is there"
        );
        assert_eq!(audio_seconds(&[0u8; 32000]), 2.0, "not a WAV: 128 kbit/s");
    }

    #[test]
    fn image_sizes_scale_the_work() {
        assert_eq!(pixel_scale(None).unwrap(), 1.0);
        assert_eq!(pixel_scale(Some("512x512")).unwrap(), 0.25);
        assert!(pixel_scale(Some("big")).is_err());
        assert!(pixel_scale(Some("0x5")).is_err());
    }
}
