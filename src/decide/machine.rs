//! The transition function: `step(cfg, guards, state, event, now)`.

use std::time::Duration;

use chrono::Duration as ChronoDuration;

use super::incident::{
    after, finish, missing_var, new_incident, note, start_rollback, DecideConfig,
};
use super::recovery::Evidence;
use super::Guards;
use super::{Action, Cause, Event, Fleet, Incident, NotifyKind, Outcome, Phase, TargetState, Time};
use crate::report::{CheckReport, ExecResult};
use crate::rules::{RuleReport, RuleStatus};
use crate::util::fmt_duration;

/// Why an event does not fit the target's state, as data: the API answers
/// a person with it (its text is this type's `Display`), the worker drops a
/// stale effect result with it. The state is left unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// Approve or reject for the target's incident, which no longer waits
    /// for an answer (answered, timed out, resolved).
    #[error("incident {incident} is not awaiting confirmation: target {target} is {phase}")]
    NotAwaiting {
        /// The incident named.
        incident: String,
        /// Target name.
        target: String,
        /// The phase the target is in.
        phase: &'static str,
    },
    /// Approve or reject for an incident that is not the target's current one.
    #[error("incident {incident} is not awaiting confirmation (target {target} is {phase})")]
    UnknownIncident {
        /// The incident named.
        incident: String,
        /// Target name.
        target: String,
        /// The phase the target is in.
        phase: &'static str,
    },
    /// A manual trigger while a rollback (or its `after` / `on_failure`
    /// steps) is under way: one at a time.
    #[error("target {target} already has a rollback in flight ({phase}); nothing done")]
    InFlight {
        /// Target name.
        target: String,
        /// The phase the target is in.
        phase: &'static str,
    },
    /// Another target with the same executor has an open incident: one
    /// plan per service at a time.
    #[error("target {target} is not rolled back now: {why}; nothing done")]
    ExecutorBusy {
        /// Target name.
        target: String,
        /// The other target, its incident and the shared executor.
        why: String,
    },
    /// The daemon could not read its state at start: it acts on no target.
    #[error("rollbackd is in state-lost mode and acts on no target: {why}")]
    StateLost {
        /// Why the state could not be read, and how to get out of it.
        why: String,
    },
    /// An effect's result that does not fit (e.g. for an incident that is
    /// no longer running), or an event only older versions journaled.
    #[error("event {event} is not expected in phase {phase}")]
    Unexpected {
        /// The event's name.
        event: &'static str,
        /// The phase the target is in.
        phase: &'static str,
    },
}

/// Advance the target's state by one event at time `now`, with the inputs
/// of the guards that span targets (`guards`) as the runner saw them.
///
/// Each kind of event has its own function below; an effect's result that
/// does not fit the target's phase (or its incident) is refused here.
pub fn step(
    cfg: &DecideConfig,
    guards: &Guards,
    mut state: TargetState,
    event: Event,
    now: Time,
) -> Result<(TargetState, Vec<Action>), StepError> {
    super::peers::refuse_when_lost(guards)?;
    let mut actions = Vec::new();
    let unexpected = |event: &Event, phase: &Phase| StepError::Unexpected {
        event: event.name(),
        phase: phase.name(),
    };
    // A pause that ran out ends on whatever step comes first (the worker
    // steps every poll), before the event is looked at.
    super::human::pause_expiry(&mut state, now, &mut actions);
    match event {
        Event::VersionObserved { version } => {
            observe_version(&mut state, version, now);
        }
        Event::Evaluated { rules, fleet } => {
            evaluated(cfg, guards, &mut state, rules, &fleet, now, &mut actions);
        }
        Event::ExecFinished {
            ref incident,
            ref result,
        } => {
            let inc = match &state.phase {
                Phase::RollingBack { incident: open } if open.id == *incident => open.clone(),
                _ => return Err(unexpected(&event, &state.phase)),
            };
            plan_finished(cfg, &mut state, inc, result, now, &mut actions);
        }
        Event::VerifyChecked {
            ref incident,
            ok,
            ref detail,
            ref checks,
        } => {
            if !gates_checked(cfg, &mut state, incident, ok, detail, checks, now) {
                return Err(unexpected(&event, &state.phase));
            }
            advance(
                cfg,
                guards,
                &mut state,
                now,
                &Fleet::default(),
                &mut actions,
            );
        }
        Event::OnFailureFinished {
            ref incident,
            ref result,
        }
        | Event::AfterFinished {
            ref incident,
            ref result,
        } => {
            let on_failure = matches!(event, Event::OnFailureFinished { .. });
            if !hooks_finished(&mut state, on_failure, incident, result, now, &mut actions) {
                return Err(unexpected(&event, &state.phase));
            }
        }
        // Only older versions journaled it (the global cap is an input now).
        Event::ExecRefused { .. } => return Err(unexpected(&event, &state.phase)),
        Event::Recovered => recovered(cfg, &mut state, now, &mut actions),
        Event::Approve { .. }
        | Event::Reject { .. }
        | Event::ManualTrigger { .. }
        | Event::Pause { .. }
        | Event::Resume { .. } => {
            super::human::on_event(cfg, guards, &mut state, &event, now, &mut actions)?;
        }
    }
    Ok((state, actions))
}

