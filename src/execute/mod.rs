//! Carrying out a rollback plan: one file per executor kind, and the
//! verification gates ([`verify`]). Below them, in [`crate::run`]: process
//! running (argv directly, never a shell), the `{var}` templates, the
//! webhook HTTP client and the plan runner.
//!
//! Every plan runs under one deadline (`rollback.timeout`); a step still
//! running then is killed together with its process group.
//!
//! # Executor kinds
//!
//! Each kind is one file, `execute/KIND.rs`, whose `Config` holds its keys
//! and implements [`kind::Kind`]: validation, run, prepare (what a drill
//! shows), version check, identity and the rest. A kind is registered by
//! its `pub mod` line and one line in `executor_kinds!` below, which makes
//! it a variant of [`ExecutorKind`] (`kinds.rs`, the one place kinds are
//! dispatched). The kind's docs go in `docs/executors.md`.

/// The executor kinds, one line each: `Variant(module)`, where
/// `execute/module.rs` implements [`kind::Kind`] for its `Config`. The
/// order is the order of "use one of ..." in `check`'s messages.
macro_rules! executor_kinds {
    ($then:ident) => {
        $then! {
            Command(command),
            Symlink(symlink),
            Kubernetes(kubernetes),
            BlueGreen(blue_green),
            Docker(docker),
            Git(git),
            Webhook(webhook),
        }
    };
}

// The kinds' modules: plain `mod` lines (rustfmt and the import check do
// not see a module a macro declares).
pub mod blue_green;
pub mod command;
pub mod docker;
pub mod git;
pub mod kubernetes;
pub mod symlink;
pub mod webhook;

pub mod kind;
pub mod kinds;
pub mod verify;

use crate::run::process;
use std::time::Duration;

use crate::config::RollbackPlan;
use crate::run::plan::{Act, Budget, Runner};

pub use crate::report::{ExecResult, StepReport};
pub use crate::run::template::Vars;
pub use kind::{ExecError, Identity, VersionCheckError};
pub use kinds::ExecutorKind;

/// The time budget of `plan` starting now (the runner takes plain
/// durations, not config types).
pub fn budget(plan: &RollbackPlan) -> Budget {
    Budget::start(plan.timeout, plan.step_timeout)
}

/// Where `plan`'s steps run unless they say otherwise: its `cwd` and `env`.
pub fn context(plan: &RollbackPlan) -> command::Context {
    command::Context {
        cwd: plan.cwd.clone(),
        env: plan.env.clone(),
    }
}

/// The executor identity of `target`'s rollback plan.
pub fn identity(target: &str, plan: &RollbackPlan) -> Identity {
    plan.kind.identity(target, plan.cwd.as_deref(), &plan.env)
}

/// `check`'s warnings about targets that roll back the same executor (as
/// `target[i].rollback: warning: ...`, one per later target). Allowed, and
/// safe: only one of them acts at a time; but an operator usually meant
/// one target with several rules.
pub fn shared_executor_warnings(config: &crate::config::Config) -> Vec<String> {
    let mut seen: Vec<(Identity, &str)> = Vec::new();
    let mut out = Vec::new();
    for (i, t) in config.targets.iter().enumerate() {
        let id = identity(&t.name, &t.rollback);
        if let Some((_, first)) = seen.iter().find(|(s, _)| s.key == id.key) {
            out.push(format!(
                "target[{i}].rollback: warning: targets {first:?} and {:?} roll back the same \
                 executor ({}); only one of them acts at a time (the other waits while the first \
                 has an open incident); to watch one service with several signals, give one \
                 target several rules; if they are different services, make the executor say \
                 so (e.g. pass {{target}} as an argument)",
                t.name, id.shown
            ));
        } else {
            seen.push((id, &t.name));
        }
    }
    out
}

