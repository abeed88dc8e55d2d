//! What the executors share: the time budget of a plan (its deadline and the
//! per-step timeout), the recorder of the steps that ran, and the changes an
//! executor decided on ([`Act`]) after its read-only checks, carried out in
//! order by [`Runner::apply`].
//!
//! Every executor works in two halves: `prepare` runs read-only checks
//! (what is live, what exists, whether the standby is ready) and returns the
//! changes it would make; `apply` makes them. A rollback runs both; a drill
//! in dry-run runs only the first and prints the second.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use super::http;
use super::process::run_step_in;
use super::template::{substitute, TemplateError, Vars};
use crate::report::{ExecResult, StepReport};
use crate::util::display_argv;

/// The time a plan may take: every step ends by the plan deadline, and by
/// its own step timeout when one is set.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// The whole plan ends here (`rollback.timeout` after it started).
    pub deadline: Instant,
    /// Each step on its own (`rollback.step_timeout`).
    pub step_timeout: Option<Duration>,
}

impl Budget {
    /// The budget of a plan starting now: `timeout` for the whole plan,
    /// `step_timeout` for each step on its own.
    pub fn start(timeout: Duration, step_timeout: Option<Duration>) -> Budget {
        Budget {
            deadline: Instant::now() + timeout,
            step_timeout,
        }
    }

    /// Deadline of a step starting now, and the name of the limit it is.
    pub fn for_step(&self) -> (Instant, &'static str) {
        match self.step_timeout {
            Some(t) if Instant::now() + t < self.deadline => (Instant::now() + t, "step timeout"),
            _ => (self.deadline, "plan deadline"),
        }
    }

    /// Time left for a step starting now.
    pub fn remaining_for_step(&self) -> Duration {
        self.for_step().0.saturating_duration_since(Instant::now())
    }
}

/// One change an executor will make.
#[derive(Debug, Clone, PartialEq)]
pub enum Act {
    /// Run an argv, in `cwd` when given.
    Run {
        /// Already substituted.
        argv: Vec<String>,
        /// Working directory (`None`: the daemon's).
        cwd: Option<PathBuf>,
    },
    /// Run an argv that waits (e.g. `kubectl rollout status`), appending
    /// `--timeout=Ns` with the step's remaining budget, so that the program
    /// gives up with its own message before it has to be killed.
    RunWithTimeout {
        /// Already substituted, without the timeout flag.
        argv: Vec<String>,
    },
    /// An HTTP request (the webhook executor).
    Post(http::Request),
}

impl Act {
    /// A run step without a working directory.
    pub fn run(argv: Vec<String>) -> Act {
        Act::Run { argv, cwd: None }
    }

    /// The act as one line for people (drill output).
    pub fn describe(&self) -> String {
        match self {
            Act::Run { argv, cwd: None } => display_argv(argv),
            Act::Run {
                argv,
                cwd: Some(dir),
            } => format!("{}   (in {})", display_argv(argv), dir.display()),
            Act::RunWithTimeout { argv } => format!("{} --timeout=<time left>", display_argv(argv)),
            Act::Post(request) => request.describe(),
        }
    }

    /// The program the act runs, if it runs one.
    pub fn program(&self) -> Option<&str> {
        match self {
            Act::Run { argv, .. } | Act::RunWithTimeout { argv } => {
                argv.first().map(String::as_str)
            }
            Act::Post(_) => None,
        }
    }
}

/// `--timeout=Ns` for a step with `left` to run: a second short of it (at
/// least one second), so the program ends before it is killed.
pub fn timeout_flag(left: Duration) -> String {
    let secs = left.as_secs().saturating_sub(1).max(1);
    format!("--timeout={secs}s")
}

/// Why a plan stops at a step: the step failed, or its template could not
/// be completed (then nothing of it ran).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StepError {
    /// The step ran and failed.
    #[error("step {number} ({argv}) failed: {why}")]
    Failed {
        /// Its place among the plan's recorded steps (1-based).
        number: usize,
        /// Its argv as shown to people.
        argv: String,
        /// Exit status, signal or timeout, with the last stderr line.
        why: String,
    },
    /// A template variable of the step has no value.
    #[error("{what} ({argv}) cannot run: {error}; nothing was changed")]
    Template {
        /// Which step (`step`, `restart`, `build step`).
        what: String,
        /// The template as shown to people.
        argv: String,
        /// The missing variable.
        error: TemplateError,
    },
}

