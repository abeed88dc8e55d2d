//! SIGKILL the daemon at the worst moments, restart it, and check what
//! DESIGN.md section 2 and issue 4 promise: an incident awaiting
//! confirmation keeps its ID and deadline, a rollback that was running is
//! not run again but verified, and pause state survives.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// One `web` target on the demo service at `port`, a symlink rollback with
/// `restart` (a `restart = [...]` line, or nothing) verified within 15 s.
fn write_config(
    dir: &Path,
    port: u16,
    api_port: u16,
    target_extra: &str,
    restart: &str,
) -> PathBuf {
    let text = [
        conf::daemon(dir, api_port, "200ms", ""),
        conf::email(&dir.join("state/outbox"), &["admin@example.com"]),
        conf::target("web", "1m", target_extra),
        conf::demo_health_rule(port),
        conf::symlink_rollback(dir, "60s", restart),
        conf::verify("15s", &format!("http://127.0.0.1:{port}/api/health")),
    ]
    .concat();
    conf::write(dir, &text)
}

fn status(api_port: u16) -> Option<Value> {
    std::net::TcpStream::connect(("127.0.0.1", api_port)).ok()?;
    let (code, body) = http(
        "GET",
        &format!("http://127.0.0.1:{api_port}/v1/status"),
        None,
        None,
    );
    (code == 200).then(|| serde_json::from_str(&body).unwrap())
}

fn wait_target(api_port: u16, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    wait_for(Duration::from_secs(30), what, || {
        status(api_port)
            .map(|s| s["targets"][0].clone())
            .filter(|t| f(t))
    })
}

#[test]
fn sigkill_while_awaiting_confirmation_keeps_id_deadline_and_pause() {
    let (_tmp, dir, port, api_port) = demo_releases();
    let config = write_config(
        &dir,
        port,
        api_port,
        "confirm = \"required\"\nconfirm_timeout = \"10m\"",
        "",
    );
    let d = Running::start(&config, &dir.join("daemon1.log"));
    wait_target(api_port, "version v1", |t| t["state"]["version"] == "v1");
    rollbackd::demo::switch_release(&dir, "v2").unwrap();
    let before = wait_target(api_port, "AwaitingConfirmation", |t| {
        t["phase"] == "AwaitingConfirmation"
    });
    d.kill9();

    let d = Running::start(&config, &dir.join("daemon2.log"));
    let after = wait_target(api_port, "the recovered state", |_| true);
    assert_eq!(after["phase"], "AwaitingConfirmation", "{after}");
    assert_eq!(
        after["state"]["phase"]["incident"]["id"],
        before["state"]["phase"]["incident"]["id"]
    );
    assert_eq!(after["until"], before["until"], "same deadline");
    assert_eq!(live(&dir), "v2", "nothing ran");

    // Pause survives a SIGKILL too.
    let out = std::process::Command::new(bin())
        .args(["pause", "web", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.kill9();
    let d = Running::start(&config, &dir.join("daemon3.log"));
    let t = wait_target(api_port, "the recovered state", |_| true);
    assert!(t["paused"]["by"].is_string(), "{t}");
    assert_eq!(t["phase"], "AwaitingConfirmation");
    // An approval for a paused target escalates naming the guard.
    let id = t["state"]["phase"]["incident"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = std::process::Command::new(bin())
        .args(["approve", &id, "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success());
    let t = wait_target(api_port, "Escalated", |t| t["phase"] == "Escalated");
    assert!(t["state"]["phase"]["incident"]["error"]
        .to_string()
        .contains("paused"));
    assert_eq!(live(&dir), "v2");
    drop(d);
}

#[test]
fn sigkill_during_a_running_step_verifies_instead_of_rerunning() {
    let (_tmp, dir, port, api_port) = demo_releases();
    let runs = dir.join("runs");
    // The restart step records each run, then sleeps: the daemon is killed
    // while it sleeps (after the symlink switch).
    let restart = format!(
        "restart = [\"sh\", \"-c\", \"echo run >> {}; sleep 8\"]",
        runs.display()
    );
    let config = write_config(&dir, port, api_port, "", &restart);
    let d = Running::start(&config, &dir.join("daemon1.log"));
    wait_target(api_port, "version v1", |t| t["state"]["version"] == "v1");
    rollbackd::demo::switch_release(&dir, "v2").unwrap();
    wait_target(api_port, "RollingBack", |t| t["phase"] == "RollingBack");
    wait_for(
        Duration::from_secs(10),
        "the sleeping step to start",
        || runs.exists().then_some(()),
    );
    d.kill9();

    let d = Running::start(&config, &dir.join("daemon2.log"));
    let t = wait_target(api_port, "RolledBack after recovery", |t| {
        t["phase"] == "RolledBack"
    });
    let timeline = t["state"]["phase"]["incident"]["timeline"].to_string();
    assert!(timeline.contains("not run again blindly"), "{timeline}");
    let outbox = dir.join("state/outbox");
    let mail = wait_mail(
        &outbox,
        Duration::from_secs(10),
        "the interrupted mail",
        "ROLLBACK INTERRUPTED",
    );
    assert!(mail.1.contains("did not run the plan again"), "{}", mail.1);
    assert_eq!(
        std::fs::read_to_string(&runs).unwrap().lines().count(),
        1,
        "the plan ran exactly once"
    );
    assert_eq!(live(&dir), "v1");
    // Rate-limit history survives: the rollback is counted.
    assert_eq!(t["state"]["rollbacks"].as_array().unwrap().len(), 1);
    drop(d);
}
