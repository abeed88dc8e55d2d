//! Pure validation from [`RawConfig`](super::raw::RawConfig) into [`Config`](super::Config):
//! every problem is collected with its key path before failing. No I/O.
//!
//! Defaults live here, next to the checks, so that one file says what a
//! config means.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

mod cluster;
mod daemon;
mod notify;
mod prometheus;
mod rollback;
mod rule;

pub use super::cx::{
    template_names, ConfigError, ConfigErrors, Cx, LEASE_WITHOUT_CLUSTER, TEMPLATE_VARIABLES,
};
use crate::util::fmt_duration;
use cluster::*;
use daemon::*;
use notify::*;
use prometheus::*;
use rollback::*;
use rule::*;

use super::raw::{
    join, RawCheck, RawCluster, RawConfig, RawDaemon, RawEmail, RawNotify, RawPrometheus,
    RawRollback, RawRule, RawTarget, RawTargetNotify, RawVerify, RawWebhook, RawWindow,
};
use super::{
    duration, BlastRadius, ClusterAuth, ClusterClientCert, ClusterConfig, Config, DaemonConfig,
    EmailConfig, ExecutorKind, LogFormat, NoData, NotifyConfig, PrometheusAuth, PrometheusConfig,
    RollbackPlan, RuleConfig, SmtpConfig, SmtpSecurity, SourceSpec, TargetConfig, VerifyCheck,
    VerifyConfig, WebhookConfig, WebhookFormat, Window,
};
// The source kinds' specs, which the tests below build.
#[cfg(test)]
use super::{BaselineSpec, ProbeMeasure, ProbeSpec, PromSpec, TrafficGuard};

// The defaults of a source kind's keys are in its file.
pub use crate::sources::probe::{DEFAULT_MIN_SAMPLES, DEFAULT_PROBE_TIMEOUT, DEFAULT_PROBE_WINDOW};
pub use crate::sources::prometheus::{DEFAULT_BASELINE_WINDOW, MIN_STEP};

/// Default `daemon.state_dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/rollbackd";
/// Default `daemon.listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9797";
/// Smallest `daemon.poll_interval`: below it, polls cost more than they tell.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Default `daemon.poll_interval`.
pub const DEFAULT_POLL_INTERVAL: &str = "5s";
/// Default `target.cooldown`.
pub const DEFAULT_COOLDOWN: &str = "30m";
/// Default `rule.for`.
pub const DEFAULT_FOR: &str = "0s";
/// Default `rollback.timeout`.
pub const DEFAULT_ROLLBACK_TIMEOUT: &str = "5m";
/// Default `verify.within`.
pub const DEFAULT_VERIFY_WITHIN: &str = "5m";
/// Default `prometheus.timeout`.
pub const DEFAULT_PROMETHEUS_TIMEOUT: &str = "3s";
/// Default `target.version_label`.
pub const DEFAULT_VERSION_LABEL: &str = "version";
/// Default `target.rto` (the runbook's recovery-time objective).
const DEFAULT_RTO: &str = "5m";

/// Default `cluster.prefix`.
pub const DEFAULT_CLUSTER_PREFIX: &str = "/rollbackd/";
/// Default `cluster.lease_ttl`.
pub const DEFAULT_LEASE_TTL: &str = "10s";
/// Shortest `cluster.lease_ttl`: keepalives go out every third of it, and
/// below 2s one slow etcd answer would cost a node its locks.
const MIN_LEASE_TTL: Duration = Duration::from_secs(2);
/// Longest `cluster.lease_ttl`: a dead node's targets wait this long.
const MAX_LEASE_TTL: Duration = Duration::from_secs(3600);

/// Default `target.blind_after`.
pub const DEFAULT_BLIND_AFTER: &str = "5m";

/// Default `notify.give_up_after`.
pub const DEFAULT_GIVE_UP_AFTER: &str = "24h";
/// Default `notify.max_per_target_per_hour`.
pub const DEFAULT_MAX_PER_TARGET_PER_HOUR: u32 = 20;
/// Default `notify.max_per_hour`.
pub const DEFAULT_MAX_PER_HOUR: u32 = 60;
/// Default SMTP and webhook `timeout`.
pub const DEFAULT_NOTIFY_TIMEOUT: &str = "30s";

/// Validate the raw config; `file` names it in errors.
pub fn validate(file: &str, raw: RawConfig) -> Result<Config, ConfigErrors> {
    validate_collecting(file, raw, Vec::new())
}

/// Validate `raw` and report `earlier` problems (those of
/// [`raw::parse_partial`](super::raw::parse_partial)) together with
/// validation's own, so that one run shows every problem in the file.
/// A validation error at a key the raw phase already rejected, or inside an
/// item it rejected, is dropped: it would only repeat the same problem.
pub fn validate_collecting(
    file: &str,
    raw: RawConfig,
    earlier: Vec<ConfigError>,
) -> Result<Config, ConfigErrors> {
    let mut cx = Cx {
        file,
        errors: Vec::new(),
        warnings: Vec::new(),
        has_prometheus: raw.prometheus.is_some(),
        // A `[prometheus]` without url and without named servers is
        // reported once, at `prometheus.url`, not again at every rule.
        prom_default: raw
            .prometheus
            .as_ref()
            .is_some_and(|p| p.url.is_some() || p.servers.is_empty()),
        prom_servers: raw
            .prometheus
            .iter()
            .flat_map(|p| p.servers.keys().cloned())
            .collect(),
        has_cluster: raw.cluster.is_some(),
    };
    let config = config(&mut cx, raw).map(|mut c| {
        c.warnings = std::mem::take(&mut cx.warnings);
        c
    });
    let mut errors = earlier;
    let found = cx.errors.into_iter().filter(|e| {
        !errors.iter().any(|r| {
            e.path == r.path
                || e.path.starts_with(&format!("{}.", r.path))
                || e.path.starts_with(&format!("{}[", r.path))
        })
    });
    let found: Vec<ConfigError> = found.collect();
    errors.extend(found);
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        Some(_) => Err(ConfigErrors(errors)),
        None if errors.is_empty() => Err(ConfigErrors::single(
            file,
            "",
            "invalid configuration".to_string(),
        )),
        None => Err(ConfigErrors(errors)),
    }
}

fn config(cx: &mut Cx, raw: RawConfig) -> Option<Config> {
    let daemon = daemon(cx, raw.daemon.unwrap_or_default());
    let prometheus = prometheus_servers(cx, raw.prometheus.as_ref());
    let state_dir = daemon.as_ref().map(|d| d.state_dir.clone());
    let raw_notify = raw.notify.unwrap_or_default();
    if raw_notify.email.is_none() && raw_notify.webhook.is_empty() {
        cx.warn(
            "notify",
            "no notification channel configured: nobody is told about rollbacks, escalations \
             or confirmations; add [notify.email] or a [[notify.webhook]]",
        );
    }
    let mut notify = notify(cx, raw_notify, state_dir);
    let cluster = match raw.cluster.as_ref() {
        None => Some(None),
        Some(c) => cluster(cx, c).map(Some),
    };
    let windows: Vec<Option<Window>> = raw
        .window
        .iter()
        .enumerate()
        .map(|(i, w)| window(cx, &format!("window[{i}]"), w))
        .collect();

    let mut names: Vec<(usize, &str)> = Vec::new();
    for (i, t) in raw.target.iter().enumerate() {
        if let Some(name) = t.name.as_deref() {
            if let Some((first, _)) = names.iter().find(|(_, n)| *n == name) {
                cx.err(
                    format!("target[{i}].name"),
                    format!("duplicate target name {name:?} (also used by target[{first}])"),
                );
            } else {
                names.push((i, name));
            }
        }
    }
    if raw.target.is_empty() {
        cx.err("target", "no targets: add at least one [[target]]");
    }
    let targets: Vec<Option<TargetConfig>> = raw
        .target
        .iter()
        .enumerate()
        .map(|(i, t)| target(cx, &format!("target[{i}]"), t))
        .collect();
    if let Some(n) = notify.as_mut() {
        for (i, t) in targets.iter().enumerate() {
            let Some(t) = t else { continue };
            target_routes(cx, &format!("target[{i}].notify"), t, n);
        }
    }
    if let Some(d) = &daemon {
        for (i, t) in targets.iter().enumerate() {
            for (j, r) in t.iter().flat_map(|t| t.rules.iter()).enumerate() {
                reachable_min_samples(cx, &format!("target[{i}].rule[{j}]"), r, d.poll_interval);
            }
        }
        blast_radius_blind_spot(cx, d, &targets);
    }

    Some(Config {
        daemon: daemon?,
        prometheus: prometheus.0?,
        prometheus_servers: prometheus.1?,
        notify: notify?,
        windows: windows.into_iter().collect::<Option<_>>()?,
        targets: targets.into_iter().collect::<Option<_>>()?,
        cluster: cluster?,
        warnings: Vec::new(),
    })
}

/// `[target.notify]` checked against the global channels (webhook names
/// must exist; `to` needs `[notify.email]`), then added to the routes.
fn target_routes(cx: &mut Cx, p: &str, target: &TargetConfig, notify: &mut NotifyConfig) {
    let route = &target.notify;
    if *route == super::TargetNotify::default() {
        return;
    }
    if (route.to.is_some() || !route.cc.is_empty()) && notify.email.is_none() {
        cx.err(
            join(p, if route.to.is_some() { "to" } else { "cc" }),
            "recipients need a [notify.email] section (from, smtp_url)",
        );
    }
    for (i, name) in route.webhooks.iter().flatten().enumerate() {
        if !notify
            .webhooks
            .iter()
            .any(|w| w.name.as_deref() == Some(name.as_str()))
        {
            let names: Vec<&str> = notify
                .webhooks
                .iter()
                .filter_map(|w| w.name.as_deref())
                .collect();
            cx.err(
                format!("{p}.webhooks[{i}]"),
                format!(
                    "no [[notify.webhook]] named {name:?} (named webhooks: {})",
                    if names.is_empty() {
                        "none; give one a name".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            );
        }
    }
    notify.routes.insert(target.name.clone(), route.clone());
}

/// `[target.notify]`: recipients as mailboxes, the severity word.
fn target_notify(
    cx: &mut Cx,
    p: &str,
    raw: Option<&RawTargetNotify>,
) -> Option<super::TargetNotify> {
    let Some(raw) = raw else {
        return Some(super::TargetNotify::default());
    };
    let mut ok = true;
    let mut list = |cx: &mut Cx, key: &str, items: Option<&Vec<String>>| -> Option<Vec<String>> {
        let items = items?;
        let mut out = Vec::new();
        for (i, m) in items.iter().enumerate() {
            match mailbox(cx, &format!("{p}.{key}[{i}]"), m) {
                Some(m) => out.push(m),
                None => ok = false,
            }
        }
        Some(out)
    };
    let to = list(cx, "to", raw.to.as_ref());
    let cc = list(cx, "cc", raw.cc.as_ref()).unwrap_or_default();
    if raw.to.as_ref().is_some_and(Vec::is_empty) {
        cx.err(
            join(p, "to"),
            "to = [] would send this target's mail to nobody; leave it out to use notify.email.to",
        );
        ok = false;
    }
    let min_severity = cx.choice(
        p,
        "min_severity",
        raw.min_severity.as_deref(),
        &[
            ("info", super::Severity::Info),
            ("warning", super::Severity::Warning),
            ("critical", super::Severity::Critical),
        ],
    );
    let notify = super::TargetNotify {
        to,
        cc,
        webhooks: raw.webhooks.clone(),
        min_severity: min_severity?,
    };
    ok.then_some(notify)
}

/// `HH:MM`, 24-hour, two digits each.
fn clock_time(cx: &mut Cx, path: &str, value: &str) -> Option<chrono::NaiveTime> {
    let b = value.as_bytes();
    let shaped =
        b.len() == 5 && b[2] == b':' && [0, 1, 3, 4].iter().all(|&i| b[i].is_ascii_digit());
    let parsed = shaped
        .then(|| chrono::NaiveTime::parse_from_str(value, "%H:%M").ok())
        .flatten();
    if parsed.is_none() {
        cx.err(
            path,
            format!("invalid time {value:?} (use \"HH:MM\", 24-hour, e.g. \"22:00\")"),
        );
    }
    parsed
}

fn window(cx: &mut Cx, p: &str, raw: &RawWindow) -> Option<Window> {
    let name = cx
        .required(p, "name", raw.name.as_deref())
        .and_then(|n| cx.non_empty(&join(p, "name"), n));
    let days = match cx.required(p, "days", raw.days.as_deref()) {
        None => None,
        Some([]) => {
            cx.err(
                join(p, "days"),
                "no days: give at least one of mon, tue, wed, thu, fri, sat, sun",
            );
            None
        }
        Some(list) => {
            let mut days = Vec::new();
            let mut ok = true;
            for (i, d) in list.iter().enumerate() {
                let path = format!("{p}.days[{i}]");
                let day = match d.as_str() {
                    "mon" => chrono::Weekday::Mon,
                    "tue" => chrono::Weekday::Tue,
                    "wed" => chrono::Weekday::Wed,
                    "thu" => chrono::Weekday::Thu,
                    "fri" => chrono::Weekday::Fri,
                    "sat" => chrono::Weekday::Sat,
                    "sun" => chrono::Weekday::Sun,
                    _ => {
                        cx.err(
                            path,
                            format!("invalid day {d:?} (use mon, tue, wed, thu, fri, sat, sun)"),
                        );
                        ok = false;
                        continue;
                    }
                };
                if days.contains(&day) {
                    cx.err(path, format!("duplicate day {d:?}"));
                    ok = false;
                } else {
                    days.push(day);
                }
            }
            ok.then_some(days)
        }
    };
    let start = cx
        .required(p, "start", raw.start.as_deref())
        .and_then(|s| clock_time(cx, &join(p, "start"), s));
    let end = cx
        .required(p, "end", raw.end.as_deref())
        .and_then(|s| clock_time(cx, &join(p, "end"), s));
    if let (Some(s), Some(e)) = (start, end) {
        if s == e {
            cx.err(
                join(p, "end"),
                format!(
                    "end equals start ({:?}): the window would be empty",
                    raw.end.as_deref().unwrap_or_default()
                ),
            );
        }
    }
    let timezone = cx
        .required(p, "timezone", raw.timezone.as_deref())
        .and_then(|tz| match tz.parse::<chrono_tz::Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                cx.err(
                    join(p, "timezone"),
                    format!("unknown timezone {tz:?} (use an IANA name such as \"Asia/Shanghai\" or \"UTC\")"),
                );
                None
            }
        });
    let (start, end) = (start?, end?);
    if start == end {
        return None;
    }
    Some(Window {
        name: name?,
        days: days?,
        start,
        end,
        timezone: timezone?,
    })
}