/// All rules were evaluated: note blindness and shadow breaches, advance
/// the phase, then escalate after the fact and run the gates when due.
fn evaluated(
    cfg: &DecideConfig,
    guards: &Guards,
    state: &mut TargetState,
    rules: Vec<RuleReport>,
    fleet: &Fleet,
    now: Time,
    actions: &mut Vec<Action>,
) {
    state.rules = rules;
    super::peers::end_wait(guards, state, now);
    blindness(cfg, state, now, actions);
    super::shadow::shadow_rules(cfg, state, now, actions);
    advance(cfg, guards, state, now, fleet, actions);
    // A rollback that started before the blast-radius guard could
    // see its peers is escalated after the fact, once.
    super::blast::after_acting(cfg, state, fleet, now, actions);
    // The gates are checked once per evaluation (poll), one run at a time.
    run_gates(cfg, state, false, actions);
}

/// The rollback plan of `inc` (the target's running incident) ended: verify
/// recovery when it succeeded, close the incident as failed when not.
fn plan_finished(
    cfg: &DecideConfig,
    state: &mut TargetState,
    mut inc: Box<Incident>,
    result: &ExecResult,
    now: Time,
    actions: &mut Vec<Action>,
) {
    inc.steps = result.steps.clone();
    inc.rollback_finished = Some(now);
    if result.from_version.is_some() {
        inc.from_version = result.from_version.clone();
    }
    if result.to_version.is_some() {
        inc.to_version = result.to_version.clone();
    }
    let took = Incident::span(inc.rollback_started, Some(now)).unwrap_or_default();
    if result.ok {
        let deadline = after(now, cfg.verify_within);
        let n = inc.steps.len();
        let msg = format!(
            "rollback plan ({}, {n} step{}) succeeded in {}; verifying recovery within {}",
            inc.method,
            if n == 1 { "" } else { "s" },
            fmt_duration(took),
            fmt_duration(cfg.verify_within)
        );
        note(&mut inc, now, "Verifying", msg);
        state.phase = Phase::Verifying {
            incident: inc.clone(),
            deadline,
            url_ok: None,
            gates_running: false,
        };
        run_gates(cfg, state, true, actions);
        actions.push(Action::WriteRecord { incident: inc });
    } else {
        let why = result
            .error
            .clone()
            .unwrap_or_else(|| "rollback plan failed".to_string());
        inc.error = Some(why.clone());
        on_failure(cfg, state, &inc, actions);
        finish(
            cfg,
            state,
            inc,
            Outcome::Failed,
            NotifyKind::RollbackFailed,
            format!("rollback failed after {}: {why}", fmt_duration(took)),
            now,
            actions,
        );
    }
}

/// The verification gates ran for `incident`: note their result when it
/// changed and keep it for [`advance`]. `false` when the target is not
/// verifying that incident (nothing is changed).
fn gates_checked(
    cfg: &DecideConfig,
    state: &mut TargetState,
    incident: &str,
    ok: bool,
    detail: &str,
    checks: &[CheckReport],
    now: Time,
) -> bool {
    let Phase::Verifying {
        incident: open,
        url_ok,
        gates_running,
        ..
    } = &mut state.phase
    else {
        return false;
    };
    if open.id != *incident {
        return false;
    }
    *gates_running = false;
    let label = if cfg.verify_gates == 0 {
        "verify URL"
    } else {
        "verification gates"
    };
    if *url_ok != Some(ok) {
        let phase = "Verifying";
        note(open, now, phase, format!("{label}: {detail}"));
    }
    *url_ok = Some(ok);
    open.verification = Some(format!("{label}: {detail}"));
    open.verify_checks = checks.to_vec();
    true
}

