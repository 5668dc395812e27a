//! Model management as Ollama serves it: `/api/pull`, `/api/push`,
//! `/api/create`, `/api/copy`, `/api/delete` and `/api/blobs/:digest`.
//!
//! Each long job is a list of NDJSON progress lines with the time each is
//! due, then either a change to the device's disk (made as the final
//! `success` line goes out) or an error. Ollama writes an error that comes
//! before any line as a plain JSON answer with its status, and one that
//! comes later as a last `{"error": ...}` line of a 200 stream; with
//! `stream: false` it waits and answers the last line, or the error with
//! its status (500 when the error has none). [`respond`] does the same, so
//! a client sees each failure where a real Ollama would put it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::wire::{ndjson, parse, valid_model_name};
use super::{ApiError, AppState};
use crate::config::{ModelSpec, normalize_model_name};
use crate::simulate::content::digest_of;
use crate::simulate::engine::{BlobError, Engine, StoredModel};

/// Where Ollama keeps models, as its I/O errors name paths.
const MODELS_DIR: &str = "/root/.ollama/models";
/// How fast the simulated `llama-quantize` rewrites weights.
const QUANTIZE_BYTES_PER_SEC: f64 = 1024.0 * 1024.0 * 1024.0;

// ---------------------------------------------------------------- jobs

/// A change to the disk, made when the job's `success` line is written.
type Finish = Box<dyn FnOnce() + Send>;

/// How a job ends.
enum End {
    /// The last line is `{"status":"success"}`; `Finish` runs just before
    /// it is written.
    Success(Finish),
    /// An error after the lines; `status` is what a non-streamed answer (or
    /// an error before any line) carries.
    Fail { status: StatusCode, message: String },
}

/// A management job: progress lines at offsets from its start, then its end.
struct Job {
    lines: Vec<(Duration, Value)>,
    end: End,
}

impl Job {
    fn fail(lines: Vec<(Duration, Value)>, status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            lines,
            end: End::Fail {
                status,
                message: message.into(),
            },
        }
    }
}

/// A status line.
fn status(s: &str) -> Value {
    json!({ "status": s })
}

/// Plays a job out as Ollama's `streamResponse` (NDJSON) or, with
/// `stream: false`, as its `waitForStream` (one JSON answer at the end).
async fn respond(job: Job, stream: bool) -> Response {
    let start = Instant::now();
    let last_at = job.lines.last().map_or(Duration::ZERO, |(t, _)| *t);
    if !stream {
        tokio::time::sleep_until(start + last_at).await;
        return match job.end {
            End::Success(finish) => {
                finish();
                let last = job
                    .lines
                    .last()
                    .map_or_else(|| status("success"), |(_, v)| v.clone());
                Json(last).into_response()
            }
            End::Fail { status, message } => error_json(status, message),
        };
    }
    if job.lines.is_empty()
        && let End::Fail { status, message } = job.end
    {
        return error_json(status, message);
    }
    let mut items: Vec<(Duration, Value)> = job.lines;
    let finish = match job.end {
        End::Success(f) => Some(f),
        End::Fail { message, .. } => {
            items.push((last_at, json!({ "error": message })));
            None
        }
    };
    let total = items.len();
    let body = futures::stream::unfold(
        (items.into_iter().enumerate(), finish),
        move |(mut it, mut finish)| async move {
            let (i, (offset, line)) = it.next()?;
            tokio::time::sleep_until(start + offset).await;
            if i + 1 == total
                && let Some(f) = finish.take()
            {
                f();
            }
            Some((Ok::<_, Infallible>(ndjson(&line)), (it, finish)))
        },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn error_json(status: StatusCode, message: String) -> Response {
    ApiError::new(status, message).into_response()
}

/// The `sha256:<hex>` a path segment names, as Ollama's `BlobsPath`
/// accepts it (`sha256:` or `sha256-`, 64 hex digits); `None` is its
/// `invalid digest format`.
fn parse_digest(d: &str) -> Option<String> {
    let hex = d
        .strip_prefix("sha256:")
        .or_else(|| d.strip_prefix("sha256-"))?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| format!("sha256:{hex}"))
}

/// A layer's digest as progress lines print it.
fn layer(name: &str) -> String {
    format!("sha256:{}", digest_of(name))
}

/// The path of a manifest in Ollama's store, for its I/O error messages.
fn manifest_path(normalized: &str) -> String {
    let (rest, tag) = normalized
        .rsplit_once(':')
        .unwrap_or((normalized, "latest"));
    let full = match rest.matches('/').count() {
        0 => format!("registry.ollama.ai/library/{rest}"),
        1 => format!("registry.ollama.ai/{rest}"),
        _ => rest.to_owned(),
    };
    format!("{MODELS_DIR}/manifests/{full}/{tag}")
}

// ---------------------------------------------------------------- pull

/// `POST /api/pull`'s body; `name` is the older spelling of `model`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PullRequest {
    model: String,
    name: String,
    insecure: bool,
    stream: Option<bool>,
}

