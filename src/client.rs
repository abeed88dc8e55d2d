//! The client side of the API commands ([`crate::api::commands`]): finds a
//! running daemon's API through `--api URL` or a config file's `listen` and
//! `api_token_file`, sends a command's request, and prints the command's
//! rendering of the answer (readable tables by default, `--json` for
//! scripts).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::api::commands::Invoke;
pub use crate::api::commands::{ClientError, Verb};

/// Where the API is and the token for mutating routes.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Base URL, e.g. `http://127.0.0.1:9797/`.
    pub base: url::Url,
    /// Bearer token, if known.
    pub token: Option<String>,
    /// The config file it came from, if any (for `report` from the record file).
    pub state_dir: Option<PathBuf>,
}

impl Endpoint {
    /// `--api URL` wins; else `--config FILE` (or the default config if it
    /// exists) gives `listen` and `api_token_file`; else the default address.
    /// `ROLLBACKD_API_TOKEN` overrides the token.
    pub fn resolve(
        api: Option<&str>,
        config: Option<&Path>,
        default_config: &Path,
    ) -> Result<Endpoint, ClientError> {
        let config_path = match (api, config) {
            (_, Some(c)) => Some(c.to_path_buf()),
            (None, None) if default_config.exists() => Some(default_config.to_path_buf()),
            _ => None,
        };
        let config = match &config_path {
            Some(p) => Some(crate::config::load(p).map_err(ClientError::Config)?),
            None => None,
        };
        let base = match (api, &config) {
            (Some(a), _) => {
                let text = if a.ends_with('/') {
                    a.to_string()
                } else {
                    format!("{a}/")
                };
                url::Url::parse(&text).with_context(|| format!("invalid --api URL {a:?}"))?
            }
            (None, Some(c)) => {
                let mut addr = c.daemon.listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                url::Url::parse(&format!("http://{addr}/")).context("invalid listen address")?
            }
            (None, None) => url::Url::parse(&format!(
                "http://{}/",
                crate::config::validate::DEFAULT_LISTEN
            ))
            .context("invalid default address")?,
        };
        let mut token = std::env::var("ROLLBACKD_API_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty());
        if token.is_none() {
            if let Some(path) = config
                .as_ref()
                .and_then(|c| c.daemon.api_token_file.as_ref())
            {
                match crate::api::auth::read_token(path) {
                    Ok(t) => token = Some(t),
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "no API token"),
                }
            }
        }
        Ok(Endpoint {
            base,
            token,
            state_dir: config.map(|c| c.daemon.state_dir),
        })
    }

    fn url(&self, path: &str) -> Result<url::Url, ClientError> {
        Ok(self
            .base
            .join(path)
            .with_context(|| format!("invalid API path {path:?}"))?)
    }

    /// Send a request (`path` relative to the base URL, a JSON body) and
    /// read its JSON answer; an error status is [`ClientError::Api`] with
    /// the answer's `error`.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .context("failed to build the HTTP client")?;
        let url = self.url(path)?;
        let mut req = client.request(method, url.clone());
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() || e.is_timeout() {
                ClientError::Unreachable {
                    url: self.base.to_string(),
                    detail: root_cause(&e),
                }
            } else {
                ClientError::Other(anyhow::anyhow!(
                    "request to {url} failed: {}",
                    root_cause(&e)
                ))
            }
        })?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .with_context(|| format!("failed to read the answer of {url}"))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
            anyhow::anyhow!(
                "{url} answered {status} with something that is not JSON: {}",
                text.chars().take(200).collect::<String>()
            )
        })?;
        if !status.is_success() {
            let message = json["error"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| json.to_string());
            return Err(ClientError::Api {
                status: status.as_u16(),
                message,
            });
        }
        Ok(json)
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Run a command against the daemon; returns what to print on stdout:
/// the answer's JSON with `json`, else the command's own rendering.
pub async fn run(ep: &Endpoint, command: &dyn Invoke, json: bool) -> Result<String, ClientError> {
    if let Some(text) = command.local(ep.state_dir.as_deref())? {
        return Ok(text);
    }
    let req = command.request();
    let answer = ep
        .request(req.method.http(), &req.path, req.body)
        .await
        .map_err(|e| match e {
            ClientError::Api { status, message } => command.refused(status, message),
            e => e,
        })?;
    if json {
        return Ok(serde_json::to_string_pretty(&answer).unwrap_or_default() + "\n");
    }
    Ok(command.print(answer)?)
}
