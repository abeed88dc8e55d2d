//! Carrying out a rollback plan: one file per executor kind, a shared
//! process runner ([`process`]) that runs argv directly (never a shell), and
//! the verification check ([`verify`]).
//!
//! Every plan runs under one deadline (`rollback.timeout`); a step still
//! running then is killed together with its process group.

pub mod command;
pub mod process;
pub mod symlink;
pub mod verify;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{ExecutorKind, RollbackPlan};

/// Template variables substituted per argument: `{target}`, `{from_version}`,
/// `{to_version}`, `{incident}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vars {
    /// Target name.
    pub target: String,
    /// Live version, if known.
    pub from_version: Option<String>,
    /// Version to go back to, if known.
    pub to_version: Option<String>,
    /// Incident ID.
    pub incident: String,
}

/// One step as it ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// argv after substitution (or a description for built-in steps such as
    /// the symlink switch).
    pub argv: Vec<String>,
    /// Exit code; `None` when killed by a signal, timed out or never started.
    pub exit_code: Option<i32>,
    /// Whether the step succeeded.
    pub ok: bool,
    /// How long it ran.
    #[serde(with = "crate::util::serde_duration")]
    pub duration: Duration,
    /// Tail of stdout (bounded).
    pub stdout: String,
    /// Tail of stderr (bounded).
    pub stderr: String,
    /// Why it failed, if it did: spawn error, exit status, timeout.
    pub error: Option<String>,
}

/// The result of a whole plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecResult {
    /// Whether every step succeeded.
    pub ok: bool,
    /// Every step that ran, in order.
    pub steps: Vec<StepReport>,
    /// The version left, as the executor found it (may refine the incident's).
    pub from_version: Option<String>,
    /// The version gone to, as the executor chose it.
    pub to_version: Option<String>,
    /// Why the plan failed: the failing step with its stderr, or the timeout.
    pub error: Option<String>,
}

/// Why a plan could not run or failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExecError {
    /// A template variable has no value (e.g. `{to_version}` with unknown history).
    #[error("template variable {{{0}}} has no value")]
    MissingVar(String),
    /// The executor refused before changing anything.
    #[error("{0}")]
    Refused(String),
}

/// Run a target's rollback plan for an incident. Never panics; every failure
/// is in the returned [`ExecResult`].
pub async fn run_plan(plan: &RollbackPlan, vars: &Vars) -> ExecResult {
    let deadline = tokio::time::Instant::now() + plan.timeout;
    match &plan.kind {
        ExecutorKind::Command { steps } => command::run(steps, vars, deadline).await,
        ExecutorKind::Symlink {
            current,
            releases,
            restart,
        } => symlink::run(current, releases, restart.as_deref(), vars, deadline).await,
    }
}

/// Run the plan's `after` steps (once verification passed) under the plan timeout.
pub async fn run_after(plan: &RollbackPlan, vars: &Vars) -> ExecResult {
    let deadline = tokio::time::Instant::now() + plan.timeout;
    command::run(&plan.after, vars, deadline).await
}
