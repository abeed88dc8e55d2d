//! The daemon's own metrics, rendered in the Prometheus text format for
//! `GET /metrics`. One process-wide registry ([`global`]) so that every
//! stage can count what it does without threading a handle through.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, OnceLock};

/// Counter or gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
}

type Labels = Vec<(String, String)>;

#[derive(Debug, Default)]
struct Family {
    help: String,
    kind: Option<Kind>,
    series: BTreeMap<Labels, f64>,
}

/// A registry of metric families.
#[derive(Debug, Default)]
pub struct Metrics {
    families: Mutex<BTreeMap<String, Family>>,
}

/// The process-wide registry.
pub fn global() -> &'static Metrics {
    static GLOBAL: OnceLock<Metrics> = OnceLock::new();
    GLOBAL.get_or_init(Metrics::default)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Metrics {
    /// Declare a family's help text and type (shown even before any sample).
    pub fn describe(&self, name: &str, kind: Kind, help: &str) {
        let mut f = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let family = f.entry(name.to_string()).or_default();
        family.help = help.to_string();
        family.kind = Some(kind);
    }

    /// Add `by` to a counter.
    pub fn add(&self, name: &str, pairs: &[(&str, &str)], by: f64) {
        let mut f = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let family = f.entry(name.to_string()).or_default();
        family.kind.get_or_insert(Kind::Counter);
        *family.series.entry(labels(pairs)).or_insert(0.0) += by;
    }

    /// Add one to a counter.
    pub fn inc(&self, name: &str, pairs: &[(&str, &str)]) {
        self.add(name, pairs, 1.0);
    }

    /// Set a gauge.
    pub fn set(&self, name: &str, pairs: &[(&str, &str)], value: f64) {
        let mut f = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let family = f.entry(name.to_string()).or_default();
        family.kind.get_or_insert(Kind::Gauge);
        family.series.insert(labels(pairs), value);
    }

    /// Remove a gauge series (e.g. a rule value that has no data).
    pub fn unset(&self, name: &str, pairs: &[(&str, &str)]) {
        let mut f = self.families.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(family) = f.get_mut(name) {
            family.series.remove(&labels(pairs));
        }
    }

    /// Current value of a series, if it exists (for tests and status).
    pub fn get(&self, name: &str, pairs: &[(&str, &str)]) -> Option<f64> {
        let f = self.families.lock().unwrap_or_else(|p| p.into_inner());
        f.get(name)?.series.get(&labels(pairs)).copied()
    }

    /// Everything in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let f = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for (name, family) in f.iter() {
            if !family.help.is_empty() {
                let _ = writeln!(out, "# HELP {name} {}", family.help);
            }
            let kind = match family.kind {
                Some(Kind::Counter) => "counter",
                _ => "gauge",
            };
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in &family.series {
                let _ = write!(out, "{name}");
                if !labels.is_empty() {
                    let rendered: Vec<String> = labels
                        .iter()
                        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                        .collect();
                    let _ = write!(out, "{{{}}}", rendered.join(","));
                }
                let _ = writeln!(out, " {}", format_value(*value));
            }
        }
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.describe(
            "rollbackd_rollbacks_total",
            Kind::Counter,
            "Rollbacks executed.",
        );
        m.inc("rollbackd_rollbacks_total", &[("target", "web")]);
        m.inc("rollbackd_rollbacks_total", &[("target", "web")]);
        m.set(
            "rollbackd_rule_value",
            &[("target", "web"), ("rule", "a\"b")],
            0.5,
        );
        let text = m.render();
        assert!(text.contains("# HELP rollbackd_rollbacks_total Rollbacks executed.\n"));
        assert!(text.contains("# TYPE rollbackd_rollbacks_total counter\n"));
        assert!(text.contains("rollbackd_rollbacks_total{target=\"web\"} 2\n"));
        assert!(text.contains("rollbackd_rule_value{target=\"web\",rule=\"a\\\"b\"} 0.5\n"));
        m.unset(
            "rollbackd_rule_value",
            &[("target", "web"), ("rule", "a\"b")],
        );
        assert_eq!(
            m.get(
                "rollbackd_rule_value",
                &[("target", "web"), ("rule", "a\"b")]
            ),
            None
        );
    }
}
