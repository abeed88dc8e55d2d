//! `kind = "webhook"`: POST a JSON body to a CI/CD endpoint that performs the
//! rollback. Success is a 2xx answer within the step's time. The bearer
//! token is read from `token_file` at the moment of the call and never
//! appears in a record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tokio::time::Instant;

use super::kind::{ExecError, Identity, Kind, VersionCheckError};
use crate::config::cx::{template_names, Cx, LEASE_WITHOUT_CLUSTER, TEMPLATE_VARIABLES};
use crate::config::raw::step::join;
use crate::report::ExecResult;
pub use crate::run::http::{post, Request};
use crate::run::plan::{Act, Budget, Runner};
use crate::run::process::Context;
use crate::run::template::{substitute_json, TemplateError, Vars};

/// The keys of a `webhook` rollback, as written.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    /// CI/CD endpoint.
    pub url: Option<String>,
    /// File holding the token.
    pub token_file: Option<String>,
    /// JSON body template (a string, or a table written as JSON).
    pub body: Option<toml::Value>,
}

/// A `webhook` rollback: POST to a CI/CD endpoint that performs the
/// rollback.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Endpoint.
    pub url: url::Url,
    /// File holding the bearer token, read at each call.
    pub token_file: Option<PathBuf>,
    /// JSON body template; variables are substituted JSON-escaped.
    /// `None`: target, incident and versions as a JSON object.
    pub body: Option<String>,
}

impl Kind for Config {
    const NAME: &'static str = "webhook";
    const KEYS: &'static [&'static str] = &["url", "token_file", "body"];
    const VERSIONS_ARE_NAMES: bool = true;
    type Raw = Raw;

    fn build(cx: &mut Cx, p: &str, raw: Raw) -> Option<Config> {
        let url = cx
            .required(p, "url", raw.url.as_deref())
            .and_then(|u| cx.http_url(&join(p, "url"), u));
        let token_file = match raw.token_file.as_deref() {
            None => Some(None),
            Some(f) => cx.absolute(&join(p, "token_file"), f).map(Some),
        };
        let body = match &raw.body {
            None => Some(None),
            Some(value) => body(cx, &join(p, "body"), value).map(Some),
        };
        Some(Config {
            url: url?,
            token_file: token_file?,
            body: body?,
        })
    }

    /// The default body carries the versions when known; only an explicit
    /// template needs them.
    fn uses_var(&self, var: &str) -> Vec<String> {
        match &self.body {
            Some(b) if super::kind::uses(b, var) => vec!["body".to_string()],
            _ => Vec::new(),
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
        identity(&self.url)
    }

    fn secret_files(&self) -> Vec<(&'static str, PathBuf)> {
        self.token_file
            .iter()
            .map(|p| ("token_file", p.clone()))
            .collect()
    }

    fn programs(&self) -> Vec<String> {
        Vec::new()
    }

    async fn prepare(&self, vars: &Vars, _r: &mut Runner) -> Result<Vec<Act>, ExecError> {
        self.acts(vars).map_err(ExecError::refused)
    }

    /// Call the endpoint.
    async fn run(&self, _context: &Context, vars: &Vars, budget: Budget) -> ExecResult {
        let r = Runner::new(budget, vars);
        let acts = self.acts(vars);
        r.finish(acts).await
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

/// The body template as JSON text: a string as written, or a table turned
/// into JSON. It must be valid JSON once each variable is replaced by a
/// string's content, so variables belong inside JSON strings.
pub fn body(cx: &mut Cx, path: &str, value: &toml::Value) -> Option<String> {
    let text = match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Table(_) => match serde_json::to_string(value) {
            Ok(s) => s,
            Err(e) => {
                cx.err(path, format!("cannot turn the body table into JSON: {e}"));
                return None;
            }
        },
        other => {
            cx.err(
                path,
                format!(
                    "body must be a JSON string or a table, found {}",
                    other.type_str()
                ),
            );
            return None;
        }
    };
    let mut ok = true;
    let mut probe = text.clone();
    for name in template_names(&text) {
        if name == "lease" && !cx.has_cluster {
            cx.err(path, LEASE_WITHOUT_CLUSTER);
            ok = false;
        } else if TEMPLATE_VARIABLES.contains(&name) {
            probe = probe.replace(&format!("{{{name}}}"), "x");
        } else {
            cx.err(
                path,
                format!(
                    "unknown template variable {{{name}}} in the body; allowed: {{target}}, {{from_version}}, {{to_version}}, {{incident}}, {{lease}}"
                ),
            );
            ok = false;
        }
    }
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&probe) {
        cx.err(
            path,
            format!("body is not valid JSON (variables go inside JSON strings, e.g. {{\"version\": \"{{to_version}}\"}}): {e}"),
        );
        ok = false;
    }
    ok.then_some(text)
}

/// Why a webhook rollback is refused before anything was sent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WebhookError {
    /// The body template has a variable without a value.
    #[error("webhook body cannot be built: {0}; nothing was sent")]
    Body(TemplateError),
}

impl Config {
    /// Build the request; a missing variable stops before anything is sent.
    fn acts(&self, vars: &Vars) -> Result<Vec<Act>, WebhookError> {
        let body = match &self.body {
            Some(template) => substitute_json(template, vars).map_err(WebhookError::Body)?,
            // An unknown version (outside the charset) is `null`, never sent.
            None => serde_json::json!({
                "target": vars.target,
                "incident": vars.incident,
                "from_version": known(&vars.from_version),
                "to_version": known(&vars.to_version),
            })
            .to_string(),
        };
        Ok(vec![Act::Post(Request {
            url: self.url.clone(),
            token_file: self.token_file.clone(),
            body,
        })])
    }
}

/// The executor's identity ([`Kind::identity`]): the endpoint. Shown
/// without credentials and query values (they may hold a token).
pub fn identity(url: &url::Url) -> Identity {
    Identity {
        key: format!("webhook {url}"),
        shown: format!("webhook {}", crate::util::redact_url(url)),
    }
}

/// A version name, or `None` for none or an unknown version.
fn known(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|v| crate::version::name::is_valid(v))
}
