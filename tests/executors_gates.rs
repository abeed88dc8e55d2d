//! Verification gates, `on_failure` and `trigger --to-version` through the
//! real daemon binary:
//! - a smoke command that fails turns a successful plan into Failed
//!   "rollback did not help", and `on_failure` runs with the incident's
//!   variables, its output in the record;
//! - a check with `max_latency` against a slow endpoint fails with the
//!   measured latency in the record;
//! - `trigger --to-version v1` with releases v1, v2, v3 (v3 live) lands on
//!   v1 with the symlink executor; an unknown version is refused with a
//!   clear error and nothing run.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use common::*;

/// A release tree with v1 healthy, v2 broken, current -> v1.
fn releases(dir: &Path) {
    rollbackd::demo::create_releases(dir).unwrap();
}

/// Wait until the daemon has seen `version` live.
fn seen(state: &Path, version: &str) {
    wait_for(
        Duration::from_secs(15),
        &format!("version {version} in the journal"),
        || {
            journal(state)
                .iter()
                .any(|e| {
                    e["event"]["event"] == "version_observed"
                        && e["event"]["version"]
                            .as_str()
                            .is_some_and(|v| v.ends_with(version))
                })
                .then_some(())
        },
    );
}

/// The incident record that contains `text`.
fn record_with(state: &Path, text: &str) -> String {
    wait_for(
        Duration::from_secs(20),
        &format!("a record with {text:?}"),
        || {
            std::fs::read_dir(state.join("incidents"))
                .ok()?
                .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                .find(|r| r.contains(text))
        },
    )
}

/// A config with one symlink target; `verify` is the `[target.verify]`
/// body and `rollback` extra `[target.rollback]` keys.
fn config(dir: &Path, port: u16, api_port: u16, rollback: &str, verify: &str) -> String {
    let d = dir.display();
    format!(
        r#"
[daemon]
state_dir = "{d}/state"
listen = "127.0.0.1:{api_port}"
poll_interval = "200ms"

[notify.email]
from = "rollbackd <rollbackd@test.invalid>"
to = ["admin@example.com"]
outbox_dir = "{d}/state/outbox"

[[target]]
name = "web"
cooldown = "1m"

  [[target.rule]]
  name = "health"
  source = "probe"
  url = "http://127.0.0.1:{port}/api/health"
  timeout = "1s"
  window = "3s"
  above = 0.5
  for = "1s"

  [target.rollback]
  kind = "symlink"
  current = "{d}/current"
  releases = "{d}/releases"
  timeout = "20s"
  {rollback}

  [target.verify]
  within = "3s"
  {verify}
"#
    )
}

#[test]
fn a_failing_smoke_command_means_did_not_help_and_on_failure_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    releases(&dir);
    let port = serve_releases(&dir);
    let d = dir.display();
    let rollback = format!(
        r#"cwd = "{d}"
  env = {{ LOG_DIR = "{d}/logs" }}
  on_failure = [
    ["mkdir", "-p", "{d}/logs"],
    {{ argv = ["sh", "-c", "echo collected $ROLLBACKD_INCIDENT $ROLLBACKD_FROM_VERSION..$ROLLBACKD_TO_VERSION > \"$LOG_DIR/on-failure.txt\"; echo restored the dump"] }},
  ]"#
    );
    let verify = format!(
        r#"url = "http://127.0.0.1:{port}/api/health"
  commands = [
    ["sh", "-c", "echo 'GET /login -> 500'; echo 'login smoke test failed' >&2; exit 1"],
  ]"#
    );
    std::fs::write(
        dir.join("rollbackd.toml"),
        config(&dir, port, free_port(), &rollback, &verify),
    )
    .unwrap();
    let daemon = Running::start(&dir.join("rollbackd.toml"), &dir.join("daemon.log"));
    let state = dir.join("state");
    seen(&state, "v1");
    rollbackd::demo::switch_release(&dir, "v2").unwrap();

    let record = record_with(&state, "## on_failure steps");
    // The plan worked (the symlink is back on v1, the URL answers), but
    // the smoke test fails: the rollback did not help.
    assert_eq!(live(&dir), "v1");
    assert!(record.contains("rollback did not help"), "{record}");
    assert!(
        record.contains("verification gates still fail"),
        "the failing gate is named:\n{record}"
    );
    assert!(
        record.contains("login smoke test failed") && record.contains("GET /login -> 500"),
        "the smoke command's output is kept:\n{record}"
    );
    assert!(record.contains("restored the dump"), "{record}");
    assert_eq!(
        transitions(&state),
        vec![
            "Watching->RollingBack",
            "RollingBack->Verifying",
            "Verifying->Failed"
        ]
    );
    // on_failure ran with the plan's cwd and env and the incident's variables.
    let written = std::fs::read_to_string(dir.join("logs/on-failure.txt")).unwrap();
    assert!(written.starts_with("collected "), "{written}");
    assert!(written.trim_end().ends_with("v2..v1"), "{written}");
    assert!(
        journal(&state)
            .iter()
            .any(|e| e["event"]["event"] == "on_failure_finished"),
        "the on_failure result is journaled"
    );
    assert_eq!(daemon.stop(), Some(0));
}

