//! What rollbackd remembers, against the real binary (issue 18, items 4,
//! 5 and 6): a corrupt `snapshot.json` falls back to the previous
//! generation, and when nothing consistent is left the daemon acts on no
//! target and says so; a target reloaded out of the config and back in
//! keeps its cooldown and incident counter, across a restart too; a
//! target renamed during its rollback waits for the old name's incident
//! instead of running a second plan on the same service.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// One demo release tree (`current -> v1`) served on its own port.
struct Service {
    dir: PathBuf,
    port: u16,
}

fn service(base: &Path, name: &str) -> Service {
    let dir = base.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    rollbackd::demo::create_releases(&dir).unwrap();
    let port = serve_releases(&dir);
    Service { dir, port }
}

/// `[[target]] name` on `svc`: the demo health rule, a symlink rollback
/// (`rollback_extra` lines follow it), verified on the health URL.
fn target(name: &str, svc: &Service, cooldown: &str, extra: &str, rollback_extra: &str) -> String {
    [
        conf::target(name, cooldown, extra),
        conf::demo_health_rule(svc.port),
        conf::symlink_rollback(&svc.dir, "60s", rollback_extra),
        conf::verify("15s", &format!("http://127.0.0.1:{}/api/health", svc.port)),
    ]
    .concat()
}

/// The config: the daemon (its journal compacted past 64KiB, the least
/// allowed; the targets break together on purpose, so no blast-radius
/// guard), email to an outbox, then `targets`.
fn write_config(base: &Path, api_port: u16, targets: &[String]) -> PathBuf {
    let mut text = [conf::base(
        base,
        api_port,
        "journal_max_size = \"64KiB\"\nmax_simultaneous_breaches = 0",
    )]
    .concat();
    for t in targets {
        text.push_str(t);
    }
    conf::write(base, &text)
}

fn named(status: &Value, name: &str) -> Option<Value> {
    status["targets"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == name)
        .cloned()
}

/// Wait (30 s) until target `name` satisfies `f`; returns it.
fn wait_named(api_port: u16, name: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    wait_for(Duration::from_secs(30), what, || {
        try_status(api_port)
            .and_then(|s| named(&s, name))
            .filter(|t| f(t))
    })
}

fn post(api_port: u16, path: &str, body: &str) -> (u16, String) {
    http(
        "POST",
        &format!("http://127.0.0.1:{api_port}{path}"),
        None,
        Some(body),
    )
}

fn cli(args: &[&str], config: &Path) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

