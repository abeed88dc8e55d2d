//! Plan-level behaviour: the webhook executor against a local HTTP server,
//! `pre` steps, and the per-step timeout killing a process group.

use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use common::exec::{self, plan, within};
use nix::errno::Errno;
use nix::sys::signal::killpg;
use nix::unistd::Pid;
use rollbackd::config::ExecutorKind;
use rollbackd::execute::{run_plan, ExecResult, Vars};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

fn s(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

fn vars() -> Vars {
    exec::vars(Some("v2"), Some("v1"), "inc-4")
}

// ---------------------------------------------------------------- webhook

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    head: String,
    body: String,
}

/// `POST /ok` answers 200 with a JSON body, `/fail` 500, `/hang` never.
async fn ci_server() -> (std::net::SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&req[..head_end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                while req.len() < head_end + len {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let body = String::from_utf8_lossy(&req[head_end..]).to_string();
                log.lock().unwrap().push(Seen {
                    head: head.clone(),
                    body,
                });
                let (status, text) = if head.starts_with("POST /ok ") {
                    ("200 OK", "{\"pipeline\": 77}")
                } else if head.starts_with("POST /fail ") {
                    ("500 Internal Server Error", "deploy pipeline is broken\n")
                } else {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    (addr, seen)
}

fn webhook(
    url: String,
    token_file: Option<std::path::PathBuf>,
    body: Option<&str>,
) -> ExecutorKind {
    ExecutorKind::Webhook(rollbackd::execute::webhook::Config {
        url: url.parse().unwrap(),
        token_file,
        body: body.map(str::to_string),
    })
}

#[tokio::test]
async fn webhook_2xx_succeeds_with_the_body_and_the_token() {
    let (addr, seen) = ci_server().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let kind = webhook(
        format!("http://{addr}/ok"),
        Some(token.clone()),
        Some(r#"{"ref": "{to_version}", "from": "{from_version}", "why": "rollbackd {incident}"}"#),
    );
    let r = within(30, "webhook", run_plan(&plan(kind), &vars())).await;
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(r.steps.len(), 1);
    assert_eq!(r.steps[0].argv, s(&["POST", &format!("http://{addr}/ok")]));
    assert_eq!(r.steps[0].stdout, "{\"pipeline\": 77}");
    assert_eq!(r.steps[0].exit_code, None);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].head.contains("authorization: Bearer s3cret\r\n"),
        "{}",
        seen[0].head
    );
    assert!(
        seen[0].head.contains("content-type: application/json"),
        "{}",
        seen[0].head
    );
    // Values are JSON-escaped: the body is valid JSON.
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"ref": "v1", "from": "v2", "why": "rollbackd inc-4"})
    );
    // The token never reaches the record.
    assert!(!format!("{r:?}").contains("s3cret"));
}

#[tokio::test]
async fn webhook_default_body_names_target_incident_and_versions() {
    let (addr, seen) = ci_server().await;
    let r = within(
        30,
        "webhook",
        run_plan(
            &plan(webhook(format!("http://{addr}/ok"), None, None)),
            &vars(),
        ),
    )
    .await;
    assert!(r.ok, "{:?}", r.error);
    let first = seen.lock().unwrap().clone();
    assert!(!first[0].head.to_ascii_lowercase().contains("authorization"));
    let body: serde_json::Value = serde_json::from_str(&first[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"target": "web", "incident": "inc-4", "from_version": "v2", "to_version": "v1"})
    );
    // Issue 18 item 3: an unknown version is never sent.
    let hostile = Vars {
        from_version: Some("v2$(touch /tmp/x)".into()),
        ..vars()
    };
    let r = within(
        30,
        "webhook",
        run_plan(
            &plan(webhook(format!("http://{addr}/ok"), None, None)),
            &hostile,
        ),
    )
    .await;
    assert!(r.ok, "{:?}", r.error);
    let seen = seen.lock().unwrap().clone();
    let body: serde_json::Value = serde_json::from_str(&seen[1].body).unwrap();
    assert_eq!(body["from_version"], serde_json::Value::Null, "{body}");
    assert_eq!(
        r.from_version.as_deref(),
        Some(r#"unknown version "v2$(touch /tmp/x)""#)
    );
}

#[tokio::test]
async fn webhook_500_fails_with_the_answer() {
    let (addr, _) = ci_server().await;
    let r = within(
        30,
        "webhook",
        run_plan(
            &plan(webhook(format!("http://{addr}/fail"), None, None)),
            &vars(),
        ),
    )
    .await;
    assert!(!r.ok);
    assert_eq!(
        r.error.as_deref(),
        Some(format!("step 1 (POST http://{addr}/fail) failed: HTTP 500 Internal Server Error (expected 2xx): deploy pipeline is broken").as_str())
    );
    assert_eq!(r.steps[0].stdout, "deploy pipeline is broken\n");
}