/// `POST /api/pull`: progress from the device's catalog at its download
/// speed; the model is on disk when `success` is written.
pub(super) async fn pull(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    let req: PullRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let _ = req.insecure;
    let name = if req.model.is_empty() {
        req.name
    } else {
        req.model
    };
    let job = match s.engine.pull_plan(&name) {
        Ok((spec, steps)) => {
            let st = s.clone();
            Job {
                lines: steps,
                end: End::Success(Box::new(move || {
                    st.engine.finish_pull(spec);
                    st.disk_changed();
                })),
            }
        }
        // The registry says no after Ollama has said it is looking.
        Err(e) => Job::fail(
            vec![(Duration::ZERO, status("pulling manifest"))],
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
        ),
    };
    respond(job, req.stream.unwrap_or(true)).await
}

// ---------------------------------------------------------------- push

/// `POST /api/push`'s body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PushRequest {
    model: String,
    name: String,
    insecure: bool,
    stream: Option<bool>,
}

/// `POST /api/push`: uploads every layer at the device's network speed
/// (the registry always accepts). A model that is not there fails the way
/// Ollama's does: after `retrieving manifest`, with the manifest file's
/// I/O error (500 when not streamed).
pub(super) async fn push(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    let req: PushRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let _ = req.insecure;
    let name = if req.model.is_empty() {
        req.name
    } else {
        req.model
    };
    if name.is_empty() {
        return ApiError::bad_request("model is required").into_response();
    }
    let stream = req.stream.unwrap_or(true);
    let mut lines = vec![(Duration::ZERO, status("retrieving manifest"))];
    let Some(m) = s.engine.stored(&name) else {
        lines.push((Duration::ZERO, status("couldn't retrieve manifest")));
        let path = manifest_path(&normalize_model_name(&name));
        let job = Job::fail(
            lines,
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("open {path}: no such file or directory"),
        );
        return respond(job, stream).await;
    };
    let rate = s.engine.config().pull_bytes_per_sec.max(1) as f64;
    let slow = s.engine.faults().slowdown;
    let n = &m.spec.name;
    let layers = [
        (layer(&format!("{n}/weights")), m.spec.size_bytes),
        (layer(&format!("{n}/template")), 1_429),
        (layer(&format!("{n}/params")), 96),
        (layer(&format!("{n}/config")), 485),
    ];
    let mut t = 0.0f64;
    for (digest, total) in layers {
        let label = format!("pushing {}", &digest[7..19]);
        let parts: u64 = if total < 1_000_000 { 1 } else { 4 };
        for k in 1..=parts {
            t += (total / parts) as f64 / rate * slow;
            let line = json!({"status": label, "digest": digest, "total": total, "completed": total * k / parts});
            lines.push((Duration::from_secs_f64(t), line));
        }
    }
    let end_at = Duration::from_secs_f64(t);
    lines.push((end_at, status("pushing manifest")));
    lines.push((end_at, status("success")));
    let job = Job {
        lines,
        end: End::Success(Box::new(|| {})),
    };
    respond(job, stream).await
}

