//! The seam every notification outlet plugs into. Its config side is a
//! [`Section`]: the outlet's part of `[notify]` (`[notify.email]`,
//! `[[notify.webhook]]`) with its keys as written, their validation, its
//! defaults, its secret files and its check of a target's routes. Its
//! runtime side is the [`Outlet`] each configured instance is: it says
//! which targets it tells, builds its outbox item from a [`Notice`], names
//! its outbox directory and gives the [`Transport`] that delivers from it.
//! The config layer, the notifier and the delivery loop only ever see these
//! traits: the durable outbox, merging, retries, `give_up_after`, rate
//! limits and the metrics are the same for every outlet.
//!
//! A leaf of `notify/`: it imports only `config::{cx, route}`, so an
//! outlet's file, which `config/mod.rs` names, imports no `config/mod.rs`.
//!
//! **Adding an outlet** (PagerDuty, Opsgenie, ...): a file
//! `src/notify/OUTLET.rs` implementing [`Section`] for the type its
//! `[notify]` field has (`pub type Section = ...`), and [`Outlet`] and
//! [`Transport`]; its `pub mod` line and its entry in the `outlets!` list
//! of `notify/mod.rs`, the one place outlets are registered.

use std::fmt::Debug;
use std::path::{Path, PathBuf};

use futures_util::future::BoxFuture;

use crate::config::cx::Cx;
use crate::config::route::TargetNotify;

use super::notice::Notice;

/// Default `timeout` of the outlets that have one (SMTP, webhooks).
pub const DEFAULT_NOTIFY_TIMEOUT: &str = "30s";

/// One outlet's section of `[notify]`, as validated: the type of its field
/// in [`NotifyConfig`](super::sections::NotifyConfig) (email:
/// `Option<EmailConfig>`, webhooks: `Vec<WebhookConfig>`). Every item is
/// required: a new outlet says what it does for each, nothing defaults.
pub trait Section: Debug + Clone + Default + Send + Sync + 'static {
    /// Its key in `[notify]`: `email` is `[notify.email]`.
    const KEY: &'static str;
    /// `true`: an array of tables (`[[notify.webhook]]`), each one outlet;
    /// `false`: at most one table (`[notify.email]`).
    const ARRAY: bool;

    /// One table's keys as written: serde, `deny_unknown_fields`, every
    /// key optional (whether one is required is decided by
    /// [`Section::build`]). The raw layer checks each key against it.
    type Raw: serde::de::DeserializeOwned + Default;

    /// Validate its tables as written (none when absent, at most one
    /// unless [`Section::ARRAY`]), each under its key path `notify.KEY`
    /// (`notify.KEY[i]` in an array); `state_dir` roots the defaults
    /// under it. Every problem goes into `cx` with its key path.
    fn build(cx: &mut Cx, raw: Vec<Self::Raw>, state_dir: Option<&Path>) -> Option<Self>;

    /// Whether anyone is told through it (no outlet telling anyone is the
    /// "nobody is notified" warning).
    fn notifies_anyone(&self) -> bool;

    /// The directory it names for `[notify]`'s shared outbox (email's
    /// `outbox_dir`); `None`: it names none. The first outlet naming one
    /// sets it, else it is `state_dir/outbox`.
    fn outbox_dir(&self) -> Option<&Path>;

    /// Check a target's `[target.notify]` (key path `p`) against it: the
    /// keys that pick its instances must name configured ones.
    fn check_route(&self, cx: &mut Cx, p: &str, route: &TargetNotify);

    /// Secret files it reads, as (key path, file), for `check`'s mode
    /// warning.
    fn secret_files(&self) -> Vec<(String, PathBuf)>;

    /// Its configured outlets, in config order; `outbox_dir` is
    /// `[notify]`'s shared outbox.
    fn outlets(&self, outbox_dir: &Path) -> Vec<Box<dyn Outlet>>;
}

/// One configured outlet instance (the email, one webhook, ...).
pub trait Outlet: Debug + Send + Sync {
    /// For logs and metric labels (`channel`): `email`, `webhook[0]`.
    fn channel(&self) -> String;

    /// The outbox directory of this outlet and its items' file extension.
    /// Both are part of the on-disk format: items written by an earlier
    /// version are found (and merged, and sent) after an upgrade.
    fn outbox(&self) -> (&Path, &'static str);

    /// Whether a target with this `[target.notify]` (`None`: none) is told
    /// through this outlet.
    fn tells(&self, route: Option<&TargetNotify>) -> bool;

    /// The outbox item for this notice (the bytes written, fsync'd, then
    /// sent as they are).
    fn item(&self, notice: &Notice, route: Option<&TargetNotify>) -> Result<Vec<u8>, NotifyError>;

    /// What delivers this outlet's items; `None` when items only stay in
    /// the outbox (email without `smtp_url`). Reads secrets (a password
    /// file) and sets up clients: called once at daemon start.
    fn transport(&self) -> Result<Option<Box<dyn Transport>>, NotifyError>;
}

/// Delivers one outlet's outbox items.
pub trait Transport: Debug + Send + Sync {
    /// The target an item is about (the rate-limit key); `None` when the
    /// item cannot be read.
    fn target_of(&self, item: &[u8]) -> Option<String>;

    /// Deliver one item as written in the outbox; `Ok` only once the
    /// receiver accepted it. An error is logged and retried with backoff.
    fn send<'a>(&'a self, item: &'a [u8]) -> BoxFuture<'a, Result<(), SendError>>;
}

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
    /// The outlet's own error ([`super::smtp::SmtpError`], [`super::webhook::WebhookError`]).
    #[error(transparent)]
    Outlet(Box<dyn std::error::Error + Send + Sync>),
    /// The channel gave no answer within the sender's own limit.
    #[error("no answer within {}", crate::util::fmt_duration(*.0))]
    Timeout(std::time::Duration),
}
