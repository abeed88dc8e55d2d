//! Issue 18 item 8: `notify.email.timeout` bounds every phase of the SMTP
//! conversation (raw TCP servers that accept and never greet, greet and
//! stall after EHLO, after STARTTLS, AUTH, MAIL; the real daemon retrying a
//! server that never greets), and a backlog neither delays a new incident's
//! mail nor floods the log (the real daemon, 300 queued mails, aiosmtpd).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::smtp::{free_port, Behaviour, SmtpServer};
use common::*;
use rollbackd::config::{SmtpConfig, SmtpSecurity};
use rollbackd::notify::smtp::SmtpChannel;

/// What a raw test server says before it goes silent (and holds the
/// connection open): the greeting and then the answers to the commands it
/// reads, one line each. `None` as the greeting: it never greets.
#[derive(Clone)]
struct Script {
    greeting: Option<&'static str>,
    /// Answers to the first commands, in order; after the last, silence.
    answers: Vec<&'static str>,
}

/// A raw SMTP-ish server on loopback following `script` for every
/// connection; counts connections.
fn raw_server(script: Script) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let script = script.clone();
            std::thread::spawn(move || converse(stream, script));
        }
    });
    (port, connections)
}

fn converse(mut stream: TcpStream, script: Script) {
    let hold = |s: TcpStream| {
        // Silence, connection open, until the client gives up.
        let mut r = BufReader::new(s);
        let mut line = String::new();
        while r.read_line(&mut line).is_ok_and(|n| n > 0) {
            line.clear();
        }
    };
    let Some(greeting) = script.greeting else {
        return hold(stream);
    };
    if stream.write_all(greeting.as_bytes()).is_err() {
        return;
    }
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut answers = script.answers.into_iter();
    while let Some(answer) = answers.next() {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line.trim().eq_ignore_ascii_case("DATA") {
            // The message follows the 354, up to the lone dot.
            let _ = stream.write_all(answer.as_bytes());
            loop {
                let mut body = String::new();
                if reader.read_line(&mut body).unwrap_or(0) == 0 {
                    return;
                }
                if body == ".\r\n" {
                    break;
                }
            }
            // The answer to the message, if the script has one.
            match answers.next() {
                Some(a) if stream.write_all(a.as_bytes()).is_ok() => continue,
                _ => break,
            }
        }
        if stream.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
    hold(stream)
}

fn channel(port: u16, security: SmtpSecurity, username: Option<(&str, &Path)>) -> SmtpChannel {
    SmtpChannel::build(&SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        security,
        username: username.map(|(u, _)| u.to_string()),
        password_file: username.map(|(_, f)| f.to_path_buf()),
        timeout: Duration::from_secs(1),
        ca_file: None,
    })
    .unwrap()
}

const EML: &[u8] = b"From: rollbackd <rollbackd@test.invalid>\r\nTo: admin@example.com\r\nSubject: x\r\n\r\nbody\r\n";

