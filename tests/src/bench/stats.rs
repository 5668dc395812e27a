//! Medians of round medians, and the report they end up in.
//!
//! One number per (scenario, target, metric, round) is collected; the
//! report shows the median over rounds, and every comparison is a ratio or
//! difference computed *within* a round first (herd and its baseline ran
//! minutes apart at most, on the same machine state), then the median of
//! those. Run-to-run noise is shown as the spread (min..max over rounds).

use std::collections::BTreeMap;

use serde::Serialize;

/// Values of one metric over rounds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Series(pub Vec<f64>);

impl Series {
    pub fn push(&mut self, v: f64) {
        if v.is_finite() {
            self.0.push(v);
        }
    }

    pub fn median(&self) -> f64 {
        median(&self.0)
    }

    pub fn min(&self) -> f64 {
        self.0.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Metric store: key (e.g. `"s1/herd/rate=500/p50"`) → values over rounds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Metrics(pub BTreeMap<String, Series>);

impl Metrics {
    pub fn add(&mut self, key: impl Into<String>, v: f64) {
        self.0.entry(key.into()).or_default().push(v);
    }

    pub fn get(&self, key: &str) -> Option<&Series> {
        self.0.get(key)
    }

    /// Median over rounds, NaN when absent.
    pub fn med(&self, key: &str) -> f64 {
        self.get(key).map_or(f64::NAN, Series::median)
    }
}

/// A markdown table under construction.
pub struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(head: &[&str]) -> Table {
        Table {
            head: head.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut s = format!("| {} |\n", self.head.join(" | "));
        s += &format!("|{}\n", "---|".repeat(self.head.len()));
        for r in &self.rows {
            s += &format!("| {} |\n", r.join(" | "));
        }
        s
    }
}

/// Formats a number for a table: NaN as "–", otherwise `digits` decimals.
pub fn f(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "–".to_owned()
    }
}

/// A ratio `a / b` formatted as `0.42×`.
pub fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b != 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "–".to_owned()
    }
}

/// Met or missed, for the targets table.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub target: String,
    pub measured: String,
    pub met: Option<bool>,
    pub note: String,
}

impl Verdict {
    pub fn cell(&self) -> &'static str {
        match self.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
