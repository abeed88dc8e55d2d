//! The email for an incident event, built with lettre: a subject that sorts
//! well in an inbox (`[rollbackd] frontend: ROLLED BACK v2 -> v1`) and a
//! plain-text body made from the record.

use crate::config::EmailConfig;
use crate::decide::{Incident, NotifyKind};

use super::NotifyError;

/// Subject line for this event.
pub fn subject(kind: NotifyKind, incident: &Incident) -> String {
    todo!("{kind:?} {incident:?}")
}

/// Build the message.
pub fn build(
    cfg: &EmailConfig,
    kind: NotifyKind,
    incident: &Incident,
    public_url: Option<&url::Url>,
) -> Result<lettre::Message, NotifyError> {
    todo!("{cfg:?} {kind:?} {incident:?} {public_url:?}")
}
