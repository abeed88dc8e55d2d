//! Validation of `[notify]`: email (SMTP URL, mailboxes), webhooks, rate limits.

use super::*;

pub(super) fn notify(
    cx: &mut Cx,
    raw: RawNotify,
    state_dir: Option<PathBuf>,
) -> Option<NotifyConfig> {
    let p = "notify";
    let give_up_after = cx.duration(
        p,
        "give_up_after",
        raw.give_up_after.as_deref(),
        DEFAULT_GIVE_UP_AFTER,
        true,
    );
    let max_per_target_per_hour = per_hour(
        cx,
        "notify.max_per_target_per_hour",
        raw.max_per_target_per_hour,
        DEFAULT_MAX_PER_TARGET_PER_HOUR,
    );
    let max_per_hour = per_hour(
        cx,
        "notify.max_per_hour",
        raw.max_per_hour,
        DEFAULT_MAX_PER_HOUR,
    );
    let email_outbox = raw.email.as_ref().and_then(|e| e.outbox_dir.clone());
    let email = match raw.email {
        None => Some(None),
        Some(e) => email(cx, "notify.email", e, state_dir.clone()).map(Some),
    };
    let webhooks: Vec<Option<WebhookConfig>> = raw
        .webhook
        .iter()
        .enumerate()
        .map(|(i, w)| webhook(cx, &format!("notify.webhook[{i}]"), w))
        .collect();
    for (i, w) in raw.webhook.iter().enumerate() {
        let Some(name) = w.name.as_deref() else {
            continue;
        };
        if let Some(first) = raw.webhook[..i]
            .iter()
            .position(|o| o.name.as_deref() == Some(name))
        {
            cx.err(
                format!("notify.webhook[{i}].name"),
                format!("duplicate webhook name {name:?} (also used by notify.webhook[{first}])"),
            );
        }
    }
    let outbox_dir = match email_outbox {
        Some(d) if !d.trim().is_empty() => Some(PathBuf::from(d)),
        _ => state_dir.map(|s| s.join("outbox")),
    };
    Some(NotifyConfig {
        email: email?,
        webhooks: webhooks.into_iter().collect::<Option<_>>()?,
        give_up_after: give_up_after?,
        max_per_target_per_hour: max_per_target_per_hour?,
        max_per_hour: max_per_hour?,
        outbox_dir: outbox_dir?,
        routes: Default::default(),
    })
}

/// A positive count per hour.
pub(super) fn per_hour(
    cx: &mut Cx,
    path: &str,
    value: Option<i64>,
    default: u32,
) -> Option<NonZeroU32> {
    match value {
        None => NonZeroU32::new(default),
        Some(n) => match u32::try_from(n).ok().and_then(NonZeroU32::new) {
            Some(n) => Some(n),
            None => {
                cx.err(
                    path,
                    format!("{n} must be a positive number of notifications per hour"),
                );
                None
            }
        },
    }
}

pub(super) fn webhook(cx: &mut Cx, p: &str, raw: &RawWebhook) -> Option<WebhookConfig> {
    let url = cx
        .required(p, "url", raw.url.as_deref())
        .and_then(|u| cx.http_url(&join(p, "url"), u));
    let format = cx.choice(
        p,
        "format",
        raw.format.as_deref(),
        &WebhookFormat::choices(),
    );
    let name = match raw.name.as_deref() {
        None => Some(None),
        Some(n) => cx
            .non_empty(&join(p, "name"), n)
            .map(|n| Some(n.to_string())),
    };
    let secret = match raw.secret.as_deref() {
        None => Some(None),
        Some(s) => cx
            .non_empty(&join(p, "secret"), s)
            .map(|s| Some(s.to_string())),
    };
    if raw.secret.is_some() && format.is_some_and(|f| f.format().sign.is_none()) {
        let signing: Vec<String> = WebhookFormat::ALL
            .iter()
            .map(|f| f.format())
            .filter(|f| f.sign.is_some())
            .map(|f| format!("{:?}", f.name))
            .collect();
        cx.err(
            join(p, "secret"),
            format!(
                "secret applies to format {} (request signing) only",
                signing.join(" and ")
            ),
        );
    }
    let timeout = cx.duration(
        p,
        "timeout",
        raw.timeout.as_deref(),
        DEFAULT_NOTIFY_TIMEOUT,
        true,
    );
    Some(WebhookConfig {
        url: url?,
        format: format?,
        timeout: timeout?,
        name: name?,
        secret: secret?,
    })
}

/// `smtp_url` into host, port and security. Credentials in the URL are
/// refused: the password would sit in the config file.
pub(super) fn smtp_url(
    cx: &mut Cx,
    path: &str,
    value: &str,
) -> Option<(String, u16, SmtpSecurity)> {
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

pub(super) fn smtp(cx: &mut Cx, p: &str, raw: &RawEmail) -> Option<Option<SmtpConfig>> {
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
pub(super) fn mailbox(cx: &mut Cx, path: &str, value: &str) -> Option<String> {
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

pub(super) fn email(
    cx: &mut Cx,
    p: &str,
    raw: RawEmail,
    state_dir: Option<PathBuf>,
) -> Option<EmailConfig> {
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
