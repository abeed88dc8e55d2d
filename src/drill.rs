//! `rollbackd drill TARGET`: a rehearsal of a target's rollback through the
//! same decision machine as a real incident, without a daemon.
//!
//! The drill builds the target's [`DecideConfig`] and a fresh state (the
//! live version read now, the version to go back to from the journal or
//! `--to-version`), and feeds [`decide::step`] a synthetic breach: an
//! evaluation in which one of the target's rules is Breached for its whole
//! `for`. The machine opens the incident and decides; the drill carries
//! out its actions the way the daemon does, with these differences, each
//! said in the output:
//!
//! - `dry_run`, release windows, `only_within` and the blast-radius guard
//!   do not apply (a drill is asked for by a person), and the fresh state
//!   has no pause, rate-limit history or loop guard;
//! - `confirm = "required"` is auto-approved (no human is asked,
//!   `confirm_command` is not run);
//! - notifications are shown, not sent, and no incident record is written;
//! - `Execute` runs the executor's read-only checks only (dry-run, the
//!   default: each step's argv after substitution, whether each program
//!   exists, the executor's checks such as tag exists, kubectl reaches the
//!   cluster, the standby is ready) and stops there; with `--live` it runs
//!   the plan for real (against a staging target), then the machine's
//!   `Verify` (the gates within `verify.within`; the synthetic breach
//!   clears once the plan ran), `RunAfter` and `RunOnFailure`.
//!
//! Every drill is appended to `state_dir/drills.jsonl` (one JSON line,
//! fsync'd) with its timing and result; `rollbackd drill --history` prints
//! that rehearsal record.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::{Config, TargetConfig};
use crate::decide::{
    self, Action, DecideConfig, Event, Fleet, Incident, NotifyKind, Outcome, Phase, TargetState,
};
use crate::execute::{self, verify, ExecResult, StepReport, Vars};
use crate::rules::{RuleReport, RuleStatus};
use crate::run::plan::{subst, Runner};
use crate::util::{display_argv, fmt_duration};
use crate::version::{VersionError, VersionReader};

/// Who approves a drill's incident when the target has `confirm =
/// "required"`.
pub const DRILL_APPROVER: &str = "drill (auto-approved)";

/// The rehearsal log, next to the journal.
pub const DRILLS_FILE: &str = "drills.jsonl";

/// How long reading the live version may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// One drill as journaled in `drills.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    /// When it started.
    pub at: DateTime<Utc>,
    /// Target name.
    pub target: String,
    /// `dry-run` or `live`.
    pub mode: String,
    /// How long the whole drill took.
    #[serde(with = "crate::util::serde_duration")]
    pub duration: Duration,
    /// Whether the verdict was good (dry-run: ready; live: rolled back and verified).
    pub success: bool,
    /// The version live at the start, as found.
    #[serde(default)]
    pub from_version: Option<String>,
    /// The version gone (or that would be gone) to.
    #[serde(default)]
    pub to_version: Option<String>,
    /// The verdict line.
    pub verdict: String,
}

/// What a drill printed and recorded.
#[derive(Debug, Clone)]
pub struct Drill {
    /// The report for the terminal.
    pub text: String,
    /// The line appended to `drills.jsonl`.
    pub record: DrillRecord,
}

/// Options of one drill.
#[derive(Debug, Clone, Default)]
pub struct DrillOptions {
    /// Run the plan for real.
    pub live: bool,
    /// The version to go back to, overriding what the journal knows.
    pub to_version: Option<String>,
}

