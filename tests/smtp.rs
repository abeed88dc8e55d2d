//! The real daemon delivering its mail to a real SMTP server (aiosmtpd on
//! loopback): a full incident, a server that is down and comes up later, a
//! restart with mail pending, a slow server beside a second target's
//! rollback, a flapping rule, and smtps:// to a relay whose private CA is
//! trusted only once `ca_file` names it.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::smtp::{free_port, Behaviour, Received, SmtpServer, TestCert, TlsMode};
use common::*;

/// A release tree, its demo service and a config for target `web` whose
/// mail goes to `smtp_url`. `notify` is added to `[notify]`, `email` to
/// `[notify.email]`, `daemon` to `[daemon]`.
fn setup(
    smtp_url: &str,
    notify: &str,
    email: &str,
    daemon: &str,
) -> (tempfile::TempDir, PathBuf, u16) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    rollbackd::demo::create_releases(&dir).unwrap();
    let port = serve_releases(&dir);
    let config = symlink_config(&dir, port, "")
        .replacen(
            "[notify.email]\n",
            &format!("[notify]\n{notify}\n\n[notify.email]\nsmtp_url = \"{smtp_url}\"\n{email}\n"),
            1,
        )
        .replacen("[daemon]\n", &format!("[daemon]\n{daemon}\n"), 1);
    std::fs::write(dir.join("rollbackd.toml"), config).unwrap();
    (tmp, dir, port)
}

fn wait_version_seen(state: &Path, target: &str, version: &str) {
    let what = format!("{target} at version {version} in the journal");
    wait_journal(state, &what, |e| {
        e["target"] == target
            && e["event"]["event"] == "version_observed"
            && e["event"]["version"] == version
    });
}

/// Start the daemon on `dir`, deploy the bad v2 once it has seen v1, and
/// wait until `server` has the ROLLED BACK mail and the outbox is empty.
fn rolled_back_over_smtp(dir: &Path, server: &SmtpServer) -> Running {
    let daemon = Running::start(&dir.join("rollbackd.toml"), &dir.join("daemon.log"));
    wait_version_seen(&dir.join("state"), "web", "v1");
    rollbackd::demo::switch_release(dir, "v2").unwrap();
    wait_for(
        Duration::from_secs(40),
        "the ROLLED BACK mail over SMTP",
        || {
            subjects(&server.received())
                .iter()
                .any(|s| s.contains("ROLLED BACK"))
                .then_some(())
        },
    );
    wait_outbox_empty(dir);
    daemon
}

/// Message-ID -> how many times it was received.
fn by_message_id(received: &[Received]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for r in received {
        let id = r.header("Message-ID").expect("every mail has a Message-ID");
        *out.entry(id).or_insert(0) += 1;
    }
    out
}

fn subjects(received: &[Received]) -> Vec<String> {
    received
        .iter()
        .map(|r| r.header("Subject").unwrap_or_default())
        .collect()
}

/// The subjects of the mails of web's incident, in the order written.
const INCIDENT_SUBJECTS: [&str; 2] = [
    "[rollbackd] web: ROLLING BACK v2 -> v1",
    "[rollbackd] web: ROLLED BACK v2 -> v1",
];

/// Wait until the ROLLED BACK mail (the incident's last) is in the outbox.
fn wait_rolled_back_mail_written(outbox: &Path) {
    wait_for(
        Duration::from_secs(40),
        "the ROLLED BACK mail in the outbox",
        || {
            mails(outbox)
                .iter()
                .any(|(_, m)| m.contains("ROLLED BACK"))
                .then_some(())
        },
    );
}

/// Wait until the outbox holds no mail (everything delivered and removed).
fn wait_outbox_empty(dir: &Path) {
    let outbox = dir.join("state/outbox");
    wait_for(
        Duration::from_secs(30),
        "an empty outbox (every mail delivered)",
        || mails(&outbox).is_empty().then_some(()),
    );
}

/// An HTTP server on a free port whose every answer is 503 for `bad`, then
/// 200 for `good`, over and over.
fn serve_flapping(bad: Duration, good: Duration) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let start = std::time::Instant::now();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let phase = start.elapsed().as_millis() % (bad + good).as_millis();
            let status = if phase < bad.as_millis() {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    port
}

