//! Shadow rules (`mode = "shadow"`): evaluated, shown and journaled like
//! every rule, but they never trigger. When one would have triggered, a
//! "would roll back (shadow rule X)" incident is recorded and notified,
//! once per breach episode, without touching the target's phase. This is
//! how a team adopts automation gradually (argo-rollouts#2866).

use super::incident::{new_incident, note, DecideConfig};
use super::{Action, Cause, NotifyKind, Outcome, TargetState, Time};
use crate::rules::RuleStatus;

/// Record each shadow rule whose breach episode begins, and forget the
/// episodes that ended (the rule is Ok again, or no longer a shadow rule).
pub(super) fn shadow_rules(
    cfg: &DecideConfig,
    state: &mut TargetState,
    now: Time,
    actions: &mut Vec<Action>,
) {
    let rules = state.rules.clone();
    state.shadow_breached.retain(|name| {
        rules
            .iter()
            .any(|r| r.shadow && r.rule == *name && r.status != RuleStatus::Ok)
    });
    for r in rules.iter().filter(|r| r.shadow) {
        let RuleStatus::Breached { since } = r.status else {
            continue;
        };
        if state.shadow_breached.contains(&r.rule) {
            continue;
        }
        state.shadow_breached.push(r.rule.clone());
        let cause = Cause::Rules {
            breached: vec![r.clone()],
            abstained: Vec::new(),
        };
        let mut inc = new_incident(cfg, state, cause, now);
        inc.first_evidence = Some(since);
        inc.dry_run = true;
        inc.outcome = Some(Outcome::Shadow);
        inc.rto = None;
        note(
            &mut inc,
            now,
            "Triggered",
            format!("breach: {}", r.explain()),
        );
        note(
            &mut inc,
            now,
            "Shadow",
            format!(
                "would roll back (shadow rule {}) with {}; shadow rules never act, nothing \
                 executed (set mode = \"act\" to let this rule roll back)",
                r.rule, cfg.method
            ),
        );
        let inc = Box::new(inc);
        actions.push(Action::WriteRecord {
            incident: inc.clone(),
        });
        actions.push(Action::Notify {
            kind: NotifyKind::Shadow,
            incident: inc,
        });
    }
}