fn target_name_ok(name: &str) -> bool {
    // Not starting with '-': `{target}` must never become an option.
    !name.is_empty()
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn target(cx: &mut Cx, p: &str, raw: &RawTarget) -> Option<TargetConfig> {
    let name = cx.required(p, "name", raw.name.as_deref()).and_then(|n| {
        if target_name_ok(n) {
            Some(n.to_string())
        } else {
            cx.err(
                join(p, "name"),
                format!("invalid target name {n:?}: use letters, digits, '.', '_' and '-' only, not starting with '-'"),
            );
            None
        }
    });
    let version_command = match raw.version_command.as_deref() {
        None => Some(None),
        Some(argv) => cx.argv(&join(p, "version_command"), argv, false).map(Some),
    };
    let version_other = version_source(cx, p, raw);
    let only_within = match raw.only_within.as_deref() {
        None => Some(None),
        Some(d) => cx.duration(p, "only_within", Some(d), "", true).map(Some),
    };
    let blind_after = cx.duration(
        p,
        "blind_after",
        raw.blind_after.as_deref(),
        DEFAULT_BLIND_AFTER,
        true,
    );
    let rto = cx.duration(p, "rto", raw.rto.as_deref(), DEFAULT_RTO, true);
    let confirm = confirm(cx, p, raw);
    let cooldown = cx.duration(
        p,
        "cooldown",
        raw.cooldown.as_deref(),
        DEFAULT_COOLDOWN,
        false,
    );
    let max_rollbacks_per_hour = match raw.max_rollbacks_per_hour {
        None => NonZeroU32::new(1),
        Some(n) => {
            let v = u32::try_from(n).ok().and_then(NonZeroU32::new);
            if v.is_none() {
                cx.err(
                    join(p, "max_rollbacks_per_hour"),
                    format!("max_rollbacks_per_hour = {n} must be at least 1 (to stop automatic rollbacks use daemon.dry_run)"),
                );
            }
            v
        }
    };
    let no_data = cx.choice(
        p,
        "no_data",
        raw.no_data.as_deref(),
        &[
            ("hold", NoData::Hold),
            ("ok", NoData::Ok),
            ("breach", NoData::Breach),
        ],
    );

    if raw.rule.is_empty() {
        cx.err(
            join(p, "rule"),
            "target has no rules: add at least one [[target.rule]]",
        );
    }
    let mut rule_names: Vec<(usize, &str)> = Vec::new();
    for (i, r) in raw.rule.iter().enumerate() {
        if let Some(n) = r.name.as_deref() {
            if let Some((first, _)) = rule_names.iter().find(|(_, m)| *m == n) {
                cx.err(
                    format!("{p}.rule[{i}].name"),
                    format!("duplicate rule name {n:?} (also used by {p}.rule[{first}])"),
                );
            } else {
                rule_names.push((i, n));
            }
        }
    }
    let rules: Vec<Option<RuleConfig>> = raw
        .rule
        .iter()
        .enumerate()
        .map(|(i, r)| rule(cx, &format!("{p}.rule[{i}]"), r))
        .collect();

    let rollback = match raw.rollback.as_ref() {
        None => {
            cx.err(
                join(p, "rollback"),
                "missing [target.rollback]: every target needs a rollback plan",
            );
            None
        }
        Some(r) => rollback(cx, &join(p, "rollback"), r),
    };
    let verify = verify(
        cx,
        &join(p, "verify"),
        &raw.verify.clone().unwrap_or_default(),
    );

    let rollback = rollback?;
    let version = match (version_command?, version_other?) {
        (Some(argv), _) => Some(super::VersionSource::Command(argv)),
        (None, Some(other)) => Some(other),
        (None, None) => match &rollback.kind {
            ExecutorKind::Symlink { current, .. } => {
                Some(super::VersionSource::Symlink(current.clone()))
            }
            // The tag (or tag-distance-commit) the working tree is at.
            ExecutorKind::Git { repo, .. } => Some(super::VersionSource::Command(vec![
                "git".into(),
                "-C".into(),
                repo.display().to_string(),
                "describe".into(),
                "--tags".into(),
                "--always".into(),
            ])),
            _ => None,
        },
    };
    let notify = target_notify(cx, &join(p, "notify"), raw.notify.as_ref());
    if raw.rule.is_empty() {
        return None;
    }
    Some(TargetConfig {
        name: name?,
        version,
        cooldown: cooldown?,
        max_rollbacks_per_hour: max_rollbacks_per_hour?,
        no_data: no_data?,
        only_within: only_within?,
        blind_after: blind_after?,
        rto: rto?,
        rules: rules.into_iter().collect::<Option<_>>()?,
        rollback,
        verify: verify?,
        confirm: confirm?,
        notify: notify?,
    })
}

/// Default `target.confirm_timeout`.
pub const DEFAULT_CONFIRM_TIMEOUT: &str = "5m";

/// `confirm`, `confirm_timeout`, `on_confirm_timeout`, `confirm_command`.
fn confirm(cx: &mut Cx, p: &str, raw: &RawTarget) -> Option<super::ConfirmConfig> {
    let required = cx.choice(
        p,
        "confirm",
        raw.confirm.as_deref(),
        &[("none", false), ("required", true)],
    );
    let timeout = cx.duration(
        p,
        "confirm_timeout",
        raw.confirm_timeout.as_deref(),
        DEFAULT_CONFIRM_TIMEOUT,
        true,
    );
    let on_timeout = cx.choice(
        p,
        "on_confirm_timeout",
        raw.on_confirm_timeout.as_deref(),
        &[
            ("escalate", super::OnConfirmTimeout::Escalate),
            ("rollback", super::OnConfirmTimeout::Rollback),
        ],
    );
    let command = match raw.confirm_command.as_deref() {
        None => Some(None),
        Some(argv) => cx.argv(&join(p, "confirm_command"), argv, true).map(Some),
    };
    if required == Some(false) {
        for (key, set) in [
            ("confirm_timeout", raw.confirm_timeout.is_some()),
            ("on_confirm_timeout", raw.on_confirm_timeout.is_some()),
            ("confirm_command", raw.confirm_command.is_some()),
        ] {
            if set {
                cx.err(
                    join(p, key),
                    format!("{key} has no effect without confirm = \"required\""),
                );
            }
        }
    }
    Some(super::ConfirmConfig {
        required: required?,
        timeout: timeout?,
        on_timeout: on_timeout?,
        command: command?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_str, VersionSource};

    const RULE: &str = r#"
        name = "health"
        source = "probe"
        url = "http://127.0.0.1:3000/health"
        above = 0.5
    "#;
    const ROLLBACK: &str = r#"
        kind = "command"
        steps = [["systemctl", "restart", "web"]]
    "#;

    /// A config built from parts; a part left out gets a valid default.
    /// Parts: `top` (before everything), `daemon`, `target`, `rule`,
    /// `rollback`, `verify`, `after` (after the first target).
    fn config(parts: &[(&str, &str)]) -> String {
        let part = |name: &str, default: &'static str| {
            parts
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(default.to_string(), |(_, v)| v.to_string())
        };
        let verify = match parts.iter().find(|(n, _)| *n == "verify") {
            Some((_, v)) => format!("[target.verify]\n{v}"),
            None => String::new(),
        };
        format!(
            "{top}\n[daemon]\n{daemon}\n[[target]]\nname = \"web\"\n{target}\n\
             [[target.rule]]\n{rule}\n[target.rollback]\n{rollback}\n{verify}\n{after}\n",
            top = part("top", ""),
            daemon = part("daemon", ""),
            target = part("target", ""),
            rule = part("rule", RULE),
            rollback = part("rollback", ROLLBACK),
            after = part("after", ""),
        )
    }

    fn errors(text: &str) -> Vec<ConfigError> {
        match load_str("rollbackd.toml", text) {
            Ok(_) => Vec::new(),
            Err(e) => e.0,
        }
    }

    #[test]
    fn a_for_shorter_than_the_blast_radius_window_warns_unless_settle_covers_it() {
        let mail = "[notify.email]\nfrom = \"r@h\"\nto = [\"a@example.com\"]";
        let rule = "name = \"p\"\nsource = \"probe\"\nurl = \"http://127.0.0.1/\"\nabove = 0.5\nfor = \"1s\"";
        let more = |n: usize| -> String {
            (1..n)
                .map(|i| {
                    format!("[[target]]\nname = \"web{i}\"\n[[target.rule]]\n{rule}\n[target.rollback]\n{ROLLBACK}\n")
                })
                .collect()
        };
        let guard = "max_simultaneous_breaches = { targets = 3, fraction = 0.5, within = \"4s\" }";
        let warned = |daemon: &str, targets: usize| -> Vec<String> {
            let text = config(&[
                ("top", mail),
                ("daemon", daemon),
                ("rule", rule),
                ("after", &more(targets)),
            ]);
            let c = load_str("rollbackd.toml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            c.warnings
                .iter()
                .filter(|w| w.path == "daemon.max_simultaneous_breaches.within")
                .map(|w| w.message.clone())
                .collect()
        };
        let w = warned(guard, 4);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("web/p (for = \"1s\"), web1/p (for = \"1s\")"),
            "{}",
            w[0]
        );
        assert!(w[0].contains("set [daemon] settle = \"3s\""), "{}", w[0]);
        assert_eq!(warned(&format!("{guard}\nsettle = \"2s\""), 4).len(), 1);
        assert_eq!(
            warned(&format!("{guard}\nsettle = \"3s\""), 4),
            Vec::<String>::new()
        );
        // Two targets never trip a guard of three; the guard off never trips.
        assert_eq!(warned(guard, 2), Vec::<String>::new());
        assert_eq!(
            warned("max_simultaneous_breaches = 0", 4),
            Vec::<String>::new()
        );
        // The default guard is on (within 1m).
        let w = warned("", 3);
        assert!(w.len() == 1 && w[0].contains("settle = \"59s\""), "{w:?}");

        let c = load_str(
            "rollbackd.toml",
            &config(&[("daemon", "settle = \"1500ms\"")]),
        )
        .unwrap();
        assert_eq!(c.daemon.settle, Duration::from_millis(1500));
        let c = load_str("rollbackd.toml", &config(&[])).unwrap();
        assert_eq!(c.daemon.settle, Duration::ZERO, "default");
        for (value, message) in [
            (
                "\"11m\"",
                "settle = \"11m\" is too long: it delays every automatic rollback; at most \"10m\"",
            ),
            ("\"soon\"", "invalid duration \"soon\""),
        ] {
            let errs = errors(&config(&[("daemon", &format!("settle = {value}"))]));
            assert!(
                errs.iter()
                    .any(|e| e.path == "daemon.settle" && e.message.contains(message)),
                "{errs:?}"
            );
        }
    }

    #[test]
    fn warnings_name_the_key_and_do_not_fail() {
        let mail = "[notify.email]\nfrom = \"r@h\"\nto = [\"a@example.com\"]";
        let probe = |extra: &str| format!("name = \"p\"\nsource = \"probe\"\nabove = 0.5\n{extra}");
        let cases: Vec<(String, Vec<(&str, &str)>)> = vec![
            // Nobody would be told anything.
            (
                config(&[("rule", &probe("url = \"http://127.0.0.1/\"\nfor = \"30s\""))]),
                vec![("notify", "no notification channel configured")],
            ),
            // for = 0s on a probe and on a host rule (also by default).
            (
                config(&[("top", mail), ("rule", &probe("url = \"http://127.0.0.1/\""))]),
                vec![("target[0].rule[0].for", "for = \"0s\" (the default): a single bad probe")],
            ),
            (
                config(&[
                    ("top", mail),
                    ("rule", "name = \"cpu\"\nsource = \"host\"\nmetric = \"cpu\"\nabove = 0.9\nfor = \"0s\""),
                ]),
                vec![("target[0].rule[0].for", "a single bad host sample")],
            ),
            // A probe across the network without a timeout of its own.
            (
                config(&[("top", mail), ("rule", &probe("url = \"http://app.internal/\"\nfor = \"30s\""))]),
                vec![("target[0].rule[0].url", "not on this host, has no timeout set")],
            ),
            // Quiet: loopback probe, a timeout set, a for, a channel.
            (
                config(&[("top", mail), ("rule", &probe("url = \"http://app.internal/\"\ntimeout = \"1s\"\nfor = \"30s\""))]),
                vec![],
            ),
            (
                config(&[("top", "[[notify.webhook]]\nurl = \"https://chat/\""), ("rule", &probe("url = \"http://localhost:3000/\"\nfor = \"30s\""))]),
                vec![],
            ),
        ];
        for (text, want) in &cases {
            let c = load_str("rollbackd.toml", text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            let got: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
            assert_eq!(got.len(), want.len(), "{got:#?}\nfor config:\n{text}");
            for (path, fragment) in want {
                assert!(
                    c.warnings
                        .iter()
                        .any(|w| w.path == *path && w.message.contains(fragment)),
                    "want {path}: warning: ...{fragment}...\ngot {got:#?}"
                );
            }
            assert!(got.iter().all(|w| w.contains(": warning: ")));
        }
    }

    #[test]
    fn each_problem_has_its_path_and_message() {
        let host =
            |extra: &str| format!("name = \"cpu\"\nsource = \"host\"\nmetric = \"cpu\"\n{extra}");
        let probe =
            |extra: &str| format!("name = \"p\"\nsource = \"probe\"\nurl = \"http://h/\"\n{extra}");
        let symlink = |extra: &str| {
            format!("kind = \"symlink\"\ncurrent = \"/srv/app/current\"\nreleases = \"/srv/app/releases\"\n{extra}")
        };
        let mail = |extra: &str| {
            format!("[notify.email]\nfrom = \"r@h\"\nto = [\"a@example.com\"]\n{extra}")
        };
        let window = |extra: &str| {
            format!(
                "[[window]]\nname = \"w\"\n{extra}",
                extra = [
                    ("days", "days = [\"sat\"]"),
                    ("start", "start = \"22:00\""),
                    ("end", "end = \"02:00\""),
                    ("timezone", "timezone = \"Asia/Shanghai\""),
                ]
                .iter()
                .map(|(k, default)| {
                    extra
                        .lines()
                        .find(|l| l.starts_with(k))
                        .unwrap_or(default)
                        .to_string()
                })
                .collect::<Vec<_>>()
                .join("\n")
            )
        };
        const PROM: &str = "[prometheus]\nurl = \"http://127.0.0.1:9090\"";
        let cases: Vec<(String, &str, &str)> = vec![
            // [daemon]
            (config(&[("daemon", "poll_interval = \"5 minutes\"")]), "daemon.poll_interval", r#"invalid duration "5 minutes" (use e.g. "30s", "5m", "1h")"#),
            (config(&[("daemon", "poll_interval = \"0s\"")]), "daemon.poll_interval", "greater than zero"),
            (config(&[("daemon", "poll_interval = \"50ms\"")]), "daemon.poll_interval", r#"poll_interval = "50ms" is below the minimum of 100ms"#),
            (config(&[("daemon", "journal_max_size = \"1KiB\"")]), "daemon.journal_max_size", r#"journal_max_size = "1KiB" is below the minimum of 64KiB"#),
            (config(&[("daemon", "journal_max_size = \"64 megs\"")]), "daemon.journal_max_size", r#"invalid size "64 megs""#),
            (config(&[("daemon", "max_simultaneous_breaches = 1")]), "daemon.max_simultaneous_breaches", "must be a number of targets (2 or more)"),
            (config(&[("daemon", "max_simultaneous_breaches = \"3\"")]), "daemon.max_simultaneous_breaches", "must be a number of targets (2 or more)"),
            (config(&[("daemon", "max_simultaneous_breaches = { targets = 3, fraction = 2.0 }")]), "daemon.max_simultaneous_breaches.fraction", "fraction = 2.0 must be a number above 0 and at most 1"),
            (config(&[("daemon", "max_simultaneous_breaches = { targets = 3, within = \"soon\" }")]), "daemon.max_simultaneous_breaches.within", r#"invalid duration "soon""#),
            (config(&[("daemon", "max_simultaneous_breaches = { count = 3 }")]), "daemon.max_simultaneous_breaches.count", "unknown key \"count\""),
            (config(&[("daemon", "listen = \"0.0.0.0:9797\"")]), "daemon.listen", "set api_token_file"),
            (config(&[("daemon", "listen = \"localhost\"")]), "daemon.listen", r#"invalid listen address "localhost""#),
            (config(&[("daemon", "public_url = \"ftp://ops.example.com\"")]), "daemon.public_url", "http:// or https://"),
            (config(&[("daemon", "public_url = \"ops.example.com\"")]), "daemon.public_url", r#"invalid URL "ops.example.com""#),
            (config(&[("daemon", "state_dir = \"\"")]), "daemon.state_dir", "must not be empty"),
            // [notify]
            (config(&[("top", "[notify.email]\nfrom = \"not a mailbox\"\nto = [\"a@example.com\"]")]), "notify.email.from", r#"invalid mailbox "not a mailbox""#),
            (config(&[("top", "[notify.email]\nfrom = \"r@h\"\nto = [\"a@example.com\", \"bad\"]")]), "notify.email.to[1]", r#"invalid mailbox "bad""#),
            (config(&[("top", "[notify.email]\nfrom = \"r@h\"\nto = [\"a@example.com, b@example.com\"]")]), "notify.email.to[0]", "several mailboxes"),
            (config(&[("top", "[notify.email]\nfrom = \"r@h\"\nto = []")]), "notify.email.to", "no recipients"),
            (config(&[("top", "[notify.email]\nfrom = \"r@h\"")]), "notify.email.to", "required key is missing"),
            (config(&[("top", &mail("smtp_url = \"http://127.0.0.1\""))]), "notify.email.smtp_url", r#"has scheme "http"; it must be smtp:// or smtps://"#),
            (config(&[("top", &mail("smtp_url = \"smtp://u:secret@127.0.0.1\""))]), "notify.email.smtp_url", "credentials do not belong in smtp_url"),
            (config(&[("top", &mail("smtp_url = \"smtps://h?tls=starttls\""))]), "notify.email.smtp_url", "smtps:// is already TLS"),
            (config(&[("top", &mail("smtp_url = \"smtp://h?tls=yes\""))]), "notify.email.smtp_url", r#"unknown parameter tls="yes""#),
            (config(&[("top", &mail("smtp_url = \"smtp:///x\""))]), "notify.email.smtp_url", "has no host"),
            (config(&[("top", &mail("smtp_url = \"smtp://mail.example.com\"\nusername = \"u\"\npassword_file = \"/p\""))]), "notify.email.smtp_url", "password would cross the network unencrypted"),
            (config(&[("top", &mail("password_file = \"/p\""))]), "notify.email.password_file", "smtp_url is not"),
            (config(&[("top", &mail("smtp_url = \"smtp://127.0.0.1\"\npassword_file = \"/p\""))]), "notify.email.password_file", "username is not"),
            (config(&[("top", &mail("smtp_url = \"smtp://127.0.0.1\"\nusername = \"u\"\npassword_file = \"p\""))]), "notify.email.password_file", "absolute path"),
            (config(&[("top", &mail("smtp_url = \"smtp://127.0.0.1\"\npassword = \"hunter2\""))]), "notify.email.password", "never read from the config file"),
            (config(&[("top", &mail("smtp_url = \"smtp://127.0.0.1\"\ntimeout = \"0s\""))]), "notify.email.timeout", "greater than zero"),
            (config(&[("top", &mail("smtp_url = \"smtps://mail.example.com\"\nca_file = \"ca.pem\""))]), "notify.email.ca_file", "absolute path"),
            (config(&[("top", &mail("smtp_url = \"smtp://127.0.0.1\"\nca_file = \"/etc/ca.pem\""))]), "notify.email.ca_file", "plaintext"),
            (config(&[("top", &mail("ca_file = \"/etc/ca.pem\""))]), "notify.email.ca_file", "smtp_url is not"),
            (config(&[("top", "[[notify.webhook]]\nformat = \"json\"")]), "notify.webhook[0].url", "required key is missing"),
            (config(&[("top", "[[notify.webhook]]\nurl = \"ftp://chat/\"")]), "notify.webhook[0].url", "http:// or https://"),
            (config(&[("top", "[[notify.webhook]]\nurl = \"https://chat/\"\nformat = \"irc\"")]), "notify.webhook[0].format", r#"invalid format "irc" (use "json", "slack", "teams", "dingtalk" or "feishu")"#),
            (config(&[("top", "[[notify.webhook]]\nurl = \"https://chat/\"\nsecret = \"s\"")]), "notify.webhook[0].secret", "dingtalk"),
            (config(&[("top", "[[notify.webhook]]\nname = \"ops\"\nurl = \"https://a/\"\n[[notify.webhook]]\nname = \"ops\"\nurl = \"https://b/\"")]), "notify.webhook[1].name", r#"duplicate webhook name "ops""#),
            (config(&[("top", "[[notify.webhook]]\nname = \"ops\"\nurl = \"https://a/\""), ("after", "[target.notify]\nwebhooks = [\"dev\"]")]), "target[0].notify.webhooks[0]", r#"no [[notify.webhook]] named "dev" (named webhooks: ops)"#),
            (config(&[("after", "[target.notify]\nmin_severity = \"loud\"")]), "target[0].notify.min_severity", r#"invalid min_severity "loud" (use "info", "warning" or "critical")"#),
            (config(&[("top", &mail("")), ("after", "[target.notify]\nto = [\"not an address\"]")]), "target[0].notify.to[0]", "invalid mailbox"),
            (config(&[("after", "[target.notify]\ncc = [\"a@example.com\"]")]), "target[0].notify.cc", "[notify.email]"),
            (config(&[("after", "[target.notify]\nchannel = \"x\"")]), "target[0].notify.channel", "unknown key"),
            (config(&[("rule", &probe("above = 0.5\nmode = \"dry\""))]), "target[0].rule[0].mode", r#"invalid mode "dry" (use "act" or "shadow")"#),
            (config(&[("daemon", "max_pause = \"0s\"")]), "daemon.max_pause", "greater than zero"),
            (config(&[("top", "[notify]\ngive_up_after = \"0s\"")]), "notify.give_up_after", "greater than zero"),
            (config(&[("top", "[notify]\nmax_per_hour = 0")]), "notify.max_per_hour", "positive number"),
            (config(&[("top", "[notify]\nmax_per_target_per_hour = -1")]), "notify.max_per_target_per_hour", "positive number"),
            // [[window]]
            (config(&[("top", &window("timezone = \"Mars/Base\""))]), "window[0].timezone", r#"unknown timezone "Mars/Base""#),
            (config(&[("top", &window("days = [\"sat\", \"Sun\"]"))]), "window[0].days[1]", r#"invalid day "Sun""#),
            (config(&[("top", &window("days = [\"sat\", \"sat\"]"))]), "window[0].days[1]", r#"duplicate day "sat""#),
            (config(&[("top", &window("days = []"))]), "window[0].days", "no days"),
            (config(&[("top", &window("start = \"24:00\""))]), "window[0].start", r#"invalid time "24:00""#),
            (config(&[("top", &window("start = \"9:00\""))]), "window[0].start", r#"invalid time "9:00""#),
            (config(&[("top", &window("end = \"22:00\""))]), "window[0].end", "end equals start"),
            (config(&[("top", "[[window]]\ndays = [\"sat\"]\nstart = \"22:00\"\nend = \"02:00\"\ntimezone = \"UTC\"")]), "window[0].name", "required key is missing"),
            // [prometheus]
            (config(&[("top", "[prometheus]\ntimeout = \"3s\"")]), "prometheus.url", "required key is missing"),
            (config(&[("top", "[prometheus]\nurl = \"ftp://127.0.0.1:9090\"")]), "prometheus.url", "http:// or https://"),
            (config(&[("top", &format!("{PROM}\ntimeout = \"0s\""))]), "prometheus.timeout", "greater than zero"),
            (config(&[("top", &format!("{PROM}\nusername = \"u\""))]), "prometheus.password_file", "username needs password_file"),
            (config(&[("top", &format!("{PROM}\nusername = \"u\"\npassword_file = \"/p\"\nbearer_token_file = \"/t\""))]), "prometheus.bearer_token_file", "not both"),
            (config(&[("top", &format!("{PROM}\nbearer_token_file = \"t\""))]), "prometheus.bearer_token_file", "must be an absolute path"),
            (config(&[("top", &format!("{PROM}\nheaders = {{ \"bad header\" = \"x\" }}"))]), "prometheus.headers.bad header", "invalid HTTP header name"),
            // [[target]]
            (config(&[("after", "[[target]]\nname = \"web\"\n[[target.rule]]\nname = \"cpu\"\nsource = \"host\"\nmetric = \"cpu\"\nabove = 0.9\n[target.rollback]\nkind = \"command\"\nsteps = [[\"true\"]]")]), "target[1].name", r#"duplicate target name "web" (also used by target[0])"#),
            (config(&[("top", "[[target]]\nname = \"web app\"\n[[target.rule]]\nname = \"cpu\"\nsource = \"host\"\nmetric = \"cpu\"\nabove = 0.9\n[target.rollback]\nkind = \"command\"\nsteps = [[\"true\"]]")]), "target[0].name", r#"invalid target name "web app""#),
            (config(&[("target", "version_command = []")]), "target[0].version_command", "empty command"),
            (config(&[("target", "confirm = \"required\"\nconfirm_timeout = \"0s\"")]), "target[0].confirm_timeout", "must be greater than zero"),
            (config(&[("target", "confirm = \"required\"\non_confirm_timeout = \"later\"")]), "target[0].on_confirm_timeout", r#"invalid on_confirm_timeout "later""#),
            (config(&[("target", "confirm = \"required\"\nconfirm_command = [\"ask\", \"{nope}\"]")]), "target[0].confirm_command", "unknown template variable {nope}"),
            (config(&[("daemon", "max_rollbacks_per_hour = 0")]), "daemon.max_rollbacks_per_hour", "must be at least 1"),
            (config(&[("daemon", "log_format = \"syslog\"")]), "daemon.log_format", r#"invalid log_format "syslog""#),
            (config(&[("target", "version_url = \"h/version\"")]), "target[0].version_url", "invalid URL"),
            (config(&[("target", "version_url = \"http://h/v\"\nversion_command = [\"true\"]")]), "target[0].version_url", "set only one of version_command, version_url"),
            (config(&[("target", "version_query = \"app_build_info\"")]), "target[0].version_query", "needs a [prometheus] section"),
            (config(&[("top", PROM), ("target", "version_query = \" \"")]), "target[0].version_query", "must not be empty"),
            (config(&[("top", PROM), ("target", "version_query = \"app_build_info\"\nversion_label = \"1x\"")]), "target[0].version_label", "invalid label name \"1x\""),
            (config(&[("target", "version_json_pointer = \"/v\"")]), "target[0].version_json_pointer", "needs version_url"),
            (config(&[("target", "version_url = \"http://h/v\"\nversion_json_pointer = \"v\"")]), "target[0].version_json_pointer", "invalid JSON pointer \"v\""),
            (config(&[("target", "version_label = \"v\"")]), "target[0].version_label", "needs version_query"),
            (config(&[("target", "only_within = \"2 hours\"")]), "target[0].only_within", "invalid duration"),
            (config(&[("target", "only_within = \"0s\"")]), "target[0].only_within", "greater than zero"),
            (config(&[("target", "blind_after = \"0s\"")]), "target[0].blind_after", "greater than zero"),
            (config(&[("target", "confirm = \"maybe\"")]), "target[0].confirm", r#"invalid confirm "maybe""#),
            (config(&[("target", "confirm_timeout = \"5m\"")]), "target[0].confirm_timeout", "no effect without confirm = \"required\""),
            (config(&[("target", "on_confirm_timeout = \"rollback\"")]), "target[0].on_confirm_timeout", "no effect without confirm"),
            (config(&[("target", "cooldown = \"soon\"")]), "target[0].cooldown", r#"invalid duration "soon""#),
            (config(&[("target", "max_rollbacks_per_hour = 0")]), "target[0].max_rollbacks_per_hour", "must be at least 1"),
            (config(&[("target", "no_data = \"ignore\"")]), "target[0].no_data", r#"invalid no_data "ignore""#),
            // [[target.rule]]
            (config(&[("rule", "name = \"a\"\nsource = \"alertmanager\"")]), "target[0].rule[0].match", "alertmanager rule needs match"),
            (config(&[("rule", "name = \"a\"\nsource = \"alertmanager\"\nmatch = {}")]), "target[0].rule[0].match", "match is empty"),
            (config(&[("rule", "name = \"a\"\nsource = \"alertmanager\"\nmatch = { severity = 3 }")]), "target[0].rule[0].match.severity", "must be a string"),
            (config(&[("rule", "name = \"a\"\nsource = \"alertmanager\"\nabove = 1.0\nmatch = { a = \"b\" }")]), "target[0].rule[0].above", "does not apply to source \"alertmanager\""),
            (config(&[("rule", "name = \"a\"\nsource = \"prometheus\"\nquery = \"up\"\nabove = 1.0")]), "target[0].rule[0].source", "needs a [prometheus] section"),
            (config(&[("top", PROM), ("rule", "name = \"a\"\nsource = \"prometheus\"\nabove = 1.0")]), "target[0].rule[0].query", "required key is missing"),
            (config(&[("top", PROM), ("rule", "name = \"a\"\nsource = \"prometheus\"\nquery = \"up\"")]), "target[0].rule[0].above", "set above, above_baseline or both"),
            (config(&[("top", PROM), ("rule", "name = \"a\"\nsource = \"prometheus\"\nquery = \"up\"\nabove_baseline = 0.0")]), "target[0].rule[0].above_baseline", "greater than 0"),
            (config(&[("top", PROM), ("rule", "name = \"a\"\nsource = \"prometheus\"\nquery = \"up\"\nabove = 1.0\nbaseline_window = \"1h\"")]), "target[0].rule[0].baseline_window", "needs above_baseline"),
            (config(&[("top", PROM), ("rule", "name = \"a\"\nsource = \"prometheus\"\nquery = \"up\"\nabove_baseline = 3.0\nbaseline_window = \"0s\"")]), "target[0].rule[0].baseline_window", "greater than zero"),
            (config(&[("top", PROM), ("rule", "name = \"a\"\nsource = \"prometheus\"\nquery = \"up\"\nabove = 1.0\nurl = \"http://h/\"")]), "target[0].rule[0].url", "key url does not apply to source \"prometheus\""),
            (config(&[("rule", &host("above = 0.5\nno_data = \"skip\""))]), "target[0].rule[0].no_data", r#"invalid no_data "skip""#),
            (config(&[("rule", &probe("above = 0.5\nmin_samples = 0"))]), "target[0].rule[0].min_samples", "min_samples = 0 must be at least 1"),
            (config(&[("rule", &probe("above = 0.5\nwindow = \"10s\""))]), "target[0].rule[0].min_samples", "min_samples = 3 can never be reached: window = \"10s\" holds at most 2 probes at daemon.poll_interval \"5s\"; lower min_samples to 2 or widen window to \"11s\""),
            // Issue 18 item 7: a 5 s timeout at a 1 s poll, window 10 s, min_samples 3: a hung release stays Unknown.
            (config(&[("daemon", "poll_interval = \"1s\""), ("rule", &probe("above = 0.5\ntimeout = \"5s\"\nwindow = \"10s\"\nmin_samples = 3"))]), "target[0].rule[0].min_samples", "min_samples = 3 can never be reached while the service hangs: a probe that times out takes timeout = \"5s\", so at daemon.poll_interval \"1s\" probes start 6s apart and window = \"10s\" holds at most 2 of them (the rule would stay Unknown); widen window to \"13s\", lower timeout to \"3900ms\", or lower min_samples to 2"),
            (config(&[("rule", &host("above = 0.5\nmin_samples = 2"))]), "target[0].rule[0].min_samples", "key min_samples does not apply to source \"host\""),
            (config(&[("top", PROM), ("rule", "name = \"a\"\nsource = \"prometheus\"\nquery = \"up\"\nabove = 1.0\ntraffic_query = \"sum(rate(x[1m]))\"")]), "target[0].rule[0].min_traffic", "traffic_query needs min_traffic"),
            (config(&[("top", PROM), ("rule", "name = \"a\"\nsource = \"prometheus\"\nquery = \"up\"\nabove = 1.0\nmin_traffic = 1.0")]), "target[0].rule[0].traffic_query", "min_traffic needs traffic_query"),
            (config(&[("top", PROM), ("rule", "name = \"a\"\nsource = \"prometheus\"\nquery = \"up\"\nabove = 1.0\ntraffic_query = \"x\"\nmin_traffic = -1.0")]), "target[0].rule[0].min_traffic", "min_traffic = -1 must be a finite number, 0 or more"),
            (config(&[("top", PROM), ("rule", "name = \"a\"\nsource = \"prometheus\"\nquery = \"up\"\nabove = 1.0\nstep = \"50ms\"")]), "target[0].rule[0].step", "step = \"50ms\" is below the smallest step of 100ms"),
            (config(&[("rule", &probe("above = 0.5\nstep = \"1s\""))]), "target[0].rule[0].step", "key step does not apply to source \"probe\""),
            (config(&[("rule", &probe("above = 0.5\ntraffic_query = \"x\""))]), "target[0].rule[0].traffic_query", "key traffic_query does not apply to source \"probe\""),
            (config(&[("rule", "name = \"a\"\nsource = \"nagios\"\nabove = 1.0")]), "target[0].rule[0].source", r#"invalid source "nagios" (use "prometheus", "probe", "host" or "alertmanager")"#),
            (config(&[("rule", "name = \"a\"\nabove = 1.0")]), "target[0].rule[0].source", "required key is missing"),
            (config(&[("rule", &probe(""))]), "target[0].rule[0].above", "rule has no condition: set above"),
            (config(&[("rule", &host(""))]), "target[0].rule[0].above", "rule has no condition: set above"),
            (config(&[("rule", &probe("above = nan"))]), "target[0].rule[0].above", "above = NaN is not a finite number"),
            (config(&[("rule", &probe("above = 70"))]), "target[0].rule[0].above", "above = 70 is out of range for a fraction (0..1); did you mean 0.7?"),
            (config(&[("rule", &probe("above = 1"))]), "target[0].rule[0].above", "above = 1 is out of range for a fraction (0..1)"),
            (config(&[("rule", &probe("above = -0.1"))]), "target[0].rule[0].above", "out of range for a fraction"),
            (config(&[("rule", &host("above = 70"))]), "target[0].rule[0].above", "did you mean 0.7?"),
            (config(&[("rule", &host("above = 85.5").replace("\"cpu\"\n", "\"memory\"\n"))]), "target[0].rule[0].above", "did you mean 0.855?"),
            (config(&[("rule", &probe("measure = \"latency\"\nabove = 0"))]), "target[0].rule[0].above", "must be greater than 0"),
            (config(&[("rule", &probe("above = 0.5\nfor = \"5 minutes\""))]), "target[0].rule[0].for", r#"invalid duration "5 minutes" (use e.g. "30s", "5m", "1h")"#),
            (config(&[("rule", &host("above = 0.5\nurl = \"http://h/\""))]), "target[0].rule[0].url", r#"key url does not apply to source "host""#),
            (config(&[("rule", &host("above = 0.5\nwindow = \"1m\""))]), "target[0].rule[0].window", r#"key window does not apply to source "host""#),
            (config(&[("rule", &probe("above = 0.5\nmetric = \"cpu\""))]), "target[0].rule[0].metric", r#"key metric does not apply to source "probe""#),
            (config(&[("rule", "name = \"p\"\nsource = \"probe\"\nabove = 0.5")]), "target[0].rule[0].url", "required key is missing"),
            (config(&[("rule", "name = \"p\"\nsource = \"probe\"\nurl = \"ftp://h/\"\nabove = 0.5")]), "target[0].rule[0].url", "http:// or https://"),
            (config(&[("rule", &probe("above = 0.5\ntimeout = \"0s\""))]), "target[0].rule[0].timeout", "greater than zero"),
            (config(&[("rule", &probe("above = 0.5\nwindow = \"0s\""))]), "target[0].rule[0].window", "greater than zero"),
            (config(&[("rule", &probe("above = 0.5\nexpect_status = 42"))]), "target[0].rule[0].expect_status", "expect_status = 42 is not an HTTP status code"),
            (config(&[("rule", &probe("above = 0.5\nmeasure = \"p99\""))]), "target[0].rule[0].measure", r#"invalid measure "p99""#),
            (config(&[("rule", &host("above = 0.5").replace("\"cpu\"\n", "\"disk\"\n"))]), "target[0].rule[0].metric", r#"invalid metric "disk""#),
            (config(&[("rule", "name = \"c\"\nsource = \"host\"\nabove = 0.5")]), "target[0].rule[0].metric", "required key is missing"),
            (config(&[("rule", &probe("above = 0.5\nquery = \"up\""))]), "target[0].rule[0].query", "key query does not apply to source \"probe\""),
            (config(&[("rule", &probe("above = 0.5\nmatch = { alertname = \"X\" }"))]), "target[0].rule[0].match", "does not apply to source \"probe\""),
            (config(&[("rule", &probe("above = 0.5\nabove_baseline = 3.0"))]), "target[0].rule[0].above_baseline", "does not apply to source \"probe\""),
            (config(&[("rule", &probe("above = 0.5\nbaseline_window = \"1h\""))]), "target[0].rule[0].baseline_window", "does not apply to source \"probe\""),
            (config(&[("rule", &probe("above = 0.5\nbaseline_query = \"up\""))]), "target[0].rule[0].baseline_query", "does not apply to source \"probe\""),
            (config(&[("rule", &format!("{RULE}\n[[target.rule]]\n{RULE}"))]), "target[0].rule[1].name", r#"duplicate rule name "health" (also used by target[0].rule[0])"#),
            (config(&[("rule", &probe("above = 0.5\nfooo = 1"))]), "target[0].rule[0].fooo", "unknown key"),
            ("[[target]]\nname = \"web\"\n[target.rollback]\nkind = \"command\"\nsteps = [[\"true\"]]\n".to_string(), "target[0].rule", "target has no rules"),
            ("[daemon]\n".to_string(), "target", "no targets"),
            // [target.rollback]
            ("[[target]]\nname = \"web\"\n[[target.rule]]\nname = \"cpu\"\nsource = \"host\"\nmetric = \"cpu\"\nabove = 0.9\n".to_string(), "target[0].rollback", "missing [target.rollback]"),
            (config(&[("rollback", "kind = \"docker\"\ncontainer = \"web\"")]), "target[0].rollback.image", "required key is missing"),
            (config(&[("rollback", "kind = \"docker\"\ncontainer = \"web\"\nimage = \"registry:5000/app:1.0\"")]), "target[0].rollback.image", "must not carry a tag"),
            (config(&[("rollback", "kind = \"docker\"\ncontainer = \"web\"\nimage = \"app\"\nrun_args = [\"-e\", \"V={version}\"]")]), "target[0].rollback.run_args", "unknown template variable {version}"),
            (config(&[("rollback", "kind = \"kubernetes\"\nnamespace = \"prod\"")]), "target[0].rollback.deployment", "required key is missing"),
            (config(&[("rollback", "kind = \"kubernetes\"\ndeployment = \"web\"")]), "target[0].rollback.namespace", "required key is missing"),
            (config(&[("rollback", "kind = \"kubernetes\"\ndeployment = \"web\"\nnamespace = \"prod\"\nto_revision = 0")]), "target[0].rollback.to_revision", "revisions start at 1"),
            (config(&[("rollback", "kind = \"kubernetes\"\ndeployment = \"web\"\nnamespace = \"prod\"\nkubectl = \"\"")]), "target[0].rollback.kubectl", "must not be empty"),
            (config(&[("rollback", "kind = \"blue_green\"\nservice = \"web\"\nnamespace = \"prod\"\ncolors = [\"blue\", \"blue\"]")]), "target[0].rollback.colors", "two different"),
            (config(&[("rollback", "kind = \"blue_green\"\nservice = \"web\"\nnamespace = \"prod\"\ndeployment = \"web\"")]), "target[0].rollback.deployment", r#"key deployment does not apply to rollback kind "blue_green""#),
            (config(&[("rollback", "kind = \"git\"\nrepo = \"srv/app\"")]), "target[0].rollback.repo", "must be an absolute path"),
            (config(&[("rollback", "kind = \"git\"\nrepo = \"/srv/app\"\nbuild = [[]]")]), "target[0].rollback.build[0]", "empty command"),
            (config(&[("rollback", "kind = \"webhook\"\nurl = \"ftp://ci/\"")]), "target[0].rollback.url", "must start with http"),
            (config(&[("rollback", "kind = \"webhook\"\nurl = \"https://ci/\"\nbody = '{\"v\": {to_version}}'")]), "target[0].rollback.body", "body is not valid JSON"),
            (config(&[("rollback", "kind = \"webhook\"\nurl = \"https://ci/\"\nbody = '{\"v\": \"{tag}\"}'")]), "target[0].rollback.body", "unknown template variable {tag}"),
            (config(&[("rollback", "kind = \"webhook\"\nurl = \"https://ci/\"\nbody = 3")]), "target[0].rollback.body", "must be a JSON string or a table"),
            (config(&[("rollback", &format!("{ROLLBACK}\nstep_timeout = \"0s\""))]), "target[0].rollback.step_timeout", "greater than zero"),
            (config(&[("rollback", &format!("{ROLLBACK}\npre = [[\"cp\", \"{{nope}}\"]]"))]), "target[0].rollback.pre[0]", "unknown template variable {nope}"),
            (config(&[("rollback", "kind = \"ftp\"")]), "target[0].rollback.kind", r#"invalid rollback kind "ftp" (use one of "command", "symlink", "kubernetes", "blue_green", "docker", "git", "webhook")"#),
            (config(&[("rollback", "steps = [[\"true\"]]")]), "target[0].rollback.kind", "required key is missing"),
            (config(&[("rollback", &symlink("steps = [[\"true\"]]"))]), "target[0].rollback.steps", r#"key steps does not apply to rollback kind "symlink""#),
            (config(&[("rollback", &format!("{ROLLBACK}\ndeployment = \"web\""))]), "target[0].rollback.deployment", r#"key deployment does not apply to rollback kind "command""#),
            (config(&[("rollback", &format!("{ROLLBACK}\ncurrent = \"/srv/current\""))]), "target[0].rollback.current", r#"key current does not apply to rollback kind "command""#),
            // Issue 18 item 3: never a value in a shell's script text, never the program.
            (config(&[("rollback", "kind = \"command\"\nsteps = [[\"sh\", \"-c\", \"echo rolled back from {from_version}\"]]")]), "target[0].rollback.steps[0]", "{from_version} is inside the script text of a sh step"),
            (config(&[("rollback", "kind = \"command\"\nsteps = [[\"/usr/bin/env\", \"bash\", \"-ec\", \"deploy {to_version}\"]]")]), "target[0].rollback.steps[0]", "pass it as an environment variable (\"$ROLLBACKD_TO_VERSION\")"),
            (config(&[("rollback", &format!("{ROLLBACK}\non_failure = [{{ argv = [\"python3\", \"-c\", \"print('{{incident}}')\"] }}]"))]), "target[0].rollback.on_failure[0].argv", "{incident} is inside the script text of a python3 step"),
            (config(&[("rollback", &symlink("restart = [\"{to_version}\"]"))]), "target[0].rollback.restart", "{to_version} starts the program of the step"),
            (config(&[("target", "confirm = \"required\"\nconfirm_command = [\"sh\", \"-c\", \"ask {target}\"]")]), "target[0].confirm_command", "{target} is inside the script text"),
            (config(&[("rollback", "kind = \"command\"")]), "target[0].rollback.steps", "required key is missing"),
            (config(&[("rollback", "kind = \"command\"\nsteps = []")]), "target[0].rollback.steps", "no steps"),
            (config(&[("rollback", "kind = \"command\"\nsteps = [[\"true\"], []]")]), "target[0].rollback.steps[1]", "empty command"),
            (config(&[("rollback", "kind = \"command\"\nsteps = [[\"true\"], [\"\", \"x\"]]")]), "target[0].rollback.steps[1]", "program name (first element) is empty"),
            (config(&[("rollback", "kind = \"command\"\nsteps = [[\"true\"], [\"git\", \"checkout\", \"{version}\"]]")]), "target[0].rollback.steps[1]", r#"unknown template variable {version} in argument "{version}"; allowed: {target}, {from_version}, {to_version}, {incident}, {lease}"#),
            (config(&[("rollback", &format!("{ROLLBACK}\nafter = [[\"curl\", \"-X\", \"PURGE\", \"https://cdn/{{path}}\"]]"))]), "target[0].rollback.after[0]", "unknown template variable {path}"),
            (config(&[("rollback", &format!("{ROLLBACK}\ntimeout = \"0s\""))]), "target[0].rollback.timeout", "greater than zero"),
            // Step context: plain argv and tables side by side.
            (config(&[("rollback", "kind = \"command\"\nsteps = [[\"true\"], { argv = [\"true\"], cwd = \"app\" }]")]), "target[0].rollback.steps[1].cwd", r#""app" must be an absolute path"#),
            (config(&[("rollback", "kind = \"command\"\nsteps = [{ cwd = \"/srv/app\" }]")]), "target[0].rollback.steps[0].argv", "required key is missing"),
            (config(&[("rollback", "kind = \"command\"\nsteps = [[\"true\"], { argv = [\"git\"], user = \"root\" }]")]), "target[0].rollback.steps", r#"step { argv = ["git"], user = "root" }: unknown field `user`, expected one of `argv`, `cwd`, `env`, `timeout`"#),
            (config(&[("rollback", "kind = \"command\"\nsteps = [[\"true\", 1]]")]), "target[0].rollback.steps", r#"step ["true", 1] is not a list of strings"#),
            (config(&[("rollback", "kind = \"command\"\nsteps = [\"pm2 restart\"]")]), "target[0].rollback.steps", r#"step "pm2 restart" must be an argv list"#),
            (config(&[("rollback", "kind = \"command\"\nsteps = [{ argv = [] }]")]), "target[0].rollback.steps[0].argv", "empty command"),
            (config(&[("rollback", "kind = \"command\"\nsteps = [{ argv = [\"true\"], timeout = \"0s\" }]")]), "target[0].rollback.steps[0].timeout", "greater than zero"),
            (config(&[("rollback", "kind = \"command\"\nsteps = [{ argv = [\"true\"], env = { \"A=B\" = \"1\" } }]")]), "target[0].rollback.steps[0].env.A=B", "invalid environment variable name"),
            (config(&[("rollback", &format!("{ROLLBACK}\ncwd = \"srv\""))]), "target[0].rollback.cwd", "must be an absolute path"),
            (config(&[("rollback", &format!("{ROLLBACK}\nenv = {{ \"\" = \"x\" }}"))]), "target[0].rollback.env.", "invalid environment variable name"),
            (config(&[("rollback", &format!("{ROLLBACK}\non_failure = [[\"journalctl\", \"{{since}}\"]]"))]), "target[0].rollback.on_failure[0]", "unknown template variable {since}"),
            (config(&[("rollback", &format!("{ROLLBACK}\non_failure = [{{ argv = [\"sh\", \"-c\", \"x\"], cwd = \"tmp\" }}]"))]), "target[0].rollback.on_failure[0].cwd", "must be an absolute path"),
            // Verification gates.
            (config(&[("verify", "checks = [{ url = \"ftp://x/\" }]")]), "target[0].verify.checks[0].url", "must start with http:// or https://"),
            (config(&[("verify", "checks = [{ expect_status = 200 }]")]), "target[0].verify.checks[0].url", "required key is missing"),
            (config(&[("verify", "checks = [{ url = \"http://127.0.0.1/\", expect_status = 99 }]")]), "target[0].verify.checks[0].expect_status", "not an HTTP status code"),
            (config(&[("verify", "checks = [{ url = \"http://127.0.0.1/\", max_latency = \"0s\" }]")]), "target[0].verify.checks[0].max_latency", "greater than zero"),
            (config(&[("verify", "checks = [{ url = \"http://127.0.0.1/\", body_contains = \"\" }]")]), "target[0].verify.checks[0].body_contains", "must not be empty"),
            (config(&[("verify", "commands = [[\"curl\", \"{url}\"]]")]), "target[0].verify.commands[0]", "unknown template variable {url}"),
            (config(&[("rollback", "kind = \"symlink\"\ncurrent = \"srv/current\"\nreleases = \"/srv/releases\"")]), "target[0].rollback.current", r#""srv/current" must be an absolute path"#),
            (config(&[("rollback", "kind = \"symlink\"\ncurrent = \"/srv/current\"")]), "target[0].rollback.releases", "required key is missing"),
            (config(&[("rollback", &symlink("restart = [\"systemctl\", \"restart\", \"{service}\"]"))]), "target[0].rollback.restart", "unknown template variable {service}"),
            // [target.verify]
            (config(&[("verify", "rules = false")]), "target[0].verify", "verify has nothing to check: set url, checks, commands or rules = true"),
            (config(&[("verify", "within = \"0s\"")]), "target[0].verify.within", "greater than zero"),
            (config(&[("verify", "url = \"localhost:3000\"")]), "target[0].verify.url", "http:// or https://"),
            (config(&[("verify", "url = \"http://h/\"\nexpect_status = 600")]), "target[0].verify.expect_status", "not an HTTP status code"),
            (config(&[("verify", "expect_status = 200")]), "target[0].verify.expect_status", "needs a url"),
        ];
        for (text, path, fragment) in &cases {
            let errs = errors(text);
            assert!(
                errs.iter()
                    .any(|e| e.path == *path && e.message.contains(fragment)),
                "want {path}: ...{fragment}...\ngot {errs:#?}\nfor config:\n{text}"
            );
            // A single problem gives a single error, not a cascade.
            assert_eq!(errs.len(), 1, "{path}: {errs:#?}\nfor config:\n{text}");
        }
    }

    #[test]
    fn valid_edge_cases_pass() {
        for text in [
            config(&[("daemon", "listen = \"0.0.0.0:9797\"\napi_token_file = \"/etc/rollbackd/token\"")]),
            config(&[("daemon", "listen = \"[::1]:9797\"")]),
            config(&[("target", "cooldown = \"0s\"")]),
            config(&[("rule", &format!("{RULE}\nfor = \"0s\""))]),
            config(&[("rule", &format!("{RULE}\nfor = \"1h30m\""))]),
            config(&[("verify", "rules = false\nurl = \"https://h/health\"")]),
            config(&[("rollback", "kind = \"command\"\nsteps = [[\"curl\", \"-d\", '{\"target\": \"{target}\", \"x\": 1}', \"{incident}-{from_version}..{to_version}\"]]")]),
            config(&[("top", "[notify.email]\nfrom = \"rollbackd <rollbackd@deploy-host>\"\nto = [\"admin@example.com\", \"Ops Team <ops@example.com>\"]")]),
        ] {
            let errs = errors(&text);
            assert!(errs.is_empty(), "{errs:#?}\nfor config:\n{text}");
        }
    }

    #[test]
    fn prometheus_rules_and_version_sources_are_typed() {
        let text = config(&[
            (
                "top",
                "[prometheus]\nurl = \"http://127.0.0.1:9090\"\nusername = \"u\"\npassword_file = \"/etc/p\"\nheaders = { X-Scope-OrgID = \"t1\" }",
            ),
            (
                "target",
                "version_query = \"app_build_info\"\nonly_within = \"2h\"",
            ),
            (
                "rule",
                "name = \"p99\"\nsource = \"prometheus\"\nquery = \"q\"\nabove_baseline = 3.0\nbaseline_query = \"bq\"\nfor = \"1m\"",
            ),
        ]);
        let c = load_str("p.toml", &text).unwrap();
        let p = c.prometheus.unwrap();
        assert_eq!(p.timeout, Duration::from_secs(3));
        assert_eq!(
            p.auth,
            Some(PrometheusAuth::Basic {
                username: "u".into(),
                password_file: "/etc/p".into()
            })
        );
        assert_eq!(p.headers, vec![("X-Scope-OrgID".into(), "t1".into())]);
        let t = &c.targets[0];
        assert_eq!(
            t.version,
            Some(VersionSource::Query {
                query: "app_build_info".into(),
                label: "version".into(),
                server: None,
            })
        );
        assert_eq!(t.only_within, Some(Duration::from_secs(7200)));
        assert_eq!(t.blind_after, Duration::from_secs(300));
        let r = &t.rules[0];
        assert_eq!(r.above, f64::NEG_INFINITY);
        assert_eq!(
            r.source,
            SourceSpec::Prometheus(PromSpec {
                query: "q".into(),
                baseline: Some(BaselineSpec {
                    factor: 3.0,
                    window: Duration::from_secs(3600),
                    query: Some("bq".into()),
                }),
                traffic: None,
                step: None,
                server: None,
            })
        );
        assert_eq!(r.no_data, None);

        // The evidence keys of issue #9: per-rule no_data, traffic guard, step.
        let text = config(&[
            ("top", "[prometheus]\nurl = \"http://127.0.0.1:9090\""),
            (
                "rule",
                "name = \"up\"\nsource = \"prometheus\"\nquery = \"q\"\nabove = 0.05\nno_data = \"breach\"\ntraffic_query = \" sum(rate(t[1m])) \"\nmin_traffic = 1.5\nstep = \"250ms\"",
            ),
        ]);
        let c = load_str("p.toml", &text).unwrap();
        let r = &c.targets[0].rules[0];
        assert_eq!(r.no_data, Some(NoData::Breach));
        let SourceSpec::Prometheus(p) = &r.source else {
            panic!("{r:?}")
        };
        assert_eq!(
            p.traffic,
            Some(TrafficGuard {
                query: "sum(rate(t[1m]))".into(),
                min: 1.5
            })
        );
        assert_eq!(p.step, Some(Duration::from_millis(250)));
        let text = config(&[(
            "rule",
            "name = \"p\"\nsource = \"probe\"\nurl = \"http://h/\"\nabove = 0.5\nmin_samples = 5\nno_data = \"ok\"",
        )]);
        let r = &load_str("p.toml", &text).unwrap().targets[0].rules[0];
        assert_eq!(r.no_data, Some(NoData::Ok));
        let SourceSpec::Probe(p) = &r.source else {
            panic!("{r:?}")
        };
        assert_eq!(p.min_samples, 5);

        let text = config(&[(
            "target",
            "version_url = \"http://h/v\"\nversion_json_pointer = \"/build/v\"",
        )]);
        let c = load_str("u.toml", &text).unwrap();
        assert_eq!(
            c.targets[0].version,
            Some(VersionSource::Url {
                url: "http://h/v".parse().unwrap(),
                json_pointer: Some("/build/v".into())
            })
        );
    }

    #[test]
    fn several_prometheus_servers() {
        // Named servers beside the default; each with its own keys.
        let top = "[prometheus]\nurl = \"http://127.0.0.1:9090\"\n\
                   [prometheus.servers.eu]\nurl = \"http://10.0.0.9:9090\"\ntimeout = \"5s\"\n\
                   bearer_token_file = \"/etc/rollbackd/eu-token\"\nblind_after = \"2m\"\n\
                   headers = { X-Scope-OrgID = \"eu\" }\n\
                   [prometheus.servers.us-east]\nurl = \"http://10.1.0.9:9090\"\n";
        let rule = |server: &str| {
            format!(
                "name = \"errors\"\nsource = \"prometheus\"\nquery = \"up\"\nabove = 1.0\n{server}"
            )
        };
        let text = config(&[
            ("top", top),
            ("rule", &rule("prometheus = \"eu\"")),
            (
                "target",
                "version_query = \"build_info\"\nversion_prometheus = \"us-east\"",
            ),
        ]);
        let c = load_str("p.toml", &text).unwrap();
        assert_eq!(
            c.prometheus.as_ref().unwrap().blind_after,
            Duration::from_secs(300)
        );
        let eu = &c.prometheus_servers["eu"];
        assert_eq!(eu.url.as_str(), "http://10.0.0.9:9090/");
        assert_eq!(eu.timeout, Duration::from_secs(5));
        assert_eq!(eu.blind_after, Duration::from_secs(120));
        assert_eq!(
            eu.auth,
            Some(PrometheusAuth::Bearer {
                token_file: "/etc/rollbackd/eu-token".into()
            })
        );
        assert_eq!(eu.headers, vec![("X-Scope-OrgID".into(), "eu".into())]);
        assert_eq!(
            c.prometheus_servers["us-east"].timeout,
            Duration::from_secs(3)
        );
        assert_eq!(c.prometheus_server(Some("eu")), Some(eu));
        assert_eq!(c.prometheus_server(Some("default")), c.prometheus.as_ref());
        let SourceSpec::Prometheus(p) = &c.targets[0].rules[0].source else {
            panic!()
        };
        assert_eq!(p.server.as_deref(), Some("eu"));
        let Some(VersionSource::Query { server, .. }) = &c.targets[0].version else {
            panic!()
        };
        assert_eq!(server.as_deref(), Some("us-east"));
        assert_eq!(
            super::super::secrets::secret_files(&c),
            vec![(
                "prometheus.servers.eu.bearer_token_file".to_string(),
                PathBuf::from("/etc/rollbackd/eu-token")
            )]
        );
        // `prometheus = "default"` is [prometheus] itself.
        let c = load_str(
            "p.toml",
            &config(&[("top", top), ("rule", &rule("prometheus = \"default\""))]),
        )
        .unwrap();
        let SourceSpec::Prometheus(p) = &c.targets[0].rules[0].source else {
            panic!()
        };
        assert_eq!(p.server, None);
        // No default server: fine while every rule names one.
        let no_default = "[prometheus.servers.eu]\nurl = \"http://10.0.0.9:9090\"\n";
        let c = load_str(
            "p.toml",
            &config(&[("top", no_default), ("rule", &rule("prometheus = \"eu\""))]),
        )
        .unwrap();
        assert!(c.prometheus.is_none());
        // Today's files are unchanged: one [prometheus], no servers.
        let c = load_str(
            "p.toml",
            &config(&[
                ("top", "[prometheus]\nurl = \"http://127.0.0.1:9090\""),
                ("rule", &rule("")),
            ]),
        )
        .unwrap();
        assert!(c.prometheus_servers.is_empty());

        let cases: Vec<(String, &str, &str)> = vec![
            (config(&[("top", top), ("rule", &rule("prometheus = \"us\""))]), "target[0].rule[0].prometheus", r#"unknown Prometheus server "us" (known: "default", "eu", "us-east")"#),
            (config(&[("top", no_default), ("rule", &rule(""))]), "target[0].rule[0].prometheus", r#"[prometheus] has no url (no default server), so name one: prometheus = one of "eu""#),
            (config(&[("top", no_default), ("rule", &rule("prometheus = \"default\""))]), "target[0].rule[0].prometheus", "no default server"),
            (config(&[("top", no_default), ("target", "version_query = \"build_info\"")]), "target[0].version_prometheus", r#"so name one: version_prometheus = one of "eu""#),
            (config(&[("top", top), ("target", "version_query = \"b\"\nversion_prometheus = \"asia\"")]), "target[0].version_prometheus", r#"unknown Prometheus server "asia""#),
            (config(&[("top", top), ("target", "version_prometheus = \"eu\"")]), "target[0].version_prometheus", "version_prometheus needs version_query"),
            (config(&[("top", top), ("rule", "name = \"cpu\"\nsource = \"host\"\nmetric = \"cpu\"\nabove = 0.9\nprometheus = \"eu\"")]), "target[0].rule[0].prometheus", r#"key prometheus does not apply to source "host""#),
            (config(&[("top", &format!("[prometheus]\ntimeout = \"5s\"\n{no_default}")), ("rule", &rule("prometheus = \"eu\""))]), "prometheus.timeout", "timeout applies to the default server, which has no url"),
            (config(&[("top", "[prometheus.servers.eu]\ntimeout = \"5s\"")]), "prometheus.servers.eu.url", "required key is missing"),
            (config(&[("top", &format!("{no_default}blind_after = \"0s\""))]), "prometheus.servers.eu.blind_after", "greater than zero"),
            (config(&[("top", &format!("{no_default}username = \"u\""))]), "prometheus.servers.eu.password_file", "username needs password_file"),
            (config(&[("top", &format!("{no_default}bearer_token_file = \"t\""))]), "prometheus.servers.eu.bearer_token_file", "must be an absolute path"),
            (config(&[("top", &format!("{no_default}urll = \"x\""))]), "prometheus.servers.eu.urll", "unknown key"),
            (config(&[("top", &format!("{no_default}[prometheus.servers.eu.servers.x]\nurl = \"http://h/\""))]), "prometheus.servers.eu.servers", "unknown key"),
            (config(&[("top", "[prometheus]\nurl = \"http://h/\"\n[prometheus.servers.default]\nurl = \"http://h2/\"")]), "prometheus.servers.default", "means [prometheus] itself"),
            (config(&[("top", "[prometheus]\nurl = \"http://h/\"\n[prometheus.servers.\"e u\"]\nurl = \"http://h2/\"")]), "prometheus.servers.e u", "invalid server name \"e u\""),
            (config(&[("top", "[prometheus]\nurl = \"http://h/\"\nservers = 3")]), "prometheus.servers", "expected a table [prometheus.servers]"),
            (config(&[("top", "[prometheus]\nurl = \"http://h/\"\nservers = { eu = 3 }")]), "prometheus.servers.eu", "expected a table"),
        ];
        for (text, path, fragment) in &cases {
            let errs = errors(text);
            assert!(
                errs.iter()
                    .any(|e| e.path == *path && e.message.contains(fragment)),
                "want {path}: ...{fragment}...\ngot {errs:#?}\nfor config:\n{text}"
            );
            assert_eq!(errs.len(), 1, "{path}: {errs:#?}\nfor config:\n{text}");
        }
    }

    #[test]
    fn error_display_is_file_path_message() {
        let text = config(&[(
            "rule",
            &format!("{RULE}\n[[target.rule]]\nname = \"b\"\nsource = \"host\"\nmetric = \"cpu\"\nabove = 0.9\nfor = \"5 minutes\""),
        )]);
        let e = load_str("rollbackd.toml", &text).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"rollbackd.toml: target[0].rule[1].for: invalid duration "5 minutes" (use e.g. "30s", "5m", "1h")"#
        );
    }

    #[test]
    fn five_problems_in_different_places_are_all_reported() {
        let text = r#"
            [daemon]
            poll_interval = "5"

            [notify.email]
            from = "rollbackd <rollbackd@deploy-host>"
            to = ["admin@example.com", "not an address"]

            [[window]]
            name = "release"
            days = ["sat"]
            start = "22:00"
            end = "02:00"
            timezone = "Mars/Base"

            [[target]]
            name = "web"
              [[target.rule]]
              name = "health"
              source = "probe"
              url = "http://127.0.0.1:3000/health"
              above = 0.5
              [[target.rule]]
              name = "cpu"
              source = "host"
              metric = "cpu"
              above = 70
              fooo = true
              [target.rollback]
              kind = "ftp"
        "#;
        let errs = errors(text);
        let got: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        let mut want = vec![
            "daemon.poll_interval",
            "notify.email.to[1]",
            "window[0].timezone",
            "target[0].rule[1].above",
            "target[0].rule[1].fooo",
            "target[0].rollback.kind",
        ];
        let mut got_sorted = got.clone();
        got_sorted.sort();
        want.sort();
        assert_eq!(got_sorted, want, "{errs:#?}");
        assert!(errs.iter().all(|e| e.file == "rollbackd.toml"));
    }

    #[test]
    fn a_mistyped_value_is_reported_once() {
        // The raw phase rejects `above`; validation must not add "rule has
        // no condition" for the same key.
        let errs = errors(&config(&[(
            "rule",
            "name = \"c\"\nsource = \"host\"\nmetric = \"cpu\"\nabove = \"70%\"",
        )]));
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!(errs[0].path, "target[0].rule[0].above");
        assert_eq!(errs[0].message, r#"expected a number, found string "70%""#);

        // A target that is not a table is one error, not one per missing key.
        let errs = errors(&format!("target = [5]\n{}", ""));
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!(errs[0].path, "target[0]");
    }

    #[test]
    fn minimal_config_gets_the_defaults() {
        let c = load_str("min.toml", &config(&[])).unwrap();
        let d = &c.daemon;
        assert_eq!(d.state_dir, PathBuf::from("/var/lib/rollbackd"));
        assert_eq!(d.listen, "127.0.0.1:9797".parse().unwrap());
        assert_eq!(d.poll_interval, Duration::from_secs(5));
        assert!(!d.dry_run);
        assert_eq!(d.api_token_file, None);
        assert_eq!(d.public_url, None);
        assert!(c.notify.email.is_none());
        assert!(c.windows.is_empty());

        let t = &c.targets[0];
        assert_eq!(t.name, "web");
        assert_eq!(t.version, None);
        assert_eq!(t.cooldown, Duration::from_secs(30 * 60));
        assert_eq!(t.max_rollbacks_per_hour.get(), 1);
        assert_eq!(t.no_data, NoData::Hold);
        assert_eq!(
            t.rules,
            vec![RuleConfig {
                name: "health".into(),
                source: SourceSpec::Probe(ProbeSpec {
                    url: "http://127.0.0.1:3000/health".parse().unwrap(),
                    timeout: Duration::from_secs(2),
                    expect_status: None,
                    measure: ProbeMeasure::FailureRatio,
                    window: Duration::from_secs(30),
                    min_samples: 3,
                }),
                above: 0.5,
                for_: Duration::ZERO,
                no_data: None,
                shadow: false,
            }]
        );
        assert_eq!(
            t.rollback,
            RollbackPlan {
                kind: ExecutorKind::Command {
                    steps: vec![vec!["systemctl".into(), "restart".into(), "web".into()].into()]
                },
                timeout: Duration::from_secs(300),
                after: vec![],
                pre: vec![],
                step_timeout: None,
                on_failure: vec![],
                cwd: None,
                env: Default::default(),
            }
        );
        assert_eq!(
            t.verify,
            VerifyConfig {
                within: Duration::from_secs(300),
                url: None,
                expect_status: None,
                rules: true,
                checks: vec![],
                commands: vec![],
            }
        );

        // The outbox defaults to state_dir/outbox.
        let c = load_str(
            "min.toml",
            &config(&[
                (
                    "top",
                    "[notify.email]\nfrom = \"r@h\"\nto = [\"a@example.com\"]",
                ),
                ("daemon", "state_dir = \"/tmp/rb\""),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.notify.email.unwrap().outbox_dir,
            PathBuf::from("/tmp/rb/outbox")
        );
    }

    #[test]
    fn version_source() {
        let symlink =
            "kind = \"symlink\"\ncurrent = \"/srv/app/current\"\nreleases = \"/srv/app/releases\"";
        let c = load_str("t", &config(&[("rollback", symlink)])).unwrap();
        assert_eq!(
            c.targets[0].version,
            Some(VersionSource::Symlink("/srv/app/current".into()))
        );
        let c = load_str(
            "t",
            &config(&[
                ("rollback", symlink),
                (
                    "target",
                    "version_command = [\"cat\", \"/srv/app/VERSION\"]",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.targets[0].version,
            Some(VersionSource::Command(vec![
                "cat".into(),
                "/srv/app/VERSION".into()
            ]))
        );
    }

    #[test]
    fn window_values() {
        let c = load_str(
            "t",
            &config(&[(
                "top",
                "[[window]]\nname = \"w\"\ndays = [\"fri\", \"sat\"]\nstart = \"22:00\"\nend = \"02:30\"\ntimezone = \"Asia/Shanghai\"",
            )]),
        )
        .unwrap();
        let w = &c.windows[0];
        assert_eq!(w.days, vec![chrono::Weekday::Fri, chrono::Weekday::Sat]);
        assert_eq!(w.start, chrono::NaiveTime::from_hms_opt(22, 0, 0).unwrap());
        assert_eq!(w.end, chrono::NaiveTime::from_hms_opt(2, 30, 0).unwrap());
        assert_eq!(w.timezone, chrono_tz::Asia::Shanghai);
    }

    #[test]
    fn template_placeholders() {
        assert_eq!(template_names("{to_version}"), vec!["to_version"]);
        assert_eq!(
            template_names("a{target}-{incident}b"),
            vec!["target", "incident"]
        );
        assert_eq!(template_names(r#"{"a": 1}"#), Vec::<&str>::new());
        assert_eq!(template_names("{"), Vec::<&str>::new());
        assert_eq!(template_names("{{x}}"), vec!["x"]);
        assert_eq!(template_names("${HOME}"), vec!["HOME"]);
    }

    #[test]
    fn every_executor_kind_with_its_defaults() {
        let kind = |rollback: &str| {
            load_str("t", &config(&[("rollback", rollback)]))
                .unwrap_or_else(|e| panic!("{rollback}: {e}"))
                .targets
                .remove(0)
        };
        let t = kind("kind = \"kubernetes\"\ndeployment = \"web\"\nnamespace = \"prod\"\nto_revision = 3\nstep_timeout = \"20s\"\npre = [[\"true\"]]");
        assert_eq!(
            t.rollback.kind,
            ExecutorKind::Kubernetes {
                deployment: "web".into(),
                namespace: "prod".into(),
                context: None,
                to_revision: Some(3),
                kubectl: "kubectl".into(),
            }
        );
        assert_eq!(t.rollback.step_timeout, Some(Duration::from_secs(20)));
        assert_eq!(t.rollback.pre, vec![vec!["true".to_string()].into()]);
        // Step context: plan-level cwd and env, table steps next to plain
        // argv lists, on_failure; verification gates.
        let t = load_str(
            "t",
            &config(&[
                (
                    "rollback",
                    "kind = \"command\"\ncwd = \"/srv/app\"\nenv = { NODE_ENV = \"production\" }\nsteps = [[\"pm2\", \"stop\", \"app\"], { argv = [\"sh\", \"-c\", \"cp .env.example .env.local\"], cwd = \"/srv/app/web\", env = { A = \"1\" }, timeout = \"10s\" }]\non_failure = [[\"sh\", \"-c\", \"journalctl -u app > \\\"/tmp/$1.log\\\"\", \"sh\", \"{incident}\"]]",
                ),
                (
                    "verify",
                    "commands = [[\"curl\", \"-fsS\", \"http://127.0.0.1/login\"]]\nchecks = [{ url = \"http://127.0.0.1/api\", expect_status = 200, body_contains = \"ok\", max_latency = \"500ms\" }]",
                ),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .targets
        .remove(0);
        assert_eq!(t.rollback.cwd, Some(PathBuf::from("/srv/app")));
        assert_eq!(
            t.rollback.env.get("NODE_ENV").map(String::as_str),
            Some("production")
        );
        let ExecutorKind::Command { steps } = &t.rollback.kind else {
            panic!("command");
        };
        assert_eq!(
            steps[0],
            crate::config::Step::from(vec!["pm2".to_string(), "stop".into(), "app".into()])
        );
        assert_eq!(steps[1].cwd, Some(PathBuf::from("/srv/app/web")));
        assert_eq!(steps[1].env.get("A").map(String::as_str), Some("1"));
        assert_eq!(steps[1].timeout, Some(Duration::from_secs(10)));
        assert_eq!(t.rollback.on_failure.len(), 1);
        assert_eq!(t.verify.commands.len(), 1);
        assert_eq!(
            t.verify.checks[0].max_latency,
            Some(Duration::from_millis(500))
        );
        assert_eq!(t.verify.checks[0].body_contains.as_deref(), Some("ok"));
        assert_eq!(t.verify.checks[0].expect_status, Some(200));
        let t = kind("kind = \"blue_green\"\nservice = \"web\"\nnamespace = \"prod\"");
        assert_eq!(
            t.rollback.kind,
            ExecutorKind::BlueGreen {
                service: "web".into(),
                namespace: "prod".into(),
                context: None,
                selector_key: "version".into(),
                colors: ["blue".into(), "green".into()],
                kubectl: "kubectl".into(),
            }
        );
        let t = kind("kind = \"docker\"\ncontainer = \"web\"\nimage = \"registry:5000/app\"\nrun_args = [\"-p\", \"80:80\"]");
        assert_eq!(
            t.rollback.kind,
            ExecutorKind::Docker {
                container: "web".into(),
                image: "registry:5000/app".into(),
                run_args: vec!["-p".into(), "80:80".into()],
                docker: "docker".into(),
            }
        );
        let t = kind("kind = \"git\"\nrepo = \"/srv/app\"\nbuild = [[\"npm\", \"ci\"]]\nrestart = [\"pm2\", \"restart\", \"{target}\"]");
        assert_eq!(
            t.version,
            Some(VersionSource::Command(
                ["git", "-C", "/srv/app", "describe", "--tags", "--always"]
                    .map(String::from)
                    .to_vec()
            ))
        );
        let t = kind("kind = \"webhook\"\nurl = \"https://ci.example.com/rollback\"\ntoken_file = \"/etc/rollbackd/ci-token\"\nbody = { ref = \"{to_version}\", why = \"{incident}\" }");
        let ExecutorKind::Webhook { body, .. } = t.rollback.kind else {
            panic!("webhook expected");
        };
        let body: serde_json::Value = serde_json::from_str(&body.unwrap()).unwrap();
        assert_eq!(body["ref"], "{to_version}");
    }

    #[test]
    fn notify_smtp_and_webhooks() {
        let c = load_str("t", &config(&[])).unwrap();
        assert_eq!(c.notify.give_up_after, Duration::from_secs(24 * 3600));
        assert_eq!(c.notify.max_per_target_per_hour.get(), 20);
        assert_eq!(c.notify.max_per_hour.get(), 60);
        assert!(c.notify.webhooks.is_empty());
        assert_eq!(
            c.notify.outbox_dir,
            PathBuf::from("/var/lib/rollbackd/outbox")
        );

        let mail = |extra: &str| {
            let text = config(&[(
                "top",
                &format!("[notify.email]\nfrom = \"r@h\"\nto = [\"a@example.com\"]\n{extra}"),
            )]);
            load_str("t", &text).unwrap().notify.email.unwrap().smtp
        };
        assert_eq!(mail(""), None);
        let smtp = |host: &str, port, security| SmtpConfig {
            host: host.into(),
            port,
            security,
            username: None,
            password_file: None,
            timeout: Duration::from_secs(30),
            ca_file: None,
        };
        for (url, want) in [
            (
                "smtp://127.0.0.1",
                smtp("127.0.0.1", 25, SmtpSecurity::Plain),
            ),
            (
                "smtp://127.0.0.1:2525/",
                smtp("127.0.0.1", 2525, SmtpSecurity::Plain),
            ),
            (
                "smtp://mail.example.com?tls=starttls",
                smtp("mail.example.com", 587, SmtpSecurity::StartTls),
            ),
            (
                "smtps://mail.example.com",
                smtp("mail.example.com", 465, SmtpSecurity::Tls),
            ),
            ("smtps://[::1]:1465", smtp("::1", 1465, SmtpSecurity::Tls)),
        ] {
            assert_eq!(mail(&format!("smtp_url = {url:?}")), Some(want), "{url}");
        }
        let auth = mail("smtp_url = \"smtps://mail.example.com\"\nusername = \"rb\"\npassword_file = \"/etc/rb/pw\"\ntimeout = \"5s\"").unwrap();
        assert_eq!(auth.username.as_deref(), Some("rb"));
        assert_eq!(auth.password_file, Some(PathBuf::from("/etc/rb/pw")));
        assert_eq!(auth.timeout, Duration::from_secs(5));
        let ca = mail(
            "smtp_url = \"smtp://mail.example.com?tls=starttls\"\nca_file = \"/etc/rb/ca.pem\"",
        )
        .unwrap();
        assert_eq!(ca.ca_file, Some(PathBuf::from("/etc/rb/ca.pem")));
        // Username without password_file: the password comes from the environment.
        assert!(mail("smtp_url = \"smtp://127.0.0.1:25\"\nusername = \"rb\"").is_some());

        let c = load_str(
            "t",
            &config(&[
                ("daemon", "state_dir = \"/tmp/rb\""),
                ("top", "[notify]\ngive_up_after = \"1h\"\nmax_per_hour = 5\nmax_per_target_per_hour = 2\n[[notify.webhook]]\nurl = \"https://chat.example.com/hook\"\n[[notify.webhook]]\nurl = \"http://127.0.0.1:1/\"\nformat = \"slack\"\ntimeout = \"2s\""),
            ]),
        )
        .unwrap();
        let n = &c.notify;
        assert_eq!(n.give_up_after, Duration::from_secs(3600));
        assert_eq!(
            (n.max_per_hour.get(), n.max_per_target_per_hour.get()),
            (5, 2)
        );
        assert_eq!(n.outbox_dir, PathBuf::from("/tmp/rb/outbox"));
        assert_eq!(n.webhooks.len(), 2);
        assert_eq!(n.webhooks[0].format, WebhookFormat::Json);
        assert_eq!(n.webhooks[0].timeout, Duration::from_secs(30));
        assert_eq!(n.webhooks[1].format, WebhookFormat::Slack);
        assert_eq!(n.webhooks[1].timeout, Duration::from_secs(2));
    }

    #[test]
    fn cluster_section_is_checked() {
        let cluster = |body: &str| config(&[("top", &format!("[cluster]\n{body}"))]);
        const ETCD: &str = "etcd = [\"http://10.0.0.5:2379\"]";
        const TLS: &str =
            "etcd = [\"https://etcd-1.internal:2379\", \"https://etcd-2.internal:2379\"]";
        let cases: Vec<(String, &str, &str)> = vec![
            (cluster(""), "cluster.etcd", "required key is missing"),
            (cluster("etcd = []"), "cluster.etcd", "names no endpoint"),
            (
                cluster("etcd = [\"10.0.0.5:2379\"]"),
                "cluster.etcd[0]",
                "invalid URL \"10.0.0.5:2379\"",
            ),
            (
                cluster("etcd = [\"grpc://10.0.0.5:2379\"]"),
                "cluster.etcd[0]",
                "must start with http:// or https://",
            ),
            (
                cluster("etcd = [\"http://10.0.0.5\"]"),
                "cluster.etcd[0]",
                "has no port",
            ),
            (
                cluster("etcd = [\"http://10.0.0.5:2379/v3\"]"),
                "cluster.etcd[0]",
                "must not have a path",
            ),
            (
                cluster("etcd = [\"http://root:pw@10.0.0.5:2379\"]"),
                "cluster.etcd[0]",
                "credentials do not belong",
            ),
            (
                cluster("etcd = [\"http://10.0.0.5:2379\", \"http://10.0.0.5:2379\"]"),
                "cluster.etcd[1]",
                "listed twice",
            ),
            (
                cluster("etcd = [\"http://10.0.0.5:2379\", \"https://10.0.0.6:2379\"]"),
                "cluster.etcd",
                "mixes http:// and https://",
            ),
            (
                cluster(&format!("{ETCD}\nprefix = \"rollbackd\"")),
                "cluster.prefix",
                "prefix = \"rollbackd\" must start with \"/\"",
            ),
            (
                cluster(&format!("{ETCD}\nprefix = \"/roll backd/\"")),
                "cluster.prefix",
                "must not contain spaces",
            ),
            (
                cluster(&format!("{ETCD}\nnode = \"\"")),
                "cluster.node",
                "must be 1 to 128 characters",
            ),
            (
                cluster(&format!("{ETCD}\nnode = \"a/b\"")),
                "cluster.node",
                "node = \"a/b\" must not contain \"/\"",
            ),
            (
                cluster(&format!("{ETCD}\nlease_ttl = \"1s\"")),
                "cluster.lease_ttl",
                "lease_ttl = \"1s\" is below the minimum of 2s",
            ),
            (
                cluster(&format!("{ETCD}\nlease_ttl = \"2500ms\"")),
                "cluster.lease_ttl",
                "must be whole seconds",
            ),
            (
                cluster(&format!("{ETCD}\nlease_ttl = \"2h\"")),
                "cluster.lease_ttl",
                "above the maximum of 1h",
            ),
            (
                cluster(&format!("{ETCD}\nlease_ttl = \"ten\"")),
                "cluster.lease_ttl",
                "invalid duration \"ten\"",
            ),
            (
                cluster(&format!("{ETCD}\non_etcd_down = \"panic\"")),
                "cluster.on_etcd_down",
                "invalid on_etcd_down \"panic\" (use \"hold\" or \"act_alone\")",
            ),
            (
                cluster(&format!("{TLS}\nca_file = \"ca.pem\"")),
                "cluster.ca_file",
                "\"ca.pem\" must be an absolute path",
            ),
            (
                cluster(&format!("{TLS}\ncert_file = \"/etc/rollbackd/etcd.pem\"")),
                "cluster.cert_file",
                "cert_file is set but key_file is not",
            ),
            (
                cluster(&format!("{TLS}\nkey_file = \"/etc/rollbackd/etcd.key\"")),
                "cluster.key_file",
                "key_file is set but cert_file is not",
            ),
            (
                cluster(&format!("{ETCD}\nca_file = \"/etc/rollbackd/ca.pem\"")),
                "cluster.ca_file",
                "TLS keys only matter with https://",
            ),
            (
                cluster(&format!("{TLS}\nusername = \"rollbackd\"")),
                "cluster.username",
                "username is set but password_file is not",
            ),
            (
                cluster(&format!(
                    "{TLS}\npassword_file = \"/etc/rollbackd/etcd-password\""
                )),
                "cluster.password_file",
                "password_file is set but username is not",
            ),
            (
                cluster(&format!(
                    "{TLS}\nusername = \"\"\npassword_file = \"/etc/rollbackd/etcd-password\""
                )),
                "cluster.username",
                "must not be empty",
            ),
            (
                cluster(&format!("{TLS}\npassword = \"hunter2\"")),
                "cluster.password",
                "never read from the config file",
            ),
            (
                cluster(&format!(
                    "{ETCD}\nusername = \"rb\"\npassword_file = \"/etc/rollbackd/etcd-password\""
                )),
                "cluster.etcd",
                "\"http://10.0.0.5:2379/\" is plaintext to a remote host and username is set",
            ),
            (
                cluster(&format!("{ETCD}\nleader = true")),
                "cluster.leader",
                "unknown key",
            ),
            (
                config(&[("top", "cluster = 1")]),
                "cluster",
                "expected a table [cluster]",
            ),
        ];
        for (text, path, fragment) in &cases {
            let errs = errors(text);
            assert!(
                errs.iter()
                    .any(|e| e.path == *path && e.message.contains(fragment)),
                "want {path}: ...{fragment}...\ngot {errs:#?}\nfor config:\n{text}"
            );
            assert_eq!(errs.len(), 1, "{path}: {errs:#?}\nfor config:\n{text}");
        }

        // `{lease}` (the fencing token) needs [cluster]; with it, it is valid.
        let fenced = "kind = \"command\"\nsteps = [[\"deploy\", \"--fence={lease}\"]]";
        let errs = errors(&config(&[("rollback", fenced)]));
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!(errs[0].path, "target[0].rollback.steps[0]");
        assert!(
            errs[0].message.contains("needs a [cluster] section"),
            "{errs:#?}"
        );
        let body = "kind = \"webhook\"\nurl = \"https://ci/\"\nbody = '{\"fence\": \"{lease}\"}'";
        let errs = errors(&config(&[("rollback", body)]));
        assert!(
            errs.len() == 1 && errs[0].message.contains("needs a [cluster] section"),
            "{errs:#?}"
        );
        let with_cluster = config(&[("top", &format!("[cluster]\n{ETCD}")), ("rollback", fenced)]);
        assert!(load_str("t", &with_cluster).is_ok());

        // No section: no cluster. Defaults, and a full TLS + auth section.
        assert!(load_str("t", &config(&[])).unwrap().cluster.is_none());
        let c = load_str("t", &cluster(ETCD)).unwrap().cluster.unwrap();
        assert_eq!(c.prefix, "/rollbackd/");
        assert_eq!(c.node, None);
        assert_eq!(c.lease_ttl, Duration::from_secs(10));
        assert_eq!(c.on_etcd_down, super::super::OnEtcdDown::Hold);
        assert!(c.client_cert.is_none() && c.auth.is_none() && c.ca_file.is_none());
        let c = load_str(
            "t",
            &cluster(&format!(
                "{TLS}\nprefix = \"/ops/rollbackd\"\nnode = \"deploy-1\"\nlease_ttl = \"5s\"\n\
                 ca_file = \"/etc/rollbackd/etcd-ca.pem\"\ncert_file = \"/etc/rollbackd/etcd.pem\"\n\
                 key_file = \"/etc/rollbackd/etcd.key\"\nusername = \"rollbackd\"\n\
                 password_file = \"/etc/rollbackd/etcd-password\"\non_etcd_down = \"act_alone\""
            )),
        )
        .unwrap()
        .cluster
        .unwrap();
        assert_eq!(c.etcd.len(), 2);
        assert_eq!(c.prefix, "/ops/rollbackd/");
        assert_eq!(c.node.as_deref(), Some("deploy-1"));
        assert_eq!(c.lease_ttl, Duration::from_secs(5));
        assert_eq!(c.on_etcd_down, super::super::OnEtcdDown::ActAlone);
        assert_eq!(
            c.client_cert.unwrap().key_file,
            PathBuf::from("/etc/rollbackd/etcd.key")
        );
        assert_eq!(c.auth.unwrap().username, "rollbackd");
        // Auth over plaintext to this machine's own etcd is fine.
        assert!(load_str(
            "t",
            &cluster("etcd = [\"http://127.0.0.1:2379\"]\nusername = \"rb\"\npassword_file = \"/etc/rb/pw\"")
        )
        .is_ok());
    }
}
