//! Faults and hostile input (issue 14), each against the real binary and
//! real processes: a connection flood under `ulimit -n 1024`, two daemons
//! on one `state_dir`, a `setsid` child escaping a killed step, a step
//! orphaned by a SIGKILLed daemon, SIGTERM during a long step, `rm -rf` of
//! `state_dir`, 50,000 alerts, secret files at 0644, a lowercase `bearer`
//! scheme and the confirmation mail's "Confirmed by". The whole matrix is
//! in `tests/fault_matrix.md`.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A config with one `web` target watching the demo service at `port` and
/// a command rollback of `steps` (TOML array of argv).
fn command_config(
    dir: &Path,
    port: u16,
    api_port: u16,
    daemon_extra: &str,
    target_extra: &str,
    steps: &str,
) -> PathBuf {
    let text = [
        conf::base(dir, api_port, daemon_extra),
        conf::target("web", "1m", target_extra),
        conf::demo_health_rule(port),
        conf::command_rollback("60s", steps),
    ]
    .concat();
    conf::write(dir, &text)
}

fn trigger(api_port: u16) -> (u16, String) {
    http(
        "POST",
        &format!("http://127.0.0.1:{api_port}/v1/targets/web/rollback"),
        None,
        Some(r#"{"reason": "fault test"}"#),
    )
}

/// Live processes whose command line contains `needle`.
fn procs_with(needle: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            == Some("Z");
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if !zombie && cmd.contains(needle) {
            found.push(pid);
        }
    }
    found
}

