//! Evaluation of one rule over time: threshold, `for` duration, no-data policy.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};

use super::{RuleReport, RuleStatus};
use crate::config::{HostMetric, NoData, ProbeMeasure, RuleConfig, SourceSpec};
use crate::sources::SourceError;

/// A human description of a rule's source for reports, logs and email, e.g.
/// `probe GET http://127.0.0.1:3000/health failure_ratio` or `host memory`.
pub fn describe(spec: &SourceSpec) -> String {
    match spec {
        SourceSpec::Probe(p) => {
            let measure = match p.measure {
                ProbeMeasure::FailureRatio => "failure_ratio",
                ProbeMeasure::Latency => "latency",
            };
            format!("probe GET {} {measure}", p.url)
        }
        SourceSpec::Host(HostMetric::Cpu) => "host cpu".into(),
        SourceSpec::Host(HostMetric::Memory) => "host memory".into(),
        SourceSpec::Alertmanager(m) => crate::sources::alertmanager::describe(m),
        SourceSpec::Prometheus(p) => match &p.baseline {
            None => format!("prometheus {}", p.query),
            Some(b) => format!(
                "prometheus {} (baseline: median over {}{})",
                p.query,
                crate::util::fmt_duration(b.window),
                b.query
                    .as_ref()
                    .map(|q| format!(" of {q}"))
                    .unwrap_or_default()
            ),
        },
    }
}

/// A value already judged against its own threshold: a query's worst
/// series with its baseline (see [`crate::rules::baseline`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// The value compared.
    pub value: f64,
    /// What it was compared with (`max(above, K x baseline)`).
    pub threshold: f64,
    /// The baseline, for baseline rules.
    pub baseline: Option<f64>,
    /// The series' labels.
    pub labels: BTreeMap<String, String>,
}

/// The evaluation state of one rule between polls.
#[derive(Debug, Clone)]
pub struct RuleEval {
    rule: RuleConfig,
    no_data: NoData,
    /// First evaluation of the current run where the condition held, shifted
    /// forward by any time spent Unknown under `no_data = "hold"` so that
    /// blind time never counts toward `for`.
    cond_since: Option<DateTime<Utc>>,
    /// First evaluation of the current run without data (`hold` only).
    unknown_since: Option<DateTime<Utc>>,
}

impl RuleEval {
    /// Build for a rule under the target's no-data policy.
    pub fn build(rule: RuleConfig, no_data: NoData) -> RuleEval {
        RuleEval {
            rule,
            no_data,
            cond_since: None,
            unknown_since: None,
        }
    }

    /// Continue from the last report journaled before a restart: a running
    /// `for` (Pending or Breached since) or blind period goes on.
    pub fn resume(&mut self, last: &RuleReport) {
        match &last.status {
            RuleStatus::Pending { since } | RuleStatus::Breached { since } => {
                self.cond_since = Some(*since)
            }
            RuleStatus::Unknown { since, .. } => self.unknown_since = Some(*since),
            RuleStatus::Ok => {}
        }
    }

    /// The rule evaluated.
    pub fn rule(&self) -> &RuleConfig {
        &self.rule
    }

    /// When the condition began to hold in the current run (shifted past
    /// blind time), if it holds.
    pub fn condition_since(&self) -> Option<DateTime<Utc>> {
        self.cond_since
    }

    /// Feed a judged value (or why there is none) and return the report.
    /// Like [`RuleEval::observe`], but the threshold comes with the value
    /// (baselines) and the report names the series.
    pub fn observe_judged(
        &mut self,
        judged: Result<Judgement, String>,
        window: Option<std::time::Duration>,
        now: DateTime<Utc>,
    ) -> RuleReport {
        let (sample, threshold, baseline, labels) = match judged {
            Ok(j) => (Ok(j.value), j.threshold, j.baseline, j.labels),
            Err(why) => (Err(why), self.rule.above, None, BTreeMap::new()),
        };
        let mut report = self.observe_value(sample, threshold, window, now);
        report.baseline = baseline;
        report.labels = labels;
        report.above_baseline = match &self.rule.source {
            SourceSpec::Prometheus(p) => p.baseline.as_ref().map(|b| b.factor),
            _ => None,
        };
        report
    }

