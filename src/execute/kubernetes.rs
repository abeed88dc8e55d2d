//! `kind = "kubernetes"`: read `kubectl rollout history` (the revision left
//! and the one to go to), `kubectl rollout undo deployment/D -n NS
//! --to-revision=N`, then wait with `kubectl rollout status ... --timeout=`.

use std::collections::BTreeMap;
use std::path::Path;

use tokio::time::Instant;

use super::kind::{
    optional_text, probe, program, required_text, ExecError, Identity, Kind, VersionCheckError,
};
use crate::config::cx::Cx;
use crate::config::raw::step::join;
use crate::report::ExecResult;
use crate::run::plan::{Act, Budget, Runner, StepError};
use crate::run::process::Context;
use crate::run::template::Vars;

/// The keys of a `kubernetes` rollback, as written.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    /// Deployment name.
    pub deployment: Option<String>,
    /// Namespace.
    pub namespace: Option<String>,
    /// kubectl context.
    pub context: Option<String>,
    /// Revision to roll back to.
    pub to_revision: Option<i64>,
    /// Path of kubectl.
    pub kubectl: Option<String>,
}

/// A `kubernetes` rollback: `kubectl rollout undo` of a deployment, then
/// `rollout status`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Deployment name (without `deployment/`).
    pub deployment: String,
    /// Namespace of the deployment.
    pub namespace: String,
    /// kubectl context; `None` uses the current one.
    pub context: Option<String>,
    /// Revision to go back to; `None` is the one before the live one.
    pub to_revision: Option<u64>,
    /// kubectl program (default `kubectl`, looked up on PATH).
    pub kubectl: String,
}

impl Kind for Config {
    const NAME: &'static str = "kubernetes";
    const KEYS: &'static [&'static str] = &[
        "deployment",
        "namespace",
        "context",
        "to_revision",
        "kubectl",
    ];
    /// Its versions are revision numbers, also written `revision N`; they
    /// are parsed in [`Kind::check_version`].
    const VERSIONS_ARE_NAMES: bool = false;
    type Raw = Raw;

    fn build(cx: &mut Cx, p: &str, raw: Raw) -> Option<Config> {
        let deployment = required_text(cx, p, "deployment", raw.deployment.as_deref());
        let namespace = required_text(cx, p, "namespace", raw.namespace.as_deref());
        let context = optional_text(cx, p, "context", raw.context.as_deref());
        let to_revision = match raw.to_revision {
            None => Some(None),
            Some(n) if n >= 1 => Some(Some(n as u64)),
            Some(n) => {
                cx.err(
                    join(p, "to_revision"),
                    format!("to_revision = {n} is not a revision (revisions start at 1)"),
                );
                None
            }
        };
        let kubectl = program(cx, p, "kubectl", raw.kubectl.as_deref());
        Some(Config {
            deployment: deployment?,
            namespace: namespace?,
            context: context?,
            to_revision: to_revision?,
            kubectl: kubectl?,
        })
    }

    fn uses_var(&self, _var: &str) -> Vec<String> {
        Vec::new()
    }

    /// `rollout undo` to the previous revision.
    fn finds_own_version(&self) -> bool {
        true
    }

    fn identity(
        &self,
        _target: &str,
        _cwd: Option<&Path>,
        _env: &BTreeMap<String, String>,
    ) -> Identity {
        identity(&self.deployment, &self.namespace, self.context.as_deref())
    }

    fn programs(&self) -> Vec<String> {
        vec![self.kubectl.clone()]
    }

    async fn prepare(&self, _vars: &Vars, r: &mut Runner) -> Result<Vec<Act>, ExecError> {
        self.acts(r).await.map_err(ExecError::refused)
    }

    async fn run(&self, _context: &Context, vars: &Vars, budget: Budget) -> ExecResult {
        let mut r = Runner::new(budget, vars);
        let acts = self.acts(&mut r).await;
        r.finish(acts).await
    }

    /// A revision listed by `kubectl rollout history`.
    async fn check_version(
        &self,
        version: &str,
        deadline: Instant,
    ) -> Result<(), VersionCheckError> {
        let Some(n) = parse_revision(version) else {
            return Err(VersionCheckError::unknown(
                version,
                "kubernetes versions are revision numbers (see kubectl rollout history)",
            ));
        };
        let mut argv = vec![
            self.kubectl.clone(),
            "rollout".to_string(),
            "history".to_string(),
            format!("deployment/{}", self.deployment),
            "-n".to_string(),
            self.namespace.clone(),
        ];
        if let Some(c) = &self.context {
            argv.extend(["--context".to_string(), c.clone()]);
        }
        let report = probe(argv, deadline).await;
        if !report.ok {
            return Err(VersionCheckError::Refused(format!(
                "cannot check version {version:?}: kubectl rollout history failed: {}",
                report.error.unwrap_or_default()
            )));
        }
        if parse_history(&report.stdout).contains(&n) {
            Ok(())
        } else {
            Err(VersionCheckError::unknown(
                version,
                format!(
                    "revision {n} is not in the rollout history of deployment/{}",
                    self.deployment
                ),
            ))
        }
    }

    /// `--to-revision=V`; `revision 3` is written `3` from here on (a
    /// version name).
    fn go_to(&mut self, version: &str) -> String {
        self.to_revision = parse_revision(version);
        match self.to_revision {
            Some(n) => n.to_string(),
            None => version.to_string(),
        }
    }
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

