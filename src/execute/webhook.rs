//! `kind = "webhook"`: POST a JSON body to a CI/CD endpoint that performs the
//! rollback. Success is a 2xx answer within the step's time. The bearer
//! token is read from `token_file` at the moment of the call and never
//! appears in a record.

use std::path::Path;

use super::ExecResult;
pub use crate::run::http::{post, Request};
use crate::run::plan::{Act, Budget, Runner};
use crate::run::template::{substitute_json, TemplateError, Vars};

/// Why a webhook rollback is refused before anything was sent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WebhookError {
    /// The body template has a variable without a value.
    #[error("webhook body cannot be built: {0}; nothing was sent")]
    Body(TemplateError),
}

/// The keys of a `webhook` rollback.
#[derive(Debug, Clone, Copy)]
pub struct Webhook<'a> {
    /// Endpoint.
    pub url: &'a url::Url,
    /// Token file.
    pub token_file: Option<&'a Path>,
    /// Body template, or `None` for the default body.
    pub body: Option<&'a str>,
}

impl Webhook<'_> {
    /// Build the request; a missing variable stops before anything is sent.
    pub fn prepare(&self, vars: &Vars) -> Result<Vec<Act>, WebhookError> {
        let body = match self.body {
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
            token_file: self.token_file.map(Path::to_path_buf),
            body,
        })])
    }

    /// Call the endpoint.
    pub async fn run(&self, vars: &Vars, budget: Budget) -> ExecResult {
        let r = Runner::new(budget, vars);
        let acts = self.prepare(vars);
        r.finish(acts).await
    }
}

/// The executor's identity ([`super::identity`]): the endpoint. Shown
/// without credentials and query values (they may hold a token).
pub fn identity(url: &url::Url) -> super::Identity {
    super::Identity {
        key: format!("webhook {url}"),
        shown: format!("webhook {}", crate::util::redact_url(url)),
    }
}

/// A version name, or `None` for none or an unknown version.
fn known(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|v| crate::version::name::is_valid(v))
}