    /// Feed this poll's sample (or the source error) and return the report.
    /// `window` is the source's window, for the explanation.
    ///
    /// The condition is `value > above`; it must hold on every evaluation for
    /// the whole `for` (Prometheus alerting semantics). A NaN or infinite
    /// value counts as no data.
    pub fn observe(
        &mut self,
        sample: Result<f64, SourceError>,
        window: Option<std::time::Duration>,
        now: DateTime<Utc>,
    ) -> RuleReport {
        let above = self.rule.above;
        self.observe_value(sample.map_err(|e| e.to_string()), above, window, now)
    }

    /// One evaluation of `value > threshold` (or no data, with why).
    fn observe_value(
        &mut self,
        sample: Result<f64, String>,
        threshold: f64,
        window: Option<std::time::Duration>,
        now: DateTime<Utc>,
    ) -> RuleReport {
        let data = match sample {
            Ok(v) if v.is_finite() => Ok(v),
            Ok(v) => Err(format!("value is {}", non_finite_name(v))),
            Err(e) => Err(e),
        };
        let (status, value, no_data) = match data {
            Ok(v) => {
                if let Some(blind_from) = self.unknown_since.take() {
                    let blind = (now - blind_from).max(TimeDelta::zero());
                    if let Some(since) = self.cond_since.as_mut() {
                        *since = since.checked_add_signed(blind).unwrap_or(now);
                    }
                }
                (self.advance(v > threshold, now), Some(v), None)
            }
            Err(why) => match self.no_data {
                NoData::Hold => {
                    let since = *self.unknown_since.get_or_insert(now);
                    (RuleStatus::Unknown { since, why }, None, None)
                }
                NoData::Ok => {
                    self.unknown_since = None;
                    (self.advance(false, now), None, Some(why))
                }
                NoData::Breach => {
                    self.unknown_since = None;
                    (self.advance(true, now), None, Some(why))
                }
            },
        };
        RuleReport {
            rule: self.rule.name.clone(),
            source: describe(&self.rule.source),
            status,
            value,
            threshold,
            for_: self.rule.for_,
            window,
            at: now,
            no_data,
            baseline: None,
            above_baseline: None,
            labels: BTreeMap::new(),
        }
    }

    /// One evaluation where the condition does or does not hold.
    fn advance(&mut self, holds: bool, now: DateTime<Utc>) -> RuleStatus {
        if !holds {
            self.cond_since = None;
            return RuleStatus::Ok;
        }
        let since = *self.cond_since.get_or_insert(now);
        let for_ = TimeDelta::from_std(self.rule.for_).unwrap_or(TimeDelta::MAX);
        if now - since >= for_ {
            RuleStatus::Breached { since }
        } else {
            RuleStatus::Pending { since }
        }
    }
}