#[tokio::test]
async fn every_smtp_phase_honours_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let pw = tmp.path().join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    let ehlo = "250-test\r\n250 SIZE 100000\r\n";
    let ehlo_tls = "250-test\r\n250 STARTTLS\r\n";
    let ehlo_auth = "250-test\r\n250 AUTH PLAIN LOGIN\r\n";
    // (case, script, security, with AUTH, the phase named)
    let table: Vec<(&str, Script, SmtpSecurity, bool, &str)> = vec![
        (
            "never greets",
            Script {
                greeting: None,
                answers: vec![],
            },
            SmtpSecurity::Plain,
            false,
            "greeting",
        ),
        (
            "greets, then silent after EHLO",
            Script {
                greeting: Some("220 hi\r\n"),
                answers: vec![],
            },
            SmtpSecurity::Plain,
            false,
            "EHLO",
        ),
        (
            "silent after STARTTLS",
            Script {
                greeting: Some("220 hi\r\n"),
                answers: vec![ehlo_tls],
            },
            SmtpSecurity::StartTls,
            false,
            "STARTTLS",
        ),
        (
            "silent after AUTH",
            Script {
                greeting: Some("220 hi\r\n"),
                answers: vec![ehlo_auth],
            },
            SmtpSecurity::Plain,
            true,
            "AUTH",
        ),
        (
            "silent after MAIL FROM",
            Script {
                greeting: Some("220 hi\r\n"),
                answers: vec![ehlo],
            },
            SmtpSecurity::Plain,
            false,
            "MAIL, RCPT or DATA",
        ),
        (
            "silent after the message",
            Script {
                greeting: Some("220 hi\r\n"),
                answers: vec![ehlo, "250 ok\r\n", "250 ok\r\n", "354 go\r\n"],
            },
            SmtpSecurity::Plain,
            false,
            "MAIL, RCPT or DATA",
        ),
    ];
    for (case, script, security, auth, phase) in table {
        let (port, _) = raw_server(script);
        let ch = channel(port, security, auth.then_some(("rb", pw.as_path())));
        let result = tokio::time::timeout(Duration::from_secs(30), ch.send(EML))
            .await
            .unwrap_or_else(|_| panic!("{case}: the send ignored notify.email.timeout (1s)"));
        let e = result.expect_err(case).to_string();
        assert_eq!(
            e,
            format!(
                "smtp{}://127.0.0.1:{port}: no answer to {phase} within 1s (notify.email.timeout)",
                if security == SmtpSecurity::StartTls {
                    "+starttls"
                } else {
                    ""
                }
            ),
            "{case}"
        );
    }
}

#[tokio::test]
async fn a_trickled_greeting_does_not_stretch_the_phase_and_a_silent_quit_does_not_fail_the_mail() {
    // One byte of the greeting every 300 ms: each read makes progress,
    // but the phase's deadline does not move.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                for b in b"220 a very slow greeting that never ends".iter().cycle() {
                    if s.write_all(&[*b]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            });
        }
    });
    let ch = channel(port, SmtpSecurity::Plain, None);
    let e = tokio::time::timeout(Duration::from_secs(30), ch.send(EML))
        .await
        .expect("a trickled greeting held the send")
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with("no answer to greeting within 1s (notify.email.timeout)"),
        "{e}"
    );

    // Everything answered but QUIT: the mail was accepted, so it is sent.
    let (port, _) = raw_server(Script {
        greeting: Some("220 hi\r\n"),
        answers: vec![
            "250 test\r\n",
            "250 ok\r\n",
            "250 ok\r\n",
            "354 go\r\n",
            "250 queued\r\n",
        ],
    });
    let ch = channel(port, SmtpSecurity::Plain, None);
    tokio::time::timeout(Duration::from_secs(30), ch.send(EML))
        .await
        .expect("a silent QUIT held the send")
        .expect("accepted before QUIT");
}

/// A release tree with its demo service and a config whose mail goes to
/// `smtp_url` with `email` added to `[notify.email]`.
fn setup(smtp_url: &str, email: &str) -> (tempfile::TempDir, PathBuf) {
    let (tmp, dir, port, _) = demo_releases();
    let config = symlink_config(&dir, port, "").replacen(
        "[notify.email]\n",
        &format!(
            "[notify]\nmax_per_target_per_hour = 10000\nmax_per_hour = 10000\n\n[notify.email]\nsmtp_url = \"{smtp_url}\"\n{email}\n"
        ),
        1,
    );
    std::fs::write(dir.join("rollbackd.toml"), config).unwrap();
    (tmp, dir)
}

fn wait_v1_seen(state: &Path) {
    wait_for(Duration::from_secs(15), "web at v1 in the journal", || {
        journal(state)
            .iter()
            .any(|e| e["event"]["event"] == "version_observed" && e["event"]["version"] == "v1")
            .then_some(())
    });
}

#[test]
fn a_server_that_never_greets_is_retried_within_the_timeout() {
    // The issue: 1 connection and 0 retries in 40 s (lettre bounded only
    // the TCP connect; the sender's own limit was 600 s).
    let (port, connections) = raw_server(Script {
        greeting: None,
        answers: vec![],
    });
    let (_tmp, dir) = setup(&format!("smtp://127.0.0.1:{port}"), "timeout = \"1s\"");
    let daemon = Running::start(&dir.join("rollbackd.toml"), &dir.join("daemon.log"));
    wait_v1_seen(&dir.join("state"));
    rollbackd::demo::switch_release(&dir, "v2").unwrap();
    wait_for(
        Duration::from_secs(40),
        "three connections (a first attempt and two retries)",
        || (connections.load(Ordering::SeqCst) >= 3).then_some(()),
    );
    let log = daemon.log_text();
    assert!(
        log.contains("no answer to greeting within 1s (notify.email.timeout)"),
        "{log}"
    );
    assert_eq!(daemon.stop(), Some(0));
}