/// Run a drill of `target` and journal it.
pub async fn run(config: &Config, target: &str, options: &DrillOptions) -> anyhow::Result<Drill> {
    let t = config
        .targets
        .iter()
        .find(|t| t.name == target)
        .with_context(|| {
            let names: Vec<&str> = config.targets.iter().map(|t| t.name.as_str()).collect();
            format!("no target named {target:?} (targets: {})", names.join(", "))
        })?;
    let at = Utc::now();
    let started = Instant::now();
    let mut out = String::new();
    let mode = if options.live { "live" } else { "dry-run" };
    line(
        &mut out,
        format!(
            "drill {} ({mode}), kind {}, plan timeout {}{}",
            t.name,
            t.rollback.kind.name(),
            fmt_duration(t.rollback.timeout),
            t.rollback
                .step_timeout
                .map(|s| format!(", step timeout {}", fmt_duration(s)))
                .unwrap_or_default()
        ),
    );

    let mut vars = versions(config, t, options, &mut out).await;
    executor_version(t, &mut vars, &mut out).await;
    let mut rehearsal = Rehearsal::new(config, t, &vars, options.live, out);
    let (success, verdict, from, to) = rehearsal.run().await;
    let mut out = rehearsal.out;
    let duration = started.elapsed();
    line(
        &mut out,
        format!("verdict: {verdict} ({})", fmt_duration(duration)),
    );
    let record = DrillRecord {
        at,
        target: t.name.clone(),
        mode: mode.to_string(),
        duration,
        success,
        from_version: from.or(vars.from_version),
        to_version: to.or(vars.to_version),
        verdict,
    };
    append(&config.daemon.state_dir, &record)?;
    Ok(Drill { text: out, record })
}

fn line(out: &mut String, text: impl AsRef<str>) {
    out.push_str(text.as_ref());
    out.push('\n');
}

/// Why the live version could not be read for a drill.
#[derive(Debug, thiserror::Error)]
pub enum LiveVersionError {
    /// The Prometheus server of `version_query` cannot be set up.
    #[error("prometheus server {server:?} of version_query: {error}")]
    Prometheus {
        /// `default` or the `[prometheus.servers.NAME]` named.
        server: String,
        /// Why, with its causes.
        error: String,
    },
    /// The HTTP client of `version_url` cannot be built.
    #[error("cannot build the HTTP client for version_url: {0}")]
    Client(String),
    /// The version source answered with an error.
    #[error(transparent)]
    Read(#[from] VersionError),
}

/// The live version through the target's configured source (the same
/// reader the daemon uses).
async fn live_version(
    config: &Config,
    t: &TargetConfig,
) -> Result<Option<String>, LiveVersionError> {
    let server = match &t.version {
        Some(crate::config::VersionSource::Query { server, .. }) => server.as_deref(),
        _ => None,
    };
    let prometheus = match config.prometheus_server(server) {
        Some(p) => {
            let name = server.unwrap_or(crate::config::DEFAULT_PROMETHEUS);
            Some(
                crate::sources::prometheus::Prometheus::build_named(name, p).map_err(|e| {
                    LiveVersionError::Prometheus {
                        server: name.to_string(),
                        error: format!("{e:#}"),
                    }
                })?,
            )
        }
        None => None,
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(VERSION_TIMEOUT)
        .build()
        .map_err(|e| LiveVersionError::Client(crate::util::error_chain(&e)))?;
    let read = VersionReader::build(t.version.clone(), client, prometheus)
        .read()
        .await?;
    Ok(read)
}

/// The version to go back to when neither the journal nor `--to-version`
/// knows it and the executor cannot run without it (git, docker): the executor's read-only checks find it (the
/// previous tag), as the deploy the daemon saw would have told it. Without
/// it the machine refuses the rollback before its first step, as it would
/// in the daemon.
async fn executor_version(t: &TargetConfig, vars: &mut Vars, out: &mut String) {
    // Only an executor that uses `{to_version}` itself (git, docker) can
    // find it; a template that needs it is refused, as in the daemon.
    let by_kind = t
        .rollback
        .needs_vars()
        .into_iter()
        .any(|(v, at)| v == "to_version" && at.iter().any(|a| a == "rollback.kind"));
    if vars.to_version.is_some() || !by_kind {
        return;
    }
    let mut r = Runner::new(crate::execute::budget(&t.rollback), vars);
    let found = execute::prepare(&t.rollback.kind, vars, &mut r).await;
    match (found, r.result.to_version) {
        (Ok(_), Some(to)) => {
            line(
                out,
                format!(
                    "  back to {to}: found by the {} executor's read-only checks (the daemon \
                     knows it from the deploy it saw)",
                    t.rollback.kind.name()
                ),
            );
            if vars.from_version.is_none() {
                vars.from_version = r.result.from_version;
            }
            vars.to_version = Some(to);
        }
        (Err(e), _) => line(
            out,
            format!("  back to: unknown, the executor's read-only checks found none: {e}"),
        ),
        (Ok(_), None) => {}
    }
}

/// The target's decision settings for a drill: the daemon's, without what
/// does not apply to a rehearsal a person asked for (dry_run, release
/// windows, only_within, the blast-radius guard).
pub fn decide_config(config: &Config, t: &TargetConfig) -> DecideConfig {
    let mut cfg = DecideConfig::from_config(config, t);
    cfg.dry_run = false;
    cfg.windows.clear();
    cfg.only_within = None;
    cfg.blast_radius = None;
    cfg
}

/// The synthetic breach: the target's first acting rule (else `drill`)
/// Breached for its whole `for`, or, with `breached = false`, that rule Ok
/// again (the next evaluation after the plan ran).
pub fn synthetic_rule(t: &TargetConfig, now: DateTime<Utc>, breached: bool) -> RuleReport {
    let rule = t.rules.iter().find(|r| !r.shadow);
    let for_ = rule.map_or(Duration::ZERO, |r| r.for_);
    let since = now - chrono::Duration::from_std(for_).unwrap_or_default();
    RuleReport {
        rule: rule.map_or_else(|| "drill".to_string(), |r| r.name.clone()),
        source: "synthetic (rollbackd drill)".to_string(),
        status: if breached {
            RuleStatus::Breached { since }
        } else {
            RuleStatus::Ok
        },
        value: None,
        threshold: rule.map_or(0.0, |r| r.above),
        for_,
        window: None,
        at: now,
        no_data: None,
        baseline: None,
        above_baseline: None,
        labels: BTreeMap::new(),
        detail: Some(if breached {
            "synthetic breach: rollbackd drill".to_string()
        } else {
            "synthetic breach cleared after the plan ran".to_string()
        }),
        shadow: false,
        unreachable: None,
    }
}

/// Whether the drill succeeded, the verdict line, and the versions it went
/// (or would go) from and to as found.
type Verdict = (bool, String, Option<String>, Option<String>);

/// One drill's run through the decision machine: the state, the settings,
/// what was printed, and what the effects reported.
struct Rehearsal<'a> {
    t: &'a TargetConfig,
    cfg: DecideConfig,
    state: TargetState,
    live: bool,
    out: String,
    /// Timeline entries of the incident already printed.
    shown: usize,
    /// Dry-run: the verdict of the read-only checks.
    checked: Option<Verdict>,
    /// Live: the plan's result.
    executed: Option<ExecResult>,
    /// Live: the `after` steps' result.
    after: Option<ExecResult>,
}

impl<'a> Rehearsal<'a> {
    fn new(
        config: &Config,
        t: &'a TargetConfig,
        vars: &Vars,
        live: bool,
        out: String,
    ) -> Rehearsal<'a> {
        let mut state = TargetState::new(&t.name);
        state.version = vars.from_version.clone();
        state.previous_version = vars.to_version.clone();
        Rehearsal {
            t,
            cfg: decide_config(config, t),
            state,
            live,
            out,
            shown: 0,
            checked: None,
            executed: None,
            after: None,
        }
    }

