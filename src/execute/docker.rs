//! `kind = "docker"`: inspect the running container for the image tag it
//! replaces, make sure the tag to go back to is available (pulling it before
//! anything stops), then stop and remove the container and run
//! `image:{to_version}` under the same name with `run_args`.
//!
//! Without a known `{to_version}` the previous local tag of the image is
//! used: the greatest tag that sorts before the live one.
//!
//! When that `docker run` fails the old container is already gone, so the
//! executor puts it back before failing the plan: `docker rm -f C` (a
//! half-created container of that name) and `docker run` of the image it
//! inspected, with the same `run_args`. These restore steps get at least
//! [`RESTORE_TIMEOUT`] even when the plan deadline is (nearly) over.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use super::kind::{probe, program, required_text, ExecError, Identity, Kind, VersionCheckError};
use crate::config::cx::Cx;
use crate::config::raw::step::join;
use crate::report::ExecResult;
use crate::run::plan::{first_line, Act, Budget, Runner, StepError};
use crate::run::process::{run_step_in, Context};
use crate::run::template::{substitute, TemplateError, Vars};
use crate::version::order::previous;

/// The keys of a `docker` rollback, as written.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    /// Container name.
    pub container: Option<String>,
    /// Image without tag.
    pub image: Option<String>,
    /// Extra `docker run` arguments.
    pub run_args: Option<Vec<String>>,
    /// Path of docker.
    pub docker: Option<String>,
}

/// A `docker` rollback: replace a container with one running
/// `image:{to_version}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Container name, kept across the replacement.
    pub container: String,
    /// Image without tag.
    pub image: String,
    /// Extra `docker run` arguments (argv templates) before the image.
    pub run_args: Vec<String>,
    /// docker program (default `docker`).
    pub docker: String,
}

impl Kind for Config {
    const NAME: &'static str = "docker";
    const KEYS: &'static [&'static str] = &["container", "image", "run_args", "docker"];
    const VERSIONS_ARE_NAMES: bool = true;
    type Raw = Raw;

    fn build(cx: &mut Cx, p: &str, raw: Raw) -> Option<Config> {
        let container = required_text(cx, p, "container", raw.container.as_deref());
        let image = required_text(cx, p, "image", raw.image.as_deref()).and_then(|image| {
            let name = image.rsplit('/').next().unwrap_or(&image);
            if name.contains([':', '@']) {
                cx.err(
                    join(p, "image"),
                    format!("image {image:?} must not carry a tag or digest: the executor adds :{{to_version}}"),
                );
                None
            } else {
                Some(image)
            }
        });
        let run_args = match raw.run_args.as_deref() {
            None => Some(Vec::new()),
            Some([]) => Some(Vec::new()),
            // Checked like an argv, with a placeholder program.
            Some(args) => {
                let mut argv = vec!["docker".to_string()];
                argv.extend_from_slice(args);
                cx.argv(&join(p, "run_args"), &argv, true)
                    .map(|_| args.to_vec())
            }
        };
        let docker = program(cx, p, "docker", raw.docker.as_deref());
        Some(Config {
            container: container?,
            image: image?,
            run_args: run_args?,
            docker: docker?,
        })
    }

    /// It runs `image:{to_version}`.
    fn uses_var(&self, var: &str) -> Vec<String> {
        if var == "to_version" {
            vec!["kind".to_string()]
        } else {
            Vec::new()
        }
    }

    fn finds_own_version(&self) -> bool {
        false
    }

    fn identity(
        &self,
        _target: &str,
        _cwd: Option<&Path>,
        _env: &BTreeMap<String, String>,
    ) -> Identity {
        identity(&self.container)
    }

    fn programs(&self) -> Vec<String> {
        vec![self.docker.clone()]
    }

    async fn prepare(&self, vars: &Vars, r: &mut Runner) -> Result<Vec<Act>, ExecError> {
        self.acts(vars, r).await.map_err(ExecError::refused)
    }

    async fn run(&self, _context: &Context, vars: &Vars, budget: Budget) -> ExecResult {
        self.replace(vars, budget).await
    }

    /// `docker image inspect image:V` (a local image), else `docker
    /// manifest inspect image:V` (in the registry).
    async fn check_version(
        &self,
        version: &str,
        deadline: Instant,
    ) -> Result<(), VersionCheckError> {
        let tagged = format!("{}:{version}", self.image);
        let argv = vec![
            self.docker.clone(),
            "image".to_string(),
            "inspect".to_string(),
            "--format".to_string(),
            "{{.Id}}".to_string(),
            tagged.clone(),
        ];
        if probe(argv, deadline).await.ok {
            return Ok(());
        }
        // Not local: the registry must have it. `manifest inspect`
        // asks without downloading (the rollback pulls it).
        let argv = vec![
            self.docker.clone(),
            "manifest".to_string(),
            "inspect".to_string(),
            tagged.clone(),
        ];
        let remote = probe(argv, deadline).await;
        if remote.ok {
            Ok(())
        } else {
            Err(VersionCheckError::unknown(
                version,
                format!(
                    "no local image {tagged}, and docker manifest inspect found none in the \
                     registry: {}",
                    remote.error.unwrap_or_default()
                ),
            ))
        }
    }

    fn go_to(&mut self, version: &str) -> String {
        version.to_string()
    }
}

