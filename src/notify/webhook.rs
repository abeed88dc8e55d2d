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

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::config::{NotifyConfig, TargetNotify, WebhookConfig, WebhookFormat};

use super::notice::Notice;
use super::outlet::{Outlet, Transport};
use super::{NotifyError, SendError};

pub use super::event::SCHEMA;

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

/// One outlet per `[[notify.webhook]]`, in config order.
pub fn outlets(cfg: &NotifyConfig) -> Vec<Box<dyn Outlet>> {
    cfg.webhooks
        .iter()
        .enumerate()
        .map(|(i, w)| {
            Box::new(Webhook {
                index: i,
                dir: dir(&cfg.outbox_dir, w),
                cfg: w.clone(),
            }) as Box<dyn Outlet>
        })
        .collect()
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
