//! Guards that look past the target itself, as inputs the runner gathers
//! ([`super::Guards`]):
//!
//! - **One plan per service.** Another target whose executor has the same
//!   identity (the same `current` symlink, deployment, container, repo,
//!   service, command steps or webhook: `crate::execute::identity`) and
//!   that has an open incident owns that service until the incident ends.
//!   This target opens no incident of its own meanwhile (it waits, and
//!   says so), and a plan it was about to start escalates instead. A
//!   reload that renames a target during its rollback is the common case:
//!   the old name keeps its incident, the new one waits for it.
//! - **State lost.** When the daemon could not read its state at start,
//!   no step is taken at all: acting from an empty memory would repeat
//!   rollbacks, forget pauses and reopen incidents.

use super::{Phase, StepError, TargetState};

/// Another target with the same executor identity and an open incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusyPeer {
    /// Its name.
    pub target: String,
    /// Its open incident.
    pub incident: String,
    /// The shared executor as a person reads it (`symlink /srv/app/current`).
    pub executor: String,
}

/// The incident that keeps a target's executor busy: one awaiting
/// confirmation, rolling back or verifying, or whose `after`/`on_failure`
/// steps still run. `None` when the target is watching or cooling down.
pub fn open_incident(state: &TargetState) -> Option<&str> {
    match &state.phase {
        Phase::AwaitingConfirmation { incident, .. }
        | Phase::RollingBack { incident }
        | Phase::Verifying { incident, .. } => Some(incident.id.as_str()),
        Phase::Done { .. } => state.after_running.as_deref(),
        Phase::Watching => None,
    }
}

/// State-lost mode refuses every event, with why.
pub(super) fn refuse_when_lost(guards: &super::Guards) -> Result<(), StepError> {
    match &guards.state_lost {
        Some(why) => Err(StepError::StateLost { why: why.clone() }),
        None => Ok(()),
    }
}

/// The first other target with this target's executor and an open
/// incident, in words: `web has an open incident (ID) on the same executor
/// (symlink /srv/app/current)`.
pub(super) fn busy_guard(guards: &super::Guards, state: &TargetState) -> Option<String> {
    let peer = guards
        .busy_executor
        .iter()
        .find(|p| p.target != state.target)?;
    Some(format!(
        "{} has an open incident ({}) on the same executor ({})",
        peer.target, peer.incident, peer.executor
    ))
}

/// Before each evaluation: a wait ends once no peer with this target's
/// executor has an open incident, and its end is remembered, so that the
/// breach the peer handled is not acted on a second time here.
pub(super) fn end_wait(guards: &super::Guards, state: &mut TargetState, now: super::Time) {
    if state.waiting.is_some() && busy_guard(guards, state).is_none() {
        state.waiting = None;
        state.waited_until = Some(now);
    }
}

/// Whether a breached rule's run began after this target last waited for
/// a peer (always, when it never waited).
pub(super) fn began_after_wait(state: &TargetState, rule: &crate::rules::RuleReport) -> bool {
    match (state.waited_until, &rule.status) {
        (Some(until), crate::rules::RuleStatus::Breached { since }) => *since > until,
        _ => true,
    }
}