/// Run a target's rollback plan for an incident: the `pre` steps, then the
/// executor's. Never panics; every failure is in the returned [`ExecResult`].
///
/// Every template of `pre` and of a `command` plan is resolved before the
/// first step runs: a plan that cannot be completed is not started.
///
/// Versions the executor found (a release directory, `git describe`, an
/// image tag) outside the version charset are returned as `unknown version
/// "RAW"` ([`crate::version::name::unknown`]): the record shows them
/// escaped, and no later step (`after`, `on_failure`, verification) gets
/// them.
pub async fn run_plan(plan: &RollbackPlan, vars: &Vars) -> ExecResult {
    let mut result = process::with_plan_context(context(plan), run_plan_steps(plan, vars)).await;
    result.from_version = result.from_version.map(crate::version::name::as_found);
    result.to_version = result.to_version.map(crate::version::name::as_found);
    result
}

/// [`run_plan`] inside the plan's context.
async fn run_plan_steps(plan: &RollbackPlan, vars: &Vars) -> ExecResult {
    let budget = budget(plan);
    let context = context(plan);
    let mut vars = vars.clone();
    // The executor fills in what it finds itself (so that `pre` can use
    // it) and checks its own templates; a `pre` step that cannot be
    // completed is named first.
    let own = plan.kind.resolve(&mut vars);
    let pre = command::substitute_all(&plan.pre, &vars, "pre step")
        .map(drop)
        .map_err(|e| e.to_string());
    if let Err(error) = pre.and(own) {
        return ExecResult {
            ok: false,
            steps: Vec::new(),
            from_version: vars.from_version.clone(),
            to_version: vars.to_version.clone(),
            error: Some(error),
        };
    }
    process::with_vars(&vars, run_resolved(plan, &context, &vars, budget)).await
}

/// The `pre` steps, then the executor's, with every template resolvable.
async fn run_resolved(
    plan: &RollbackPlan,
    context: &command::Context,
    vars: &Vars,
    budget: Budget,
) -> ExecResult {
    let vars = vars.clone();
    let context = context.clone();
    let mut pre_steps = Vec::new();
    if !plan.pre.is_empty() {
        let pre = command::run_with(&plan.pre, &context, &vars, budget, "pre step").await;
        if !pre.ok {
            return pre;
        }
        pre_steps = pre.steps;
    }
    let mut result = plan.kind.run(&context, &vars, budget).await;
    if !pre_steps.is_empty() {
        pre_steps.append(&mut result.steps);
        result.steps = pre_steps;
    }
    result
}

/// Run the plan to a version a human named (`trigger --to-version V`):
/// check first that `version` exists, and refuse with nothing run when it
/// does not; the executor then goes to exactly that version (kubernetes:
/// `--to-revision=V`).
pub async fn run_plan_to(plan: &RollbackPlan, vars: &Vars, version: &str) -> ExecResult {
    if let Err(e) = check_version(plan, version).await {
        return ExecResult {
            ok: false,
            steps: Vec::new(),
            from_version: vars.from_version.clone(),
            to_version: Some(version.to_string()),
            error: Some(format!("{e}; nothing was run")),
        };
    }
    let mut plan = plan.clone();
    let version = plan.kind.go_to(version);
    let vars = Vars {
        to_version: Some(version),
        ..vars.clone()
    };
    run_plan(&plan, &vars).await
}

/// Whether `version` exists for the executor, read-only: symlink, a
/// release directory other than the live one; git, `git rev-parse --verify
/// V^{commit}` in `repo`; docker, `docker image inspect image:V` (a local
/// image), else `docker manifest inspect image:V` (in the registry);
/// kubernetes, a revision listed by `kubectl rollout history`.
/// `command` and `webhook` cannot check: `{to_version}` is passed on as
/// given; `blue_green` cannot choose (it flips to the other color). `Err`
/// says what is wrong, naming the version.
pub async fn check_version(plan: &RollbackPlan, version: &str) -> Result<(), VersionCheckError> {
    // A name a person typed reaches argv: the one version charset, the
    // same rule as for versions read from the service (unless the kind
    // parses its versions itself: kubernetes revision numbers).
    if plan.kind.versions_are_names() {
        if let Err(why) = crate::version::name::check(version) {
            return Err(VersionCheckError::unknown(
                version,
                format!("not a version name: {why}"),
            ));
        }
    }
    let deadline = tokio::time::Instant::now() + plan.timeout.min(Duration::from_secs(30));
    plan.kind.check_version(version, deadline).await
}

