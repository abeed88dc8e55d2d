//! Rules turn samples into a [`RuleStatus`]. `for` works like Prometheus
//! alerting rules: the condition must hold on every evaluation for the whole
//! duration, and one good evaluation resets it. A source error is never a
//! breach: it is `Unknown`, and the target's `no_data` policy decides what
//! it does to the `for` clock.

pub mod baseline;
pub mod eval;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use eval::RuleEval;

/// The status of one rule after an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RuleStatus {
    /// The condition does not hold.
    Ok,
    /// The condition holds, but not yet for the whole `for` duration.
    Pending {
        /// First evaluation of the current run where it held.
        since: DateTime<Utc>,
    },
    /// The condition has held for at least `for`.
    Breached {
        /// First evaluation of the current run where it held.
        since: DateTime<Utc>,
    },
    /// No usable value.
    Unknown {
        /// First evaluation of the current run without data.
        since: DateTime<Utc>,
        /// Why there is no value.
        why: String,
    },
}

impl RuleStatus {
    /// Short lowercase name for tables and logs.
    pub fn name(&self) -> &'static str {
        match self {
            RuleStatus::Ok => "ok",
            RuleStatus::Pending { .. } => "pending",
            RuleStatus::Breached { .. } => "breached",
            RuleStatus::Unknown { .. } => "unknown",
        }
    }
}

/// One rule's evaluation with everything needed to explain it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleReport {
    /// Rule name.
    pub rule: String,
    /// Human description of the source, e.g. `probe GET http://.../health failure_ratio`.
    pub source: String,
    /// The status after this evaluation.
    pub status: RuleStatus,
    /// The value compared, when there was one.
    pub value: Option<f64>,
    /// The threshold the value was compared with: `above`, or for a
    /// baseline rule `max(above, K x baseline)` (`-inf` while a
    /// baseline-only rule has no baseline).
    #[serde(with = "threshold_serde")]
    pub threshold: f64,
    /// The `for` duration.
    #[serde(with = "crate::util::serde_duration")]
    pub for_: Duration,
    /// The window the value is computed over, if any.
    #[serde(with = "crate::util::serde_duration_opt", default)]
    pub window: Option<Duration>,
    /// When it was evaluated.
    pub at: DateTime<Utc>,
    /// Why there was no value this evaluation, when the target's `no_data`
    /// policy (`ok` or `breach`) turned that into a status other than Unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_data: Option<String>,
    /// The baseline the value was compared with (baseline rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// K of `above_baseline = K` (baseline rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above_baseline: Option<f64>,
    /// Labels of the series the value is from, when a query returned
    /// series (the worst one: breaching, or else the highest).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `threshold` as a JSON number, or `"-Inf"`/`"+Inf"`/`"NaN"` (JSON has no
