//! The transition function.

use std::time::Duration;

use super::{Action, Event, TargetState, Time};

/// The per-target settings the machine decides with (derived from config).
#[derive(Debug, Clone, PartialEq)]
pub struct DecideConfig {
    /// Global dry-run: record and notify, never execute.
    pub dry_run: bool,
    /// Quiet time after an incident.
    pub cooldown: Duration,
    /// Verification window.
    pub verify_within: Duration,
    /// Every rule must be Ok for verification to pass.
    pub verify_rules: bool,
    /// A verify URL is configured and must answer.
    pub verify_url: bool,
    /// Executor kind name, for the record.
    pub method: String,
    /// Rate limit of executed rollbacks.
    pub max_rollbacks_per_hour: u32,
}

/// An event that makes no sense in the current phase.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("event {event} is not expected in phase {phase}")]
pub struct StepError {
    /// The event's name.
    pub event: String,
    /// The phase's name.
    pub phase: String,
}

/// Advance the target's state by one event at time `now`.
pub fn step(
    cfg: &DecideConfig,
    state: TargetState,
    event: Event,
    now: Time,
) -> Result<(TargetState, Vec<Action>), StepError> {
    todo!("{cfg:?} {state:?} {event:?} {now}")
}
