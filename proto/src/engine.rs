//! Engines other than a node's Ollama: how they are declared, and what
//! herd reads from them.
//!
//! A Mac may run more than one engine: an Ollama, an OpenAI-compatible LLM
//! server (llama.cpp's, vLLM, LM Studio, an MLX server), a speech-to-text
//! server, an image server. herd-node reports each (herd.v1
//! `extra_engines`) and the router routes to each as a node of its own;
//! an agentless router polls them itself. Both take the same declaration,
//! `KIND+URL` with what the engine cannot tell about itself in the query:
//!
//! ```text
//! openai+http://10.0.0.5:8080                       models from its /v1/models
//! openai+http://10.0.0.5:8080?caps=vision,tools     …which can see and call tools
//! stt+http://10.0.0.5:9000?model=whisper-1&slots=2  models declared
//! image+http://10.0.0.5:7860?model=sdxl-turbo&ctx=0
//! http://10.0.0.5:11434                             an Ollama (the default kind)
//! ```
//!
//! Keys: `model` (repeated; the models it serves, beyond or instead of what
//! `/v1/models` lists), `slots` (requests it serves at once), `ctx` (its
//! context window, tokens), `caps` (what its models can do, in Ollama's
//! capability names, comma-separated: OpenAI-compatible servers do not
//! say, and a model whose abilities are unknown is never eliminated for
//! lacking one). Models are read from `/v1/models` when the
//! engine has it, with the context length servers put there (vLLM's
//! `max_model_len`, llama.cpp's `meta.n_ctx_train`, LM Studio's
//! `max_context_length`).

use serde::Deserialize;

use crate::node::model_name_ok;
use crate::v1 as proto;

/// The most models one declaration may name.
pub const MAX_DECLARED_MODELS: usize = 64;

/// The most engines one node may declare beside its Ollama.
pub const MAX_EXTRA_ENGINES: usize = 8;

/// One engine, as declared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineDecl {
    /// Its kind.
    pub kind: proto::EngineKind,
    /// `http://host:port` (see [`crate::node::engine_url`]).
    pub url: String,
    /// Models it serves, declared.
    pub models: Vec<String>,
    /// Requests it serves at once; 0 when not declared.
    pub slots: u32,
    /// Its context window, tokens; 0 when not declared.
    pub context: u32,
    /// What its models can do (Ollama's capability names), declared.
    pub caps: Vec<String>,
}

/// Capability names a declaration may give (Ollama's).
pub const CAPABILITY_NAMES: [&str; 7] = [
    "completion",
    "tools",
    "vision",
    "thinking",
    "embedding",
    "audio",
    "image",
];

/// The kind's name in declarations and node ids (`<node>/<kind>`).
pub fn kind_name(kind: proto::EngineKind) -> &'static str {
    match kind {
        proto::EngineKind::Openai => "openai",
        proto::EngineKind::Stt => "stt",
        proto::EngineKind::Image => "image",
        proto::EngineKind::Ollama | proto::EngineKind::Unspecified => "ollama",
    }
}