    fn line(&mut self, text: impl AsRef<str>) {
        line(&mut self.out, text);
    }

    /// Step the machine now and print what it noted.
    fn step(&mut self, event: Event) -> Vec<Action> {
        match decide::step(
            &self.cfg,
            &decide::Guards::default(),
            self.state.clone(),
            event,
            Utc::now(),
        ) {
            Ok((state, actions)) => {
                self.state = state;
                let new: Vec<String> = self
                    .state
                    .incident()
                    .map(|i| {
                        i.timeline[self.shown.min(i.timeline.len())..]
                            .iter()
                            .map(|e| format!("  decide: {}: {}", e.phase, e.message))
                            .collect()
                    })
                    .unwrap_or_default();
                self.shown += new.len();
                for l in new {
                    self.line(l);
                }
                actions
            }
            Err(e) => {
                self.line(format!("  decide: {e}"));
                Vec::new()
            }
        }
    }

    /// Feed the synthetic breach, carry out the actions until none are
    /// left; the verdict.
    async fn run(&mut self) -> Verdict {
        let rule = synthetic_rule(self.t, Utc::now(), true);
        self.line(format!(
            "decision machine (synthetic breach of rule {}; dry_run, release windows, \
             only_within and the blast-radius guard do not apply to a drill; no pause, rate \
             limit or loop guard in its fresh state):",
            rule.rule
        ));
        let mut queue: VecDeque<Action> = self
            .step(Event::Evaluated {
                rules: vec![rule],
                fleet: Fleet::default(),
            })
            .into();
        while let Some(action) = queue.pop_front() {
            let more = self.act(action).await;
            queue.extend(more);
        }
        self.verdict().await
    }