/// Write `n` mails about target `old` into `outbox` as the daemon would
/// have before a restart (the name starts with the time written).
fn queue_backlog(outbox: &Path, n: usize) {
    std::fs::create_dir_all(outbox).unwrap();
    let at = chrono::Utc::now() - chrono::TimeDelta::minutes(5);
    for i in 0..n {
        let stem = format!("{}-backlog-{i:05}", at.format("%Y%m%dT%H%M%S%.3fZ"));
        let eml = format!(
            "From: rollbackd <rollbackd@test.invalid>\r\nTo: admin@example.com\r\nSubject: [rollbackd] old: backlog {i:05}\r\nMessage-ID: <backlog-{i:05}@test.invalid>\r\nX-Rollbackd-Target: old\r\n\r\nqueued before the restart\r\n"
        );
        std::fs::write(outbox.join(format!("{stem}.eml")), eml).unwrap();
    }
}

#[test]
fn a_backlog_does_not_delay_a_new_incidents_mail_and_is_logged_once() {
    const BACKLOG: usize = 300;
    let port = free_port();
    let (_tmp, dir) = setup(&format!("smtp://127.0.0.1:{port}"), "timeout = \"5s\"");
    let outbox = dir.join("state/outbox");
    queue_backlog(&outbox, BACKLOG);
    // The server is down at start: every backlog item fails at least once.
    let daemon = Running::start(&dir.join("rollbackd.toml"), &dir.join("daemon.log"));
    wait_v1_seen(&dir.join("state"));
    wait_for(Duration::from_secs(20), "the backlog announced", || {
        daemon
            .log_text()
            .contains("notification backlog: 300 notifications wait in the outbox")
            .then_some(())
    });
    // Up now, and slow: each mail takes 0.2 s, the backlog a minute.
    let smtp_dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start_on(
        port,
        smtp_dir.path(),
        Behaviour {
            delay: Some(0.2),
            ..Behaviour::default()
        },
    );
    wait_for(Duration::from_secs(60), "the backlog draining", || {
        (server.received().len() >= 5).then_some(())
    });
    rollbackd::demo::switch_release(&dir, "v2").unwrap();
    let subject = |r: &common::smtp::Received| r.header("Subject").unwrap_or_default();
    let received = wait_for(Duration::from_secs(60), "the new incident's mail", || {
        let got = server.received();
        got.iter()
            .any(|r| subject(r).starts_with("[rollbackd] web: ROLLING BACK"))
            .then_some(got)
    });
    let at = received
        .iter()
        .position(|r| subject(r).starts_with("[rollbackd] web: ROLLING BACK"))
        .unwrap();
    let backlog_before = received[..at]
        .iter()
        .filter(|r| subject(r).contains("backlog"))
        .count();
    assert!(
        backlog_before < BACKLOG,
        "the new incident's mail waited behind the whole backlog ({backlog_before} before it)"
    );
    // The rest of the backlog still goes out, each once.
    wait_for(
        Duration::from_secs(180),
        "every backlog mail delivered",
        || {
            (server
                .received()
                .iter()
                .filter(|r| subject(r).contains("backlog"))
                .count()
                >= BACKLOG)
                .then_some(())
        },
    );
    let log = daemon.log_text();
    let warns = log
        .lines()
        .filter(|l| l.contains("notification not delivered; will retry"))
        .count();
    assert!(
        warns < 10,
        "{warns} per-item retry warnings for a backlog of {BACKLOG} (want one backlog line and summaries)"
    );
    assert_eq!(
        log.matches("notification backlog: 300 notifications wait")
            .count(),
        1,
        "the backlog is announced once"
    );
    assert_eq!(daemon.stop(), Some(0));
}
