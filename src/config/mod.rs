//! Configuration: a raw serde layer ([`raw`]) that mirrors the TOML file and
//! rejects unknown keys, and a pure [`validate`] step into the typed values
//! below. Validation collects every problem with its key path before failing
//! and does no I/O.

pub mod cx;
pub mod duration;
pub mod error;
pub mod probe_window;
pub mod raw;
pub mod route;
pub mod secrets;
pub mod validate;
pub mod version_source;
pub mod versions;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::execute::kind::steps_using as kind_steps_using;
pub use crate::execute::kinds::ExecutorKind;
// Each notification outlet's config is defined in its own file
// (`notify/OUTLET.rs`), `[notify]` as a whole in `notify/sections.rs`;
// these names are kept here for the code and the tests that read them.
pub use crate::notify::chat::WebhookFormat;
pub use crate::notify::email::EmailConfig;
pub use crate::notify::sections::NotifyConfig;
pub use crate::notify::smtp::{SmtpConfig, SmtpSecurity};
pub use crate::notify::webhook::WebhookConfig;
pub use crate::run::step::Step;
// Each source kind's spec is defined in its own file (`sources/KIND.rs`);
// these names are kept here for the code and the tests that read them.
pub use crate::sources::alertmanager::AlertMatch;
pub use crate::sources::host::HostMetric;
pub use crate::sources::probe::{ProbeMeasure, ProbeSpec};
pub use crate::sources::prometheus::{
    BaselineSpec, PromSpec, PrometheusAuth, PrometheusConfig, TrafficGuard, DEFAULT_PROMETHEUS,
};
pub use crate::sources::SourceSpec;
pub use cx::{ConfigError, ConfigErrors, ConfigWarning, TEMPLATE_VARIABLES};
pub use route::{Severity, TargetNotify};
pub use validate::validate;
pub use version_source::VersionSource;

/// Read and validate a config file. Errors carry the file name and key path.
/// A build without the cargo feature `cluster` refuses `[cluster]` here
/// (`check`, the daemon's start and reloads all load through this).
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::single(&file, "", format!("cannot read config file: {e}")))?;
    let config = load_str(&file, &text)?;
    if config.cluster.is_some() && !cfg!(feature = "cluster") {
        return Err(ConfigErrors::single(
            &file,
            "cluster",
            CLUSTER_NOT_BUILT.to_string(),
        ));
    }
    Ok(config)
}

/// Why a build without the cargo feature `cluster` (the default build,
/// which needs no protoc) refuses `[cluster]`.
pub const CLUSTER_NOT_BUILT: &str = "this build of rollbackd lacks cluster support (built without the `cluster` feature); the Debian package has it, or build with `cargo build --release --features cluster` (needs protoc: Debian's protobuf-compiler and libprotobuf-dev)";

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
    /// `[prometheus]`: the default server, where `source = "prometheus"`
    /// rules and `version_query` ask unless they name another. `None` when
    /// there is no `[prometheus]` or it has no `url` (then every rule names
    /// a server).
    pub prometheus: Option<PrometheusConfig>,
    /// `[prometheus.servers.NAME]`: further servers (one per region, say),
    /// each with its own client, auth, timeout and reachability tracking.
    pub prometheus_servers: std::collections::BTreeMap<String, PrometheusConfig>,
    /// Where notifications go.
    pub notify: NotifyConfig,
    /// Release windows: inside one, every decision is dry-run.
    pub windows: Vec<Window>,
    /// The services watched, each with its rules and rollback plan.
    pub targets: Vec<TargetConfig>,
    /// `[cluster]`: coordinate with other rollbackd nodes through etcd;
    /// `None`: this node acts alone (the behaviour without the section).
    pub cluster: Option<ClusterConfig>,
    /// Things that are valid but probably not meant (nobody is notified,
    /// `for = "0s"` on a probe): `check` prints them, the daemon logs them.
    pub warnings: Vec<ConfigWarning>,
}

