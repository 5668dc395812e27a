//! Client API keys: made here, kept in the store as hashes, checked on
//! every request.
//!
//! A key is 24 random bytes from the operating system, written as
//! `herd-` and 48 hex digits. herd keeps only its SHA-256: a key has 192
//! bits of entropy, so a fast hash is as good as a slow one, and a request
//! is checked with one hash and one map lookup (no per-key comparison whose
//! timing could leak). The key itself is shown once, when it is made.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use crate::app::store::{Store, StoreError};
use crate::limit::Limits;

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Inference, model lists, and fleet state.
    Inference,
    /// Everything: also node commands, model management, benchmarks,
    /// traces, settings and keys.
    Admin,
}

impl Scope {
    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Inference => "inference",
            Scope::Admin => "admin",
        }
    }
}

/// A key as herd keeps it (never the key itself).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Its name: unique; the tenant in traces, analytics and metrics.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// Models it may use (patterns with one `*` allowed); empty: all.
    #[serde(default)]
    pub models: Vec<String>,
    /// Its own limits (the config's `[limits]` fill in what it leaves unset).
    #[serde(default)]
    pub limits: Limits,
    /// SHA-256 of the key, hex.
    pub hash: String,
    /// The key's first characters, to recognize it (`herd-3f9a1c…`).
    pub prefix: String,
    /// When it was made, milliseconds since the Unix epoch.
    pub created_ms: i64,
}

impl KeyRecord {
    /// Whether the key may use `model` (the client's name or the one
    /// served): no list, or a listed name or pattern matches.
    pub fn allows(&self, model: &str) -> bool {
        self.models.is_empty()
            || self.models.iter().any(|p| match p.split_once('*') {
                Some((pre, post)) => {
                    let m = model.to_ascii_lowercase();
                    let (pre, post) = (pre.to_ascii_lowercase(), post.to_ascii_lowercase());
                    m.len() >= pre.len() + post.len() && m.starts_with(&pre) && m.ends_with(&post)
                }
                None => crate::request::same_model(p, model),
            })
    }
}

/// What `herd keys create` and `POST /fleet/keys` ask for.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// The key's name (letters, digits, `.`, `_`, `-`; at most 64).
    pub name: String,
    /// `inference` (default) or `admin`.
    #[serde(default)]
    pub scope: Option<Scope>,
    /// Models it may use; empty: all.
    #[serde(default)]
    pub models: Vec<String>,
    /// Its limits.
    #[serde(default)]
    pub limits: Limits,
}

/// Why a key cannot be made or revoked.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A name that cannot be a tenant name.
    #[error(
        "key name {0:?} is not usable: use 1 to 64 letters, digits, '.', '_' or '-' (e.g. ci-runner)"
    )]
    BadName(String),
    /// Another key has the name.
    #[error("a key named {0:?} exists; revoke it first or choose another name")]
    Exists(String),
    /// No key has the name or prefix.
    #[error("no key is named {0:?} (or starts with it)")]
    Unknown(String),
    /// The limit on keys.
    #[error("herd holds {0} keys, its limit ([auth] max_keys); revoke unused ones")]
    TooMany(usize),
    /// A model pattern or limit that cannot be used.
    #[error("{0}")]
    Invalid(String),
    /// Keys live in the store, which is off.
    #[error("API keys are kept in the store, which is disabled ([store] enabled = false)")]
    NoStore,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A key's SHA-256, as the map keys it.
type Digest = [u8; 32];

fn digest(key: &str) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Digest> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A fresh key from the operating system's randomness.
pub fn generate() -> Result<String, KeyError> {
    let mut b = [0u8; 24];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| KeyError::Invalid("the system's random source failed".into()))?;
    Ok(format!("herd-{}", hex(&b)))
}

/// Check a new key's fields; returns its record (for `key`, not kept).
pub fn record(new: &NewKey, key: &str) -> Result<KeyRecord, KeyError> {
    let name = new.name.trim();
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        return Err(KeyError::BadName(new.name.clone()));
    }
    // The metrics label of requests without a key.
    if name.eq_ignore_ascii_case("anonymous") {
        return Err(KeyError::Invalid(
            "\"anonymous\" names the requests without a key in metrics; choose another name".into(),
        ));
    }
    if new.models.len() > 256 {
        return Err(KeyError::Invalid(
            "a key may list at most 256 models".into(),
        ));
    }
    for m in &new.models {
        let plain = m.replacen('*', "", 1);
        if m.matches('*').count() > 1
            || (!plain.is_empty() && crate::request::check_model_name(&plain).is_err())
            || m.is_empty()
        {
            return Err(KeyError::Invalid(format!(
                "{m:?} is not a model name or a pattern with one * (e.g. qwen3:* )"
            )));
        }
    }
    new.limits.check().map_err(KeyError::Invalid)?;
    Ok(KeyRecord {
        name: name.to_string(),
        scope: new.scope.unwrap_or(Scope::Inference),
        models: new.models.clone(),
        limits: new.limits,
        hash: hex(&digest(key)),
        prefix: key.chars().take(11).collect(),
        created_ms: crate::fleet::now_ms(),
    })
}

#[derive(Debug, Default)]
struct Table {
    by_hash: HashMap<Digest, Arc<KeyRecord>>,
    by_name: BTreeMap<String, Digest>,
    /// Names being created (reserved before the store write, so two
    /// concurrent creates of one name cannot both succeed).
    pending: std::collections::BTreeSet<String>,
}

/// The keys in force, in memory, backed by the store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Keys {
    table: Arc<RwLock<Table>>,
    store: Option<Store>,
    max: usize,
}

