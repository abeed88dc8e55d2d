//! `kind = "git"`: record the commit the working tree is at, refuse a tag
//! that does not exist, check the tag out, run the build steps in the
//! repository, then restart.
//!
//! Without a known `{to_version}` the previous tag is used: the greatest tag
//! that sorts before the live version (`git describe --tags`), so a tree at
//! `v1.0.1` or at `v1.0.1-3-gabc` goes back to `v1.0.0` or `v1.0.1`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tokio::time::Instant;

use super::kind::{
    optional_argv, probe, required_path, ExecError, Identity, Kind, VersionCheckError,
};
use crate::config::cx::Cx;
use crate::config::raw::step::join;
use crate::config::version_source::VersionSource;
use crate::report::ExecResult;
use crate::run::plan::{first_line, subst, Act, Budget, Runner, StepError};
use crate::run::process::Context;
use crate::run::template::Vars;
use crate::version::order::previous;

/// The keys of a `git` rollback, as written.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    /// Repository directory.
    pub repo: Option<String>,
    /// Build steps.
    pub build: Option<Vec<Vec<String>>>,
    /// argv template run last.
    pub restart: Option<Vec<String>>,
}

/// A `git` rollback: check out the previous tag in a repository, build,
/// restart.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The working tree the service runs from.
    pub repo: PathBuf,
    /// Build steps run in `repo` after the checkout.
    pub build: Vec<Vec<String>>,
    /// Run last (argv template).
    pub restart: Option<Vec<String>>,
}

impl Kind for Config {
    const NAME: &'static str = "git";
    const KEYS: &'static [&'static str] = &["repo", "build", "restart"];
    const VERSIONS_ARE_NAMES: bool = true;
    type Raw = Raw;

    fn build(cx: &mut Cx, p: &str, raw: Raw) -> Option<Config> {
        let repo = required_path(cx, p, "repo", raw.repo.as_deref());
        let build = cx.argv_list(&join(p, "build"), raw.build.as_deref().unwrap_or_default());
        let restart = optional_argv(cx, p, "restart", raw.restart.as_deref());
        Some(Config {
            repo: repo?,
            build: build?,
            restart: restart?,
        })
    }

    /// It checks out `{to_version}`.
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

    /// The tag (or tag-distance-commit) the working tree is at.
    fn version_source(&self) -> Option<VersionSource> {
        Some(VersionSource::Command(vec![
            "git".into(),
            "-C".into(),
            self.repo.display().to_string(),
            "describe".into(),
            "--tags".into(),
            "--always".into(),
        ]))
    }

    fn identity(
        &self,
        _target: &str,
        _cwd: Option<&Path>,
        _env: &BTreeMap<String, String>,
    ) -> Identity {
        identity(&self.repo)
    }

    fn programs(&self) -> Vec<String> {
        std::iter::once("git".to_string())
            .chain(self.build.iter().filter_map(|a| a.first().cloned()))
            .chain(self.restart.iter().filter_map(|a| a.first().cloned()))
            .collect()
    }

    async fn prepare(&self, vars: &Vars, r: &mut Runner) -> Result<Vec<Act>, ExecError> {
        self.acts(vars, r).await.map_err(ExecError::refused)
    }

    /// Check out, build, restart.
    async fn run(&self, _context: &Context, vars: &Vars, budget: Budget) -> ExecResult {
        let mut r = Runner::new(budget, vars);
        let acts = self.acts(vars, &mut r).await;
        r.finish(acts).await
    }

    /// `git rev-parse --verify V^{commit}` in `repo`.
    async fn check_version(
        &self,
        version: &str,
        deadline: Instant,
    ) -> Result<(), VersionCheckError> {
        let argv = vec![
            "git".to_string(),
            "-C".to_string(),
            self.repo.display().to_string(),
            "rev-parse".to_string(),
            "--verify".to_string(),
            "--quiet".to_string(),
            format!("{version}^{{commit}}"),
        ];
        if probe(argv, deadline).await.ok {
            Ok(())
        } else {
            Err(VersionCheckError::unknown(
                version,
                format!("no tag or commit of that name in {}", self.repo.display()),
            ))
        }
    }

    fn go_to(&mut self, version: &str) -> String {
        version.to_string()
    }
}

