//! The email outlet (`[notify.email]`): the mail built with lettre from a
//! [`Notice`] (a subject that sorts well in an inbox, the plain-text body
//! with an HTML alternative, `multipart/alternative`), written as one
//! `.eml` per mail to `outbox_dir` and delivered over [`super::smtp`] when
//! `smtp_url` is set. `X-Rollbackd-*` headers name the target, kind and
//! incident for mail filters and for the sender's per-target rate limit.
//!
//! Routing: a target's `[target.notify]` replaces the recipients (`to`)
//! and adds `cc`.

use std::path::Path;

use futures_util::future::BoxFuture;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};

use crate::config::{EmailConfig, NotifyConfig, TargetNotify};

use super::notice::Notice;
use super::outlet::{Outlet, Transport};
use super::smtp::SmtpChannel;
use super::{NotifyError, SendError};

/// `X-Rollbackd-Target`: the target a mail is about.
pub const TARGET_HEADER: HeaderName = HeaderName::new_from_ascii_str("X-Rollbackd-Target");
/// `X-Rollbackd-Kind`: the notification kind (`rolled_back`, ...).
pub const KIND_HEADER: HeaderName = HeaderName::new_from_ascii_str("X-Rollbackd-Kind");
/// `X-Rollbackd-Incident`: the incident ID, when the mail is about one.
pub const INCIDENT_HEADER: HeaderName = HeaderName::new_from_ascii_str("X-Rollbackd-Incident");

/// The email outlet, when `[notify.email]` is set.
pub fn outlets(cfg: &NotifyConfig) -> Vec<Box<dyn Outlet>> {
    cfg.email
        .iter()
        .map(|e| Box::new(Email(e.clone())) as Box<dyn Outlet>)
        .collect()
}

/// `[notify.email]`: one outbox for all mail (the recipients are in the
/// message).
#[derive(Debug)]
struct Email(EmailConfig);

impl Outlet for Email {
    fn channel(&self) -> String {
        "email".into()
    }

    fn outbox(&self) -> (&Path, &'static str) {
        (&self.0.outbox_dir, "eml")
    }

    fn tells(&self, _: Option<&TargetNotify>) -> bool {
        true
    }

    fn item(&self, notice: &Notice, route: Option<&TargetNotify>) -> Result<Vec<u8>, NotifyError> {
        let mut cfg = self.0.clone();
        if let Some(r) = route {
            if let Some(to) = &r.to {
                cfg.to = to.clone();
            }
            cfg.cc = r.cc.clone();
        }
        Ok(message(&cfg, notice)?.formatted())
    }

    fn transport(&self) -> Result<Option<Box<dyn Transport>>, NotifyError> {
        match &self.0.smtp {
            Some(smtp) => Ok(Some(Box::new(SmtpChannel::build(smtp)?))),
            None => Ok(None),
        }
    }
}

impl Transport for SmtpChannel {
    fn target_of(&self, item: &[u8]) -> Option<String> {
        header(item, "X-Rollbackd-Target")
    }

    fn send<'a>(&'a self, item: &'a [u8]) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            SmtpChannel::send(self, item)
                .await
                .map_err(|e| SendError::Outlet(Box::new(e)))
        })
    }
}

/// A header's value in an RFC 5322 message (first occurrence, unfolded).
pub(crate) fn header(bytes: &[u8], name: &str) -> Option<String> {
    super::smtp::headers(bytes)
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// The mail for a notice: From, To (one per configured mailbox), Cc,
/// Subject, Message-ID (`<ID.kind@rollbackd>`, so a mail sent twice is
/// recognisable as the same mail), Date, the `X-Rollbackd-*` headers, and
/// the plain body with its HTML alternative.
pub fn message(cfg: &EmailConfig, notice: &Notice) -> Result<lettre::Message, NotifyError> {
    let from: Mailbox = cfg
        .from
        .parse()
        .map_err(|e| NotifyError::Build(format!("invalid from address {:?}: {e}", cfg.from)))?;
    if cfg.to.is_empty() {
        return Err(NotifyError::Build("no recipients configured".into()));
    }
    let mut builder = lettre::Message::builder()
        .from(from)
        .subject(notice.subject.clone())
        .message_id(Some(notice.message_id.clone()))
        .date_now();
    for to in &cfg.to {
        let mailbox: Mailbox = to
            .parse()
            .map_err(|e| NotifyError::Build(format!("invalid recipient address {to:?}: {e}")))?;
        builder = builder.to(mailbox);
    }
    for cc in &cfg.cc {
        let mailbox: Mailbox = cc
            .parse()
            .map_err(|e| NotifyError::Build(format!("invalid cc address {cc:?}: {e}")))?;
        builder = builder.cc(mailbox);
    }
    builder = builder
        .raw_header(HeaderValue::new(TARGET_HEADER, notice.target.clone()))
        .raw_header(HeaderValue::new(KIND_HEADER, notice.kind.to_string()));
    if let Some(id) = &notice.incident {
        builder = builder.raw_header(HeaderValue::new(INCIDENT_HEADER, id.clone()));
    }
    builder
        .multipart(MultiPart::alternative_plain_html(
            notice.text.clone(),
            notice.html.clone(),
        ))
        .map_err(|e| {
            NotifyError::Build(match &notice.incident {
                Some(id) => format!("incident {id}: {e}"),
                None => format!("notification for {}: {e}", notice.target),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lookup_unfolds() {
        let eml = b"From: a@b\r\nX-Rollbackd-Target: web\r\nSubject: a\r\n b\r\n\r\nX-Rollbackd-Target: body";
        assert_eq!(header(eml, "x-rollbackd-target").as_deref(), Some("web"));
        assert_eq!(header(eml, "subject").as_deref(), Some("a b"));
        assert_eq!(header(eml, "to"), None);
    }
}