/// Run the plan's `after` steps (once verification passed) under the plan
/// timeout and step timeout.
pub async fn run_after(plan: &RollbackPlan, vars: &Vars) -> ExecResult {
    let context = context(plan);
    let budget = budget(plan);
    let run = command::run_with(&plan.after, &context, vars, budget, "after step");
    process::with_plan_context(context.clone(), process::with_vars(vars, run)).await
}

/// Run the plan's `on_failure` steps (the plan or its verification failed)
/// under the plan timeout and step timeout.
pub async fn run_on_failure(plan: &RollbackPlan, vars: &Vars) -> ExecResult {
    let context = context(plan);
    let budget = budget(plan);
    let run = command::run_with(&plan.on_failure, &context, vars, budget, "on_failure step");
    process::with_plan_context(context.clone(), process::with_vars(vars, run)).await
}

/// Read-only checks of a plan and the changes it would make, as a drill
/// shows them: `Ok` with the acts, or why the executor would refuse. The
/// steps run (all read-only) are in the runner.
pub async fn prepare(
    kind: &ExecutorKind,
    vars: &Vars,
    r: &mut Runner,
) -> Result<Vec<Act>, ExecError> {
    kind.prepare(vars, r).await
}

#[cfg(test)]
mod identity_tests {
    use super::*;

    const RULE: &str =
        "[[target.rule]]\nname = \"cpu\"\nsource = \"host\"\nmetric = \"cpu\"\nabove = 0.9\nfor = \"1m\"\n";

