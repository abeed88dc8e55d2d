//! Whether a probe rule's `window` can hold `min_samples` probes when the
//! service hangs, so that `check` refuses a rule that would stay Unknown
//! while the release it watches accepts connections and never answers.
//!
//! A target polls one slot of `daemon.poll_interval` at a time, and a poll
//! lasts until its slowest rule is done: a probe that uses its whole
//! `timeout` also takes every slot it overlaps (the worker skips the slots a
//! long poll missed), so the next probe starts at the first slot after it,
//! plus the worker's jitter (at most 1% of the interval, at most 50 ms).
//! Probes are kept while they are younger than `window` (strictly), so `n`
//! probes `span` apart fit when `(n - 1) * span + jitter < window`.

use std::time::Duration;

use crate::util::fmt_duration;

/// The most jitter the worker adds to a poll slot (see
/// `daemon::worker::poll_jitter`).
pub fn max_jitter(poll_interval: Duration) -> Duration {
    (poll_interval / 100).min(Duration::from_millis(50))
}

/// The poll slots one probe takes when it uses its whole `timeout`: its own
/// and every one it overlaps.
fn slots(timeout: Duration, poll_interval: Duration) -> u128 {
    let poll = poll_interval.as_nanos().max(1);
    (timeout + max_jitter(poll_interval)).as_nanos() / poll + 1
}

/// How many probes that each time out fit in `window` at most.
pub fn most_probes(window: Duration, timeout: Duration, poll_interval: Duration) -> u128 {
    let span = slots(timeout, poll_interval) * poll_interval.as_nanos().max(1);
    let room = window.saturating_sub(max_jitter(poll_interval)).as_nanos();
    room.div_ceil(span).max(1)
}

/// A duration as a config value: `"13s"`, `"3900ms"` (config durations
/// have no decimals).
fn as_config(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        fmt_duration(d)
    } else {
        format!("{ms}ms")
    }
}

/// Why a probe rule can never hold `min_samples` probes while its service
/// hangs, with what would work; `None` when it can.
pub fn unreachable(
    min_samples: usize,
    window: Duration,
    timeout: Duration,
    poll_interval: Duration,
) -> Option<String> {
    let most = most_probes(window, timeout, poll_interval);
    let n = min_samples as u128;
    if n <= most {
        return None;
    }
    let poll = poll_interval.as_nanos().max(1);
    let jitter = max_jitter(poll_interval);
    let slots = slots(timeout, poll_interval);
    let span = Duration::from_nanos((slots * poll) as u64);
    // The smallest whole-second window with (n - 1) * span + jitter < window.
    let needed = span.saturating_mul((min_samples - 1) as u32) + jitter;
    let wider = Duration::from_secs(needed.as_secs() + 1);
    let (w, t, p) = (
        fmt_duration(window),
        fmt_duration(timeout),
        fmt_duration(poll_interval),
    );
    if slots == 1 {
        // The timeout ends within its own slot: the interval alone limits.
        return Some(format!(
            "min_samples = {min_samples} can never be reached: window = {w:?} holds at most {most} probes at daemon.poll_interval {p:?}; lower min_samples to {most} or widen window to {:?}",
            fmt_duration(wider)
        ));
    }
    // The most slots a probe may take: (n - 1) * slots * poll + jitter < window.
    let room = window.saturating_sub(jitter).as_nanos();
    let per = (n - 1) * poll;
    let fit = room.div_ceil(per).saturating_sub(1);
    // A timeout below fit * poll - jitter takes at most `fit` slots; offered
    // in whole 100 ms.
    let shorter = (fit >= 1)
        .then(|| {
            let limit = Duration::from_nanos((fit * poll) as u64).saturating_sub(jitter);
            let tenths = (limit.as_millis().saturating_sub(1)) / 100;
            Duration::from_millis((tenths * 100) as u64)
        })
        .filter(|d| !d.is_zero());
    let timeout_hint = match shorter {
        Some(d) => format!(", lower timeout to {:?}", as_config(d)),
        None => String::new(),
    };
    Some(format!(
        "min_samples = {min_samples} can never be reached while the service hangs: a probe that times out takes timeout = {t:?}, so at daemon.poll_interval {p:?} probes start {} apart and window = {w:?} holds at most {most} of them (the rule would stay Unknown); widen window to {:?}{timeout_hint}, or lower min_samples to {most}",
        fmt_duration(span),
        fmt_duration(wider),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn s(v: u64) -> Duration {
        Duration::from_secs(v)
    }

    #[test]
    fn probes_that_time_out_fit_the_window_or_not() {
        // (window, timeout, poll, most)
        for (window, timeout, poll, most) in [
            // Timeout within the slot: one probe per poll.
            (s(10), s(2), s(5), 2),
            (s(15), s(2), s(5), 3),
            (s(30), s(2), s(5), 6),
            // The numbers: 5 s timeouts at a 1 s poll are 6 s apart.
            (s(10), s(5), s(1), 2),
            (s(12), s(5), s(1), 2),
            (s(13), s(5), s(1), 3),
            // Defaults at a fast poll.
            (s(30), s(2), ms(200), 14),
            // A timeout exactly one interval long spills into the next slot.
            (s(10), s(5), s(5), 1),
            (s(11), s(5), s(5), 2),
            // A window shorter than the jitter still holds the newest probe.
            (ms(1), s(1), s(1), 1),
        ] {
            assert_eq!(
                most_probes(window, timeout, poll),
                most,
                "window {window:?} timeout {timeout:?} poll {poll:?}"
            );
        }
    }

    #[test]
    fn the_message_names_the_keys_and_what_would_work() {
        assert_eq!(
            unreachable(3, s(10), s(5), s(1)).as_deref(),
            Some("min_samples = 3 can never be reached while the service hangs: a probe that times out takes timeout = \"5s\", so at daemon.poll_interval \"1s\" probes start 6s apart and window = \"10s\" holds at most 2 of them (the rule would stay Unknown); widen window to \"13s\", lower timeout to \"3900ms\", or lower min_samples to 2")
        );
        assert_eq!(
            unreachable(3, s(10), s(2), s(5)).as_deref(),
            Some("min_samples = 3 can never be reached: window = \"10s\" holds at most 2 probes at daemon.poll_interval \"5s\"; lower min_samples to 2 or widen window to \"11s\"")
        );
        assert_eq!(unreachable(3, s(13), s(5), s(1)), None);
        assert_eq!(unreachable(3, s(30), s(2), s(5)), None);
        // Every suggestion, applied alone, is accepted.
        for (window, timeout, poll, n) in [(s(10), s(5), s(1), 3), (s(20), s(9), s(1), 4)] {
            let msg = unreachable(n, window, timeout, poll).unwrap();
            let quoted = |after: &str| -> Duration {
                let rest = msg.split(after).nth(1).unwrap();
                let v = rest.split('"').nth(1).unwrap();
                crate::config::duration::parse(v).unwrap()
            };
            assert_eq!(
                unreachable(n, quoted("widen window to "), timeout, poll),
                None,
                "{msg}"
            );
            assert_eq!(
                unreachable(n, window, quoted("lower timeout to "), poll),
                None,
                "{msg}"
            );
            let most = most_probes(window, timeout, poll) as usize;
            assert_eq!(unreachable(most, window, timeout, poll), None, "{msg}");
            // And what it refuses, just past the suggestion, is refused.
            let past = quoted("widen window to ") - s(1);
            assert!(unreachable(n, past, timeout, poll).is_some(), "{msg}");
        }
    }
}
