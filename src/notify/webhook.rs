//! The webhook outlet (`[[notify.webhook]]`): each webhook POSTs the body
//! of its chat format ([`super::chat`]: the versioned JSON event, Slack,
//! Teams, DingTalk, Feishu) from its own outbox directory, signing
//! DingTalk and Feishu requests at send time.
//!
//! An outbox item is a small JSON envelope (`{"target", "id", "body"}`); the
//! channel POSTs `body` with an `Idempotency-Key` header carrying `id`, the
//! same stable key as the mail's Message-ID, so a receiver can drop a
//! duplicate sent after a crash between "accepted" and "removed".
//!
//! Routing: a target's `[target.notify] webhooks` picks webhooks by name;
//! without it a target notifies every webhook.
//!
//! Its config: the keys as written ([`RawWebhook`]), their validation into
//! [`WebhookConfig`] and its [`Section`] (`Vec<WebhookConfig>`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::config::cx::Cx;
use crate::config::error::join;
use crate::config::route::TargetNotify;

use super::chat::WebhookFormat;
use super::notice::Notice;
use super::outlet::{NotifyError, Outlet, SendError, Transport, DEFAULT_NOTIFY_TIMEOUT};

/// What is stored in the outbox for one webhook call.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Item {
    /// Target the notification is about (rate limit key).
    pub target: String,
    /// Stable key (`ID.kind`), sent as `Idempotency-Key`.
    pub id: String,
    /// The request body.
    pub body: Value,
}

/// The body to POST for this webhook's format.
pub fn body(format: WebhookFormat, event: Value) -> Value {
    format.body(&event)
}

/// `[[notify.webhook]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    /// Endpoint the notification is POSTed to.
    pub url: url::Url,
    /// Body format.
    pub format: WebhookFormat,
    /// Request timeout.
    pub timeout: Duration,
    /// Name `[target.notify] webhooks` refers to; unique.
    pub name: Option<String>,
    /// DingTalk / Feishu signing secret: each request is signed with it at
    /// send time (the signature holds a timestamp the receiver checks).
    pub secret: Option<String>,
}

/// `[[notify.webhook]]`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// Endpoint the notification is POSTed to.
    pub url: Option<String>,
    /// Body format: `json`, `slack`, `teams`, `dingtalk` or `feishu`.
    pub format: Option<String>,
    /// Duration string: request timeout.
    pub timeout: Option<String>,
    /// Name that `[target.notify] webhooks` refers to.
    pub name: Option<String>,
    /// DingTalk or Feishu signing secret.
    pub secret: Option<String>,
}

/// `[[notify.webhook]]` in `NotifyConfig`, in config order.
pub type Section = Vec<WebhookConfig>;

impl super::outlet::Section for Vec<WebhookConfig> {
    const KEY: &'static str = "webhook";
    const ARRAY: bool = true;
    type Raw = RawWebhook;

    fn build(cx: &mut Cx, raw: Vec<RawWebhook>, _state_dir: Option<&Path>) -> Option<Self> {
        let webhooks: Vec<Option<WebhookConfig>> = raw
            .iter()
            .enumerate()
            .map(|(i, w)| webhook(cx, &format!("notify.webhook[{i}]"), w))
            .collect();
        for (i, w) in raw.iter().enumerate() {
            let Some(name) = w.name.as_deref() else {
                continue;
            };
            if let Some(first) = raw[..i]
                .iter()
                .position(|o| o.name.as_deref() == Some(name))
            {
                cx.err(
                    format!("notify.webhook[{i}].name"),
                    format!(
                        "duplicate webhook name {name:?} (also used by notify.webhook[{first}])"
                    ),
                );
            }
        }
        webhooks.into_iter().collect()
    }

    fn notifies_anyone(&self) -> bool {
        !self.is_empty()
    }

    fn outbox_dir(&self) -> Option<&Path> {
        None
    }

    fn check_route(&self, cx: &mut Cx, p: &str, route: &TargetNotify) {
        for (i, name) in route.webhooks.iter().flatten().enumerate() {
            if !self
                .iter()
                .any(|w| w.name.as_deref() == Some(name.as_str()))
            {
                let names: Vec<&str> = self.iter().filter_map(|w| w.name.as_deref()).collect();
                cx.err(
                    format!("{p}.webhooks[{i}]"),
                    format!(
                        "no [[notify.webhook]] named {name:?} (named webhooks: {})",
                        if names.is_empty() {
                            "none; give one a name".to_string()
                        } else {
                            names.join(", ")
                        }
                    ),
                );
            }
        }
    }

    fn secret_files(&self) -> Vec<(String, PathBuf)> {
        Vec::new()
    }

    fn outlets(&self, outbox_dir: &Path) -> Vec<Box<dyn Outlet>> {
        self.iter()
            .enumerate()
            .map(|(i, w)| {
                Box::new(Webhook {
                    index: i,
                    dir: dir(outbox_dir, w),
                    cfg: w.clone(),
                }) as Box<dyn Outlet>
            })
            .collect()
    }
}