/// The `on_failure` (`on_failure`: true) or `after` steps of `incident`
/// ended: record them on the closed incident. `false` when the target's
/// closed incident is not that one (nothing is changed).
fn hooks_finished(
    state: &mut TargetState,
    on_failure: bool,
    incident: &str,
    result: &ExecResult,
    now: Time,
    actions: &mut Vec<Action>,
) -> bool {
    let phase = state.phase.name();
    let Phase::Done { incident: done, .. } = &mut state.phase else {
        return false;
    };
    if done.id != *incident {
        return false;
    }
    let what = if on_failure {
        done.on_failure_steps = result.steps.clone();
        "on_failure"
    } else {
        done.after_steps = result.steps.clone();
        "after"
    };
    state.after_running = None;
    let msg = match &result.error {
        None => format!("{what} steps done ({} steps)", result.steps.len()),
        Some(e) => format!("{what} steps failed: {e}"),
    };
    note(done, now, phase, msg);
    actions.push(Action::WriteRecord {
        incident: done.clone(),
    });
    true
}

/// The daemon restarted and read this state back: what was running when
/// it stopped is not run again blindly.
fn recovered(cfg: &DecideConfig, state: &mut TargetState, now: Time, actions: &mut Vec<Action>) {
    match &mut state.phase {
        Phase::RollingBack { incident } => {
            let mut inc = incident.clone();
            note(
                &mut inc,
                now,
                "Verifying",
                "rollbackd restarted (or, with [cluster], the node running it was lost) \
                 while the rollback plan was running; it is not run again blindly: \
                 verifying whether the service recovered instead"
                    .to_string(),
            );
            if inc.rollback_finished.is_none() {
                inc.rollback_finished = Some(now);
            }
            actions.push(Action::Notify {
                kind: NotifyKind::Interrupted,
                incident: inc.clone(),
            });
            state.phase = Phase::Verifying {
                incident: inc.clone(),
                deadline: after(now, cfg.verify_within),
                url_ok: None,
                gates_running: false,
            };
            run_gates(cfg, state, true, actions);
            actions.push(Action::WriteRecord { incident: inc });
        }
        // The run under way (if any) died with the previous process.
        Phase::Verifying { .. } => run_gates(cfg, state, true, actions),
        Phase::Done { incident, .. } if state.after_running.is_some() => {
            // The process died while the `after` steps ran: they are not
            // run again blindly (a cache purge may have half happened).
            state.after_running = None;
            note(
                incident,
                now,
                "Done",
                format!(
                    "rollbackd restarted while the {} steps ran; they are not run again: \
                     check them by hand",
                    if incident.outcome == Some(Outcome::Failed) {
                        "on_failure"
                    } else {
                        "after"
                    }
                ),
            );
            actions.push(Action::WriteRecord {
                incident: incident.clone(),
            });
        }
        // Same ID, same deadline: the wait goes on.
        Phase::AwaitingConfirmation { .. } | Phase::Watching | Phase::Done { .. } => {}
    }
}

fn observe_version(state: &mut TargetState, version: String, now: Time) {
    if state.version.as_deref() == Some(version.as_str()) {
        return;
    }
    if state.version.is_some() {
        state.previous_version = state.version.take();
        state.deployed_at = Some(now);
    }
    // A version other than the one we rolled back to is a new deploy: it
    // re-arms automatic rollback. Our own rollback landing does not.
    if state.loop_guard.as_deref().is_some_and(|g| g != version) {
        state.loop_guard = None;
    }
    state.version = Some(version);
}

/// Verifying with gates configured: ask for a run of the gates, unless one
/// is under way (`restart`: none is, whatever the state says).
fn run_gates(
    cfg: &DecideConfig,
    state: &mut TargetState,
    restart: bool,
    actions: &mut Vec<Action>,
) {
    let Phase::Verifying {
        incident,
        gates_running,
        ..
    } = &mut state.phase
    else {
        return;
    };
    if !cfg.verify_url || (*gates_running && !restart) {
        return;
    }
    *gates_running = true;
    actions.push(Action::Verify {
        incident: incident.id.clone(),
    });
}

