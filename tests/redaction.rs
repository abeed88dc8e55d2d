//! Issue 18 item 9, with the real binary: credentials in URLs (a DingTalk
//! `?access_token=`, a `user:password@`) never reach the log, the journal,
//! the records or the outbox's side files; every URL the daemon writes is
//! redacted by one function (`util::redact_url`).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{conf, free_port, get, http, metrics, wait_for, Running};

/// A webhook endpoint that answers 500 (with the URL it was called on in
/// its body, as some proxies do) to everything.
fn failing_hook() -> u16 {
    let port = std::sync::Arc::new(std::sync::OnceLock::new());
    let p = port.clone();
    let bound = common::serve_each(move |s| {
        let body = format!(
            "upstream failed for http://relay:hunter2@127.0.0.1:{}/x?token=bodysecret",
            p.get().copied().unwrap_or(0u16)
        );
        common::answer(s, "HTTP/1.1 500 Internal Server Error", &body)
    });
    port.set(bound).unwrap();
    bound
}

/// Every file under `dir`, as text where it is text.
fn all_text(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(text) = std::fs::read_to_string(&p) {
                out.push_str(&format!("== {}\n{text}\n", p.display()));
            }
        }
    }
    out
}

#[test]
fn webhook_credentials_never_reach_logs_records_or_status() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let refused = free_port(); // nothing listens: connection refused
    let failing = failing_hook();
    let api_port = free_port();
    let webhooks = conf::webhook(
        &format!("http://127.0.0.1:{refused}/robot/send?access_token=DINGTALKTOKEN"),
        "dingtalk",
        "timeout = \"1s\"\n",
    ) + &conf::webhook(
        &format!("http://user:PASSWORD1@127.0.0.1:{failing}/hooks/ops?sig=QUERYSECRET"),
        "json",
        "timeout = \"1s\"\n",
    );
    let text = [
        conf::base(dir, api_port, ""),
        webhooks,
        conf::target("web", "1m", ""),
        conf::paged_rule("HighErrorRate", "0s"),
        conf::command_rollback("20s", r#"[["true"]]"#),
    ]
    .concat();
    let path = conf::write(dir, &text);
    let log = dir.join("daemon.log");
    let daemon = Running::start_serving(&path, &log, api_port);
    let url = format!("http://127.0.0.1:{api_port}/v1/targets/web/rollback");
    let (code, answer) = http("POST", &url, None, Some(r#"{"reason": "drill"}"#));
    assert_eq!(code, 200, "{answer}");
    // Both webhooks fail and are retried: one refused, one 500.
    wait_for(Duration::from_secs(30), "both retry warnings", || {
        let log = std::fs::read_to_string(&log).ok()?;
        let retries: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("not delivered; will retry"))
            .collect();
        (retries.iter().any(|l| l.contains("webhook[0]"))
            && retries.iter().any(|l| l.contains("webhook[1]")))
        .then_some(())
    });
    let status = get(&format!("http://127.0.0.1:{api_port}/v1/status")).1;
    let metrics = metrics(api_port);
    drop(daemon);
    let log_text = std::fs::read_to_string(&log).unwrap();
    let everything = format!(
        "{log_text}\n{status}\n{metrics}\n{}",
        all_text(&dir.join("state"))
    );
    for secret in [
        "DINGTALKTOKEN",
        "PASSWORD1",
        "QUERYSECRET",
        "hunter2",
        "bodysecret",
    ] {
        let at: Vec<&str> = everything.lines().filter(|l| l.contains(secret)).collect();
        assert!(at.is_empty(), "{secret} written: {at:#?}");
    }
    // Still clear which endpoint failed.
    assert!(
        log_text.contains(&format!(
            "http://127.0.0.1:{refused}/robot/send?access_token=***"
        )),
        "{log_text}"
    );
    assert!(
        log_text.contains(&format!(
            "http://***:***@127.0.0.1:{failing}/hooks/ops?sig=***"
        )),
        "{log_text}"
    );
}
