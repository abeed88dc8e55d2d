//! Evaluation of one rule over time: threshold, `for` duration, no-data policy.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};

use super::timeline::Outcome;
use super::{RuleReport, RuleStatus};
use crate::config::{NoData, RuleConfig, SourceSpec};
// The source kinds' specs, which the tests below build.
#[cfg(test)]
use crate::config::{HostMetric, ProbeMeasure};
use crate::sources::SourceError;

/// A human description of a rule's source for reports, logs and email, e.g.
/// `probe GET http://127.0.0.1:3000/health failure_ratio` or `host memory`.
pub fn describe(spec: &SourceSpec) -> String {
    spec.describe()
}

/// Why an evaluation has no value.
#[derive(Debug, Clone, PartialEq)]
pub struct NoValue {
    /// In words, for the report.
    pub why: String,
    /// The source answered that the series is absent: the one case
    /// `no_data = "breach"` counts as holding. Everything else (the source
    /// unreachable, NaN, too few probes, low traffic, an observer failure)
    /// is never evidence: under `breach` it is Unknown like under `hold`.
    pub absent: bool,
}

impl NoValue {
    /// No value, and not evidence of absence.
    pub fn blind(why: impl Into<String>) -> NoValue {
        NoValue {
            why: why.into(),
            absent: false,
        }
    }
}

impl From<SourceError> for NoValue {
    fn from(e: SourceError) -> NoValue {
        NoValue {
            absent: e.is_absence(),
            why: e.to_string(),
        }
    }
}

/// The evaluation state of one rule between polls.
#[derive(Debug, Clone)]
pub struct RuleEval {
    rule: RuleConfig,
    no_data: NoData,
    /// First evaluation of the current run where the condition held, shifted
    /// forward by any time spent Unknown under `no_data = "hold"` so that
    /// blind time never counts toward `for`. For range-judged rules, the
    /// first point of the run.
    cond_since: Option<DateTime<Utc>>,
    /// First evaluation of the current run without data (`hold`, and
    /// `breach` for data that is not absent).
    unknown_since: Option<DateTime<Utc>>,
    /// Range-judged rules: the end of the last range on which the
    /// condition held; a new range starting before it continues that run.
    range_at: Option<DateTime<Utc>>,
    /// Range-judged rules: the latest point at which an earlier answer had
    /// data. Under `no_data = "breach"` no later answer makes a point up to
    /// it absent (see [`crate::rules::timeline::Grid::after`]).
    data_until: Option<DateTime<Utc>>,
}

impl RuleEval {
    /// Build for a rule under the target's no-data policy; the rule's own
    /// `no_data`, when set, overrides it.
    pub fn build(rule: RuleConfig, target_no_data: NoData) -> RuleEval {
        RuleEval {
            no_data: rule.no_data.unwrap_or(target_no_data),
            rule,
            cond_since: None,
            unknown_since: None,
            range_at: None,
            data_until: None,
        }
    }

    /// Continue from the last report recovered from the journal, so that a
    /// restart does not restart a running `for`:
    /// - `Pending{since}`/`Breached{since}`: the run continues from `since`.
    ///   For poll-judged rules (probe, host, alertmanager) the time the
    ///   daemon was down counts toward `for`, as if it had been watching
    ///   (the journal records status changes only, so when the last poll
    ///   before the restart happened is not known). The rule still needs
    ///   fresh data that holds before it is Breached again: a probe rule is
    ///   Unknown for its first polls after a restart (its window is empty,
    ///   `min_samples`); under `hold` that short blindness moves `since`
    ///   forward by its length, it does not reset the run (under `ok` it
    ///   does: no data is Ok there). Range-judged rules (Prometheus) read
    ///   the run from the data; a recovered `since` is used only when the
    ///   range reaches back to the recovered evaluation.
    /// - `Unknown{since}`: the blind period continues from `since`.
    /// - `Ok`, or a report of another rule: nothing to continue.
    pub fn resume(&mut self, last: &RuleReport) {
        if last.rule != self.rule.name {
            return;
        }
        let ranged = self.rule.source.ranged();
        match &last.status {
            RuleStatus::Pending { since } | RuleStatus::Breached { since } => {
                self.cond_since = Some(*since);
                self.unknown_since = None;
                self.range_at = ranged.then_some(last.at);
            }
            RuleStatus::Unknown { since, .. } => {
                self.cond_since = None;
                self.unknown_since = Some(*since);
            }
            RuleStatus::Ok => {}
        }
    }