    /// A config with one target per `(name, rollback table body)`.
    fn config(targets: &[(&str, &str)]) -> crate::config::Config {
        let mut text = "[daemon]\nstate_dir = \"/tmp/x\"\n[notify.email]\nfrom = \"a@b.c\"\nto = [\"a@b.c\"]\n"
            .to_string();
        for (name, rollback) in targets {
            text.push_str(&format!(
                "[[target]]\nname = \"{name}\"\n{RULE}[target.rollback]\n{rollback}\n"
            ));
        }
        crate::config::load_str("t.toml", &text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ids(targets: &[(&str, &str)]) -> Vec<Identity> {
        let c = config(targets);
        c.targets
            .iter()
            .map(|t| identity(&t.name, &t.rollback))
            .collect()
    }

    #[test]
    fn one_key_per_executor_kind() {
        let cases: Vec<(&str, &str, &str, bool)> = vec![
            // (kind, a, b, same)
            (
                "symlink: same current, other releases",
                "kind = \"symlink\"\ncurrent = \"/srv/app/current\"\nreleases = \"/srv/app/releases\"",
                "kind = \"symlink\"\ncurrent = \"/srv/app/./current\"\nreleases = \"/srv/other\"",
                true,
            ),
            (
                "symlink: another current",
                "kind = \"symlink\"\ncurrent = \"/srv/app/current\"\nreleases = \"/srv/app/releases\"",
                "kind = \"symlink\"\ncurrent = \"/srv/api/current\"\nreleases = \"/srv/app/releases\"",
                false,
            ),
            (
                "kubernetes: same deployment, other namespace",
                "kind = \"kubernetes\"\ndeployment = \"web\"\nnamespace = \"prod\"",
                "kind = \"kubernetes\"\ndeployment = \"web\"\nnamespace = \"staging\"",
                false,
            ),
            (
                "kubernetes: same deployment and namespace",
                "kind = \"kubernetes\"\ndeployment = \"web\"\nnamespace = \"prod\"",
                "kind = \"kubernetes\"\ndeployment = \"web\"\nnamespace = \"prod\"\nto_revision = 3",
                true,
            ),
            (
                "docker: same container",
                "kind = \"docker\"\ncontainer = \"web\"\nimage = \"r/web\"",
                "kind = \"docker\"\ncontainer = \"web\"\nimage = \"r/other\"",
                true,
            ),
            (
                "git: same repo",
                "kind = \"git\"\nrepo = \"/srv/app\"",
                "kind = \"git\"\nrepo = \"/srv/app/\"",
                true,
            ),
            (
                "blue_green: other context",
                "kind = \"blue_green\"\nservice = \"web\"\nnamespace = \"prod\"",
                "kind = \"blue_green\"\nservice = \"web\"\nnamespace = \"prod\"\ncontext = \"eu\"",
                false,
            ),
            (
                "command: same steps",
                "kind = \"command\"\nsteps = [[\"systemctl\", \"restart\", \"app\"]]",
                "kind = \"command\"\nsteps = [[\"systemctl\", \"restart\", \"app\"]]",
                true,
            ),
            (
                "command: {target} makes them differ",
                "kind = \"command\"\nsteps = [[\"deploy\", \"{target}\"]]",
                "kind = \"command\"\nsteps = [[\"deploy\", \"{target}\"]]",
                false,
            ),
            (
                "webhook: another query",
                "kind = \"webhook\"\nurl = \"https://ci.example.com/rollback?job=web\"",
                "kind = \"webhook\"\nurl = \"https://ci.example.com/rollback?job=api\"",
                false,
            ),
            (
                "a symlink and a git repo",
                "kind = \"symlink\"\ncurrent = \"/srv/app\"\nreleases = \"/srv/r\"",
                "kind = \"git\"\nrepo = \"/srv/app\"",
                false,
            ),
        ];
        for (name, a, b, same) in cases {
            let ids = ids(&[("a", a), ("b", b)]);
            assert_eq!(ids[0].key == ids[1].key, same, "{name}: {ids:?}");
        }
    }

    #[test]
    fn command_identity_holds_the_environment_but_shows_only_its_names() {
        let ids = ids(&[
            ("a", "kind = \"command\"\nsteps = [[\"/opt/rollback.sh\"]]\nenv = { APP = \"cart\", TOKEN = \"SECRET\" }"),
            ("b", "kind = \"command\"\nsteps = [[\"/opt/rollback.sh\"]]\nenv = { APP = \"shop\", TOKEN = \"SECRET\" }"),
            ("c", "kind = \"command\"\nsteps = [[\"/opt/rollback.sh\", \"{target}\"]]"),
            ("d", "kind = \"command\"\nsteps = [[\"/opt/rollback.sh\", \"{target}\"]]"),
        ]);
        assert_ne!(
            ids[0].key, ids[1].key,
            "a different environment is another service"
        );
        assert_ne!(
            ids[2].key, ids[3].key,
            "{{target}} in the argv tells them apart"
        );
        assert!(!ids[0].shown.contains("SECRET"), "{}", ids[0].shown);
        assert!(ids[0].shown.contains("TOKEN="), "{}", ids[0].shown);
    }

    #[test]
    fn shown_without_secrets() {
        let ids = ids(&[(
            "a",
            "kind = \"webhook\"\nurl = \"https://u:pw@ci.example.com/hook?access_token=SECRET\"",
        )]);
        assert_eq!(
            ids[0].shown,
            "webhook https://***:***@ci.example.com/hook?access_token=***"
        );
        assert!(ids[0].key.contains("SECRET"), "the key tells them apart");
        let ids = ids_symlink();
        assert_eq!(ids.shown, "symlink /srv/app/current");
    }

    fn ids_symlink() -> Identity {
        ids(&[(
            "a",
            "kind = \"symlink\"\ncurrent = \"/srv/app/current/\"\nreleases = \"/srv/r\"",
        )])
        .remove(0)
    }

    #[test]
    fn check_warns_about_targets_sharing_an_executor() {
        let symlink = "kind = \"symlink\"\ncurrent = \"/srv/app/current\"\nreleases = \"/srv/r\"";
        let other = "kind = \"symlink\"\ncurrent = \"/srv/api/current\"\nreleases = \"/srv/r\"";
        let c = config(&[("web", symlink), ("api", other), ("web-latency", symlink)]);
        let w = shared_executor_warnings(&c);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with(
                "target[2].rollback: warning: targets \"web\" and \"web-latency\" roll back the \
                 same executor (symlink /srv/app/current); only one of them acts at a time"
            ),
            "{}",
            w[0]
        );
        assert!(shared_executor_warnings(&config(&[("web", symlink), ("api", other)])).is_empty());
    }
}
