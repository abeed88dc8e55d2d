//! A target's notification route (`[target.notify]`) and the
//! [`Severity`] it filters by: shared by every notification outlet (each
//! reads the keys that concern it: email `to` and `cc`, webhooks
//! `webhooks`), and by `decide`, which gives each notification its
//! severity. A leaf: it imports nothing of the crate, so an outlet's file
//! can name it without importing `config/mod.rs`.

/// How much a notification matters (`[target.notify] min_severity`); each
/// `NotifyKind` has one.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Nothing to do: monitoring blind or seeing again, a pause ended, a
    /// shadow rule would have acted, signals recovered.
    #[default]
    Info,
    /// Someone should look: a human must confirm, a guard escalated, a
    /// dry-run would have rolled back, a rollback was rejected.
    Warning,
    /// An action on the service: a rollback started, ended or failed.
    Critical,
}

/// `[target.notify]`: where this target's notifications go.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetNotify {
    /// Replaces `notify.email.to` for this target; `None`: the global list.
    pub to: Option<Vec<String>>,
    /// Copied on this target's mail.
    pub cc: Vec<String>,
    /// Names of the webhooks this target notifies; `None`: every webhook.
    pub webhooks: Option<Vec<String>>,
    /// Notifications below this severity are not sent for this target.
    pub min_severity: Severity,
}
