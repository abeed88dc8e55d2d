//! SMTP delivery with lettre over rustls: plaintext to a local relay,
//! STARTTLS, or implicit TLS; optional AUTH with a password read from
//! `password_file` or `ROLLBACKD_SMTP_PASSWORD` at start (never from the
//! config file, never logged). Sends the `.eml` bytes of the outbox exactly
//! as written, with the envelope taken from their `From` and `To` headers.

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::config::{SmtpConfig, SmtpSecurity};

use super::NotifyError;

/// The environment variable read for the password when `password_file` is not set.
pub const PASSWORD_ENV: &str = "ROLLBACKD_SMTP_PASSWORD";

/// Delivers outbox mail to one SMTP server.
#[derive(Clone)]
pub struct SmtpChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    server: String,
}

impl std::fmt::Debug for SmtpChannel {
    // The transport holds the credentials: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpChannel")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Where the password comes from, resolved at start.
fn password(cfg: &SmtpConfig) -> Result<String, NotifyError> {
    if let Some(file) = &cfg.password_file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            NotifyError::Setup(format!(
                "cannot read notify.email.password_file {}: {e}",
                file.display()
            ))
        })?;
        let pw = text.trim_end_matches(['\r', '\n']).to_string();
        if pw.is_empty() {
            return Err(NotifyError::Setup(format!(
                "notify.email.password_file {} is empty",
                file.display()
            )));
        }
        return Ok(pw);
    }
    match std::env::var(PASSWORD_ENV) {
        Ok(pw) if !pw.is_empty() => Ok(pw),
        _ => Err(NotifyError::Setup(format!(
            "notify.email.username is set but there is no password: set password_file or {PASSWORD_ENV}"
        ))),
    }
}

impl SmtpChannel {
    /// Build the transport (reads the password); does not connect.
    pub fn build(cfg: &SmtpConfig) -> Result<SmtpChannel, NotifyError> {
        let scheme = match cfg.security {
            SmtpSecurity::Plain => "smtp",
            SmtpSecurity::StartTls => "smtp+starttls",
            SmtpSecurity::Tls => "smtps",
        };
        let server = format!("{scheme}://{}:{}", cfg.host, cfg.port);
        let tls = |host: &str| {
            TlsParameters::new(host.to_string())
                .map_err(|e| NotifyError::Setup(format!("TLS setup for {server}: {e}")))
        };
        let tls = match cfg.security {
            SmtpSecurity::Plain => Tls::None,
            SmtpSecurity::StartTls => Tls::Required(tls(&cfg.host)?),
            SmtpSecurity::Tls => Tls::Wrapper(tls(&cfg.host)?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.host)
            .port(cfg.port)
            .tls(tls)
            .timeout(Some(cfg.timeout));
        if let Some(user) = &cfg.username {
            builder = builder.credentials(Credentials::new(user.clone(), password(cfg)?));
        }
        Ok(SmtpChannel {
            transport: builder.build(),
            server,
        })
    }

    /// The server, for logs (`smtps://host:port`).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Send one `.eml` as written in the outbox.
    pub async fn send(&self, eml: &[u8]) -> Result<(), String> {
        let envelope = envelope(eml)?;
        match self.transport.send_raw(&envelope, eml).await {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("{}: {}", self.server, describe(&e))),
        }
    }
}

/// lettre's error with its causes, saying whether the server refused.
fn describe(e: &lettre::transport::smtp::Error) -> String {
    use std::error::Error as _;
    let mut s = if e.is_permanent() {
        format!("server refused permanently: {e}")
    } else if e.is_transient() {
        format!("server refused for now: {e}")
    } else {
        e.to_string()
    };
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        source = cause.source();
    }
    s
}

/// The envelope from a message's `From` and `To` headers.
pub fn envelope(eml: &[u8]) -> Result<lettre::address::Envelope, String> {
    let text = String::from_utf8_lossy(eml);
    let head = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))
        .map_or(text.as_ref(), |(h, _)| h);
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let from = get("from")
        .first()
        .ok_or("message has no From header")?
        .parse::<lettre::message::Mailbox>()
        .map_err(|e| format!("invalid From header: {e}"))?;
    let mut to = Vec::new();
    for value in get("to").into_iter().chain(get("cc")) {
        let list: lettre::message::Mailboxes = value
            .parse()
            .map_err(|e| format!("invalid recipient header {value:?}: {e}"))?;
        to.extend(list.into_iter().map(|m| m.email));
    }
    lettre::address::Envelope::new(Some(from.email), to).map_err(|e| format!("no envelope: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_from_headers() {
        let eml = b"From: rollbackd <rb@example.org>\r\nTo: a@example.org,\r\n Ops <ops@example.org>\r\nSubject: x\r\n\r\nTo: not@header.org\r\n";
        let e = envelope(eml).unwrap();
        assert_eq!(e.from().unwrap().to_string(), "rb@example.org");
        let to: Vec<String> = e.to().iter().map(|a| a.to_string()).collect();
        assert_eq!(to, ["a@example.org", "ops@example.org"]);
        assert!(envelope(b"Subject: x\r\n\r\n")
            .unwrap_err()
            .contains("From"));
    }

    #[test]
    fn password_from_file_or_env_never_from_config() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let cfg = SmtpConfig {
            host: "127.0.0.1".into(),
            port: 25,
            security: SmtpSecurity::Plain,
            username: Some("rb".into()),
            password_file: Some(file.clone()),
            timeout: std::time::Duration::from_secs(5),
        };
        assert_eq!(password(&cfg).unwrap(), "s3cret");
        let ch = SmtpChannel::build(&cfg).unwrap();
        assert!(!format!("{ch:?}").contains("s3cret"));
        std::fs::write(&file, "\n").unwrap();
        assert!(password(&cfg).unwrap_err().to_string().contains("is empty"));
        let missing = SmtpConfig {
            password_file: Some(dir.path().join("nope")),
            ..cfg
        };
        let err = password(&missing).unwrap_err().to_string();
        assert!(
            err.contains("cannot read notify.email.password_file"),
            "{err}"
        );
        assert!(err.contains("nope"), "{err}");
    }
}
