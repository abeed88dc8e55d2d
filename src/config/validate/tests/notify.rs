//! `[notify]`: SMTP and webhooks.

use super::*;

#[test]
fn notify_smtp_and_webhooks() {
    let c = load_str("t", &config(&[])).unwrap();
    assert_eq!(c.notify.give_up_after, Duration::from_secs(24 * 3600));
    assert_eq!(c.notify.max_per_target_per_hour.get(), 20);
    assert_eq!(c.notify.max_per_hour.get(), 60);
    assert!(c.notify.webhooks.is_empty());
    assert_eq!(
        c.notify.outbox_dir,
        PathBuf::from("/var/lib/rollbackd/outbox")
    );

    let mail = |extra: &str| {
        let text = config(&[(
            "top",
            &format!("[notify.email]\nfrom = \"r@h\"\nto = [\"a@example.com\"]\n{extra}"),
        )]);
        load_str("t", &text).unwrap().notify.email.unwrap().smtp
    };
    assert_eq!(mail(""), None);
    let smtp = |host: &str, port, security| SmtpConfig {
        host: host.into(),
        port,
        security,
        username: None,
        password_file: None,
        timeout: Duration::from_secs(30),
        ca_file: None,
    };
    for (url, want) in [
        (
            "smtp://127.0.0.1",
            smtp("127.0.0.1", 25, SmtpSecurity::Plain),
        ),
        (
            "smtp://127.0.0.1:2525/",
            smtp("127.0.0.1", 2525, SmtpSecurity::Plain),
        ),
        (
            "smtp://mail.example.com?tls=starttls",
            smtp("mail.example.com", 587, SmtpSecurity::StartTls),
        ),
        (
            "smtps://mail.example.com",
            smtp("mail.example.com", 465, SmtpSecurity::Tls),
        ),
        ("smtps://[::1]:1465", smtp("::1", 1465, SmtpSecurity::Tls)),
    ] {
        assert_eq!(mail(&format!("smtp_url = {url:?}")), Some(want), "{url}");
    }
    let auth = mail("smtp_url = \"smtps://mail.example.com\"\nusername = \"rb\"\npassword_file = \"/etc/rb/pw\"\ntimeout = \"5s\"").unwrap();
    assert_eq!(auth.username.as_deref(), Some("rb"));
    assert_eq!(auth.password_file, Some(PathBuf::from("/etc/rb/pw")));
    assert_eq!(auth.timeout, Duration::from_secs(5));
    let ca =
        mail("smtp_url = \"smtp://mail.example.com?tls=starttls\"\nca_file = \"/etc/rb/ca.pem\"")
            .unwrap();
    assert_eq!(ca.ca_file, Some(PathBuf::from("/etc/rb/ca.pem")));
    // Username without password_file: the password comes from the environment.
    assert!(mail("smtp_url = \"smtp://127.0.0.1:25\"\nusername = \"rb\"").is_some());

    let c = load_str(
        "t",
        &config(&[
            ("daemon", "state_dir = \"/tmp/rb\""),
            ("top", "[notify]\ngive_up_after = \"1h\"\nmax_per_hour = 5\nmax_per_target_per_hour = 2\n[[notify.webhook]]\nurl = \"https://chat.example.com/hook\"\n[[notify.webhook]]\nurl = \"http://127.0.0.1:1/\"\nformat = \"slack\"\ntimeout = \"2s\""),
        ]),
    )
    .unwrap();
    let n = &c.notify;
    assert_eq!(n.give_up_after, Duration::from_secs(3600));
    assert_eq!(
        (n.max_per_hour.get(), n.max_per_target_per_hour.get()),
        (5, 2)
    );
    assert_eq!(n.outbox_dir, PathBuf::from("/tmp/rb/outbox"));
    assert_eq!(n.webhooks.len(), 2);
    assert_eq!(n.webhooks[0].format, WebhookFormat::Json);
    assert_eq!(n.webhooks[0].timeout, Duration::from_secs(30));
    assert_eq!(n.webhooks[1].format, WebhookFormat::Slack);
    assert_eq!(n.webhooks[1].timeout, Duration::from_secs(2));
}