// ---------------------------------------------------------------- create

/// `POST /api/create`'s body (the form since Ollama 0.5.5: `from` or
/// `files`, no Modelfile).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CreateRequest {
    model: String,
    name: String,
    from: String,
    files: Option<BTreeMap<String, String>>,
    adapters: Option<BTreeMap<String, String>>,
    template: String,
    system: String,
    parameters: Option<Map<String, Value>>,
    license: Option<Value>,
    messages: Vec<Value>,
    quantize: String,
    quantization: String,
    stream: Option<bool>,
}

/// Bits per weight of the file types Ollama quantizes between.
fn bits_per_weight(file_type: &str) -> Option<f64> {
    Some(match file_type {
        "F32" => 32.0,
        "F16" | "BF16" => 16.0,
        "Q8_0" => 8.5,
        "Q4_K_M" | "Q4_K" => 4.85,
        "Q4_K_S" => 4.58,
        _ => return None,
    })
}

/// Go's `fs.ValidPath`: relative, slash-separated, no `.`/`..`/empty part.
fn valid_file_path(p: &str) -> bool {
    p == "." || (!p.is_empty() && p.split('/').all(|e| !e.is_empty() && e != "." && e != ".."))
}

/// `POST /api/create`: a model `from` another (pulled from the catalog
/// first when it is not on disk) or from uploaded `files`, with its own
/// system prompt, template, parameters and quantization. The new model is
/// on disk (in `/api/tags` and the next report) once `success` is written.
pub(super) async fn create(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    let req: CreateRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let stream = req.stream.unwrap_or(true);
    match create_job(&s, req) {
        Ok(job) => respond(job, stream).await,
        Err(e) => e.into_response(),
    }
}

