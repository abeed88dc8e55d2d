//! Unit tests of the worker's scheduling arithmetic (the decisions are
//! `decide`'s and tested there; the daemon end to end is tested in
//! process by `tests/decisions.rs`).

use std::time::Duration;

use chrono::TimeZone;

use super::worker::{due_before, poll_offset, verify_timeout, Schedule};
use crate::rules::{RuleReport, RuleStatus};

fn report(status: RuleStatus, for_: Duration, at: crate::decide::Time) -> RuleReport {
    RuleReport::ok("health", at)
        .source("probe")
        .status(status)
        .value(1.0)
        .for_(for_)
}

#[test]
fn poll_offsets_are_stable_inside_the_interval_and_spread() {
    let interval = Duration::from_secs(5);
    assert_eq!(poll_offset("web", interval), poll_offset("web", interval));
    let offsets: Vec<Duration> = (0..100)
        .map(|i| poll_offset(&format!("svc-{i:03}"), interval))
        .collect();
    assert!(offsets.iter().all(|o| *o < interval));
    // A hundred names over five one-second buckets: none is empty, none
    // holds more than half.
    let mut buckets = [0; 5];
    for o in &offsets {
        buckets[o.as_secs() as usize] += 1;
    }
    assert!(buckets.iter().all(|n| *n > 0 && *n < 50), "{buckets:?}");
    assert_eq!(poll_offset("x", Duration::ZERO), Duration::ZERO);
}

#[test]
fn verify_timeout_is_the_interval_within_one_to_ten_seconds() {
    assert_eq!(
        verify_timeout(Duration::from_millis(200)),
        Duration::from_secs(1)
    );
    assert_eq!(
        verify_timeout(Duration::from_secs(5)),
        Duration::from_secs(5)
    );
    assert_eq!(
        verify_timeout(Duration::from_secs(60)),
        Duration::from_secs(10)
    );
}

#[tokio::test(start_paused = true)]
async fn a_schedule_skips_the_slots_a_long_poll_missed() {
    let interval = Duration::from_secs(5);
    let mut s = Schedule::new("web", interval);
    let start = tokio::time::Instant::now();
    let first = s.next;
    assert!(first >= start && first < start + interval);
    // A poll that took three intervals: the next one is in the future,
    // on the target's own offset (plus at most 50ms of jitter).
    tokio::time::sleep_until(first + interval * 3).await;
    s.advance();
    let now = tokio::time::Instant::now();
    assert!(s.next > now && s.next <= now + interval + Duration::from_millis(50));
    let phase = (s.next - first).as_nanos() % interval.as_nanos();
    assert!(phase < Duration::from_millis(50).as_nanos(), "{phase}");
}

#[tokio::test(start_paused = true)]
async fn a_pending_rule_wakes_the_worker_when_its_for_runs_out() {
    let now = chrono::Utc
        .with_ymd_and_hms(2026, 11, 28, 12, 0, 0)
        .unwrap();
    let since = now - chrono::Duration::seconds(50);
    let pending = report(RuleStatus::Pending { since }, Duration::from_secs(60), now);
    let start = tokio::time::Instant::now();
    let far = start + Duration::from_secs(30);
    // Due in 10s (+20ms so the data shows the whole `for`): before the
    // next regular poll.
    let at = due_before(std::slice::from_ref(&pending), now, far).expect("an early wake");
    assert_eq!(at - start, Duration::from_millis(10_020));
    // Not when the regular poll comes first, nor without a Pending rule.
    assert!(due_before(&[pending], now, start + Duration::from_secs(5)).is_none());
    let ok = report(RuleStatus::Ok, Duration::from_secs(60), now);
    assert!(due_before(&[ok], now, far).is_none());
}