fn incident_id(t: &Value) -> String {
    t["state"]["phase"]["incident"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// For `how_long`, the `current` link of every service stays where it is.
fn assert_nothing_rolled_back(services: &[(&str, &Service, &str)], how_long: Duration) {
    let until = Instant::now() + how_long;
    while Instant::now() < until {
        for (name, svc, want) in services {
            assert_eq!(&live(&svc.dir), want, "{name} was rolled back");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn half_truncate(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
}

/// Issue 18 item 4: one target awaits confirmation, one is paused with
/// `--for 0`, one is in cooldown after a rollback (and redeployed to the
/// broken release since). A half-truncated `snapshot.json` falls back to
/// the previous generation: same incident, pause and cooldown, nothing
/// rolled back. With the fallback gone too, the daemon starts in
/// state-lost mode: nothing is acted on, status and /metrics say so, and
/// one notification goes out.
#[test]
fn a_corrupt_snapshot_never_resets_state_and_nothing_consistent_is_state_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let (wait, paused, cool) = (
        service(base, "wait"),
        service(base, "paused"),
        service(base, "cool"),
    );
    let api_port = free_port();
    let config = write_config(
        base,
        api_port,
        &[
            target(
                "wait",
                &wait,
                "1h",
                "confirm = \"required\"\nconfirm_timeout = \"30m\"",
                "",
            ),
            target("paused", &paused, "1h", "", ""),
            target("cool", &cool, "1h", "", ""),
        ],
    );
    let state = base.join("state");
    let d = Running::start(&config, &base.join("daemon1.log"));
    for name in ["wait", "paused", "cool"] {
        wait_named(api_port, name, "version v1", |t| {
            t["state"]["version"] == "v1"
        });
    }
    let (code, body) = post(
        api_port,
        "/v1/targets/paused/pause",
        r#"{"for": "0", "reason": "maintenance"}"#,
    );
    assert_eq!(code, 200, "{body}");
    for svc in [&wait, &paused, &cool] {
        rollbackd::demo::switch_release(&svc.dir, "v2").unwrap();
    }
    let waiting = wait_named(api_port, "wait", "AwaitingConfirmation", |t| {
        t["phase"] == "AwaitingConfirmation"
    });
    wait_named(api_port, "paused", "Escalated (paused)", |t| {
        t["phase"] == "Escalated"
    });
    let cooled = wait_named(api_port, "cool", "RolledBack", |t| {
        t["phase"] == "RolledBack"
    });
    assert_eq!(live(&cool.dir), "v1");
    // Redeployed during the cooldown: not acted on until it ends.
    rollbackd::demo::switch_release(&cool.dir, "v2").unwrap();
    wait_named(api_port, "cool", "version v2 again", |t| {
        t["state"]["version"] == "v2"
    });
    // Journal lines until it is compacted into snapshot.json (64KiB).
    let reason = "m".repeat(900);
    for i in 0.. {
        if state.join("snapshot.json").exists() {
            break;
        }
        assert!(i < 500, "no snapshot after {i} pauses");
        let (code, body) = post(
            api_port,
            "/v1/targets/paused/pause",
            &format!(r#"{{"for": "0", "reason": "{reason} {i}"}}"#),
        );
        assert_eq!(code, 200, "{body}");
    }
    d.kill9();

    // 1. snapshot.json half-truncated: the previous generation is used.
    half_truncate(&state.join("snapshot.json"));
    let d = Running::start(&config, &base.join("daemon2.log"));
    let after = wait_named(api_port, "wait", "the recovered state", |_| true);
    assert_eq!(after["phase"], "AwaitingConfirmation", "{after}");
    assert_eq!(incident_id(&after), incident_id(&waiting), "same incident");
    assert_eq!(after["until"], waiting["until"], "same deadline");
    let p = named(&try_status(api_port).unwrap(), "paused").unwrap();
    assert!(p["paused"]["by"].is_string(), "{p}");
    assert!(p["paused"]["until"].is_null(), "still until resumed: {p}");
    let c = named(&try_status(api_port).unwrap(), "cool").unwrap();
    assert_eq!(c["phase"], "RolledBack");
    assert_eq!(c["until"], cooled["until"], "same cooldown");
    assert_nothing_rolled_back(
        &[
            ("wait", &wait, "v2"),
            ("paused", &paused, "v2"),
            ("cool", &cool, "v2"),
        ],
        Duration::from_secs(6),
    );
    assert!(
        d.log_text().contains("recovered from"),
        "the fallback is reported:\n{}",
        d.log_text()
    );
    assert!(state.join("snapshot.json.unreadable").exists());
    d.kill9();

    // 2. No consistent state left (snapshot unreadable, no previous
    // generation): state-lost mode.
    half_truncate(&state.join("snapshot.json"));
    for f in ["snapshot.prev.json", "journal.prev.jsonl"] {
        let _ = std::fs::remove_file(state.join(f));
    }
    let outbox = state.join("outbox");
    let lost_mails = || {
        mails(&outbox)
            .into_iter()
            .filter(|(_, m)| m.contains("STATE LOST"))
            .count()
    };
    assert_eq!(lost_mails(), 0);
    let journal_before = std::fs::read(state.join("journal.jsonl")).unwrap();
    let mut d = Running::start(&config, &base.join("daemon3.log"));
    let s = wait_for(Duration::from_secs(30), "status in state-lost mode", || {
        try_status(api_port).filter(|s| s["state_lost"].is_string())
    });
    let why = s["state_lost"].as_str().unwrap();
    assert!(why.contains("acts on no target"), "{why}");
    assert!(why.contains("snapshot.json is unreadable"), "{why}");
    assert!(why.contains("mv "), "says how to get out: {why}");
    let metrics = metrics(api_port);
    assert!(
        metrics.lines().any(|l| l == "rollbackd_state_lost 1"),
        "{metrics}"
    );
    let out = cli(&["status"], &config);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("STATE LOST"), "{text}");
    // A human's approval is refused too: nothing is acted on.
    let (code, body) = post(
        api_port,
        &format!("/v1/incidents/{}/approve", incident_id(&waiting)),
        "{}",
    );
    assert_ne!(code, 200, "{body}");
    assert_nothing_rolled_back(
        &[
            ("wait", &wait, "v2"),
            ("paused", &paused, "v2"),
            ("cool", &cool, "v2"),
        ],
        Duration::from_secs(6),
    );
    wait_mail(
        &outbox,
        Duration::from_secs(10),
        "the state-lost mail",
        "STATE LOST",
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(lost_mails(), 1, "notified once");
    d.assert_alive();
    assert_eq!(
        std::fs::read(state.join("journal.jsonl")).unwrap(),
        journal_before,
        "nothing written on top of the state that was left"
    );
    drop(d);
}

/// Issue 18 item 5: a target in cooldown (redeployed to the broken release
/// since) is reloaded out of the config, the daemon restarts, and the
/// target is reloaded back in: it keeps its cooldown (no second rollback)
/// and its incident counter (the next incident is `-2`).
#[test]
fn a_target_reloaded_out_and_back_in_keeps_its_cooldown_and_incident_counter() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let (web, spare) = (service(base, "web"), service(base, "spare"));
    let api_port = free_port();
    let web_target = target("web", &web, "1h", "", "");
    let spare_target = target("spare", &spare, "1h", "", "");
    let both = write_config(base, api_port, &[web_target.clone(), spare_target.clone()]);
    let d = Running::start(&both, &base.join("daemon1.log"));
    wait_named(api_port, "web", "version v1", |t| {
        t["state"]["version"] == "v1"
    });
    rollbackd::demo::switch_release(&web.dir, "v2").unwrap();
    let first = wait_named(api_port, "web", "RolledBack", |t| {
        t["phase"] == "RolledBack"
    });
    assert!(incident_id(&first).ends_with("-web-1"), "{first}");
    assert_eq!(live(&web.dir), "v1");
    rollbackd::demo::switch_release(&web.dir, "v2").unwrap();
    wait_named(api_port, "web", "version v2 again", |t| {
        t["state"]["version"] == "v2"
    });

    // Out of the config, and a restart while it is out.
    write_config(base, api_port, std::slice::from_ref(&spare_target));
    let out = cli(&["reload"], &both);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(Duration::from_secs(10), "web to leave", || {
        try_status(api_port).filter(|s| named(s, "web").is_none())
    });
    assert_eq!(d.stop(), Some(0));
    let d = Running::start(&both, &base.join("daemon2.log"));
    wait_named(api_port, "spare", "the daemon back", |_| true);

    // Back in: the same state, the cooldown holds.
    write_config(base, api_port, &[web_target, spare_target]);
    let out = cli(&["reload"], &both);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = wait_named(api_port, "web", "web back", |_| true);
    assert_eq!(back["phase"], "RolledBack", "{back}");
    assert_eq!(back["until"], first["until"], "same cooldown");
    assert_eq!(back["state"]["incident_seq"], 1, "{back}");
    assert_nothing_rolled_back(&[("web", &web, "v2")], Duration::from_secs(4));
    assert!(
        d.log_text().contains("state is restored"),
        "{}",
        d.log_text()
    );

    // The counter goes on: the next incident is the second.
    let (code, body) = post(
        api_port,
        "/v1/targets/web/rollback",
        r#"{"reason": "counter check"}"#,
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let id = v["incident"]["id"].as_str().unwrap_or_default();
    assert!(id.ends_with("-web-2"), "{body}");
    drop(d);
}

/// Issue 18 item 6: `web` is renamed `web2` by a reload while its plan
/// runs a 6 s step. `web2` has the same executor (the same `current`
/// link): it waits for web's incident, says so, and runs no plan.
#[test]
fn a_target_renamed_during_its_rollback_waits_instead_of_running_a_second_plan() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let web = service(base, "web");
    let api_port = free_port();
    let runs = base.join("runs");
    // The service stays broken while the `pre` step sleeps.
    let pre = format!(
        "pre = [[\"sh\", \"-c\", \"echo run >> {}; sleep 6\"]]",
        runs.display()
    );
    let config = write_config(base, api_port, &[target("web", &web, "1h", "", &pre)]);
    let d = Running::start(&config, &base.join("daemon.log"));
    wait_named(api_port, "web", "version v1", |t| {
        t["state"]["version"] == "v1"
    });
    rollbackd::demo::switch_release(&web.dir, "v2").unwrap();
    wait_named(api_port, "web", "RollingBack", |t| {
        t["phase"] == "RollingBack"
    });
    wait_for(Duration::from_secs(10), "the sleeping step", || {
        runs.exists().then_some(())
    });

    write_config(base, api_port, &[target("web2", &web, "1h", "", &pre)]);
    let out = cli(&["reload"], &config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let waiting = wait_named(api_port, "web2", "web2 to wait", |t| {
        t["state"]["waiting"].is_string()
    });
    let why = waiting["state"]["waiting"].as_str().unwrap();
    assert!(
        why.starts_with("waiting: web has an open incident (")
            && why.contains(&format!(
                "on the same executor (symlink {})",
                web.dir.join("current").display()
            )),
        "{why}"
    );
    let text = String::from_utf8_lossy(&cli(&["status"], &config).stdout).into_owned();
    assert!(text.contains("waiting: web has an open incident"), "{text}");

    // web's plan ends and is verified; web2 never started one.
    wait_for(Duration::from_secs(30), "web to finish", || {
        try_status(api_port).filter(|s| named(s, "web").is_none_or(|t| t["phase"] == "RolledBack"))
    });
    assert_eq!(live(&web.dir), "v1");
    let t = wait_named(api_port, "web2", "web2 no longer waiting", |t| {
        t["state"]["waiting"].is_null()
    });
    assert_eq!(t["phase"], "Watching", "{t}");
    assert_eq!(
        std::fs::read_to_string(&runs).unwrap().lines().count(),
        1,
        "one plan ran"
    );
    let web2_steps: Vec<Value> = journal(&base.join("state"))
        .into_iter()
        .filter(|e| e["type"] == "step" && e["target"] == "web2" && e["to"] != "Watching")
        .collect();
    assert!(web2_steps.is_empty(), "{web2_steps:?}");
    assert!(d.log_text().contains("waiting"), "{}", d.log_text());
    drop(d);
}