/// Records the steps of one plan and turns the first failure into the
/// plan's error.
pub struct Runner {
    /// The plan's time budget.
    pub budget: Budget,
    /// Steps so far, and the versions found.
    pub result: ExecResult,
}

impl Runner {
    /// A runner for a plan with `vars`' versions until the executor finds
    /// better ones.
    pub fn new(budget: Budget, vars: &Vars) -> Runner {
        Runner {
            budget,
            result: ExecResult {
                ok: false,
                steps: Vec::new(),
                from_version: vars.from_version.clone(),
                to_version: vars.to_version.clone(),
                error: None,
            },
        }
    }

    /// Run a step and record it, whatever its outcome.
    pub async fn probe(&mut self, argv: Vec<String>, cwd: Option<&Path>) -> StepReport {
        let (deadline, limit) = self.budget.for_step();
        let report = run_step_in(&argv, deadline, limit, cwd).await;
        self.result.steps.push(report.clone());
        report
    }

    /// Run a step that must succeed: its stdout, or the failure message
    /// (`step N (argv) failed: why`) that ends the plan.
    pub async fn run(
        &mut self,
        argv: Vec<String>,
        cwd: Option<&Path>,
    ) -> Result<String, StepError> {
        let report = self.probe(argv, cwd).await;
        self.check(&report)?;
        Ok(report.stdout)
    }

    /// Record a step that did not run a program (an HTTP call).
    pub fn push(&mut self, report: StepReport) -> Result<(), StepError> {
        self.result.steps.push(report.clone());
        self.check(&report)
    }

    /// The failure message of a recorded step, if it failed.
    fn check(&self, report: &StepReport) -> Result<(), StepError> {
        if report.ok {
            return Ok(());
        }
        Err(StepError::Failed {
            number: self.result.steps.len(),
            argv: display_argv(&report.argv),
            why: report
                .error
                .clone()
                .unwrap_or_else(|| "unknown error".to_string()),
        })
    }

    /// Carry out the acts in order; the first failure stops.
    pub async fn apply(&mut self, acts: Vec<Act>) -> Result<(), StepError> {
        for act in acts {
            match act {
                Act::Run { argv, cwd } => {
                    self.run(argv, cwd.as_deref()).await?;
                }
                Act::RunWithTimeout { mut argv } => {
                    argv.push(timeout_flag(self.budget.remaining_for_step()));
                    self.run(argv, None).await?;
                }
                Act::Post(request) => {
                    let (deadline, limit) = self.budget.for_step();
                    let report = http::post(&request, deadline, limit).await;
                    self.push(report)?;
                }
            }
        }
        Ok(())
    }

    /// The plan failed with `error`.
    pub fn fail(mut self, error: impl std::fmt::Display) -> ExecResult {
        tracing::warn!("rollback plan failed: {error}");
        self.result.ok = false;
        self.result.error = Some(error.to_string());
        self.result
    }

    /// The plan succeeded.
    pub fn done(mut self) -> ExecResult {
        self.result.ok = true;
        self.result
    }

    /// Apply `acts` (or the failure that prevented them) and finish.
    pub async fn finish<E: std::fmt::Display>(mut self, acts: Result<Vec<Act>, E>) -> ExecResult {
        match acts {
            Err(e) => self.fail(e),
            Ok(acts) => match self.apply(acts).await {
                Ok(()) => self.done(),
                Err(e) => self.fail(e),
            },
        }
    }
}

/// `first line` of a step's stdout, trimmed; empty when it printed nothing.
pub fn first_line(stdout: &str) -> String {
    stdout.lines().next().unwrap_or_default().trim().to_string()
}

/// Substitute an argv template; `what` names the step in the error.
pub fn subst(argv: &[String], vars: &Vars, what: &str) -> Result<Vec<String>, StepError> {
    substitute(argv, vars).map_err(|error| StepError::Template {
        what: what.to_string(),
        argv: display_argv(argv),
        error,
    })
}