    /// The rule evaluated.
    pub fn rule(&self) -> &RuleConfig {
        &self.rule
    }

    /// The no-data policy in force: the rule's, else the target's.
    pub fn no_data(&self) -> NoData {
        self.no_data
    }

    /// The latest point at which an earlier range answer had data.
    pub fn data_until(&self) -> Option<DateTime<Utc>> {
        self.data_until
    }

    /// A range answer had data up to `at`: remember the latest.
    pub fn saw_data(&mut self, at: DateTime<Utc>) {
        self.data_until = self.data_until.max(Some(at));
    }

    /// When the condition began to hold in the current run (shifted past
    /// blind time), if it holds.
    pub fn condition_since(&self) -> Option<DateTime<Utc>> {
        self.cond_since
    }

    fn above_baseline(&self) -> Option<f64> {
        self.rule.source.above_baseline()
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
        self.observe_value(sample.map_err(NoValue::from), above, window, now)
    }

    /// An evaluation without a value: the no-data policy decides. `threshold`
    /// is shown in the report.
    pub fn observe_none(
        &mut self,
        none: NoValue,
        threshold: f64,
        now: DateTime<Utc>,
    ) -> RuleReport {
        self.observe_value(Err(none), threshold, None, now)
    }

    /// Feed the judgement of a range query ending at `now` (see
    /// [`crate::rules::timeline`]): the data's own timeline decides `for`.
    /// `start` is the range's first point.
    pub fn observe_timeline(
        &mut self,
        outcome: Outcome,
        start: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> RuleReport {
        let (status, value, threshold, baseline, labels) = match outcome {
            Outcome::NoValue { why, absent } => {
                return self.observe_none(NoValue { why, absent }, self.rule.above, now)
            }
            Outcome::Clear {
                value,
                threshold,
                baseline,
                labels,
            } => {
                self.unknown_since = None;
                self.range_at = None;
                let status = self.advance(false, now);
                (status, Some(value), threshold, baseline, labels)
            }
            Outcome::Holds {
                since,
                from_start,
                value,
                threshold,
                baseline,
                labels,
                by_absence: _,
            } => {
                self.unknown_since = None;
                // The run reaches back past the range: if the previous range
                // (ending no earlier than this one starts) held too, it is
                // the same run.
                let continued = match (self.cond_since, self.range_at) {
                    (Some(prev), Some(at)) if from_start && at >= start && prev < since => prev,
                    _ => since,
                };
                self.cond_since = Some(continued);
                self.range_at = Some(now);
                let status = self.advance(true, now);
                let threshold = if threshold.is_nan() {
                    self.rule.above
                } else {
                    threshold
                };
                (status, value, threshold, baseline, labels)
            }
        };
        let mut report = self.report(status, value, threshold, None, now, None);
        report.baseline = baseline;
        report.labels = labels;
        report.above_baseline = self.above_baseline();
        report
    }

    /// One evaluation of `value > threshold` (or no data, with why).
    fn observe_value(
        &mut self,
        sample: Result<f64, NoValue>,
        threshold: f64,
        window: Option<std::time::Duration>,
        now: DateTime<Utc>,
    ) -> RuleReport {
        let data = match sample {
            Ok(v) if v.is_finite() => Ok(v),
            Ok(v) => Err(NoValue::blind(format!(
                "value is {}",
                crate::util::non_finite_name(v)
            ))),
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
            Err(NoValue { why, absent }) => match self.no_data {
                NoData::Ok => {
                    self.unknown_since = None;
                    (self.advance(false, now), None, Some(why))
                }
                NoData::Breach if absent => {
                    self.unknown_since = None;
                    (self.advance(true, now), None, Some(why))
                }
                NoData::Hold | NoData::Breach => {
                    let since = *self.unknown_since.get_or_insert(now);
                    (RuleStatus::Unknown { since, why }, None, None)
                }
            },
        };
        self.report(status, value, threshold, window, now, no_data)
    }

    fn report(
        &self,
        status: RuleStatus,
        value: Option<f64>,
        threshold: f64,
        window: Option<std::time::Duration>,
        now: DateTime<Utc>,
        no_data: Option<String>,
    ) -> RuleReport {
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
            detail: None,
            shadow: self.rule.shadow,
            unreachable: None,
        }
    }

