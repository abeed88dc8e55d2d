//! `kind = "kubernetes"`: read `kubectl rollout history` (the revision left
//! and the one to go to), `kubectl rollout undo deployment/D -n NS
//! --to-revision=N`, then wait with `kubectl rollout status ... --timeout=`.

use super::ExecResult;
use crate::run::plan::{Act, Budget, Runner, StepError};
use crate::run::template::Vars;

/// The keys of a `kubernetes` rollback.
#[derive(Debug, Clone, Copy)]
pub struct Kubernetes<'a> {
    /// Deployment name.
    pub deployment: &'a str,
    /// Its namespace.
    pub namespace: &'a str,
    /// kubectl context, if not the current one.
    pub context: Option<&'a str>,
    /// Revision to go to; `None`: the one before the live one.
    pub to_revision: Option<u64>,
    /// kubectl program.
    pub kubectl: &'a str,
}

impl Kubernetes<'_> {
    /// `kubectl ARGS... deployment/D -n NS [--context C]`.
    fn kubectl(&self, verb: &[&str], extra: &[String]) -> Vec<String> {
        let mut argv = vec![self.kubectl.to_string()];
        argv.extend(verb.iter().map(|s| s.to_string()));
        argv.push(format!("deployment/{}", self.deployment));
        argv.extend(["-n".to_string(), self.namespace.to_string()]);
        argv.extend(extra.iter().cloned());
        if let Some(context) = self.context {
            argv.extend(["--context".to_string(), context.to_string()]);
        }
        argv
    }

    /// Read the history and decide; returns the acts that roll back.
    pub async fn prepare(&self, r: &mut Runner) -> Result<Vec<Act>, KubernetesError> {
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

    /// Roll back.
    pub async fn run(&self, vars: &Vars, budget: Budget) -> ExecResult {
        let mut r = Runner::new(budget, vars);
        let acts = self.prepare(&mut r).await;
        r.finish(acts).await
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

/// The executor's identity ([`super::identity`]): the deployment in its
/// namespace and kubectl context.
pub fn identity(deployment: &str, namespace: &str, context: Option<&str>) -> super::Identity {
    super::Identity::same(format!(
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