#[tokio::test]
async fn webhook_timeout_fails_within_the_step_timeout() {
    let (addr, seen) = ci_server().await;
    let mut p = plan(webhook(format!("http://{addr}/hang"), None, None));
    p.step_timeout = Some(Duration::from_secs(1));
    let started = Instant::now();
    let r = within(30, "hanging webhook", run_plan(&p, &vars())).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "took {took:?}"
    );
    assert!(!r.ok);
    assert_eq!(
        r.error.as_deref(),
        Some(format!("step 1 (POST http://{addr}/hang) failed: timed out after 1s (step timeout); request abandoned").as_str())
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "the request reached the server"
    );
}

#[tokio::test]
async fn webhook_unreadable_token_sends_nothing() {
    let (addr, seen) = ci_server().await;
    let kind = webhook(
        format!("http://{addr}/ok"),
        Some("/nonexistent/token".into()),
        None,
    );
    let r = within(30, "webhook", run_plan(&plan(kind), &vars())).await;
    let e = r.error.unwrap();
    assert!(
        e.ends_with(
            "cannot read token_file /nonexistent/token: No such file or directory (os error 2)"
        ),
        "{e}"
    );
    assert!(seen.lock().unwrap().is_empty());
}

// ---------------------------------------------------------------- pre steps

fn command(steps: &[&[&str]]) -> ExecutorKind {
    ExecutorKind::Command(rollbackd::execute::command::Config {
        steps: steps.iter().map(|a| s(a).into()).collect(),
    })
}

#[tokio::test]
async fn pre_steps_run_first_and_their_failure_stops_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let log = log.to_str().unwrap();
    let append = |word: &str| {
        vec![
            "sh".to_string(),
            "-c".into(),
            format!("echo {word} >> \"$0\""),
            log.to_string(),
        ]
    };

    let mut p = plan(ExecutorKind::Command(rollbackd::execute::command::Config {
        steps: vec![append("main").into()],
    }));
    p.pre = vec![append("backup-$ROLLBACKD_TO_VERSION").into()];
    let r = within(30, "plan with pre", run_plan(&p, &vars())).await;
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(std::fs::read_to_string(log).unwrap(), "backup-v1\nmain\n");
    assert_eq!(r.steps.len(), 2);

    std::fs::write(log, "").unwrap();
    p.pre = vec![
        append("backup").into(),
        s(&["sh", "-c", "echo 'pg_dump: connection refused' >&2; exit 1"]).into(),
    ];
    let r = within(30, "plan with failing pre", run_plan(&p, &vars())).await;
    assert!(!r.ok);
    assert_eq!(
        r.error.as_deref(),
        Some("pre step 2 of 2 (sh -c \"echo 'pg_dump: connection refused' >&2; exit 1\") failed: exited with status 1: pg_dump: connection refused")
    );
    assert_eq!(
        std::fs::read_to_string(log).unwrap(),
        "backup\n",
        "main never ran"
    );
    assert_eq!(r.steps.len(), 2);
}

#[tokio::test]
async fn pre_steps_come_before_an_executor_refusal() {
    // A refused git rollback (not a repository) still ran its pre step
    // first, and both are in the record.
    let dir = tempfile::tempdir().unwrap();
    let mut p = plan(ExecutorKind::Git(rollbackd::execute::git::Config {
        repo: dir.path().to_path_buf(),
        build: vec![],
        restart: None,
    }));
    p.pre = vec![s(&["true"]).into()];
    let r: ExecResult = within(30, "git plan", run_plan(&p, &vars())).await;
    assert!(!r.ok);
    assert_eq!(r.steps[0].argv, s(&["true"]));
    assert_eq!(r.steps[1].argv[0], "git");
}

// ---------------------------------------------------------------- timeouts

#[tokio::test]
async fn step_timeout_kills_a_100s_step_after_2s_with_its_process_group() {
    let mut p = plan(command(&[
        &["sh", "-c", "echo $$; sleep 100 & sleep 100"],
        &["touch", "/nonexistent/never"],
    ]));
    p.timeout = Duration::from_secs(120);
    p.step_timeout = Some(Duration::from_secs(2));
    let started = Instant::now();
    let r = within(20, "timed-out step", run_plan(&p, &vars())).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "took {took:?}"
    );
    assert!(!r.ok);
    assert_eq!(r.steps.len(), 1, "the plan stopped at the timed-out step");
    assert_eq!(
        r.error.as_deref(),
        Some("step 1 of 2 (sh -c \"echo $$; sleep 100 & sleep 100\") failed: timed out after 2s (step timeout); process group killed")
    );
    let pgid = Pid::from_raw(
        r.steps[0]
            .stdout
            .lines()
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap(),
    );
    // Every member gone: no live process, and once init reaps the orphaned
    // zombies, no group at all.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match killpg(pgid, None) {
            Err(Errno::ESRCH) => break,
            _ if Instant::now() > deadline => {
                panic!("process group {pgid} still exists 10s after the kill")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
