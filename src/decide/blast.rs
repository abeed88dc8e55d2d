//! The blast-radius guard (`[daemon] max_simultaneous_breaches`) and the
//! hold before acting that lets it see its peers (`[daemon] settle`).
//!
//! Breaches that began on many targets within one window point at a shared
//! cause (the network, the observer, a common dependency), not at each
//! release. The guard counts breach *starts*: a peer whose breach began
//! within `within` counts whether it is still breaching or has already
//! acted (rolled back, escalated) and recovered. The runner keeps those
//! starts ([`Fleet`]); the decision is here.
//!
//! A target whose `for` is shorter than `within` can act before its peers
//! have begun to breach. `settle` holds the trigger that much longer. When
//! the guard trips only after a target acted, that target's incident is
//! escalated after the fact, saying so: a rollback cannot be undone.

use chrono::Duration as ChronoDuration;

use super::incident::{note, DecideConfig};
use super::{Action, Cause, Fleet, NotifyKind, Phase, TargetState, Time};
use crate::util::fmt_duration;

/// The group the guard sees: this target and every other whose breach
/// began within `within` of `start`, when it is big enough to trip.
struct Group {
    /// Targets in the group, this one included.
    n: usize,
    /// Targets watched.
    total: usize,
    /// The others, sorted, at most ten named.
    named: String,
}

fn tripped(cfg: &DecideConfig, state: &TargetState, fleet: &Fleet, start: Time) -> Option<Group> {
    let b = cfg.blast_radius?;
    let within = ChronoDuration::from_std(b.within).unwrap_or(ChronoDuration::MAX);
    let mut group: Vec<&str> = fleet
        .breaching
        .iter()
        .filter(|o| o.target != state.target && (o.since - start).abs() <= within)
        .map(|o| o.target.as_str())
        .collect();
    group.sort_unstable();
    group.dedup();
    let n = group.len() + 1;
    let total = fleet.targets.max(n);
    let share = n as f64 / total as f64;
    if (n as u32) < b.targets || share < b.fraction {
        return None;
    }
    let named = if group.len() > 10 {
        format!("{} and {} more", group[..10].join(", "), group.len() - 10)
    } else {
        group.join(", ")
    };
    Some(Group { n, total, named })
}

/// The guard's settings as the messages quote them.
fn settings(cfg: &DecideConfig) -> String {
    let Some(b) = cfg.blast_radius else {
        return String::new();
    };
    format!(
        "max_simultaneous_breaches: {} targets and {}% of all within {}",
        b.targets,
        (b.fraction * 100.0).round(),
        fmt_duration(b.within),
    )
}

/// The guard at the trigger: `Some(explanation)` when breaches began on
/// enough targets within `within` of this one's `start` (none is rolled
/// back).
pub(super) fn guard(
    cfg: &DecideConfig,
    state: &TargetState,
    fleet: &Fleet,
    start: Time,
) -> Option<String> {
    let g = tripped(cfg, state, fleet, start)?;
    let within = cfg.blast_radius.map(|b| b.within).unwrap_or_default();
    Some(format!(
        "blast radius: breaches began on {} of {} targets within {} ({} and {}); \
         a shared cause (network, observer, a common dependency) is likelier than this \
         release, so none is rolled back ({})",
        g.n,
        g.total,
        fmt_duration(within),
        state.target,
        g.named,
        settings(cfg),
    ))
}

/// `[daemon] settle`: a breach that held its `for` triggers only once it
/// has held `settle` longer, so that the guard sees the peers whose
/// breaches begin meanwhile. `true`: hold (nothing happens this step).
/// `breaching`: a rule is Breached now. The hold's start is kept in the
/// state, so a restart does not shorten it.
pub(super) fn settling(
    cfg: &DecideConfig,
    state: &mut TargetState,
    breaching: bool,
    now: Time,
) -> bool {
    if !breaching || cfg.settle.is_zero() {
        state.settling = None;
        return false;
    }
    let since = *state.settling.get_or_insert(now);
    let settle = ChronoDuration::from_std(cfg.settle).unwrap_or(ChronoDuration::MAX);
    if now - since < settle {
        return true;
    }
    state.settling = None;
    false
}

/// After acting: the guard trips for a group that includes this target's
/// breach, but its rollback had already started (its peers began to
/// breach after it acted, or before it could see them). The rollback cannot
/// be undone: the incident is escalated once, saying so, and a human is
/// told to check whether the release was at fault.
pub(super) fn after_acting(
    cfg: &DecideConfig,
    state: &mut TargetState,
    fleet: &Fleet,
    now: Time,
    actions: &mut Vec<Action>,
) {
    if cfg.blast_radius.is_none() || fleet.is_quiet() {
        return;
    }
    let Some(inc) = state.incident() else { return };
    let (Some(started), None, false, Cause::Rules { .. }) = (
        inc.rollback_started,
        &inc.blast_radius_after_acting,
        inc.dry_run,
        &inc.cause,
    ) else {
        return;
    };
    let Some(g) = tripped(cfg, state, fleet, inc.started()) else {
        return;
    };
    let within = cfg.blast_radius.map(|b| b.within).unwrap_or_default();
    let version = inc.from_version.as_deref().unwrap_or("the release");
    let message = format!(
        "blast radius after acting: breaches began on {} of {} targets within {} ({} and {}); \
         a shared cause (network, observer, a common dependency) is likelier than this \
         release, but this target was already rolled back (started {}) before the guard could \
         see its peers. A rollback cannot be undone: check whether {version} was at fault and \
         redeploy it if it was not ({}; [daemon] settle = {} holds a trigger so that the guard \
         sees its peers first)",
        g.n,
        g.total,
        fmt_duration(within),
        state.target,
        g.named,
        started.format("%Y-%m-%d %H:%M:%SZ"),
        settings(cfg),
        fmt_duration(cfg.settle),
    );
    let phase = state.phase.name();
    let inc = match &mut state.phase {
        Phase::RollingBack { incident }
        | Phase::Verifying { incident, .. }
        | Phase::Done { incident, .. } => incident,
        Phase::AwaitingConfirmation { .. } | Phase::Watching => return,
    };
    inc.blast_radius_after_acting = Some(message.clone());
    note(inc, now, phase, format!("escalated: {message}"));
    actions.push(Action::WriteRecord {
        incident: inc.clone(),
    });
    actions.push(Action::Notify {
        kind: NotifyKind::BlastRadius,
        incident: inc.clone(),
    });
}
