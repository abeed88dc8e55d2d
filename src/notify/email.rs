//! The email outlet (`[notify.email]`): the mail built with lettre from a
//! [`Notice`] (a subject that sorts well in an inbox, the plain-text body
//! with an HTML alternative, `multipart/alternative`), written as one
//! `.eml` per mail to `outbox_dir` and delivered over [`super::smtp`] when
//! `smtp_url` is set. `X-Rollbackd-*` headers name the target, kind and
//! incident for mail filters and for the sender's per-target rate limit.
//!
//! Routing: a target's `[target.notify]` replaces the recipients (`to`)
//! and adds `cc`.
//!
//! Its config: the keys as written ([`RawEmail`]), their validation into
//! [`EmailConfig`] (SMTP URL, mailboxes, the password file; the SMTP types
//! are in [`super::smtp`]) and its [`Section`] (`Option<EmailConfig>`).

use std::path::{Path, PathBuf};

use futures_util::future::BoxFuture;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};

use crate::config::cx::Cx;
use crate::config::error::join;
use crate::config::route::TargetNotify;

use super::notice::Notice;
use super::outlet::{NotifyError, Outlet, SendError, Transport, DEFAULT_NOTIFY_TIMEOUT};
use super::smtp::{SmtpChannel, SmtpConfig, SmtpSecurity};

/// `X-Rollbackd-Target`: the target a mail is about.
pub const TARGET_HEADER: HeaderName = HeaderName::new_from_ascii_str("X-Rollbackd-Target");
/// `X-Rollbackd-Kind`: the notification kind (`rolled_back`, ...).
pub const KIND_HEADER: HeaderName = HeaderName::new_from_ascii_str("X-Rollbackd-Kind");
/// `X-Rollbackd-Incident`: the incident ID, when the mail is about one.
pub const INCIDENT_HEADER: HeaderName = HeaderName::new_from_ascii_str("X-Rollbackd-Incident");

/// `[notify.email]`.
#[derive(Debug, Clone, Default)]
pub struct EmailConfig {
    /// RFC 5322 mailbox, e.g. `rollbackd <rollbackd@host>`; checked by validation.
    pub from: String,
    /// At least one recipient mailbox.
    pub to: Vec<String>,
    /// Copied mailboxes (a target's `[target.notify] cc`).
    pub cc: Vec<String>,
    /// Every mail is written here first (default `state_dir/outbox`).
    pub outbox_dir: PathBuf,
    /// Where mail is delivered; `None`: it stays in the outbox.
    pub smtp: Option<SmtpConfig>,
}

/// `[notify.email]`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmail {
    /// Sender mailbox, e.g. `rollbackd <rollbackd@deploy-host>`.
    pub from: Option<String>,
    /// Recipient mailboxes.
    pub to: Option<Vec<String>>,
    /// SMTP server URL; absent: mail stays in the outbox.
    pub smtp_url: Option<String>,
    /// SMTP user name.
    pub username: Option<String>,
    /// File holding the SMTP password.
    pub password_file: Option<String>,
    /// Password in the config file: never accepted, parsed only to say so.
    pub password: Option<toml::Value>,
    /// Duration string: connection and send timeout.
    pub timeout: Option<String>,
    /// Directory every mail is written to.
    pub outbox_dir: Option<String>,
    /// PEM file of extra trusted root certificates (a private CA).
    pub ca_file: Option<String>,
}

/// `[notify.email]` in `NotifyConfig`: `None` without the section.
pub type Section = Option<EmailConfig>;

impl super::outlet::Section for Option<EmailConfig> {
    const KEY: &'static str = "email";
    const ARRAY: bool = false;
    type Raw = RawEmail;

    fn build(cx: &mut Cx, raw: Vec<RawEmail>, state_dir: Option<&Path>) -> Option<Self> {
        match raw.into_iter().next() {
            None => Some(None),
            Some(e) => email(cx, "notify.email", e, state_dir).map(Some),
        }
    }

    fn notifies_anyone(&self) -> bool {
        self.is_some()
    }

