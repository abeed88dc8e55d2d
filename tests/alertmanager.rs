//! A real Alertmanager on loopback with a webhook receiver pointing at the
//! daemon: alerts posted to Alertmanager's v2 API open the incident, and
//! resolving them resolves it. Malformed and duplicated deliveries are
//! checked against the daemon directly.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

struct Alertmanager(Child);

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_alertmanager(dir: &std::path::Path, daemon_port: u16) -> (Alertmanager, u16) {
    assert!(
        std::path::Path::new(ALERTMANAGER).exists(),
        "{ALERTMANAGER} is missing: install the Debian package prometheus-alertmanager"
    );
    let port = free_port();
    let config = format!(
        r#"
route:
  receiver: rollbackd
  group_by: ['alertname']
  group_wait: 200ms
  group_interval: 500ms
  repeat_interval: 1h
receivers:
  - name: rollbackd
    webhook_configs:
      - url: http://127.0.0.1:{daemon_port}/v1/alertmanager
        send_resolved: true
"#
    );
    let cfg = dir.join("alertmanager.yml");
    std::fs::write(&cfg, config).unwrap();
    let log = std::fs::File::create(dir.join("alertmanager.log")).unwrap();
    let child = Command::new(ALERTMANAGER)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.path={}", dir.join("am-data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start alertmanager");
    let am = Alertmanager(child);
    let ready = format!("http://127.0.0.1:{port}/-/ready");
    wait_for(Duration::from_secs(20), "alertmanager to be ready", || {
        answers_200(&ready).then_some(())
    });
    (am, port)
}

fn post_alert(am_port: u16, ends_at: Option<&str>, starts_at: &str) {
    let ends = ends_at
        .map(|e| format!(r#","endsAt":"{e}""#))
        .unwrap_or_default();
    let body = format!(
        r#"[{{"labels":{{"alertname":"HighErrorRate","service":"frontend","cmd":"$(touch /tmp/pwned)"}},
        "annotations":{{"summary":"5xx above 5%"}},"startsAt":"{starts_at}"{ends}}}]"#
    );
    let (code, text) = http(
        "POST",
        &format!("http://127.0.0.1:{am_port}/api/v2/alerts"),
        None,
        Some(&body),
    );
    assert_eq!(code, 200, "alertmanager refused the alert: {text}");
}

/// The daemon's config: the `paged` rule on Alertmanager's
/// `HighErrorRate` for `frontend`, a rollback that writes `dir/ran`.
fn config(
    dir: &std::path::Path,
    api_port: u16,
    daemon_extra: &str,
    target_extra: &str,
) -> std::path::PathBuf {
    let text = [
        conf::base(dir, api_port, daemon_extra),
        conf::target("frontend", "", target_extra),
        r#"
  [[target.rule]]
  name = "paged"
  source = "alertmanager"
  match = { alertname = "HighErrorRate", service = "frontend" }
  for = "0s"
"#
        .to_string(),
        conf::command_rollback(
            "",
            &format!(r#"[["sh", "-c", "echo ran >> {}/ran"]]"#, dir.display()),
        ),
    ]
    .concat();
    conf::write(dir, &text)
}

#[test]
fn alerts_through_a_real_alertmanager_open_and_resolve_the_incident() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    rollbackd::demo::create_releases(&dir).unwrap();
    let api_port = free_port();
    let path = config(
        &dir,
        api_port,
        "",
        "confirm = \"required\"\nconfirm_timeout = \"10m\"",
    );
    let _daemon = Running::start_serving(&path, &dir.join("daemon.log"), api_port);

    // Direct deliveries: malformed is 400 with the reason and changes nothing.
    let hook = format!("http://127.0.0.1:{api_port}/v1/alertmanager");
    let (code, body) = http(
        "POST",
        &hook,
        None,
        Some(r#"{"version":"4","status":"firing"}"#),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("missing field `alerts`"), "{body}");
    let (code, body) = http(
        "POST",
        &hook,
        None,
        Some(r#"{"version":"9","status":"firing","alerts":[]}"#),
    );
    assert_eq!(code, 400);
    assert!(body.contains("version \\\"9\\\""), "{body}");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(target(api_port)["phase"], "Watching");

    let (_am, am_port) = start_alertmanager(&dir, api_port);
    let starts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    post_alert(am_port, None, &starts);
    let t = wait_phase(
        api_port,
        Duration::from_secs(30),
        "the alert to open an incident",
        "AwaitingConfirmation",
    );
    let inc = t["state"]["phase"]["incident"].to_string();
    assert!(inc.contains("alertmanager match"), "{inc}");
    assert!(
        !inc.contains("pwned"),
        "alert label values never reach the incident: {inc}"
    );

    // Resolve it in Alertmanager: rollbackd resolves the incident, no action.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    post_alert(am_port, Some(&now), &starts);
    let t = wait_phase(
        api_port,
        Duration::from_secs(30),
        "the resolved alert to resolve the incident",
        "Resolved",
    );
    assert!(t["state"]["phase"]["incident"]["verification"]
        .to_string()
        .contains("signals recovered"));
    assert!(!dir.join("ran").exists(), "no rollback ran");

    // A redelivered payload counts once.
    let payload = format!(
        r#"{{"version":"4","status":"firing","receiver":"r","groupKey":"g","alerts":[{{"status":"firing",
        "labels":{{"alertname":"Other"}},"annotations":{{}},"startsAt":"{starts}","endsAt":"0001-01-01T00:00:00Z","fingerprint":"f1"}}]}}"#
    );
    let (code, first) = http("POST", &hook, None, Some(&payload));
    assert_eq!(code, 200, "{first}");
    let (_, second) = http("POST", &hook, None, Some(&payload));
    let first: Value = serde_json::from_str(&first).unwrap();
    let second: Value = serde_json::from_str(&second).unwrap();
    assert_eq!(first["accepted"], 1);
    assert_eq!(second["accepted"], 0);
    assert_eq!(second["duplicates"], 1);
}

