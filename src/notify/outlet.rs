//! The seam every notification outlet plugs into: an [`Outlet`] says which
//! targets it tells, builds its outbox item from a [`Notice`], names its
//! outbox directory and gives the [`Transport`] that delivers from it. The
//! notifier and the delivery loop only ever see these two traits: the
//! durable outbox, merging, retries, `give_up_after`, rate limits and the
//! metrics are the same for every outlet.
//!
//! **Adding an outlet** (PagerDuty, Opsgenie, ...): a file
//! `src/notify/OUTLET.rs` implementing [`Outlet`] and [`Transport`] with a
//! `pub fn outlets(&NotifyConfig) -> Vec<Box<dyn Outlet>>`, and its entry
//! in the `outlets!` list of `notify/mod.rs`, the one place outlets are
//! registered.

use std::fmt::Debug;
use std::path::Path;

use futures_util::future::BoxFuture;

use crate::config::TargetNotify;

use super::notice::Notice;
use super::{NotifyError, SendError};

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
