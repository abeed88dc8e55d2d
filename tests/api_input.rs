//! Input at the API's and the CLI's edge, against the real daemon (issue
//! 18, items 11-13): a pause's `for` (only `"0"` is until resumed, no
//! spaces), the caps on free text (`reason` 1,000 characters, `by` 100),
//! and `reload`'s exit code when the config is invalid (64, as every
//! invalid config).

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::*;
use serde_json::Value;

const TOKEN: &str = "s3cret-token";

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    config: PathBuf,
    api_port: u16,
    _daemon: Running,
}

/// One `web` target on the demo service (healthy), a plan of `true`, the
/// API behind [`TOKEN`].
fn setup() -> Setup {
    let (tmp, dir, port, api_port) = demo_releases();
    let token_line = conf::api_token(&dir, Some(TOKEN));
    let text = [
        conf::base(&dir, api_port, &token_line),
        conf::target("web", "1m", ""),
        conf::demo_health_rule(port),
        conf::command_rollback("30s", r#"[["true"]]"#),
    ]
    .concat();
    let (config, daemon) = start_watching(&dir, &text, api_port);
    Setup {
        _tmp: tmp,
        dir,
        config,
        api_port,
        _daemon: daemon,
    }
}

impl Setup {
    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (code, text) = http(
            "POST",
            &format!("http://127.0.0.1:{}{path}", self.api_port),
            Some(TOKEN),
            Some(&body.to_string()),
        );
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The CLI with `--api` and the token in the environment.
    fn cli(&self, args: &[&str]) -> Output {
        std::process::Command::new(bin())
            .args(args)
            .arg("--api")
            .arg(format!("http://127.0.0.1:{}", self.api_port))
            .env("ROLLBACKD_API_TOKEN", TOKEN)
            .output()
            .unwrap()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Item 11: `"0s"`, `"0ms"`, `"0m0s"` are not "until resumed" (only `"0"`
/// is, as documented), and spaces around the value are refused, in the
/// API (400) and in the CLI (usage error, exit 2, the daemon not asked).
/// Before: each of them paused `web` until resumed, or for the trimmed
/// duration.
#[test]
fn pause_for_is_until_resumed_only_when_it_is_exactly_0() {
    let s = setup();
    for zero in ["0s", "0ms", "0m0s"] {
        let (code, v) = s.post("/v1/targets/web/pause", &serde_json::json!({ "for": zero }));
        assert_eq!(code, 400, "{zero}: {v}");
        let e = v["error"].as_str().unwrap();
        assert!(e.contains(&format!("{zero:?} is zero")), "{e}");
        assert!(e.contains("write \"0\" to pause until resumed"), "{e}");
    }
    for spaced in [" 2h", "2h ", " 0", "0\n"] {
        let (code, v) = s.post(
            "/v1/targets/web/pause",
            &serde_json::json!({ "for": spaced }),
        );
        assert_eq!(code, 400, "{spaced:?}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("remove the spaces"),
            "{v}"
        );
    }
    assert!(target(s.api_port)["paused"].is_null(), "nothing paused");
    for zero in ["0s", "0ms", "0m0s", " 2h", "2h "] {
        let out = s.cli(&["pause", "web", "--for", zero]);
        assert_eq!(out.status.code(), Some(2), "{zero:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("--for"), "{}", stderr(&out));
    }
    assert!(target(s.api_port)["paused"].is_null(), "nothing paused");
    // "0" is until resumed; "2h" is two hours.
    let out = s.cli(&["pause", "web", "--for", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let t = target(s.api_port);
    assert!(
        t["paused"]["by"].is_string() && t["paused"]["until"].is_null(),
        "{t}"
    );
    let (code, v) = s.post("/v1/targets/web/pause", &serde_json::json!({ "for": "2h" }));
    assert_eq!(code, 200, "{v}");
    assert!(v["paused"]["until"].is_string(), "{v}");
}

/// Item 12: a trigger's, a reject's and a pause's `reason` over 1,000
/// characters and a `by` over 100 are refused with a 400 that names the
/// field, its length and the cap; nothing is journaled. The CLI refuses
/// the same reason before asking the daemon. Before: a 600 kB reason was
/// journaled, recorded and mailed.
#[test]
fn free_text_over_its_cap_is_refused_naming_the_cap() {
    let s = setup();
    let huge = "x".repeat(600_000);
    let over = "é".repeat(1_001);
    for (path, body) in [
        (
            "/v1/targets/web/rollback",
            serde_json::json!({ "reason": huge }),
        ),
        (
            "/v1/targets/web/rollback",
            serde_json::json!({ "reason": over }),
        ),
        (
            "/v1/targets/web/pause",
            serde_json::json!({ "reason": over }),
        ),
        (
            "/v1/incidents/web-20260101-1/reject",
            serde_json::json!({ "reason": over }),
        ),
    ] {
        let (code, v) = s.post(path, &body);
        let shown: String = v.to_string().chars().take(300).collect();
        assert_eq!(code, 400, "{path}: {shown}");
        let e = v["error"].as_str().unwrap();
        assert!(
            e.contains("\"reason\" is") && e.contains("at most 1000 are accepted"),
            "{path}: {e}"
        );
    }
    let (code, v) = s.post(
        "/v1/targets/web/pause",
        &serde_json::json!({ "by": "b".repeat(101) }),
    );
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("\"by\" is 101 characters long; at most 100"),
        "{v}"
    );
    let t = target(s.api_port);
    assert_eq!(t["phase"], "Watching", "{t}");
    assert!(t["paused"].is_null(), "{t}");
    let journal = std::fs::read_to_string(s.dir.join("state/journal.jsonl")).unwrap_or_default();
    assert!(journal.len() < 100_000, "{} bytes journaled", journal.len());
    // The CLI says so before asking.
    let out = s.cli(&["trigger", "web", "--reason", &over]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("at most 1000 are accepted"),
        "{}",
        stderr(&out)
    );
    // At the cap is fine, and kept whole.
    let at_cap = "é".repeat(1_000);
    let (code, v) = s.post(
        "/v1/targets/web/pause",
        &serde_json::json!({ "reason": at_cap, "by": "b".repeat(100) }),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["paused"]["reason"], at_cap.as_str());
}

/// Item 13: `rollbackd reload` with an invalid config exits 64 (invalid
/// config, the exit codes of the README), both when the client reads the file
/// itself (`--config`: the daemon is not asked) and when the daemon
/// re-reads it and refuses (`--api`: 422). Before: 64 and 1. The daemon
/// keeps its running config either way.
#[test]
fn reload_with_an_invalid_config_exits_64() {
    let s = setup();
    edit_file(&s.config, |c| {
        c.replace("[daemon]\n", "[daemon]\nbogus_key = 1\n")
    });
    let out = s.cli(&["reload"]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("bogus_key"), "{}", stderr(&out));
    let out = run_rollbackd(&s.config, &["reload"]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("bogus_key"), "{err}");
    assert!(err.contains("not reloaded"), "{err}");
    assert_eq!(target(s.api_port)["name"], "web");
}
