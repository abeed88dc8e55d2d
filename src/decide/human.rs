//! The transitions people cause or wait for: confirmation (approve, reject,
//! timeout, signals recovering while waiting), manual trigger, pause and
//! resume.
//!
//! Guards hold on every path that can lead to an execution: a paused
//! target, the per-target rate limit and dry-run (global or a release
//! window) are checked again when a confirmation arrives, because time has
//! passed since the trigger.

use chrono::Duration as ChronoDuration;

use super::incident::{after, finish, new_incident, note, start_rollback, DecideConfig};
use super::Guards;
use super::{
    Action, Cause, Event, Incident, NotifyKind, Outcome, Pause, Phase, StepError, TargetState, Time,
};
use crate::config::OnConfirmTimeout;
use crate::rules::RuleStatus;
use crate::util::fmt_duration;

/// The pause guard: `Some(explanation)` when automatic action is held.
pub(super) fn pause_guard(state: &TargetState) -> Option<String> {
    state.paused.as_ref().map(|p| {
        let why = p
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        let until = match p.until {
            Some(u) => format!("until {}", u.format("%Y-%m-%d %H:%M:%SZ")),
            None => "until resumed".to_string(),
        };
        format!(
            "paused: {} paused this target at {}{why} {until}; resume it to allow rollbacks",
            p.by,
            p.at.format("%Y-%m-%d %H:%M:%SZ")
        )
    })
}

/// A pause whose end has come is released, with a notification: a
/// forgotten pause must not disable protection for good.
pub(super) fn pause_expiry(state: &mut TargetState, now: Time, actions: &mut Vec<Action>) {
    let Some(p) = &state.paused else { return };
    let Some(until) = p.until else { return };
    if now < until {
        return;
    }
    let why = p
        .reason
        .as_deref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    let took = (until - p.at).to_std().unwrap_or_default();
    let message = format!(
        "the pause of {} by {}{why} ended at {} after {}: automatic rollback is armed again",
        state.target,
        p.by,
        until.format("%Y-%m-%d %H:%M:%SZ"),
        fmt_duration(took)
    );
    state.paused = None;
    actions.push(Action::NotifyTarget {
        kind: NotifyKind::PauseEnded,
        target: state.target.clone(),
        message,
    });
}

/// The per-target rate limit (forgets rollbacks older than an hour).
fn rate_guard(cfg: &DecideConfig, state: &mut TargetState, now: Time) -> Option<String> {
    let hour_ago = now - ChronoDuration::hours(1);
    state.rollbacks.retain(|t| *t > hour_ago);
    (state.rollbacks.len() as u32 >= cfg.max_rollbacks_per_hour).then(|| {
        format!(
            "rate limit: {} rollbacks of this target in the last hour (max_rollbacks_per_hour = {})",
            state.rollbacks.len(),
            cfg.max_rollbacks_per_hour
        )
    })
}

/// A waiting incident whose release is no longer live (deployed over, or
/// put back by hand, while waiting) is not rolled back: the plan would
/// act on another release than the one that breached, and the loop guard
/// was only checked for the old one.
fn version_guard(state: &TargetState, inc: &Incident) -> Option<String> {
    let (opened, live) = (inc.from_version.as_deref()?, state.version.as_deref()?);
    (opened != live).then(|| {
        format!(
            "version changed: the incident was opened on {opened} but {live} is live now; \
             rollbackd does not roll back a release that is no longer live (a new breach \
             opens a new incident)"
        )
    })
}

/// Why this decision is a dry-run, if it is.
pub(super) fn dry_run_reason(cfg: &DecideConfig, now: Time) -> Option<String> {
    if cfg.dry_run {
        return Some("dry_run = true".to_string());
    }
    cfg.windows
        .iter()
        .find(|w| w.contains(now))
        .map(|w| format!("inside release window \"{}\"", w.name))
}

/// Close `inc` as escalated by `guard`: nothing is run.
pub(super) fn escalate(
    cfg: &DecideConfig,
    state: &mut TargetState,
    mut inc: Incident,
    guard: String,
    now: Time,
    actions: &mut Vec<Action>,
) {
    inc.error = Some(guard.clone());
    let msg = format!("escalated, no action: {guard}");
    let kind = NotifyKind::Escalated;
    finish(
        cfg,
        state,
        Box::new(inc),
        Outcome::Escalated,
        kind,
        msg,
        now,
        actions,
    );
}