/// Default `[daemon] journal_max_size`: past it the journal is compacted
/// into a snapshot. A default is config's to own, so the config layer
/// never reaches up to the journal for it.
pub const DEFAULT_JOURNAL_MAX_BYTES: u64 = 64 * 1024 * 1024;

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
    /// Cap on executed rollbacks per hour across all targets; `None`: no
    /// global cap (each target's own cap still holds).
    pub max_rollbacks_per_hour: Option<NonZeroU32>,
    /// `max_simultaneous_breaches`: the blast-radius guard; `None`: off.
    pub max_simultaneous_breaches: Option<BlastRadius>,
    /// Past this many bytes the journal is compacted into a snapshot.
    pub journal_max_size: u64,
    /// How `rollbackd run` writes its log; `None`: decided at start from
    /// the environment (journald when stderr is systemd's journal stream).
    pub log_format: Option<LogFormat>,
    /// A pause without `--for` ends after this (default 24h), so a
    /// forgotten pause does not disable protection for good.
    pub max_pause: Duration,
    /// A breach that held its `for` triggers only once it has held this
    /// much longer (default 0), so that the blast-radius guard sees the
    /// breaches that begin on other targets meanwhile.
    pub settle: Duration,
    /// How long the state of a target removed from the config (pause,
    /// cooldown, loop guard, rate history, incident counter) is kept, so
    /// that it is restored if the name returns (default 7d).
    pub removed_target_memory: Duration,
}

/// `[cluster]`: several rollbackd nodes watch the same targets and one of
/// them, the holder of the target's etcd lock, acts (docs/cluster.md).
/// Files are named here and read when the cluster client is built.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// etcd client URLs, all `http://` or all `https://`.
    pub etcd: Vec<url::Url>,
    /// Key prefix, always ending in `/` (default `/rollbackd/`), so that
    /// several clusters can share one etcd.
    pub prefix: String,
    /// This node's name in ownership records; `None`: the hostname, read
    /// at start (validation does no I/O).
    pub node: Option<String>,
    /// TTL of the lease behind every lock this node holds: how long a
    /// dead node keeps its targets before another may act (default 10s).
    pub lease_ttl: Duration,
    /// CA of etcd's server certificate; `None` with `https://`: the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key for etcd's `--client-cert-auth`.
    pub client_cert: Option<ClusterClientCert>,
    /// etcd authentication: user name and the file holding the password.
    pub auth: Option<ClusterAuth>,
    /// What a node that cannot reach etcd does.
    pub on_etcd_down: OnEtcdDown,
}

/// `cert_file` + `key_file` of `[cluster]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterClientCert {
    /// PEM certificate.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

/// `username` + `password_file` of `[cluster]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterAuth {
    /// etcd user.
    pub username: String,
    /// File holding its password (secrets only from files).
    pub password_file: PathBuf,
}

/// `[cluster] on_etcd_down`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnEtcdDown {
    /// Never act without etcd: another node may hold the lock (default).
    #[default]
    Hold,
    /// Act without a lock while etcd is unreachable: a rollback still
    /// happens when etcd is down, at the risk of two nodes acting.
    ActAlone,
}

/// `[daemon] log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines on stderr (colour only on a terminal).
    Text,
    /// One JSON object per line on stderr, with the event's fields.
    Json,
    /// Native journald entries: `PRIORITY` from the level, `TARGET=`,
    /// `INCIDENT=`, `RULE=` fields.
    Journald,
}

impl LogFormat {
    /// Parse the config value.
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            "journald" => Some(LogFormat::Journald),
            _ => None,
        }
    }
}

/// When breaches beginning at about the same time on many targets point at
/// a shared cause: at least `targets` targets, and at least `fraction` of
/// all targets, whose breaches began within `within` of each other.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlastRadius {
    /// Smallest group that trips the guard (default 3).
    pub targets: u32,
    /// Smallest share of all watched targets that trips it (default 0.5).
    pub fraction: f64,
    /// How close together the breaches must begin (default 1m).
    pub within: Duration,
}

impl Default for BlastRadius {
    fn default() -> Self {
        BlastRadius {
            targets: 3,
            fraction: 0.5,
            within: Duration::from_secs(60),
        }
    }
}

