//! Puts one notification together: the [`Notice`] made once from an
//! incident or a target message, with the words of [`super::text`] and the
//! JSON event of [`super::event`], for every outlet to build its item from.

use super::email::EmailConfig;
use crate::decide::{Incident, NotifyKind};

use super::notice::Notice;
use super::text::{body, html, id_atom, incident_url, kind_name, label, message_id, subject};
use super::{event, outbox, ConfirmLinks, NotifyError};

/// The notice for an incident event; `at` is the event's time.
pub fn incident_notice(
    kind: NotifyKind,
    incident: &Incident,
    public_url: Option<&url::Url>,
    links: Option<&ConfirmLinks>,
    at: chrono::DateTime<chrono::Utc>,
) -> Notice {
    let message_id = message_id(kind, incident);
    let text = body(kind, incident, public_url, links);
    let html = html(
        &text,
        links,
        incident_url(public_url, &incident.id).as_deref(),
    );
    Notice {
        target: incident.target.clone(),
        kind: kind_name(kind),
        key: outbox::local_part(Some(&message_id)),
        message_id,
        incident: Some(incident.id.clone()),
        subject: subject(kind, incident),
        text,
        html,
        event: event::incident_event(kind, incident, public_url, links, at),
    }
}

/// The notice about a target that is not about an incident (monitoring
/// blind, seeing again): subject `[rollbackd] TARGET: LABEL`, the message
/// as the body, a Message-ID unique per target, kind and time.
pub fn target_notice(
    kind: NotifyKind,
    target: &str,
    message: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Notice {
    let message_id = format!(
        "<{}.{}.{}@rollbackd>",
        id_atom(target),
        kind_name(kind),
        at.format("%Y%m%dT%H%M%S%.3fZ")
    );
    let key = outbox::local_part(Some(&message_id));
    let text = format!(
        "{message}\n\nTarget: {target}\nAt:     {}\n",
        at.to_rfc3339()
    );
    Notice {
        target: target.to_string(),
        kind: kind_name(kind),
        event: event::target_event(kind, target, message, &key, at),
        key,
        message_id,
        incident: None,
        subject: format!("[rollbackd] {target}: {}", label(kind)),
        html: html(&text, None, None),
        text,
    }
}

/// The mail for an incident event, as the email outlet writes it.
pub fn build(
    cfg: &EmailConfig,
    kind: NotifyKind,
    incident: &Incident,
    public_url: Option<&url::Url>,
    links: Option<&ConfirmLinks>,
) -> Result<lettre::Message, NotifyError> {
    let notice = incident_notice(kind, incident, public_url, links, chrono::Utc::now());
    super::email::message(cfg, &notice)
}

/// The mail for a target notification, as the email outlet writes it.
pub fn build_target(
    cfg: &EmailConfig,
    kind: NotifyKind,
    target: &str,
    message: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<lettre::Message, NotifyError> {
    super::email::message(cfg, &target_notice(kind, target, message, at))
}