    /// Carry out one action; the actions the resulting events led to.
    async fn act(&mut self, action: Action) -> Vec<Action> {
        match action {
            Action::Notify { kind, incident } => {
                self.line(format!(
                    "  notify {} (not sent: a drill notifies nobody)",
                    kind_name(kind)
                ));
                if kind != NotifyKind::AwaitingConfirmation {
                    return Vec::new();
                }
                let asked = if self.t.confirm.command.is_some() {
                    "a human or confirm_command"
                } else {
                    "a human"
                };
                self.line(format!(
                    "  confirm = required: auto-approved for the drill (a real incident waits up \
                     to {} for {asked})",
                    fmt_duration(self.cfg.confirm_timeout)
                ));
                self.step(Event::Approve {
                    incident: incident.id.clone(),
                    by: DRILL_APPROVER.to_string(),
                })
            }
            Action::NotifyTarget { kind, .. } => {
                self.line(format!("  notify {} (not sent)", kind_name(kind)));
                Vec::new()
            }
            // The drill's record is drills.jsonl, not incidents/.
            Action::WriteRecord { .. } => Vec::new(),
            // A drill counts toward no cap (Guards::default() has none).
            Action::GlobalLimitRefused { reason, .. } => {
                self.line(format!("  refused: {reason}"));
                Vec::new()
            }
            Action::Execute { incident } => self.execute(&incident).await,
            Action::Verify { incident } => self.verify(&incident).await,
            Action::RunAfter { incident } => {
                let result = execute::run_after(&self.t.rollback, &vars_for(&incident)).await;
                self.show_steps("after steps:", &result);
                self.after = Some(result.clone());
                self.step(Event::AfterFinished {
                    incident: incident.id.clone(),
                    result,
                })
            }
            Action::RunOnFailure { incident } => {
                let result = execute::run_on_failure(&self.t.rollback, &vars_for(&incident)).await;
                self.show_steps("on_failure steps:", &result);
                self.step(Event::OnFailureFinished {
                    incident: incident.id.clone(),
                    result,
                })
            }
        }
    }

    /// Dry-run: the read-only checks, and the drill stops (nothing changed,
    /// nothing to verify). Live: the plan, its result back to the machine.
    async fn execute(&mut self, incident: &Incident) -> Vec<Action> {
        let vars = vars_for(incident);
        if !self.live {
            self.line("  execute: dry-run, only the executor's read-only checks run");
            self.checked = Some(dry_run(self.t, &vars, &mut self.out, None).await);
            return Vec::new();
        }
        let started = Instant::now();
        let result = execute::run_plan(&self.t.rollback, &vars).await;
        self.show_steps(
            &format!("rollback ({}):", fmt_duration(started.elapsed())),
            &result,
        );
        self.executed = Some(result.clone());
        let actions = self.step(Event::ExecFinished {
            incident: incident.id.clone(),
            result,
        });
        let verifying = matches!(self.state.phase, Phase::Verifying { .. });
        if verifying && !actions.iter().any(|a| matches!(a, Action::Verify { .. })) {
            // No gates: the machine verifies with the rules, and the next
            // evaluation sees the synthetic breach cleared.
            let mut actions = actions;
            actions.extend(self.verify(&incident.id).await);
            return actions;
        }
        actions
    }