/// Why a git rollback is refused (nothing was changed) or stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GitError {
    /// No tag sorts before the live version.
    #[error("no tag in {} sorts before {live}; nothing to roll back to", repo.display())]
    NoEarlierTag {
        /// The working tree.
        repo: std::path::PathBuf,
        /// The live version.
        live: String,
    },
    /// The tag to go back to does not exist.
    #[error(
        "tag {tag:?} does not exist in {}; nothing was changed (HEAD stays at {head})",
        repo.display()
    )]
    NoSuchTag {
        /// The tag.
        tag: String,
        /// The working tree.
        repo: std::path::PathBuf,
        /// The commit the tree stays at.
        head: String,
    },
    /// A git, build or restart step failed, or its template is incomplete.
    #[error(transparent)]
    Step(#[from] StepError),
}

impl Config {
    fn git(&self, args: &[&str]) -> Vec<String> {
        let mut argv = vec![
            "git".to_string(),
            "-C".to_string(),
            self.repo.display().to_string(),
        ];
        argv.extend(args.iter().map(|s| s.to_string()));
        argv
    }

    /// Read HEAD, choose and check the tag; returns checkout, build, restart.
    async fn acts(&self, vars: &Vars, r: &mut Runner) -> Result<Vec<Act>, GitError> {
        let left = first_line(&r.run(self.git(&["rev-parse", "HEAD"]), None).await?);
        let live = match &vars.from_version {
            Some(v) => v.clone(),
            None => first_line(
                &r.run(self.git(&["describe", "--tags", "--always"]), None)
                    .await?,
            ),
        };
        r.result.from_version = Some(live.clone());
        let tag = match &vars.to_version {
            Some(t) => t.clone(),
            None => {
                let out = r.run(self.git(&["tag", "--list"]), None).await?;
                let tags = out.lines().map(str::trim).filter(|t| !t.is_empty());
                previous(tags, &live)
                    .map(str::to_string)
                    .ok_or_else(|| GitError::NoEarlierTag {
                        repo: self.repo.to_path_buf(),
                        live: live.clone(),
                    })?
            }
        };
        let verify = r
            .probe(
                self.git(&[
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    &format!("refs/tags/{tag}^{{commit}}"),
                ]),
                None,
            )
            .await;
        if !verify.ok {
            return Err(GitError::NoSuchTag {
                tag,
                repo: self.repo.to_path_buf(),
                head: left,
            });
        }
        let to_commit = first_line(&verify.stdout);
        tracing::info!(repo = %self.repo.display(), from = %live, %left, to = %tag, %to_commit, "git rollback chosen");
        r.result.to_version = Some(tag.clone());

        let found = Vars {
            from_version: Some(live),
            to_version: Some(tag.clone()),
            ..vars.clone()
        };
        crate::run::process::found_vars(&found);
        let cwd = Some(self.repo.to_path_buf());
        let mut acts = vec![Act::run(self.git(&[
            "checkout",
            "--quiet",
            &format!("refs/tags/{tag}"),
        ]))];
        for step in &self.build {
            acts.push(Act::Run {
                argv: subst(step, &found, "build step")?,
                cwd: cwd.clone(),
            });
        }
        if let Some(restart) = &self.restart {
            acts.push(Act::Run {
                argv: subst(restart, &found, "restart")?,
                cwd,
            });
        }
        Ok(acts)
    }
}

/// The executor's identity ([`Kind::identity`]): the working tree.
pub fn identity(repo: &Path) -> Identity {
    let path: PathBuf = repo.components().collect();
    Identity::same(format!("git {}", path.display()))
}
