//! Model aliases: the names clients use mapped to models the fleet has.
//!
//! Coding agents are configured for cloud models (`claude-sonnet-4-5`,
//! `gpt-5-mini`); herd lets them run on the fleet unchanged. An exact alias
//! wins, then the longest matching wildcard (`"gpt-4o*"`), then — for cloud
//! ids only (`claude-*`, `gpt-*`, `o1`/`o3`/`o4`…) — the tier rule: the
//! id's size class (Opus/flagship → `large`, Sonnet/`mini` → `medium`,
//! Haiku/`nano` → `small`) picks the model set for that tier in
//! `[alias_tiers]`, or the nearest tier that is set.
//!
//! Resolution happens once, when a request is parsed: the client's name is
//! kept for the response bodies, the resolved one is what scoring, the node
//! and `x-herd-model` see. Both tables are checked when the config is read
//! and bounded, so a bad alias fails at start, not on a request.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::request::normalized;

/// The most aliases a config may hold.
pub const MAX_ALIASES: usize = 4096;

/// `[aliases]`: client name (exact, or with one `*`) → model.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(
    try_from = "BTreeMap<String, String>",
    into = "BTreeMap<String, String>"
)]
pub struct Aliases {
    /// As written, for printing the config back.
    written: BTreeMap<String, String>,
    /// Exact names, normalized (`claude-x` ≡ `claude-x:latest`).
    exact: BTreeMap<String, String>,
    /// `(prefix, suffix, target)`, longest pattern first.
    wild: Vec<(String, String, String)>,
}

/// `[alias_tiers]`: the model for each size class of a cloud model id.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct AliasTiers {
    /// For flagship ids (`claude-opus-*`, `gpt-5`, `gpt-4o`, `o3`).
    pub large: Option<String>,
    /// For mid-size ids (`claude-sonnet-*`, `*-mini`).
    pub medium: Option<String>,
    /// For small ids (`claude-haiku-*`, `*-nano`).
    pub small: Option<String>,
}

/// Why an alias table cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AliasError {
    /// More than [`MAX_ALIASES`] entries.
    #[error("{0} aliases; at most {MAX_ALIASES}")]
    TooMany(usize),
    /// A key or target is not a model name (or a key has more than one `*`).
    #[error("alias {name:?}: {reason}")]
    Bad {
        /// The entry.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

fn check_name(name: &str, what: &str) -> Result<(), AliasError> {
    crate::request::check_model_name(name).map_err(|e| AliasError::Bad {
        name: name.to_string(),
        reason: format!("{what}: {}", e.message),
    })
}

impl TryFrom<BTreeMap<String, String>> for Aliases {
    type Error = AliasError;

    fn try_from(written: BTreeMap<String, String>) -> Result<Self, AliasError> {
        if written.len() > MAX_ALIASES {
            return Err(AliasError::TooMany(written.len()));
        }
        let mut exact = BTreeMap::new();
        let mut wild = Vec::new();
        for (k, target) in &written {
            check_name(target, "the target is not a model name")?;
            if target.contains('*') {
                return Err(AliasError::Bad {
                    name: k.clone(),
                    reason: "a target cannot be a pattern".into(),
                });
            }
            match k.split_once('*') {
                None => {
                    check_name(k, "not a model name")?;
                    exact.insert(normalized(k).into_owned(), target.clone());
                }
                Some((prefix, suffix)) => {
                    if suffix.contains('*') {
                        return Err(AliasError::Bad {
                            name: k.clone(),
                            reason: "at most one * per pattern".into(),
                        });
                    }
                    let rest = format!("{prefix}{suffix}");
                    if !rest.is_empty() {
                        check_name(&rest, "not a model name pattern")?;
                    }
                    wild.push((
                        prefix.to_ascii_lowercase(),
                        suffix.to_ascii_lowercase(),
                        target.clone(),
                    ));
                }
            }
        }
        // Longest (most specific) pattern first; ties in written order.
        wild.sort_by_key(|(p, s, _)| std::cmp::Reverse(p.len() + s.len()));
        Ok(Aliases {
            written,
            exact,
            wild,
        })
    }
}

impl From<Aliases> for BTreeMap<String, String> {
    fn from(a: Aliases) -> Self {
        a.written
    }
}

impl Aliases {
    /// The exact aliases, as written (for `/v1/models`).
    pub fn exact_names(&self) -> impl Iterator<Item = &str> {
        self.written
            .keys()
            .filter(|k| !k.contains('*'))
            .map(String::as_str)
    }

    /// The model `name` stands for, if an alias or the tier rule maps it.
    pub fn resolve<'a>(&'a self, tiers: &'a AliasTiers, name: &str) -> Option<&'a str> {
        let norm = normalized(name);
        if let Some(t) = self.exact.get(norm.as_ref()) {
            return Some(t);
        }
        let lower = name.trim().to_ascii_lowercase();
        let bare = lower.strip_suffix(":latest").unwrap_or(&lower);
        for (prefix, suffix, target) in &self.wild {
            let fits = |s: &str| {
                s.len() >= prefix.len() + suffix.len()
                    && s.starts_with(prefix.as_str())
                    && s.ends_with(suffix.as_str())
            };
            if fits(&lower) || fits(bare) {
                return Some(target);
            }
        }
        tiers.pick(tier_of(bare)?)
    }

    /// Whether no alias is configured.
    pub fn is_empty(&self) -> bool {
        self.written.is_empty()
    }
}

/// The size class of a cloud model id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// Flagship models.
    Large,
    /// Mid-size models.
    Medium,
    /// Small, fast models.
    Small,
}

