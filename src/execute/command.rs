//! `kind = "command"`: ordered argv steps; the first failure stops the plan.

use std::collections::BTreeMap;
use std::path::Path;

use tokio::time::Instant;

use super::kind::{steps_using, ExecError, Identity, Kind, VersionCheckError};
use crate::config::cx::Cx;
use crate::config::raw::step::{join, RawStep};
use crate::report::ExecResult;
use crate::run::plan::{self as runner, Act, Budget, Runner};
use crate::run::process::run_step_with;
pub use crate::run::process::Context;
use crate::run::step::Step;
use crate::run::template::{substitute, TemplateError, Vars};
use crate::util::display_argv;

/// The keys of a `command` rollback, as written.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    /// Ordered argv templates.
    pub steps: Option<Vec<RawStep>>,
}

/// A `command` rollback: ordered argv steps; the first failure stops the
/// plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// argv templates.
    pub steps: Vec<Step>,
}

impl Kind for Config {
    const NAME: &'static str = "command";
    const KEYS: &'static [&'static str] = &["steps"];
    const VERSIONS_ARE_NAMES: bool = true;
    type Raw = Raw;

    fn build(cx: &mut Cx, p: &str, raw: Raw) -> Option<Config> {
        let steps = match cx.required(p, "steps", raw.steps.as_deref()) {
            None => None,
            Some([]) => {
                cx.err(
                    join(p, "steps"),
                    "no steps: give at least one command, e.g. steps = [[\"systemctl\", \"restart\", \"app\"]]",
                );
                None
            }
            Some(list) => cx.step_list(&join(p, "steps"), list),
        };
        Some(Config { steps: steps? })
    }

    fn uses_var(&self, var: &str) -> Vec<String> {
        steps_using("steps", &self.steps, var)
    }

    fn finds_own_version(&self) -> bool {
        false
    }

    fn identity(
        &self,
        target: &str,
        cwd: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Identity {
        identity(target, &self.steps, cwd, env)
    }

    fn programs(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter_map(|s| s.argv.first().cloned())
            .collect()
    }

    /// Every template of the steps is resolved before the first step of
    /// the plan (`pre` included) runs.
    fn scripts(&self) -> Vec<&[String]> {
        self.steps.iter().map(|s| s.argv.as_slice()).collect()
    }

    fn resolve(&self, vars: &mut Vars) -> Result<(), String> {
        substitute_all(&self.steps, vars, "step")
            .map(drop)
            .map_err(|e| e.to_string())
    }

    async fn prepare(&self, vars: &Vars, _r: &mut Runner) -> Result<Vec<Act>, ExecError> {
        Ok(self
            .steps
            .iter()
            .map(|step| {
                runner::subst(&step.argv, vars, "step").map(|argv| Act::Run {
                    argv,
                    cwd: step.cwd.clone(),
                })
            })
            .collect::<Result<_, _>>()?)
    }

    async fn run(&self, context: &Context, vars: &Vars, budget: Budget) -> ExecResult {
        run_with(&self.steps, context, vars, budget, "step").await
    }

    /// Cannot check: `{to_version}` is passed on as given.
    async fn check_version(
        &self,
        _version: &str,
        _deadline: Instant,
    ) -> Result<(), VersionCheckError> {
        Ok(())
    }

    fn go_to(&mut self, version: &str) -> String {
        version.to_string()
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

/// A step of a list whose template cannot be completed: none of the list
/// runs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{label} {number} of {total} ({argv}) cannot run: {error}; nothing was run")]
pub struct Unresolved {
    /// `step`, `pre step`, `after step`, ...
    pub label: String,
    /// Its place in the list (1-based).
    pub number: usize,
    /// The list's length.
    pub total: usize,
    /// The template as shown to people.
    pub argv: String,
    /// The missing variable.
    pub error: TemplateError,
}

/// Substitute every step before running any: the first that cannot be
/// completed is the error.
pub fn substitute_all(
    steps: &[Step],
    vars: &Vars,
    label: &str,
) -> Result<Vec<Vec<String>>, Unresolved> {
    let total = steps.len();
    steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            substitute(&step.argv, vars).map_err(|error| Unresolved {
                label: label.to_string(),
                number: i + 1,
                total,
                argv: display_argv(&step.argv),
                error,
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
            result.error = Some(e.to_string());
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
        let (cwd, env) = context.for_step(step.cwd.as_deref(), &step.env);
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

/// The executor's identity ([`Kind::identity`]): the steps as they would
/// run for `target` (argv and environment with `{target}` filled in, and
/// each step's working directory), so that two targets running the same
/// commands in the same place with the same environment are one service.
/// Steps that differ only through `$ROLLBACKD_TARGET` read by a script
/// cannot be told apart: `check` warns about them (pass `{target}` as an
/// argument instead).
pub fn identity(
    target: &str,
    steps: &[Step],
    cwd: Option<&std::path::Path>,
    env: &std::collections::BTreeMap<String, String>,
) -> Identity {
    let fill = |s: &str| s.replace("{target}", target);
    // The key holds the environment's values; what is shown names only
    // the variables (a value may be a token).
    let (mut key, mut shown) = (Vec::new(), Vec::new());
    for s in steps {
        let argv = display_argv(&s.argv.iter().map(|a| fill(a)).collect::<Vec<_>>());
        let mut vars = env.clone();
        vars.extend(s.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let values: Vec<String> = vars
            .iter()
            .map(|(k, v)| format!("{k}={}", fill(v)))
            .collect();
        let names: Vec<String> = vars.keys().map(|k| format!("{k}=...")).collect();
        let dir = s.cwd.as_deref().or(cwd);
        for (out, vars) in [(&mut key, values), (&mut shown, names)] {
            let line = if vars.is_empty() {
                argv.clone()
            } else {
                format!("{} {argv}", vars.join(" "))
            };
            out.push(match dir {
                Some(dir) => format!("(cd {}; {line})", dir.display()),
                None => line,
            });
        }
    }
    Identity {
        key: format!("command steps {}", key.join(" && ")),
        shown: format!("command steps {}", shown.join(" && ")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use std::collections::BTreeMap;

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

    #[test]
    fn step_context_table() {
        use std::path::PathBuf;
        let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let plan = Context {
            cwd: Some(PathBuf::from("/srv/app")),
            env: env(&[("NODE_ENV", "production"), ("PORT", "3000")]),
        };
        let step = |cwd: Option<&str>, e: &[(&str, &str)]| Step {
            argv: vec!["true".into()],
            cwd: cwd.map(PathBuf::from),
            env: env(e),
            timeout: None,
        };
        // (name, plan context, step, cwd, env)
        let cases = [
            (
                "nothing set",
                Context::default(),
                step(None, &[]),
                None,
                env(&[]),
            ),
            (
                "plan only",
                plan.clone(),
                step(None, &[]),
                Some("/srv/app"),
                env(&[("NODE_ENV", "production"), ("PORT", "3000")]),
            ),
            (
                "step overrides cwd and one variable",
                plan.clone(),
                step(Some("/srv/app/web"), &[("PORT", "4000"), ("X", "1")]),
                Some("/srv/app/web"),
                env(&[("NODE_ENV", "production"), ("PORT", "4000"), ("X", "1")]),
            ),
            (
                "step only",
                Context::default(),
                step(Some("/tmp"), &[("A", "b")]),
                Some("/tmp"),
                env(&[("A", "b")]),
            ),
        ];
        for (name, context, step, cwd, want_env) in cases {
            let (got_cwd, got_env) = context.for_step(step.cwd.as_deref(), &step.env);
            assert_eq!(got_cwd, cwd.map(PathBuf::from), "{name}");
            assert_eq!(got_env, want_env, "{name}");
        }
    }

    #[tokio::test]
    async fn steps_run_in_their_cwd_with_their_env() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("web");
        std::fs::create_dir(&sub).unwrap();
        let context = Context {
            cwd: Some(dir.path().to_path_buf()),
            env: [("GREETING".to_string(), "plan".to_string())].into(),
        };
        let sh = |script: &str| -> Vec<String> { vec!["sh".into(), "-c".into(), script.into()] };
        let steps = vec![
            Step::from(sh("echo \"$PWD $GREETING\" > where")),
            Step {
                argv: sh("echo \"$PWD $GREETING\" > where"),
                cwd: Some(sub.clone()),
                env: [("GREETING".to_string(), "step".to_string())].into(),
                timeout: Some(Duration::from_secs(5)),
            },
        ];
        let budget = Budget {
            deadline: soon(),
            step_timeout: None,
        };
        let r = run_with(&steps, &context, &Vars::default(), budget, "step").await;
        assert!(r.ok, "{:?}", r.error);
        let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap();
        assert_eq!(
            read(dir.path().join("where")),
            format!("{} plan\n", dir.path().display())
        );
        assert_eq!(read(sub.join("where")), format!("{} step\n", sub.display()));
    }

    #[tokio::test]
    async fn a_step_timeout_bounds_that_step() {
        let steps = vec![Step {
            argv: vec!["sleep".into(), "30".into()],
            timeout: Some(Duration::from_millis(300)),
            ..Step::default()
        }];
        let budget = Budget {
            deadline: soon(),
            step_timeout: None,
        };
        let started = Instant::now();
        let r = run_with(
            &steps,
            &Context::default(),
            &Vars::default(),
            budget,
            "step",
        )
        .await;
        assert!(!r.ok);
        assert!(started.elapsed() < Duration::from_secs(10));
        let e = r.error.unwrap();
        assert!(e.contains("step timeout"), "{e}");
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
