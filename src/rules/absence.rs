//! `no_data = "breach"`: when an absent series is evidence.
//!
//! Under `breach` a point at which the query answers nothing counts as the
//! condition holding — a crashed release's exporter disappears with it and
//! Prometheus marks its series stale. An empty answer is evidence only
//! where the series was *expected*, so absence must hold for the whole
//! `for` on such points:
//!
//! - not at a point an earlier answer had data at
//!   ([`crate::rules::timeline::Grid::after`]): one empty answer after 8 s of
//!   healthy ones is absent for one step, not "since 20 s ago";
//! - not while Prometheus itself holds too little data to tell: a server
//!   that has just started, restarted without its TSDB or not scraped yet
//!   answers "nothing" about everything. It is **blind**, and the rule is
//!   Unknown. Its own `up` series say so ([`SCRAPING_QUERY`]): there is an
//!   `up` sample for every target it scrapes, a failed scrape included, so
//!   `count(up)` has a value wherever the server was collecting data. A
//!   rule's absence counts only when `count(up)` has a value on every step
//!   of the last `for + lookback` (the rule's range plus one `for`, so the
//!   app's first scrape after a Prometheus start has had a `for` to land).
//!
//! The check costs one range query, sent only when an evaluation's
//! outcome relies on absence (a run that holds because points are missing);
//! a healthy rule never sends it.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::timeline::{Grid, Outcome};
use crate::sources::prometheus::{PromSource, SCRAPING_QUERY};
use crate::util::fmt_duration;

/// Why the rule's Prometheus cannot vouch for an absence at the evaluation
/// ending `grid`, or `None` when it can: it was scraping on every step of
/// the last `for_ + grid.lookback()`.
pub async fn blind(p: &PromSource, grid: &Grid, for_: Duration) -> Option<String> {
    let what = p
        .prometheus()
        .map(|c| c.describe().to_string())
        .unwrap_or_else(|| "prometheus".into());
    let span = for_ + grid.lookback();
    let cover = Grid::over(grid.end(), span, grid.step);
    let points = match p.scraping(cover.start, cover.end(), cover.step).await {
        Ok(points) => points,
        Err(e) => {
            return Some(format!(
                "cannot tell whether {what} was scraping ({SCRAPING_QUERY}): {e}; \
                 absence is not evidence"
            ))
        }
    };
    blind_on(&what, &cover, span, &points)
}

/// [`blind`] on the answer of [`SCRAPING_QUERY`] (`points`) over `cover`.
fn blind_on(what: &str, cover: &Grid, span: Duration, points: &[DateTime<Utc>]) -> Option<String> {
    let mut present = vec![false; cover.n as usize + 1];
    for t in points {
        if let Some(k) = cover.index(*t) {
            present[k as usize] = true;
        }
    }
    let last_missing = present.iter().rposition(|p| !p)?;
    let at = |t: DateTime<Utc>| t.format("%H:%M:%S%.3fZ").to_string();
    let why = if !present.contains(&true) {
        format!(
            "{what} is blind: no {SCRAPING_QUERY} in the last {} (it has just started, \
             restarted without its data, or not scraped yet)",
            fmt_duration(span)
        )
    } else if last_missing == cover.n as usize {
        let ended = present.iter().rposition(|p| *p).unwrap_or(0);
        format!(
            "{what} is blind: its {SCRAPING_QUERY} ended at {} (it scrapes nothing)",
            at(cover.at(ended as u64))
        )
    } else {
        format!(
            "{what} is blind: it holds data ({SCRAPING_QUERY}) only since {}, less than \
             for + lookback ({}) ago",
            at(cover.at(last_missing as u64 + 1)),
            fmt_duration(span)
        )
    };
    Some(format!("{why}; absence is not evidence"))
}

/// `outcome` judged without counting absence (`judge(.., None)`), for a
/// blind Prometheus: a missing latest point is no value that is not
/// evidence (Unknown under `breach`), with the reason.
pub fn without_absence(outcome: Outcome, blind: &str) -> Outcome {
    match outcome {
        Outcome::NoValue { why, .. } => Outcome::NoValue {
            why: format!("{why}; {blind}"),
            absent: false,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn t(ms: i64) -> DateTime<Utc> {
        "2026-01-01T12:00:00Z".parse::<DateTime<Utc>>().unwrap() + TimeDelta::milliseconds(ms)
    }

    #[test]
    fn blind_unless_scraping_on_every_step() {
        // 10 points, 1 s apart, ending at t(9s).
        let cover = Grid::over(t(9_000), Duration::from_secs(9), Duration::from_secs(1));
        assert_eq!((cover.start, cover.n), (t(0), 9));
        let span = Duration::from_secs(9);
        let pts = |from: i64, to: i64| (from..=to).map(|s| t(s * 1000)).collect::<Vec<_>>();
        assert_eq!(blind_on("p", &cover, span, &pts(0, 9)), None);
        let none = blind_on("p", &cover, span, &[]).unwrap();
        assert!(
            none.starts_with("p is blind: no count(up) in the last 9s"),
            "{none}"
        );
        let young = blind_on("p", &cover, span, &pts(4, 9)).unwrap();
        assert!(
            young.starts_with("p is blind: it holds data (count(up)) only since 12:00:04.000Z"),
            "{young}"
        );
        assert!(young.ends_with("; absence is not evidence"), "{young}");
        // A hole in the middle (Prometheus down longer than its lookback).
        let mut holed = pts(0, 3);
        holed.extend(pts(6, 9));
        let hole = blind_on("p", &cover, span, &holed).unwrap();
        assert!(hole.contains("only since 12:00:06.000Z"), "{hole}");
        let ended = blind_on("p", &cover, span, &pts(0, 6)).unwrap();
        assert!(ended.contains("ended at 12:00:06.000Z"), "{ended}");
    }

    #[test]
    fn a_blind_outcome_is_never_absent() {
        let o = without_absence(
            Outcome::NoValue {
                why: "empty result".into(),
                absent: true,
            },
            "p is blind",
        );
        assert_eq!(
            o,
            Outcome::NoValue {
                why: "empty result; p is blind".into(),
                absent: false
            }
        );
    }
}