/// An approved (or unconfirmed but due) rollback: check the guards again,
/// then run the plan, record a dry-run, or escalate.
fn proceed(
    cfg: &DecideConfig,
    guards: &Guards,
    state: &mut TargetState,
    mut inc: Incident,
    now: Time,
    actions: &mut Vec<Action>,
) {
    let guard = version_guard(state, &inc)
        .or_else(|| pause_guard(state))
        .or_else(|| rate_guard(cfg, state, now));
    if let Some(guard) = guard {
        escalate(cfg, state, inc, guard, now, actions);
        return;
    }
    if let Some(why) = dry_run_reason(cfg, now) {
        inc.dry_run = true;
        let msg = format!(
            "dry-run ({why}): would roll back with {}, nothing executed",
            cfg.method
        );
        let kind = NotifyKind::WouldRollBack;
        finish(
            cfg,
            state,
            Box::new(inc),
            Outcome::DryRun,
            kind,
            msg,
            now,
            actions,
        );
        return;
    }
    start_rollback(cfg, guards, state, inc, now, actions);
}

/// Triggered with `confirm = "required"`: ask and wait until the deadline.
pub(super) fn await_confirmation(
    cfg: &DecideConfig,
    state: &mut TargetState,
    mut inc: Incident,
    now: Time,
    actions: &mut Vec<Action>,
) {
    let deadline = after(now, cfg.confirm_timeout);
    let then = match cfg.on_confirm_timeout {
        OnConfirmTimeout::Rollback => "roll back",
        OnConfirmTimeout::Escalate => "escalate without acting",
    };
    note(
        &mut inc,
        now,
        "AwaitingConfirmation",
        format!(
            "confirm = required: waiting for approve or reject until {} (confirm_timeout {}); \
             without an answer rollbackd will {then}",
            deadline.format("%Y-%m-%d %H:%M:%SZ"),
            fmt_duration(cfg.confirm_timeout)
        ),
    );
    let inc = Box::new(inc);
    actions.push(Action::WriteRecord {
        incident: inc.clone(),
    });
    actions.push(Action::Notify {
        kind: NotifyKind::AwaitingConfirmation,
        incident: inc.clone(),
    });
    state.phase = Phase::AwaitingConfirmation {
        incident: inc,
        deadline,
    };
}

/// AwaitingConfirmation on a new evaluation: resolve when the signals are
/// all clear again, apply `on_confirm_timeout` at the deadline.
pub(super) fn awaiting(
    cfg: &DecideConfig,
    guards: &Guards,
    state: &mut TargetState,
    now: Time,
    actions: &mut Vec<Action>,
) {
    let Phase::AwaitingConfirmation { incident, deadline } = &state.phase else {
        return;
    };
    let (mut inc, deadline) = ((**incident).clone(), *deadline);
    // Recovery is evidence: the rules that caused the incident are Ok on
    // real data (an Unknown one, e.g. a probe short of `min_samples` after
    // a restart, is not; nor is another rule's Ok), and none breaches.
    let breaching = state.rules.iter().any(|r| {
        !r.shadow
            && matches!(
                r.status,
                RuleStatus::Pending { .. } | RuleStatus::Breached { .. }
            )
    });
    let clear = !breaching
        && matches!(
            super::recovery::evidence(&inc, &state.rules),
            super::recovery::Evidence::Recovered(_)
        );
    if clear {
        let values: Vec<String> = state.rules.iter().map(|r| r.explain()).collect();
        let msg = format!(
            "signals recovered while waiting for confirmation, no action taken: {}",
            values.join("; ")
        );
        inc.verification = Some(msg.clone());
        let kind = NotifyKind::Resolved;
        finish(
            cfg,
            state,
            Box::new(inc),
            Outcome::Resolved,
            kind,
            msg,
            now,
            actions,
        );
        return;
    }
    if now < deadline {
        return;
    }
    let waited = fmt_duration(cfg.confirm_timeout);
    match cfg.on_confirm_timeout {
        OnConfirmTimeout::Escalate => {
            let guard = format!(
                "confirmation timeout: nobody approved or rejected within {waited} \
                 (on_confirm_timeout = escalate)"
            );
            escalate(cfg, state, inc, guard, now, actions);
        }
        OnConfirmTimeout::Rollback => {
            let acting = state.rules.iter().filter(|r| !r.shadow).count();
            let blind: Vec<String> = state
                .rules
                .iter()
                .filter(|r| !r.shadow && matches!(r.status, RuleStatus::Unknown { .. }))
                .map(|r| r.explain())
                .collect();
            if acting > 0 && blind.len() == acting {
                let guard = format!(
                    "monitoring is blind at the confirmation deadline (no rule has data), so \
                     rollbackd does not act on its own: {}",
                    blind.join("; ")
                );
                escalate(cfg, state, inc, guard, now, actions);
                return;
            }
            note(
                &mut inc,
                now,
                "Triggered",
                format!(
                    "nobody answered within {waited}; on_confirm_timeout = rollback, so rollbackd proceeds"
                ),
            );
            proceed(cfg, guards, state, inc, now, actions);
        }
    }
}