/// An HTTP server that answers every request 200 "ok" after `delay`.
fn slow_server(delay: Duration) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                std::thread::sleep(delay);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n",
                );
            });
        }
    });
    port
}

#[test]
fn a_check_slower_than_max_latency_fails_with_the_measured_latency() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    releases(&dir);
    let port = serve_releases(&dir);
    let slow = slow_server(Duration::from_millis(600));
    let verify = format!(
        r#"checks = [
    {{ url = "http://127.0.0.1:{port}/api/health", expect_status = 200, body_contains = "ok" }},
    {{ url = "http://127.0.0.1:{slow}/api/orders", max_latency = "200ms" }},
  ]"#
    );
    std::fs::write(
        dir.join("rollbackd.toml"),
        config(&dir, port, free_port(), "", &verify),
    )
    .unwrap();
    let daemon = Running::start(&dir.join("rollbackd.toml"), &dir.join("daemon.log"));
    let state = dir.join("state");
    seen(&state, "v1");
    rollbackd::demo::switch_release(&dir, "v2").unwrap();

    let record = record_with(&state, "rollback did not help");
    assert_eq!(live(&dir), "v1");
    assert!(
        record.contains("slower than max_latency 200ms"),
        "the check failed on latency:\n{record}"
    );
    // The gate table lists both checks with their measured latency.
    let row = record
        .lines()
        .find(|l| l.starts_with(&format!("| GET http://127.0.0.1:{slow}/api/orders")))
        .unwrap_or_else(|| panic!("no row for the slow check:\n{record}"));
    assert!(row.contains("| failed |"), "{row}");
    let latency: f64 = row
        .split('|')
        .nth(3)
        .map(str::trim)
        .and_then(|l| l.strip_suffix("ms"))
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("latency column in {row}"));
    assert!((600.0..3000.0).contains(&latency), "{row}");
    let ok_row = record
        .lines()
        .find(|l| l.starts_with(&format!("| GET http://127.0.0.1:{port}/api/health")))
        .unwrap_or_else(|| panic!("no row for the health check:\n{record}"));
    assert!(ok_row.contains("| ok |"), "{ok_row}");
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn trigger_to_version_lands_on_it_and_an_unknown_version_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    releases(&dir);
    // v3 is healthy and live: nothing triggers on its own.
    let v3 = dir.join("releases/v3");
    std::fs::create_dir_all(&v3).unwrap();
    std::fs::write(v3.join("release.txt"), "healthy\n").unwrap();
    std::fs::write(dir.join("releases/v2/release.txt"), "healthy\n").unwrap();
    rollbackd::demo::switch_release(&dir, "v3").unwrap();
    let port = serve_releases(&dir);
    let api_port = free_port();
    let d = dir.display();
    let rollback =
        format!(r#"restart = ["sh", "-c", "echo \"$1\" >> {d}/restarts", "sh", "{{to_version}}"]"#);
    let verify = format!(r#"url = "http://127.0.0.1:{port}/api/health""#);
    let file = dir.join("rollbackd.toml");
    std::fs::write(&file, config(&dir, port, api_port, &rollback, &verify)).unwrap();
    let daemon = Running::start(&file, &dir.join("daemon.log"));
    let state = dir.join("state");
    seen(&state, "v3");

    // Unknown: refused by the API with the version named, nothing run.
    let url = format!("http://127.0.0.1:{api_port}/v1/targets/web/rollback");
    let (code, body) = http(
        "POST",
        &url,
        None,
        Some(r#"{"reason": "cve", "to_version": "v9"}"#),
    );
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains("unknown version \\\"v9\\\"") || body.contains("unknown version \"v9\""),
        "{body}"
    );
    assert!(body.contains("no release directory"), "{body}");
    let (code, body) = http(
        "POST",
        &url,
        None,
        Some(r#"{"reason": "cve", "to_version": " "}"#),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("to_version is empty"), "{body}");
    // The same through the CLI: exit 1 and the message.
    let out = std::process::Command::new(bin())
        .args([
            "trigger",
            "web",
            "--reason",
            "cve",
            "--to-version",
            "v9",
            "--config",
        ])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("v9"), "{stderr}");
    assert_eq!(live(&dir), "v3");
    assert!(!dir.join("restarts").exists(), "nothing ran");
    assert!(
        transitions(&state).is_empty(),
        "no incident: {:?}",
        transitions(&state)
    );

    // Known: v1, skipping v2 (the release just before the live one).
    let out = std::process::Command::new(bin())
        .args([
            "trigger",
            "web",
            "--reason",
            "cve in v2 and v3",
            "--to-version",
            "v1",
            "--config",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(Duration::from_secs(20), "RolledBack", || {
        transitions(&state)
            .iter()
            .any(|t| t == "Verifying->RolledBack")
            .then_some(())
    });
    assert_eq!(live(&dir), "v1");
    assert_eq!(
        std::fs::read_to_string(dir.join("restarts")).unwrap(),
        "v1\n"
    );
    // The loop guard records v1.
    assert!(
        journal(&state)
            .iter()
            .any(|e| e["state"]["loop_guard"] == "v1"),
        "the loop guard records v1"
    );
    let record = record_with(&state, "rolled back");
    assert!(record.contains("asked for version v1"), "{record}");
    assert_eq!(daemon.stop(), Some(0));
}