/// The time the restore steps (`docker rm -f`, then `docker run` of the old
/// image) get together, counted from the failure of the new `docker run`:
/// they end by the plan deadline or this, whichever is later, so a plan may
/// overrun its `timeout` by at most this much to put the old container back.
pub const RESTORE_TIMEOUT: Duration = Duration::from_secs(30);

/// What `prepare` decided: the steps up to the new `docker run`, that run,
/// and how to put the old container back if it fails.
struct Replacement {
    /// `docker pull` (when needed), `docker stop`, `docker rm`.
    before: Vec<Act>,
    /// `docker run ... image:TO`.
    run: Vec<String>,
    /// The image reference the new container runs.
    new_image: String,
    /// The image the old container ran, as inspected.
    old_image: String,
    /// `docker run ... OLD_IMAGE`.
    restore: Vec<String>,
}

impl Config {
    fn docker(&self, args: &[&str]) -> Vec<String> {
        let mut argv = vec![self.docker.to_string()];
        argv.extend(args.iter().map(|s| s.to_string()));
        argv
    }

    /// Inspect, choose the tag, check it is there; returns the replacement.
    async fn acts(&self, vars: &Vars, r: &mut Runner) -> Result<Vec<Act>, DockerError> {
        let replacement = self.plan(vars, r).await?;
        let mut acts = replacement.before;
        acts.push(Act::run(replacement.run));
        Ok(acts)
    }

    /// `docker run -d --name C ARGS... IMAGE`.
    fn run_argv(&self, args: Vec<String>, image: &str) -> Vec<String> {
        let mut run = self.docker(&["run", "-d", "--name", &self.container]);
        run.extend(args);
        run.push(image.to_string());
        run
    }

