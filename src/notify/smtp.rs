//! SMTP delivery with lettre over rustls: plaintext to a local relay,
//! STARTTLS, or implicit TLS; optional AUTH with a password read from
//! `password_file` or `ROLLBACKD_SMTP_PASSWORD` at start (never from the
//! config file, never logged). Sends the `.eml` bytes of the outbox exactly
//! as written, with the envelope taken from their `From` and `To` headers.

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, TlsParameters};

use std::path::PathBuf;
use std::time::Duration;

use super::outlet::NotifyError;

/// `smtp_url`, `username`, `password_file`, `timeout` of `[notify.email]`.
/// The password itself is read at daemon start (file or environment), never
/// from the config file.
#[derive(Debug, Clone, PartialEq)]
pub struct SmtpConfig {
    /// Server host name (also the name the TLS certificate must carry).
    pub host: String,
    /// Server port (default 25, 587 with STARTTLS, 465 for `smtps://`).
    pub port: u16,
    /// How the connection is protected.
    pub security: SmtpSecurity,
    /// AUTH user; `None`: no authentication.
    pub username: Option<String>,
    /// File whose trimmed content is the password; else `ROLLBACKD_SMTP_PASSWORD`.
    pub password_file: Option<PathBuf>,
    /// Bounds connecting and each SMTP command, so a slow server cannot hold a mail forever.
    pub timeout: Duration,
    /// PEM file of root certificates trusted besides the Mozilla roots
    /// (an internal relay with a private CA); read at daemon start.
    pub ca_file: Option<PathBuf>,
}

/// The scheme and `tls` parameter of `smtp_url`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtp://`: plaintext, for a local relay.
    Plain,
    /// `smtp://...?tls=starttls`: upgrade with STARTTLS, required.
    StartTls,
    /// `smtps://`: implicit TLS from the first byte.
    Tls,
}

/// Why an outbox `.eml` has no SMTP envelope; names the header at fault.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// No `From` header to take the sender from.
    #[error("message has no From header")]
    NoFrom,
    /// The `From` header is not one mailbox.
    #[error("invalid From header {value:?}: {detail}")]
    From {
        /// The header's value.
        value: String,
        /// Why lettre refused it.
        detail: lettre::address::AddressError,
    },
    /// A `To` or `Cc` header is not a list of mailboxes.
    #[error("invalid recipient header {value:?}: {detail}")]
    Recipient {
        /// The header's value.
        value: String,
        /// Why lettre refused it.
        detail: lettre::address::AddressError,
    },
    /// lettre refused the envelope (no recipient).
    #[error("no envelope: {0}")]
    Envelope(lettre::error::Error),
}

/// Why one mail was not delivered this attempt (the sender logs it and
/// retries with backoff).
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    /// The `.eml` has no usable envelope.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The SMTP server refused, or could not be reached or trusted.
    #[error("{server}: {}", describe(detail, host))]
    Smtp {
        /// `smtps://host:port`.
        server: String,
        /// The host the certificate must name (for the TLS hint).
        host: String,
        /// lettre's error (printed with its causes, each once).
        detail: lettre::transport::smtp::Error,
    },
    /// A phase of the SMTP conversation got no answer within
    /// `notify.email.timeout`.
    #[error("{server}: no answer to {phase} within {} (notify.email.timeout)", crate::util::fmt_duration(*timeout))]
    SmtpTimeout {
        /// `smtps://host:port`.
        server: String,
        /// `connect`, `greeting`, `EHLO`, `STARTTLS`, `AUTH`, ...
        phase: &'static str,
        /// `notify.email.timeout`.
        timeout: std::time::Duration,
    },
    /// The SMTP server could not be reached.
    #[error("{server}: cannot connect: {error}")]
    SmtpConnect {
        /// `smtp://host:port`.
        server: String,
        /// Refused, unreachable, no such host.
        error: std::io::Error,
    },
}

/// The environment variable read for the password when `password_file` is not set.
pub const PASSWORD_ENV: &str = "ROLLBACKD_SMTP_PASSWORD";

/// Delivers outbox mail to one SMTP server.
#[derive(Clone)]
pub struct SmtpChannel {
    settings: super::smtp_phases::Settings,
    server: String,
    host: String,
}

