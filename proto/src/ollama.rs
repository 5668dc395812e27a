//! Ollama's own API as herd reads it: `/api/version`, `/api/ps`, `/api/tags`.
//!
//! Two readers poll the same endpoints — the router for agentless nodes and
//! herd-node's real agent — so the shapes, the tolerant parsing of what a
//! node sends, and the conversion into herd.v1's engine state live here once.

use serde::Deserialize;

use crate::v1 as proto;

/// `GET /api/version`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Version {
    /// e.g. `0.12.6`.
    pub version: String,
    /// Set when the answer comes from a herd router, not an Ollama: a
    /// router must never be taken for an engine (its requests would loop).
    pub herd_version: Option<String>,
}

impl Version {
    /// Why this engine cannot be used, when it is a herd router.
    pub fn not_an_engine(&self) -> Option<String> {
        self.herd_version.as_ref().map(|v| {
            format!(
                "this URL is a herd router (herd {v}), not an Ollama: give the URL of an Ollama (its port 11434)"
            )
        })
    }
}

/// `details` of a model.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Details {
    /// e.g. `qwen3`.
    pub family: String,
    /// e.g. `8.2B`.
    pub parameter_size: String,
    /// e.g. `Q4_K_M`.
    pub quantization_level: String,
    /// e.g. `gguf`.
    pub format: String,
    /// e.g. `["qwen3"]`.
    pub families: Option<Vec<String>>,
    /// The model it was made from, when created from one.
    pub parent_model: String,
}

/// One model of `/api/tags`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TagModel {
    /// e.g. `qwen3:8b`.
    pub name: String,
    /// Bytes on disk.
    pub size: u64,
    /// Family, size and quantization.
    pub details: Details,
    /// The manifest's digest.
    pub digest: String,
    /// RFC 3339.
    pub modified_at: String,
    /// What it can do (Ollama 0.30 and later list it here).
    pub capabilities: Option<Vec<String>>,
}

/// One model of `/api/ps`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PsModel {
    /// e.g. `qwen3:8b`.
    pub name: String,
    /// Bytes in memory.
    pub size: u64,
    /// Bytes in VRAM.
    pub size_vram: u64,
    /// Context length (newer Ollama only).
    pub context_length: u32,
    /// RFC 3339.
    pub expires_at: String,
    /// The manifest's digest.
    pub digest: String,
}

/// The `{"models": […]}` envelope of `/api/ps` and `/api/tags`.
#[derive(Debug, Clone, Deserialize)]
pub struct Models<T> {
    /// The models; missing means none.
    #[serde(default = "Vec::new")]
    pub models: Vec<T>,
}

/// Loaded models as herd.v1 reports them.
pub fn loaded_models(ps: Vec<PsModel>) -> Vec<proto::LoadedModel> {
    ps.into_iter()
        .map(|m| proto::LoadedModel {
            expires_at_ms: rfc3339_ms(&m.expires_at).unwrap_or(0),
            name: m.name,
            size_bytes: m.size,
            vram_bytes: m.size_vram,
            context_length: m.context_length,
            digest: m.digest,
        })
        .collect()
}

/// Models on disk as herd.v1 reports them.
pub fn disk_models(tags: Vec<TagModel>) -> Vec<proto::DiskModel> {
    tags.into_iter()
        .map(|m| proto::DiskModel {
            name: m.name,
            size_bytes: m.size,
            families: m
                .details
                .families
                .unwrap_or_else(|| vec![m.details.family.clone()])
                .into_iter()
                .filter(|f| !f.is_empty())
                .collect(),
            family: m.details.family,
            parameter_size: m.details.parameter_size,
            quantization: m.details.quantization_level,
            digest: m.digest,
            modified_at_ms: rfc3339_ms(&m.modified_at).unwrap_or(0),
            format: m.details.format,
            parent_model: m.details.parent_model,
            capabilities: m.capabilities.unwrap_or_default(),
        })
        .collect()
}

pub use crate::time::rfc3339_ms;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_and_tags_convert_tolerantly() {
        let ps: Models<PsModel> = serde_json::from_str(
            r#"{"models":[{"name":"m:8b","size":5,"size_vram":4,"expires_at":"1970-01-01T00:00:02Z","extra":1},{"name":"n"}]}"#,
        )
        .unwrap();
        let loaded = loaded_models(ps.models);
        assert_eq!(loaded[0].expires_at_ms, 2000);
        assert_eq!(loaded[0].vram_bytes, 4);
        assert_eq!(
            loaded[1].expires_at_ms, 0,
            "missing expiry is 0, not an error"
        );
        let tags: Models<TagModel> = serde_json::from_str(
            r#"{"models":[{"name":"m:8b","size":7,"details":{"family":"qwen3"}}]}"#,
        )
        .unwrap();
        let disk = disk_models(tags.models);
        assert_eq!((disk[0].size_bytes, disk[0].family.as_str()), (7, "qwen3"));
        let empty: Models<TagModel> = serde_json::from_str("{}").unwrap();
        assert!(empty.models.is_empty());
    }
}
