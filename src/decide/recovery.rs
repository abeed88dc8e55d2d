//! Recovery is evidence, like a breach: what may close an incident as
//! healthy while it waits for confirmation or verifies its rollback.
//!
//! The rules that caused the incident ([`Cause::Rules`]'s `breached`) must
//! each be Ok on real data. A rule without data (Unknown: too few samples
//! after a restart, a source that is down) is not a recovery, nor is an Ok
//! that the `no_data = "ok"` policy made out of no data, nor is another
//! rule's Ok: a rule that was never breached says nothing about the one
//! that was. (Verification may also pass on its gates; see `verify`.)

use super::{Cause, Incident};
use crate::rules::{RuleReport, RuleStatus};

/// A rule shows health: Ok on data it really had.
pub(super) fn shows_health(r: &RuleReport) -> bool {
    !r.shadow && r.status == RuleStatus::Ok && r.no_data.is_none()
}

/// What the rules that caused `inc` show now.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Evidence {
    /// Every rule that caused it is Ok on real data: each one explained.
    Recovered(Vec<String>),
    /// Not (yet): why, per rule that caused it.
    NotYet(Vec<String>),
    /// The incident names no rule (a manual trigger).
    NoCause,
}

/// Whether the rules that caused `inc` show recovery in `rules` (the
/// latest evaluation).
pub(super) fn evidence(inc: &Incident, rules: &[RuleReport]) -> Evidence {
    let Cause::Rules { breached, .. } = &inc.cause else {
        return Evidence::NoCause;
    };
    let mut names: Vec<&str> = breached.iter().map(|r| r.rule.as_str()).collect();
    names.dedup();
    if names.is_empty() {
        return Evidence::NoCause;
    }
    let (mut ok, mut not_yet) = (Vec::new(), Vec::new());
    for name in names {
        match rules.iter().find(|r| r.rule == name && !r.shadow) {
            Some(r) if shows_health(r) => ok.push(r.explain()),
            Some(r) => not_yet.push(match (&r.status, &r.no_data) {
                (RuleStatus::Ok, Some(why)) => format!(
                    "{name} is ok only by its no_data policy ({why}), which is not evidence of \
                     recovery"
                ),
                (RuleStatus::Unknown { why, .. }, _) => {
                    format!("{name} has no data yet ({why}), which is not evidence of recovery")
                }
                _ => r.explain(),
            }),
            None => not_yet.push(format!(
                "{name} (which caused the incident) is no longer evaluated"
            )),
        }
    }
    if not_yet.is_empty() {
        Evidence::Recovered(ok)
    } else {
        Evidence::NotYet(not_yet)
    }
}
