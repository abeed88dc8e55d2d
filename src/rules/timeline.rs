//! `for` judged on the data's own timeline (Prometheus rules).
//!
//! Instead of counting rollbackd's own polls, each evaluation runs one range
//! query over the last `lookback` (see [`Grid::plan`]) at the rule's `step`
//! and reads the answer the way Prometheus reads its alerting rules:
//!
//! - the condition holds on the latest point and on every point before it
//!   back to `since` (the first point of the current unbroken run): the
//!   rule is Breached when `latest - since >= for`, else Pending;
//! - the latest point does not hold: Ok;
//! - a missing point (a gap) does not hold, so the run restarts after it,
//!   unless `no_data = "breach"`, where a point at which the whole answer
//!   is missing holds if the series was *expected* there (a crashed
//!   release's series vanish; one series ending while others go on is
//!   churn and does not hold). Which points are expected is the caller's
//!   to say ([`Grid::after`], [`crate::rules::absence`]): not a point an
//!   earlier answer had data at, and none while Prometheus itself holds
//!   too little data to tell;
//! - no series has a value at the latest point: no data, and the rule's
//!   `no_data` policy decides.
//!
//! The lookback is `2 x for` (at least `for + 2 x step`), so a daemon that
//! starts in the middle of a breach sees a run of at least `for` at once and
//! acts when the data says `for` has elapsed; the run's `since` is then at
//! most the lookback in the past (while polls continue, it is carried over
//! from the previous evaluation, see [`crate::rules::RuleEval`]).
//!
//! With several series the rule holds when any does; the series with the
//! longest run (then the largest margin) is the one reported.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::sources::prometheus::{Labels, RangeSeries};

/// Most points per series of one range query (Prometheus refuses more than
/// 11,000); a longer `for` gets a coarser step.
pub const MAX_POINTS: u64 = 10_000;

/// The points a range query is evaluated at: `start + k x step` for
/// `k = 0..=n`; the last one is the evaluation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    /// The first point.
    pub start: DateTime<Utc>,
    /// Between points, at least 1 ms.
    pub step: Duration,
    /// Index of the last point (there are `n + 1`).
    pub n: u64,
}

impl Grid {
    /// The grid for judging `for` at `end`: a lookback of `max(2 x for,
    /// for + 2 x step)` at `step`, coarsened to at most [`MAX_POINTS`].
    pub fn plan(end: DateTime<Utc>, for_: Duration, step: Duration) -> Grid {
        let step_ms = (step.as_millis() as u64).max(1);
        let for_ms = for_.as_millis() as u64;
        let lookback = (for_ms.saturating_mul(2)).max(for_ms.saturating_add(2 * step_ms));
        Grid::over(end, Duration::from_millis(lookback), step)
    }

    /// The grid ending at `end` that reaches back at least `span` at
    /// `step`, coarsened to at most [`MAX_POINTS`].
    pub fn over(end: DateTime<Utc>, span: Duration, step: Duration) -> Grid {
        let step_ms = (step.as_millis() as u64).max(1);
        let lookback = span.as_millis().min(u64::MAX as u128) as u64;
        let (step_ms, n) = if lookback.div_ceil(step_ms) > MAX_POINTS {
            let s = lookback.div_ceil(MAX_POINTS);
            (s, lookback.div_ceil(s))
        } else {
            (step_ms, lookback.div_ceil(step_ms))
        };
        let span = TimeDelta::milliseconds((step_ms * n).min(i64::MAX as u64) as i64);
        Grid {
            start: end.checked_sub_signed(span).unwrap_or(end),
            step: Duration::from_millis(step_ms),
            n,
        }
    }

    /// The last point: the evaluation time.
    pub fn end(&self) -> DateTime<Utc> {
        self.at(self.n)
    }

    /// The time of point `k`.
    pub fn at(&self, k: u64) -> DateTime<Utc> {
        let ms = (self.step.as_millis() as u64).saturating_mul(k);
        self.start + TimeDelta::milliseconds(ms.min(i64::MAX as u64) as i64)
    }

    /// The point a timestamp belongs to (nearest, within half a step).
    pub fn index(&self, t: DateTime<Utc>) -> Option<u64> {
        let step = self.step.as_millis() as i64;
        let off = (t - self.start).num_milliseconds();
        if off < -step / 2 {
            return None;
        }
        let k = (off + step / 2).div_euclid(step) as u64;
        (k <= self.n).then_some(k)
    }