    async fn plan(&self, vars: &Vars, r: &mut Runner) -> Result<Replacement, DockerError> {
        let report = r
            .probe(
                self.docker(&["inspect", "--format", "{{.Config.Image}}", &self.container]),
                None,
            )
            .await;
        if !report.ok {
            return Err(DockerError::NotInspectable {
                container: self.container.to_string(),
                error: report.error.unwrap_or_else(|| "unknown error".to_string()),
            });
        }
        let running = first_line(&report.stdout);
        let (repo, live) = split_tag(&running);
        if repo != self.image {
            tracing::warn!(container = %self.container, running = %running, image = %self.image, "the container runs another image than configured");
        }
        let live = live.unwrap_or("latest").to_string();
        r.result.from_version = Some(live.clone());

        let mut acts = Vec::new();
        let to = match vars.to_version.clone() {
            Some(to) => {
                let wanted = format!("{}:{to}", self.image);
                let present = r
                    .probe(
                        self.docker(&["image", "inspect", "--format", "{{.Id}}", &wanted]),
                        None,
                    )
                    .await;
                if !present.ok {
                    acts.push(Act::run(self.docker(&["pull", &wanted])));
                }
                to
            }
            None => {
                let out = r
                    .run(
                        self.docker(&["image", "ls", "--format", "{{.Tag}}", &self.image]),
                        None,
                    )
                    .await?;
                let tags = out
                    .lines()
                    .map(str::trim)
                    .filter(|t| !t.is_empty() && *t != "<none>");
                previous(tags, &live).map(str::to_string).ok_or_else(|| {
                    DockerError::NoEarlierTag {
                        image: self.image.to_string(),
                        live: live.clone(),
                    }
                })?
            }
        };
        if to == live {
            return Err(DockerError::AlreadyRuns {
                container: self.container.to_string(),
                image: format!("{}:{live}", self.image),
            });
        }
        r.result.to_version = Some(to.clone());
        let found = Vars {
            from_version: Some(live.clone()),
            to_version: Some(to.clone()),
            ..vars.clone()
        };
        crate::run::process::found_vars(&found);
        let run_args = substitute(&self.run_args, &found).map_err(DockerError::RunArgs)?;
        // Putting the old container back is a run towards the old tag.
        let back = Vars {
            from_version: Some(to.clone()),
            to_version: Some(live),
            ..vars.clone()
        };
        let restore_args = substitute(&self.run_args, &back).map_err(DockerError::RunArgs)?;
        acts.push(Act::run(self.docker(&["stop", &self.container])));
        acts.push(Act::run(self.docker(&["rm", &self.container])));
        let new_image = format!("{}:{to}", self.image);
        Ok(Replacement {
            before: acts,
            run: self.run_argv(run_args, &new_image),
            restore: self.run_argv(restore_args, &running),
            new_image,
            old_image: running,
        })
    }

    /// Replace the container; when the new one cannot be run, start the old
    /// image again and fail the plan saying whether that worked.
    async fn replace(&self, vars: &Vars, budget: Budget) -> ExecResult {
        let mut r = Runner::new(budget, vars);
        let replacement = match self.plan(vars, &mut r).await {
            Ok(replacement) => replacement,
            Err(e) => return r.fail(e),
        };
        if let Err(e) = r.apply(replacement.before).await {
            return r.fail(e);
        }
        let report = r.probe(replacement.run, None).await;
        if report.ok {
            return r.done();
        }
        let failed = format!(
            "docker run {} failed (step {}): {}",
            replacement.new_image,
            r.result.steps.len(),
            report.error.as_deref().unwrap_or("unknown error")
        );
        tracing::warn!(container = %self.container, "{failed}; starting {} again", replacement.old_image);
        let error = match self.restore(replacement.restore, &mut r).await {
            Ok(()) => format!(
                "{failed}; the previous container ({}) was started again",
                replacement.old_image
            ),
            Err(why) => {
                let e = format!(
                    "{failed}; starting the previous container ({}) again also failed (step {}): {why}; container {} is not running: the service is down",
                    replacement.old_image,
                    r.result.steps.len(),
                    self.container
                );
                tracing::error!("{e}");
                e
            }
        };
        r.fail(error)
    }

    /// `docker rm -f C` (whatever the failed run left; its failure, e.g. no
    /// such container, does not stop the restore), then `docker run` of the
    /// old image; both recorded, each ending by [`restore_deadline`].
    async fn restore(&self, run: Vec<String>, r: &mut Runner) -> Result<(), RestoreFailed> {
        let own = Instant::now() + RESTORE_TIMEOUT;
        let remove = self.docker(&["rm", "-f", &self.container]);
        let (until, limit) = restore_deadline(&r.budget, own);
        let report = run_step_in(&remove, until, limit, None).await;
        r.result.steps.push(report);
        let (until, limit) = restore_deadline(&r.budget, own);
        let report = run_step_in(&run, until, limit, None).await;
        r.result.steps.push(report.clone());
        match report.ok {
            true => Ok(()),
            false => Err(RestoreFailed(
                report.error.unwrap_or_else(|| "unknown error".into()),
            )),
        }
    }
}

