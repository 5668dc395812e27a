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

/// `POST /api/show`, as far as herd reads it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Show {
    /// What the model can do (`completion`, `tools`, `vision`, …).
    pub capabilities: Vec<String>,
}

/// What `/api/show` said each model can do, for an Ollama whose `/api/tags`
/// does not list it (before 0.30): each model is asked about once (again
/// when its digest changes), a few per poll, and what is kept is bounded.
#[derive(Debug, Default)]
pub struct Capabilities {
    known: std::collections::HashMap<String, (String, Vec<String>)>,
}

impl Capabilities {
    /// Models asked about per poll.
    pub const PER_POLL: usize = 4;
    /// Models remembered.
    pub const MAX: usize = 4096;

    /// Fill in what is known for the models of `disk` that list no
    /// capabilities, forget models no longer there, and return the models
    /// to ask `/api/show` about now.
    pub fn apply(&mut self, disk: &mut [proto::DiskModel]) -> Vec<String> {
        self.known
            .retain(|name, _| disk.iter().any(|m| &m.name == name));
        let mut ask = Vec::new();
        for m in disk.iter_mut().filter(|m| m.capabilities.is_empty()) {
            match self.known.get(&m.name) {
                Some((digest, caps)) if *digest == m.digest => m.capabilities = caps.clone(),
                _ if ask.len() < Self::PER_POLL => ask.push(m.name.clone()),
                _ => {}
            }
        }
        ask
    }

    /// What `/api/show` answered for `name` at `digest` (an empty list when
    /// it failed: it is not asked again until the model changes).
    pub fn learn(&mut self, name: &str, digest: &str, mut caps: Vec<String>) {
        if self.known.len() >= Self::MAX && !self.known.contains_key(name) {
            return;
        }
        caps.retain(|c| !c.is_empty() && c.len() <= 32);
        caps.truncate(16);
        self.known
            .insert(name.to_owned(), (digest.to_owned(), caps));
    }
}

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

    #[test]
    fn capabilities_are_asked_once_per_model_and_digest() {
        let model = |name: &str, digest: &str| proto::DiskModel {
            name: name.into(),
            digest: digest.into(),
            ..Default::default()
        };
        let mut caps = Capabilities::default();
        let mut disk: Vec<_> = (0..6).map(|i| model(&format!("m{i}"), "d")).collect();
        disk[5].capabilities = vec!["completion".into()];
        let ask = caps.apply(&mut disk);
        assert_eq!(
            ask,
            ["m0", "m1", "m2", "m3"],
            "a few per poll; listed ones never"
        );
        for m in &ask {
            caps.learn(m, "d", vec!["completion".into(), "vision".into()]);
        }
        let mut again: Vec<_> = (0..5).map(|i| model(&format!("m{i}"), "d")).collect();
        assert_eq!(caps.apply(&mut again), ["m4"]);
        assert_eq!(again[0].capabilities, ["completion", "vision"]);
        let mut changed = vec![model("m0", "new")];
        assert_eq!(
            caps.apply(&mut changed),
            ["m0"],
            "a new digest is asked again"
        );
        assert!(caps.known.len() == 1, "models gone are forgotten");
        let show: Show =
            serde_json::from_str(r#"{"modelfile":"x","capabilities":["completion","audio"]}"#)
                .unwrap();
        assert_eq!(show.capabilities, ["completion", "audio"]);
    }
}
