//! `confirm_command`: a team's own approval flow. The argv (templates
//! `{target}`, `{from_version}`, `{to_version}`, `{incident}`) is run once
//! when an incident starts waiting; exit 0 approves, exit 1 rejects (its
//! stderr is the reason), anything else, or no exit before the confirmation
//! deadline, is no answer and the wait goes on (humans can still answer).

use std::time::Duration;

use crate::decide::Event;
use crate::run::process;
use crate::run::template::{self, Vars};

/// Who the approval is attributed to.
pub const BY: &str = "confirm_command";

/// Run the command and turn its exit status into an answer.
pub async fn ask(argv: &[String], vars: &Vars, within: Duration) -> Option<Event> {
    let argv = match template::substitute(argv, vars) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "confirm_command cannot be built");
            return None;
        }
    };
    let deadline = tokio::time::Instant::now() + within;
    let report = process::with_vars(vars, process::run_step(&argv, deadline)).await;
    answer(&report, vars)
}

/// The event for a finished command, if it answered.
pub fn answer(report: &crate::report::StepReport, vars: &Vars) -> Option<Event> {
    match report.exit_code {
        Some(0) => Some(Event::Approve {
            incident: vars.incident.clone(),
            by: BY.to_string(),
        }),
        Some(1) => {
            let said = report.stderr.trim();
            let reason = if said.is_empty() {
                "confirm_command exited 1".to_string()
            } else {
                format!(
                    "confirm_command exited 1: {}",
                    said.chars().take(300).collect::<String>()
                )
            };
            Some(Event::Reject {
                incident: vars.incident.clone(),
                by: BY.to_string(),
                reason,
            })
        }
        _ => {
            tracing::warn!(
                incident = %vars.incident,
                error = %report.error.clone().unwrap_or_default(),
                "confirm_command gave no answer; waiting for a human"
            );
            None
        }
    }
}
