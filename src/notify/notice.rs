//! What every outlet builds its outbox item from: one notification,
//! already rendered ([`super::text`] makes it from an incident or a target
//! message). Plain data, so an outlet's file needs neither `decide` nor the
//! notifier: it reads the parts it sends (a mail the subject and bodies, a
//! webhook or pager the versioned JSON event).

/// One notification about one target, rendered once for every outlet.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// The target it is about (rate-limit key, `X-Rollbackd-Target`).
    pub target: String,
    /// The kind as the journal spells it (`rolled_back`, `blind`, ...).
    pub kind: &'static str,
    /// The stable key: the outbox file name's key, a webhook's
    /// `Idempotency-Key`, the Message-ID's local part.
    pub key: String,
    /// `<key@rollbackd>`: the same notification sent twice is recognisable.
    pub message_id: String,
    /// The incident ID, when it is about one.
    pub incident: Option<String>,
    /// The subject line (`[rollbackd] frontend: ROLLED BACK v2 -> v1`).
    pub subject: String,
    /// The plain-text body.
    pub text: String,
    /// The HTML alternative of `text`.
    pub html: String,
    /// The versioned JSON event (`rollbackd.notification/v1`,
    /// docs/notifications.md): what machine outlets send or map.
    pub event: serde_json::Value,
}