/// Why a docker rollback is refused (nothing was changed) or stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DockerError {
    /// `docker inspect` of the container failed.
    #[error("container {container} cannot be inspected: {error}; nothing was changed")]
    NotInspectable {
        /// The container.
        container: String,
        /// Why, with docker's last stderr line.
        error: String,
    },
    /// Nobody named the version and no local tag sorts before the live one.
    #[error(
        "the version to go back to is unknown and no local tag of {image} sorts before {live}; \
         nothing was changed"
    )]
    NoEarlierTag {
        /// The image (without tag).
        image: String,
        /// The live tag.
        live: String,
    },
    /// The version to go back to is the one running.
    #[error("container {container} already runs {image}; nothing to roll back to")]
    AlreadyRuns {
        /// The container.
        container: String,
        /// `image:tag` it runs.
        image: String,
    },
    /// A `run_args` template has a variable without a value.
    #[error("run_args cannot be used: {0}; nothing was changed")]
    RunArgs(TemplateError),
    /// A docker step failed.
    #[error(transparent)]
    Step(#[from] StepError),
}

/// The restore's `docker run` failed: why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
struct RestoreFailed(String);

/// Deadline of a restore step starting now: the later of the plan deadline
/// and the restore's own (`restore`, [`RESTORE_TIMEOUT`] after the failure),
/// cut short by the step timeout; with the name of the limit.
fn restore_deadline(budget: &Budget, restore: Instant) -> (Instant, &'static str) {
    let (end, name) = if restore > budget.deadline {
        (restore, "restore timeout")
    } else {
        (budget.deadline, "plan deadline")
    };
    match budget.step_timeout {
        Some(t) if Instant::now() + t < end => (Instant::now() + t, "step timeout"),
        _ => (end, name),
    }
}

/// `registry:5000/app:1.2` -> (`registry:5000/app`, `Some("1.2")`); a digest
/// (`@sha256:...`) is not a tag.
pub fn split_tag(image: &str) -> (&str, Option<&str>) {
    let image = image.split('@').next().unwrap_or(image);
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    match image[name_start..].rfind(':') {
        Some(i) => (&image[..name_start + i], Some(&image[name_start + i + 1..])),
        None => (image, None),
    }
}

/// The executor's identity ([`Kind::identity`]): the container (its name
/// is unique on the host).
pub fn identity(container: &str) -> Identity {
    Identity::same(format!("docker container {container}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_deadline_is_the_later_limit_cut_by_the_step_timeout() {
        let now = Instant::now();
        let own = now + RESTORE_TIMEOUT;
        let past = Budget {
            deadline: now - Duration::from_secs(1),
            step_timeout: None,
        };
        assert_eq!(restore_deadline(&past, own), (own, "restore timeout"));
        let later = Budget {
            deadline: now + Duration::from_secs(300),
            step_timeout: None,
        };
        assert_eq!(
            restore_deadline(&later, own),
            (later.deadline, "plan deadline")
        );
        let short = Budget {
            step_timeout: Some(Duration::from_secs(5)),
            ..past
        };
        assert_eq!(restore_deadline(&short, own).1, "step timeout");
    }

    #[test]
    fn split_tag_table() {
        assert_eq!(split_tag("app:1.2"), ("app", Some("1.2")));
        assert_eq!(
            split_tag("registry:5000/app:1.2"),
            ("registry:5000/app", Some("1.2"))
        );
        assert_eq!(split_tag("registry:5000/app"), ("registry:5000/app", None));
        assert_eq!(split_tag("app@sha256:abc"), ("app", None));
        assert_eq!(split_tag("app"), ("app", None));
    }
}