#[test]
fn firing_alerts_survive_a_restart_without_a_new_delivery() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let api_port = free_port();
    let path = config(&dir, api_port, "dry_run = true", "");
    let rule_status = |t: &Value| t["state"]["rules"][0]["status"]["status"].clone();

    let daemon = Running::start(&path, &dir.join("daemon1.log"));
    api_up(api_port);
    let starts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    // One firing alert that matches, one that already ended before the
    // restart (its endsAt passes) and must not come back.
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let payload = format!(
        r#"{{"version":"4","status":"firing","receiver":"r","groupKey":"g","alerts":[
        {{"status":"firing","labels":{{"alertname":"HighErrorRate","service":"frontend"}},"annotations":{{}},
          "startsAt":"{starts}","endsAt":"0001-01-01T00:00:00Z","fingerprint":"keep"}},
        {{"status":"firing","labels":{{"alertname":"Gone"}},"annotations":{{}},
          "startsAt":"{starts}","endsAt":"{soon}","fingerprint":"ended"}}]}}"#
    );
    let hook = format!("http://127.0.0.1:{api_port}/v1/alertmanager");
    let (code, body) = http("POST", &hook, None, Some(&payload));
    assert_eq!(code, 200, "{body}");
    wait_for(Duration::from_secs(15), "the rule to be breached", || {
        (rule_status(&target(api_port)) == "breached").then_some(())
    });
    assert_eq!(daemon.stop(), Some(0));
    let saved = std::fs::read_to_string(dir.join("state/alerts.json")).unwrap();
    assert!(saved.contains("keep") && saved.contains("ended"), "{saved}");
    // Let "ended" pass its endsAt while the daemon is down.
    wait_for(Duration::from_secs(10), "the second alert's endsAt", || {
        (chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true) > soon).then_some(())
    });

    let restarted = chrono::Utc::now();
    let daemon = Running::start(&path, &dir.join("daemon2.log"));
    api_up(api_port);
    // Nothing is delivered again, yet the first evaluation after the
    // restart (not the journaled one) finds the rule breached.
    let t = wait_for(
        Duration::from_secs(15),
        "the rule to be evaluated after the restart",
        || {
            let t = target(api_port);
            let at: chrono::DateTime<chrono::Utc> =
                serde_json::from_value(t["state"]["rules"][0]["at"].clone()).ok()?;
            (at > restarted).then_some(t)
        },
    );
    assert_eq!(rule_status(&t), "breached", "{t}");
    let log = daemon.log_text();
    assert!(
        log.contains("alerts reloaded from the previous run"),
        "{log}"
    );
    // A redelivery of the same alert still counts once.
    let (_, body) = http("POST", &hook, None, Some(&payload));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["duplicates"], 1, "{v}");
    assert_eq!(v["accepted"], 1, "the ended alert is new again: {v}");
    assert!(!dir.join("ran").exists(), "dry-run: nothing ran");
}
