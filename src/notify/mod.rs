//! Telling the admin: the rollback record ([`record`]), the email built from
//! it ([`email`]) and the outbox every mail is written to first ([`outbox`]).

pub mod email;
pub mod outbox;
pub mod record;

use std::path::PathBuf;

use crate::config::{EmailConfig, NotifyConfig};
use crate::decide::{Incident, NotifyKind};

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

/// Sends notifications for incidents.
#[derive(Debug, Clone)]
pub struct Notifier {
    email: Option<EmailConfig>,
    public_url: Option<url::Url>,
}

impl Notifier {
    /// Build from config; `public_url` is used for links.
    pub fn build(cfg: &NotifyConfig, public_url: Option<url::Url>) -> Notifier {
        Notifier {
            email: cfg.email.clone(),
            public_url,
        }
    }

    /// Write the email for this event to the outbox. Returns the path of the
    /// mail written, or `None` when no email is configured.
    pub async fn notify(
        &self,
        kind: NotifyKind,
        incident: &Incident,
        links: Option<&ConfirmLinks>,
    ) -> Result<Option<PathBuf>, NotifyError> {
        let Some(cfg) = &self.email else {
            return Ok(None);
        };
        let message = email::build(cfg, kind, incident, self.public_url.as_ref(), links)?;
        let path = outbox::write(&cfg.outbox_dir, &message).await?;
        Ok(Some(path))
    }

    /// Write a notification about a target that is not about an incident
    /// (monitoring blind, seeing again). Same return as [`Notifier::notify`].
    pub async fn notify_target(
        &self,
        kind: NotifyKind,
        target: &str,
        message: &str,
    ) -> Result<Option<PathBuf>, NotifyError> {
        let Some(cfg) = &self.email else {
            return Ok(None);
        };
        let message = email::build_target(cfg, kind, target, message, chrono::Utc::now())?;
        let path = outbox::write(&cfg.outbox_dir, &message).await?;
        Ok(Some(path))
    }
}