impl Config {
    /// `kubectl ARGS... deployment/D -n NS [--context C]`.
    fn kubectl(&self, verb: &[&str], extra: &[String]) -> Vec<String> {
        let mut argv = vec![self.kubectl.to_string()];
        argv.extend(verb.iter().map(|s| s.to_string()));
        argv.push(format!("deployment/{}", self.deployment));
        argv.extend(["-n".to_string(), self.namespace.to_string()]);
        argv.extend(extra.iter().cloned());
        if let Some(context) = &self.context {
            argv.extend(["--context".to_string(), context.to_string()]);
        }
        argv
    }

    /// Read the history and decide; returns the acts that roll back.
    async fn acts(&self, r: &mut Runner) -> Result<Vec<Act>, KubernetesError> {
        let history = r
            .run(self.kubectl(&["rollout", "history"], &[]), None)
            .await?;
        let revisions = parse_history(&history);
        let name = format!(
            "deployment/{} in namespace {}",
            self.deployment, self.namespace
        );
        let Some(&live) = revisions.last() else {
            return Err(KubernetesError::NoRevisions { name });
        };
        let listed = revisions
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let to = match self.to_revision {
            Some(n) if n == live => return Err(KubernetesError::ToLive { n, name }),
            Some(n) if !revisions.contains(&n) => {
                return Err(KubernetesError::NotInHistory { n, name, listed })
            }
            Some(n) => n,
            None => match revisions.iter().rev().nth(1) {
                Some(&n) => n,
                None => return Err(KubernetesError::OnlyOne { name, live }),
            },
        };
        tracing::info!(deployment = %self.deployment, namespace = %self.namespace, from = live, to, "kubernetes rollback chosen");
        // Revision numbers: names of the version charset, so that `after`
        // and `on_failure` steps can use them as `{from_version}` and
        // `{to_version}` (`trigger --to-version 2` names one the same way).
        if r.result.from_version.is_none() {
            r.result.from_version = Some(live.to_string());
        }
        if r.result.to_version.is_none() {
            r.result.to_version = Some(to.to_string());
        }
        Ok(vec![
            Act::run(self.kubectl(&["rollout", "undo"], &[format!("--to-revision={to}")])),
            Act::RunWithTimeout {
                argv: self.kubectl(&["rollout", "status"], &[]),
            },
        ])
    }
}

/// Why a kubernetes rollback is refused (nothing was changed) or stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KubernetesError {
    /// The history is empty.
    #[error("kubectl rollout history lists no revisions for {name}; nothing was changed")]
    NoRevisions {
        /// `deployment/D in namespace NS`.
        name: String,
    },
    /// `to_revision` is the live one.
    #[error("to_revision {n} is the live revision of {name}; nothing to roll back to")]
    ToLive {
        /// The revision.
        n: u64,
        /// `deployment/D in namespace NS`.
        name: String,
    },
    /// `to_revision` is not in the history.
    #[error(
        "revision {n} is not in the rollout history of {name} (revisions {listed}); nothing was \
         changed"
    )]
    NotInHistory {
        /// The revision.
        n: u64,
        /// `deployment/D in namespace NS`.
        name: String,
        /// The revisions listed.
        listed: String,
    },
    /// Only the live revision exists.
    #[error("{name} has only revision {live}: nothing to roll back to")]
    OnlyOne {
        /// `deployment/D in namespace NS`.
        name: String,
        /// The live revision.
        live: u64,
    },
    /// A kubectl step failed.
    #[error(transparent)]
    Step(#[from] StepError),
}

/// Revision numbers in `kubectl rollout history` output, ascending. Lines
/// that do not start with a number (the resource name, the header) are
/// skipped.
pub fn parse_history(text: &str) -> Vec<u64> {
    let mut revisions: Vec<u64> = text
        .lines()
        .filter_map(|line| line.split_whitespace().next()?.parse().ok())
        .collect();
    revisions.sort_unstable();
    revisions.dedup();
    revisions
}

/// The executor's identity ([`Kind::identity`]): the deployment in its
/// namespace and kubectl context.
pub fn identity(deployment: &str, namespace: &str, context: Option<&str>) -> Identity {
    Identity::same(format!(
        "kubernetes deployment/{deployment} -n {namespace}{}",
        context
            .map(|c| format!(" --context {c}"))
            .unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_table() {
        let text = "deployment.apps/web \nREVISION  CHANGE-CAUSE\n1         <none>\n3         kubectl set image deployment/web web=web:1.2\n2         <none>\n\n";
        assert_eq!(parse_history(text), vec![1, 2, 3]);
        assert!(parse_history("").is_empty());
        assert!(parse_history("error: not found").is_empty());
    }
}
