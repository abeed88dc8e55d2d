//! Telling the admin: the rollback record ([`record`]), the words of a
//! notification ([`text`]) and its JSON event ([`event`]), put together
//! once into a [`Notice`] ([`compose`]); the outlets that build their items
//! from it ([`email`], [`webhook`] with its [`chat`] formats), each behind
//! the [`outlet`] seam; the durable outbox every item is written to first
//! ([`outbox`]), and the delivery loop that sends from it ([`sender`],
//! within [`limit`]s).
//!
//! The daemon calls [`Notifier::notify`] / [`Notifier::notify_target`]:
//! they only write to the outbox (fsync) and wake the senders, so the
//! decision loop never waits on the network. Repeated notifications about
//! the same incident in the same state, and a repeated blind (or seeing)
//! message about a target, are merged into the one already written.
//!
//! Routing: a target's `[target.notify]` drops notifications below its
//! `min_severity`; each outlet reads the rest (email: `to`, `cc`; webhooks:
//! `webhooks` by name). Targets without one use every outlet.

mod backlog;
pub mod chat;
pub mod compose;
pub mod event;
pub mod limit;
pub mod notice;
pub mod outbox;
pub mod outlet;
pub mod record;
pub mod sender;
pub mod smtp;
mod smtp_phases;
pub mod text;

/// The outlets, one entry each, `field: module`: the file
/// `notify/module.rs` implements [`outlet::Section`] for its `Section` type,
/// which [`NotifyConfig`]'s field `field` holds, and [`Outlet`] and
/// [`Transport`] for what that section configures. The order is the order
/// their items are written in (the first written item's path is what
/// `notify` returns). The one place outlets are named: `sections.rs`
/// generates `NotifyConfig` and every dispatch over outlets from it.
macro_rules! outlets {
    ($then:ident) => {
        $then! {
            email: email,
            webhooks: webhook,
        }
    };
}

// The outlets' modules: plain `mod` lines (rustfmt and the import check
// do not see a module a macro declares).
pub mod email;
pub mod webhook;

pub mod sections;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::config::TargetNotify;
use crate::decide::{Incident, NotifyKind};

pub use notice::Notice;
pub use outlet::{NotifyError, Outlet, SendError, Transport};
pub use sections::NotifyConfig;
pub use sender::Senders;

/// The registry the notifier counts in (the daemon's, which `/metrics`
/// renders): passed in with [`Notifier::with_metrics`]; `None` counts
/// nothing (tools, tests).
pub type Metrics = Option<&'static crate::metrics::Metrics>;

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
    /// Every configured outlet, in the order items are written.
    outlets: Vec<Box<dyn Outlet>>,
    cfg: NotifyConfig,
    public_url: Option<url::Url>,
    wake: watch::Sender<u64>,
    merge: Mutex<Merge>,
    metrics: Metrics,
}

/// Sends notifications for incidents: writes them to the outbox of every
/// outlet and wakes the senders.
#[derive(Debug, Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

/// The outbox directory of one webhook (see [`webhook::dir`]).
pub fn webhook_dir(outbox_dir: &Path, cfg: &crate::config::WebhookConfig) -> PathBuf {
    webhook::dir(outbox_dir, cfg)
}

impl Notifier {
    /// Build from config; `public_url` is used for links. Does no I/O.
    pub fn build(cfg: &NotifyConfig, public_url: Option<url::Url>) -> Notifier {
        Notifier::with(cfg, public_url, None)
    }

    /// The same notifier counting in `metrics` (the daemon passes its
    /// registry): merged notifications here, deliveries in its senders.
    pub fn with_metrics(self, metrics: &'static crate::metrics::Metrics) -> Notifier {
        Notifier::with(
            &self.inner.cfg,
            self.inner.public_url.clone(),
            Some(metrics),
        )
    }

    fn with(cfg: &NotifyConfig, public_url: Option<url::Url>, metrics: Metrics) -> Notifier {
        let (wake, _) = watch::channel(0);
        Notifier {
            inner: Arc::new(Inner {
                outlets: cfg.outlets(),
                cfg: cfg.clone(),
                public_url,
                wake,
                merge: Mutex::new(Merge::default()),
                metrics,
            }),
        }
    }

    /// The delivery tasks for the configured outlets that deliver (email
    /// when `smtp_url` is set, every webhook). Reads the SMTP password;
    /// start them with [`Senders::spawn`].
    pub fn senders(&self) -> Result<Senders, NotifyError> {
        let cfg = &self.inner.cfg;
        let mut channels = Vec::new();
        for o in &self.inner.outlets {
            let Some(transport) = o.transport()? else {
                continue;
            };
            let (dir, ext) = o.outbox();
            channels.push(sender::Channel {
                name: o.channel(),
                dir: dir.to_path_buf(),
                ext,
                transport,
                limits: limit::Limits::new(cfg.max_per_target_per_hour, cfg.max_per_hour),
            });
        }
        Ok(Senders {
            channels,
            give_up_after: cfg.give_up_after,
            wake: self.inner.wake.subscribe(),
            metrics: self.inner.metrics,
        })
    }

