//! The verification failure path through the real daemon binary: the
//! rollback plan succeeds but does not heal the service, so the incident
//! ends Failed with "rollback did not help", the admin is mailed, and the
//! `after` steps never run. Also `pre` steps through the daemon.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn a_rollback_that_succeeds_but_does_not_heal_ends_failed_did_not_help() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    rollbackd::demo::create_releases(&dir).unwrap();
    let port = serve_releases(&dir);
    let d = dir.display();
    let config = format!(
        r#"
[daemon]
state_dir = "{d}/state"
listen = "127.0.0.1:0"
poll_interval = "200ms"

[notify.email]
from = "rollbackd <rollbackd@test.invalid>"
to = ["admin@example.com"]
outbox_dir = "{d}/state/outbox"

[[target]]
name = "web"
cooldown = "1m"
version_command = ["readlink", "{d}/current"]

  [[target.rule]]
  name = "health"
  source = "probe"
  url = "http://127.0.0.1:{port}/api/health"
  timeout = "1s"
  window = "3s"
  above = 0.5
  for = "1s"

  [target.rollback]
  kind = "command"
  timeout = "20s"
  step_timeout = "5s"
  pre = [["sh", "-c", "echo backup > {d}/pre-ran"]]
  # Succeeds, but changes nothing: the service stays broken.
  steps = [["sh", "-c", "echo \"restarted $ROLLBACKD_TARGET\""]]
  after = [["touch", "{d}/after-ran"]]

  [target.verify]
  within = "3s"
  url = "http://127.0.0.1:{port}/api/health"
"#
    );
    std::fs::write(dir.join("rollbackd.toml"), config).unwrap();
    let daemon = Running::start(&dir.join("rollbackd.toml"), &dir.join("daemon.log"));
    let state = dir.join("state");
    wait_for(Duration::from_secs(15), "version v1 in the journal", || {
        journal(&state)
            .iter()
            .any(|e| {
                e["event"]["event"] == "version_observed"
                    && e["event"]["version"]
                        .as_str()
                        .is_some_and(|v| v.ends_with("/v1"))
            })
            .then_some(())
    });
    rollbackd::demo::switch_release(&dir, "v2").unwrap();

    let outbox = state.join("outbox");
    let (_, mail) = wait_for(Duration::from_secs(40), "the DID NOT HELP mail", || {
        mails(&outbox)
            .into_iter()
            .find(|(_, m)| m.contains("ROLLBACK DID NOT HELP"))
    });
    assert!(mail.contains("admin@example.com"), "{mail}");
    assert!(mail.contains("rollback did not help"), "{mail}");

    let transitions = transitions(&state);
    assert_eq!(
        transitions,
        vec![
            "Watching->RollingBack",
            "RollingBack->Verifying",
            "Verifying->Failed"
        ],
        "journal transitions"
    );
    // The plan itself succeeded: pre step, then the main step.
    assert_eq!(
        std::fs::read_to_string(dir.join("pre-ran")).unwrap(),
        "backup\n"
    );
    let record = wait_for(Duration::from_secs(5), "the Failed record", || {
        std::fs::read_dir(state.join("incidents"))
            .ok()?
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .find(|r| r.contains("rollback did not help"))
    });
    assert!(
        record.contains("restarted web"),
        "the step's stdout is in the record:\n{record}"
    );
    assert!(
        record.contains("echo backup"),
        "the pre step is in the record:\n{record}"
    );
    // after steps run only once verification passed.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !dir.join("after-ran").exists(),
        "after steps must not run when verification failed"
    );
    assert_eq!(live(&dir), "v2");
    assert_eq!(daemon.stop(), Some(0));
}
