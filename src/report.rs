//! What effects report back to the decision core: a step's and a plan's
//! outcome ([`StepReport`], [`ExecResult`]) and a verification gate's
//! ([`CheckReport`]). Plain data, below both `decide` (which keeps them in
//! incidents) and `execute` (which produces them), so that the pure core
//! imports no effect module.

use std::time::Duration;

use serde::{Deserialize, Serialize};

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
    /// Processes the step left behind (escaped its group, reparented to
    /// the daemon): `killed pid ...` / `survived pid ...` after a failed
    /// or killed step, `left running pid ...` after a successful one (a
    /// restart step may start a service on purpose).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leftovers: Vec<String>,
}

impl StepReport {
    /// A step about to run (or that never will): not ok, no exit code,
    /// nothing captured yet.
    pub fn new(argv: Vec<String>) -> StepReport {
        StepReport {
            argv,
            exit_code: None,
            ok: false,
            duration: Duration::ZERO,
            stdout: String::new(),
            stderr: String::new(),
            error: None,
            leftovers: Vec::new(),
        }
    }
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

/// One gate's result, as the record shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    /// `GET URL` or the command's argv.
    pub check: String,
    /// Whether it passed.
    pub ok: bool,
    /// Status and latency, or why it failed.
    pub detail: String,
    /// Measured time to the full answer (HTTP) or the exit (command).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::util::serde_duration_opt"
    )]
    pub latency: Option<Duration>,
    /// A command's output tail (stdout, then stderr), for the record.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
}