/// Re-evaluate the current phase against the latest rules and the clock.
fn advance(
    cfg: &DecideConfig,
    guards: &Guards,
    state: &mut TargetState,
    now: Time,
    fleet: &Fleet,
    actions: &mut Vec<Action>,
) {
    if let Phase::Done { until, .. } = &state.phase {
        if now >= *until {
            state.phase = Phase::Watching;
        }
    }
    match &state.phase {
        Phase::Watching => watch(cfg, guards, state, now, fleet, actions),
        Phase::Verifying {
            incident,
            deadline,
            url_ok,
            ..
        } => {
            let (mut inc, deadline, url_ok) = (incident.clone(), *deadline, *url_ok);
            verify(cfg, state, &mut inc, deadline, url_ok, now, actions);
        }
        Phase::AwaitingConfirmation { .. } => {
            super::human::awaiting(cfg, guards, state, now, actions)
        }
        Phase::RollingBack { .. } | Phase::Done { .. } => {}
    }
}

/// Verifying: close the incident as rolled back once healthy, or as failed
/// ("did not help") at the deadline.
fn verify(
    cfg: &DecideConfig,
    state: &mut TargetState,
    inc: &mut Box<Incident>,
    deadline: Time,
    url_ok: Option<bool>,
    now: Time,
    actions: &mut Vec<Action>,
) {
    let url_healthy = !cfg.verify_url || url_ok == Some(true);
    // Shadow rules never decide, verification included.
    let rules: Vec<&RuleReport> = state.rules.iter().filter(|r| !r.shadow).collect();
    // Rules without data abstain here too (a crashed release's metrics may
    // take a while to come back), but something must show health: the
    // rules that triggered the rollback, Ok on real data (another rule's
    // Ok does not stand in for them), or the verification gates.
    let not_ok: Vec<String> = rules
        .iter()
        .filter(|r| {
            matches!(
                r.status,
                RuleStatus::Pending { .. } | RuleStatus::Breached { .. }
            )
        })
        .map(|r| r.explain())
        .collect();
    let evidence = super::recovery::evidence(inc, &state.rules);
    let shown = match &evidence {
        Evidence::Recovered(_) => true,
        Evidence::NotYet(_) => false,
        // A manual rollback names no rule: any rule Ok on real data.
        Evidence::NoCause => rules.iter().any(|r| super::recovery::shows_health(r)),
    };
    let rules_healthy = !cfg.verify_rules || (not_ok.is_empty() && (shown || cfg.verify_url));
    let started = inc.rollback_finished.unwrap_or(now);
    let waited = Incident::span(Some(started), Some(now)).unwrap_or_default();
    if url_healthy && rules_healthy {
        let what = healthy_because(cfg, inc, &rules, &evidence);
        let msg = format!(
            "healthy {} after the rollback: {}",
            fmt_duration(waited),
            what.join(" and ")
        );
        inc.verification = Some(msg.clone());
        inc.verify_finished = Some(now);
        state.loop_guard = inc.to_version.clone();
        if cfg.has_after {
            state.after_running = Some(inc.id.clone());
            actions.push(Action::RunAfter {
                incident: inc.clone(),
            });
        }
        let kind = NotifyKind::RolledBack;
        finish(
            cfg,
            state,
            inc.clone(),
            Outcome::RolledBack,
            kind,
            msg,
            now,
            actions,
        );
    } else if now >= deadline {
        let mut why = Vec::new();
        if !url_healthy {
            why.push(gates_still_fail(cfg, inc, url_ok));
        }
        if !rules_healthy {
            why.extend(rules_still_fail(not_ok, evidence));
        }
        let msg = format!(
            "rollback did not help: still unhealthy {} after the rollback: {}",
            fmt_duration(waited),
            why.join("; ")
        );
        inc.verification = Some(msg.clone());
        inc.verify_finished = Some(now);
        inc.error = Some(msg.clone());
        // The release was not the problem: do not roll back again until a
        // new version is deployed.
        state.loop_guard = inc.to_version.clone();
        on_failure(cfg, state, inc, actions);
        let kind = NotifyKind::DidNotHelp;
        finish(
            cfg,
            state,
            inc.clone(),
            Outcome::Failed,
            kind,
            msg,
            now,
            actions,
        );
    }
}

