//! Issue 18 item 3, end to end with the real binary: a version the release
//! reports is never executed. A `version_url` that answers shell syntax or
//! an option makes the target's version an *unknown version*, shown escaped
//! in status and the record, and never substituted into a step; `check`
//! refuses a `{var}` inside a shell's script text.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{conf, free_port, http, run_rollbackd, target, wait_for, Running};

/// A `version_url` service answering `body` to every request.
fn version_server(body: String) -> u16 {
    common::serve_each(move |s| {
        common::answer(s, "HTTP/1.1 200 OK\r\ncontent-type: text/plain", &body)
    })
}

fn config(dir: &Path, api_port: u16, version_port: u16, steps: &str) -> PathBuf {
    let text = [
        conf::base(dir, api_port, ""),
        conf::target(
            "web",
            "1m",
            &format!("version_url = \"http://127.0.0.1:{version_port}/version\""),
        ),
        conf::paged_rule("HighErrorRate", "0s"),
        conf::command_rollback("20s", steps),
    ]
    .concat();
    conf::write(dir, &text)
}

/// Start the daemon, wait until it has read the hostile version, trigger a
/// rollback and return the record once written, with the status version.
fn trigger_with_version(dir: &Path, body: &str, steps: &str) -> (Running, String, String) {
    let version_port = version_server(body.to_string());
    let api_port = free_port();
    let path = config(dir, api_port, version_port, steps);
    let daemon = Running::start_serving(&path, &dir.join("daemon.log"), api_port);
    let version = wait_for(Duration::from_secs(20), "the version to be read", || {
        target(api_port)["state"]["version"]
            .as_str()
            .map(str::to_string)
    });
    let url = format!("http://127.0.0.1:{api_port}/v1/targets/web/rollback");
    let (code, answer) = http("POST", &url, None, Some(r#"{"reason": "drill"}"#));
    assert_eq!(code, 200, "{answer}");
    let incidents = dir.join("state/incidents");
    let record = wait_for(Duration::from_secs(30), "the incident record", || {
        let entry = std::fs::read_dir(&incidents)
            .ok()?
            .flatten()
            .find(|e| e.path().extension().is_some_and(|x| x == "md"))?;
        std::fs::read_to_string(entry.path())
            .ok()
            .filter(|r| !r.contains("| Outcome | open |"))
    });
    (daemon, version, record)
}

#[test]
fn a_command_substitution_reported_by_version_url_is_never_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pwned = dir.join("pwned");
    let body = format!("v2$(touch {})", pwned.display());
    // The step reads the version the safe way; it still must not get it.
    let steps = format!(
        r#"[["sh", "-c", "printf '[%s]\\n' \"$ROLLBACKD_FROM_VERSION\" >> {}/env"]]"#,
        dir.display()
    );
    let (daemon, version, record) = trigger_with_version(dir, &body, &steps);
    let shown = format!("unknown version {body:?}");
    assert_eq!(version, shown, "status shows it escaped");
    assert!(
        record.contains(&shown),
        "record shows it escaped:\n{record}"
    );
    let env = std::fs::read_to_string(dir.join("env")).expect("the step ran");
    assert_eq!(env, "[]\n", "the step never receives the value");
    assert!(!pwned.exists(), "the version was executed");
    let log = daemon.log_text();
    assert!(
        log.contains("the live version is an unknown version"),
        "{log}"
    );
}

#[test]
fn a_version_starting_with_a_dash_never_reaches_a_step() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let args = dir.join("args");
    let steps = format!(
        r#"[["sh", "-c", "echo \"$@\" >> {}", "sh", "{{from_version}}"]]"#,
        args.display()
    );
    let (_daemon, version, record) = trigger_with_version(dir, "-rf", &steps);
    assert_eq!(version, r#"unknown version "-rf""#);
    assert!(
        record.contains(
            r#"template variable {from_version} is unknown version "-rf", not substituted: it was refused when it was read"#
        ),
        "{record}"
    );
    assert!(!args.exists(), "a step ran with the value");
}

#[test]
fn check_refuses_a_variable_in_the_script_text_of_a_shell_step() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let steps = r#"[["sh", "-c", "echo rolled back from {from_version} >> /tmp/x"]]"#;
    let path = config(dir, free_port(), free_port(), steps);
    let out = run_rollbackd(&path, &["check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains(
            "target[0].rollback.steps[0]: {from_version} is inside the script text of a sh step"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("$ROLLBACKD_FROM_VERSION"), "{stderr}");
}
