//! Carrying out a rollback plan: one file per executor kind, and the
//! verification gates ([`verify`]). Below them, in [`crate::run`]: process
//! running (argv directly, never a shell), the `{var}` templates, the
//! webhook HTTP client and the plan runner.
//!
//! Every plan runs under one deadline (`rollback.timeout`); a step still
//! running then is killed together with its process group.

pub mod blue_green;
pub mod command;
pub mod docker;
pub mod git;
pub mod kubernetes;
pub mod symlink;
pub mod verify;
pub mod webhook;

use crate::run::process;
use std::time::Duration;

use crate::config::{ExecutorKind, RollbackPlan};
use crate::run::plan::{self as runner, Act, Budget, Runner, StepError};

pub use crate::report::{ExecResult, StepReport};
pub use crate::run::template::Vars;

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

/// What a target's rollback acts on: two targets with equal keys roll back
/// the same service, so only one may have an open incident at a time (the
/// other waits: `decide::peers`). One function per executor kind, in its
/// own file; fleets use the same key for their members.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    /// Equal for the same executor kind and keys.
    pub key: String,
    /// As a person reads it (`symlink /srv/app/current`), without secrets.
    pub shown: String,
}

impl Identity {
    /// An identity shown as its key.
    fn same(key: String) -> Identity {
        Identity {
            shown: key.clone(),
            key,
        }
    }
}