/// Read a declaration (see the module docs).
pub fn parse_engine(text: &str) -> Result<EngineDecl, String> {
    let text = text.trim();
    let (kind, rest) = match text.split_once("+http") {
        Some((k, r)) if !k.contains("://") => {
            let kind = match k.to_ascii_lowercase().as_str() {
                "ollama" => proto::EngineKind::Ollama,
                "openai" => proto::EngineKind::Openai,
                "stt" => proto::EngineKind::Stt,
                "image" => proto::EngineKind::Image,
                other => {
                    return Err(format!(
                        "{text:?}: engine kind {other:?} is not one of ollama, openai, stt, image"
                    ));
                }
            };
            (kind, format!("http{r}"))
        }
        _ => (proto::EngineKind::Ollama, text.to_owned()),
    };
    let (url, query) = match rest.split_once('?') {
        Some((u, q)) => (u.to_owned(), q),
        None => (rest, ""),
    };
    let url = crate::node::engine_url(&url)?;
    let mut decl = EngineDecl {
        kind,
        url,
        models: Vec::new(),
        slots: 0,
        context: 0,
        caps: Vec::new(),
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let number = |max: u32| {
            v.parse::<u32>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("{text:?}: {k}={v:?} is not a number up to {max}"))
        };
        match k {
            "model" => {
                if !model_name_ok(v) {
                    return Err(format!("{text:?}: model={v:?} is not a model name"));
                }
                if decl.models.len() >= MAX_DECLARED_MODELS {
                    return Err(format!(
                        "{text:?}: at most {MAX_DECLARED_MODELS} models per engine"
                    ));
                }
                if !decl.models.iter().any(|m| m == v) {
                    decl.models.push(v.to_owned());
                }
            }
            "slots" => decl.slots = number(64)?,
            "ctx" => decl.context = number(16 * 1024 * 1024)?,
            "caps" => {
                for c in v.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                    let c = c.to_ascii_lowercase();
                    if !CAPABILITY_NAMES.contains(&c.as_str()) {
                        return Err(format!(
                            "{text:?}: caps: {c:?} is not one of {}",
                            CAPABILITY_NAMES.join(", ")
                        ));
                    }
                    if !decl.caps.contains(&c) {
                        decl.caps.push(c);
                    }
                }
            }
            other => {
                return Err(format!(
                    "{text:?}: {other:?} is not one of model, slots, ctx, caps"
                ));
            }
        }
    }
    Ok(decl)
}

/// `GET /v1/models` of an OpenAI-compatible server.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct OpenAiModels {
    /// The models.
    pub data: Vec<OpenAiModel>,
}

/// One model of `/v1/models`, with the context fields servers add.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct OpenAiModel {
    /// Its id (what requests name).
    pub id: String,
    /// vLLM.
    pub max_model_len: Option<u64>,
    /// LM Studio, and others.
    pub max_context_length: Option<u64>,
    /// Some servers.
    pub context_length: Option<u64>,
    /// llama.cpp's server.
    pub meta: Option<OpenAiModelMeta>,
    /// Servers that say what a model can do (Ollama's names).
    pub capabilities: Option<Vec<String>>,
}

/// llama.cpp's `meta` of a model.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct OpenAiModelMeta {
    /// The context it was trained with.
    pub n_ctx_train: Option<u64>,
    /// The context it runs with.
    pub n_ctx: Option<u64>,
}

impl OpenAiModel {
    /// The context window the server says, tokens.
    pub fn context(&self) -> Option<u32> {
        let meta = self.meta.as_ref();
        self.max_model_len
            .or(self.max_context_length)
            .or(self.context_length)
            .or(meta.and_then(|m| m.n_ctx))
            .or(meta.and_then(|m| m.n_ctx_train))
            .map(|c| c.min(16 * 1024 * 1024) as u32)
    }
}