/// The checks Ollama makes before it starts streaming, then the job.
fn create_job(s: &Arc<AppState>, req: CreateRequest) -> Result<Job, ApiError> {
    for maps in [&req.files, &req.adapters].into_iter().flatten() {
        for (path, digest) in maps {
            if !valid_file_path(path) {
                return Err(ApiError::bad_request("file path must be relative"));
            }
            if digest.is_empty() {
                return Err(ApiError::bad_request("invalid digest format"));
            }
        }
    }
    let raw_name = if req.model.is_empty() {
        &req.name
    } else {
        &req.model
    };
    if !valid_model_name(raw_name) {
        return Err(ApiError::bad_request("invalid model name"));
    }
    let name = normalize_model_name(raw_name);
    let engine = &s.engine;
    let mut lines: Vec<(Duration, Value)> = Vec::new();
    let mut t = Duration::ZERO;
    // A `from` pulled on the way is on disk too when the create succeeds.
    let mut pulled: Option<StoredModel> = None;
    let (mut model, base_name) = if !req.from.is_empty() {
        if !valid_model_name(&req.from) {
            return Ok(Job::fail(
                lines,
                StatusCode::BAD_REQUEST,
                "invalid model name",
            ));
        }
        let from = normalize_model_name(&req.from);
        let base = match engine.stored(&from) {
            Some(m) => m,
            // Ollama pulls a `from` it does not have.
            None => match engine.pull_plan(&from) {
                Ok((spec, steps)) => {
                    t = steps.last().map_or(t, |(at, _)| *at);
                    // Everything of the pull but its own `success`.
                    lines.extend(steps.into_iter().filter(|(_, v)| v["status"] != "success"));
                    let base = StoredModel::pulled(spec, SystemTime::now());
                    pulled = Some(base.clone());
                    base
                }
                Err(e) => {
                    lines.push((t, status("pulling manifest")));
                    return Ok(Job::fail(
                        lines,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        e.to_string(),
                    ));
                }
            },
        };
        lines.push((t, json!({"status": format!("using existing layer {}", layer(&format!("{from}/weights")))})));
        let model = StoredModel {
            spec: ModelSpec {
                name: name.clone(),
                ..base.spec.clone()
            },
            parent_model: from.clone(),
            ..base
        };
        (model, from)
    } else if let Some(files) = &req.files {
        match from_files(engine, files, &name, t, &mut lines) {
            Ok(m) => (m, String::new()),
            Err((status, message)) => return Ok(Job::fail(lines, status, message)),
        }
    } else {
        return Ok(Job::fail(
            lines,
            StatusCode::BAD_REQUEST,
            "neither 'from' or 'files' was specified",
        ));
    };
    // Quantize the weights when asked and they are not already that type.
    let want = if req.quantize.is_empty() {
        &req.quantization
    } else {
        &req.quantize
    }
    .to_uppercase();
    if !want.is_empty() {
        let want = if want == "Q4_K" {
            "Q4_K_M".to_owned()
        } else {
            want
        };
        let Some(new_bits) = bits_per_weight(&want) else {
            let msg = format!(
                "unsupported quantization type {want} - supported types are F32, F16, Q4_K_S, Q4_K_M, Q8_0"
            );
            return Ok(Job::fail(lines, StatusCode::INTERNAL_SERVER_ERROR, msg));
        };
        let have = model.spec.quantization.to_uppercase();
        let Some(old_bits) =
            bits_per_weight(&have).filter(|_| matches!(have.as_str(), "F16" | "BF16" | "F32"))
        else {
            return Ok(Job::fail(
                lines,
                StatusCode::INTERNAL_SERVER_ERROR,
                "quantization is only supported for F16, BF16 and F32 models",
            ));
        };
        if have != want {
            let size = model.spec.size_bytes;
            let label = format!("quantizing {have} model to {want}");
            let secs = size as f64 / QUANTIZE_BYTES_PER_SEC * engine.faults().slowdown;
            for k in 1..=10u64 {
                let at = t + Duration::from_secs_f64(secs * k as f64 / 10.0);
                let line = json!({"status": label, "digest": "0000000000000000000", "total": size, "completed": size * k / 10});
                lines.push((at, line));
            }
            t += Duration::from_secs_f64(secs);
            model.spec.quantization = want.clone();
            model.spec.size_bytes = (size as f64 * new_bits / old_bits).round() as u64;
            let weights = layer(&format!("{name}/weights/{want}"));
            lines.push((
                t,
                json!({"status": format!("creating new layer {weights}")}),
            ));
        }
    }
    // The small layers the request sets.
    let mut new_layer = |kind: &str, content: &str| {
        let d = layer(&format!("{kind}\0{content}"));
        lines.push((t, json!({"status": format!("creating new layer {d}")})));
    };
    if !req.template.is_empty() {
        new_layer("template", &req.template);
        model.template = Some(req.template.clone());
    }
    if !req.system.is_empty() {
        new_layer("system", &req.system);
        model.system = Some(req.system.clone());
    }
    match &req.license {
        Some(Value::String(l)) if !l.is_empty() => model.license = vec![l.clone()],
        Some(Value::Array(ls)) => {
            model.license = ls
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
        }
        _ => {}
    }
    for l in model.license.clone() {
        new_layer("license", &l);
    }
    if let Some(p) = &req.parameters
        && !p.is_empty()
    {
        model.parameters.extend(p.clone());
        new_layer(
            "params",
            &Value::Object(model.parameters.clone()).to_string(),
        );
    }
    if !req.messages.is_empty() {
        new_layer("messages", &Value::Array(req.messages.clone()).to_string());
    }
    lines.push((t, status("writing manifest")));
    lines.push((t, status("success")));
    // A created manifest's digest follows its content, so equal creates agree.
    model.digest = digest_of(&format!(
        "{base_name}\0{}\0{}\0{:?}\0{:?}\0{}\0{:?}",
        model.spec.size_bytes,
        model.spec.quantization,
        model.system,
        model.template,
        Value::Object(model.parameters.clone()),
        model.license
    ));
    model.modified_at = SystemTime::now();
    let st = s.clone();
    Ok(Job {
        lines,
        end: End::Success(Box::new(move || {
            if let Some(base) = pulled {
                st.engine.put_model(base);
            }
            st.engine.put_model(model);
            st.disk_changed();
        })),
    })
}

