//! Configuration: a raw serde layer ([`raw`]) that mirrors the TOML file and
//! rejects unknown keys, and a pure [`validate`] step into the typed values
//! below. Validation collects every problem with its key path before failing
//! and does no I/O.

pub mod duration;
pub mod raw;
pub mod validate;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use validate::{validate, ConfigError, ConfigErrors};

/// Read and validate a config file. Errors carry the file name and key path.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::single(&file, "", format!("cannot read config file: {e}")))?;
    load_str(&file, &text)
}

/// Parse and validate config text; `file` names it in errors. Problems of
/// both phases (unknown keys, wrong types, invalid values) are reported
/// together; only a TOML syntax error stops before validation.
pub fn load_str(file: &str, text: &str) -> Result<Config, ConfigErrors> {
    let (raw, raw_errors) = raw::parse_partial(file, text)?;
    validate::validate_collecting(file, raw, raw_errors)
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Process-wide settings.
    pub daemon: DaemonConfig,
    /// `[prometheus]`: where `source = "prometheus"` rules and `version_query` ask.
    pub prometheus: Option<PrometheusConfig>,
    /// Where notifications go.
    pub notify: NotifyConfig,
    /// Release windows: inside one, every decision is dry-run.
    pub windows: Vec<Window>,
    /// The services watched, each with its rules and rollback plan.
    pub targets: Vec<TargetConfig>,
}

/// `[daemon]`.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Journal, outbox and incident records live here.
    pub state_dir: PathBuf,
    /// Address of the HTTP API and /metrics.
    pub listen: SocketAddr,
    /// How often every rule is evaluated.
    pub poll_interval: Duration,
    /// Never execute; record and notify "would roll back" only.
    pub dry_run: bool,
    /// Bearer token for mutating API routes.
    pub api_token_file: Option<PathBuf>,
    /// Base URL for links in email.
    pub public_url: Option<url::Url>,
}

/// `[prometheus]`. Secrets are named by file and read when the daemon starts
/// (validation does no I/O).
#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusConfig {
    /// Base URL, e.g. `http://127.0.0.1:9090`.
    pub url: url::Url,
    /// HTTP timeout of one query, connect to end of body.
    pub timeout: Duration,
    /// Basic auth or bearer token, if Prometheus sits behind a proxy that wants one.
    pub auth: Option<PrometheusAuth>,
    /// Extra request headers (e.g. `X-Scope-OrgID` for Mimir/Cortex).
    pub headers: Vec<(String, String)>,
}

/// How rollbackd authenticates to Prometheus.
#[derive(Debug, Clone, PartialEq)]
pub enum PrometheusAuth {
    /// `username` + `password_file`.
    Basic {
        /// User name.
        username: String,
        /// File holding the password (trailing newline ignored).
        password_file: PathBuf,
    },
    /// `bearer_token_file`.
    Bearer {
        /// File holding the token (trailing newline ignored).
        token_file: PathBuf,
    },
}

/// `[notify]`.
#[derive(Debug, Clone, Default)]
pub struct NotifyConfig {
    /// `[notify.email]`; without it notifications are only logged and journaled.
    pub email: Option<EmailConfig>,
}

/// `[notify.email]`.
#[derive(Debug, Clone)]
pub struct EmailConfig {
    /// RFC 5322 mailbox, e.g. `rollbackd <rollbackd@host>`; checked by validation.
    pub from: String,
    /// At least one recipient mailbox.
    pub to: Vec<String>,
    /// Every mail is written here first (default `state_dir/outbox`).
    pub outbox_dir: PathBuf,
}

/// `no_data = hold | ok | breach`: what an evaluation without data means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoData {
    /// Keep the previous status; `for` does not advance.
    Hold,
    /// Treat missing data as the condition not holding.
    Ok,
    /// Treat missing data as the condition holding.
    Breach,
}

