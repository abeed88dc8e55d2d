//! The incident model's building blocks shared by every part of the
//! machine: the per-target settings it decides with ([`DecideConfig`]), a
//! new incident, a timeline note, starting the plan and closing an
//! incident. `machine`, `human` and `shadow` all use these; none of them
//! uses another's internals, so the decision core has no import circle.

use std::time::Duration;

use chrono::Duration as ChronoDuration;

use super::Guards;
use super::{
    Action, Cause, Incident, NotifyKind, Outcome, Phase, TargetState, Time, TimelineEntry,
};
use crate::config::{BlastRadius, Config, OnConfirmTimeout, TargetConfig, Window};

/// The per-target settings the machine decides with (derived from config).
#[derive(Debug, Clone, PartialEq)]
pub struct DecideConfig {
    /// Global dry-run: record and notify, never execute.
    pub dry_run: bool,
    /// Release windows: inside one, decisions are dry-run.
    pub windows: Vec<Window>,
    /// Quiet time after an incident.
    pub cooldown: Duration,
    /// Verification window.
    pub verify_within: Duration,
    /// Every rule must be Ok for verification to pass.
    pub verify_rules: bool,
    /// Verification gates are configured (a verify URL, checks or
    /// commands) and must all pass.
    pub verify_url: bool,
    /// How many `checks` and `commands` there are besides the URL (0: the
    /// gate is the verify URL alone and is named so).
    pub verify_gates: usize,
    /// The plan has `on_failure` steps to run when it or its verification
    /// fails.
    pub has_on_failure: bool,
    /// Template variables the plan cannot run without, with where they are
    /// used (`rollback.steps[1]`); checked before the first step.
    pub needs_vars: Vec<(String, Vec<String>)>,
    /// The target has a version source (`version_command`, ...).
    pub version_source: bool,
    /// Executor kind name, for the record.
    pub method: String,
    /// Rate limit of executed rollbacks.
    pub max_rollbacks_per_hour: u32,
    /// The plan has `after` steps to run once verification passed.
    pub has_after: bool,
    /// `confirm = "required"`: a breach waits for a human.
    pub confirm: bool,
    /// How long to wait for the human.
    pub confirm_timeout: Duration,
    /// What a confirmation timeout does.
    pub on_confirm_timeout: OnConfirmTimeout,
    /// Unknown this long raises the blind notification.
    pub blind_after: Duration,
    /// Roll back automatically only releases deployed within this long.
    pub only_within: Option<Duration>,
    /// Breaches beginning on this many targets at once escalate instead
    /// (`None`: guard off).
    pub blast_radius: Option<BlastRadius>,
    /// Recovery-time objective, recorded in each incident.
    pub rto: Duration,
    /// `[daemon] max_pause`: how long a pause without `--for` lasts.
    pub max_pause: Duration,
    /// `[daemon] settle`: how much longer than its `for` a breach holds
    /// before the target acts, so the blast-radius guard sees its peers.
    pub settle: Duration,
}

impl DecideConfig {
    /// Derive a target's decision settings from the validated config.
    pub fn from_config(config: &Config, target: &TargetConfig) -> DecideConfig {
        DecideConfig {
            dry_run: config.daemon.dry_run,
            windows: config.windows.clone(),
            cooldown: target.cooldown,
            verify_within: target.verify.within,
            verify_rules: target.verify.rules,
            verify_url: target.verify.url.is_some()
                || !target.verify.checks.is_empty()
                || !target.verify.commands.is_empty(),
            verify_gates: target.verify.checks.len() + target.verify.commands.len(),
            has_on_failure: !target.rollback.on_failure.is_empty(),
            needs_vars: target.rollback.needs_vars(),
            version_source: target.version.is_some(),
            method: target.rollback.kind.name().to_string(),
            max_rollbacks_per_hour: target.max_rollbacks_per_hour.get(),
            has_after: !target.rollback.after.is_empty(),
            confirm: target.confirm.required,
            confirm_timeout: target.confirm.timeout,
            on_confirm_timeout: target.confirm.on_timeout,
            blind_after: target.blind_after,
            only_within: target.only_within,
            blast_radius: config.daemon.max_simultaneous_breaches,
            rto: target.rto,
            max_pause: config.daemon.max_pause,
            settle: config.daemon.settle,
        }
    }
}

/// Why a variable of the plan has no value, and what to do about it.
pub(super) fn missing_var(cfg: &DecideConfig, inc: &Incident) -> Option<String> {
    cfg.needs_vars.iter().find_map(|(var, at)| {
        let why = match var.as_str() {
            "to_version" if inc.to_version.is_none() => {
                if cfg.version_source {
                    format!(
                        "no earlier version seen since start (only {} was seen live); \
                         use trigger --to-version",
                        inc.from_version.as_deref().unwrap_or("no version")
                    )
                } else {
                    "no earlier version seen since start; set version_command or use \
                     trigger --to-version"
                        .to_string()
                }
            }
            "from_version" if inc.from_version.is_none() => {
                if cfg.version_source {
                    "the live version has not been read yet".to_string()
                } else {
                    "the live version is unknown; set version_command".to_string()
                }
            }
            _ => return None,
        };
        Some(format!("{{{var}}}: {why} (used by {})", at.join(", ")))
    })
}

