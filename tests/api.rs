//! The real daemon driven over HTTP and through the CLI: confirmation
//! (approve, reject, an escalating timeout and its expired links), manual
//! trigger, pause/resume, auth, email links, an unreachable daemon.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::*;
use serde_json::Value;

const TOKEN: &str = "s3cret-token";

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    config: PathBuf,
    api: String,
    _daemon: Running,
}

/// A symlink target on the demo release service (v1 healthy, v2 failing),
/// with `target_extra` added to `[[target]]`, a token and a public URL.
fn start(target_extra: &str, rule_for: &str) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    rollbackd::demo::create_releases(&dir).unwrap();
    let port = serve_releases(&dir);
    let api_port = free_port();
    std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
    let daemon_extra = format!(
        "api_token_file = \"{dir}/token\"\npublic_url = \"http://127.0.0.1:{api_port}/\"",
        dir = dir.display()
    );
    let target_extra = format!("max_rollbacks_per_hour = 5\n{target_extra}");
    let config = conf::base(&dir, api_port, &daemon_extra)
        + &conf::demo_target("web", &dir, port, &target_extra, rule_for);
    let path = conf::write(&dir, &config);
    let daemon = Running::start(&path, &dir.join("daemon.log"));
    let api = format!("http://127.0.0.1:{api_port}");
    let s = Setup {
        _tmp: tmp,
        dir,
        config: path,
        api,
        _daemon: daemon,
    };
    wait_for(Duration::from_secs(15), "the API to answer", || {
        std::net::TcpStream::connect(("127.0.0.1", api_port))
            .ok()
            .map(|_| ())
    });
    wait_for(Duration::from_secs(15), "version v1 to be seen", || {
        (s.status()["targets"][0]["state"]["version"] == "v1").then_some(())
    });
    s
}