impl std::fmt::Debug for SmtpChannel {
    // The settings hold the credentials: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpChannel")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// The content of the file named by `notify.email.KEY`, read at start.
fn read(key: &str, file: &std::path::Path) -> Result<Vec<u8>, NotifyError> {
    std::fs::read(file).map_err(|e| {
        NotifyError::Setup(format!(
            "cannot read notify.email.{key} {}: {e}",
            file.display()
        ))
    })
}

/// Where the password comes from, resolved at start.
fn password(cfg: &SmtpConfig) -> Result<String, NotifyError> {
    if let Some(file) = &cfg.password_file {
        let text = String::from_utf8(read("password_file", file)?).map_err(|_| {
            NotifyError::Setup(format!(
                "notify.email.password_file {} is not UTF-8 text",
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

/// rustls with the Mozilla roots, plus the certificates of `ca_file`.
fn tls_parameters(cfg: &SmtpConfig, server: &str) -> Result<TlsParameters, NotifyError> {
    let mut builder = TlsParameters::builder(cfg.host.clone());
    if let Some(file) = &cfg.ca_file {
        let pem = read("ca_file", file)?;
        // lettre skips what is not a certificate: an empty or wrong file
        // would silently add nothing.
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(NotifyError::Setup(format!(
                "notify.email.ca_file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                file.display()
            )));
        }
        let cert = Certificate::from_pem(&pem).map_err(|e| {
            NotifyError::Setup(format!(
                "notify.email.ca_file {} is not valid PEM: {e}",
                file.display()
            ))
        })?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build_rustls().map_err(|e| {
        let ca = cfg
            .ca_file
            .as_ref()
            .map(|f| format!(" (with notify.email.ca_file {})", f.display()))
            .unwrap_or_default();
        NotifyError::Setup(format!("TLS setup for {server}{ca}: {e}"))
    })
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
        use super::smtp_phases::Implicit;
        let tls = match cfg.security {
            SmtpSecurity::Plain => None,
            SmtpSecurity::StartTls => Some((tls_parameters(cfg, &server)?, Implicit::No)),
            SmtpSecurity::Tls => Some((tls_parameters(cfg, &server)?, Implicit::Yes)),
        };
        let credentials = match &cfg.username {
            Some(user) => Some(Credentials::new(user.clone(), password(cfg)?)),
            None => None,
        };
        Ok(SmtpChannel {
            settings: super::smtp_phases::Settings {
                host: cfg.host.clone(),
                port: cfg.port,
                tls,
                credentials,
                timeout: cfg.timeout,
            },
            server,
            host: cfg.host.clone(),
        })
    }

    /// The server, for logs (`smtps://host:port`).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Send one `.eml` as written in the outbox; every phase of the SMTP
    /// conversation within `notify.email.timeout`.
    pub async fn send(&self, eml: &[u8]) -> Result<(), SmtpError> {
        use super::smtp_phases::{deliver, Failed};
        let envelope = envelope(eml)?;
        match deliver(&self.settings, &envelope, eml).await {
            Ok(()) => Ok(()),
            Err(Failed::Timeout { phase }) => Err(SmtpError::SmtpTimeout {
                server: self.server.clone(),
                phase,
                timeout: self.settings.timeout,
            }),
            Err(Failed::Connect(error)) => Err(SmtpError::SmtpConnect {
                server: self.server.clone(),
                error,
            }),
            Err(Failed::Smtp(detail)) => Err(SmtpError::Smtp {
                server: self.server.clone(),
                host: self.host.clone(),
                detail,
            }),
        }
    }
}

/// lettre's error with its causes (each said once), saying whether the
/// server refused, and what to check when the certificate was not trusted.
pub(crate) fn describe(e: &lettre::transport::smtp::Error, host: &str) -> String {
    // lettre prints a cause after its own label ("Connection error: CAUSE")
    // and nests errors of the same kind: keep each level's label once.
    let mut parts: Vec<String> = Vec::new();
    let mut level: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = level {
        let text = err.to_string();
        let own = match err.source() {
            Some(cause) => text
                .strip_suffix(&cause.to_string())
                .map(|l| l.trim_end_matches([' ', ':']).to_string())
                .unwrap_or(text),
            None => text,
        };
        if !own.is_empty() && parts.last() != Some(&own) {
            parts.push(own);
        }
        level = err.source();
    }
    let mut s = if e.is_permanent() {
        "server refused permanently: ".to_string()
    } else if e.is_transient() {
        "server refused for now: ".to_string()
    } else {
        String::new()
    };
    let said = parts.join(": ");
    let mut chars = said.chars();
    if let Some(first) = chars.next() {
        s.extend(first.to_lowercase());
        s.push_str(chars.as_str());
    }
    if s.contains("certificate") {
        s.push_str(&format!(
            " (the server's TLS certificate is not trusted for {host}: is the CA that signed it in notify.email.ca_file, and does it name {host}?)"
        ));
    }
    s
}

/// The header fields of an RFC 5322 message, in order, unfolded, names
/// lowercased.
pub(crate) fn headers(eml: &[u8]) -> Vec<(String, String)> {
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
    headers
}

/// The envelope from a message's `From` and `To` headers.
pub fn envelope(eml: &[u8]) -> Result<lettre::address::Envelope, EnvelopeError> {
    let headers = headers(eml);
    let get = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let value = *get("from").first().ok_or(EnvelopeError::NoFrom)?;
    let from = value
        .parse::<lettre::message::Mailbox>()
        .map_err(|detail| EnvelopeError::From {
            value: value.to_string(),
            detail,
        })?;
    let mut to = Vec::new();
    for value in get("to").into_iter().chain(get("cc")) {
        let list: lettre::message::Mailboxes =
            value.parse().map_err(|detail| EnvelopeError::Recipient {
                value: value.to_string(),
                detail,
            })?;
        to.extend(list.into_iter().map(|m| m.email));
    }
    lettre::address::Envelope::new(Some(from.email), to).map_err(EnvelopeError::Envelope)
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
        assert!(matches!(
            envelope(b"Subject: x\r\n\r\n"),
            Err(EnvelopeError::NoFrom)
        ));
        let e = envelope(b"From: not an address\r\nTo: a@example.org\r\n\r\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid From header \"not an address\": "),
            "{e}"
        );
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
            ca_file: None,
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

    #[test]
    fn a_bad_ca_file_is_named_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = |ca: &std::path::Path| SmtpConfig {
            host: "mail.example.com".into(),
            port: 465,
            security: SmtpSecurity::Tls,
            username: None,
            password_file: None,
            timeout: std::time::Duration::from_secs(5),
            ca_file: Some(ca.to_path_buf()),
        };
        let err = |ca: &std::path::Path| SmtpChannel::build(&cfg(ca)).unwrap_err().to_string();

        let missing = dir.path().join("missing.pem");
        let e = err(&missing);
        assert!(
            e.contains("cannot read notify.email.ca_file") && e.contains("missing.pem"),
            "{e}"
        );

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = err(&empty);
        assert!(e.contains("empty.pem holds no PEM certificate"), "{e}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = err(&garbage);
        assert!(e.contains("garbage.pem"), "{e}");
    }
}