    fn route(&self, target: &str) -> Option<&TargetNotify> {
        self.inner.cfg.routes.get(target)
    }

    /// The outlets this target notifies (its `[target.notify]` picks).
    fn outlets_for(&self, target: &str) -> Vec<&dyn Outlet> {
        let route = self.route(target);
        self.inner
            .outlets
            .iter()
            .filter(|o| o.tells(route))
            .map(|o| o.as_ref())
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
        let dirs: Vec<(PathBuf, &'static str)> = self
            .inner
            .outlets
            .iter()
            .map(|o| {
                let (dir, ext) = o.outbox();
                (dir.to_path_buf(), ext)
            })
            .collect();
        let key = key.to_string();
        tokio::task::spawn_blocking(move || {
            dirs.iter()
                .any(|(d, ext)| outbox::has_pending(d, &key, ext))
        })
        .await
        .unwrap_or(false)
    }

    fn merged(&self, kind: NotifyKind, target: &str, key: &str) {
        if let Some(m) = self.inner.metrics {
            m.notification_merged(target, text::kind_name(kind));
        }
        tracing::info!(%target, ?kind, %key, "notification merged into the one already written");
    }

    /// Write the notification for this event to every outlet's outbox and
    /// wake the senders. Returns the path of the first item written (the
    /// mail, or without email the first webhook item), or `None` when
    /// nothing is configured or the notification was merged into an
    /// earlier one.
    pub async fn notify(
        &self,
        kind: NotifyKind,
        incident: &Incident,
        links: Option<&ConfirmLinks>,
    ) -> Result<Option<PathBuf>, NotifyError> {
        if self.outlets_for(&incident.target).is_empty()
            || self.below_minimum(kind, &incident.target)
        {
            return Ok(None);
        }
        let key = outbox::local_part(Some(&text::message_id(kind, incident)));
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
        let notice =
            compose::incident_notice(kind, incident, public_url, links, chrono::Utc::now());
        self.write_all(&notice).await
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
        if self.outlets_for(target).is_empty() || self.below_minimum(kind, target) {
            return Ok(None);
        }
        // Blind and seeing alternate, once per episode; other target
        // notifications (a pause that ended) are each their own.
        let repeated = matches!(kind, NotifyKind::Blind | NotifyKind::Seeing) && {
            let m = self.inner.merge.lock().unwrap_or_else(|p| p.into_inner());
            m.last_target.get(target) == Some(&kind)
        };
        if repeated {
            let kind_key = format!("{target}.{}", text::kind_name(kind));
            self.merged(kind, target, &kind_key);
            return Ok(None);
        }
        let notice = compose::target_notice(kind, target, message, chrono::Utc::now());
        let written = self.write_all(&notice).await;
        if written.is_ok() {
            let mut m = self.inner.merge.lock().unwrap_or_else(|p| p.into_inner());
            m.last_target.insert(target.to_string(), kind);
        }
        written
    }

    /// Build every outlet's item for this target, write each to its outbox,
    /// remember the key, wake the senders. Every outlet is tried; the first
    /// error is returned.
    async fn write_all(&self, notice: &Notice) -> Result<Option<PathBuf>, NotifyError> {
        let route = self.route(&notice.target);
        let outlets = self.outlets_for(&notice.target);
        let mut items = Vec::with_capacity(outlets.len());
        for o in &outlets {
            let (dir, ext) = o.outbox();
            items.push((dir, ext, o.item(notice, route)?));
        }
        let mut first_path = None;
        let mut first_error = None;
        for (dir, ext, bytes) in items {
            match outbox::write_item(dir, &notice.key, ext, bytes).await {
                Ok(p) => {
                    first_path.get_or_insert(p);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if first_path.is_some() {
            let mut m = self.inner.merge.lock().unwrap_or_else(|p| p.into_inner());
            m.remember(notice.key.clone());
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
    use crate::config::{EmailConfig, WebhookConfig, WebhookFormat};
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
        let wdir = webhook_dir(dir.path(), &n.inner.cfg.webhooks[0]);
        let items = outbox::pending(&wdir, "json").unwrap();
        assert_eq!(items.len(), 1);
        let item: webhook::Item =
            serde_json::from_slice(&std::fs::read(&items[0]).unwrap()).unwrap();
        assert_eq!(item.target, "frontend");
        assert_eq!(item.id, "20250601-120000-frontend-1.rolled_back");
        assert_eq!(item.body["schema"], event::SCHEMA);
        assert_eq!(item.body["state"], "RolledBack");
    }
}
