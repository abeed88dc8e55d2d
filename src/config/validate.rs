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
    join, RawCheck, RawCluster, RawConfig, RawDaemon, RawNotify, RawPrometheus, RawRollback,
    RawRule, RawTarget, RawTargetNotify, RawVerify, RawWindow,
};
use super::{
    duration, BlastRadius, ClusterAuth, ClusterClientCert, ClusterConfig, Config, DaemonConfig,
    ExecutorKind, LogFormat, NoData, NotifyConfig, PrometheusAuth, PrometheusConfig, RollbackPlan,
    RuleConfig, SourceSpec, TargetConfig, VerifyCheck, VerifyConfig, Window,
};
// The source kinds' specs, which the tests below build.
#[cfg(test)]
use super::{BaselineSpec, ProbeMeasure, ProbeSpec, PromSpec, TrafficGuard};
// The outlets' config types, which the notify tests build.
#[cfg(test)]
use super::{SmtpConfig, SmtpSecurity, WebhookFormat};

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
use crate::notify::email::mailbox;
/// Default SMTP and webhook `timeout` (the outlets' files use it).
pub use crate::notify::outlet::DEFAULT_NOTIFY_TIMEOUT;

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
    let mut notify = notify(cx, raw.notify.unwrap_or_default(), state_dir);
    // Asked of every outlet; before any other warning, as it always was.
    if let Some(nobody) = notify.as_ref().and_then(NotifyConfig::nobody_notified) {
        cx.warn("notify", nobody);
    }
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

/// `[target.notify]` checked against every outlet (webhook names must
/// exist; `to` needs `[notify.email]`), then added to the routes.
fn target_routes(cx: &mut Cx, p: &str, target: &TargetConfig, notify: &mut NotifyConfig) {
    let route = &target.notify;
    if *route == super::TargetNotify::default() {
        return;
    }
    notify.check_route(cx, p, route);
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

/// One `[[target]]` at key path `p`, with its rules, rollback plan,
/// verification, confirmation and notification routes.
fn target(cx: &mut Cx, p: &str, raw: &RawTarget) -> Option<TargetConfig> {
    let name = target_name(cx, p, raw);
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
    let max_rollbacks_per_hour = max_rollbacks_per_hour(cx, p, raw);
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
    let rules = target_rules(cx, p, raw);

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
        // The executor's own reading, if it has one (symlink, git).
        (None, None) => rollback.kind.version_source(),
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

/// `name`: required, and safe as a `{target}` argument ([`target_name_ok`]).
fn target_name(cx: &mut Cx, p: &str, raw: &RawTarget) -> Option<String> {
    cx.required(p, "name", raw.name.as_deref()).and_then(|n| {
        if target_name_ok(n) {
            Some(n.to_string())
        } else {
            cx.err(
                join(p, "name"),
                format!("invalid target name {n:?}: use letters, digits, '.', '_' and '-' only, not starting with '-'"),
            );
            None
        }
    })
}

/// `max_rollbacks_per_hour`: at least 1 (default 1).
fn max_rollbacks_per_hour(cx: &mut Cx, p: &str, raw: &RawTarget) -> Option<NonZeroU32> {
    match raw.max_rollbacks_per_hour {
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
    }
}

/// The target's `[[target.rule]]`s: at least one, their names unique;
/// `None` for each rule that is invalid.
fn target_rules(cx: &mut Cx, p: &str, raw: &RawTarget) -> Vec<Option<RuleConfig>> {
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
    raw.rule
        .iter()
        .enumerate()
        .map(|(i, r)| rule(cx, &format!("{p}.rule[{i}]"), r))
        .collect()
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
mod tests;