/// A sleep duration unique to this test run, so parallel runs never see
/// each other's processes: `3015.000123`.
/// The demo service and a config whose plan is `sleep LONG`, LONG a
/// [`unique_sleep`] of `base` seconds: (temp dir, its path, API port,
/// config, LONG).
fn sleep_plan(base: u32) -> (tempfile::TempDir, PathBuf, u16, PathBuf, String) {
    let (tmp, dir, port, api_port) = demo_releases();
    let long = unique_sleep(base);
    let steps = format!(r#"[["sleep", "{long}"]]"#);
    let config = command_config(&dir, port, api_port, "", "", &steps);
    (tmp, dir, api_port, config, long)
}

/// Start the daemon on `config` (its log in `log`) and trigger a rollback,
/// which must be accepted: the daemon and the answer.
fn start_and_trigger(config: &Path, log: &Path, api_port: u16) -> (Running, String) {
    let daemon = Running::start_serving(config, log, api_port);
    let (code, body) = trigger(api_port);
    assert_eq!(code, 200, "{body}");
    (daemon, body)
}

/// A release tree, an API token `s3cret` in `dir/api-token` and a config
/// that reads it: (temp dir, its path, the token file, API port, config).
fn token_config() -> (tempfile::TempDir, PathBuf, PathBuf, u16, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    rollbackd::demo::create_releases(&dir).unwrap();
    let token_line = conf::api_token(&dir, Some("s3cret"));
    let api_port = free_port();
    let config = command_config(&dir, 1, api_port, &token_line, "", r#"[["true"]]"#);
    (tmp, dir.clone(), dir.join("api-token"), api_port, config)
}

fn unique_sleep(base: u32) -> String {
    format!("{base}.{:06}", std::process::id() % 1_000_000)
}

/// Item 1: 1,100 idle TCP connections to the API of a daemon limited to
/// 1,024 descriptors (soft and hard, so it cannot raise them) for 5 s:
/// `/healthz` keeps answering, probes keep working (no EMFILE), the healthy
/// release is not rolled back.
#[test]
fn connection_flood_under_ulimit_1024_rolls_nothing_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    rollbackd::demo::create_releases(&dir).unwrap();
    // A healthy v3 deployed over v1: a rollback would have somewhere to go.
    std::fs::create_dir_all(dir.join("releases/v3")).unwrap();
    std::fs::write(dir.join("releases/v3/release.txt"), "healthy\n").unwrap();
    let port = serve_releases(&dir);
    let text = symlink_config(&dir, port, "");
    let api_port: u16 = text
        .split("listen = \"127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .parse()
        .unwrap();
    let config = dir.join("rollbackd.toml");
    std::fs::write(&config, text).unwrap();
    let mut daemon = Running::start_after(Some("ulimit -n 1024"), &config, &dir.join("daemon.log"));
    api_up(api_port);
    wait_for(Duration::from_secs(20), "version v1", || {
        (target(api_port)["state"]["version"] == "v1").then_some(())
    });
    rollbackd::demo::switch_release(&dir, "v3").unwrap();
    wait_for(Duration::from_secs(20), "version v3", || {
        (target(api_port)["state"]["version"] == "v3").then_some(())
    });

    let started = Instant::now();
    let mut flood = Vec::new();
    for _ in 0..1_100 {
        if let Ok(s) = TcpStream::connect_timeout(
            &([127, 0, 0, 1], api_port).into(),
            Duration::from_millis(500),
        ) {
            flood.push(s);
        }
    }
    assert!(
        flood.len() >= 1_000,
        "only {} connections opened",
        flood.len()
    );
    let mut healthz = 0;
    while started.elapsed() < Duration::from_millis(5_500) {
        let (code, body) = get(&format!("http://127.0.0.1:{api_port}/healthz"));
        assert_eq!(code, 200, "/healthz during the flood: {body}");
        healthz += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(flood);
    // Every /healthz during the flood answered (asserted above); how many
    // fit in the window depends on the machine's load.
    assert!(healthz >= 3, "{healthz}");
    // Probes went on through the flood: the rule was evaluated after it
    // and is ok.
    std::thread::sleep(Duration::from_secs(2));
    let t = target(api_port);
    assert_eq!(t["phase"], "Watching", "{t}");
    assert_eq!(t["state"]["rules"][0]["status"]["status"], "ok", "{t}");
    daemon.assert_alive();
    let state = dir.join("state");
    let moved = transitions(&state);
    assert!(moved.is_empty(), "no incident: {moved:?}");
    assert_eq!(live(&dir), "v3");
    let log = daemon.log_text();
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(log.contains("API connection limit reached"), "{log}");
}

/// Item 2: a second daemon on the same `state_dir` (another port) exits 1
/// naming the first one's pid; the first keeps running and client
/// commands still work.
#[test]
fn second_daemon_on_one_state_dir_exits_naming_the_holder() {
    let (_tmp, dir, port, api_port) = demo_releases();
    let config = command_config(&dir, port, api_port, "", "", r#"[["true"]]"#);
    let mut first = Running::start_serving(&config, &dir.join("first.log"), api_port);
    let second_dir = dir.join("second");
    std::fs::create_dir_all(&second_dir).unwrap();
    let second_config = command_config(&second_dir, port, free_port(), "", "", r#"[["true"]]"#);
    // Same state_dir as the first.
    edit_file(&second_config, |c| {
        c.replace(
            &format!("{}/state", second_dir.display()),
            &format!("{}/state", dir.display()),
        )
    });
    let out = run_rollbackd(&second_config, &["run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "in use by another rollbackd (pid {}",
            first.child.id()
        )),
        "{stderr}"
    );
    first.assert_alive();
    let status = run_rollbackd(&config, &["status"]);
    assert_eq!(status.status.code(), Some(0), "{status:?}");
    assert_eq!(
        std::fs::read_to_string(dir.join("state/lock"))
            .unwrap()
            .trim(),
        first.child.id().to_string()
    );
}

/// Item 5: `setsid sleep & sleep 100` under a 2 s step timeout. The step's
/// group is killed, the escaped sleep too, and the record lists it; the
/// running step's pid file exists while it runs and is gone after.
#[test]
fn setsid_child_escaping_a_killed_step_is_killed_and_recorded() {
    let (_tmp, dir, port, api_port) = demo_releases();
    let escaped = unique_sleep(3015);
    let steps = format!(r#"[["sh", "-c", "setsid sleep {escaped} & sleep 100"]]"#);
    let config = command_config(&dir, port, api_port, "", "", &steps);
    edit_file(&config, |c| {
        c.replace(
            "timeout = \"60s\"",
            "timeout = \"60s\"\n  step_timeout = \"2s\"",
        )
    });
    let daemon = Running::start_serving(&config, &dir.join("daemon.log"), api_port);
    let (code, body) = trigger(api_port);
    assert_eq!(code, 200, "{body}");
    let running = dir.join("state/running");
    let pid_file = wait_for(Duration::from_secs(10), "the step's pid file", || {
        std::fs::read_dir(&running)
            .ok()?
            .flatten()
            .next()
            .map(|e| e.path())
    });
    let recorded: Value = serde_json::from_slice(&std::fs::read(&pid_file).unwrap()).unwrap();
    assert_eq!(recorded["argv"][0], "sh", "{recorded}");
    wait_for(Duration::from_secs(5), "the escaped sleep to start", || {
        (!procs_with(&format!("sleep {escaped}")).is_empty()).then_some(())
    });
    let t = wait_for(Duration::from_secs(20), "the step to be killed", || {
        let t = target(api_port);
        (t["phase"] != "RollingBack").then_some(t)
    });
    let incidents = get_json(&format!("http://127.0.0.1:{api_port}/v1/incidents"));
    let step = &incidents[0]["steps"][0];
    let leftovers = step["leftovers"].to_string();
    assert!(
        leftovers.contains("killed pid") && leftovers.contains(&format!("sleep {escaped}")),
        "{step}\n{t}"
    );
    assert!(
        step["error"]
            .as_str()
            .unwrap()
            .contains("escaped the group"),
        "{step}"
    );
    assert!(
        procs_with(&format!("sleep {escaped}")).is_empty(),
        "the escaped sleep still runs"
    );
    assert!(!pid_file.exists(), "pid file removed after the step");
    drop(daemon);
}

/// Item 5, after a SIGKILL of the daemon: the step it was running goes on;
/// the next start finds it through its pid file, kills it and logs it
/// with its incident.
#[test]
fn step_orphaned_by_a_sigkilled_daemon_is_found_and_killed_at_restart() {
    let (_tmp, dir, api_port, config, long) = sleep_plan(3016);
    let (daemon, body) = start_and_trigger(&config, &dir.join("daemon1.log"), api_port);
    let incident = serde_json::from_str::<Value>(&body).unwrap()["incident"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(Duration::from_secs(10), "the step's pid file", || {
        dir.join(format!("state/running/{incident}.pid"))
            .exists()
            .then_some(())
    });
    daemon.kill9();
    assert!(
        !procs_with(&format!("sleep {long}")).is_empty(),
        "the step outlives a SIGKILLed daemon"
    );

    let restarted = Running::start_serving(&config, &dir.join("daemon2.log"), api_port);
    wait_for(Duration::from_secs(10), "the orphan to be killed", || {
        procs_with(&format!("sleep {long}"))
            .is_empty()
            .then_some(())
    });
    // The kill is logged right after it (the API may answer before: the
    // socket is bound first).
    let logged = || {
        let log = restarted.log_text();
        (log.contains("still running from the previous rollbackd") && log.contains(&incident))
            .then_some(())
    };
    wait_for(
        Duration::from_secs(10),
        "the orphan's kill in the log",
        logged,
    );
    assert!(!dir.join(format!("state/running/{incident}.pid")).exists());
}

/// Item 6: SIGTERM 1 s into a 40 s step. The daemon waits the 20 s grace,
/// kills the step's group, journals the plan as interrupted by shutdown
/// and exits well inside `TimeoutStopSec=30s`.
#[test]
fn sigterm_during_a_long_step_kills_it_at_the_end_of_the_grace() {
    let (_tmp, dir, api_port, config, long) = sleep_plan(40);
    let (daemon, _) = start_and_trigger(&config, &dir.join("daemon.log"), api_port);
    wait_for(Duration::from_secs(5), "the step to run", || {
        (!procs_with(&format!("sleep {long}")).is_empty()).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let log = daemon.log.clone();
    let t0 = Instant::now();
    assert_eq!(daemon.stop(), Some(0));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(19) && took < Duration::from_secs(26),
        "exit took {took:?}"
    );
    assert!(
        procs_with(&format!("sleep {long}")).is_empty(),
        "step killed"
    );
    let state = dir.join("state");
    let finished = journal(&state)
        .into_iter()
        .find(|e| e["type"] == "step" && e["event"]["event"] == "exec_finished")
        .unwrap_or_else(|| {
            panic!(
                "no exec_finished journaled; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
    let error = finished["event"]["result"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("interrupted by shutdown"), "{finished}");
    assert!(
        !state.join("running").read_dir().unwrap().any(|_| true),
        "pid file removed"
    );
}

/// Item 7: `rm -rf state_dir` under a running daemon. A trigger is refused
/// (nothing runs), the error is logged, the gauge says so, and one
/// notification is written.
#[test]
fn state_dir_deleted_while_running_refuses_to_act_and_notifies_once() {
    let (_tmp, dir, port, api_port) = demo_releases();
    let ran = dir.join("ran");
    let steps = format!(r#"[["touch", "{}"]]"#, ran.display());
    let config = command_config(&dir, port, api_port, "", "", &steps);
    let mut daemon = Running::start_serving(&config, &dir.join("daemon.log"), api_port);
    wait_for(Duration::from_secs(10), "a first evaluation", || {
        (target(api_port)["state"]["rules"][0]["status"]["status"] == "ok").then_some(())
    });
    std::fs::remove_dir_all(dir.join("state")).unwrap();
    let (code, body) = trigger(api_port);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("could not journal"), "{body}");
    let metrics = metrics(api_port);
    assert!(
        metrics.contains("rollbackd_journal_replaced 1"),
        "{metrics}"
    );
    let outbox = dir.join("state/outbox");
    let mail = wait_mail(
        &outbox,
        Duration::from_secs(15),
        "the state-dir-lost mail",
        "refuses to act",
    );
    // Two more checks pass: still one mail.
    std::thread::sleep(Duration::from_secs(11));
    let lost: Vec<_> = mails(&outbox)
        .into_iter()
        .filter(|(_, text)| text.contains("refuses to act"))
        .collect();
    assert_eq!(lost.len(), 1, "{:?}", mail.0);
    assert!(!ran.exists(), "nothing ran");
    daemon.assert_alive();
    let log = daemon.log_text();
    assert!(log.contains("state directory lost"), "{log}");
}

/// Item 8: 50,000 distinct firing alerts matching one rule, in 50 POSTs:
/// all answered fast, 1,000 kept, 49,000 reported dropped, the daemon's
/// RSS and `alerts.json` stay small. Prints the numbers for BENCHMARKS.md.
#[test]
fn fifty_thousand_alerts_are_bounded_and_fast() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let api_port = free_port();
    let config = [
        conf::daemon(&dir, api_port, "200ms", "dry_run = true"),
        conf::target("frontend", "", ""),
        conf::paged_rule("Flood", "0s"),
        conf::command_rollback("", r#"[["true"]]"#),
    ]
    .concat();
    let path = conf::write(&dir, &config);
    let daemon = Running::start_serving(&path, &dir.join("daemon.log"), api_port);
    let rss = || -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", daemon.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    let before = rss();
    let hook = format!("http://127.0.0.1:{api_port}/v1/alertmanager");
    let starts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (mut accepted, mut dropped) = (0, 0);
    let t0 = Instant::now();
    let mut slowest = Duration::ZERO;
    for batch in 0..50 {
        let alerts: Vec<String> = (0..1_000)
            .map(|i| {
                let n = batch * 1_000 + i;
                format!(
                    r#"{{"status":"firing","labels":{{"alertname":"Flood","instance":"host-{n}","job":"node"}},"annotations":{{"summary":"flood {n}"}},"startsAt":"{starts}","endsAt":"0001-01-01T00:00:00Z","fingerprint":"fp{n:08}"}}"#
                )
            })
            .collect();
        let body = format!(
            r#"{{"version":"4","status":"firing","receiver":"r","groupKey":"g{batch}","alerts":[{}]}}"#,
            alerts.join(",")
        );
        let t = Instant::now();
        let (code, answer) = http("POST", &hook, None, Some(&body));
        slowest = slowest.max(t.elapsed());
        assert_eq!(code, 200, "{answer}");
        let v: Value = serde_json::from_str(&answer).unwrap();
        accepted += v["accepted"].as_u64().unwrap();
        dropped += v["dropped"].as_u64().unwrap();
    }
    let took = t0.elapsed();
    assert_eq!((accepted, dropped), (1_000, 49_000));
    std::thread::sleep(Duration::from_millis(1_500));
    let after = rss();
    let file = std::fs::metadata(dir.join("state/alerts.json"))
        .unwrap()
        .len();
    eprintln!(
        "50,000 alerts: {took:?} in all, slowest POST {slowest:?}; RSS {before} kB -> {after} kB; alerts.json {file} bytes"
    );
    assert!(took < Duration::from_secs(60), "{took:?}");
    assert!(
        after < before + 40_000,
        "RSS grew from {before} kB to {after} kB"
    );
    assert!(file < 1_000_000, "alerts.json is {file} bytes");
    let metrics = metrics(api_port);
    assert!(
        metrics.contains("rollbackd_alerts_dropped_total 49000"),
        "{metrics}"
    );
    // Recorded by the API from the store's report (the source itself
    // records no metrics): 1,000 per rule are kept.
    assert!(
        metrics.contains("rollbackd_alerts_stored 1000"),
        "{metrics}"
    );
    let t = target(api_port);
    assert_eq!(t["state"]["rules"][0]["value"], 1000.0, "{t}");
}

/// Item 10: secret files readable by group or others: `check` warns
/// (exit 0, `FILE: key.path: warning: ...`), `run` logs a warning.
#[test]
fn secret_files_readable_by_others_are_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let (_tmp, dir, token, api_port, config) = token_config();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run_rollbackd(&config, &["check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let want = format!(
        "{}: daemon.api_token_file: warning: secret file {} is readable by its group and all users (mode 0644)",
        config.display(),
        token.display()
    );
    assert!(stderr.contains(&want), "{stderr}");

    let daemon = Running::start_serving(&config, &dir.join("daemon.log"), api_port);
    let log = daemon.log_text();
    assert!(
        log.contains("WARN") && log.contains("daemon.api_token_file: warning"),
        "{log}"
    );
    drop(daemon);

    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run_rollbackd(&config, &["check"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
}

/// Smaller defect: the `Authorization` scheme is case-insensitive.
#[test]
fn bearer_scheme_is_matched_case_insensitively() {
    let (_tmp, dir, _, api_port, config) = token_config();
    let _daemon = Running::start_serving(&config, &dir.join("daemon.log"), api_port);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let send = |auth: &str| -> u16 {
        rt.block_on(async {
            reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap()
                .post(format!("http://127.0.0.1:{api_port}/v1/targets/web/pause"))
                .header("authorization", auth)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    assert_eq!(send("bearer s3cret"), 200);
    assert_eq!(send("BEARER s3cret"), 200);
    assert_eq!(send("Bearer s3cret"), 200);
    assert_eq!(send("bearer wrong"), 401);
    assert_eq!(send("Basic s3cret"), 401);
}

/// Smaller defect: the awaiting-confirmation mail of a `confirm =
/// "required"` target says the approval is pending, not "not required".
#[test]
fn awaiting_confirmation_mail_says_confirmation_is_pending() {
    let (_tmp, dir, port, api_port) = demo_releases();
    let config = command_config(
        &dir,
        port,
        api_port,
        "",
        "confirm = \"required\"\nconfirm_timeout = \"10m\"",
        r#"[["true"]]"#,
    );
    let _daemon = Running::start_serving(&config, &dir.join("daemon.log"), api_port);
    rollbackd::demo::switch_release(&dir, "v2").unwrap();
    let outbox = dir.join("state/outbox");
    let (_, text) = wait_mail(
        &outbox,
        Duration::from_secs(20),
        "the confirmation mail",
        "To approve:",
    );
    assert!(text.contains("pending: awaiting approval"), "{text}");
    assert!(!text.contains("not required"), "{text}");
}