    /// The next evaluation sees the synthetic breach cleared; the gates
    /// (URL, checks, commands) run every second until the machine closes
    /// the incident (healthy, or still failing at `verify.within`).
    async fn verify(&mut self, incident: &str) -> Vec<Action> {
        let cleared = synthetic_rule(self.t, Utc::now(), false);
        let mut actions = self.step(Event::Evaluated {
            rules: vec![cleared],
            fleet: Fleet::default(),
        });
        let v = &self.t.verify;
        if v.url.is_none() && v.checks.is_empty() && v.commands.is_empty() {
            self.line(
                "verify: no url, checks or commands configured; rules are checked by the daemon only",
            );
            return actions;
        }
        let client = http_client();
        let vars = match self.state.incident() {
            Some(i) => vars_for(i),
            None => return actions,
        };
        let started = Instant::now();
        let limit = started + v.within + Duration::from_secs(5);
        loop {
            let checks = verify::run_gates(&client, v, &vars).await;
            let ok = checks.iter().all(|c| c.ok);
            actions.extend(self.step(Event::VerifyChecked {
                incident: incident.to_string(),
                ok,
                detail: verify::summary(&checks),
                checks: checks.clone(),
            }));
            let verifying = matches!(self.state.phase, Phase::Verifying { .. });
            if !verifying || Instant::now() >= limit {
                self.line(format!(
                    "verify: {} after {}",
                    if ok { "healthy" } else { "UNHEALTHY" },
                    fmt_duration(started.elapsed())
                ));
                for g in &checks {
                    let status = if g.ok { "ok    " } else { "FAILED" };
                    self.line(format!("  {status} {}: {}", g.check, g.detail));
                }
                return actions;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    fn show_steps(&mut self, title: &str, result: &ExecResult) {
        self.line(title);
        for step in &result.steps {
            self.line(format!("  {}", step_line(step)));
        }
    }

    /// The verdict from what the machine decided and the effects reported.
    async fn verdict(&mut self) -> Verdict {
        let incident = self.state.incident().cloned();
        let refused = incident
            .as_ref()
            .and_then(|i| i.error.clone())
            .unwrap_or_else(|| {
                format!(
                    "the decision machine did not roll back (target {})",
                    self.state.phase.name()
                )
            });
        if !self.live {
            if let Some(checked) = self.checked.take() {
                return checked;
            }
            // No Execute: the machine refused. The read-only checks still
            // show what else is not ready.
            let vars = incident.as_ref().map(vars_for).unwrap_or_default();
            return dry_run(self.t, &vars, &mut self.out, Some(refused)).await;
        }
        let from = incident.as_ref().and_then(|i| i.from_version.clone());
        let to = incident.as_ref().and_then(|i| i.to_version.clone());
        let Some(result) = &self.executed else {
            return (false, format!("nothing was run: {refused}"), from, to);
        };
        if !result.ok {
            let why = result
                .error
                .clone()
                .unwrap_or_else(|| "unknown error".into());
            return (false, format!("rollback failed: {why}"), from, to);
        }
        if incident.and_then(|i| i.outcome) != Some(Outcome::RolledBack) {
            return (false, refused, from, to);
        }
        if let Some(after) = self.after.as_ref().filter(|a| !a.ok) {
            let why = after.error.clone().unwrap_or_default();
            return (false, format!("after steps failed: {why}"), from, to);
        }
        let verdict = format!(
            "rolled back {} -> {} and verified",
            from.as_deref().unwrap_or("?"),
            to.as_deref().unwrap_or("?")
        );
        (true, verdict, from, to)
    }
}

/// `rollback_started`, `awaiting_confirmation`, ... as journaled.
fn kind_name(kind: NotifyKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{kind:?}"))
}

/// The template variables of the drill's incident. `{incident}` is the
/// machine's ID prefixed `drill-`, so what a live drill's steps send
/// elsewhere (a CI job, a chat) is told apart from a real incident.
fn vars_for(incident: &Incident) -> Vars {
    Vars {
        target: incident.target.clone(),
        from_version: incident.from_version.clone(),
        to_version: incident.to_version.clone(),
        incident: format!("drill-{}", incident.id),
        lease: None,
    }
}

/// Versions for the templates: the live one read now through the target's
/// version source, the previous one from the journal (or `--to-version`).
async fn versions(
    config: &Config,
    t: &TargetConfig,
    options: &DrillOptions,
    out: &mut String,
) -> Vars {
    let from_version = match live_version(config, t).await {
        Ok(v) => v,
        Err(e) => {
            line(out, format!("  live version: unknown ({e})"));
            None
        }
    };
    let to_version = options.to_version.clone().or_else(|| {
        let states = crate::journal::recover_states(&config.daemon.state_dir).ok()?;
        let state = states.get(&t.name)?;
        state
            .previous_version
            .clone()
            .filter(|p| Some(p) != from_version.as_ref())
    });
    line(
        out,
        format!(
            "  versions: live {}, back to {}",
            from_version.as_deref().unwrap_or("unknown"),
            to_version
                .as_deref()
                .unwrap_or("(chosen by the executor, or unknown)")
        ),
    );
    Vars {
        target: t.name.clone(),
        from_version,
        to_version,
        incident: String::new(),
        lease: None,
    }
}

/// Prints the plan, checks programs and runs the read-only checks.
/// `refused`: why the decision machine did not reach `Execute`, a problem
/// on its own.
async fn dry_run(
    t: &TargetConfig,
    vars: &Vars,
    out: &mut String,
    refused: Option<String>,
) -> Verdict {
    let plan = &t.rollback;
    let mut problems: Vec<String> = refused.into_iter().collect();
    let mut r = Runner::new(crate::execute::budget(plan), vars);

    let prepared = execute::prepare(&plan.kind, vars, &mut r).await;
    let found = Vars {
        from_version: r.result.from_version.clone(),
        to_version: r.result.to_version.clone(),
        ..vars.clone()
    };

    let mut programs: Vec<String> = Vec::new();
    if !plan.pre.is_empty() {
        line(out, "pre steps (would run first):");
        show_templates(
            &plan.pre,
            &found,
            "pre step",
            out,
            &mut programs,
            &mut problems,
        );
    }
    line(
        out,
        format!("{} checks (read-only, run now):", plan.kind.name()),
    );
    if r.result.steps.is_empty() {
        line(out, "  (none)");
    }
    for step in &r.result.steps {
        line(out, format!("  {}", step_line(step)));
    }
    match &prepared {
        Ok(acts) => {
            line(
                out,
                format!(
                    "  would go from {} to {}",
                    found.from_version.as_deref().unwrap_or("?"),
                    found
                        .to_version
                        .as_deref()
                        .unwrap_or("the previous version")
                ),
            );
            line(out, format!("{} steps (would run):", plan.kind.name()));
            for act in acts {
                line(out, format!("  {}", act.describe()));
                if let Some(p) = act.program() {
                    programs.push(p.to_string());
                }
            }
        }
        Err(e) => {
            line(out, format!("  refused: {e}"));
            problems.push(e.to_string());
        }
    }
    if !plan.after.is_empty() {
        line(out, "after steps (would run once verification passed):");
        show_templates(
            &plan.after,
            &found,
            "after step",
            out,
            &mut programs,
            &mut problems,
        );
    }
    if !plan.on_failure.is_empty() {
        line(
            out,
            "on_failure steps (would run if the plan or its verification failed):",
        );
        show_templates(
            &plan.on_failure,
            &found,
            "on_failure step",
            out,
            &mut programs,
            &mut problems,
        );
    }
    // The programs the executor itself calls, even when a check failed
    // before they were reached.
    programs.extend(plan.kind.programs());
    check_programs(t, programs, out, &mut problems);
    verify_note(t, out).await;
    let (from, to) = (found.from_version, found.to_version);
    if problems.is_empty() {
        (
            true,
            "ready: every program is there and every check passed".to_string(),
            from,
            to,
        )
    } else {
        (
            false,
            format!("not ready: {}", problems.join("; ")),
            from,
            to,
        )
    }
}

/// Whether each program the plan runs is installed (a miss is a
/// problem), and the programs inside its `sh -c '...'` scripts: the
/// script's first word (a miss is a warning, not a failure: the script may
/// define it, a function or PATH).
fn check_programs(
    t: &TargetConfig,
    mut programs: Vec<String>,
    out: &mut String,
    problems: &mut Vec<String>,
) {
    let plan = &t.rollback;
    let mut scripts: Vec<&[String]> = plan.pre.iter().map(|s| s.argv.as_slice()).collect();
    scripts.extend(plan.kind.scripts());
    scripts.extend(plan.after.iter().map(|s| s.argv.as_slice()));
    scripts.extend(plan.on_failure.iter().map(|s| s.argv.as_slice()));
    scripts.extend(t.verify.commands.iter().map(|s| s.argv.as_slice()));
    let mut inner: Vec<String> = scripts.into_iter().filter_map(shell_program).collect();
    inner.sort();
    inner.dedup();
    programs.retain(|p| p != "symlink");
    programs.sort();
    programs.dedup();
    line(out, "programs:");
    for program in &programs {
        match find_program(program) {
            Ok(path) => line(out, format!("  ok       {program} ({})", path.display())),
            Err(e) => {
                line(out, format!("  MISSING  {program}: {e}"));
                problems.push(format!("{program}: {e}"));
            }
        }
    }
    for program in inner.iter().filter(|p| !programs.contains(p)) {
        match find_program(program) {
            Ok(path) => line(
                out,
                format!("  ok       {program} ({}, inside sh -c)", path.display()),
            ),
            Err(e) => line(
                out,
                format!("  warning: {program} (first word of an sh -c script) not found: {e}"),
            ),
        }
    }
}

/// The verify URL's and checks' answers right now, and the smoke commands
/// that would run (dry-run: information only).
async fn verify_note(t: &TargetConfig, out: &mut String) {
    if let Some(url) = &t.verify.url {
        let client = http_client();
        let (ok, detail) = verify::check_url(&client, url, t.verify.expect_status).await;
        line(
            out,
            format!(
                "verify url {}: {} now ({detail})",
                crate::util::redact_url(url),
                if ok { "healthy" } else { "unhealthy" }
            ),
        );
    }
    let client = http_client();
    for check in &t.verify.checks {
        let r = verify::run_check(&client, check).await;
        line(
            out,
            format!(
                "verify check {}: {} now ({})",
                r.check,
                if r.ok { "passes" } else { "fails" },
                r.detail
            ),
        );
    }
    for step in &t.verify.commands {
        line(
            out,
            format!(
                "verify command (runs after a live rollback, not now): {}",
                display_argv(&step.argv)
            ),
        );
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .unwrap_or_default()
}

/// Print argv templates after substitution and collect their programs.
fn show_templates(
    list: &[crate::config::Step],
    vars: &Vars,
    what: &str,
    out: &mut String,
    programs: &mut Vec<String>,
    problems: &mut Vec<String>,
) {
    for step in list {
        let argv = &step.argv;
        match subst(argv, vars, what) {
            Ok(argv) => {
                line(out, format!("  {}", display_argv(&argv)));
                programs.extend(argv.first().cloned());
            }
            Err(e) => {
                line(out, format!("  CANNOT RUN {e}"));
                problems.push(e.to_string());
                programs.extend(argv.first().cloned());
            }
        }
    }
}

/// Shell builtins and keywords: the first word of a script that is no
/// program to look for.
const SHELL_BUILTINS: &[&str] = &[
    "cd", "echo", "exit", "export", "set", "test", "[", "true", "false", "printf", "read", "if",
    "for", "while", "case", "{", "(", ":", ".", "source", "eval", "trap", "umask",
];

/// The program an `sh -c 'SCRIPT'` step runs first: the script's first
/// word after variable assignments (`X=1 prog ...`) and `exec`. `None` for
/// other steps, shell builtins and words with expansions.
pub fn shell_program(argv: &[String]) -> Option<String> {
    let [shell, flag, script, ..] = argv else {
        return None;
    };
    let name = shell.rsplit('/').next().unwrap_or(shell);
    if !matches!(name, "sh" | "bash" | "dash" | "zsh" | "ksh") || flag != "-c" {
        return None;
    }
    let word = script
        .split(|c: char| c.is_whitespace() || c == ';' || c == '|' || c == '&')
        .filter(|w| !w.is_empty())
        .find(|w| (w.starts_with('=') || !w.contains('=')) && *w != "exec")?;
    if SHELL_BUILTINS.contains(&word) || word.contains(['$', '`', '(', '"', '\'', '<', '>']) {
        return None;
    }
    Some(word.to_string())
}

/// `ok  argv  (12ms)` or `FAILED argv  (exit 1): why`.
fn step_line(step: &StepReport) -> String {
    let status = if step.ok { "ok    " } else { "FAILED" };
    let mut s = format!(
        "{status} {}  ({})",
        display_argv(&step.argv),
        fmt_duration(step.duration)
    );
    if let Some(e) = &step.error {
        s.push_str(": ");
        s.push_str(e);
    }
    s
}

/// Why a program a plan runs cannot be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProgramError {
    /// The path it names does not exist.
    #[error("no such file")]
    NoSuchFile,
    /// The path it names is not an executable file.
    #[error("not an executable file")]
    NotExecutable,
    /// No executable file of that name in a directory of `PATH`.
    #[error("not found on PATH")]
    NotOnPath,
}

/// Where `program` would be run from: itself when it names a path, else
/// the first executable file of that name on `PATH`. The error is printed
/// after the program's name (`MISSING  kubectl: not found on PATH`).
pub fn find_program(program: &str) -> Result<PathBuf, ProgramError> {
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return if !p.exists() {
            Err(ProgramError::NoSuchFile)
        } else if executable(&p) {
            Ok(p)
        } else {
            Err(ProgramError::NotExecutable)
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
        .ok_or(ProgramError::NotOnPath)
}

/// Append one record to `state_dir/drills.jsonl` and fsync it.
pub fn append(state_dir: &Path, record: &DrillRecord) -> anyhow::Result<()> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("failed to create state_dir {}", state_dir.display()))?;
    let path = state_dir.join(DRILLS_FILE);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("failed to open {}", path.display()))?;
    let mut text = serde_json::to_string(record).context("failed to encode the drill record")?;
    text.push('\n');
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("failed to write {}", path.display()))
}