/// A model from uploaded files: GGUF blobs (by name or by magic) that must
/// be on the device. The simulator cannot read GGUF metadata, so the model
/// gets the default spec (`F16`, so it can be quantized) at the files'
/// size.
fn from_files(
    engine: &Engine,
    files: &BTreeMap<String, String>,
    name: &str,
    t: Duration,
    lines: &mut Vec<(Duration, Value)>,
) -> Result<StoredModel, (StatusCode, String)> {
    let blob = |digest: &str| parse_digest(digest).and_then(|d| engine.blob(&d));
    // Ollama decides the type from the first file: by extension, else by
    // the GGUF magic of its blob (a missing blob is "unknown type").
    let kind = files.iter().next().map_or("", |(path, digest)| {
        if path.ends_with(".safetensors") {
            "safetensors"
        } else if path.ends_with(".gguf") || blob(digest).is_some_and(|b| b.starts_with(b"GGUF")) {
            "gguf"
        } else {
            ""
        }
    });
    if kind.is_empty() {
        return Err((StatusCode::BAD_REQUEST, "unknown type".to_owned()));
    }
    if kind == "safetensors" {
        lines.push((t, status("converting model")));
    }
    let mut size = 0u64;
    for (path, digest) in files {
        if kind == "gguf" {
            lines.push((t, status("parsing GGUF")));
        }
        let Some(d) = parse_digest(digest) else {
            return Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                "invalid digest format".to_owned(),
            ));
        };
        let Some(data) = engine.blob(&d) else {
            let file = d.replace(':', "-");
            return Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("open {MODELS_DIR}/blobs/{file}: no such file or directory"),
            ));
        };
        if kind == "gguf" && !data.starts_with(b"GGUF") {
            return Err((
                StatusCode::BAD_REQUEST,
                "supplied file was not in GGUF format".to_owned(),
            ));
        }
        let _ = path;
        size += data.len() as u64;
        lines.push((t, json!({"status": format!("using existing layer {d}")})));
    }
    Ok(StoredModel {
        parent_model: String::new(),
        ..StoredModel::pulled(
            ModelSpec {
                name: name.to_owned(),
                size_bytes: size,
                quantization: "F16".to_owned(),
                ..ModelSpec::default()
            },
            SystemTime::now(),
        )
    })
}

// ---------------------------------------------------------------- copy, delete

/// `POST /api/copy`'s body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CopyRequest {
    source: String,
    destination: String,
}

/// `POST /api/copy`: the same manifest under another name; 200 with an
/// empty body.
pub(super) async fn copy(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    let run = || -> Result<(), ApiError> {
        let req: CopyRequest = parse(&body)?;
        if !valid_model_name(&req.source) {
            return Err(ApiError::bad_request(format!(
                "source {} is invalid",
                Value::String(req.source.clone())
            )));
        }
        if !valid_model_name(&req.destination) {
            return Err(ApiError::bad_request(format!(
                "destination {} is invalid",
                Value::String(req.destination.clone())
            )));
        }
        s.engine
            .copy_model(&req.source, &req.destination)
            .map_err(|_| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("model {} not found", Value::String(req.source.clone())),
                )
            })?;
        s.disk_changed();
        Ok(())
    };
    match run() {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

/// `DELETE /api/delete`'s body; `name` is the older spelling of `model`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DeleteRequest {
    model: String,
    name: String,
}

