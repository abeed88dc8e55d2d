//! Telling the admin: the rollback record ([`record`]), the email built from
//! it ([`email`]), webhook events ([`webhook`]), the durable outbox every
//! notification is written to first ([`outbox`]), and the delivery loop that
//! sends from it ([`sender`], over [`smtp`] or HTTP, within [`limit`]s).
//!
//! The daemon calls [`Notifier::notify`] / [`Notifier::notify_target`]:
//! they only write to the outbox (fsync) and wake the senders, so the
//! decision loop never waits on the network. Repeated notifications about
//! the same incident in the same state, and a repeated blind (or seeing)
//! message about a target, are merged into the one already written.
//!
//! Routing: a target's `[target.notify]` replaces the recipients (`to`),
//! adds `cc`, picks webhooks by name and drops notifications below its
//! `min_severity`; targets without one use every channel.

mod backlog;
pub mod chat;
pub mod email;
pub mod limit;
pub mod outbox;
pub mod record;
pub mod sender;
pub mod smtp;
mod smtp_phases;
pub mod webhook;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::config::{EmailConfig, NotifyConfig, TargetNotify, WebhookConfig};
use crate::decide::{Incident, NotifyKind};

pub use sender::Senders;

/// Why a notification could not be written or sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The message could not be built (bad address, ...).
    #[error("cannot build email: {0}")]
    Build(String),
    /// The outbox could not be written.
    #[error("cannot write to outbox {path}: {detail}")]
    Outbox {
        /// The outbox directory.
        path: PathBuf,
        /// The I/O error.
        detail: String,
    },
    /// A channel could not be set up at start (password file, TLS, client).
    #[error("cannot set up notifications: {0}")]
    Setup(String),
}

/// Why one outbox item was not delivered this attempt (the sender logs it
/// and retries with backoff).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The outbox item is not a webhook item (a torn or foreign file).
    #[error("unreadable outbox item: {0}")]
    UnreadableItem(serde_json::Error),
    /// The `.eml` has no usable envelope.
    #[error(transparent)]
    Envelope(#[from] smtp::EnvelopeError),
    /// The SMTP server refused, or could not be reached or trusted.
    #[error("{server}: {}", smtp::describe(detail, host))]
    Smtp {
        /// `smtps://host:port`.
        server: String,
        /// The host the certificate must name (for the TLS hint).
        host: String,
        /// lettre's error (printed with its causes, each once).
        detail: lettre::transport::smtp::Error,
    },
    /// A phase of the SMTP conversation got no answer within
    /// `notify.email.timeout`.
    #[error("{server}: no answer to {phase} within {} (notify.email.timeout)", crate::util::fmt_duration(*timeout))]
    SmtpTimeout {
        /// `smtps://host:port`.
        server: String,
        /// `connect`, `greeting`, `EHLO`, `STARTTLS`, `AUTH`, ...
        phase: &'static str,
        /// `notify.email.timeout`.
        timeout: std::time::Duration,
    },
    /// The SMTP server could not be reached.
    #[error("{server}: cannot connect: {error}")]
    SmtpConnect {
        /// `smtp://host:port`.
        server: String,
        /// Refused, unreachable, no such host.
        error: std::io::Error,
    },
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
    /// The channel gave no answer within the sender's own limit.
    #[error("no answer within {}", crate::util::fmt_duration(*.0))]
    Timeout(std::time::Duration),
}

/// Approve and reject links for a confirmation email (signed, single-use
/// tokens behind `public_url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmLinks {
    /// Opens the page that approves.
    pub approve: url::Url,
    /// Opens the page that rejects.
    pub reject: url::Url,
}

/// How many merge keys are remembered (oldest forgotten first).
const REMEMBERED: usize = 4096;

/// What has been written, to merge repeats.
#[derive(Debug, Default)]
struct Merge {
    keys: HashSet<String>,
    order: VecDeque<String>,
    /// Last target notification kind per target (blind once per episode).
    last_target: HashMap<String, NotifyKind>,
    /// When the last blast-radius notification was written: the targets of
    /// one episode escalate one by one, the admin gets one message.
    last_blast: Option<chrono::DateTime<chrono::Utc>>,
}

/// Blast-radius escalations within this long of the first are merged into it.
const BLAST_MERGE: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

impl Merge {
    fn remember(&mut self, key: String) {
        if self.keys.insert(key.clone()) {
            self.order.push_back(key);
            while self.order.len() > REMEMBERED {
                if let Some(old) = self.order.pop_front() {
                    self.keys.remove(&old);
                }
            }
        }
    }
}

#[derive(Debug)]
struct Inner {
    email: Option<EmailConfig>,
    webhooks: Vec<(WebhookConfig, PathBuf)>,
    cfg: NotifyConfig,
    public_url: Option<url::Url>,
    wake: watch::Sender<u64>,
    merge: Mutex<Merge>,
}

