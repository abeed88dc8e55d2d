//! The notifier and its SMTP sender against a real aiosmtpd: AUTH with a
//! password from a file, a wrong password keeps the mail pending, and a
//! server that rejects every mail sends it to `failed/` after
//! `give_up_after`, counted in the metrics. Over TLS (implicit and STARTTLS)
//! with a test CA given as `ca_file`, and a certificate that is not trusted.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::smtp::{Behaviour, Received, SmtpServer, TestCert, TlsMode};
use rollbackd::config::{EmailConfig, NotifyConfig, SmtpConfig, SmtpSecurity};
use rollbackd::decide::{Incident, NotifyKind};
use rollbackd::notify::smtp::SmtpChannel;
use rollbackd::notify::Notifier;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn incident() -> Incident {
    common::rolled_back_incident()
}

fn config(outbox: &Path, smtp: SmtpConfig, give_up_after: Duration) -> NotifyConfig {
    NotifyConfig {
        email: Some(EmailConfig {
            from: "rollbackd <rollbackd@test.invalid>".into(),
            to: vec!["admin@example.com".into()],
            cc: Vec::new(),
            outbox_dir: outbox.to_path_buf(),
            smtp: Some(smtp),
        }),
        give_up_after,
        outbox_dir: outbox.to_path_buf(),
        ..NotifyConfig::default()
    }
}

fn smtp(port: u16, username: Option<&str>, password_file: Option<&Path>) -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        security: SmtpSecurity::Plain,
        username: username.map(str::to_string),
        password_file: password_file.map(Path::to_path_buf),
        timeout: Duration::from_secs(10),
        ca_file: None,
    }
}

/// Poll `f` every 50 ms until true, failing with `what` after `secs`.
async fn until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`until`] `f` holds, within 15 s; panics with `stuck` if even that
/// wait does not end within 20 s (the sender hung).
async fn stuck_unless(what: &str, f: impl FnMut() -> bool, stuck: &str) {
    tokio::time::timeout(Duration::from_secs(20), until(15, what, f))
        .await
        .expect(stuck);
}

/// An SMTP server in `dir` that wants AUTH as `user_pass` (`user:pass`),
/// and `dir/smtp-password` holding `password_file`.
fn auth_server(dir: &Path, user_pass: &str, password_file: &str) -> (SmtpServer, PathBuf) {
    let server = SmtpServer::start(
        dir,
        Behaviour {
            auth: Some(user_pass.into()),
            ..Behaviour::default()
        },
    );
    let pw = dir.join("smtp-password");
    std::fs::write(&pw, password_file).unwrap();
    (server, pw)
}

fn eml_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_with_a_password_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (server, pw) = auth_server(dir.path(), "rollbackd:s3cret pass", "s3cret pass\n");
    let got = deliver_one(
        &server,
        &dir.path().join("outbox"),
        smtp(server.port, Some("rollbackd"), Some(&pw)),
    )
    .await;
    assert_eq!(got.auth_user.as_deref(), Some("rollbackd"));
    assert_eq!(
        got.header("Message-ID").as_deref(),
        Some("<20250601-120000-frontend-1.rolled_back@rollbackd>")
    );
}