impl Config {
    /// The Prometheus server called `name` (`None` or `"default"`:
    /// `[prometheus]`), if configured.
    pub fn prometheus_server(&self, name: Option<&str>) -> Option<&PrometheusConfig> {
        match name {
            None | Some(DEFAULT_PROMETHEUS) => self.prometheus.as_ref(),
            Some(n) => self.prometheus_servers.get(n),
        }
    }
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
    /// Recovery-time objective: first bad evidence to verified recovery
    /// (default 5m, the runbook's RTO); records say met or missed.
    pub rto: Duration,
    /// At least one rule.
    pub rules: Vec<RuleConfig>,
    /// What to run to roll back.
    pub rollback: RollbackPlan,
    /// How recovery is checked after the plan succeeded.
    pub verify: VerifyConfig,
    /// Whether a human must approve a rollback, and what happens when nobody does.
    pub confirm: ConfirmConfig,
    /// `[target.notify]`: this target's recipients, webhooks, minimum severity.
    pub notify: TargetNotify,
}

/// `confirm`, `confirm_timeout`, `on_confirm_timeout`, `confirm_command`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfirmConfig {
    /// `confirm = "required"`: wait for approve or reject before acting.
    pub required: bool,
    /// How long to wait for an answer.
    pub timeout: Duration,
    /// What happens when nobody answered in time.
    pub on_timeout: OnConfirmTimeout,
    /// argv asked for an answer: exit 0 approves, 1 rejects, anything else
    /// is no answer. Template variables as in rollback steps.
    pub command: Option<Vec<String>>,
}

impl Default for ConfirmConfig {
    fn default() -> Self {
        ConfirmConfig {
            required: false,
            timeout: Duration::from_secs(300),
            on_timeout: OnConfirmTimeout::Escalate,
            command: None,
        }
    }
}

/// `on_confirm_timeout = rollback | escalate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConfirmTimeout {
    /// Nobody objected in time: roll back.
    Rollback,
    /// Nobody answered: do nothing and tell the admin.
    Escalate,
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
    /// `no_data` on the rule: overrides the target's policy when set.
    pub no_data: Option<NoData>,
    /// `mode = "shadow"`: evaluated, shown and recorded as "would roll
    /// back", never triggers (`mode = "act"`, the default, acts).
    pub shadow: bool,
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
    pub after: Vec<Step>,
    /// Steps run before the executor's own (argv templates), e.g. a backup
    /// of the config or database about to be replaced; the first failure
    /// stops the plan.
    pub pre: Vec<Step>,
    /// Bounds each step on its own (`step_timeout`); the plan `timeout`
    /// still bounds them all. `None`: only the plan timeout.
    pub step_timeout: Option<Duration>,
    /// Steps run when the plan fails or verification fails ("rollback did
    /// not help"): collect logs, restore the dump that `pre` made.
    pub on_failure: Vec<Step>,
    /// Working directory of every step that sets none of its own (`None`:
    /// the daemon's), so a relative `.env.local` means the app's.
    pub cwd: Option<PathBuf>,
    /// Environment added to every process the plan runs; a step's own
    /// `env` wins over it.
    pub env: BTreeMap<String, String>,
}

impl RollbackPlan {
    /// Where the plan's own templates use `{var}`: key paths relative to
    /// `[target.rollback]` (`steps[1]`, `pre[0]`, `body`), and `kind` when
    /// the executor itself needs the value (git checks out `{to_version}`,
    /// docker runs `image:{to_version}`). `on_failure` and `after` are not
    /// counted: they run after the plan.
    pub fn uses_var(&self, var: &str) -> Vec<String> {
        let mut at = kind_steps_using("pre", &self.pre, var);
        at.extend(self.kind.uses_var(var));
        at
    }