/// Sends notifications for incidents: writes them to the outbox of every
/// channel and wakes the senders.
#[derive(Debug, Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

/// The outbox directory of one webhook: `outbox_dir/webhook-HASH`, HASH from
/// its URL and format, so a queued item never goes to another endpoint
/// after the config changed.
pub fn webhook_dir(outbox_dir: &std::path::Path, cfg: &WebhookConfig) -> PathBuf {
    // FNV-1a: stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{:?}|{}", cfg.format, cfg.url).bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    outbox_dir.join(format!("webhook-{h:016x}"))
}

impl Notifier {
    /// Build from config; `public_url` is used for links. Does no I/O.
    pub fn build(cfg: &NotifyConfig, public_url: Option<url::Url>) -> Notifier {
        let (wake, _) = watch::channel(0);
        Notifier {
            inner: Arc::new(Inner {
                email: cfg.email.clone(),
                webhooks: cfg
                    .webhooks
                    .iter()
                    .map(|w| (w.clone(), webhook_dir(&cfg.outbox_dir, w)))
                    .collect(),
                cfg: cfg.clone(),
                public_url,
                wake,
                merge: Mutex::new(Merge::default()),
            }),
        }
    }

    /// The delivery tasks for the configured channels: SMTP when `smtp_url`
    /// is set, one per webhook. Reads the SMTP password; start them with
    /// [`Senders::spawn`].
    pub fn senders(&self) -> Result<Senders, NotifyError> {
        let cfg = &self.inner.cfg;
        let limits = || limit::Limits::new(cfg.max_per_target_per_hour, cfg.max_per_hour);
        let mut channels = Vec::new();
        if let Some(email) = &self.inner.email {
            if let Some(smtp) = &email.smtp {
                channels.push(sender::Channel {
                    name: "email".into(),
                    dir: email.outbox_dir.clone(),
                    ext: "eml",
                    transport: sender::Transport::Smtp(smtp::SmtpChannel::build(smtp)?),
                    limits: limits(),
                });
            }
        }
        for (i, (w, dir)) in self.inner.webhooks.iter().enumerate() {
            channels.push(sender::Channel {
                name: format!("webhook[{i}]"),
                dir: dir.clone(),
                ext: "json",
                transport: sender::Transport::Webhook(webhook::WebhookChannel::build(w)?),
                limits: limits(),
            });
        }
        Ok(Senders {
            channels,
            give_up_after: cfg.give_up_after,
            wake: self.inner.wake.subscribe(),
        })
    }

    fn route(&self, target: &str) -> Option<&TargetNotify> {
        self.inner.cfg.routes.get(target)
    }

    /// The email settings for this target: its `to` and `cc` when routed.
    fn email_for(&self, target: &str) -> Option<EmailConfig> {
        let mut email = self.inner.email.clone()?;
        if let Some(r) = self.route(target) {
            if let Some(to) = &r.to {
                email.to = to.clone();
            }
            email.cc = r.cc.clone();
        }
        Some(email)
    }

    /// The webhooks this target notifies: the named ones when routed.
    fn webhooks_for(&self, target: &str) -> Vec<&(WebhookConfig, PathBuf)> {
        let names = self.route(target).and_then(|r| r.webhooks.as_ref());
        self.inner
            .webhooks
            .iter()
            .filter(|(w, _)| {
                names.is_none_or(|n| w.name.as_ref().is_some_and(|name| n.contains(name)))
            })
            .collect()
    }

    /// Whether the target's `min_severity` drops this kind (logged).
    fn below_minimum(&self, kind: NotifyKind, target: &str) -> bool {
        let Some(min) = self.route(target).map(|r| r.min_severity) else {
            return false;
        };
        let below = kind.severity() < min;
        if below {
            tracing::info!(%target, ?kind, severity = ?kind.severity(), min_severity = ?min, "notification below the target's min_severity, not sent");
        }
        below
    }

