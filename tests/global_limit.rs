//! The global cap `[daemon] max_rollbacks_per_hour` with the real daemon and
//! two targets (one demo release tree each): the first breach rolls back,
//! the second escalates naming the global limit (mail and journal say so),
//! and the cap survives a restart because the journal's rollbacks are
//! counted at start.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn target_block(name: &str, dir: &Path, port: u16) -> String {
    format!(
        r#"
[[target]]
name = "{name}"
cooldown = "2s"
max_rollbacks_per_hour = 5

  [[target.rule]]
  name = "health"
  source = "probe"
  url = "http://127.0.0.1:{port}/api/health"
  timeout = "1s"
  window = "1s"
  above = 0.5
  for = "1s"

  [target.rollback]
  kind = "symlink"
  current = "{dir}/current"
  releases = "{dir}/releases"
  timeout = "20s"

  [target.verify]
  within = "10s"
  url = "http://127.0.0.1:{port}/api/health"
"#,
        dir = dir.display()
    )
}

fn target(api_port: u16, name: &str) -> Option<Value> {
    std::net::TcpStream::connect(("127.0.0.1", api_port)).ok()?;
    let (code, body) = http(
        "GET",
        &format!("http://127.0.0.1:{api_port}/v1/status"),
        None,
        None,
    );
    if code != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).unwrap();
    v["targets"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == name)
        .cloned()
}

fn wait_target(api_port: u16, name: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    wait_for(Duration::from_secs(30), &format!("{name}: {what}"), || {
        target(api_port, name).filter(|t| f(t))
    })
}

fn incident_id(t: &Value) -> String {
    t["state"]["phase"]["incident"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn escalated_by_global_limit(t: &Value) -> bool {
    t["phase"] == "Escalated"
        && t["state"]["phase"]["incident"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("global rate limit"))
}

#[test]
fn global_cap_escalates_the_second_target_and_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let (a, b) = (root.join("a"), root.join("b"));
    for d in [&a, &b] {
        rollbackd::demo::create_releases(d).unwrap();
    }
    let (port_a, port_b) = (serve_releases(&a), serve_releases(&b));
    let api_port = free_port();
    let state = root.join("state");
    let config = format!(
        r#"
[daemon]
state_dir = "{state}"
listen = "127.0.0.1:{api_port}"
poll_interval = "200ms"
max_rollbacks_per_hour = 1

[notify.email]
from = "rollbackd <rollbackd@test.invalid>"
to = ["admin@example.com"]
outbox_dir = "{state}/outbox"
{a}{b}"#,
        state = state.display(),
        a = target_block("a", &a, port_a),
        b = target_block("b", &b, port_b),
    );
    let path = root.join("rollbackd.toml");
    std::fs::write(&path, config).unwrap();

    let daemon = Running::start(&path, &root.join("daemon1.log"));
    for name in ["a", "b"] {
        wait_target(api_port, name, "version v1", |t| {
            t["state"]["version"] == "v1"
        });
    }
    // The first breach rolls back: the cap allows one.
    rollbackd::demo::switch_release(&a, "v2").unwrap();
    wait_target(api_port, "a", "RolledBack", |t| t["phase"] == "RolledBack");
    assert_eq!(live(&a), "v1");

    // The second target's breach escalates naming the global limit.
    rollbackd::demo::switch_release(&b, "v2").unwrap();
    let t = wait_target(api_port, "b", "escalated by the global limit", |t| {
        escalated_by_global_limit(t)
    });
    let first_refused = incident_id(&t);
    let err = t["state"]["phase"]["incident"]["error"].as_str().unwrap();
    assert!(err.contains("max_rollbacks_per_hour = 1"), "{err}");
    assert!(
        t["state"]["rollbacks"].as_array().unwrap().is_empty(),
        "a refused rollback is not counted: {t}"
    );
    assert_eq!(live(&b), "v2", "nothing ran on b");
    let outbox = state.join("outbox");
    let mail = wait_for(Duration::from_secs(20), "the escalation mail for b", || {
        mails(&outbox)
            .into_iter()
            .map(|(_, m)| m)
            .find(|m| m.contains("ESCALATED") && m.contains(&first_refused))
    });
    assert!(mail.contains("global rate limit"), "{mail}");

    // The journal holds the refusal (the step that escalated says so), and
    // no execution for b ever.
    let journal = journal(&state);
    let refusal = journal
        .iter()
        .filter(|e| e["target"] == "b" && e["to"] == "Escalated")
        .flat_map(|e| e["actions"].as_array().cloned().unwrap_or_default())
        .find(|a| a["action"] == "global_limit_refused")
        .unwrap_or_else(|| panic!("no global_limit_refused action for b in the journal"));
    assert!(
        refusal["reason"]
            .as_str()
            .unwrap()
            .contains("global rate limit"),
        "{refusal}"
    );
    let executions = |target: &str| {
        journal
            .iter()
            .filter(|e| e["target"] == target)
            .flat_map(|e| e["actions"].as_array().cloned().unwrap_or_default())
            .filter(|a| a["action"] == "execute")
            .count()
    };
    assert_eq!((executions("a"), executions("b")), (1, 0));
    assert_eq!(daemon.stop(), Some(0));

    // After a restart the cap still holds: a's rollback of the last hour is
    // counted from the journal, so b's next breach (after its 2s cooldown)
    // escalates again instead of rolling back.
    let daemon = Running::start(&path, &root.join("daemon2.log"));
    let t = wait_target(
        api_port,
        "b",
        "a new incident escalated by the global limit",
        |t| escalated_by_global_limit(t) && incident_id(t) != first_refused,
    );
    assert!(
        t["state"]["rollbacks"].as_array().unwrap().is_empty(),
        "{t}"
    );
    assert_eq!(live(&b), "v2", "nothing ran on b after the restart");
    let journal = common::journal(&state);
    let b_executions = journal
        .iter()
        .filter(|e| e["target"] == "b")
        .flat_map(|e| e["actions"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["action"] == "execute")
        .count();
    assert_eq!(b_executions, 0);
    drop(daemon);
}
