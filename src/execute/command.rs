//! `kind = "command"`: ordered argv steps; the first failure stops the plan.

use tokio::time::Instant;

use super::process::{display_argv, run_step_in, substitute};
use super::runner::Budget;
use super::{ExecResult, Vars};

/// Run the steps in order under one deadline.
pub async fn run(steps: &[Vec<String>], vars: &Vars, deadline: Instant) -> ExecResult {
    let budget = Budget {
        deadline,
        step_timeout: None,
    };
    run_with(steps, vars, budget, "step").await
}

/// Run the steps in order under `budget`; `label` names them in errors
/// (`step`, `pre step`, `after step`).
pub async fn run_with(
    steps: &[Vec<String>],
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
    let mut argvs = Vec::with_capacity(total);
    for (i, step) in steps.iter().enumerate() {
        match substitute(step, vars) {
            Ok(argv) => argvs.push(argv),
            Err(e) => {
                result.error = Some(format!(
                    "{label} {} of {total} ({}) cannot run: {e}; nothing was run",
                    i + 1,
                    display_argv(step)
                ));
                return result;
            }
        }
    }

    for (i, argv) in argvs.iter().enumerate() {
        let (deadline, limit) = budget.for_step();
        let report = run_step_in(argv, deadline, limit, None).await;
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
