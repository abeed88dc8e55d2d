//! Baselines of query rules: for `above_baseline = K`, each series is
//! compared with `max(above, K x its baseline)`.
//!
//! The baseline is the median of the rule's query (or `baseline_query`)
//! over `baseline_window`, ending when the live version was deployed (when
//! rollbackd saw it change) or else where the rule's current `for` period
//! began — so the anomaly being judged is never part of its own baseline.
//! It is fetched with one range query per window end and cached (see
//! [`PromSource::baseline`]); while the rule is Ok and no deploy time is
//! known the end advances in steps of the range query's step, not every poll.
//! No baseline data means Unknown, never a breach.
//!
//! A baseline rule's `for` is judged on the data's timeline like any
//! Prometheus rule ([`crate::rules::timeline`]), each series against its
//! own `max(above, K x baseline)` ([`threshold_for`]).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{RuleEval, RuleReport};
use crate::sources::prometheus::{Labels, PromSource};
use crate::sources::Source;
use crate::util::fmt_duration;

/// The same as [`crate::rules::evaluate`] (kept for callers of the old path).
pub async fn evaluate(
    source: &mut Source,
    eval: &mut RuleEval,
    deployed_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> RuleReport {
    super::evaluate(source, eval, deployed_at, now).await
}

/// `K` and the baseline median of each series, when the rule has a
/// baseline; `Ok(None)` when it has none. `Err` is why there is no
/// baseline (the rule goes Unknown).
pub async fn medians(
    p: &mut PromSource,
    eval: &RuleEval,
    deployed_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Option<(f64, Vec<(Labels, f64)>)>, String> {
    let Some(spec) = p.spec().baseline.clone() else {
        return Ok(None);
    };
    let end = window_end(
        deployed_at,
        eval.condition_since(),
        now,
        p.step_for(spec.window),
    );
    let base = p
        .baseline(end)
        .await
        .map_err(|e| format!("baseline: {e}"))?;
    let medians: Vec<(Labels, f64)> = base
        .into_iter()
        .filter_map(|s| median(&s.values()).map(|m| (s.labels, m)))
        .collect();
    if medians.is_empty() {
        return Err(format!(
            "baseline: no data in the {} before {}",
            fmt_duration(spec.window),
            end.format("%Y-%m-%d %H:%M:%SZ")
        ));
    }
    Ok(Some((spec.factor, medians)))
}

/// The threshold a series with `labels` is compared with, and its
/// baseline: `above`, or `max(above, K x its median)`. A single baseline
/// series serves every series; otherwise they are matched by labels and a
/// series without one cannot be judged (`None`).
pub fn threshold_for(
    labels: &Labels,
    above: f64,
    baseline: Option<(f64, &[(Labels, f64)])>,
) -> Option<(f64, Option<f64>)> {
    let Some((k, medians)) = baseline else {
        return Some((above, None));
    };
    let b = if medians.len() == 1 {
        Some(medians[0].1)
    } else {
        medians.iter().find(|(l, _)| l == labels).map(|m| m.1)
    }?;
    Some((above.max(k * b), Some(b)))
}

/// Where the baseline window ends: the deploy time when known, else the
/// start of the current `for` period, else now rounded down to `step` (so
/// the cache holds for a step). Whole seconds: the range API takes seconds.
pub fn window_end(
    deployed_at: Option<DateTime<Utc>>,
    cond_since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    step: Duration,
) -> DateTime<Utc> {
    let secs = |t: DateTime<Utc>| t.timestamp();
    let end = match (deployed_at, cond_since) {
        (Some(d), _) if d <= now => secs(d),
        (_, Some(c)) => secs(c),
        _ => {
            let step = step.as_secs().max(1) as i64;
            secs(now).div_euclid(step) * step
        }
    };
    DateTime::from_timestamp(end, 0).unwrap_or(now)
}

/// Median of the finite values; the mean of the two middle ones for an
/// even count; `None` without any.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn median_table() {
        for (values, want) in [
            (&[][..], None),
            (&[f64::NAN][..], None),
            (&[3.0][..], Some(3.0)),
            (&[5.0, 1.0, 3.0][..], Some(3.0)),
            (&[1.0, 4.0, 2.0, 100.0][..], Some(3.0)),
            (&[1.0, f64::INFINITY, 2.0, f64::NAN, 3.0][..], Some(2.0)),
        ] {
            assert_eq!(median(values), want, "{values:?}");
        }
    }

    #[test]
    fn thresholds_per_series_and_both_conditions() {
        let medians = vec![
            (labels(&[("code", "a")]), 0.1),
            (labels(&[("code", "b")]), 0.2),
        ];
        let base = Some((3.0, medians.as_slice()));
        let ninf = f64::NEG_INFINITY;
        let (thr, b) = threshold_for(&labels(&[("code", "a")]), ninf, base).unwrap();
        assert!((thr - 0.3).abs() < 1e-12);
        assert_eq!(b, Some(0.1));
        let (thr, _) = threshold_for(&labels(&[("code", "b")]), ninf, base).unwrap();
        assert!((thr - 0.6).abs() < 1e-12);
        // No baseline series with the same labels: cannot judge.
        assert_eq!(threshold_for(&labels(&[("code", "c")]), ninf, base), None);
        // A single baseline series serves every series.
        let one = vec![(Labels::new(), 0.002)];
        let one = Some((3.0, one.as_slice()));
        let (thr, b) = threshold_for(&labels(&[("code", "x")]), ninf, one).unwrap();
        assert!((thr - 0.006).abs() < 1e-12);
        assert_eq!(b, Some(0.002));
        // `above` as a floor: 3 x 2 ms is below 1 s.
        assert_eq!(
            threshold_for(&Labels::new(), 1.0, one),
            Some((1.0, Some(0.002)))
        );
        // No baseline: `above`.
        assert_eq!(
            threshold_for(&Labels::new(), 0.05, None),
            Some((0.05, None))
        );
    }

    #[test]
    fn window_end_prefers_deploy_then_for_start_then_a_stable_step() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let now = t("2026-01-01T12:00:37.5Z");
        let step = Duration::from_secs(60);
        let deploy = Some(t("2026-01-01T11:00:00.7Z"));
        let since = Some(t("2026-01-01T11:59:10Z"));
        assert_eq!(
            window_end(deploy, since, now, step),
            t("2026-01-01T11:00:00Z")
        );
        assert_eq!(
            window_end(None, since, now, step),
            t("2026-01-01T11:59:10Z")
        );
        assert_eq!(window_end(None, None, now, step), t("2026-01-01T12:00:00Z"));
        // Polls within the same step share the window (and the cache).
        let later = t("2026-01-01T12:00:59Z");
        assert_eq!(
            window_end(None, None, later, step),
            window_end(None, None, now, step)
        );
    }
}