/// Notify one RolledBack mail through `smtp` to `server`, wait until it is
/// delivered and gone from `outbox`, stop the sender, and return the mail.
async fn deliver_one(server: &SmtpServer, outbox: &Path, smtp: SmtpConfig) -> Received {
    let notifier = Notifier::build(&config(outbox, smtp, Duration::from_secs(3600)), None);
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    notifier.senders().unwrap().spawn(&tracker, cancel.clone());
    notifier
        .notify(NotifyKind::RolledBack, &incident(), None)
        .await
        .unwrap()
        .expect("mail written");
    tokio::time::timeout(Duration::from_secs(30), async {
        until(25, "the mail at the server", || {
            server.received().len() == 1
        })
        .await;
        until(5, "the delivered mail to leave the outbox", || {
            eml_count(outbox) == 0
        })
        .await;
    })
    .await
    .expect("delivery stuck: sender not woken, or TLS handshake or AUTH hanging");
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    assert_eq!(server.auth_failures(), 0);
    server.received().remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_keeps_the_mail_pending() {
    let dir = tempfile::tempdir().unwrap();
    let (server, pw) = auth_server(dir.path(), "rollbackd:right", "wrong");
    let outbox = dir.path().join("outbox");
    let notifier = Notifier::build(
        &config(
            &outbox,
            smtp(server.port, Some("rollbackd"), Some(&pw)),
            Duration::from_secs(3600),
        ),
        None,
    );
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    notifier.senders().unwrap().spawn(&tracker, cancel.clone());
    notifier
        .notify(NotifyKind::RolledBack, &incident(), None)
        .await
        .unwrap();
    stuck_unless(
        "two refused AUTH attempts (a retry)",
        || server.auth_failures() >= 2,
        "sender stuck",
    )
    .await;
    assert!(server.received().is_empty());
    assert_eq!(eml_count(&outbox), 1, "the mail stays in the outbox");
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
}

/// A server that answers every message with 554.
fn rejecting_server(dir: &Path) -> SmtpServer {
    SmtpServer::start(
        dir,
        Behaviour {
            reject: true,
            ..Behaviour::default()
        },
    )
}

/// Held by the tests that move mail to `failed/`: the failed counter is
/// process-wide, and one of them counts it exactly.
static FAILED_COUNTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejecting_server_sends_the_mail_to_failed_after_give_up_after() {
    let _counter = FAILED_COUNTER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = rejecting_server(dir.path());
    let outbox = dir.path().join("outbox");
    let notifier = Notifier::build(
        &config(
            &outbox,
            smtp(server.port, None, None),
            Duration::from_secs(3),
        ),
        None,
    )
    .with_metrics(rollbackd::metrics::global());
    let failed_before = rollbackd::metrics::global().notifications_failed_count("email");
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    notifier.senders().unwrap().spawn(&tracker, cancel.clone());
    let written = notifier
        .notify(NotifyKind::RolledBack, &incident(), None)
        .await
        .unwrap()
        .unwrap();
    let failed = outbox.join("failed").join(written.file_name().unwrap());
    stuck_unless(
        "the mail in failed/",
        || failed.exists(),
        "sender stuck: give_up_after not honoured",
    )
    .await;
    assert_eq!(eml_count(&outbox), 0, "nothing left pending");
    assert!(
        std::fs::read_to_string(&failed)
            .unwrap()
            .contains("Subject: [rollbackd] frontend: ROLLED BACK v2 -> v1"),
        "kept intact, not deleted"
    );
    // The counter goes up right after the move.
    let failed_count = || rollbackd::metrics::global().notifications_failed_count("email");
    tokio::time::timeout(
        Duration::from_secs(5),
        until(4, "the failed mail counted in the metrics", || {
            failed_count() - failed_before >= 1
        }),
    )
    .await
    .expect("failed mail not counted");
    assert_eq!(failed_count() - failed_before, 1, "counted once");
    assert!(server.received().is_empty());
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
}

/// Deliver one mail through the notifier to a TLS server (a certificate
/// from a private CA given as `ca_file`) with AUTH, and return what the
/// server received.
async fn deliver_over_tls(mode: TlsMode, host: &str, security: SmtpSecurity) -> Received {
    let dir = tempfile::tempdir().unwrap();
    let cert = TestCert::generate(dir.path(), "relay");
    let server = SmtpServer::start(
        dir.path(),
        Behaviour {
            auth: Some("rollbackd:tls pass".into()),
            tls: Some((mode, cert.clone())),
            ..Behaviour::default()
        },
    );
    let pw = dir.path().join("smtp-password");
    std::fs::write(&pw, "tls pass\n").unwrap();
    let smtp = SmtpConfig {
        host: host.into(),
        security,
        ca_file: Some(cert.ca.clone()),
        ..smtp(server.port, Some("rollbackd"), Some(&pw))
    };
    deliver_one(&server, &dir.path().join("outbox"), smtp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtps_with_a_private_ca_and_auth() {
    let got = deliver_over_tls(TlsMode::Implicit, "localhost", SmtpSecurity::Tls).await;
    assert!(got.tls, "the session was TLS");
    assert_eq!(got.auth_user.as_deref(), Some("rollbackd"));
    assert_eq!(got.rcpt_tos, ["admin@example.com"]);
    assert_eq!(
        got.header("Message-ID").as_deref(),
        Some("<20250601-120000-frontend-1.rolled_back@rollbackd>")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_with_a_private_ca_and_auth() {
    // The server refuses AUTH and MAIL before STARTTLS; the certificate
    // names 127.0.0.1 as an IP address.
    let got = deliver_over_tls(TlsMode::StartTls, "127.0.0.1", SmtpSecurity::StartTls).await;
    assert!(got.tls, "the session was upgraded to TLS");
    assert_eq!(got.auth_user.as_deref(), Some("rollbackd"));
    assert!(got
        .header("Subject")
        .unwrap()
        .contains("ROLLED BACK v2 -> v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_fails_naming_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let cert = TestCert::generate(dir.path(), "relay");
    let other = TestCert::generate(dir.path(), "other-ca");
    let eml = b"From: rollbackd <rollbackd@test.invalid>\r\nTo: admin@example.com\r\nSubject: x\r\nMessage-ID: <x.kind@rollbackd>\r\n\r\nbody\r\n";
    for (mode, security, scheme) in [
        (TlsMode::Implicit, SmtpSecurity::Tls, "smtps"),
        (TlsMode::StartTls, SmtpSecurity::StartTls, "smtp+starttls"),
    ] {
        let server = SmtpServer::start(
            dir.path(),
            Behaviour {
                tls: Some((mode, cert.clone())),
                ..Behaviour::default()
            },
        );
        // Trusting only the Mozilla roots, then another private CA: both refuse.
        for ca_file in [None, Some(other.ca.clone())] {
            let channel = SmtpChannel::build(&SmtpConfig {
                host: "localhost".into(),
                security,
                ca_file: ca_file.clone(),
                ..smtp(server.port, None, None)
            })
            .unwrap();
            let err = tokio::time::timeout(Duration::from_secs(20), channel.send(eml))
                .await
                .expect("TLS handshake hanging")
                .unwrap_err()
                .to_string();
            let name = format!("{scheme}://localhost:{}", server.port);
            assert!(err.starts_with(&name), "names {name}: {err}");
            assert!(err.contains("certificate"), "says why: {err}");
            assert!(err.contains("ca_file"), "hints at the fix: {err}");
        }
        assert!(server.received().is_empty(), "{scheme}: nothing delivered");
    }
}

/// Rename an outbox item as if it had been written `ago` earlier (before a
/// restart), and set its mtime to `mtime_ago`.
fn age(path: &Path, ago: Duration, mtime_ago: Duration) -> std::path::PathBuf {
    let name = path.file_name().unwrap().to_str().unwrap();
    let then = chrono::Utc::now() - ago;
    let renamed = path.with_file_name(format!(
        "{}{}",
        then.format("%Y%m%dT%H%M%S%.3fZ"),
        &name[20..]
    ));
    std::fs::rename(path, &renamed).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&renamed)
        .and_then(|f| f.set_modified(std::time::SystemTime::now() - mtime_ago))
        .unwrap();
    renamed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn give_up_after_counts_from_when_the_mail_was_written_not_from_the_restart() {
    let _counter = FAILED_COUNTER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = rejecting_server(dir.path());
    let outbox = dir.path().join("outbox");
    let cfg = config(
        &outbox,
        smtp(server.port, None, None),
        Duration::from_secs(3600),
    );
    // The run before the restart wrote three mails and never delivered them.
    let before = Notifier::build(&cfg, None);
    let mut written = Vec::new();
    for kind in [
        NotifyKind::RollbackStarted,
        NotifyKind::RolledBack,
        NotifyKind::DidNotHelp,
    ] {
        written.push(
            before
                .notify(kind, &incident(), None)
                .await
                .unwrap()
                .expect("mail written"),
        );
    }
    let two_hours = Duration::from_secs(2 * 3600);
    // Written 2 h ago: past give_up_after (1 h).
    let old = age(&written[0], two_hours, two_hours);
    // Written 2 h ago, then touched by a human: a fresh give_up_after.
    let touched = age(&written[1], two_hours, Duration::ZERO);
    // Written just now.
    let fresh = written[2].clone();

    // The restarted daemon: new notifier, new senders, no memory of retries.
    let after = Notifier::build(&cfg, None);
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    after.senders().unwrap().spawn(&tracker, cancel.clone());
    let failed = outbox.join("failed").join(old.file_name().unwrap());
    stuck_unless(
        "the 2 h old mail in failed/ after one attempt",
        || failed.exists(),
        "sender stuck: the old mail's give_up_after counted from the restart?",
    )
    .await;
    assert!(!old.exists());
    // The others are tried too (oldest first) and stay pending for their hour.
    stuck_unless(
        "all three mails refused once",
        || server.rejections() >= 3,
        "sender stuck after giving up on the old mail",
    )
    .await;
    assert!(
        touched.exists(),
        "a touched mail gets a fresh give_up_after"
    );
    assert!(fresh.exists(), "a fresh mail is kept for give_up_after");
    assert_eq!(eml_count(&outbox.join("failed")), 1);
    assert!(server.received().is_empty());
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
}
