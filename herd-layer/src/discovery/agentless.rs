//! Agentless nodes: an Ollama URL given to the router, with no herd-node.
//!
//! The router polls `/api/version`, `/api/ps` and `/api/tags` itself. Such a
//! node is routable on what Ollama's own API shows (loaded models, models on
//! disk); hardware signals stay unknown and count as neutral.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use serde::Deserialize;

use crate::fleet::{DiskModel, Fleet, LoadedModel, NodeId, NodeState, Source};

#[derive(Deserialize)]
struct Version {
    version: String,
}

#[derive(Deserialize, Default)]
struct Details {
    #[serde(default)]
    family: String,
    #[serde(default)]
    parameter_size: String,
    #[serde(default)]
    quantization_level: String,
}

#[derive(Deserialize)]
struct PsModel {
    name: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    size_vram: u64,
    #[serde(default)]
    context_length: u32,
    #[serde(default)]
    expires_at: Option<String>,
}

#[derive(Deserialize)]
struct Ps {
    #[serde(default)]
    models: Vec<PsModel>,
}

#[derive(Deserialize)]
struct TagModel {
    name: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    details: Details,
}

#[derive(Deserialize)]
struct Tags {
    #[serde(default)]
    models: Vec<TagModel>,
}

/// The id an agentless node gets: its URL's authority.
pub fn node_id_for(url: &str) -> NodeId {
    url.parse::<http::Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| url.to_string())
        .into()
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Empty<Bytes>,
>;

async fn get<T: for<'de> Deserialize<'de>>(client: &Client, url: &str) -> Result<T, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
    let fut = client.get(uri);
    let rsp = tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| format!("{url}: no answer within 5s"))?
        .map_err(|e| format!("{url}: {}", crate::forward::error_chain(&e)))?;
    if !rsp.status().is_success() {
        return Err(format!("{url}: status {}", rsp.status()));
    }
    let limited = http_body_util::Limited::new(rsp.into_body(), 16 * 1024 * 1024);
    let body = tokio::time::timeout(Duration::from_secs(5), limited.collect())
        .await
        .map_err(|_| format!("{url}: body too slow"))?
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("{url}: unexpected answer: {e}"))
}

/// Parse Ollama's RFC 3339 `expires_at` into Unix milliseconds (0 when absent or unparseable).
fn expires_ms(s: Option<&str>) -> i64 {
    // Keep it dependency-free: Ollama writes e.g. 2024-06-04T14:38:31.83753-07:00.
    let Some(s) = s else { return 0 };
    let parse = || -> Option<i64> {
        let (date, rest) = s.split_once('T')?;
        let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
        let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
        let time_end = rest.find(['Z', '+', '-']).unwrap_or(rest.len());
        let (time, zone) = rest.split_at(time_end);
        let mut t = time.split(':');
        let h: i64 = t.next()?.parse().ok()?;
        let mi: i64 = t.next()?.parse().ok()?;
        let sec: f64 = t.next().unwrap_or("0").parse().ok()?;
        // Out-of-range fields from a node must not overflow the arithmetic below.
        let sane = (1970..=9999).contains(&y)
            && (1..=12).contains(&mo)
            && (1..=31).contains(&da)
            && (0..24).contains(&h)
            && (0..60).contains(&mi)
            && (0.0..61.0).contains(&sec);
        if !sane {
            return None;
        }
        let offset_min = match zone.chars().next() {
            Some(sign @ ('+' | '-')) => {
                let z = &zone[1..];
                let (zh, zm) = z.split_once(':').unwrap_or((z, "0"));
                let (zh, zm) = (zh.parse::<i64>().ok()?, zm.parse::<i64>().ok()?);
                if !(0..24).contains(&zh) || !(0..60).contains(&zm) {
                    return None;
                }
                let m = zh * 60 + zm;
                if sign == '-' { -m } else { m }
            }
            _ => 0,
        };
        // Days from civil (Howard Hinnant's algorithm).
        let y2 = if mo <= 2 { y - 1 } else { y };
        let era = y2.div_euclid(400);
        let yoe = y2 - era * 400;
        let mp = (mo + 9) % 12;
        let doy = (153 * mp + 2) / 5 + da - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        let secs = days * 86_400 + h * 3600 + mi * 60 - offset_min * 60;
        Some(secs * 1000 + (sec * 1000.0) as i64)
    };
    parse().unwrap_or(0)
}

/// Poll one agentless node forever.
pub async fn poll(fleet: Fleet, url: String, every: Duration) {
    let id = node_id_for(&url);
    let base = url.trim_end_matches('/').to_string();
    fleet.update(|v| {
        v.nodes
            .entry(id.clone())
            .or_insert_with(|| NodeState::new(id.clone(), Source::Agentless, base.clone()));
    });
    let client: Client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let result = async {
            let version: Version = get(&client, &format!("{base}/api/version")).await?;
            let ps: Ps = get(&client, &format!("{base}/api/ps")).await?;
            let tags: Tags = get(&client, &format!("{base}/api/tags")).await?;
            Ok::<_, String>((version, ps, tags))
        }
        .await;
        let now = tokio::time::Instant::now();
        let now_ms = crate::scoring::now_ms();
        fleet.update(|v| {
            let Some(n) = v.nodes.get_mut(&id) else {
                return;
            };
            match result {
                Ok((version, ps, tags)) => {
                    n.engine_reachable = true;
                    n.engine_version = version.version;
                    let loaded = ps
                        .models
                        .into_iter()
                        .map(|m| LoadedModel {
                            name: m.name,
                            size_bytes: m.size,
                            vram_bytes: m.size_vram,
                            context_length: m.context_length,
                            expires_at_ms: expires_ms(m.expires_at.as_deref()),
                        })
                        .collect();
                    n.set_loaded(loaded, now_ms);
                    n.available = tags
                        .models
                        .into_iter()
                        .map(|m| DiskModel {
                            name: m.name,
                            size_bytes: m.size,
                            family: m.details.family,
                            parameter_size: m.details.parameter_size,
                            quantization: m.details.quantization_level,
                        })
                        .collect();
                    if !n.online {
                        tracing::info!(node = %id, "agentless node is up");
                    }
                    n.seen(now);
                }
                Err(e) => {
                    if n.online {
                        tracing::warn!(node = %id, error = %e, "agentless node is down");
                    }
                    n.engine_reachable = false;
                    n.mark_offline(e);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_authorities() {
        assert_eq!(&*node_id_for("http://10.0.0.5:11434/"), "10.0.0.5:11434");
    }

    #[test]
    fn expiry_times_parse() {
        assert_eq!(expires_ms(Some("1970-01-01T00:00:01Z")), 1000);
        assert_eq!(expires_ms(Some("1970-01-01T01:00:00+01:00")), 0);
        assert_eq!(
            expires_ms(Some("2024-06-04T14:38:31.5-07:00")),
            1_717_537_111_500
        );
        assert_eq!(expires_ms(Some("garbage")), 0);
        assert_eq!(expires_ms(Some("99999999999999-01-01T00:00:00Z")), 0);
        assert_eq!(expires_ms(Some("2024-01-01T99999999999999:00:00Z")), 0);
        assert_eq!(expires_ms(None), 0);
    }
}