impl Setup {
    fn status(&self) -> Value {
        let (code, body) = get(&format!("{}/v1/status", self.api));
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn phase(&self) -> String {
        self.status()["targets"][0]["phase"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn wait_phase(&self, phase: &str, secs: u64) -> Value {
        wait_for(
            Duration::from_secs(secs),
            &format!("target web to be {phase}"),
            || {
                let s = self.status();
                (s["targets"][0]["phase"] == phase).then(|| s["targets"][0].clone())
            },
        )
    }

    /// Deploy the failing v2 and wait for the confirmation request.
    fn breach_and_wait(&self) -> String {
        rollbackd::demo::switch_release(&self.dir, "v2").unwrap();
        let t = self.wait_phase("AwaitingConfirmation", 20);
        t["state"]["phase"]["incident"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn cli(&self, args: &[&str]) -> Output {
        std::process::Command::new(bin())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap()
    }

    fn post(&self, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, Value) {
        let (code, text) = http("POST", &format!("{}{path}", self.api), token, body);
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (code, v)
    }

    fn outbox(&self) -> PathBuf {
        self.dir.join("state/outbox")
    }

    fn executions(&self) -> usize {
        executions(&self.dir.join("state"))
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn mail_with(outbox: &Path, needle: &str) -> String {
    wait_for(
        Duration::from_secs(20),
        &format!("a mail containing {needle:?}"),
        || {
            mails(outbox)
                .into_iter()
                .find(|(_, m)| m.contains(needle))
                .map(|(_, m)| m)
        },
    )
}

#[test]
fn approve_over_the_cli_after_auth_failures_acts_once() {
    let s = start(
        "confirm = \"required\"\nconfirm_timeout = \"2m\"\non_confirm_timeout = \"escalate\"",
        "1s",
    );
    let id = s.breach_and_wait();
    let mail = mail_with(&s.outbox(), "CONFIRM ROLLBACK");
    assert!(mail.contains(&format!("rollbackd approve {id}")), "{mail}");
    assert!(mail.contains(&format!("rollbackd reject {id}")), "{mail}");
    assert!(
        mail.contains("health = "),
        "mail says what breached: {mail}"
    );
    assert!(mail.contains("/v1/confirm/"), "mail carries links: {mail}");

    // No token, wrong token: 401 with a JSON error; nothing happens.
    let path = format!("/v1/incidents/{id}/approve");
    let (code, body) = s.post(&path, None, None);
    assert_eq!(code, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
    let (code, body) = s.post(&path, Some("wrong"), None);
    assert_eq!(code, 401, "{body}");
    assert_eq!(body["error"], "wrong API token");
    let (code, body) = s.post(&path, Some(TOKEN), Some("{not json"));
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("invalid JSON"));
    let (code, _) = s.post("/v1/incidents/nope/approve", Some(TOKEN), None);
    assert_eq!(code, 404);
    assert_eq!(s.phase(), "AwaitingConfirmation");

    // The CLI finds the daemon and the token through --config.
    let out = s.cli(&["approve", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("approved"), "{}", stdout(&out));
    s.wait_phase("RolledBack", 30);
    assert_eq!(live(&s.dir), "v1");

    // Approving twice acts once.
    let out = s.cli(&["approve", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not awaiting confirmation"),
        "{}",
        stderr(&out)
    );
    let (code, _) = s.post(&path, Some(TOKEN), None);
    assert_eq!(code, 409);
    assert_eq!(s.executions(), 1);

    // The timeline over HTTP and the CLI names the approver.
    let (code, body) = get(&format!("{}/v1/incidents/{id}", s.api));
    assert_eq!(code, 200);
    let inc: Value = serde_json::from_str(&body).unwrap();
    assert!(
        inc["confirmed_by"].as_str().unwrap().contains("(cli)"),
        "{inc}"
    );
    let out = s.cli(&["incidents"]);
    let text = stdout(&out);
    assert!(text.contains(&id) && text.contains("approved by"), "{text}");
    let out = s.cli(&["status"]);
    assert!(stdout(&out).contains("web: RolledBack"), "{}", stdout(&out));
    let out = s.cli(&["incidents", "--json"]);
    let list: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(list[0]["id"], id.as_str());
    let out = s.cli(&["report", &id]);
    assert!(stdout(&out).contains("ROLLED BACK") || stdout(&out).contains("rolled back"));
    // /metrics and /healthz.
    let (code, m) = get(&format!("{}/metrics", s.api));
    assert_eq!(code, 200);
    assert!(m.contains("rollbackd_transitions_total"), "{m}");
    assert_eq!(get(&format!("{}/healthz", s.api)).0, 200);
    let (code, body) = get(&format!("{}/v1/nothing", s.api));
    assert_eq!(code, 404);
    assert!(body.contains("\"error\""));
}

#[test]
fn reject_suppresses_without_acting() {
    let s = start("confirm = \"required\"\nconfirm_timeout = \"2m\"", "1s");
    let id = s.breach_and_wait();
    let out = s.cli(&["reject", &id, "--reason", "known issue, fix underway"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let t = s.wait_phase("Suppressed", 10);
    assert!(t["until"].is_string(), "{t}");
    let mail = mail_with(&s.outbox(), "ROLLBACK REJECTED");
    assert!(mail.contains("known issue, fix underway"), "{mail}");
    // Nothing is executed (breaches going on for the whole cooldown:
    // tests/decisions.rs, in simulated time).
    assert_eq!(s.phase(), "Suppressed");
    assert_eq!(live(&s.dir), "v2");
    assert_eq!(s.executions(), 0);
}

#[test]
fn confirm_timeout_escalates_and_expired_links_are_refused() {
    let s = start(
        "confirm = \"required\"\nconfirm_timeout = \"2s\"\non_confirm_timeout = \"escalate\"",
        "1s",
    );
    s.breach_and_wait();
    let mail = mail_with(&s.outbox(), "CONFIRM ROLLBACK");
    let t = s.wait_phase("Escalated", 20);
    assert!(
        t["state"]["phase"]["incident"]["error"]
            .as_str()
            .unwrap()
            .contains("confirmation timeout"),
        "{t}"
    );
    mail_with(&s.outbox(), "ESCALATED");
    assert_eq!(live(&s.dir), "v2");
    assert_eq!(s.executions(), 0);
    let link = approve_link(&mail);
    let (code, page) = get(&link);
    assert_eq!(code, 410, "{page}");
    assert!(page.contains("expired"), "{page}");
    let (code, _) = http("POST", &link, None, None);
    assert_eq!(code, 410);
}

#[test]
fn manual_trigger_skips_confirmation() {
    // The rule never holds long enough on its own.
    let s = start("confirm = \"required\"", "1h");
    rollbackd::demo::switch_release(&s.dir, "v2").unwrap();
    wait_for(Duration::from_secs(15), "version v2", || {
        (s.status()["targets"][0]["state"]["version"] == "v2").then_some(())
    });
    let (code, body) = s.post("/v1/targets/web/rollback", Some(TOKEN), Some("{}"));
    assert_eq!(code, 400, "a reason is required: {body}");
    let (code, body) = s.post(
        "/v1/targets/nope/rollback",
        Some(TOKEN),
        Some(r#"{"reason":"x"}"#),
    );
    assert_eq!(code, 404, "{body}");
    let (code, body) = s.post(
        "/v1/targets/web/rollback",
        Some(TOKEN),
        Some(r#"{"reason": "CVE-2026-1234 in v2", "by": "alice"}"#),
    );
    assert_eq!(code, 200, "{body}");
    assert_ne!(body["phase"], "AwaitingConfirmation", "{body}");
    s.wait_phase("RolledBack", 30);
    assert_eq!(live(&s.dir), "v1");
    let record = std::fs::read_dir(s.dir.join("state/incidents"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .next()
        .unwrap();
    assert!(
        record.contains("manual trigger by alice: CVE-2026-1234 in v2"),
        "{record}"
    );
    // A second trigger while one is in cooldown is a new incident through
    // the rate limit; one while running would be 409 (covered by the machine tests).
    let out = s.cli(&["trigger", "web", "--reason", "again"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn pause_escalates_breaches_and_resume_rearms() {
    let s = start("", "1s");
    let out = s.cli(&["pause", "web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let st = s.status();
    assert!(st["targets"][0]["paused"]["by"].is_string(), "{st}");
    // No --for: [daemon] max_pause (24h), never "forever" by default.
    let until = |v: &Value| {
        v["paused"]["until"].as_str().map(|u| {
            chrono::DateTime::parse_from_rfc3339(u)
                .unwrap()
                .with_timezone(&chrono::Utc)
        })
    };
    let left = until(&st["targets"][0]).expect("a pause without --for ends") - chrono::Utc::now();
    assert!(
        left > chrono::Duration::hours(23) && left <= chrono::Duration::hours(24),
        "{st}"
    );
    assert!(stdout(&s.cli(&["status"])).contains("paused by"));
    // The API body: `for` and `reason`; "0" is until resumed; a bad
    // duration is 400 and changes nothing.
    let (code, v) = s.post(
        "/v1/targets/web/pause",
        Some(TOKEN),
        Some(r#"{"for": "2h", "reason": "db maintenance"}"#),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["paused"]["reason"], "db maintenance");
    let left = until(&v).unwrap() - chrono::Utc::now();
    assert!(
        left > chrono::Duration::minutes(119) && left <= chrono::Duration::hours(2),
        "{v}"
    );
    let (code, v) = s.post(
        "/v1/targets/web/pause",
        Some(TOKEN),
        Some(r#"{"for": "soon"}"#),
    );
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("invalid \"for\""),
        "{v}"
    );
    let (code, v) = s.post(
        "/v1/targets/web/pause",
        Some(TOKEN),
        Some(r#"{"for": "4000d"}"#),
    );
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("until resumed"),
        "{v}"
    );
    let (code, v) = s.post(
        "/v1/targets/web/pause",
        Some(TOKEN),
        Some(r#"{"for": "0", "reason": "until resumed"}"#),
    );
    assert_eq!(code, 200, "{v}");
    assert!(v["paused"]["until"].is_null(), "{v}");
    assert!(stdout(&s.cli(&["status"])).contains("(until resumed) until resumed"));
    rollbackd::demo::switch_release(&s.dir, "v2").unwrap();
    let t = s.wait_phase("Escalated", 20);
    let err = t["state"]["phase"]["incident"]["error"].to_string();
    assert!(err.contains("paused"), "{err}");
    assert_eq!(live(&s.dir), "v2");
    assert_eq!(s.executions(), 0);
    // Incidents: the escalation is closed; ?open filters; a bad filter is a JSON 400.
    let (code, text) = get(&format!("{}/v1/incidents?open=false", s.api));
    assert_eq!(code, 200, "{text}");
    let list: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(list[0]["phase"], "Escalated", "{list}");
    assert_eq!(list[0]["outcome"], "escalated");
    assert_eq!(list[0]["open"], false);
    let (code, text) = get(&format!("{}/v1/incidents?open=true", s.api));
    assert_eq!((code, text.trim()), (200, "[]"));
    let (code, text) = get(&format!("{}/v1/incidents?open=maybe", s.api));
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("\"error\""), "{text}");
    let out = s.cli(&["resume", "web", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(v["paused"].is_null(), "{v}");
}

fn approve_link(mail: &str) -> String {
    mail.lines()
        .find_map(|l| l.strip_prefix("Approve link: "))
        .expect("approve link in the mail")
        .trim()
        .to_string()
}

#[test]
fn email_link_get_shows_a_page_and_only_post_acts_once() {
    let s = start("confirm = \"required\"\nconfirm_timeout = \"2m\"", "1s");
    let id = s.breach_and_wait();
    let mail = mail_with(&s.outbox(), "CONFIRM ROLLBACK");
    let link = approve_link(&mail);
    // A scanner following the link changes nothing.
    for _ in 0..3 {
        let (code, page) = get(&link);
        assert_eq!(code, 200, "{page}");
        assert!(page.contains("<form method=\"post\">"), "{page}");
        assert!(page.contains(&id), "{page}");
    }
    assert_eq!(s.phase(), "AwaitingConfirmation");
    // A forged token is refused.
    let (code, _) = http("GET", &format!("{}x", &link[..link.len() - 1]), None, None);
    assert_eq!(code, 403);
    let (code, page) = http("POST", &link, None, None);
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("approved"), "{page}");
    s.wait_phase("RolledBack", 30);
    let (code, page) = http("POST", &link, None, None);
    assert_eq!(code, 410, "reused link: {page}");
    assert!(page.contains("already used"), "{page}");
    assert_eq!(s.executions(), 1);
    let inc = &s.status()["targets"][0]["state"]["phase"]["incident"];
    assert_eq!(inc["confirmed_by"], "email link");
}

#[test]
fn unreachable_daemon_exits_69() {
    let port = free_port();
    let out = std::process::Command::new(bin())
        .args(["status", "--api", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(stderr(&out).contains("not reachable"), "{}", stderr(&out));
    let out = std::process::Command::new(bin())
        .args(["approve", "x", "--api", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
}