/// Why this target waits instead of opening an incident.
pub(super) fn wait_for_peer(guards: &super::Guards, state: &TargetState) -> Option<String> {
    busy_guard(guards, state).map(|busy| {
        format!(
            "waiting: {busy}; {} acts only once it has ended",
            state.target
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{breached, cfg, t};
    use super::super::{step, Event, Guards, Phase, TargetState};
    use super::*;

    fn busy() -> Guards {
        Guards {
            busy_executor: vec![BusyPeer {
                target: "web".into(),
                incident: "20261118-120000-web-1".into(),
                executor: "symlink /srv/app/current".into(),
            }],
            ..Guards::default()
        }
    }

    fn web2() -> TargetState {
        let mut s = TargetState::new("web2");
        s.version = Some("v2".into());
        s.previous_version = Some("v1".into());
        s
    }

    #[test]
    fn open_incidents_are_the_unfinished_phases_and_running_after_steps() {
        let mut s = web2();
        assert_eq!(open_incident(&s), None);
        let (rolling, _) = step(
            &cfg(),
            &Guards::default(),
            s.clone(),
            breached(t(60)),
            t(60),
        )
        .expect("step");
        let id = rolling.incident().unwrap().id.clone();
        assert_eq!(rolling.phase.name(), "RollingBack");
        assert_eq!(open_incident(&rolling), Some(id.as_str()));
        s.phase = Phase::Done {
            incident: Box::new(rolling.incident().unwrap().clone()),
            until: t(100),
        };
        assert_eq!(open_incident(&s), None);
        s.after_running = Some(id.clone());
        assert_eq!(open_incident(&s), Some(id.as_str()));
    }

    #[test]
    fn a_breach_waits_while_a_peer_has_an_open_incident_on_the_same_executor() {
        let (s, actions) = step(&cfg(), &busy(), web2(), breached(t(60)), t(60)).expect("step");
        assert_eq!(s.phase.name(), "Watching");
        assert!(actions.is_empty(), "{actions:?}");
        assert_eq!(s.incident_seq, 0, "no incident opened");
        // Still waiting at the next poll: nothing changes (no journal line).
        let (again, _) = step(&cfg(), &busy(), s.clone(), breached(t(61)), t(61)).expect("step");
        assert!(!s.journal_worthy_change(&again));
        assert_eq!(
            s.waiting.as_deref(),
            Some(
                "waiting: web has an open incident (20261118-120000-web-1) on the same \
                 executor (symlink /srv/app/current); web2 acts only once it has ended"
            )
        );
        assert!(TargetState::new("web2").journal_worthy_change(&s));
        // Once the peer's incident ended, the breach it handled (begun
        // before) is not acted on again here ...
        let (s, actions) =
            step(&cfg(), &Guards::default(), s, breached(t(61)), t(61)).expect("step");
        assert_eq!(s.phase.name(), "Watching");
        assert!(actions.is_empty(), "{actions:?}");
        assert_eq!((s.waiting.clone(), s.waited_until), (None, Some(t(61))));
        // ... a breach that begins after it is.
        let fresh = Event::Evaluated {
            rules: match breached(t(90)) {
                Event::Evaluated { mut rules, .. } => {
                    rules[0].status = crate::rules::RuleStatus::Breached { since: t(62) };
                    rules
                }
                _ => unreachable!(),
            },
            fleet: Default::default(),
        };
        let (s, _) = step(&cfg(), &Guards::default(), s, fresh, t(90)).expect("step");
        assert_eq!(s.phase.name(), "RollingBack");
        // A target never waits for itself.
        let mut own = busy();
        own.busy_executor[0].target = "web2".into();
        let (s, _) = step(&cfg(), &own, web2(), breached(t(60)), t(60)).expect("step");
        assert_eq!(s.phase.name(), "RollingBack");
    }

    #[test]
    fn a_manual_trigger_is_refused_while_a_peer_rolls_back_the_same_executor() {
        let event = Event::ManualTrigger {
            by: "ops".into(),
            reason: "bad release".into(),
            to_version: None,
        };
        let err = step(&cfg(), &busy(), web2(), event, t(0)).unwrap_err();
        assert!(matches!(err, StepError::ExecutorBusy { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "target web2 is not rolled back now: web has an open incident \
             (20261118-120000-web-1) on the same executor (symlink /srv/app/current); nothing done"
        );
    }

    #[test]
    fn state_lost_refuses_every_event() {
        let guards = Guards {
            state_lost: Some("snapshot.json is unreadable".into()),
            ..Guards::default()
        };
        for event in [
            breached(t(60)),
            Event::Recovered,
            Event::ManualTrigger {
                by: "ops".into(),
                reason: "r".into(),
                to_version: None,
            },
        ] {
            let err = step(&cfg(), &guards, web2(), event, t(60)).unwrap_err();
            assert!(matches!(err, StepError::StateLost { .. }), "{err}");
            assert!(err.to_string().contains("acts on no target"), "{err}");
        }
    }
}