#[test]
fn full_incident_delivers_the_expected_mails_to_every_recipient() {
    let tmp_smtp = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(tmp_smtp.path(), Behaviour::default());
    let (_tmp, dir, _) = setup(&server.url(), "", "", "");
    let daemon = rolled_back_over_smtp(&dir, &server);
    let received = server.received();
    assert_eq!(
        subjects(&received),
        INCIDENT_SUBJECTS,
        "the incident's mails, in order"
    );
    for (id, n) in by_message_id(&received) {
        assert_eq!(n, 1, "{id} delivered once");
    }

    let mail = received
        .iter()
        .find(|r| r.header("Subject").unwrap().contains("ROLLED BACK"))
        .unwrap();
    // Envelope: both recipients, the configured sender.
    let mut rcpt = mail.rcpt_tos.clone();
    rcpt.sort();
    assert_eq!(rcpt, ["admin@example.com", "oncall@example.com"]);
    assert_eq!(mail.mail_from, "rollbackd@test.invalid");
    // Headers.
    assert_eq!(
        mail.header("From").as_deref(),
        Some("rollbackd <rollbackd@test.invalid>")
    );
    assert_eq!(
        mail.header("To").as_deref(),
        Some("admin@example.com, oncall@example.com")
    );
    let id = mail.header("Message-ID").unwrap();
    assert!(
        id.starts_with('<') && id.ends_with("-web-1.rolled_back@rollbackd>"),
        "{id}"
    );
    assert_eq!(mail.header("X-Rollbackd-Target").as_deref(), Some("web"));
    assert_eq!(
        mail.header("X-Rollbackd-Kind").as_deref(),
        Some("rolled_back")
    );
    assert!(mail.header("Date").is_some());
    assert!(
        mail.header("Content-Type")
            .unwrap()
            .starts_with("multipart/alternative"),
        "plain text with an HTML alternative"
    );
    // Body fields, in the plain part and the HTML part.
    let text = mail.text();
    for want in [
        "rollbackd rolled web back from v2 to v1 and verified that it recovered.",
        "health = ",
        "> 0.5 (for 1s, window 3s)",
        "Versions:     v2 -> v1",
        "Method:       symlink",
        "Verification:",
        "Timeline (UTC):",
        "Confirmed by:",
        "Full record: `rollbackd report",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Type: text/html; charset=utf-8",
        "<p><strong>rollbackd rolled web back from v2 to v1",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn server_down_at_incident_time_and_started_10s_later_gets_each_mail_once() {
    let port = free_port();
    let (_tmp, dir, _) = setup(&format!("smtp://127.0.0.1:{port}"), "", "", "");
    let daemon = Running::start(&dir.join("rollbackd.toml"), &dir.join("daemon.log"));
    wait_version_seen(&dir.join("state"), "web", "v1");
    rollbackd::demo::switch_release(&dir, "v2").unwrap();
    let outbox = dir.join("state/outbox");
    wait_rolled_back_mail_written(&outbox);
    wait_for(
        Duration::from_secs(10),
        "a failed delivery attempt in the log",
        || {
            daemon
                .log_text()
                .contains("notification not delivered; will retry")
                .then_some(())
        },
    );
    // The server comes up 10 s later on the port the daemon uses.
    std::thread::sleep(Duration::from_secs(10));
    let smtp_dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start_on(port, smtp_dir.path(), Behaviour::default());
    wait_outbox_empty(&dir);
    let received = server.received();
    // Retries of different mails are not ordered; their Date headers are.
    let mut got = subjects(&received);
    got.sort();
    assert_eq!(
        got,
        vec![
            "[rollbackd] web: ROLLED BACK v2 -> v1".to_string(),
            "[rollbackd] web: ROLLING BACK v2 -> v1".to_string(),
        ]
    );
    assert!(by_message_id(&received).values().all(|&n| n == 1));
    assert_eq!(daemon.stop(), Some(0));
    assert_eq!(server.received().len(), 2, "nothing more after shutdown");
}

#[test]
fn mail_pending_at_restart_is_delivered_after_it_once() {
    let port = free_port();
    let (_tmp, dir, _) = setup(&format!("smtp://127.0.0.1:{port}"), "", "", "");
    let config = dir.join("rollbackd.toml");
    let daemon = Running::start(&config, &dir.join("daemon.log"));
    wait_version_seen(&dir.join("state"), "web", "v1");
    rollbackd::demo::switch_release(&dir, "v2").unwrap();
    let outbox = dir.join("state/outbox");
    wait_rolled_back_mail_written(&outbox);
    assert_eq!(daemon.stop(), Some(0));
    let pending = mails(&outbox);
    assert_eq!(pending.len(), 2, "both mails wait in the outbox");

    let smtp_dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start_on(port, smtp_dir.path(), Behaviour::default());
    let daemon = Running::start(&config, &dir.join("daemon2.log"));
    wait_outbox_empty(&dir);
    let received = server.received();
    assert_eq!(received.len(), 2, "{:?}", subjects(&received));
    assert!(by_message_id(&received).values().all(|&n| n == 1));
    // The same mails that were pending, byte for byte in their headers.
    for (_, eml) in &pending {
        let id = eml
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: "))
            .unwrap()
            .trim()
            .to_string();
        assert!(by_message_id(&received).contains_key(&id), "{id} delivered");
    }
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn a_slow_smtp_server_does_not_delay_another_targets_rollback() {
    let smtp_dir = tempfile::tempdir().unwrap();
    // Every DATA takes 60 s: the first mail holds the email channel that long.
    let server = SmtpServer::start(
        smtp_dir.path(),
        Behaviour {
            delay: Some(60.0),
            ..Behaviour::default()
        },
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (web, api) = (dir.join("web"), dir.join("api"));
    let mut targets = String::new();
    for (name, d) in [("web", &web), ("api", &api)] {
        std::fs::create_dir_all(d).unwrap();
        rollbackd::demo::create_releases(d).unwrap();
        let port = serve_releases(d);
        targets.push_str(&conf::demo_target(name, d, port, "", "1s"));
    }
    let config = format!(
        r#"
[daemon]
state_dir = "{dir}/state"
listen = "127.0.0.1:0"
poll_interval = "200ms"

[notify.email]
from = "rollbackd <rollbackd@test.invalid>"
to = ["admin@example.com"]
smtp_url = "{url}"
timeout = "120s"
{targets}"#,
        dir = dir.display(),
        url = server.url()
    );
    std::fs::write(dir.join("rollbackd.toml"), config).unwrap();
    let mut daemon = Running::start(&dir.join("rollbackd.toml"), &dir.join("daemon.log"));
    let state = dir.join("state");
    wait_version_seen(&state, "web", "v1");
    wait_version_seen(&state, "api", "v1");

    rollbackd::demo::switch_release(&web, "v2").unwrap();
    wait_for(
        Duration::from_secs(30),
        "web's first mail being sent",
        || {
            daemon
                .log_text()
                .contains("notification sender started")
                .then_some(())
                .and_then(|_| {
                    journal(&state)
                        .iter()
                        .any(|e| e["type"] == "notified" && e["target"] == "web")
                        .then_some(())
                })
        },
    );
    rollbackd::demo::switch_release(&api, "v2").unwrap();
    wait_for(Duration::from_secs(40), "api rolled back", || {
        journal(&state)
            .iter()
            .any(|e| e["target"] == "api" && e["to"] == "RolledBack")
            .then_some(())
    });
    assert_eq!(live(&api), "v1");
    assert!(
        server.received().is_empty(),
        "api's rollback finished while the slow server still held web's first mail"
    );
    daemon.assert_alive();
    assert_eq!(
        daemon.stop(),
        Some(0),
        "a send in flight does not hold up shutdown"
    );
}

#[test]
fn a_flapping_rule_produces_only_the_merged_notifications() {
    let tmp_smtp = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(tmp_smtp.path(), Behaviour::default());
    // Dry-run: a breach that holds `for` would roll back; cooldown 1m. The
    // probed service is bad for 1.5 s (longer than `for`), good for 1 s,
    // over and over; the daemon polls every 200 ms.
    let flapping = serve_flapping(Duration::from_millis(1500), Duration::from_millis(1000));
    let (_tmp, dir, port) = setup(&server.url(), "", "", "dry_run = true");
    let config = std::fs::read_to_string(dir.join("rollbackd.toml")).unwrap();
    std::fs::write(
        dir.join("rollbackd.toml"),
        config.replace(
            &format!("127.0.0.1:{port}/api/health"),
            &format!("127.0.0.1:{flapping}/api/health"),
        ),
    )
    .unwrap();
    let daemon = Running::start(&dir.join("rollbackd.toml"), &dir.join("daemon.log"));
    let state = dir.join("state");
    wait_for(
        Duration::from_secs(60),
        "the rule breaching 4 times",
        || {
            let entries = journal(&state);
            let breaches = entries
                .windows(2)
                .filter(|w| {
                    w[0]["state"]["rules"][0]["status"]["status"] != "breached"
                        && w[1]["state"]["rules"][0]["status"]["status"] == "breached"
                })
                .count();
            (breaches >= 4).then_some(())
        },
    );
    wait_outbox_empty(&dir);
    let received = server.received();
    assert!(
        by_message_id(&received).values().all(|&n| n == 1),
        "{:?}",
        subjects(&received)
    );
    let subjects = subjects(&received);
    assert!(
        subjects.len() == 1 && subjects[0].starts_with("[rollbackd] web: WOULD ROLL BACK "),
        "one incident, one mail, however often the rule flapped: {subjects:?}"
    );
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn a_username_without_a_password_stops_the_daemon_at_start() {
    let (_tmp, dir, _) = setup("smtp://127.0.0.1:2525", "", "username = \"rollbackd\"", "");
    let out = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(dir.join("rollbackd.toml"))
        .env_remove("ROLLBACKD_SMTP_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("notify.email.username is set but there is no password: set password_file or ROLLBACKD_SMTP_PASSWORD"),
        "{stderr}"
    );
}

#[test]
fn an_untrusted_smtps_relay_keeps_the_mail_until_ca_file_trusts_its_ca() {
    let smtp_dir = tempfile::tempdir().unwrap();
    let cert = TestCert::generate(smtp_dir.path(), "relay");
    let server = SmtpServer::start(
        smtp_dir.path(),
        Behaviour {
            auth: Some("rollbackd:tls pass".into()),
            tls: Some((TlsMode::Implicit, cert.clone())),
            ..Behaviour::default()
        },
    );
    let pw = smtp_dir.path().join("smtp-password");
    std::fs::write(&pw, "tls pass\n").unwrap();
    let url = format!("smtps://localhost:{}", server.port);
    let email = format!(
        "username = \"rollbackd\"\npassword_file = \"{}\"",
        pw.display()
    );
    let (_tmp, dir, _) = setup(&url, "", &email, "");
    let config = dir.join("rollbackd.toml");
    let outbox = dir.join("state/outbox");

    // Only the Mozilla roots: the relay's certificate is refused.
    let daemon = Running::start(&config, &dir.join("daemon.log"));
    wait_version_seen(&dir.join("state"), "web", "v1");
    rollbackd::demo::switch_release(&dir, "v2").unwrap();
    wait_rolled_back_mail_written(&outbox);
    let refused = wait_for(
        Duration::from_secs(20),
        "a refused certificate in the log",
        || {
            daemon
                .log_text()
                .lines()
                .find(|l| l.contains("notification not delivered; will retry"))
                .map(str::to_string)
        },
    );
    for want in [
        url.as_str(),
        "invalid peer certificate",
        "notify.email.ca_file",
    ] {
        assert!(refused.contains(want), "missing {want:?} in: {refused}");
    }
    assert_eq!(daemon.stop(), Some(0));
    assert!(server.received().is_empty(), "nothing sent without trust");
    assert_eq!(mails(&outbox).len(), 2, "both mails stay in the outbox");

    // Trust the private CA: the pending mail goes out over TLS, with AUTH.
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[notify.email]\n",
        &format!("[notify.email]\nca_file = \"{}\"\n", cert.ca.display()),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let daemon = Running::start(&config, &dir.join("daemon2.log"));
    wait_outbox_empty(&dir);
    let received = server.received();
    assert_eq!(subjects(&received), INCIDENT_SUBJECTS, "oldest first");
    assert!(by_message_id(&received).values().all(|&n| n == 1));
    for mail in &received {
        assert!(mail.tls, "delivered over TLS");
        assert_eq!(mail.auth_user.as_deref(), Some("rollbackd"));
    }
    assert_eq!(server.auth_failures(), 0);
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn a_missing_ca_file_stops_the_daemon_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("no-such-ca.pem");
    let (_tmp, dir, _) = setup(
        "smtps://localhost:2465",
        "",
        &format!("ca_file = \"{}\"", ca.display()),
        "",
    );
    let out = run_rollbackd(&dir.join("rollbackd.toml"), &["run"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot read notify.email.ca_file {}",
            ca.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_target_with_its_own_to_and_cc_mails_only_them() {
    let tmp_smtp = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(tmp_smtp.path(), Behaviour::default());
    let (_tmp, dir, _) = setup(&server.url(), "", "", "");
    let config = std::fs::read_to_string(dir.join("rollbackd.toml")).unwrap();
    let config = config.replacen(
        "cooldown = \"1m\"\n",
        "cooldown = \"1m\"\n  [target.notify]\n  to = [\"web-dev@example.com\"]\n  cc = [\"Lead <web-lead@example.com>\"]\n",
        1,
    );
    std::fs::write(dir.join("rollbackd.toml"), config).unwrap();
    let daemon = rolled_back_over_smtp(&dir, &server);
    let received = server.received();
    assert!(!received.is_empty());
    for mail in &received {
        let mut rcpt = mail.rcpt_tos.clone();
        rcpt.sort();
        assert_eq!(
            rcpt,
            ["web-dev@example.com", "web-lead@example.com"],
            "the target's own list and cc, never notify.email.to"
        );
        assert_eq!(mail.header("To").as_deref(), Some("web-dev@example.com"));
        assert_eq!(
            mail.header("Cc").as_deref(),
            Some("Lead <web-lead@example.com>")
        );
    }
    assert_eq!(daemon.stop(), Some(0));
}