    /// `end - start`.
    pub fn lookback(&self) -> Duration {
        self.step * (self.n as u32)
    }

    /// For each point, whether it lies after `seen`: the latest time an
    /// earlier answer had data at. A point an earlier poll saw data at is
    /// not absent, whatever a later answer says (a Prometheus restarted
    /// without its data, or another replica behind a balancer, answers
    /// "nothing" for a past it once showed).
    pub fn after(&self, seen: Option<DateTime<Utc>>) -> Vec<bool> {
        (0..=self.n)
            .map(|k| seen.is_none_or(|t| self.at(k) > t))
            .collect()
    }
}

/// One series with the threshold it is compared with.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged<'a> {
    /// The series.
    pub series: &'a RangeSeries,
    /// `above`, or `max(above, K x baseline)`.
    pub threshold: f64,
    /// The baseline, for baseline rules.
    pub baseline: Option<f64>,
}

/// What the range says at its latest point.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The condition holds at the latest point, since `since`.
    Holds {
        /// First point of the unbroken run ending at the latest point.
        since: DateTime<Utc>,
        /// The run reaches back to the first point of the range: it may be
        /// older than `since`.
        from_start: bool,
        /// The latest value (`None` when missing and counted as holding).
        value: Option<f64>,
        /// What it was compared with.
        threshold: f64,
        /// The baseline, for baseline rules.
        baseline: Option<f64>,
        /// The series.
        labels: Labels,
        /// The run counts at least one point as holding because the whole
        /// answer was absent there (`no_data = "breach"`): only as good as
        /// the evidence that the series was expected there.
        by_absence: bool,
    },
    /// The latest point has a value and the condition does not hold.
    Clear {
        /// The value of the series nearest to its threshold.
        value: f64,
        /// Its threshold.
        threshold: f64,
        /// The baseline, for baseline rules.
        baseline: Option<f64>,
        /// The series.
        labels: Labels,
    },
    /// No usable value at the latest point.
    NoValue {
        /// Why.
        why: String,
        /// The series is absent (as opposed to NaN or infinite).
        absent: bool,
    },
}