/// `DELETE /api/delete`: 200 with an empty body. A loaded copy keeps
/// running until it expires, as in Ollama.
pub(super) async fn delete(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    let run = || -> Result<(), ApiError> {
        let req: DeleteRequest = parse(&body)?;
        let name = if req.model.is_empty() {
            req.name
        } else {
            req.model
        };
        if !valid_model_name(&name) {
            return Err(ApiError::bad_request(format!(
                "name {} is invalid",
                Value::String(name)
            )));
        }
        if !s.engine.remove_model(&name) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("model '{name}' not found"),
            ));
        }
        s.disk_changed();
        Ok(())
    };
    match run() {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

// ---------------------------------------------------------------- blobs

/// `HEAD /api/blobs/:digest`: 200 when the device has it, 404 when not,
/// 400 for a malformed digest (HEAD answers carry no body).
pub(super) async fn head_blob(
    State(s): State<Arc<AppState>>,
    Path(digest): Path<String>,
) -> Response {
    let Some(d) = parse_digest(&digest) else {
        return ApiError::bad_request("invalid digest format").into_response();
    };
    if s.engine.blob(&d).is_some() {
        StatusCode::OK.into_response()
    } else {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("blob {} not found", Value::String(digest)),
        )
        .into_response()
    }
}

/// `POST /api/blobs/:digest`: 201 when written, 200 when the device
/// already has it (the body is not read), 400 for a malformed digest.
/// Blobs are kept in memory up to
/// [`BLOB_BUDGET_BYTES`](crate::simulate::engine::BLOB_BUDGET_BYTES); an
/// upload past that is a 413.
///
/// The simulator trusts the digest: herd-node has no SHA-256, so it does
/// not hash the body, and Ollama's `400 digest mismatch` never happens here.
pub(super) async fn create_blob(
    State(s): State<Arc<AppState>>,
    Path(digest): Path<String>,
    req: Request,
) -> Response {
    let Some(d) = parse_digest(&digest) else {
        return ApiError::bad_request("invalid digest format").into_response();
    };
    if s.engine.blob(&d).is_some() {
        return StatusCode::OK.into_response();
    }
    let room = s.engine.blob_room();
    let too_big = |need: usize| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            BlobError::Full { need, left: room }.to_string(),
        )
        .into_response()
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = declared.filter(|n| *n > room) {
        return too_big(n);
    }
    let mut body = req.into_body();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "error reading request body",
            )
            .into_response();
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > room {
                return too_big(buf.len() + data.len());
            }
            buf.extend_from_slice(&data);
        }
    }
    match s.engine.put_blob(&d, Bytes::from(buf)) {
        Ok(true) => StatusCode::CREATED.into_response(),
        Ok(false) => StatusCode::OK.into_response(),
        Err(e) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_as_ollama_accepts_them() {
        let hex = "a".repeat(64);
        assert_eq!(
            parse_digest(&format!("sha256:{hex}")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(
            parse_digest(&format!("sha256-{hex}")),
            Some(format!("sha256:{hex}"))
        );
        assert!(parse_digest(&format!("sha256:{}", "A".repeat(64))).is_some());
        assert_eq!(parse_digest(&format!("sha256:{}", "a".repeat(63))), None);
        assert_eq!(parse_digest(&format!("sha512:{hex}")), None);
        assert_eq!(parse_digest(&format!("sha256:{}g", "a".repeat(63))), None);
    }

    #[test]
    fn file_paths_and_manifest_paths() {
        assert!(valid_file_path("model.gguf"));
        assert!(valid_file_path("a/b.gguf"));
        assert!(!valid_file_path("/etc/passwd"));
        assert!(!valid_file_path("../x"));
        assert_eq!(
            manifest_path("m:latest"),
            "/root/.ollama/models/manifests/registry.ollama.ai/library/m/latest"
        );
    }
}
