//! `kind = "command"`: ordered argv steps; the first failure stops the plan.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tokio::time::Instant;

use super::process::{display_argv, run_step_with, substitute};
use super::runner::Budget;
use super::{ExecResult, Vars};
use crate::config::{RollbackPlan, Step};

/// Where steps run unless they say otherwise: the plan's `cwd` and `env`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    /// Working directory (`None`: the daemon's).
    pub cwd: Option<PathBuf>,
    /// Added to the inherited environment.
    pub env: BTreeMap<String, String>,
}

impl Context {
    /// The plan's context.
    pub fn of(plan: &RollbackPlan) -> Context {
        Context {
            cwd: plan.cwd.clone(),
            env: plan.env.clone(),
        }
    }

    /// A step's working directory and environment: its own over the plan's.
    pub fn for_step(&self, step: &Step) -> (Option<PathBuf>, BTreeMap<String, String>) {
        let cwd = step.cwd.clone().or_else(|| self.cwd.clone());
        let mut env = self.env.clone();
        env.extend(step.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        (cwd, env)
    }
}

/// Run the steps in order under one deadline.
pub async fn run(steps: &[Vec<String>], vars: &Vars, deadline: Instant) -> ExecResult {
    let budget = Budget {
        deadline,
        step_timeout: None,
    };
    let steps: Vec<Step> = steps.iter().cloned().map(Step::from).collect();
    run_with(&steps, &Context::default(), vars, budget, "step").await
}

/// Substitute every step before running any: the first that cannot be
/// completed, as a failure message (`LABEL i of n (argv) cannot run: ...;
/// nothing was run`).
pub fn substitute_all(steps: &[Step], vars: &Vars, label: &str) -> Result<Vec<Vec<String>>, String> {
    let total = steps.len();
    steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            substitute(&step.argv, vars).map_err(|e| {
                format!(
                    "{label} {} of {total} ({}) cannot run: {e}; nothing was run",
                    i + 1,
                    display_argv(&step.argv)
                )
            })
        })
        .collect()
}

/// Run the steps in order under `budget`, each in its context; `label`
/// names them in errors (`step`, `pre step`, `after step`).
pub async fn run_with(
    steps: &[Step],
    context: &Context,
    vars: &Vars,
    budget: Budget,
    label: &str,
) -> ExecResult {
    let mut result = ExecResult {
        ok: false,
        steps: Vec::new(),
        from_version: vars.from_version.clone(),
        to_version: vars.to_version.clone(),
        error: None,
    };
    let total = steps.len();

    // Substitute every step before running any: a plan that cannot be
    // completed must not be started.
    let argvs = match substitute_all(steps, vars, label) {
        Ok(argvs) => argvs,
        Err(e) => {
            result.error = Some(e);
            return result;
        }
    };

    for (i, (argv, step)) in argvs.iter().zip(steps).enumerate() {
        let (mut deadline, mut limit) = budget.for_step();
        if let Some(t) = step.timeout {
            let own = Instant::now() + t;
            if own < deadline {
                (deadline, limit) = (own, "step timeout");
            }
        }
        let (cwd, env) = context.for_step(step);
        let report = run_step_with(argv, deadline, limit, cwd.as_deref(), &env).await;
        let failure = (!report.ok).then(|| {
            format!(
                "{label} {} of {total} ({}) failed: {}",
                i + 1,
                display_argv(argv),
                report.error.as_deref().unwrap_or("unknown error")
            )
        });
        result.steps.push(report);
        if let Some(failure) = failure {
            tracing::warn!("{failure}");
            result.error = Some(failure);
            return result;
        }
    }
    result.ok = true;
    result
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn steps(list: &[&[&str]]) -> Vec<Vec<String>> {
        list.iter()
            .map(|s| s.iter().map(|a| a.to_string()).collect())
            .collect()
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(30)
    }

    #[tokio::test]
    async fn empty_plan_is_ok() {
        let vars = Vars {
            from_version: Some("v2".into()),
            to_version: Some("v1".into()),
            ..Vars::default()
        };
        let r = run(&[], &vars, soon()).await;
        assert!(r.ok);
        assert!(r.steps.is_empty());
        assert_eq!(r.error, None);
        assert_eq!(r.from_version.as_deref(), Some("v2"));
        assert_eq!(r.to_version.as_deref(), Some("v1"));
    }

    #[tokio::test]
    async fn missing_var_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let marker = marker.to_str().unwrap();
        let plan = steps(&[&["touch", marker], &["git", "checkout", "{to_version}"]]);
        let r = run(&plan, &Vars::default(), soon()).await;
        assert!(!r.ok);
        assert!(r.steps.is_empty());
        assert_eq!(
            r.error.as_deref(),
            Some(
                "step 2 of 2 (git checkout {to_version}) cannot run: \
                 template variable {to_version} has no value; nothing was run"
            )
        );
        assert!(!std::path::Path::new(marker).exists());
    }
}