/// `NaN`, `+Inf` or `-Inf`, as Prometheus writes them.
fn non_finite_name(v: f64) -> &'static str {
    if v.is_nan() {
        "NaN"
    } else if v > 0.0 {
        "+Inf"
    } else {
        "-Inf"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    use crate::config::ProbeSpec;

    fn t(s: i64) -> DateTime<Utc> {
        "2026-01-01T12:00:00Z".parse::<DateTime<Utc>>().unwrap() + TimeDelta::seconds(s)
    }

    fn rule(for_secs: u64) -> RuleConfig {
        RuleConfig {
            name: "cpu".into(),
            source: SourceSpec::Host(HostMetric::Cpu),
            above: 0.5,
            for_: Duration::from_secs(for_secs),
        }
    }

    fn gone() -> Result<f64, SourceError> {
        Err(SourceError::Unavailable {
            what: "/proc/stat".into(),
            detail: "gone".into(),
        })
    }

    /// Short names for the expected status of each step.
    #[derive(Debug, Clone, Copy)]
    enum S {
        Ok,
        Pending(i64),
        Breached(i64),
        Unknown(i64),
    }

    fn matches(got: &RuleStatus, want: S) -> bool {
        match (got, want) {
            (RuleStatus::Ok, S::Ok) => true,
            (RuleStatus::Pending { since }, S::Pending(s)) => *since == t(s),
            (RuleStatus::Breached { since }, S::Breached(s)) => *since == t(s),
            (RuleStatus::Unknown { since, .. }, S::Unknown(s)) => *since == t(s),
            _ => false,
        }
    }

    /// One evaluation: (seconds after t(0), sample, expected status).
    type Step = (i64, Result<f64, SourceError>, S);

    /// Run `steps` through one rule.
    fn run(name: &str, for_secs: u64, no_data: NoData, steps: &[Step]) {
        let mut eval = RuleEval::build(rule(for_secs), no_data);
        for (i, (at, sample, want)) in steps.iter().enumerate() {
            let report = eval.observe(sample.clone(), None, t(*at));
            assert!(
                matches(&report.status, *want),
                "{name}: step {i} at {at}s: got {:?}, want {want:?}",
                report.status
            );
        }
    }

    #[test]
    fn for_semantics_table() {
        use NoData::Hold;
        let hi = || Ok(0.9);
        let lo = || Ok(0.1);
        let cases: Vec<(&str, u64, NoData, Vec<Step>)> = vec![
            (
                "breach shorter than for never breaches",
                60,
                Hold,
                vec![
                    (0, hi(), S::Pending(0)),
                    (30, hi(), S::Pending(0)),
                    (59, hi(), S::Pending(0)),
                    (60, lo(), S::Ok),
                ],
            ),
            (
                "exactly for breaches with the original since",
                60,
                Hold,
                vec![
                    (0, lo(), S::Ok),
                    (10, hi(), S::Pending(10)),
                    (40, hi(), S::Pending(10)),
                    (70, hi(), S::Breached(10)),
                    (100, hi(), S::Breached(10)),
                ],
            ),
            (
                "flapping around the threshold never breaches",
                30,
                Hold,
                (0..20)
                    .map(|i| {
                        let at = i * 10;
                        if i % 3 == 2 {
                            (at, lo(), S::Ok)
                        } else {
                            (at, hi(), S::Pending(if i % 3 == 0 { at } else { at - 10 }))
                        }
                    })
                    .collect(),
            ),
            (
                "equal to the threshold is not above it",
                0,
                Hold,
                vec![(0, Ok(0.5), S::Ok), (10, Ok(0.5000001), S::Breached(10))],
            ),
            (
                "for = 0 breaches at once, and a good value resets",
                0,
                Hold,
                vec![
                    (0, hi(), S::Breached(0)),
                    (5, lo(), S::Ok),
                    (10, hi(), S::Breached(10)),
                ],
            ),
            (
                "unknown never breaches under hold",
                0,
                Hold,
                vec![
                    (0, gone(), S::Unknown(0)),
                    (100, gone(), S::Unknown(0)),
                    (1000, gone(), S::Unknown(0)),
                ],
            ),
            (
                "unknown does not advance for under hold",
                60,
                Hold,
                vec![
                    (0, hi(), S::Pending(0)),
                    (30, gone(), S::Unknown(30)),
                    (300, gone(), S::Unknown(30)),
                    // Blind from 30s until data returns at 330s: since shifts from
                    // 0 to 300, so only the 30s seen holding (0..30) count.
                    (330, hi(), S::Pending(300)),
                    (359, hi(), S::Pending(300)),
                    (360, hi(), S::Breached(300)),
                    // A new blind period starts its own Unknown since.
                    (370, gone(), S::Unknown(370)),
                    (380, lo(), S::Ok),
                ],
            ),
            (
                "data back but condition gone resets",
                60,
                Hold,
                vec![
                    (0, hi(), S::Pending(0)),
                    (30, gone(), S::Unknown(30)),
                    (40, lo(), S::Ok),
                    (50, hi(), S::Pending(50)),
                ],
            ),
            (
                "no_data ok resets for",
                60,
                NoData::Ok,
                vec![
                    (0, hi(), S::Pending(0)),
                    (30, gone(), S::Ok),
                    (40, hi(), S::Pending(40)),
                    (100, hi(), S::Breached(40)),
                ],
            ),
            (
                "no_data breach advances for",
                60,
                NoData::Breach,
                vec![
                    (0, hi(), S::Pending(0)),
                    (30, gone(), S::Pending(0)),
                    (60, gone(), S::Breached(0)),
                    (70, lo(), S::Ok),
                    (80, gone(), S::Pending(80)),
                ],
            ),
            (
                "NaN and infinities are no data",
                0,
                Hold,
                vec![
                    (0, Ok(f64::NAN), S::Unknown(0)),
                    (10, Ok(f64::INFINITY), S::Unknown(0)),
                    (20, Ok(f64::NEG_INFINITY), S::Unknown(0)),
                    (30, lo(), S::Ok),
                ],
            ),
        ];
        for (name, for_secs, no_data, steps) in cases {
            run(name, for_secs, no_data, &steps);
        }
    }

    #[test]
    fn reports_explain_the_evaluation() {
        let probe = SourceSpec::Probe(ProbeSpec {
            url: "http://127.0.0.1:3000/health".parse().unwrap(),
            timeout: Duration::from_secs(2),
            expect_status: None,
            measure: ProbeMeasure::FailureRatio,
            window: Duration::from_secs(30),
        });
        let rule = RuleConfig {
            name: "health".into(),
            source: probe,
            above: 0.5,
            for_: Duration::from_secs(30),
        };
        let window = Some(Duration::from_secs(30));
        let mut eval = RuleEval::build(rule, NoData::Hold);

        let r = eval.observe(Ok(0.8), window, t(0));
        assert_eq!(
            r,
            RuleReport {
                rule: "health".into(),
                source: "probe GET http://127.0.0.1:3000/health failure_ratio".into(),
                status: RuleStatus::Pending { since: t(0) },
                value: Some(0.8),
                threshold: 0.5,
                for_: Duration::from_secs(30),
                window,
                at: t(0),
                no_data: None,
                baseline: None,
                above_baseline: None,
                labels: BTreeMap::new(),
            }
        );

        let r = eval.observe(gone(), window, t(5));
        assert_eq!(r.value, None);
        assert_eq!(r.no_data, None);
        assert_eq!(
            r.status,
            RuleStatus::Unknown {
                since: t(5),
                why: "/proc/stat: gone".into()
            }
        );

        let r = eval.observe(Ok(f64::NAN), window, t(10));
        assert_eq!(
            r.status,
            RuleStatus::Unknown {
                since: t(5),
                why: "value is NaN".into()
            }
        );
        let mut inf = RuleEval::build(eval.rule().clone(), NoData::Ok);
        let r = inf.observe(Ok(f64::INFINITY), None, t(0));
        assert_eq!((r.status, r.value), (RuleStatus::Ok, None));
        assert_eq!(r.no_data.as_deref(), Some("value is +Inf"));

        let mut breach = RuleEval::build(eval.rule().clone(), NoData::Breach);
        let r = breach.observe(gone(), None, t(0));
        assert_eq!(r.status, RuleStatus::Pending { since: t(0) });
        assert_eq!(r.no_data.as_deref(), Some("/proc/stat: gone"));

        assert_eq!(
            describe(&SourceSpec::Host(HostMetric::Memory)),
            "host memory"
        );
        assert_eq!(describe(&SourceSpec::Host(HostMetric::Cpu)), "host cpu");
    }
}