    fn wake(&self) {
        self.inner.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Whether `key` was written already (this process, or still pending
    /// in an outbox from before a restart).
    async fn seen(&self, key: &str) -> bool {
        let remembered = {
            let m = self.inner.merge.lock().unwrap_or_else(|p| p.into_inner());
            m.keys.contains(key)
        };
        if remembered {
            return true;
        }
        let mut dirs: Vec<(PathBuf, &'static str)> = Vec::new();
        if let Some(e) = &self.inner.email {
            dirs.push((e.outbox_dir.clone(), "eml"));
        }
        for (_, d) in &self.inner.webhooks {
            dirs.push((d.clone(), "json"));
        }
        let key = key.to_string();
        tokio::task::spawn_blocking(move || {
            dirs.iter()
                .any(|(d, ext)| outbox::has_pending(d, &key, ext))
        })
        .await
        .unwrap_or(false)
    }

    fn merged(&self, kind: NotifyKind, target: &str, key: &str) {
        crate::metrics::global().notification_merged(target, email::kind_name(kind));
        tracing::info!(%target, ?kind, %key, "notification merged into the one already written");
    }

    /// Write the notification for this event to every channel's outbox and
    /// wake the senders. Returns the path of the mail written (or, without
    /// email, of the first webhook item), or `None` when nothing is
    /// configured or the notification was merged into an earlier one.
    pub async fn notify(
        &self,
        kind: NotifyKind,
        incident: &Incident,
        links: Option<&ConfirmLinks>,
    ) -> Result<Option<PathBuf>, NotifyError> {
        let email_cfg = self.email_for(&incident.target);
        let hooks = self.webhooks_for(&incident.target);
        if email_cfg.is_none() && hooks.is_empty() || self.below_minimum(kind, &incident.target) {
            return Ok(None);
        }
        let key = outbox::local_part(Some(&email::message_id(kind, incident)));
        // One message for a group escalated together; a target that had
        // already rolled back is told about on its own.
        if kind == NotifyKind::BlastRadius && incident.blast_radius_after_acting.is_none() {
            let now = chrono::Utc::now();
            let mut m = self.inner.merge.lock().unwrap_or_else(|p| p.into_inner());
            if m.last_blast.is_some_and(|at| now - at < BLAST_MERGE) {
                drop(m);
                self.merged(kind, &incident.target, "blast_radius");
                return Ok(None);
            }
            m.last_blast = Some(now);
        }
        if self.seen(&key).await {
            self.merged(kind, &incident.target, &key);
            return Ok(None);
        }
        let public_url = self.inner.public_url.as_ref();
        let mail = match &email_cfg {
            Some(cfg) => Some(email::build(cfg, kind, incident, public_url, links)?),
            None => None,
        };
        let event = (!hooks.is_empty()).then(|| {
            webhook::incident_event(kind, incident, public_url, links, chrono::Utc::now())
        });
        self.write_all(&incident.target, &key, mail, event).await
    }

    /// Write a notification about a target that is not about an incident
    /// (monitoring blind, seeing again). The same kind twice in a row for
    /// one target is merged: the blind message goes out once per episode.
    /// Same return as [`Notifier::notify`].
    pub async fn notify_target(
        &self,
        kind: NotifyKind,
        target: &str,
        message: &str,
    ) -> Result<Option<PathBuf>, NotifyError> {
        let email_cfg = self.email_for(target);
        if email_cfg.is_none() && self.webhooks_for(target).is_empty()
            || self.below_minimum(kind, target)
        {
            return Ok(None);
        }
        // Blind and seeing alternate, once per episode; other target
        // notifications (a pause that ended) are each their own.
        let repeated = matches!(kind, NotifyKind::Blind | NotifyKind::Seeing) && {
            let m = self.inner.merge.lock().unwrap_or_else(|p| p.into_inner());
            m.last_target.get(target) == Some(&kind)
        };
        let kind_key = format!("{target}.{}", email::kind_name(kind));
        if repeated {
            self.merged(kind, target, &kind_key);
            return Ok(None);
        }
        let at = chrono::Utc::now();
        let mail = match &email_cfg {
            Some(cfg) => Some(email::build_target(cfg, kind, target, message, at)?),
            None => None,
        };
        let key = match &mail {
            Some(m) => outbox::local_part(m.headers().get_raw("Message-ID")),
            None => outbox::local_part(Some(&format!(
                "<{kind_key}.{}@rollbackd>",
                at.format("%Y%m%dT%H%M%S%.3fZ")
            ))),
        };
        let event = (!self.webhooks_for(target).is_empty())
            .then(|| webhook::target_event(kind, target, message, &key, at));
        let written = self.write_all(target, &key, mail, event).await;
        if written.is_ok() {
            let mut m = self.inner.merge.lock().unwrap_or_else(|p| p.into_inner());
            m.last_target.insert(target.to_string(), kind);
        }
        written
    }

    /// Write the mail and one item per webhook, remember the key, wake the
    /// senders. Every channel is tried; the first error is returned.
    async fn write_all(
        &self,
        target: &str,
        key: &str,
        mail: Option<lettre::Message>,
        event: Option<serde_json::Value>,
    ) -> Result<Option<PathBuf>, NotifyError> {
        let mut first_path = None;
        let mut first_error = None;
        if let (Some(cfg), Some(mail)) = (&self.inner.email, mail) {
            // One outbox for all mail; the recipients are in the message.
            match outbox::write(&cfg.outbox_dir, &mail).await {
                Ok(p) => first_path = Some(p),
                Err(e) => first_error = Some(e),
            }
        }
        if let Some(event) = event {
            for (w, dir) in self.webhooks_for(target) {
                let item = webhook::Item {
                    target: target.to_string(),
                    id: key.to_string(),
                    body: webhook::body(w.format, event.clone()),
                };
                let bytes = serde_json::to_vec_pretty(&item)
                    .map_err(|e| NotifyError::Build(format!("webhook item {key}: {e}")))?;
                match outbox::write_item(dir, key, "json", bytes).await {
                    Ok(p) => {
                        first_path.get_or_insert(p);
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        if first_path.is_some() {
            let mut m = self.inner.merge.lock().unwrap_or_else(|p| p.into_inner());
            m.remember(key.to_string());
        }
        self.wake();
        match first_error {
            Some(e) => Err(e),
            None => Ok(first_path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WebhookFormat;
    use crate::notify::record::tests::incident;

    fn notifier(dir: &std::path::Path) -> Notifier {
        Notifier::build(
            &NotifyConfig {
                email: Some(EmailConfig {
                    from: "rollbackd <rb@example.org>".into(),
                    to: vec!["ops@example.org".into()],
                    cc: Vec::new(),
                    outbox_dir: dir.to_path_buf(),
                    smtp: None,
                }),
                webhooks: vec![WebhookConfig {
                    url: "http://127.0.0.1:9/hook".parse().unwrap(),
                    format: WebhookFormat::Json,
                    timeout: std::time::Duration::from_secs(1),
                    name: None,
                    secret: None,
                }],
                outbox_dir: dir.to_path_buf(),
                ..NotifyConfig::default()
            },
            None,
        )
    }

    fn count(dir: &std::path::Path, ext: &str) -> usize {
        let mut n = outbox::pending(dir, ext).unwrap().len();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                n += outbox::pending(&p, ext).unwrap().len();
            }
        }
        n
    }

    #[tokio::test]
    async fn same_incident_same_state_is_merged() {
        let dir = tempfile::tempdir().unwrap();
        let n = notifier(dir.path());
        let i = incident();
        let first = n.notify(NotifyKind::RolledBack, &i, None).await.unwrap();
        assert!(first.is_some());
        for _ in 0..5 {
            assert_eq!(
                n.notify(NotifyKind::RolledBack, &i, None).await.unwrap(),
                None
            );
        }
        assert!(n
            .notify(NotifyKind::RollbackStarted, &i, None)
            .await
            .unwrap()
            .is_some());
        assert_eq!(count(dir.path(), "eml"), 2);
        assert_eq!(count(dir.path(), "json"), 2);

        // After a restart (a new notifier), a pending mail still merges.
        let again = notifier(dir.path());
        assert_eq!(
            again
                .notify(NotifyKind::RolledBack, &i, None)
                .await
                .unwrap(),
            None
        );
        assert_eq!(count(dir.path(), "eml"), 2);
    }

    #[tokio::test]
    async fn blind_once_per_episode() {
        let dir = tempfile::tempdir().unwrap();
        let n = notifier(dir.path());
        let mut written = 0;
        for kind in [
            NotifyKind::Blind,
            NotifyKind::Blind,
            NotifyKind::Blind,
            NotifyKind::Seeing,
            NotifyKind::Seeing,
            NotifyKind::Blind,
        ] {
            if n.notify_target(kind, "web", "no data")
                .await
                .unwrap()
                .is_some()
            {
                written += 1;
            }
        }
        assert_eq!(written, 3, "blind, seeing, blind");
        assert_eq!(count(dir.path(), "eml"), 3);
        assert_eq!(count(dir.path(), "json"), 3);
        // Other targets have their own episodes.
        assert!(n
            .notify_target(NotifyKind::Blind, "api", "no data")
            .await
            .unwrap()
            .is_some());
    }

    #[tokio::test]
    async fn webhook_items_carry_target_id_and_body() {
        let dir = tempfile::tempdir().unwrap();
        let n = notifier(dir.path());
        n.notify(NotifyKind::RolledBack, &incident(), None)
            .await
            .unwrap();
        let wdir = webhook_dir(dir.path(), &n.inner.webhooks[0].0);
        let items = outbox::pending(&wdir, "json").unwrap();
        assert_eq!(items.len(), 1);
        let item: webhook::Item =
            serde_json::from_slice(&std::fs::read(&items[0]).unwrap()).unwrap();
        assert_eq!(item.target, "frontend");
        assert_eq!(item.id, "20250601-120000-frontend-1.rolled_back");
        assert_eq!(item.body["schema"], webhook::SCHEMA);
        assert_eq!(item.body["state"], "RolledBack");
    }
}
