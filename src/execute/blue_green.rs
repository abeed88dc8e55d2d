//! `kind = "blue_green"`: read the service's live selector, check that the
//! pods of the other color are ready, and patch the selector over to them.
//! With no ready standby pod it refuses: switching would take the service
//! down entirely.

use std::collections::BTreeMap;

use super::ExecResult;
use crate::run::plan::{first_line, Act, Budget, Runner, StepError};
use crate::run::template::Vars;

/// jsonpath printing one line per pod: name, a tab, its Ready condition.
pub const PODS_JSONPATH: &str = r#"jsonpath={range .items[*]}{.metadata.name}{"\t"}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#;

/// The keys of a `blue_green` rollback.
#[derive(Debug, Clone, Copy)]
pub struct BlueGreen<'a> {
    /// The service whose selector flips.
    pub service: &'a str,
    /// Its namespace (and its pods').
    pub namespace: &'a str,
    /// kubectl context, if not the current one.
    pub context: Option<&'a str>,
    /// Selector key carrying the color.
    pub selector_key: &'a str,
    /// The two colors.
    pub colors: &'a [String; 2],
    /// kubectl program.
    pub kubectl: &'a str,
}

impl BlueGreen<'_> {
    /// `kubectl ARGS... -n NS [--context C]`.
    fn kubectl(&self, args: &[&str]) -> Vec<String> {
        let mut argv = vec![self.kubectl.to_string()];
        argv.extend(args.iter().map(|s| s.to_string()));
        argv.extend(["-n".to_string(), self.namespace.to_string()]);
        if let Some(context) = self.context {
            argv.extend(["--context".to_string(), context.to_string()]);
        }
        argv
    }

    /// Read the live color and the standby's readiness; returns the patch.
    pub async fn prepare(&self, r: &mut Runner) -> Result<Vec<Act>, BlueGreenError> {
        let out = r
            .run(
                self.kubectl(&[
                    "get",
                    "service",
                    self.service,
                    "-o",
                    "jsonpath={.spec.selector}",
                ]),
                None,
            )
            .await?;
        let text = first_line(&out);
        let selector: BTreeMap<String, String> =
            serde_json::from_str(&text).map_err(|e| BlueGreenError::Selector {
                service: self.service.to_string(),
                text: text.clone(),
                error: e.to_string(),
            })?;
        let key = self.selector_key;
        let Some(live) = selector.get(key).cloned() else {
            return Err(BlueGreenError::NoKey {
                service: self.service.to_string(),
                key: key.to_string(),
                selector: render(&selector),
            });
        };
        let [a, b] = self.colors;
        let standby = if &live == a {
            b.clone()
        } else if &live == b {
            a.clone()
        } else {
            return Err(BlueGreenError::UnknownColor {
                service: self.service.to_string(),
                key: key.to_string(),
                live,
                colors: [a.clone(), b.clone()],
            });
        };

        let mut pods_selector = selector.clone();
        pods_selector.insert(key.to_string(), standby.clone());
        let pods_selector = render(&pods_selector);
        let out = r
            .run(
                self.kubectl(&["get", "pods", "-l", &pods_selector, "-o", PODS_JSONPATH]),
                None,
            )
            .await?;
        let (ready, total) = count_ready(&out);
        if ready == 0 {
            return Err(BlueGreenError::StandbyNotReady {
                service: self.service.to_string(),
                standby,
                pods: pods_selector,
                total,
                live,
            });
        }
        tracing::info!(service = %self.service, from = %live, to = %standby, ready, total, "blue/green switch chosen");
        if r.result.from_version.is_none() {
            r.result.from_version = Some(live);
        }
        if r.result.to_version.is_none() {
            r.result.to_version = Some(standby.clone());
        }
        let patch = serde_json::json!({ "spec": { "selector": { key: standby } } }).to_string();
        Ok(vec![Act::run(self.kubectl(&[
            "patch",
            "service",
            self.service,
            "--type=merge",
            "-p",
            &patch,
        ]))])
    }

    /// Switch.
    pub async fn run(&self, vars: &Vars, budget: Budget) -> ExecResult {
        let mut r = Runner::new(budget, vars);
        let acts = self.prepare(&mut r).await;
        r.finish(acts).await
    }
}

/// `k=v,k=v` in key order, as `kubectl -l` takes it.
/// Why a blue/green switch is refused (nothing was changed) or stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BlueGreenError {
    /// The service's selector is not a JSON map.
    #[error("service {service} answered a selector that is not a JSON map ({text:?}): {error}")]
    Selector {
        /// The service.
        service: String,
        /// What kubectl printed.
        text: String,
        /// The parse error.
        error: String,
    },
    /// The selector lacks `selector_key`.
    #[error(
        "service {service} has no selector key {key:?} (selector {selector}); nothing was changed"
    )]
    NoKey {
        /// The service.
        service: String,
        /// `selector_key`.
        key: String,
        /// The selector found.
        selector: String,
    },
    /// The live color is none of `colors`.
    #[error(
        "service {service} selects {key}={live}, which is neither {} nor {}; nothing was changed",
        colors[0],
        colors[1]
    )]
    UnknownColor {
        /// The service.
        service: String,
        /// `selector_key`.
        key: String,
        /// The color selected now.
        live: String,
        /// `colors`.
        colors: [String; 2],
    },
    /// No pod of the standby color is ready.
    #[error(
        "refusing to switch service {service} to {standby}: no ready pods match {pods} (0 of \
         {total} ready); the service still selects {live}"
    )]
    StandbyNotReady {
        /// The service.
        service: String,
        /// The color it would switch to.
        standby: String,
        /// The pods' selector.
        pods: String,
        /// Pods matching it.
        total: usize,
        /// The color selected now.
        live: String,
    },
    /// A kubectl step failed.
    #[error(transparent)]
    Step(#[from] StepError),
}

fn render(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// (ready, total) from [`PODS_JSONPATH`] output.
pub fn count_ready(text: &str) -> (usize, usize) {
    let pods: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let ready = pods
        .iter()
        .filter(|l| l.split('\t').nth(1).is_some_and(|s| s.trim() == "True"))
        .count();
    (ready, pods.len())
}

/// The executor's identity ([`super::identity`]): the service in its
/// namespace and kubectl context.
pub fn identity(service: &str, namespace: &str, context: Option<&str>) -> super::Identity {
    super::Identity::same(format!(
        "blue_green service/{service} -n {namespace}{}",
        context
            .map(|c| format!(" --context {c}"))
            .unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_table() {
        assert_eq!(count_ready(""), (0, 0));
        assert_eq!(count_ready("a\tTrue\nb\tFalse\n"), (1, 2));
        assert_eq!(count_ready("a\t\nb\tFalse\n"), (0, 2));
        assert_eq!(count_ready("a\tTrue\nb\tTrue\n\n"), (2, 2));
    }
}
