//! Rules turn samples into a [`RuleStatus`]. `for` works like Prometheus
//! alerting rules: the condition must hold on every evaluation for the whole
//! duration, and one good evaluation resets it. Prometheus rules judge it on
//! the data's own timeline, from one range query ([`timeline`]); probe,
//! host and alertmanager rules count polls ([`RuleEval::observe`]) and
//! survive a restart through [`RuleEval::resume`].
//!
//! A source error is never a breach: it is `Unknown`, and the rule's
//! `no_data` policy (else the target's) decides what it does to the `for`
//! clock. Only absence (the source answered: no such series) can count as a
//! breach, under `no_data = "breach"`, and only where the series was
//! expected: after the data an earlier answer had, and never while
//! Prometheus is too young to tell ([`absence`]); a source that cannot answer, NaN,
//! too few probes (`min_samples`), too little traffic (`traffic_query`) and
//! observer failures are Unknown under `hold` and `breach` alike.

pub mod absence;
pub mod baseline;
pub mod eval;
mod fixture;
pub mod timeline;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::NoData;
use crate::sources::prometheus::PromSource;
use crate::sources::Source;
use crate::util::{fmt_duration, fmt_value};
pub use eval::{NoValue, RuleEval};

/// Evaluate one rule for this poll: sample its source and feed the rule.
/// A range-judged source (Prometheus, [`Source::range`]) runs its traffic
/// guard, then one range query over the data's timeline ([`timeline`]);
/// other sources are sampled once and judged poll by poll
/// ([`RuleEval::observe`]). `deployed_at` is when the
/// live version was first seen (ends a baseline's window). The report's
/// `detail` carries what the source saw besides the value (probe failures
/// by reason, the range judged, the traffic).
pub async fn evaluate(
    source: &mut Source,
    eval: &mut RuleEval,
    deployed_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> RuleReport {
    let mut report = match source.range() {
        Some(p) => {
            let mut report = evaluate_prometheus(p, eval, deployed_at, now).await;
            let unknown = matches!(report.status, RuleStatus::Unknown { .. });
            report.unreachable = p
                .unreachable_run(unknown, now)
                .map(|(server, at)| Unreachable { server, at });
            report
        }
        None => {
            let window = source.window();
            let sample = source.sample(now).await;
            let mut report = eval.observe(sample, window, now);
            report.detail = source.detail();
            report
        }
    };
    report.shadow = eval.rule().shadow;
    report
}

/// A Prometheus rule: traffic guard, baseline, range query, timeline.
async fn evaluate_prometheus(
    p: &mut PromSource,
    eval: &mut RuleEval,
    deployed_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> RuleReport {
    let above = eval.rule().above;
    let factor = p.spec().baseline.as_ref().map(|b| b.factor);
    // No value this evaluation: the policy decides; the report still says
    // what kind of rule it is.
    let blind = |eval: &mut RuleEval, none: NoValue| {
        let mut report = eval.observe_none(none, above, now);
        report.above_baseline = factor;
        report
    };
    let mut notes = Vec::new();
    if let Some(guard) = p.spec().traffic.clone() {
        let low = |what: String| {
            format!(
                "low traffic: {what} < {} (traffic_query {})",
                fmt_value(guard.min),
                guard.query
            )
        };
        let why = match p.traffic().await {
            Ok(Some(v)) if v >= guard.min => {
                notes.push(format!(
                    "traffic {} req/s >= {}",
                    fmt_value(v),
                    fmt_value(guard.min)
                ));
                None
            }
            Ok(Some(v)) => Some(low(format!("{} req/s", fmt_value(v)))),
            Ok(None) => None,
            Err(e) if e.is_absence() => Some(low("no series".into())),
            Err(e) => Some(format!("traffic_query: {e}")),
        };
        if let Some(why) = why {
            return blind(eval, NoValue::blind(why));
        }
    }
    let baseline = match baseline::medians(p, eval, deployed_at, now).await {
        Ok(b) => b,
        Err(why) => return blind(eval, NoValue::blind(why)),
    };
    let grid = timeline::Grid::plan(now, eval.rule().for_, p.step(eval.rule().for_));
    let series = match p.query_range(grid.start, grid.end(), grid.step).await {
        Ok(s) => s,
        Err(e) => return blind(eval, e.into()),
    };
    let judged: Vec<timeline::Judged> = series
        .iter()
        .filter_map(|s| {
            let medians = baseline.as_ref().map(|(k, m)| (*k, m.as_slice()));
            let (threshold, baseline) = baseline::threshold_for(&s.labels, above, medians)?;
            Some(timeline::Judged {
                series: s,
                threshold,
                baseline,
            })
        })
        .collect();
    if judged.is_empty() && !series.is_empty() {
        let why = format!(
            "baseline: none of the {} series has a baseline series with the same labels",
            series.len()
        );
        return blind(eval, NoValue::blind(why));
    }
    // Under `breach`, absence counts only where the series was expected:
    // after the data earlier answers had, and only while Prometheus can
    // vouch for it (see [`absence`]).
    let expected = (eval.no_data() == NoData::Breach).then(|| grid.after(eval.data_until()));
    let mut outcome = timeline::judge(&judged, &grid, expected.as_deref());
    if let Some(last) = series
        .iter()
        .filter_map(|s| s.points.last())
        .map(|(t, _)| *t)
        .max()
    {
        eval.saw_data(last);
    }
    if matches!(
        outcome,
        timeline::Outcome::Holds {
            by_absence: true,
            ..
        }
    ) {
        if let Some(why) = absence::blind(p, &grid, eval.rule().for_).await {
            outcome = absence::without_absence(timeline::judge(&judged, &grid, None), &why);
            if !matches!(outcome, timeline::Outcome::NoValue { .. }) {
                notes.push(why);
            }
        }
    }
    let mut report = eval.observe_timeline(outcome, grid.start, now);
    notes.insert(
        0,
        format!(
            "judged on {} points over the last {} (step {})",
            grid.n + 1,
            fmt_duration(grid.lookback()),
            fmt_duration(grid.step)
        ),
    );
    report.detail = Some(notes.join("; "));
    report
}

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
    /// series (the one that decided: the longest holding run, or else the
    /// nearest to its threshold).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// What the source saw besides the value: probe failures by reason
    /// (`3 of 6 probes failed: 2 timed out after 2s, 1 refused; last:
    /// refused`), the range a Prometheus rule was judged on, its traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// `mode = "shadow"`: evaluated and shown, never triggers an action.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
    /// The Prometheus server of this Unknown rule went unanswered (refused,
    /// timed out) during its Unknown run: while it still does, the server's
    /// own notification covers the rule and the target's "blind" notice
    /// leaves it out; once it answers, a blind period counts from then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<Unreachable>,
}

/// A rule's Prometheus server went unanswered during its Unknown run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unreachable {
    /// `default` for `[prometheus]`, else its `[prometheus.servers.NAME]`.
    pub server: String,
    /// The latest evaluation at which it went unanswered (the report's
    /// own `at` while it still does).
    pub at: DateTime<Utc>,
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
    /// The server this Unknown rule cannot reach at this evaluation.
    pub fn server_down(&self) -> Option<&str> {
        match (&self.status, &self.unreachable) {
            (RuleStatus::Unknown { .. }, Some(u)) if u.at >= self.at => Some(&u.server),
            _ => None,
        }
    }

    /// Since when an Unknown rule is blind for a reason of its own: its
    /// `since`, or when its server last went unanswered if later.
    pub fn blind_since(&self) -> Option<DateTime<Utc>> {
        match &self.status {
            RuleStatus::Unknown { since, .. } => Some(match &self.unreachable {
                Some(u) if u.at > *since => u.at,
                _ => *since,
            }),
            _ => None,
        }
    }

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
        if let Some(detail) = &self.detail {
            s.push_str(&format!(" [{detail}]"));
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
        if let Some(detail) = &self.detail {
            s.push_str(&format!(" [{detail}]"));
        }
        s
    }
}