/// `trigger --to-version V`: the incident goes to V, whatever was seen before.
fn pin_version(inc: &mut Incident, version: Option<&str>, by: &str, now: Time) {
    let Some(v) = version else { return };
    inc.to_version = Some(v.to_string());
    inc.requested_version = Some(v.to_string());
    note(
        inc,
        now,
        "Triggered",
        format!("{by} asked for version {v} (--to-version); the executor checked that it exists"),
    );
}

/// The incident awaiting confirmation, if `id` names it; else why not.
fn awaiting_incident(state: &TargetState, id: &str) -> Result<Incident, StepError> {
    match &state.phase {
        Phase::AwaitingConfirmation { incident, .. } if incident.id == id => {
            Ok((**incident).clone())
        }
        phase => {
            let (incident, target, phase) = (id.to_string(), state.target.clone(), phase.name());
            Err(match state.incident() {
                Some(open) if open.id == id => StepError::NotAwaiting {
                    incident,
                    target,
                    phase,
                },
                _ => StepError::UnknownIncident {
                    incident,
                    target,
                    phase,
                },
            })
        }
    }
}

/// Approve, reject, manual trigger, pause, resume. An event that makes no
/// sense in the current phase is refused with why.
pub(super) fn on_event(
    cfg: &DecideConfig,
    guards: &Guards,
    state: &mut TargetState,
    event: &Event,
    now: Time,
    actions: &mut Vec<Action>,
) -> Result<(), StepError> {
    let in_flight = |state: &TargetState| StepError::InFlight {
        target: state.target.clone(),
        phase: state.phase.name(),
    };
    match event {
        Event::Approve { incident, by } => {
            let mut inc = awaiting_incident(state, incident)?;
            inc.confirmed_by = Some(by.clone());
            note(&mut inc, now, "Triggered", format!("approved by {by}"));
            proceed(cfg, guards, state, inc, now, actions);
        }
        Event::Reject {
            incident,
            by,
            reason,
        } => {
            let mut inc = awaiting_incident(state, incident)?;
            let why = format!("rejected by {by}: {reason}");
            inc.error = Some(why.clone());
            let msg = format!("{why}; nothing executed, breaches are suppressed");
            let kind = NotifyKind::Rejected;
            finish(
                cfg,
                state,
                Box::new(inc),
                Outcome::Suppressed,
                kind,
                msg,
                now,
                actions,
            );
        }
        Event::ManualTrigger {
            by,
            reason,
            to_version,
        } => match &state.phase {
            Phase::AwaitingConfirmation { incident, .. } => {
                let mut inc = (**incident).clone();
                inc.confirmed_by = Some(by.clone());
                pin_version(&mut inc, to_version.as_deref(), by, now);
                note(
                    &mut inc,
                    now,
                    "Triggered",
                    format!("manual trigger by {by} approves the waiting incident: {reason}"),
                );
                proceed(cfg, guards, state, inc, now, actions);
            }
            // The previous rollback's `after` steps still run: refuse.
            Phase::Done { .. } if state.after_running.is_some() => return Err(in_flight(state)),
            Phase::Watching | Phase::Done { .. } => {
                if let Some(why) = super::peers::busy_guard(guards, state) {
                    let target = state.target.clone();
                    return Err(StepError::ExecutorBusy { target, why });
                }
                let cause = Cause::Manual {
                    by: by.clone(),
                    reason: reason.clone(),
                };
                let mut inc = new_incident(cfg, state, cause, now);
                inc.confirmed_by = Some(by.clone());
                note(
                    &mut inc,
                    now,
                    "Triggered",
                    format!(
                        "manual trigger by {by}: {reason} (confirmation skipped: a human asked)"
                    ),
                );
                pin_version(&mut inc, to_version.as_deref(), by, now);
                proceed(cfg, guards, state, inc, now, actions);
            }
            Phase::RollingBack { .. } | Phase::Verifying { .. } => return Err(in_flight(state)),
        },
        Event::Pause {
            by,
            reason,
            duration,
        } => {
            // A new pause replaces the old one: its end is the one asked for last.
            let length = duration.unwrap_or(cfg.max_pause);
            state.paused = Some(Pause {
                by: by.clone(),
                at: now,
                reason: reason.clone().filter(|r| !r.trim().is_empty()),
                // Beyond the calendar (the API refuses such lengths) is
                // until resumed, never a panic.
                until: (!length.is_zero())
                    .then(|| {
                        chrono::Duration::from_std(length)
                            .ok()
                            .and_then(|d| now.checked_add_signed(d))
                    })
                    .flatten(),
            });
        }
        Event::Resume { .. } => state.paused = None,
        _ => {
            return Err(StepError::Unexpected {
                event: event.name(),
                phase: state.phase.name(),
            })
        }
    }
    Ok(())
}