/// Where a target's live version is read from.
#[derive(Debug, Clone, PartialEq)]
pub enum VersionSource {
    /// argv run directly; trimmed stdout is the version.
    Command(Vec<String>),
    /// For `symlink` targets without an explicit source: the name of the
    /// release directory `current` points to.
    Symlink(PathBuf),
    /// `version_url`: HTTP GET; the body (plain text), or the string at
    /// `json_pointer` in a JSON body.
    Url {
        /// The URL fetched.
        url: url::Url,
        /// RFC 6901 pointer such as `/build/version`.
        json_pointer: Option<String>,
    },
    /// `version_query`: the value of `label` on the query's result series.
    Query {
        /// PromQL, e.g. `app_build_info{job="app"}`.
        query: String,
        /// The label naming the version (default `version`).
        label: String,
    },
}

/// `[[target]]`.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// Unique name; appears in incident IDs, subjects and `{target}`.
    pub name: String,
    /// How the live version is read, if at all.
    pub version: Option<VersionSource>,
    /// Quiet time after an incident ends before the target is watched again.
    pub cooldown: Duration,
    /// At most this many executed rollbacks in any hour.
    pub max_rollbacks_per_hour: NonZeroU32,
    /// Meaning of evaluations without data.
    pub no_data: NoData,
    /// Roll back automatically only when the live version was deployed
    /// within this long; otherwise escalate (a stale release is not what broke).
    pub only_within: Option<Duration>,
    /// After a rule has been Unknown this long, the admin is told that
    /// monitoring is blind (default 5m).
    pub blind_after: Duration,
    /// At least one rule.
    pub rules: Vec<RuleConfig>,
    /// What to run to roll back.
    pub rollback: RollbackPlan,
    /// How recovery is checked after the plan succeeded.
    pub verify: VerifyConfig,
}

/// `[[target.rule]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleConfig {
    /// Unique within the target.
    pub name: String,
    /// Where the value comes from.
    pub source: SourceSpec,
    /// Breach when the value is strictly above this. `-inf` for a
    /// Prometheus rule with only `above_baseline` (no absolute floor).
    pub above: f64,
    /// The condition must hold on every evaluation for this long.
    pub for_: Duration,
}

/// The source of one rule's value.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// One HTTP GET per poll.
    Probe(ProbeSpec),
    /// Host CPU or memory from /proc.
    Host(HostMetric),
    /// A PromQL instant query.
    Prometheus(PromSpec),
}

/// `source = "prometheus"`.
#[derive(Debug, Clone, PartialEq)]
pub struct PromSpec {
    /// PromQL; several result series breach when any does.
    pub query: String,
    /// `above_baseline`: the value must also exceed K x its baseline.
    pub baseline: Option<BaselineSpec>,
}

/// `above_baseline = K`, `baseline_window`, `baseline_query`.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineSpec {
    /// K: breach when value > K x baseline.
    pub factor: f64,
    /// The median is taken over this window before the release (default 1h).
    pub window: Duration,
    /// Query the baseline is taken from; default the rule's own query.
    pub query: Option<String>,
}

/// `source = "probe"`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSpec {
    /// URL fetched with GET.
    pub url: url::Url,
    /// No answer in time = failed probe.
    pub timeout: Duration,
    /// Required status; `None` accepts any 2xx.
    pub expect_status: Option<u16>,
    /// Which value the rule compares.
    pub measure: ProbeMeasure,
    /// The probes the value is computed over.
    pub window: Duration,
}

/// `measure = failure_ratio | latency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeMeasure {
    /// Failed probes / all probes in the window (0..1).
    FailureRatio,
    /// Median latency of the probes in the window, seconds.
    Latency,
}

/// `metric = cpu | memory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostMetric {
    /// Busy fraction of all CPUs since the previous poll (0..1).
    Cpu,
    /// 1 - MemAvailable / MemTotal (0..1).
    Memory,
}