/// Every drill in `state_dir/drills.jsonl`, oldest first; unreadable lines
/// are reported, not fatal.
pub fn read(state_dir: &Path) -> anyhow::Result<(Vec<DrillRecord>, Vec<String>)> {
    let path = state_dir.join(DRILLS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
    };
    let mut records = Vec::new();
    let mut problems = Vec::new();
    for (i, l) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match serde_json::from_str(l) {
            Ok(r) => records.push(r),
            Err(e) => problems.push(format!("{}:{}: skipped: {e}", path.display(), i + 1)),
        }
    }
    Ok((records, problems))
}

/// The rehearsal record as a table: date, target, mode, duration, result.
pub fn history(state_dir: &Path, target: Option<&str>) -> anyhow::Result<String> {
    let (records, problems) = read(state_dir)?;
    let mut out = String::new();
    let records: Vec<&DrillRecord> = records
        .iter()
        .filter(|r| target.is_none_or(|t| r.target == t))
        .collect();
    if records.is_empty() {
        line(&mut out, "no drills recorded yet");
    } else {
        line(
            &mut out,
            format!(
                "{:<20}  {:<20}  {:<7}  {:>9}  RESULT",
                "DATE (UTC)", "TARGET", "MODE", "DURATION"
            ),
        );
        for r in &records {
            line(
                &mut out,
                format!(
                    "{:<20}  {:<20}  {:<7}  {:>9}  {}  {}",
                    r.at.format("%Y-%m-%d %H:%M:%S"),
                    r.target,
                    r.mode,
                    fmt_duration(r.duration),
                    if r.success { "success" } else { "FAILED " },
                    r.verdict
                ),
            );
        }
        let ok = records.iter().filter(|r| r.success).count();
        line(
            &mut out,
            format!("{} drill(s), {ok} successful", records.len()),
        );
    }
    for p in problems {
        line(&mut out, p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::shell_program;

    #[test]
    fn shell_program_finds_the_first_word_of_the_script() {
        let s = |a: &[&str]| a.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        for (argv, want) in [
            (
                s(&["sh", "-c", "pg_dump app > /tmp/app.sql"]),
                Some("pg_dump"),
            ),
            (
                s(&["/bin/bash", "-c", "  PGUSER=app exec pg_restore x"]),
                Some("pg_restore"),
            ),
            (
                s(&["sh", "-c", "cp .env.example .env.local; npm ci"]),
                Some("cp"),
            ),
            (s(&["sh", "-c", "echo hi > x"]), None),
            (s(&["sh", "-c", "$TOOL run"]), None),
            (s(&["sh", "-e", "x"]), None),
            (s(&["python3", "-c", "print(1)"]), None),
            (s(&["sh", "-c"]), None),
        ] {
            assert_eq!(shell_program(&argv).as_deref(), want, "{argv:?}");
        }
    }
}
