//! The client commands (`status`, `incidents`, `approve`, `reject`,
//! `trigger`, `pause`, `resume`, `report`): HTTP requests to a running
//! daemon's API, found through `--api URL` or a config file's `listen` and
//! `api_token_file`. Readable tables by default, `--json` for scripts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::api::{EventResponse, StatusResponse};
use crate::decide::Incident;

/// Why a client command failed; the CLI maps each to its exit code.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered at the address (exit 69).
    #[error("rollbackd is not reachable at {url}: {detail} (is the daemon running? point to it with --api URL or --config FILE)")]
    Unreachable {
        /// The API base URL tried.
        url: String,
        /// The connection error.
        detail: String,
    },
    /// The config file is invalid (exit 64).
    #[error("{0}")]
    Config(crate::config::ConfigErrors),
    /// `reload`: the daemon re-read its config file and found it invalid;
    /// it keeps the running one (exit 64, like any invalid config).
    #[error("{0}")]
    ConfigRejected(String),
    /// The daemon answered with an error (exit 1).
    #[error("{status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The `error` of the JSON body.
        message: String,
    },
    /// Anything else (exit 1).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

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

    async fn request(
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

    /// GET a JSON document.
    pub async fn get(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        self.request(reqwest::Method::GET, path, None).await
    }

    /// POST a JSON body.
    pub async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// One client command.
#[derive(Debug, Clone)]
pub enum Verb {
    /// `status`.
    Status,
    /// `incidents [--open]`.
    Incidents {
        /// Only the incidents still under way.
        open: bool,
    },
    /// `approve ID`.
    Approve {
        /// Incident ID.
        id: String,
    },
    /// `reject ID --reason R`.
    Reject {
        /// Incident ID.
        id: String,
        /// Why.
        reason: Option<String>,
    },
    /// `trigger TARGET --reason R`.
    Trigger {
        /// Target name.
        target: String,
        /// Why.
        reason: String,
        /// `--to-version V`.
        to_version: Option<String>,
    },
    /// `pause TARGET [--for D] [--reason R]`.
    Pause {
        /// Target name.
        target: String,
        /// How long (`"2h"`, `"0"` until resumed); `None`: `[daemon] max_pause`.
        for_: Option<String>,
        /// Why.
        reason: Option<String>,
    },
    /// `resume TARGET`.
    Resume {
        /// Target name.
        target: String,
    },
    /// `report ID`.
    Report {
        /// Incident ID.
        id: String,
    },
    /// `reload`: re-read and apply the daemon's config (as SIGHUP does).
    Reload,
}

/// Who the CLI acts as: `$USER (cli)`.
fn who() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "someone".into());
    format!("{user} (cli)")
}

fn segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Run a verb; returns what to print on stdout.
pub async fn run(ep: &Endpoint, verb: Verb, json: bool) -> Result<String, ClientError> {
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    let event = |v: serde_json::Value, what: &str| -> Result<String, ClientError> {
        if json {
            return Ok(pretty(&v));
        }
        let r: EventResponse =
            serde_json::from_value(v).context("unexpected answer from the daemon")?;
        let mut line = format!("{what}: target {} is now {}", r.target, r.phase);
        if let Some(i) = &r.incident {
            line.push_str(&format!(" (incident {})", i.id));
        }
        Ok(line + "\n")
    };
    let body = |reason: Option<String>| serde_json::json!({ "by": who(), "reason": reason });
    match verb {
        Verb::Status => {
            let v = ep.get("v1/status").await?;
            if json {
                return Ok(pretty(&v));
            }
            let s: StatusResponse =
                serde_json::from_value(v).context("unexpected answer from the daemon")?;
            Ok(crate::status::render_targets(&s)?)
        }
        Verb::Incidents { open } => {
            let v = ep
                .get(if open {
                    "v1/incidents?open=true"
                } else {
                    "v1/incidents"
                })
                .await?;
            if json {
                return Ok(pretty(&v));
            }
            let list: Vec<Incident> =
                serde_json::from_value(v).context("unexpected answer from the daemon")?;
            Ok(crate::status::render_incident_list(&list)?)
        }
        Verb::Approve { id } => {
            let v = ep
                .post(
                    &format!("v1/incidents/{}/approve", segment(&id)),
                    body(None),
                )
                .await?;
            event(v, &format!("incident {id} approved"))
        }
        Verb::Reject { id, reason } => {
            let v = ep
                .post(
                    &format!("v1/incidents/{}/reject", segment(&id)),
                    body(reason),
                )
                .await?;
            event(v, &format!("incident {id} rejected"))
        }
        Verb::Trigger {
            target,
            reason,
            to_version,
        } => {
            let mut req = body(Some(reason));
            let to = to_version
                .as_deref()
                .map_or_else(String::new, |v| format!(" to {v}"));
            if let Some(v) = to_version {
                req["to_version"] = serde_json::Value::String(v);
            }
            let v = ep
                .post(&format!("v1/targets/{}/rollback", segment(&target)), req)
                .await?;
            event(v, &format!("manual rollback of {target}{to} requested"))
        }
        Verb::Pause {
            target,
            for_,
            reason,
        } => {
            let mut b = body(reason);
            if let Some(d) = for_ {
                b["for"] = serde_json::Value::String(d);
            }
            let v = ep
                .post(&format!("v1/targets/{}/pause", segment(&target)), b)
                .await?;
            if json {
                return Ok(pretty(&v));
            }
            let r: EventResponse =
                serde_json::from_value(v).context("unexpected answer from the daemon")?;
            let until = match r.paused.as_ref().and_then(|p| p.until) {
                Some(u) => format!("until {}", u.format("%Y-%m-%d %H:%M:%SZ")),
                None => "until resumed".to_string(),
            };
            Ok(format!(
                "{target} paused {until}: target {} is now {}\n",
                r.target, r.phase
            ))
        }
        Verb::Reload => {
            let v = ep
                .post("v1/reload", body(None))
                .await
                .map_err(|e| match e {
                    // 422: the file the daemon re-read is invalid.
                    ClientError::Api {
                        status: 422,
                        message,
                    } => ClientError::ConfigRejected(message),
                    e => e,
                })?;
            if json {
                return Ok(pretty(&v));
            }
            Ok(format!(
                "reloaded: {}\n",
                v["reloaded"].as_str().unwrap_or_default()
            ))
        }
        Verb::Resume { target } => {
            let v = ep
                .post(
                    &format!("v1/targets/{}/resume", segment(&target)),
                    body(None),
                )
                .await?;
            event(v, &format!("{target} resumed"))
        }
        Verb::Report { id } => {
            // The record file first: it works with the daemon down.
            if let Some(dir) = &ep.state_dir {
                let path = crate::notify::record::path(&dir.join("incidents"), &id)
                    .map_err(|e| ClientError::Other(e.into()))?;
                if let Ok(text) = std::fs::read_to_string(&path) {
                    return Ok(text);
                }
            }
            let v = ep.get(&format!("v1/incidents/{}", segment(&id))).await?;
            if json {
                return Ok(pretty(&v));
            }
            let inc: Incident =
                serde_json::from_value(v).context("unexpected answer from the daemon")?;
            Ok(crate::notify::record::render(&inc))
        }
    }
}