/// What shows the service healthy after the rollback, for the incident's
/// verification note: the gates that passed and the rules that are ok
/// (`rules`: the acting ones).
fn healthy_because(
    cfg: &DecideConfig,
    inc: &Incident,
    rules: &[&RuleReport],
    evidence: &Evidence,
) -> Vec<String> {
    let mut what = Vec::new();
    if cfg.verify_url && cfg.verify_gates == 0 {
        what.push("the verify URL answered".to_string());
    } else if cfg.verify_url {
        let n = inc.verify_checks.len();
        what.push(format!("all {n} verification gates passed"));
    }
    if let (true, Evidence::Recovered(ok)) = (cfg.verify_rules, evidence) {
        what.push(format!(
            "the rule{} that triggered it {} ok on fresh data: {}",
            if ok.len() == 1 { "" } else { "s" },
            if ok.len() == 1 { "is" } else { "are" },
            ok.join("; ")
        ));
    }
    if cfg.verify_rules {
        let ok = rules.iter().filter(|r| r.status == RuleStatus::Ok).count();
        let n = rules.len();
        what.push(if ok == n {
            format!("all {n} rules are ok")
        } else {
            let silent: Vec<&str> = rules
                .iter()
                .filter(|r| r.status != RuleStatus::Ok)
                .map(|r| r.rule.as_str())
                .collect();
            format!(
                "{ok} of {n} rules are ok and none breaches ({} had no data and abstained)",
                silent.join(", ")
            )
        });
    }
    what
}

/// Why the verify URL or gates (`url_ok`: their last result, `None`
/// before they ran) do not show health at the deadline.
fn gates_still_fail(cfg: &DecideConfig, inc: &Incident, url_ok: Option<bool>) -> String {
    let failing: Vec<String> = inc
        .verify_checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.check, c.detail))
        .collect();
    match url_ok {
        Some(_) if cfg.verify_gates == 0 => "the verify URL still fails".to_string(),
        Some(_) => format!("verification gates still fail: {}", failing.join("; ")),
        None if cfg.verify_gates == 0 => "the verify URL was never checked".to_string(),
        None => "the verification gates never ran".to_string(),
    }
}

/// Why the rules do not show health at the deadline: those still Pending
/// or Breached (`not_ok`) or, when none is, why none shows recovery.
fn rules_still_fail(not_ok: Vec<String>, evidence: Evidence) -> Vec<String> {
    let blind = not_ok.is_empty();
    let mut why = not_ok;
    match evidence {
        Evidence::NotYet(reasons) if blind => why.extend(reasons),
        _ if blind => why.push("no rule has data to show recovery".to_string()),
        _ => {}
    }
    why
}

