//! `kind = "git"`: record the commit the working tree is at, refuse a tag
//! that does not exist, check the tag out, run the build steps in the
//! repository, then restart.
//!
//! Without a known `{to_version}` the previous tag is used: the greatest tag
//! that sorts before the live version (`git describe --tags`), so a tree at
//! `v1.0.1` or at `v1.0.1-3-gabc` goes back to `v1.0.0` or `v1.0.1`.

use std::path::Path;

use super::ExecResult;
use crate::run::plan::{first_line, subst, Act, Budget, Runner, StepError};
use crate::run::template::Vars;
use crate::version::order::previous;

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

/// The keys of a `git` rollback.
#[derive(Debug, Clone, Copy)]
pub struct Git<'a> {
    /// The working tree the service runs from.
    pub repo: &'a Path,
    /// Build steps (templates), run in `repo`.
    pub build: &'a [Vec<String>],
    /// Restart (template), run in `repo`.
    pub restart: Option<&'a [String]>,
}

impl Git<'_> {
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
    pub async fn prepare(&self, vars: &Vars, r: &mut Runner) -> Result<Vec<Act>, GitError> {
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
        for step in self.build {
            acts.push(Act::Run {
                argv: subst(step, &found, "build step")?,
                cwd: cwd.clone(),
            });
        }
        if let Some(restart) = self.restart {
            acts.push(Act::Run {
                argv: subst(restart, &found, "restart")?,
                cwd,
            });
        }
        Ok(acts)
    }

    /// Check out, build, restart.
    pub async fn run(&self, vars: &Vars, budget: Budget) -> ExecResult {
        let mut r = Runner::new(budget, vars);
        let acts = self.prepare(vars, &mut r).await;
        r.finish(acts).await
    }
}

/// The executor's identity ([`super::identity`]): the working tree.
pub fn identity(repo: &Path) -> super::Identity {
    let path: std::path::PathBuf = repo.components().collect();
    super::Identity::same(format!("git {}", path.display()))
}