/// infinities; a journal line must read back as it was written).
mod threshold_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("+Inf")
        } else {
            s.serialize_str("-Inf")
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrText {
        Num(f64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match NumOrText::deserialize(d)? {
            NumOrText::Num(v) => Ok(v),
            NumOrText::Text(t) => match t.as_str() {
                "-Inf" => Ok(f64::NEG_INFINITY),
                "+Inf" | "Inf" => Ok(f64::INFINITY),
                "NaN" => Ok(f64::NAN),
                other => Err(serde::de::Error::custom(format!(
                    "invalid threshold {other:?}"
                ))),
            },
        }
    }
}

impl RuleReport {
    /// The threshold in words: `0.5`, or for a baseline rule
    /// `0.36 (3 x baseline 0.12)`, `0.5 (above; 3 x baseline 0.1 = 0.3)`,
    /// `3 x baseline (no baseline)`.
    pub fn threshold_text(&self) -> String {
        use crate::util::fmt_value;
        let Some(k) = self.above_baseline else {
            return fmt_value(self.threshold);
        };
        match self.baseline {
            None if self.threshold.is_finite() => {
                format!(
                    "{} and {} x baseline (no baseline)",
                    fmt_value(self.threshold),
                    fmt_value(k)
                )
            }
            None => format!("{} x baseline (no baseline)", fmt_value(k)),
            Some(b) if k * b >= self.threshold => {
                format!(
                    "{} ({} x baseline {})",
                    fmt_value(self.threshold),
                    fmt_value(k),
                    fmt_value(b)
                )
            }
            Some(b) => format!(
                "{} (above; {} x baseline {} = {})",
                fmt_value(self.threshold),
                fmt_value(k),
                fmt_value(b),
                fmt_value(k * b)
            ),
        }
    }

    /// One line such as `health = 0.83 > 0.5 (for 30s, window 30s): breached since 12:00:03.000Z`.
    pub fn explain(&self) -> String {
        use crate::util::{fmt_duration, fmt_value};
        if self.above_baseline.is_some() || !self.labels.is_empty() {
            return self.explain_series();
        }
        let mut s = match self.value {
            Some(v) if v > self.threshold => {
                format!(
                    "{} = {} > {}",
                    self.rule,
                    fmt_value(v),
                    fmt_value(self.threshold)
                )
            }
            Some(v) => format!(
                "{} = {} <= {}",
                self.rule,
                fmt_value(v),
                fmt_value(self.threshold)
            ),
            None => format!(
                "{}: no value (threshold {})",
                self.rule,
                fmt_value(self.threshold)
            ),
        };
        s.push_str(&format!(" (for {}", fmt_duration(self.for_)));
        if let Some(w) = self.window {
            s.push_str(&format!(", window {}", fmt_duration(w)));
        }
        s.push_str("):");
        match &self.status {
            RuleStatus::Ok => s.push_str(" ok"),
            RuleStatus::Pending { since } => {
                s.push_str(&format!(" pending since {}", since.format("%H:%M:%S%.3fZ")))
            }
            RuleStatus::Breached { since } => s.push_str(&format!(
                " breached since {}",
                since.format("%H:%M:%S%.3fZ")
            )),
            RuleStatus::Unknown { since, why } => s.push_str(&format!(
                " unknown since {}: {}",
                since.format("%H:%M:%S%.3fZ"),
                why
            )),
        }
        if let Some(why) = &self.no_data {
            s.push_str(&format!(" (no data: {why})"));
        }
        s
    }

    /// [`RuleReport::explain`] for query rules: the series' labels and the
    /// baseline, e.g. `p99{job="app"} = 0.5 > 0.3 (3 x baseline 0.1) (for 1m): breached since ...`.
    fn explain_series(&self) -> String {
        use crate::util::{fmt_duration, fmt_value};
        let series = if self.labels.is_empty() {
            String::new()
        } else {
            crate::sources::prometheus::fmt_labels(&self.labels)
        };
        let mut s = match self.value {
            Some(v) if v > self.threshold => format!(
                "{}{series} = {} > {}",
                self.rule,
                fmt_value(v),
                self.threshold_text()
            ),
            Some(v) => format!(
                "{}{series} = {} <= {}",
                self.rule,
                fmt_value(v),
                self.threshold_text()
            ),
            None => format!(
                "{}: no value (threshold {})",
                self.rule,
                self.threshold_text()
            ),
        };
        s.push_str(&format!(" (for {}", fmt_duration(self.for_)));
        if let Some(w) = self.window {
            s.push_str(&format!(", window {}", fmt_duration(w)));
        }
        s.push_str("):");
        let at = |t: &DateTime<Utc>| t.format("%H:%M:%S%.3fZ").to_string();
        match &self.status {
            RuleStatus::Ok => s.push_str(" ok"),
            RuleStatus::Pending { since } => s.push_str(&format!(" pending since {}", at(since))),
            RuleStatus::Breached { since } => s.push_str(&format!(" breached since {}", at(since))),
            RuleStatus::Unknown { since, why } => {
                s.push_str(&format!(" unknown since {}: {why}", at(since)))
            }
        }
        if let Some(why) = &self.no_data {
            s.push_str(&format!(" (no data: {why})"));
        }
        s
    }
}