pub(super) fn after(now: Time, d: Duration) -> Time {
    now + ChronoDuration::from_std(d).unwrap_or(ChronoDuration::MAX)
}

pub(super) fn note(incident: &mut Incident, now: Time, phase: &str, message: String) {
    incident.timeline.push(TimelineEntry {
        at: now,
        phase: phase.to_string(),
        message,
    });
}

/// Triggered, guards passed: run the plan, unless one of its template
/// variables has no value (refused before the first step, `pre` included)
/// or the global cap is reached (escalated: the last guard, asked only of a
/// rollback that would otherwise start now).
pub(super) fn start_rollback(
    cfg: &DecideConfig,
    guards: &Guards,
    state: &mut TargetState,
    mut inc: Incident,
    now: Time,
    actions: &mut Vec<Action>,
) {
    if let Some(why) = missing_var(cfg, &inc) {
        let msg = format!("rollback refused before its first step: {why}; nothing was run");
        inc.error = Some(msg.clone());
        finish(
            cfg,
            state,
            Box::new(inc),
            Outcome::Failed,
            NotifyKind::RollbackFailed,
            msg,
            now,
            actions,
        );
        return;
    }
    if let Some(guard) = global_guard(guards, now) {
        inc.error = Some(guard.clone());
        actions.push(Action::GlobalLimitRefused {
            incident: inc.id.clone(),
            reason: guard.clone(),
        });
        finish(
            cfg,
            state,
            Box::new(inc),
            Outcome::Escalated,
            NotifyKind::Escalated,
            format!("escalated, no action: {guard}"),
            now,
            actions,
        );
        return;
    }
    inc.rollback_started = Some(now);
    state.rollbacks.push(now);
    let msg = format!(
        "rolling back {} -> {} with {}",
        inc.from_version.as_deref().unwrap_or("?"),
        inc.to_version.as_deref().unwrap_or("previous release"),
        cfg.method
    );
    note(&mut inc, now, "RollingBack", msg);
    let inc = Box::new(inc);
    actions.push(Action::WriteRecord {
        incident: inc.clone(),
    });
    actions.push(Action::Notify {
        kind: NotifyKind::RollbackStarted,
        incident: inc.clone(),
    });
    actions.push(Action::Execute {
        incident: inc.clone(),
    });
    state.phase = Phase::RollingBack { incident: inc };
}

/// The global cap (`[daemon] max_rollbacks_per_hour`): `Some(explanation)`
/// when the rollbacks of every target in the last hour reach it.
fn global_guard(guards: &Guards, now: Time) -> Option<String> {
    let cap = guards.global.as_ref()?;
    let hour_ago = now - ChronoDuration::hours(1);
    let n = cap.started.iter().filter(|t| **t > hour_ago).count();
    (n as u64 >= u64::from(cap.max_per_hour)).then(|| {
        format!(
            "global rate limit: [daemon] max_rollbacks_per_hour = {} reached across all targets \
             ({n} rollback{} started in the last hour)",
            cap.max_per_hour,
            if n == 1 { "" } else { "s" }
        )
    })
}

/// Close the incident with an outcome: record, notify, cooldown.
#[allow(clippy::too_many_arguments)]
pub(super) fn finish(
    cfg: &DecideConfig,
    state: &mut TargetState,
    mut inc: Box<Incident>,
    outcome: Outcome,
    kind: NotifyKind,
    message: String,
    now: Time,
    actions: &mut Vec<Action>,
) {
    inc.outcome = Some(outcome);
    let until = after(now, cfg.cooldown);
    let phase = Phase::Done {
        incident: inc.clone(),
        until,
    };
    note(
        &mut inc,
        now,
        phase.name(),
        format!(
            "{message}; cooldown until {}",
            until.format("%Y-%m-%d %H:%M:%SZ")
        ),
    );
    actions.push(Action::WriteRecord {
        incident: inc.clone(),
    });
    actions.push(Action::Notify {
        kind,
        incident: inc.clone(),
    });
    state.phase = Phase::Done {
        incident: inc,
        until,
    };
}

/// A new incident for the target, numbered in sequence, versions from the state.
pub(super) fn new_incident(
    cfg: &DecideConfig,
    state: &mut TargetState,
    cause: Cause,
    now: Time,
) -> Incident {
    state.incident_seq += 1;
    state.settling = None;
    Incident {
        id: format!(
            "{}-{}-{}",
            now.format("%Y%m%d-%H%M%S"),
            state.target,
            state.incident_seq
        ),
        target: state.target.clone(),
        cause,
        from_version: state.version.clone(),
        to_version: state.previous_version.clone(),
        method: cfg.method.clone(),
        dry_run: false,
        opened_at: now,
        rollback_started: None,
        rollback_finished: None,
        verify_finished: None,
        steps: Vec::new(),
        verification: None,
        outcome: None,
        error: None,
        timeline: Vec::new(),
        after_steps: Vec::new(),
        verify_checks: Vec::new(),
        on_failure_steps: Vec::new(),
        requested_version: None,
        confirmed_by: None,
        first_evidence: None,
        rto: Some(cfg.rto),
        blast_radius_after_acting: None,
    }
}