/// Watching: open an incident when a rule has breached for its `for`.
///
/// Rules are OR'ed: one rule Breached on fresh data triggers. A rule
/// without usable data (Unknown) abstains: it neither triggers nor vetoes,
/// because a crashed release takes its own metrics down with it, and the
/// rules that still see it (a refused probe, `up` under `no_data =
/// "breach"`) must be able to act. The incident names the abstaining rules.
fn watch(
    cfg: &DecideConfig,
    guards: &Guards,
    state: &mut TargetState,
    now: Time,
    fleet: &Fleet,
    actions: &mut Vec<Action>,
) {
    // Shadow rules never trigger (they are recorded by `shadow_rules`).
    let breached: Vec<RuleReport> = state
        .rules
        .iter()
        .filter(|r| !r.shadow && matches!(r.status, RuleStatus::Breached { .. }))
        .filter(|r| super::peers::began_after_wait(state, r))
        .cloned()
        .collect();
    // A rollback is not over while its `after` steps run.
    let triggered = !breached.is_empty() && state.after_running.is_none();
    // `[daemon] settle` holds the trigger so the blast-radius guard sees
    // the peers whose breaches begin meanwhile.
    if super::blast::settling(cfg, state, triggered, now) || !triggered {
        return;
    }
    if let Some(why) = super::peers::wait_for_peer(guards, state) {
        state.waiting = Some(why);
        return;
    }
    let abstained: Vec<RuleReport> = state
        .rules
        .iter()
        .filter(|r| !r.shadow && matches!(r.status, RuleStatus::Unknown { .. }))
        .cloned()
        .collect();
    let first_evidence = super::breach_start(&breached);
    let msg = breach_note(&breached, &abstained);
    let cause = Cause::Rules {
        breached,
        abstained,
    };
    let mut inc = new_incident(cfg, state, cause, now);
    inc.first_evidence = first_evidence;
    note(&mut inc, now, "Triggered", msg);

    if let Some(guard) = super::blast::guard(cfg, state, fleet, first_evidence.unwrap_or(now)) {
        inc.error = Some(guard.clone());
        finish(
            cfg,
            state,
            Box::new(inc),
            Outcome::Escalated,
            NotifyKind::BlastRadius,
            format!("escalated, no action: {guard}"),
            now,
            actions,
        );
        return;
    }
    if let Some(guard) = target_guard(cfg, state, now) {
        super::human::escalate(cfg, state, inc, guard, now, actions);
        return;
    }
    if let Some(why) = super::human::dry_run_reason(cfg, now) {
        inc.dry_run = true;
        let msg = format!(
            "dry-run ({why}): would roll back with {}, nothing executed",
            cfg.method
        );
        finish(
            cfg,
            state,
            Box::new(inc),
            Outcome::DryRun,
            NotifyKind::WouldRollBack,
            msg,
            now,
            actions,
        );
        return;
    }
    // A plan that cannot run is refused now, without asking a human first.
    if cfg.confirm && missing_var(cfg, &inc).is_none() {
        super::human::await_confirmation(cfg, state, inc, now, actions);
        return;
    }
    start_rollback(cfg, guards, state, inc, now, actions);
}

/// The incident's first note: the breached rules, and those that had no
/// data and abstained.
fn breach_note(breached: &[RuleReport], abstained: &[RuleReport]) -> String {
    let reasons: Vec<String> = breached.iter().map(|r| r.explain()).collect();
    let mut msg = format!("breach: {}", reasons.join("; "));
    if !abstained.is_empty() {
        let why: Vec<String> = abstained.iter().map(|r| r.explain()).collect();
        msg.push_str(&format!(
            "; acting without {} rule{} that had no data (they abstain): {}",
            abstained.len(),
            if abstained.len() == 1 { "" } else { "s" },
            why.join("; ")
        ));
    }
    msg
}

/// The target's own guards against an automatic rollback, first one that
/// holds: the loop guard, `only_within`, a pause, the per-target rate limit
/// (which forgets rollbacks older than an hour whatever holds).
fn target_guard(cfg: &DecideConfig, state: &mut TargetState, now: Time) -> Option<String> {
    let hour_ago = now - ChronoDuration::hours(1);
    state.rollbacks.retain(|t| *t > hour_ago);
    let guard = if let (Some(g), Some(v)) = (&state.loop_guard, &state.version) {
        (g == v).then(|| {
            format!(
                "loop guard: rollbackd already rolled back to {v}; a breach on it means the \
                 problem is not the release, so it does not roll back again (a new deploy re-arms it)"
            )
        })
    } else {
        None
    };
    let guard = guard.or_else(|| only_within_guard(cfg, state, now));
    guard.or_else(|| super::human::pause_guard(state)).or_else(|| {
        (state.rollbacks.len() as u32 >= cfg.max_rollbacks_per_hour).then(|| {
            format!(
                "rate limit: {} rollbacks of this target in the last hour (max_rollbacks_per_hour = {})",
                state.rollbacks.len(),
                cfg.max_rollbacks_per_hour
            )
        })
    })
}

/// The plan or its verification failed: run `on_failure` when there is
/// one; the rollback is not over until it ends.
fn on_failure(
    cfg: &DecideConfig,
    state: &mut TargetState,
    inc: &Incident,
    actions: &mut Vec<Action>,
) {
    if cfg.has_on_failure {
        state.after_running = Some(inc.id.clone());
        actions.push(Action::RunOnFailure {
            incident: Box::new(inc.clone()),
        });
    }
}