/// Judge the range: does the condition hold at the latest point, and since
/// when without a break? `absence` is `no_data = "breach"`: for each point,
/// whether a point at which the whole answer is missing counts as holding
/// (see [`Grid::after`]); `None` under `hold` and `ok`.
pub fn judge(series: &[Judged<'_>], grid: &Grid, absence: Option<&[bool]>) -> Outcome {
    let n = grid.n;
    let expected = |k: usize| absence.is_some_and(|a| a.get(k).copied().unwrap_or(false));
    if series.is_empty() {
        return judge_empty(grid, absence);
    }
    // (run start index, margin, value, judged, by absence) of the best
    // holding series.
    let mut best_hold: Option<(u64, f64, Option<f64>, &Judged, bool)> = None;
    let mut best_clear: Option<(f64, f64, &Judged)> = None;
    let mut non_finite: Option<f64> = None;
    let mut last_seen: Option<DateTime<Utc>> = None;
    let gridded: Vec<Vec<Option<f64>>> = series
        .iter()
        .map(|j| {
            let mut values = vec![None; n as usize + 1];
            for (t, v) in &j.series.points {
                if let Some(k) = grid.index(*t) {
                    values[k as usize] = Some(*v);
                }
                last_seen = last_seen.max(Some(*t));
            }
            values
        })
        .collect();
    // Under `breach`, a point is missing when the whole answer is: one
    // series ending while others go on (an old pod's series after a
    // rollout) is churn, not the service gone.
    let answered: Vec<bool> = (0..=n as usize)
        .map(|k| gridded.iter().any(|v| v[k].is_some()))
        .collect();
    for (j, values) in series.iter().zip(&gridded) {
        let holds = |k: usize| match values[k] {
            Some(v) => v.is_finite() && v > j.threshold,
            None => expected(k) && !answered[k],
        };
        let latest = values[n as usize];
        if holds(n as usize) {
            let mut k = n as usize;
            while k > 0 && holds(k - 1) {
                k -= 1;
            }
            let by_absence = values[k..=n as usize].iter().any(Option::is_none);
            let margin = latest.map_or(f64::INFINITY, |v| v - j.threshold);
            let better = best_hold.as_ref().is_none_or(|(bk, bm, _, _, _)| {
                (k as u64) < *bk || (k as u64 == *bk && margin > *bm)
            });
            if better {
                best_hold = Some((k as u64, margin, latest, j, by_absence));
            }
        } else {
            match latest {
                Some(v) if v.is_finite() => {
                    let margin = v - j.threshold;
                    if best_clear.as_ref().is_none_or(|(m, _, _)| margin > *m) {
                        best_clear = Some((margin, v, j));
                    }
                }
                Some(v) => non_finite = Some(v),
                None => {}
            }
        }
    }
    if let Some((k, _, value, j, by_absence)) = best_hold {
        return Outcome::Holds {
            since: grid.at(k),
            from_start: k == 0,
            value,
            threshold: j.threshold,
            baseline: j.baseline,
            labels: j.series.labels.clone(),
            by_absence,
        };
    }
    if let Some((_, value, j)) = best_clear {
        return Outcome::Clear {
            value,
            threshold: j.threshold,
            baseline: j.baseline,
            labels: j.series.labels.clone(),
        };
    }
    if let Some(v) = non_finite {
        return Outcome::NoValue {
            why: format!("value is {}", crate::util::non_finite_name(v)),
            absent: false,
        };
    }
    no_latest_point(last_seen, absence)
}

/// An answer without any series: holding by absence when the latest
/// point (and those before it) were expected under `breach`, else no value.
fn judge_empty(grid: &Grid, absence: Option<&[bool]>) -> Outcome {
    let n = grid.n;
    let expected = |k: usize| absence.is_some_and(|a| a.get(k).copied().unwrap_or(false));
    if expected(n as usize) {
        let mut k = n as usize;
        while k > 0 && expected(k - 1) {
            k -= 1;
        }
        return Outcome::Holds {
            since: grid.at(k as u64),
            from_start: k == 0,
            value: None,
            threshold: f64::NAN,
            baseline: None,
            labels: Labels::new(),
            by_absence: true,
        };
    }
    let why = format!(
        "empty result: no series in the last {}",
        crate::util::fmt_duration(grid.lookback())
    );
    match absence {
        None => Outcome::NoValue { why, absent: true },
        Some(_) => Outcome::NoValue {
            why: format!("{why}, though an earlier answer had data at the latest point"),
            absent: false,
        },
    }
}

/// No series has a value at the latest point: why, with when the data
/// ended (`last_seen`); absent, unless an earlier answer had data there.
fn no_latest_point(last_seen: Option<DateTime<Utc>>, absence: Option<&[bool]>) -> Outcome {
    let why = match last_seen {
        Some(t) => format!(
            "no data at the latest point: the series ended at {}",
            t.format("%H:%M:%S%.3fZ")
        ),
        None => "no data at the latest point".into(),
    };
    match absence {
        None => Outcome::NoValue { why, absent: true },
        // Under `breach` the latest point is missing but not expected: an
        // earlier answer had data there.
        Some(_) => Outcome::NoValue {
            why: format!("{why}, though an earlier answer had data there"),
            absent: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> DateTime<Utc> {
        "2026-01-01T12:00:00Z".parse::<DateTime<Utc>>().unwrap() + TimeDelta::milliseconds(ms)
    }

    fn labels(code: &str) -> Labels {
        [("code".to_string(), code.to_string())].into()
    }

    /// A series on a 1 s grid from t(0): `None` is a missing point.
    fn series(code: &str, values: &[Option<f64>]) -> RangeSeries {
        RangeSeries {
            labels: labels(code),
            points: values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (t(i as i64 * 1000), v)))
                .collect(),
        }
    }

    fn grid(points: u64) -> Grid {
        Grid {
            start: t(0),
            step: Duration::from_secs(1),
            n: points - 1,
        }
    }

    const H: Option<f64> = Some(0.9);
    const L: Option<f64> = Some(0.1);
    const NAN: Option<f64> = Some(f64::NAN);
    const GAP: Option<f64> = None;

    #[test]
    fn plan_covers_twice_for_and_bounds_the_points() {
        let end = t(60_000);
        let g = Grid::plan(end, Duration::from_secs(20), Duration::from_secs(1));
        assert_eq!(
            (g.start, g.step, g.n, g.end()),
            (t(20_000), Duration::from_secs(1), 40, end)
        );
        // for = 0: two steps back.
        let g = Grid::plan(end, Duration::ZERO, Duration::from_millis(100));
        assert_eq!((g.n, g.start), (2, t(59_800)));
        // Short for, long step: for + 2 steps.
        let g = Grid::plan(end, Duration::from_secs(5), Duration::from_secs(5));
        assert_eq!((g.n, g.start), (3, t(45_000)));
        // A day at 100 ms would be 1.7M points: coarsened to MAX_POINTS.
        let g = Grid::plan(end, Duration::from_secs(86_400), Duration::from_millis(100));
        assert!(g.n <= MAX_POINTS, "{g:?}");
        assert!(g.lookback() >= Duration::from_secs(2 * 86_400), "{g:?}");
        assert_eq!(g.end(), end);
    }

    #[test]
    fn grid_index_rounds_to_the_nearest_point() {
        let g = grid(5);
        for (ms, want) in [
            (0, Some(0)),
            (499, Some(0)),
            (500, Some(1)),
            (1_001, Some(1)),
            (4_000, Some(4)),
            (4_400, Some(4)),
            (4_600, None),
            (-600, None),
        ] {
            assert_eq!(g.index(t(ms)), want, "{ms}");
        }
    }

    /// (case, series, missing_holds, expected outcome as (kind, since s, from_start, code)).
    #[test]
    fn judge_table() {
        type Want = (&'static str, i64, bool, &'static str);
        let cases: Vec<(&str, Vec<RangeSeries>, bool, Want)> = vec![
            (
                "held on every point",
                vec![series("500", &[H, H, H, H, H])],
                false,
                ("holds", 0, true, "500"),
            ),
            (
                "run started inside the range",
                vec![series("500", &[L, L, H, H, H])],
                false,
                ("holds", 2, false, "500"),
            ),
            (
                "latest does not hold",
                vec![series("500", &[H, H, H, H, L])],
                false,
                ("clear", 0, false, "500"),
            ),
            (
                "a gap restarts the run",
                vec![series("500", &[H, H, GAP, H, H])],
                false,
                ("holds", 3, false, "500"),
            ),
            (
                "under breach a gap holds",
                vec![series("500", &[H, H, GAP, H, H])],
                true,
                ("holds", 0, true, "500"),
            ),
            (
                "NaN breaks the run even under breach",
                vec![series("500", &[H, NAN, H, H, H])],
                true,
                ("holds", 2, false, "500"),
            ),
            (
                "vanished series: no value",
                vec![series("500", &[L, L, L, GAP, GAP])],
                false,
                ("absent", 0, false, ""),
            ),
            (
                "vanished series under breach holds since it vanished",
                vec![series("500", &[L, L, L, GAP, GAP])],
                true,
                ("holds", 3, false, "500"),
            ),
            (
                "NaN at the latest point",
                vec![series("500", &[L, L, L, L, NAN])],
                false,
                ("nan", 0, false, ""),
            ),
            ("empty result", vec![], false, ("absent", 0, false, "")),
            (
                "empty result under breach",
                vec![],
                true,
                ("holds", 0, true, ""),
            ),
            (
                "the longest run wins",
                vec![
                    series("500", &[L, L, H, H, H]),
                    series("502", &[L, H, H, H, H]),
                    series("503", &[L, L, L, H, H]),
                ],
                false,
                ("holds", 1, false, "502"),
            ),
            (
                "any holding series beats a clear one",
                vec![
                    series("500", &[H, H, H, H, L]),
                    series("502", &[L, L, L, L, H]),
                ],
                false,
                ("holds", 4, false, "502"),
            ),
            (
                "clear reports the series nearest its threshold",
                vec![
                    series("500", &[L, L, L, L, Some(0.2)]),
                    series("502", &[L, L, L, L, Some(0.4)]),
                ],
                false,
                ("clear", 0, false, "502"),
            ),
            (
                "under breach one series ending while another goes on is churn",
                vec![
                    series("500", &[L, L, L, GAP, GAP]),
                    series("502", &[L, L, L, L, L]),
                ],
                true,
                ("clear", 0, false, "502"),
            ),
            (
                "under breach a gap in one series while another answers breaks its run",
                vec![
                    series("500", &[H, H, GAP, H, H]),
                    series("502", &[L, L, L, L, L]),
                ],
                true,
                ("holds", 3, false, "500"),
            ),
            (
                "under breach everything gone holds since the answer ended",
                vec![
                    series("500", &[L, L, GAP, GAP, GAP]),
                    series("502", &[L, L, L, GAP, GAP]),
                ],
                true,
                ("holds", 3, false, "500"),
            ),
            (
                "a series ending early does not hide another's value",
                vec![
                    series("500", &[H, H, H, GAP, GAP]),
                    series("502", &[L, L, L, L, L]),
                ],
                false,
                ("clear", 0, false, "502"),
            ),
        ];
        for (name, all, missing_holds, (kind, since, from_start, code)) in cases {
            let judged: Vec<Judged> = all
                .iter()
                .map(|s| Judged {
                    series: s,
                    threshold: 0.5,
                    baseline: None,
                })
                .collect();
            let everywhere = [true; 5];
            let got = judge(&judged, &grid(5), missing_holds.then_some(&everywhere[..]));
            let ok = match (&got, kind) {
                (
                    Outcome::Holds {
                        since: s,
                        from_start: f,
                        labels: l,
                        ..
                    },
                    "holds",
                ) => {
                    *s == t(since * 1000)
                        && *f == from_start
                        && (code.is_empty() || *l == labels(code))
                }
                (Outcome::Clear { labels: l, .. }, "clear") => *l == labels(code),
                (Outcome::NoValue { absent: true, .. }, "absent") => true,
                (Outcome::NoValue { absent: false, why }, "nan") => why == "value is NaN",
                _ => false,
            };
            assert!(ok, "{name}: got {got:?}");
        }
    }

    #[test]
    fn per_series_thresholds_are_used() {
        // Baselines: 500 against 0.95 does not hold, 502 against 0.3 does.
        let a = series("500", &[H, H, H]);
        let b = series("502", &[Some(0.4), Some(0.4), Some(0.4)]);
        let judged = [
            Judged {
                series: &a,
                threshold: 0.95,
                baseline: Some(0.3),
            },
            Judged {
                series: &b,
                threshold: 0.3,
                baseline: Some(0.1),
            },
        ];
        match judge(&judged, &grid(3), None) {
            Outcome::Holds {
                labels: l,
                threshold,
                baseline,
                value,
                ..
            } => {
                assert_eq!(
                    (l, threshold, baseline, value),
                    (labels("502"), 0.3, Some(0.1), Some(0.4))
                )
            }
            other => panic!("{other:?}"),
        }
        let why = match judge(
            &[Judged {
                series: &series("500", &[L, GAP, GAP]),
                threshold: 0.5,
                baseline: None,
            }],
            &grid(3),
            None,
        ) {
            Outcome::NoValue { why, .. } => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            why,
            "no data at the latest point: the series ended at 12:00:00.000Z"
        );
    }

    /// Under `breach`, absence holds only where the series was expected:
    /// not at points an earlier answer had data at.
    #[test]
    fn absence_holds_only_where_the_series_was_expected() {
        let g = grid(5);
        // An earlier poll saw data up to t(2): an empty answer now is
        // absent since t(3) only, not since the range's start.
        let mask = g.after(Some(t(2_000)));
        assert_eq!(mask, [false, false, false, true, true]);
        match judge(&[], &g, Some(&mask)) {
            Outcome::Holds {
                since,
                from_start,
                by_absence,
                ..
            } => assert_eq!((since, from_start, by_absence), (t(3_000), false, true)),
            other => panic!("{other:?}"),
        }
        // The earlier poll saw data at the latest point itself: not evidence.
        let seen_all = g.after(Some(t(4_000)));
        match judge(&[], &g, Some(&seen_all)) {
            Outcome::NoValue { absent, why } => {
                assert!(!absent, "{why}");
                assert!(why.contains("an earlier answer had data"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        // A vanished series: absent since it vanished, or since the data
        // an earlier poll saw, whichever is later.
        let s = series("500", &[L, GAP, GAP, GAP, GAP]);
        let judged = [Judged {
            series: &s,
            threshold: 0.5,
            baseline: None,
        }];
        let since = |mask: &[bool]| match judge(&judged, &g, Some(mask)) {
            Outcome::Holds {
                since, by_absence, ..
            } => {
                assert!(by_absence);
                since
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(since(&g.after(None)), t(1_000));
        assert_eq!(since(&g.after(Some(t(2_500)))), t(3_000));
        // A run of real values does not rely on absence.
        let h = series("500", &[L, H, H, H, H]);
        match judge(
            &[Judged {
                series: &h,
                threshold: 0.5,
                baseline: None,
            }],
            &g,
            Some(&g.after(None)),
        ) {
            Outcome::Holds { by_absence, .. } => assert!(!by_absence),
            other => panic!("{other:?}"),
        }
        // No seen data and no policy: the whole range.
        assert_eq!(g.after(None), [true; 5]);
    }
}
