//! Rules turn samples into a [`RuleStatus`]. `for` works like Prometheus
//! alerting rules: the condition must hold on every evaluation for the whole
//! duration, and one good evaluation resets it. A source error is never a
//! breach: it is `Unknown`, and the target's `no_data` policy decides what
//! it does to the `for` clock.

pub mod eval;

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
    /// The `above` threshold.
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
}

impl RuleReport {
    /// One line such as `health = 0.83 > 0.5 (for 30s, window 30s): breached since 12:00:03.000Z`.
    pub fn explain(&self) -> String {
        use crate::util::{fmt_duration, fmt_value};
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
}