/// The engine state of a non-Ollama engine: what its `/v1/models` lists
/// (`None` when it has no such list), with the declaration's models, slots
/// and context on top. An engine serves what it lists, so every model is
/// both loaded and on disk.
pub fn openai_engine_state(decl: &EngineDecl, listed: Option<OpenAiModels>) -> proto::EngineState {
    let mut models: Vec<(String, u32, Vec<String>)> = listed
        .map(|l| {
            l.data
                .into_iter()
                .filter(|m| model_name_ok(&m.id))
                .take(4096)
                .map(|m| {
                    let ctx = m.context().unwrap_or(0);
                    let caps = m.capabilities.clone().unwrap_or_default();
                    (m.id, ctx, caps)
                })
                .collect()
        })
        .unwrap_or_default();
    for m in &decl.models {
        if !models.iter().any(|(id, _, _)| id == m) {
            models.push((m.clone(), 0, Vec::new()));
        }
    }
    // What the declaration says every model can do, beside what the list
    // says (bounded: the list's own entries are cut to the known names).
    for (_, _, caps) in &mut models {
        caps.retain(|c| CAPABILITY_NAMES.contains(&c.as_str()));
        for c in &decl.caps {
            if !caps.contains(c) {
                caps.push(c.clone());
            }
        }
    }
    proto::EngineState {
        kind: decl.kind as i32,
        reachable: true,
        url: decl.url.clone(),
        parallel_slots: decl.slots,
        loaded: models
            .iter()
            .map(|(name, ctx, _)| proto::LoadedModel {
                name: name.clone(),
                context_length: if decl.context > 0 { decl.context } else { *ctx },
                ..Default::default()
            })
            .collect(),
        available: models
            .into_iter()
            .map(|(name, _, caps)| proto::DiskModel {
                name,
                capabilities: caps,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// The engine state of a declared engine that could not be reached.
pub fn unreachable_state(decl: &EngineDecl, why: String) -> proto::EngineState {
    proto::EngineState {
        kind: decl.kind as i32,
        reachable: false,
        unreachable_reason: why,
        url: decl.url.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_read_kind_url_and_what_the_engine_cannot_say() {
        let d = parse_engine("stt+http://10.0.0.5:9000/v1?model=whisper-1&model=large-v3&slots=2")
            .unwrap();
        assert_eq!(d.kind, proto::EngineKind::Stt);
        assert_eq!(d.url, "http://10.0.0.5:9000");
        assert_eq!(d.models, ["whisper-1", "large-v3"]);
        assert_eq!((d.slots, d.context), (2, 0));
        let d = parse_engine("openai+http://h:8080?caps=Vision,tools&caps=tools").unwrap();
        assert_eq!(d.caps, ["vision", "tools"]);
        let e = parse_engine("openai+http://h:8080?caps=telepathy").unwrap_err();
        assert!(e.contains("telepathy") && e.contains("vision"), "{e}");
        let state = openai_engine_state(
            &d,
            Some(OpenAiModels {
                data: vec![OpenAiModel {
                    id: "llava".into(),
                    capabilities: Some(vec!["completion".into(), "x".repeat(99)]),
                    ..Default::default()
                }],
            }),
        );
        assert_eq!(
            state.available[0].capabilities,
            ["completion", "vision", "tools"]
        );
        let d = parse_engine("http://mac.local").unwrap();
        assert_eq!(
            (d.kind, d.url.as_str()),
            (proto::EngineKind::Ollama, "http://mac.local:11434")
        );
        assert_eq!(
            parse_engine("OpenAI+http://h:8080?ctx=8192")
                .unwrap()
                .context,
            8192
        );
        for bad in [
            "tts+http://h:1",
            "openai+https://h:1",
            "stt+http://h:1?model=a%20b",
            "stt+http://h:1?slots=x",
            "stt+http://h:1?colour=red",
            "image+ftp://h",
        ] {
            assert!(parse_engine(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn models_come_from_the_list_and_the_declaration() {
        let listed: OpenAiModels = serde_json::from_str(
            r#"{"object":"list","data":[{"id":"qwen","max_model_len":32768},{"id":"llama","meta":{"n_ctx_train":8192}},{"id":"bad name"}]}"#,
        )
        .unwrap();
        let d = parse_engine("openai+http://h:1?model=extra&slots=3").unwrap();
        let e = openai_engine_state(&d, Some(listed));
        let names: Vec<&str> = e.available.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["qwen", "llama", "extra"]);
        let ctx: Vec<u32> = e.loaded.iter().map(|m| m.context_length).collect();
        assert_eq!(ctx, [32768, 8192, 0]);
        assert_eq!(e.parallel_slots, 3);
        assert_eq!(e.kind, proto::EngineKind::Openai as i32);
        assert_eq!(e.url, "http://h:1");
        let d = parse_engine("stt+http://h:1?model=w").unwrap();
        assert_eq!(openai_engine_state(&d, None).available.len(), 1);
    }
}