/// Blind notification: once any rule has been Unknown for `blind_after`,
/// tell the admin once, naming the rules and reasons (blind when no rule
/// has data, partly blind otherwise: the others still act); once every rule
/// has data again, tell them it sees again. A rule whose only problem is
/// its unreachable Prometheus server (`unreachable`) is left to that
/// server's own notice ([`super::server_watch`]): a down server is one
/// notification, not one per target.
fn blindness(cfg: &DecideConfig, state: &mut TargetState, now: Time, actions: &mut Vec<Action>) {
    let blind_after = ChronoDuration::from_std(cfg.blind_after).unwrap_or(ChronoDuration::MAX);
    // Shadow rules never act, so their data does not make a target blind
    // or seeing.
    let acting: Vec<&RuleReport> = state.rules.iter().filter(|r| !r.shadow).collect();
    let (server_down, unknown): (Vec<&RuleReport>, Vec<&RuleReport>) = acting
        .iter()
        .copied()
        .filter(|r| matches!(r.status, RuleStatus::Unknown { .. }))
        .partition(|r| r.server_down().is_some());
    let elsewhere = if server_down.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = server_down
            .iter()
            .map(|r| {
                format!(
                    "{} (prometheus {})",
                    r.rule,
                    r.server_down().unwrap_or_default()
                )
            })
            .collect();
        format!(
            " Also without data, notified per server: {}.",
            names.join(", ")
        )
    };
    let long_blind: Vec<String> = unknown
        .iter()
        .filter_map(|r| match (&r.status, r.blind_since()) {
            // Counted from when its server last went unanswered, if later:
            // until then the server's own notice covered it.
            (RuleStatus::Unknown { since, why }, Some(from)) if now - from >= blind_after => {
                Some(format!(
                    "{} has had no data since {} ({}): {why}",
                    r.rule,
                    since.format("%Y-%m-%d %H:%M:%SZ"),
                    fmt_duration((now - *since).to_std().unwrap_or_default())
                ))
            }
            _ => None,
        })
        .collect();
    match state.blind_notified {
        None if !long_blind.is_empty() => {
            state.blind_notified = Some(now);
            actions.push(Action::NotifyTarget {
                kind: NotifyKind::Blind,
                target: state.target.clone(),
                message: if unknown.len() + server_down.len() == acting.len() {
                    format!(
                        "monitoring of {} is blind: {}. No rule has data, so no automatic \
                         rollback can happen (blind_after = {}).{elsewhere}",
                        state.target,
                        long_blind.join("; "),
                        fmt_duration(cfg.blind_after)
                    )
                } else {
                    let seeing: Vec<&str> = acting
                        .iter()
                        .filter(|r| !matches!(r.status, RuleStatus::Unknown { .. }))
                        .map(|r| r.rule.as_str())
                        .collect();
                    format!(
                        "monitoring of {} is partly blind: {}. Rules without data abstain; \
                         rollbackd still acts on {} (blind_after = {}).{elsewhere}",
                        state.target,
                        long_blind.join("; "),
                        seeing.join(", "),
                        fmt_duration(cfg.blind_after)
                    )
                },
            });
        }
        Some(since) if unknown.is_empty() => {
            state.blind_notified = None;
            let values: Vec<String> = acting.iter().map(|r| r.explain()).collect();
            actions.push(Action::NotifyTarget {
                kind: NotifyKind::Seeing,
                target: state.target.clone(),
                message: format!(
                    "monitoring of {} sees again (blind notification sent {}): {}",
                    state.target,
                    since.format("%Y-%m-%d %H:%M:%SZ"),
                    values.join("; ")
                ),
            });
        }
        _ => {}
    }
}

/// `only_within`: a release deployed longer ago than this (or at an
/// unknown time) is not rolled back automatically; escalate instead.
fn only_within_guard(cfg: &DecideConfig, state: &TargetState, now: Time) -> Option<String> {
    let limit = cfg.only_within?;
    let version = state.version.as_deref().unwrap_or("?");
    match state.deployed_at {
        None => Some(format!(
            "only_within = {}: when {version} was deployed is unknown (rollbackd has not seen \
             the version change), so it is not rolled back automatically",
            fmt_duration(limit)
        )),
        Some(at) => {
            let age = (now - at).to_std().unwrap_or_default();
            (age > limit).then(|| {
                format!(
                    "only_within = {}: {version} was deployed {} ago (at {}), too long ago to \
                     blame the release automatically",
                    fmt_duration(limit),
                    fmt_duration(Duration::from_secs(age.as_secs())),
                    at.format("%Y-%m-%d %H:%M:%SZ")
                )
            })
        }
    }
}