    /// The variables the plan cannot run without: `{from_version}` and
    /// `{to_version}` where its templates or its executor use them (key
    /// paths prefixed `rollback.`), except a `{to_version}` the executor
    /// finds itself (symlink, kubernetes, blue_green).
    pub fn needs_vars(&self) -> Vec<(String, Vec<String>)> {
        ["from_version", "to_version"]
            .into_iter()
            .filter(|v| !(*v == "to_version" && self.finds_own_version()))
            .filter_map(|v| {
                let at: Vec<String> = self
                    .uses_var(v)
                    .into_iter()
                    .map(|k| format!("rollback.{k}"))
                    .collect();
                (!at.is_empty()).then(|| (v.to_string(), at))
            })
            .collect()
    }

    /// Whether the executor finds `{to_version}` itself when nobody named
    /// it (symlink: the release before the live one; kubernetes: `rollout
    /// undo` to the previous revision; blue_green: the other color).
    pub fn finds_own_version(&self) -> bool {
        self.kind.finds_own_version()
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
    /// HTTP checks that must all pass (status, body, latency).
    pub checks: Vec<VerifyCheck>,
    /// Smoke-test commands that must all exit 0; their output goes in the
    /// record.
    pub commands: Vec<Step>,
}

/// `[[target.verify.checks]]`: one HTTP GET that must pass.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyCheck {
    /// The URL fetched.
    pub url: url::Url,
    /// Status required; `None` accepts any 2xx.
    pub expect_status: Option<u16>,
    /// Text the body must contain (a login page's form, a data row).
    pub body_contains: Option<String>,
    /// Slower than this fails, however right the answer: the runbook's
    /// "API < 500 ms".
    pub max_latency: Option<Duration>,
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

#[cfg(test)]
mod plan_tests {
    use super::*;

    fn plan(kind: ExecutorKind, pre: &[&[&str]]) -> RollbackPlan {
        RollbackPlan {
            kind,
            timeout: Duration::from_secs(60),
            after: vec![vec!["purge".to_string(), "{to_version}".into()].into()],
            pre: pre
                .iter()
                .map(|a| Step::from(a.iter().map(|s| s.to_string()).collect::<Vec<_>>()))
                .collect(),
            step_timeout: None,
            on_failure: vec![],
            cwd: None,
            env: BTreeMap::new(),
        }
    }

    fn command(steps: &[&[&str]]) -> ExecutorKind {
        ExecutorKind::Command(crate::execute::command::Config {
            steps: steps
                .iter()
                .map(|a| Step::from(a.iter().map(|s| s.to_string()).collect::<Vec<_>>()))
                .collect(),
        })
    }

    #[test]
    fn where_a_plan_uses_a_variable() {
        let git = ExecutorKind::Git(crate::execute::git::Config {
            repo: "/srv/app".into(),
            build: vec![],
            restart: None,
        });
        let symlink = ExecutorKind::Symlink(crate::execute::symlink::Config {
            current: "/srv/current".into(),
            releases: "/srv/releases".into(),
            restart: None,
        });
        // (name, plan, var, where, finds its own version)
        let cases = [
            (
                "command step",
                plan(
                    command(&[&["true"], &["git", "checkout", "{to_version}"]]),
                    &[],
                ),
                "to_version",
                vec!["steps[1]"],
                false,
            ),
            (
                "pre step and command step",
                plan(
                    command(&[&["deploy", "{from_version}..{to_version}"]]),
                    &[&["cp", "db", "/backup/{to_version}"]],
                ),
                "to_version",
                vec!["pre[0]", "steps[0]"],
                false,
            ),
            (
                "after is not counted",
                plan(command(&[&["true"]]), &[]),
                "to_version",
                vec![],
                false,
            ),
            (
                "git checks out to_version",
                plan(git.clone(), &[]),
                "to_version",
                vec!["kind"],
                false,
            ),
            (
                "git needs no from_version",
                plan(git, &[]),
                "from_version",
                vec![],
                false,
            ),
            (
                "symlink finds its own",
                plan(symlink, &[&["backup", "{to_version}"]]),
                "to_version",
                vec!["pre[0]"],
                true,
            ),
        ];
        for (name, p, var, want, own) in cases {
            assert_eq!(p.uses_var(var), want, "{name}");
            assert_eq!(p.finds_own_version(), own, "{name}");
        }
    }
}