/// `[target.rollback]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackPlan {
    /// The executor and its keys.
    pub kind: ExecutorKind,
    /// Bounds the whole plan; a step still running then is killed with its
    /// process group.
    pub timeout: Duration,
    /// Steps run once verification passed (argv templates).
    pub after: Vec<Vec<String>>,
}

/// One executor kind with its keys.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecutorKind {
    /// Ordered argv steps; the first failure stops the plan.
    Command {
        /// argv templates.
        steps: Vec<Vec<String>>,
    },
    /// Re-point `current` at a previous release directory.
    Symlink {
        /// The symlink the service runs from.
        current: PathBuf,
        /// Directory holding one directory per release.
        releases: PathBuf,
        /// Run after re-pointing (argv template).
        restart: Option<Vec<String>>,
    },
}

impl ExecutorKind {
    /// The `kind` key's value, for records and logs.
    pub fn name(&self) -> &'static str {
        match self {
            ExecutorKind::Command { .. } => "command",
            ExecutorKind::Symlink { .. } => "symlink",
        }
    }
}

/// `[target.verify]`.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyConfig {
    /// Healthy within this window, or the rollback failed.
    pub within: Duration,
    /// Must answer `expect_status` (default any 2xx).
    pub url: Option<url::Url>,
    /// Status required from `url`; `None` accepts any 2xx.
    pub expect_status: Option<u16>,
    /// Every rule of the target must be back to Ok as well.
    pub rules: bool,
}

/// `[[window]]`: a weekly release window in a timezone. `end` before `start`
/// crosses midnight; the window then belongs to the day it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Name for logs and records.
    pub name: String,
    /// Days the window starts on.
    pub days: Vec<chrono::Weekday>,
    /// Local start time.
    pub start: chrono::NaiveTime,
    /// Local end time (exclusive).
    pub end: chrono::NaiveTime,
    /// IANA timezone the times are in.
    pub timezone: chrono_tz::Tz,
}

impl Window {
    /// Whether `now` falls inside the window.
    pub fn contains(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        use chrono::{Datelike, Duration as ChronoDuration};
        let local = now.with_timezone(&self.timezone);
        let t = local.time();
        if self.start <= self.end {
            self.days.contains(&local.weekday()) && t >= self.start && t < self.end
        } else {
            // Crosses midnight: either the evening of a listed day, or the
            // early morning after one.
            let yesterday = (local - ChronoDuration::days(1)).weekday();
            (self.days.contains(&local.weekday()) && t >= self.start)
                || (self.days.contains(&yesterday) && t < self.end)
        }
    }
}

#[cfg(test)]
mod window_tests {
    use super::*;
    use chrono::{NaiveTime, TimeZone, Utc, Weekday};

    fn window(start: &str, end: &str) -> Window {
        Window {
            name: "w".into(),
            days: vec![Weekday::Sat],
            start: NaiveTime::parse_from_str(start, "%H:%M").unwrap(),
            end: NaiveTime::parse_from_str(end, "%H:%M").unwrap(),
            timezone: chrono_tz::Asia::Shanghai,
        }
    }

    #[test]
    fn windows_cross_midnight_in_their_timezone() {
        // 2026-11-21 is a Saturday. Shanghai is UTC+8.
        let w = window("22:00", "02:00");
        let at = |d, h, m| Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap();
        for (now, inside) in [
            (at(21, 14, 0), true),   // Sat 22:00 local
            (at(21, 13, 59), false), // Sat 21:59 local
            (at(21, 17, 59), true),  // Sun 01:59 local
            (at(21, 18, 0), false),  // Sun 02:00 local
            (at(20, 14, 30), false), // Fri 22:30 local
        ] {
            assert_eq!(w.contains(now), inside, "{now}");
        }
        let day = window("09:00", "17:00");
        assert!(day.contains(at(21, 1, 0))); // Sat 09:00 local
        assert!(!day.contains(at(21, 9, 0))); // Sat 17:00 local
    }
}