    fn outbox_dir(&self) -> Option<&Path> {
        self.as_ref().map(|e| e.outbox_dir.as_path())
    }

    fn check_route(&self, cx: &mut Cx, p: &str, route: &TargetNotify) {
        if (route.to.is_some() || !route.cc.is_empty()) && self.is_none() {
            cx.err(
                join(p, if route.to.is_some() { "to" } else { "cc" }),
                "recipients need a [notify.email] section (from, smtp_url)",
            );
        }
    }

    fn secret_files(&self) -> Vec<(String, PathBuf)> {
        self.iter()
            .filter_map(|e| e.smtp.as_ref()?.password_file.clone())
            .map(|p| ("notify.email.password_file".to_string(), p))
            .collect()
    }

    fn outlets(&self, _outbox_dir: &Path) -> Vec<Box<dyn Outlet>> {
        self.iter()
            .map(|e| Box::new(Email(e.clone())) as Box<dyn Outlet>)
            .collect()
    }
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

/// `smtp_url` into host, port and security. Credentials in the URL are
/// refused: the password would sit in the config file.
pub fn smtp_url(cx: &mut Cx, path: &str, value: &str) -> Option<(String, u16, SmtpSecurity)> {
    let hint = "use e.g. \"smtp://127.0.0.1:25\", \"smtp://mail.example.com:587?tls=starttls\" or \"smtps://mail.example.com:465\"";
    let url = match url::Url::parse(value) {
        Ok(u) => u,
        Err(e) => {
            cx.err(path, format!("invalid URL {value:?}: {e} ({hint})"));
            return None;
        }
    };
    let mut security = match url.scheme() {
        "smtp" => SmtpSecurity::Plain,
        "smtps" => SmtpSecurity::Tls,
        other => {
            cx.err(
                path,
                format!(
                    "URL {value:?} has scheme {other:?}; it must be smtp:// or smtps:// ({hint})"
                ),
            );
            return None;
        }
    };
    if !url.username().is_empty() || url.password().is_some() {
        cx.err(
            path,
            "credentials do not belong in smtp_url: set username, and the password in password_file or ROLLBACKD_SMTP_PASSWORD",
        );
        return None;
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        cx.err(path, format!("URL {value:?} has no host ({hint})"));
        return None;
    };
    if !matches!(url.path(), "" | "/") || url.fragment().is_some() {
        cx.err(path, format!("URL {value:?} must not have a path ({hint})"));
        return None;
    }
    for (k, v) in url.query_pairs() {
        match (k.as_ref(), v.as_ref(), security) {
            ("tls", "starttls", SmtpSecurity::Plain | SmtpSecurity::StartTls) => {
                security = SmtpSecurity::StartTls
            }
            ("tls", "starttls", SmtpSecurity::Tls) => {
                cx.err(
                    path,
                    format!("URL {value:?}: smtps:// is already TLS; tls=starttls is for smtp://"),
                );
                return None;
            }
            _ => {
                cx.err(
                    path,
                    format!("URL {value:?}: unknown parameter {k}={v:?} (only tls=starttls)"),
                );
                return None;
            }
        }
    }
    let port = url.port().unwrap_or(match security {
        SmtpSecurity::Plain => 25,
        SmtpSecurity::StartTls => 587,
        SmtpSecurity::Tls => 465,
    });
    // IPv6 hosts come bracketed from `host_str`.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Some((host, port, security))
}

/// The SMTP keys of `[notify.email]` (under `p`); `None` inside: no
/// `smtp_url`, mail stays in the outbox.
pub fn smtp(cx: &mut Cx, p: &str, raw: &RawEmail) -> Option<Option<SmtpConfig>> {
    if raw.password.is_some() {
        cx.err(
            join(p, "password"),
            "passwords are never read from the config file: put it in a file named by password_file, or in ROLLBACKD_SMTP_PASSWORD",
        );
    }
    let timeout = cx.duration(
        p,
        "timeout",
        raw.timeout.as_deref(),
        DEFAULT_NOTIFY_TIMEOUT,
        true,
    );
    let username = match raw.username.as_deref() {
        None => Some(None),
        Some(u) => cx.non_empty(&join(p, "username"), u).map(Some),
    };
    let password_file = match raw.password_file.as_deref() {
        None => Some(None),
        Some(f) => cx.absolute(&join(p, "password_file"), f).map(Some),
    };
    let ca_file = match raw.ca_file.as_deref() {
        None => Some(None),
        Some(f) => cx.absolute(&join(p, "ca_file"), f).map(Some),
    };
    let Some(url) = raw.smtp_url.as_deref() else {
        for (key, set) in [
            ("username", raw.username.is_some()),
            ("password_file", raw.password_file.is_some()),
            ("timeout", raw.timeout.is_some()),
            ("ca_file", raw.ca_file.is_some()),
        ] {
            if set {
                cx.err(
                    join(p, key),
                    format!("{key} is set but smtp_url is not (without smtp_url mail stays in outbox_dir)"),
                );
            }
        }
        return Some(None);
    };
    let parsed = smtp_url(cx, &join(p, "smtp_url"), url);
    if raw.password_file.is_some() && raw.username.is_none() {
        cx.err(
            join(p, "password_file"),
            "password_file is set but username is not",
        );
        return None;
    }
    let (host, port, security) = parsed?;
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if raw.username.is_some() && security == SmtpSecurity::Plain && !loopback {
        cx.err(
            join(p, "smtp_url"),
            format!("{url:?} is plaintext to a remote host and username is set: the password would cross the network unencrypted; use smtps:// or ?tls=starttls"),
        );
        return None;
    }
    if raw.ca_file.is_some() && security == SmtpSecurity::Plain {
        cx.err(
            join(p, "ca_file"),
            format!("ca_file is set but {url:?} is plaintext: a CA only matters with smtps:// or ?tls=starttls"),
        );
        return None;
    }
    Some(Some(SmtpConfig {
        host,
        port,
        security,
        username: username?,
        password_file: password_file?,
        timeout: timeout?,
        ca_file: ca_file?,
    }))
}

/// A single RFC 5322 mailbox.
pub fn mailbox(cx: &mut Cx, path: &str, value: &str) -> Option<String> {
    let several = value
        .parse::<lettre::message::Mailboxes>()
        .is_ok_and(|m| m.iter().count() > 1);
    if several {
        cx.err(
            path,
            format!("{value:?} holds several mailboxes; give one per list entry"),
        );
        return None;
    }
    match value.parse::<lettre::message::Mailbox>() {
        Ok(_) => Some(value.to_string()),
        Err(_) => {
            cx.err(
                path,
                format!("invalid mailbox {value:?} (use e.g. \"admin@example.com\" or \"Ops <ops@example.com>\")"),
            );
            None
        }
    }
}

/// `[notify.email]` under `p`; `outbox_dir` defaults to `state_dir/outbox`.
pub fn email(cx: &mut Cx, p: &str, raw: RawEmail, state_dir: Option<&Path>) -> Option<EmailConfig> {
    let smtp = smtp(cx, p, &raw);
    let from = cx
        .required(p, "from", raw.from.as_deref())
        .and_then(|f| mailbox(cx, &join(p, "from"), f));
    let to = match cx.required(p, "to", raw.to.as_deref()) {
        None => None,
        Some([]) => {
            cx.err(join(p, "to"), "no recipients: give at least one mailbox");
            None
        }
        Some(list) => {
            let checked: Vec<Option<String>> = list
                .iter()
                .enumerate()
                .map(|(i, m)| mailbox(cx, &format!("{p}.to[{i}]"), m))
                .collect();
            checked.into_iter().collect()
        }
    };
    let outbox_dir = match raw.outbox_dir.as_deref() {
        Some(d) => cx.non_empty(&join(p, "outbox_dir"), d).map(PathBuf::from),
        None => state_dir.map(|s| s.join("outbox")),
    };
    Some(EmailConfig {
        from: from?,
        to: to?,
        cc: Vec::new(),
        outbox_dir: outbox_dir?,
        smtp: smtp?,
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
