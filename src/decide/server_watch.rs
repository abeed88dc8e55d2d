//! One notice per Prometheus server that stops answering, instead of one
//! "blind" notice per target: when `[prometheus.servers.eu]` is down every
//! rule that asks it is Unknown, and the admin needs to hear "Prometheus eu
//! is unreachable" once (after the server's `blind_after`), then "reachable
//! again" once. The daemon reads each client's reachability (a fact) and
//! calls [`check`]; what to send, and when, is decided here. Rules whose
//! only problem is their unreachable server are left out of the targets'
//! own blind notices by the machine (see `RuleReport::unreachable`).

use std::time::Duration;

use chrono::Duration as ChronoDuration;

use super::{Action, NotifyKind, Time};
use crate::util::fmt_duration;

/// What the daemon saw of a server at this check.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// No query has finished yet (just started or reloaded).
    NotYet,
    /// The latest query got an answer (an error answer counts).
    Answers,
    /// Every query since `since` went unanswered (refused, timed out).
    Silent {
        /// The first unanswered query of this run.
        since: Time,
        /// The latest failure.
        error: String,
    },
}

/// One server, as the notice names it.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// `default` for `[prometheus]`, else its `[prometheus.servers.NAME]`.
    pub name: String,
    /// Its URL.
    pub url: String,
    /// Unanswered this long: tell the admin.
    pub blind_after: Duration,
    /// `target/rule` of every rule asking it, for the notice.
    pub rules: Vec<String>,
}

impl Server {
    /// The name the notice goes under (its "target"): `prometheus eu`.
    pub fn subject(&self) -> String {
        format!("prometheus {}", self.name)
    }
}

/// What is remembered of one server between checks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Watch {
    /// When the "unreachable" notice went out; cleared by "reachable again".
    pub notified: Option<Time>,
}

/// The notice due for `server` now, if any: "unreachable" once it has been
/// silent for `blind_after`, "reachable again" once it answers after that.
/// Nothing while it has not been asked yet (a reload keeps `watch`, so a
/// notice sent before it is still answered by "reachable again" later).
pub fn check(watch: &mut Watch, server: &Server, seen: &Seen, now: Time) -> Option<Action> {
    let blind_after = ChronoDuration::from_std(server.blind_after).unwrap_or(ChronoDuration::MAX);
    match (seen, watch.notified) {
        (Seen::Silent { since, error }, None) if now - *since >= blind_after => {
            watch.notified = Some(now);
            let rules = if server.rules.is_empty() {
                "no rule asks it now".to_string()
            } else {
                format!(
                    "{} rule(s) have no data and abstain (no automatic rollback on them): {}",
                    server.rules.len(),
                    server.rules.join(", ")
                )
            };
            Some(Action::NotifyTarget {
                kind: NotifyKind::ServerUnreachable,
                target: server.subject(),
                message: format!(
                    "Prometheus {} ({}) has been unreachable since {} ({}): {error}. {rules}. \
                     Rules on other sources and servers still act (blind_after = {}).",
                    server.name,
                    server.url,
                    since.format("%Y-%m-%d %H:%M:%SZ"),
                    fmt_duration((now - *since).to_std().unwrap_or_default()),
                    fmt_duration(server.blind_after)
                ),
            })
        }
        (Seen::Answers, Some(at)) => {
            watch.notified = None;
            Some(Action::NotifyTarget {
                kind: NotifyKind::ServerReachable,
                target: server.subject(),
                message: format!(
                    "Prometheus {} ({}) answers again (unreachable notice sent {}); its rules \
                     have data again from their next poll.",
                    server.name,
                    server.url,
                    at.format("%Y-%m-%d %H:%M:%SZ")
                ),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Time {
        chrono::DateTime::from_timestamp(1_767_268_800 + secs, 0).unwrap()
    }

    fn kind(a: &Option<Action>) -> Option<NotifyKind> {
        match a {
            Some(Action::NotifyTarget { kind, .. }) => Some(*kind),
            _ => None,
        }
    }

    #[test]
    fn one_notice_down_one_notice_up() {
        let server = Server {
            name: "eu".into(),
            url: "http://10.0.0.9:9090/".into(),
            blind_after: Duration::from_secs(60),
            rules: vec!["web/errors".into(), "api/latency".into()],
        };
        let silent = Seen::Silent {
            since: t(0),
            error: "cannot connect: connection refused".into(),
        };
        let mut w = Watch::default();
        // (seen, at, expected notice)
        let steps = [
            (Seen::NotYet, 0, None),
            (silent.clone(), 30, None),
            (silent.clone(), 60, Some(NotifyKind::ServerUnreachable)),
            (silent.clone(), 90, None),
            (silent.clone(), 3600, None),
            (Seen::NotYet, 3601, None),
            (Seen::Answers, 3602, Some(NotifyKind::ServerReachable)),
            (Seen::Answers, 3603, None),
            // A short outage below blind_after says nothing, either way.
            (
                Seen::Silent {
                    since: t(4000),
                    error: "x".into(),
                },
                4030,
                None,
            ),
            (Seen::Answers, 4031, None),
        ];
        for (i, (seen, at, want)) in steps.iter().enumerate() {
            let got = check(&mut w, &server, seen, t(*at));
            assert_eq!(kind(&got), *want, "step {i}: {got:?}");
            if let Some(Action::NotifyTarget {
                target, message, ..
            }) = &got
            {
                assert_eq!(target, "prometheus eu");
                assert!(
                    message.starts_with("Prometheus eu (http://10.0.0.9:9090/)"),
                    "{message}"
                );
                if *want == Some(NotifyKind::ServerUnreachable) {
                    assert!(message.contains("connection refused"), "{message}");
                    assert!(message.contains("2 rule(s)"), "{message}");
                    assert!(message.contains("web/errors, api/latency"), "{message}");
                }
            }
        }
    }
}
