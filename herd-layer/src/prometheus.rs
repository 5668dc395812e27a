//! Prometheus text exposition shared by herd's and herd-epp's `/metrics`.

use prometheus_client::registry::Registry;

/// The content type of [`encode_classic`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A registry in Prometheus text exposition (0.0.4): what herd's and
/// herd-epp's `/metrics` serve, with [`CONTENT_TYPE`].
pub fn encode_classic(registry: &Registry) -> String {
    let mut s = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut s, registry);
    classic_text(&s)
}

/// prometheus-client writes OpenMetrics, where a counter's HELP and TYPE
/// name the family without `_total` and the text ends in `# EOF`. Served as
/// Prometheus text (0.0.4, what every scraper and `promtool check metrics`
/// read), those lines must name the `_total` series instead.
pub fn classic_text(open_metrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for l in open_metrics.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            counters.insert(name.to_string());
        }
    }
    let mut out = String::with_capacity(open_metrics.len() + 64);
    for l in open_metrics.lines() {
        if l == "# EOF" {
            continue;
        }
        let mut line = l.to_string();
        for prefix in ["# HELP ", "# TYPE "] {
            if let Some(rest) = l.strip_prefix(prefix) {
                let name = rest.split(' ').next().unwrap_or("");
                if counters.contains(name) {
                    line = format!("{prefix}{name}_total{}", &rest[name.len()..]);
                }
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_help_and_type_name_the_total_series() {
        let open = "\
# HELP herd_retries Attempts retried on another node.
# TYPE herd_retries counter
herd_retries_total 3
# HELP herd_retries_budget A gauge that merely shares the prefix.
# TYPE herd_retries_budget gauge
herd_retries_budget 1
# HELP herd_shed Requests shed.
# TYPE herd_shed counter
herd_shed_total{model=\"m:latest\"} 2
# EOF
";
        assert_eq!(
            classic_text(open),
            "\
# HELP herd_retries_total Attempts retried on another node.
# TYPE herd_retries_total counter
herd_retries_total 3
# HELP herd_retries_budget A gauge that merely shares the prefix.
# TYPE herd_retries_budget gauge
herd_retries_budget 1
# HELP herd_shed_total Requests shed.
# TYPE herd_shed_total counter
herd_shed_total{model=\"m:latest\"} 2
"
        );
    }
}
