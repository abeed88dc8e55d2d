//! Query rules: pick the worst series of a PromQL answer and, for
//! `above_baseline = K`, compare each series with K x its baseline.
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

use super::eval::Judgement;
use super::{RuleEval, RuleReport};
use crate::sources::prometheus::{Labels, PromSource, Series};
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

/// The series that decides the rule: the one furthest above its threshold
/// (so a breaching series wins over any that does not). With a baseline
/// `(K, medians)`, each series is compared with `max(above, K x its
/// median)`; a single baseline series serves every series, otherwise they
/// are matched by labels and a series without one cannot be judged.
/// Non-finite values are skipped; when nothing else is left the value is
/// reported as it is (the rule layer calls it no data).
pub fn worst(
    series: &[Series],
    above: f64,
    baseline: Option<(f64, &[(Labels, f64)])>,
) -> Result<Judgement, String> {
    let mut best: Option<(f64, Judgement)> = None;
    let mut finite = 0usize;
    for s in series.iter().filter(|s| s.value.is_finite()) {
        finite += 1;
        let Some((threshold, base)) = threshold_for(&s.labels, above, baseline) else {
            continue;
        };
        let margin = s.value - threshold;
        if best.as_ref().is_none_or(|(m, _)| margin > *m) {
            best = Some((
                margin,
                Judgement {
                    value: s.value,
                    threshold,
                    baseline: base,
                    labels: s.labels.clone(),
                },
            ));
        }
    }
    if let Some((_, j)) = best {
        return Ok(j);
    }
    match (finite, series.first()) {
        (0, Some(s)) => Ok(Judgement {
            value: s.value,
            threshold: above,
            baseline: None,
            labels: s.labels.clone(),
        }),
        (0, None) => Err("empty result: no series".into()),
        (n, _) => Err(format!(
            "baseline: none of the {n} series has a baseline series with the same labels"
        )),
    }
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

    fn s(code: &str, value: f64) -> Series {
        Series {
            labels: labels(&[("code", code)]),
            value,
        }
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
    fn the_worst_series_is_named() {
        let series = [s("500", 0.02), s("502", 0.2), s("503", f64::NAN)];
        let j = worst(&series, 0.05, None).unwrap();
        assert_eq!((j.value, j.threshold), (0.2, 0.05));
        assert_eq!(j.labels, labels(&[("code", "502")]));

        // Nothing finite: the value is reported as it is (NaN -> no data).
        let j = worst(&[s("500", f64::NAN)], 0.05, None).unwrap();
        assert!(j.value.is_nan());
        assert!(worst(&[], 0.05, None).is_err());
    }

    #[test]
    fn baselines_per_series_and_both_conditions() {
        // Series a: 0.5 against 3 x 0.1 = 0.3 breaches; b: 0.5 against
        // 3 x 0.2 = 0.6 does not. a is the worst.
        let medians = vec![
            (labels(&[("code", "a")]), 0.1),
            (labels(&[("code", "b")]), 0.2),
        ];
        let series = [s("b", 0.5), s("a", 0.5), s("c", 9.0)];
        let j = worst(&series, f64::NEG_INFINITY, Some((3.0, &medians))).unwrap();
        assert_eq!(j.labels, labels(&[("code", "a")]));
        assert_eq!(j.baseline, Some(0.1));
        assert!((j.threshold - 0.3).abs() < 1e-12);

        // `above` as a floor: 3 x 2 ms is below 1 s, so 10 ms does not page.
        let one = vec![(Labels::new(), 0.002)];
        let j = worst(&[s("x", 0.010)], 1.0, Some((3.0, &one))).unwrap();
        assert_eq!(j.threshold, 1.0);
        assert!(j.value <= j.threshold);

        // No baseline series with the same labels: cannot judge.
        let e = worst(&[s("c", 1.0)], f64::NEG_INFINITY, Some((3.0, &medians))).unwrap_err();
        assert!(e.contains("none of the 1 series has a baseline"), "{e}");
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