/// The tier of a cloud model id (lower case, no `:latest`); `None` for a
/// name that is not a cloud id (the tier rule leaves local names alone).
pub fn tier_of(id: &str) -> Option<Tier> {
    let o_series = id.len() >= 2
        && id.starts_with('o')
        && id[1..2].bytes().all(|b| b.is_ascii_digit())
        && id[1..].bytes().take_while(u8::is_ascii_digit).count() == 1
        && matches!(id.as_bytes().get(2), None | Some(b'-'));
    if !(id.starts_with("claude-") || id.starts_with("gpt-") || o_series) {
        return None;
    }
    let has = |w: &str| id.split(['-', '.', '_']).any(|p| p == w);
    Some(if has("haiku") || has("nano") {
        Tier::Small
    } else if has("sonnet") || has("mini") || id.starts_with("gpt-3") {
        Tier::Medium
    } else {
        Tier::Large
    })
}

impl AliasTiers {
    /// The model for `tier`, or the nearest tier that is set (a larger one
    /// first for small and medium ids, a smaller one for large ids).
    pub fn pick(&self, tier: Tier) -> Option<&str> {
        let order: [&Option<String>; 3] = match tier {
            Tier::Large => [&self.large, &self.medium, &self.small],
            Tier::Medium => [&self.medium, &self.large, &self.small],
            Tier::Small => [&self.small, &self.medium, &self.large],
        };
        order.into_iter().find_map(|t| t.as_deref())
    }

    /// Checks each model name.
    pub fn validate(&self) -> Result<(), AliasError> {
        for m in [&self.large, &self.medium, &self.small]
            .into_iter()
            .flatten()
        {
            check_name(m, "alias_tiers: not a model name")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, &str)]) -> Result<Aliases, AliasError> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
            .try_into()
    }

    #[test]
    fn exact_beats_patterns_and_longer_patterns_beat_shorter() {
        let a = table(&[
            ("claude-sonnet-4-5", "qwen3-coder:30b"),
            ("claude-*", "qwen3:8b"),
            ("claude-haiku-*", "qwen3:1.7b"),
            ("*-mini", "gemma3:4b"),
        ])
        .unwrap();
        let t = AliasTiers::default();
        assert_eq!(a.resolve(&t, "claude-sonnet-4-5"), Some("qwen3-coder:30b"));
        assert_eq!(
            a.resolve(&t, "claude-sonnet-4-5:latest"),
            Some("qwen3-coder:30b")
        );
        assert_eq!(a.resolve(&t, "claude-haiku-4-5"), Some("qwen3:1.7b"));
        assert_eq!(a.resolve(&t, "claude-opus-4-1"), Some("qwen3:8b"));
        assert_eq!(a.resolve(&t, "gpt-5-mini"), Some("gemma3:4b"));
        assert_eq!(a.resolve(&t, "qwen3:8b"), None);
        assert_eq!(a.exact_names().collect::<Vec<_>>(), ["claude-sonnet-4-5"]);
    }

    #[test]
    fn cloud_ids_map_by_tier_and_local_names_do_not() {
        let a = Aliases::default();
        let t = AliasTiers {
            large: Some("big:70b".into()),
            medium: Some("mid:14b".into()),
            small: None,
        };
        assert_eq!(a.resolve(&t, "claude-opus-4-1-20250805"), Some("big:70b"));
        assert_eq!(a.resolve(&t, "claude-sonnet-4-5"), Some("mid:14b"));
        // No small tier: the nearest larger one.
        assert_eq!(a.resolve(&t, "claude-3-5-haiku-latest"), Some("mid:14b"));
        assert_eq!(a.resolve(&t, "gpt-5"), Some("big:70b"));
        assert_eq!(a.resolve(&t, "gpt-4o-mini"), Some("mid:14b"));
        assert_eq!(a.resolve(&t, "gpt-5-nano"), Some("mid:14b"));
        assert_eq!(a.resolve(&t, "o3"), Some("big:70b"));
        assert_eq!(a.resolve(&t, "o4-mini"), Some("mid:14b"));
        assert_eq!(a.resolve(&t, "olmo2:7b"), None);
        assert_eq!(a.resolve(&t, "llama3.2"), None);
        assert_eq!(a.resolve(&AliasTiers::default(), "gpt-5"), None);
    }

    #[test]
    fn bad_tables_are_refused_with_the_entry_named() {
        assert!(matches!(
            table(&[("a*b*", "m")]),
            Err(AliasError::Bad { name, .. }) if name == "a*b*"
        ));
        assert!(matches!(
            table(&[("ok", "no spaces")]),
            Err(AliasError::Bad { name, .. }) if name == "no spaces"
        ));
        assert!(table(&[("x", "m*")]).is_err());
        let many: Vec<(String, String)> = (0..=MAX_ALIASES)
            .map(|i| (format!("a{i}"), "m".to_string()))
            .collect();
        let many: BTreeMap<_, _> = many.into_iter().collect();
        assert_eq!(
            Aliases::try_from(many),
            Err(AliasError::TooMany(MAX_ALIASES + 1))
        );
        let from_toml: Result<Aliases, _> =
            toml::from_str::<toml::Table>("\"claude-*\" = \"q:8b\"\n")
                .unwrap()
                .try_into();
        assert_eq!(
            from_toml
                .unwrap()
                .resolve(&AliasTiers::default(), "claude-x"),
            Some("q:8b")
        );
    }
}