/// The executor identity of `target`'s rollback plan.
pub fn identity(target: &str, plan: &RollbackPlan) -> Identity {
    match &plan.kind {
        ExecutorKind::Command { steps } => {
            command::identity(target, steps, plan.cwd.as_deref(), &plan.env)
        }
        ExecutorKind::Symlink { current, .. } => symlink::identity(current),
        ExecutorKind::Kubernetes {
            deployment,
            namespace,
            context,
            ..
        } => kubernetes::identity(deployment, namespace, context.as_deref()),
        ExecutorKind::BlueGreen {
            service,
            namespace,
            context,
            ..
        } => blue_green::identity(service, namespace, context.as_deref()),
        ExecutorKind::Docker { container, .. } => docker::identity(container),
        ExecutorKind::Git { repo, .. } => git::identity(repo),
        ExecutorKind::Webhook { url, .. } => webhook::identity(url),
    }
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
    // The symlink executor finds the release to go to itself; resolve it
    // now so that `pre` can use `{to_version}` too.
    if let (
        ExecutorKind::Symlink {
            current, releases, ..
        },
        None,
    ) = (&plan.kind, &vars.to_version)
    {
        if let Ok((live, chosen, _)) = symlink::preview(current, releases, None) {
            vars.from_version.get_or_insert(live);
            vars.to_version = Some(chosen);
        }
    }
    let refused = |error: command::Unresolved| ExecResult {
        ok: false,
        steps: Vec::new(),
        from_version: vars.from_version.clone(),
        to_version: vars.to_version.clone(),
        error: Some(error.to_string()),
    };
    if let Err(e) = command::substitute_all(&plan.pre, &vars, "pre step") {
        return refused(e);
    }
    if let ExecutorKind::Command { steps } = &plan.kind {
        if let Err(e) = command::substitute_all(steps, &vars, "step") {
            return refused(e);
        }
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
    let mut result = run_kind(&plan.kind, &context, &vars, budget).await;
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
    let mut version = version.to_string();
    if let ExecutorKind::Kubernetes { to_revision, .. } = &mut plan.kind {
        *to_revision = parse_revision(&version);
        // `revision 3` is written `3` from here on (a version name).
        if let Some(n) = *to_revision {
            version = n.to_string();
        }
    }
    let vars = Vars {
        to_version: Some(version),
        ..vars.clone()
    };
    run_plan(&plan, &vars).await
}

/// `3`, `revision 3` -> 3.
fn parse_revision(version: &str) -> Option<u64> {
    version
        .trim()
        .trim_start_matches("revision")
        .trim()
        .parse()
        .ok()
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
    let version = version.to_string();
    let unknown = |why: Unknown| VersionCheckError::Unknown {
        version: version.clone(),
        why,
    };
    // A name a person typed reaches argv: the one version charset, the
    // same rule as for versions read from the service. (Kubernetes
    // versions are revision numbers, also written `revision N`; they are
    // parsed below.)
    let kubernetes = matches!(plan.kind, ExecutorKind::Kubernetes { .. });
    if !kubernetes {
        if let Err(why) = crate::version::name::check(&version) {
            return Err(unknown(Unknown::NotAName(why)));
        }
    }
    let deadline = tokio::time::Instant::now() + plan.timeout.min(Duration::from_secs(30));
    let probe = |argv: Vec<String>| async move {
        process::run_step_in(&argv, deadline, "version check", None).await
    };
    match &plan.kind {
        ExecutorKind::Symlink {
            current, releases, ..
        } => {
            if version.contains('/') || version == "." || version == ".." {
                return Err(unknown(Unknown::NotAReleaseName));
            }
            let dir = releases.join(&version);
            if !dir.is_dir() {
                return Err(unknown(Unknown::NoReleaseDir(dir)));
            }
            if symlink::live_release(current).is_ok_and(|live| live == version) {
                return Err(VersionCheckError::AlreadyLive {
                    version,
                    current: current.clone(),
                    dir,
                });
            }
            Ok(())
        }
        ExecutorKind::Git { repo, .. } => {
            let argv = vec![
                "git".to_string(),
                "-C".to_string(),
                repo.display().to_string(),
                "rev-parse".to_string(),
                "--verify".to_string(),
                "--quiet".to_string(),
                format!("{version}^{{commit}}"),
            ];
            let report = probe(argv).await;
            if report.ok {
                Ok(())
            } else {
                Err(unknown(Unknown::NoGitRef(repo.clone())))
            }
        }
        ExecutorKind::Docker { image, docker, .. } => {
            let tagged = format!("{image}:{version}");
            let argv = vec![
                docker.clone(),
                "image".to_string(),
                "inspect".to_string(),
                "--format".to_string(),
                "{{.Id}}".to_string(),
                tagged.clone(),
            ];
            if probe(argv).await.ok {
                return Ok(());
            }
            // Not local: the registry must have it. `manifest inspect`
            // asks without downloading (the rollback pulls it).
            let argv = vec![
                docker.clone(),
                "manifest".to_string(),
                "inspect".to_string(),
                tagged.clone(),
            ];
            let remote = probe(argv).await;
            if remote.ok {
                Ok(())
            } else {
                Err(unknown(Unknown::NoImage {
                    tagged,
                    error: remote.error.unwrap_or_default(),
                }))
            }
        }
        ExecutorKind::Kubernetes {
            deployment,
            namespace,
            context,
            kubectl,
            ..
        } => {
            let Some(n) = parse_revision(&version) else {
                return Err(unknown(Unknown::NotARevision));
            };
            let mut argv = vec![
                kubectl.clone(),
                "rollout".to_string(),
                "history".to_string(),
                format!("deployment/{deployment}"),
                "-n".to_string(),
                namespace.clone(),
            ];
            if let Some(c) = context {
                argv.extend(["--context".to_string(), c.clone()]);
            }
            let report = probe(argv).await;
            if !report.ok {
                return Err(VersionCheckError::HistoryFailed {
                    version,
                    error: report.error.unwrap_or_default(),
                });
            }
            if kubernetes::parse_history(&report.stdout).contains(&n) {
                Ok(())
            } else {
                Err(unknown(Unknown::NotInHistory {
                    n,
                    deployment: deployment.clone(),
                }))
            }
        }
        ExecutorKind::BlueGreen { .. } => Err(VersionCheckError::BlueGreen { version }),
        ExecutorKind::Command { .. } | ExecutorKind::Webhook { .. } => Ok(()),
    }
}

/// The executor's own steps.
async fn run_kind(
    kind: &ExecutorKind,
    context: &command::Context,
    vars: &Vars,
    budget: Budget,
) -> ExecResult {
    match Executor::of(kind) {
        Executor::Command(steps) => command::run_with(steps, context, vars, budget, "step").await,
        Executor::Symlink {
            current,
            releases,
            restart,
        } => symlink::run_with(current, releases, restart, vars, budget).await,
        Executor::Kubernetes(k) => k.run(vars, budget).await,
        Executor::BlueGreen(b) => b.run(vars, budget).await,
        Executor::Docker(d) => d.run(vars, budget).await,
        Executor::Git(g) => g.run(vars, budget).await,
        Executor::Webhook(w) => w.run(vars, budget).await,
    }
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
    Ok(match Executor::of(kind) {
        Executor::Command(steps) => steps
            .iter()
            .map(|step| {
                runner::subst(&step.argv, vars, "step").map(|argv| Act::Run {
                    argv,
                    cwd: step.cwd.clone(),
                })
            })
            .collect::<Result<_, _>>()?,
        Executor::Symlink {
            current,
            releases,
            restart,
        } => {
            let (live, chosen, target) =
                symlink::preview(current, releases, vars.to_version.as_deref())?;
            r.result.from_version = Some(live.clone());
            r.result.to_version = Some(chosen.clone());
            let found = Vars {
                from_version: Some(live),
                to_version: Some(chosen),
                ..vars.clone()
            };
            let mut acts = vec![Act::run(vec![
                "symlink".to_string(),
                current.display().to_string(),
                "->".to_string(),
                target.display().to_string(),
            ])];
            if let Some(argv) = restart.filter(|a| !a.is_empty()) {
                acts.push(Act::run(runner::subst(argv, &found, "restart")?));
            }
            acts
        }
        Executor::Kubernetes(k) => k.prepare(r).await?,
        Executor::BlueGreen(b) => b.prepare(r).await?,
        Executor::Docker(d) => d.prepare(vars, r).await?,
        Executor::Git(g) => g.prepare(vars, r).await?,
        Executor::Webhook(w) => w.prepare(vars)?,
    })
}

/// Why an executor's read-only checks refused a plan (nothing was
/// changed), or a step of it failed; each kind's error names its values.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExecError {
    /// A step failed, or its template could not be completed.
    #[error(transparent)]
    Step(#[from] StepError),
    /// `symlink`.
    #[error(transparent)]
    Symlink(#[from] symlink::SymlinkError),
    /// `kubernetes`.
    #[error(transparent)]
    Kubernetes(#[from] kubernetes::KubernetesError),
    /// `blue_green`.
    #[error(transparent)]
    BlueGreen(#[from] blue_green::BlueGreenError),
    /// `docker`.
    #[error(transparent)]
    Docker(#[from] docker::DockerError),
    /// `git`.
    #[error(transparent)]
    Git(#[from] git::GitError),
    /// `webhook`.
    #[error(transparent)]
    Webhook(#[from] webhook::WebhookError),
}

/// Why a version a person named (`trigger --to-version V`) is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VersionCheckError {
    /// The executor does not know it.
    #[error("unknown version {}: {why}", crate::version::name::escaped(version))]
    Unknown {
        /// As typed.
        version: String,
        /// What is wrong with it.
        why: Unknown,
    },
    /// It is the live release already (symlink).
    #[error("version {version:?} is already live ({} -> {})", current.display(), dir.display())]
    AlreadyLive {
        /// As typed.
        version: String,
        /// The `current` link.
        current: std::path::PathBuf,
        /// The release directory.
        dir: std::path::PathBuf,
    },
    /// `kubectl rollout history` failed, so nothing can be said.
    #[error("cannot check version {version:?}: kubectl rollout history failed: {error}")]
    HistoryFailed {
        /// As typed.
        version: String,
        /// kubectl's failure.
        error: String,
    },
    /// A blue_green rollback cannot go to a chosen version.
    #[error(
        "version {version:?} cannot be chosen: a blue_green rollback flips the service to the \
         color that is not live; leave out --to-version"
    )]
    BlueGreen {
        /// As typed.
        version: String,
    },
}

/// What is wrong with an unknown version.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Unknown {
    /// Outside the version charset (it reaches argv).
    #[error("not a version name: {0}")]
    NotAName(crate::version::name::NotAVersion),
    /// A path, `.` or `..` (symlink).
    #[error("not a release directory name")]
    NotAReleaseName,
    /// No such release directory (symlink).
    #[error("no release directory {}", .0.display())]
    NoReleaseDir(std::path::PathBuf),
    /// No tag or commit of that name (git).
    #[error("no tag or commit of that name in {}", .0.display())]
    NoGitRef(std::path::PathBuf),
    /// No local or registry image (docker).
    #[error(
        "no local image {tagged}, and docker manifest inspect found none in the registry: {error}"
    )]
    NoImage {
        /// `image:V`.
        tagged: String,
        /// Why the registry had none.
        error: String,
    },
    /// Not a revision number (kubernetes).
    #[error("kubernetes versions are revision numbers (see kubectl rollout history)")]
    NotARevision,
    /// Not in the rollout history (kubernetes).
    #[error("revision {n} is not in the rollout history of deployment/{deployment}")]
    NotInHistory {
        /// The revision.
        n: u64,
        /// The deployment.
        deployment: String,
    },
}

/// A borrowed view of an [`ExecutorKind`] as the executor that runs it.
enum Executor<'a> {
    Command(&'a [crate::config::Step]),
    Symlink {
        current: &'a std::path::Path,
        releases: &'a std::path::Path,
        restart: Option<&'a [String]>,
    },
    Kubernetes(kubernetes::Kubernetes<'a>),
    BlueGreen(blue_green::BlueGreen<'a>),
    Docker(docker::Docker<'a>),
    Git(git::Git<'a>),
    Webhook(webhook::Webhook<'a>),
}

impl Executor<'_> {
    fn of(kind: &ExecutorKind) -> Executor<'_> {
        match kind {
            ExecutorKind::Command { steps } => Executor::Command(steps),
            ExecutorKind::Symlink {
                current,
                releases,
                restart,
            } => Executor::Symlink {
                current,
                releases,
                restart: restart.as_deref(),
            },
            ExecutorKind::Kubernetes {
                deployment,
                namespace,
                context,
                to_revision,
                kubectl,
            } => Executor::Kubernetes(kubernetes::Kubernetes {
                deployment,
                namespace,
                context: context.as_deref(),
                to_revision: *to_revision,
                kubectl,
            }),
            ExecutorKind::BlueGreen {
                service,
                namespace,
                context,
                selector_key,
                colors,
                kubectl,
            } => Executor::BlueGreen(blue_green::BlueGreen {
                service,
                namespace,
                context: context.as_deref(),
                selector_key,
                colors,
                kubectl,
            }),
            ExecutorKind::Docker {
                container,
                image,
                run_args,
                docker,
            } => Executor::Docker(docker::Docker {
                container,
                image,
                run_args,
                docker,
            }),
            ExecutorKind::Git {
                repo,
                build,
                restart,
            } => Executor::Git(git::Git {
                repo,
                build,
                restart: restart.as_deref(),
            }),
            ExecutorKind::Webhook {
                url,
                token_file,
                body,
            } => Executor::Webhook(webhook::Webhook {
                url,
                token_file: token_file.as_deref(),
                body: body.as_deref(),
            }),
        }
    }
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