    /// One evaluation where the condition does or does not hold.
    fn advance(&mut self, holds: bool, now: DateTime<Utc>) -> RuleStatus {
        if !holds {
            self.cond_since = None;
            self.range_at = None;
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
            no_data: None,
            shadow: false,
        }
    }

    fn gone() -> Result<f64, SourceError> {
        Err(SourceError::Unavailable {
            what: "/proc/stat".into(),
            detail: "gone".into(),
        })
    }

    /// The source answered: no such series.
    fn absent() -> Result<f64, SourceError> {
        Err(SourceError::Absent {
            what: "prometheus".into(),
            detail: "empty result".into(),
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
                "no_data breach: absence advances for",
                60,
                NoData::Breach,
                vec![
                    (0, hi(), S::Pending(0)),
                    (30, absent(), S::Pending(0)),
                    (60, absent(), S::Breached(0)),
                    (70, lo(), S::Ok),
                    (80, absent(), S::Pending(80)),
                ],
            ),
            (
                "no_data breach: a source that cannot answer is not absence",
                60,
                NoData::Breach,
                vec![
                    (0, gone(), S::Unknown(0)),
                    (30, Ok(f64::NAN), S::Unknown(0)),
                    (
                        40,
                        Err(SourceError::Observer("too many open files (EMFILE)".into())),
                        S::Unknown(0),
                    ),
                    (
                        50,
                        Err(SourceError::TooLittle("too few probes".into())),
                        S::Unknown(0),
                    ),
                    (60, hi(), S::Pending(60)),
                ],
            ),
            (
                "too few samples and observer failures are unknown under hold",
                30,
                Hold,
                vec![
                    (0, hi(), S::Pending(0)),
                    (
                        10,
                        Err(SourceError::Observer("too many open files (EMFILE)".into())),
                        S::Unknown(10),
                    ),
                    (15, hi(), S::Pending(5)),
                    (35, hi(), S::Breached(5)),
                ],
            ),
            (
                "no_data ok: absence and blindness are ok",
                0,
                NoData::Ok,
                vec![
                    (0, hi(), S::Breached(0)),
                    (10, absent(), S::Ok),
                    (
                        20,
                        Err(SourceError::TooLittle("too few probes".into())),
                        S::Ok,
                    ),
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
            min_samples: 3,
        });
        let rule = RuleConfig {
            name: "health".into(),
            source: probe,
            above: 0.5,
            for_: Duration::from_secs(30),
            no_data: None,
            shadow: false,
        };
        let window = Some(Duration::from_secs(30));
        let mut eval = RuleEval::build(rule, NoData::Hold);

        let r = eval.observe(Ok(0.8), window, t(0));
        assert_eq!(
            r,
            RuleReport::ok("health", t(0))
                .source("probe GET http://127.0.0.1:3000/health failure_ratio")
                .pending(t(0))
                .value(0.8)
                .window(window)
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
        let r = breach.observe(absent(), None, t(0));
        assert_eq!(r.status, RuleStatus::Pending { since: t(0) });
        assert_eq!(r.no_data.as_deref(), Some("prometheus: empty result"));

        assert_eq!(
            describe(&SourceSpec::Host(HostMetric::Memory)),
            "host memory"
        );
        assert_eq!(describe(&SourceSpec::Host(HostMetric::Cpu)), "host cpu");
    }

    #[test]
    fn the_rules_no_data_overrides_the_targets() {
        let mut r = rule(0);
        r.no_data = Some(NoData::Breach);
        let mut eval = RuleEval::build(r.clone(), NoData::Hold);
        assert_eq!(eval.no_data(), NoData::Breach);
        assert_eq!(
            eval.observe(absent(), None, t(0)).status,
            RuleStatus::Breached { since: t(0) }
        );
        r.no_data = None;
        let mut eval = RuleEval::build(r, NoData::Ok);
        assert_eq!(eval.no_data(), NoData::Ok);
        assert_eq!(eval.observe(absent(), None, t(0)).status, RuleStatus::Ok);
    }

    /// Resume a fresh eval from `last`, then feed `steps`.
    fn resumed(for_secs: u64, no_data: NoData, last: RuleStatus, last_at: i64, steps: &[Step]) {
        let mut eval = RuleEval::build(rule(for_secs), no_data);
        let mut report = eval.observe(Ok(0.1), None, t(-1000));
        report.status = last.clone();
        report.at = t(last_at);
        eval.resume(&report);
        for (i, (at, sample, want)) in steps.iter().enumerate() {
            let got = eval.observe(sample.clone(), None, t(*at)).status;
            assert!(
                matches(&got, *want),
                "resume from {last:?}: step {i} at {at}s: got {got:?}, want {want:?}"
            );
        }
    }

    #[test]
    fn resume_continues_a_running_for_across_a_restart() {
        use NoData::Hold;
        let hi = || Ok(0.9);
        let few = || {
            Err(SourceError::TooLittle(
                "too few probes: 1 in window 30s < min_samples 3".into(),
            ))
        };
        // Pending since 0 (journaled at 12); restarted, first poll at 20
        // with data: the run goes on from 0, the restart does not reset it.
        resumed(
            30,
            Hold,
            RuleStatus::Pending { since: t(0) },
            12,
            &[
                (20, hi(), S::Pending(0)),
                (29, hi(), S::Pending(0)),
                (30, hi(), S::Breached(0)),
            ],
        );
        // A probe rule: blind for its first polls (min_samples), then the
        // breach continues; the blind polls (20..30) move since by their
        // length, they do not reset it.
        resumed(
            30,
            Hold,
            RuleStatus::Pending { since: t(0) },
            12,
            &[
                (20, few(), S::Unknown(20)),
                (25, few(), S::Unknown(20)),
                (30, hi(), S::Pending(10)),
                (39, hi(), S::Pending(10)),
                (40, hi(), S::Breached(10)),
            ],
        );
        // Breached survives as breached when the data still breaches.
        resumed(
            10,
            Hold,
            RuleStatus::Breached { since: t(0) },
            30,
            &[(31, hi(), S::Breached(0))],
        );
        // A good value after the restart resets, as always.
        resumed(
            10,
            Hold,
            RuleStatus::Breached { since: t(0) },
            30,
            &[(31, Ok(0.1), S::Ok), (32, hi(), S::Pending(32))],
        );
        // Unknown continues its blind period.
        resumed(
            10,
            Hold,
            RuleStatus::Unknown {
                since: t(5),
                why: "x".into(),
            },
            30,
            &[(31, few(), S::Unknown(5))],
        );
        // Under ok, no data after the restart is Ok: the run ends.
        resumed(
            30,
            NoData::Ok,
            RuleStatus::Pending { since: t(0) },
            12,
            &[(20, few(), S::Ok), (25, hi(), S::Pending(25))],
        );
        // A report of another rule is ignored.
        let mut eval = RuleEval::build(rule(30), Hold);
        let mut other = eval.clone().observe(Ok(0.9), None, t(0));
        other.rule = "memory".into();
        eval.resume(&other);
        assert_eq!(eval.condition_since(), None);
    }

    fn prom_rule(for_secs: u64) -> RuleConfig {
        RuleConfig {
            name: "errors".into(),
            source: SourceSpec::Prometheus(crate::config::PromSpec {
                query: "q".into(),
                baseline: None,
                traffic: None,
                step: None,
                server: None,
            }),
            above: 0.5,
            for_: Duration::from_secs(for_secs),
            no_data: None,
            shadow: false,
        }
    }

    fn holds(since: i64, from_start: bool) -> Outcome {
        Outcome::Holds {
            since: t(since),
            from_start,
            value: Some(0.9),
            threshold: 0.5,
            baseline: None,
            labels: BTreeMap::new(),
            by_absence: false,
        }
    }

    #[test]
    fn timeline_for_is_the_datas_not_the_polls() {
        // for = 20s: ranges of 40 s. (now, range start, outcome, want)
        let clear = || Outcome::Clear {
            value: 0.1,
            threshold: 0.5,
            baseline: None,
            labels: BTreeMap::new(),
        };
        let gone = || Outcome::NoValue {
            why: "no data at the latest point".into(),
            absent: true,
        };
        let nan = || Outcome::NoValue {
            why: "value is NaN".into(),
            absent: false,
        };
        type TStep = (i64, i64, Outcome, S);
        let cases: Vec<(&str, NoData, Vec<TStep>)> = vec![
            (
                "first poll after a start in the middle of a breach acts at once",
                NoData::Hold,
                vec![(100, 60, holds(60, true), S::Breached(60))],
            ),
            (
                "a run that started inside the range is pending until for elapsed",
                NoData::Hold,
                vec![
                    (100, 60, holds(90, false), S::Pending(90)),
                    (105, 65, holds(90, false), S::Pending(90)),
                    (110, 70, holds(90, false), S::Breached(90)),
                ],
            ),
            (
                "a run older than the range keeps its since while polls continue",
                NoData::Hold,
                vec![
                    (100, 60, holds(80, false), S::Breached(80)),
                    (140, 100, holds(100, true), S::Breached(80)),
                    (170, 130, holds(130, true), S::Breached(80)),
                ],
            ),
            (
                "a range that does not reach the previous one is a new look",
                NoData::Hold,
                vec![
                    (100, 60, holds(80, false), S::Breached(80)),
                    (500, 460, holds(460, true), S::Breached(460)),
                ],
            ),
            (
                "the latest point clear is ok and ends the run",
                NoData::Hold,
                vec![
                    (100, 60, holds(60, true), S::Breached(60)),
                    (105, 65, clear(), S::Ok),
                    (110, 70, holds(108, false), S::Pending(108)),
                ],
            ),
            (
                "no data under hold is unknown, never a breach",
                NoData::Hold,
                vec![
                    (100, 60, gone(), S::Unknown(100)),
                    (200, 160, gone(), S::Unknown(100)),
                    (205, 165, nan(), S::Unknown(100)),
                ],
            ),
            (
                "NaN under breach is unknown",
                NoData::Breach,
                vec![(100, 60, nan(), S::Unknown(100))],
            ),
            (
                "no data under ok is ok",
                NoData::Ok,
                vec![(100, 60, gone(), S::Ok)],
            ),
        ];
        for (name, no_data, steps) in cases {
            let mut eval = RuleEval::build(prom_rule(20), no_data);
            for (i, (now, start, outcome, want)) in steps.into_iter().enumerate() {
                let r = eval.observe_timeline(outcome, t(start), t(now));
                assert!(
                    matches(&r.status, want),
                    "{name}: step {i}: got {:?}, want {want:?}",
                    r.status
                );
            }
        }
    }

    #[test]
    fn resume_lets_a_range_continue_the_recovered_run() {
        let mut eval = RuleEval::build(prom_rule(20), NoData::Hold);
        let mut last = eval
            .clone()
            .observe_timeline(holds(50, false), t(40), t(60));
        last.status = RuleStatus::Pending { since: t(10) };
        eval.resume(&last);
        // Restarted at 65: the range (25..65) reaches back before the
        // recovered report (at 60) and holds all along: the same run, since 10.
        let r = eval.observe_timeline(holds(25, true), t(25), t(65));
        assert_eq!(r.status, RuleStatus::Breached { since: t(10) });
        // A range that starts after the recovered report cannot tell: its start.
        let mut eval = RuleEval::build(prom_rule(20), NoData::Hold);
        eval.resume(&last);
        let r = eval.observe_timeline(holds(70, true), t(70), t(110));
        assert_eq!(r.status, RuleStatus::Breached { since: t(70) });
        // ... and with a run known to start later than the range, the data wins.
        let mut eval = RuleEval::build(prom_rule(20), NoData::Hold);
        eval.resume(&last);
        let r = eval.observe_timeline(holds(55, false), t(25), t(65));
        assert_eq!(r.status, RuleStatus::Pending { since: t(55) });
    }
}
