//! `kind = "blue_green"`: read the service's live selector, check that the
//! pods of the other color are ready, and patch the selector over to them.
//! With no ready standby pod it refuses: switching would take the service
//! down entirely.

use std::collections::BTreeMap;

use std::path::Path;

use tokio::time::Instant;

use super::kind::{
    optional_text, program, required_text, ExecError, Identity, Kind, VersionCheckError,
};
use crate::config::cx::Cx;
use crate::config::raw::step::join;
use crate::report::ExecResult;
use crate::run::plan::{first_line, Act, Budget, Runner, StepError};
use crate::run::process::Context;
use crate::run::template::Vars;

/// jsonpath printing one line per pod: name, a tab, its Ready condition.
pub const PODS_JSONPATH: &str = r#"jsonpath={range .items[*]}{.metadata.name}{"\t"}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#;

/// The keys of a `blue_green` rollback, as written.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    /// The service whose selector flips.
    pub service: Option<String>,
    /// Namespace.
    pub namespace: Option<String>,
    /// kubectl context.
    pub context: Option<String>,
    /// Selector key.
    pub selector_key: Option<String>,
    /// The two colors.
    pub colors: Option<Vec<String>>,
    /// Path of kubectl.
    pub kubectl: Option<String>,
}

/// A `blue_green` rollback: flip a service's selector to the color that is
/// not live.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Service whose selector flips.
    pub service: String,
    /// Namespace of the service and its pods.
    pub namespace: String,
    /// kubectl context; `None` uses the current one.
    pub context: Option<String>,
    /// Selector key that carries the color (default `version`).
    pub selector_key: String,
    /// The two colors (default `["blue", "green"]`).
    pub colors: [String; 2],
    /// kubectl program (default `kubectl`).
    pub kubectl: String,
}

impl Kind for Config {
    const NAME: &'static str = "blue_green";
    const KEYS: &'static [&'static str] = &[
        "service",
        "namespace",
        "context",
        "selector_key",
        "colors",
        "kubectl",
    ];
    const VERSIONS_ARE_NAMES: bool = true;
    type Raw = Raw;

    fn build(cx: &mut Cx, p: &str, raw: Raw) -> Option<Config> {
        let service = required_text(cx, p, "service", raw.service.as_deref());
        let namespace = required_text(cx, p, "namespace", raw.namespace.as_deref());
        let context = optional_text(cx, p, "context", raw.context.as_deref());
        let selector_key = match raw.selector_key.as_deref() {
            None => Some("version".to_string()),
            Some(k) if !k.trim().is_empty() && !k.contains(['=', ',', ' ']) => Some(k.to_string()),
            Some(k) => {
                cx.err(
                    join(p, "selector_key"),
                    format!("selector_key {k:?} is not a label key"),
                );
                None
            }
        };
        let colors = match raw.colors.as_deref() {
            None => Some(["blue".to_string(), "green".to_string()]),
            Some([a, b]) if !a.trim().is_empty() && !b.trim().is_empty() && a != b => {
                Some([a.clone(), b.clone()])
            }
            Some(other) => {
                cx.err(
                    join(p, "colors"),
                    format!("colors = {other:?} must be two different non-empty names, e.g. [\"blue\", \"green\"]"),
                );
                None
            }
        };
        let kubectl = program(cx, p, "kubectl", raw.kubectl.as_deref());
        Some(Config {
            service: service?,
            namespace: namespace?,
            context: context?,
            selector_key: selector_key?,
            colors: colors?,
            kubectl: kubectl?,
        })
    }

    fn uses_var(&self, _var: &str) -> Vec<String> {
        Vec::new()
    }

    /// The other color.
    fn finds_own_version(&self) -> bool {
        true
    }

    fn identity(
        &self,
        _target: &str,
        _cwd: Option<&Path>,
        _env: &BTreeMap<String, String>,
    ) -> Identity {
        identity(&self.service, &self.namespace, self.context.as_deref())
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

    /// Cannot choose: it flips to the other color.
    async fn check_version(
        &self,
        version: &str,
        _deadline: Instant,
    ) -> Result<(), VersionCheckError> {
        Err(VersionCheckError::Refused(format!(
            "version {version:?} cannot be chosen: a blue_green rollback flips the service to the \
             color that is not live; leave out --to-version"
        )))
    }

    fn go_to(&mut self, version: &str) -> String {
        version.to_string()
    }
}

impl Config {
    /// `kubectl ARGS... -n NS [--context C]`.
    fn kubectl(&self, args: &[&str]) -> Vec<String> {
        let mut argv = vec![self.kubectl.to_string()];
        argv.extend(args.iter().map(|s| s.to_string()));
        argv.extend(["-n".to_string(), self.namespace.to_string()]);
        if let Some(context) = &self.context {
            argv.extend(["--context".to_string(), context.to_string()]);
        }
        argv
    }

    /// Read the live color and the standby's readiness; returns the patch.
    async fn acts(&self, r: &mut Runner) -> Result<Vec<Act>, BlueGreenError> {
        let out = r
            .run(
                self.kubectl(&[
                    "get",
                    "service",
                    &self.service,
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
        let key = self.selector_key.as_str();
        let Some(live) = selector.get(key).cloned() else {
            return Err(BlueGreenError::NoKey {
                service: self.service.to_string(),
                key: key.to_string(),
                selector: render(&selector),
            });
        };
        let [a, b] = &self.colors;
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
            &self.service,
            "--type=merge",
            "-p",
            &patch,
        ]))])
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

/// The executor's identity ([`Kind::identity`]): the service in its
/// namespace and kubectl context.
pub fn identity(service: &str, namespace: &str, context: Option<&str>) -> Identity {
    Identity::same(format!(
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