impl Keys {
    /// The keys the store holds (none without a store).
    pub fn load(store: Option<Store>, max: usize) -> Result<Keys, StoreError> {
        let mut t = Table::default();
        if let Some(s) = &store {
            for r in s.keys()? {
                if let Some(d) = unhex(&r.hash) {
                    t.by_name.insert(r.name.clone(), d);
                    t.by_hash.insert(d, Arc::new(r));
                }
            }
        }
        Ok(Keys {
            table: Arc::new(RwLock::new(t)),
            store,
            max,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether any key exists (then, by default, everything needs one).
    pub fn any(&self) -> bool {
        !self.read().by_name.is_empty()
    }

    /// The record of a presented key, when it is one in force.
    pub fn verify(&self, presented: &str) -> Option<Arc<KeyRecord>> {
        if presented.len() > 256 {
            return None;
        }
        self.read().by_hash.get(&digest(presented.trim())).cloned()
    }

    /// Every key, by name.
    pub fn list(&self) -> Vec<Arc<KeyRecord>> {
        let t = self.read();
        t.by_name
            .values()
            .filter_map(|d| t.by_hash.get(d).cloned())
            .collect()
    }

    /// Make a key: it is in the store before it is returned (the only time
    /// the key itself is seen).
    pub async fn create(&self, new: &NewKey) -> Result<(String, Arc<KeyRecord>), KeyError> {
        let store = self.store.clone().ok_or(KeyError::NoStore)?;
        let key = generate()?;
        let rec = record(new, &key)?;
        {
            let mut t = self.write();
            if t.by_name.contains_key(&rec.name) || t.pending.contains(&rec.name) {
                return Err(KeyError::Exists(rec.name));
            }
            if t.by_name.len() + t.pending.len() >= self.max {
                return Err(KeyError::TooMany(self.max));
            }
            t.pending.insert(rec.name.clone());
        }
        let stored = rec.clone();
        let put = tokio::task::spawn_blocking(move || store.put_key(&stored))
            .await
            .map_err(|e| KeyError::Invalid(e.to_string()))
            .and_then(|r| r.map_err(KeyError::from));
        let mut t = self.write();
        t.pending.remove(&rec.name);
        put?;
        let rec = Arc::new(rec);
        let d = digest(&key);
        t.by_name.insert(rec.name.clone(), d);
        t.by_hash.insert(d, rec.clone());
        Ok((key, rec))
    }

    /// Revoke the key named `name` (or whose key starts with `name`, at
    /// least 9 characters of it): refused from the next request on.
    pub async fn revoke(&self, name: &str) -> Result<Arc<KeyRecord>, KeyError> {
        let rec = self.find(name)?;
        if let Some(store) = self.store.clone() {
            let n = rec.name.clone();
            tokio::task::spawn_blocking(move || store.delete_key(&n))
                .await
                .map_err(|e| KeyError::Invalid(e.to_string()))??;
        }
        let mut t = self.write();
        if let Some(d) = t.by_name.remove(&rec.name) {
            t.by_hash.remove(&d);
        }
        Ok(rec)
    }

    fn find(&self, name: &str) -> Result<Arc<KeyRecord>, KeyError> {
        let t = self.read();
        if let Some(d) = t.by_name.get(name) {
            return t
                .by_hash
                .get(d)
                .cloned()
                .ok_or_else(|| KeyError::Unknown(name.into()));
        }
        let by_prefix: Vec<_> = t
            .by_hash
            .values()
            .filter(|r| name.len() >= 9 && r.prefix.starts_with(name))
            .collect();
        match by_prefix.as_slice() {
            [one] => Ok((*one).clone()),
            _ => Err(KeyError::Unknown(name.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_only_their_hash_is_kept() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("herd-") && a.len() == 53, "{a}");
        let r = record(
            &NewKey {
                name: "ci".into(),
                ..Default::default()
            },
            &a,
        )
        .unwrap();
        assert!(!r.hash.contains(&a[5..]));
        assert_eq!(unhex(&r.hash), Some(digest(&a)));
        assert_eq!(r.scope, Scope::Inference);
        assert!(a.starts_with(&r.prefix) && r.prefix.len() == 11);
    }

    #[test]
    fn names_models_and_limits_are_checked() {
        let new = |name: &str, models: &[&str]| NewKey {
            name: name.into(),
            models: models.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert!(record(&new("a b", &[]), "k").is_err());
        assert!(record(&new(&"x".repeat(65), &[]), "k").is_err());
        assert!(record(&new("Anonymous", &[]), "k").is_err());
        assert!(record(&new("ok", &["qwen3:*", "llama3.2"]), "k").is_ok());
        assert!(record(&new("ok", &["a*b*"]), "k").is_err());
        assert!(record(&new("ok", &["bad model"]), "k").is_err());
        let mut z = new("ok", &[]);
        z.limits.requests_per_minute = Some(0);
        assert!(record(&z, "k").is_err());
    }

    #[test]
    fn allow_lists_match_names_as_ollama_does_and_patterns() {
        let mut r = record(
            &NewKey {
                name: "a".into(),
                models: vec!["llama3.2".into(), "qwen3:*".into()],
                ..Default::default()
            },
            "k",
        )
        .unwrap();
        assert!(r.allows("llama3.2:latest"));
        assert!(r.allows("Qwen3:8B"));
        assert!(!r.allows("llama3.2:1b"));
        assert!(!r.allows("gemma3"));
        r.models.clear();
        assert!(r.allows("anything"));
    }
}