/// One `[[notify.webhook]]` under `p`.
pub fn webhook(cx: &mut Cx, p: &str, raw: &RawWebhook) -> Option<WebhookConfig> {
    let url = cx
        .required(p, "url", raw.url.as_deref())
        .and_then(|u| cx.http_url(&join(p, "url"), u));
    let format = cx.choice(
        p,
        "format",
        raw.format.as_deref(),
        &WebhookFormat::choices(),
    );
    let name = match raw.name.as_deref() {
        None => Some(None),
        Some(n) => cx
            .non_empty(&join(p, "name"), n)
            .map(|n| Some(n.to_string())),
    };
    let secret = match raw.secret.as_deref() {
        None => Some(None),
        Some(s) => cx
            .non_empty(&join(p, "secret"), s)
            .map(|s| Some(s.to_string())),
    };
    if raw.secret.is_some() && format.is_some_and(|f| f.format().sign.is_none()) {
        let signing: Vec<String> = WebhookFormat::ALL
            .iter()
            .map(|f| f.format())
            .filter(|f| f.sign.is_some())
            .map(|f| format!("{:?}", f.name))
            .collect();
        cx.err(
            join(p, "secret"),
            format!(
                "secret applies to format {} (request signing) only",
                signing.join(" and ")
            ),
        );
    }
    let timeout = cx.duration(
        p,
        "timeout",
        raw.timeout.as_deref(),
        DEFAULT_NOTIFY_TIMEOUT,
        true,
    );
    Some(WebhookConfig {
        url: url?,
        format: format?,
        timeout: timeout?,
        name: name?,
        secret: secret?,
    })
}

/// The outbox directory of one webhook: `outbox_dir/webhook-HASH`, HASH from
/// its URL and format, so a queued item never goes to another endpoint
/// after the config changed.
pub fn dir(outbox_dir: &Path, cfg: &WebhookConfig) -> PathBuf {
    // FNV-1a: stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{:?}|{}", cfg.format, cfg.url).bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    outbox_dir.join(format!("webhook-{h:016x}"))
}

/// One `[[notify.webhook]]`.
#[derive(Debug)]
struct Webhook {
    index: usize,
    dir: PathBuf,
    cfg: WebhookConfig,
}

impl Outlet for Webhook {
    fn channel(&self) -> String {
        format!("webhook[{}]", self.index)
    }

    fn outbox(&self) -> (&Path, &'static str) {
        (&self.dir, "json")
    }

    fn tells(&self, route: Option<&TargetNotify>) -> bool {
        let names = route.and_then(|r| r.webhooks.as_ref());
        names.is_none_or(|n| self.cfg.name.as_ref().is_some_and(|name| n.contains(name)))
    }

    fn item(&self, notice: &Notice, _: Option<&TargetNotify>) -> Result<Vec<u8>, NotifyError> {
        let item = Item {
            target: notice.target.clone(),
            id: notice.key.clone(),
            body: self.cfg.format.body(&notice.event),
        };
        serde_json::to_vec_pretty(&item)
            .map_err(|e| NotifyError::Build(format!("webhook item {}: {e}", notice.key)))
    }

    fn transport(&self) -> Result<Option<Box<dyn Transport>>, NotifyError> {
        Ok(Some(Box::new(WebhookChannel::build(&self.cfg)?)))
    }
}

/// Why one webhook call was not delivered this attempt.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The outbox item is not a webhook item (a torn or foreign file).
    #[error("unreadable outbox item: {0}")]
    UnreadableItem(serde_json::Error),
    /// The webhook POST got no answer (connect, TLS, timeout).
    #[error(
        "POST {} failed: {}",
        crate::util::redact_url(url),
        crate::util::error_chain(detail)
    )]
    Post {
        /// The webhook URL as configured (not the signed one).
        url: url::Url,
        /// The HTTP client's error (printed with its causes).
        detail: reqwest::Error,
    },
    /// The webhook answered with a status other than 2xx.
    #[error(
        "POST {} answered {status}: {}",
        crate::util::redact_url(url),
        crate::util::redact_urls(body)
    )]
    Status {
        /// The webhook URL as configured.
        url: url::Url,
        /// The answer's status.
        status: reqwest::StatusCode,
        /// The start of the answer's body (200 characters at most).
        body: String,
    },
}

impl Transport for WebhookChannel {
    fn target_of(&self, item: &[u8]) -> Option<String> {
        serde_json::from_slice::<Item>(item).ok().map(|i| i.target)
    }

    fn send<'a>(&'a self, item: &'a [u8]) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let item: Item = serde_json::from_slice(item)
                .map_err(|e| SendError::Outlet(Box::new(WebhookError::UnreadableItem(e))))?;
            WebhookChannel::send(self, &item)
                .await
                .map_err(|e| SendError::Outlet(Box::new(e)))
        })
    }
}

/// POSTs outbox items to one webhook URL.
#[derive(Debug, Clone)]
pub struct WebhookChannel {
    url: url::Url,
    client: reqwest::Client,
    format: WebhookFormat,
    /// DingTalk / Feishu signing secret: signed at send time.
    secret: Option<String>,
}

impl WebhookChannel {
    /// Build the HTTP client for this webhook.
    pub fn build(cfg: &WebhookConfig) -> Result<WebhookChannel, NotifyError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("rollbackd/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| {
                NotifyError::Setup(format!(
                    "webhook {}: {}",
                    crate::util::redact_url(&cfg.url),
                    crate::util::error_chain(&e)
                ))
            })?;
        Ok(WebhookChannel {
            url: cfg.url.clone(),
            client,
            format: cfg.format,
            secret: cfg.secret.clone(),
        })
    }

    /// POST the item; Ok only for a 2xx answer.
    pub async fn send(&self, item: &Item) -> Result<(), WebhookError> {
        let now = chrono::Utc::now();
        let (url, body) = match (self.format.format().sign, &self.secret) {
            (Some(sign), Some(secret)) => sign(&self.url, &item.body, secret, now),
            _ => (self.url.clone(), item.body.clone()),
        };
        let response = self
            .client
            .post(url)
            .header("Idempotency-Key", &item.id)
            .json(&body)
            .send()
            .await
            .map_err(|detail| WebhookError::Post {
                url: self.url.clone(),
                detail,
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        Err(WebhookError::Status {
            url: self.url.clone(),
            status,
            body: text.trim().chars().take(200).collect(),
        })
    }
}
