//! The cases of issue 14's fault matrix that passed already, kept as
//! tests against the real binary: auth variants, traversal IDs, 50 MB
//! bodies, 300 fuzzed payloads, shell metacharacters in alert labels, 50
//! concurrent approvals, approve/reject races, a full disk under the
//! journal, 200 MB of step output and a program that is not executable.
//! The matrix: `tests/fault_matrix.md`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const TOKEN: &str = "s3cret-token";

/// One `web` target on the demo service at `port`, a command plan of
/// `steps`, `target_extra` under `[[target]]` and an alertmanager rule
/// `paged` besides the probe; the API needs [`TOKEN`] when `token`.
fn config(
    dir: &Path,
    port: u16,
    api_port: u16,
    token: bool,
    target_extra: &str,
    steps: &str,
) -> PathBuf {
    let token_line = conf::api_token(dir, token.then_some(TOKEN));
    let text = [
        conf::base(dir, api_port, &token_line),
        conf::target("web", "1m", target_extra),
        conf::demo_health_rule(port),
        conf::paged_rule("HighErrorRate", "0s"),
        conf::command_rollback("30s", steps),
    ]
    .concat();
    conf::write(dir, &text)
}

/// A raw request: (status, body). `auth` is the whole header value.
fn request(method: &str, url: &str, auth: Option<&str>, body: Option<Vec<u8>>) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut req = client.request(method.parse().unwrap(), url);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        match req.send().await {
            Ok(resp) => {
                let code = resp.status().as_u16();
                (code, resp.text().await.unwrap_or_default())
            }
            // The server may close a connection whose body it refused.
            Err(e) => (0, e.to_string()),
        }
    })
}

fn healthz(api_port: u16) {
    let (code, _) = get(&format!("http://127.0.0.1:{api_port}/healthz"));
    assert_eq!(code, 200);
}

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    api_port: u16,
    daemon: Running,
}

fn setup(token: bool, target_extra: &str, steps: &str) -> Setup {
    let (tmp, dir, port, api_port) = demo_releases();
    let steps = steps.replace("{DIR}", &dir.display().to_string());
    let path = config(&dir, port, api_port, token, target_extra, &steps);
    let daemon = Running::start_serving(&path, &dir.join("daemon.log"), api_port);
    wait_first_ok(api_port);
    Setup {
        _tmp: tmp,
        dir,
        api_port,
        daemon,
    }
}

/// An incident awaiting confirmation: deploy the broken v2.
fn awaiting(s: &Setup) -> String {
    rollbackd::demo::switch_release(&s.dir, "v2").unwrap();
    let t = wait_for(Duration::from_secs(20), "AwaitingConfirmation", || {
        let t = target(s.api_port);
        (t["phase"] == "AwaitingConfirmation").then_some(t)
    });
    t["state"]["phase"]["incident"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn auth_variants() {
    let s = setup(true, "", r#"[["true"]]"#);
    let pause = format!("http://127.0.0.1:{}/v1/targets/web/pause", s.api_port);
    let resume = format!("http://127.0.0.1:{}/v1/targets/web/resume", s.api_port);
    let refused = [
        None,
        Some(String::new()),
        Some("Bearer".to_string()),
        Some("Bearer ".to_string()),
        Some("Bearer wrong".to_string()),
        Some(format!("Basic {TOKEN}")),
        Some(format!("Token {TOKEN}")),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some(format!("Bearer{TOKEN}")),
    ];
    for auth in &refused {
        let (code, body) = request("POST", &pause, auth.as_deref(), None);
        assert_eq!(code, 401, "{auth:?}: {body}");
    }
    // The token in the query string is not a credential.
    let (code, _) = request("POST", &format!("{pause}?token={TOKEN}"), None, None);
    assert_eq!(code, 401);
    assert!(target(s.api_port)["paused"].is_null(), "nothing paused");
    for auth in [
        format!("Bearer {TOKEN}"),
        format!("bearer {TOKEN}"),
        format!("Bearer   {TOKEN}  "),
    ] {
        let (code, body) = request("POST", &pause, Some(&auth), None);
        assert_eq!(code, 200, "{auth:?}: {body}");
        let (code, body) = request("POST", &resume, Some(&auth), None);
        assert_eq!(code, 200, "{auth:?}: {body}");
    }
    // Reading needs no token.
    for route in ["/healthz", "/metrics", "/v1/status", "/v1/incidents"] {
        let (code, _) = request(
            "GET",
            &format!("http://127.0.0.1:{}{route}", s.api_port),
            None,
            None,
        );
        assert_eq!(code, 200, "{route}");
    }
}

#[test]
fn traversal_ids_are_not_found_and_touch_nothing() {
    let s = setup(false, "", r#"[["true"]]"#);
    let base = format!("http://127.0.0.1:{}", s.api_port);
    for path in [
        "/v1/incidents/..%2F..%2F..%2Fetc%2Fpasswd",
        "/v1/incidents/%2e%2e%2fjournal.jsonl",
        "/v1/incidents/..%2Fstate%2Fjournal",
        "/v1/incidents/....//....//etc",
    ] {
        let (code, body) = request("GET", &format!("{base}{path}"), None, None);
        assert!(code == 404 || code == 400, "{path}: {code} {body}");
        assert!(!body.contains("root:"), "{path}: {body}");
        let (code, _) = request("POST", &format!("{base}{path}/approve"), None, None);
        assert!(code == 404 || code == 400, "{path}/approve: {code}");
    }
    for name in ["..%2F..%2Fetc", "web%2F..%2F..", "%00"] {
        let (code, _) = request(
            "POST",
            &format!("{base}/v1/targets/{name}/pause"),
            None,
            None,
        );
        assert!(code == 404 || code == 400, "{name}: {code}");
    }
    let out = run_rollbackd(
        &s.dir.join("rollbackd.toml"),
        &["report", "../../../etc/passwd"],
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("root:"));
    assert_ne!(out.status.code(), Some(0));
    healthz(s.api_port);
}

#[test]
fn fifty_megabyte_bodies_are_refused_and_the_daemon_stays_small() {
    let s = setup(false, "", r#"[["true"]]"#);
    let base = format!("http://127.0.0.1:{}", s.api_port);
    let mut big = b"{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[".to_vec();
    big.resize(50 * 1024 * 1024, b' ');
    for route in [
        "/v1/alertmanager",
        "/v1/targets/web/pause",
        "/v1/targets/web/rollback",
    ] {
        let (code, body) = request("POST", &format!("{base}{route}"), None, Some(big.clone()));
        assert!(code == 413 || code == 0, "{route}: {code} {body}");
    }
    healthz(s.api_port);
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.daemon.child.id())).unwrap();
    let rss: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(rss < 100_000, "RSS {rss} kB");
    assert_eq!(target(s.api_port)["phase"], "Watching");
}

/// A small deterministic generator (no extra crate): xorshift.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Mutations of valid payloads: bytes flipped, cut, duplicated, types
/// swapped, huge numbers, deep nesting, invalid UTF-8.
fn fuzzed(rng: &mut Rng, seed: &str) -> Vec<u8> {
    let mut b = seed.as_bytes().to_vec();
    match rng.below(8) {
        0 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
        }
        1 => b.truncate(rng.below(b.len())),
        2 => {
            let i = rng.below(b.len());
            let j = i + rng.below(b.len() - i);
            let piece = b[i..j].to_vec();
            b.splice(j..j, piece);
        }
        3 => {
            b = seed
                .replace("\"4\"", "4")
                .replace("[{", "{\"x\":[{")
                .into_bytes()
        }
        4 => b = seed.replace("firing", &"f".repeat(10_000)).into_bytes(),
        5 => b = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000)).into_bytes(),
        6 => b.extend_from_slice(&[0xff, 0xfe, 0x00, 0xc3]),
        _ => b = seed.replace("\"2026", "1e999,\"x\":\"").into_bytes(),
    }
    b
}

#[test]
fn three_hundred_fuzzed_payloads_never_break_the_daemon() {
    let s = setup(false, "", r#"[["true"]]"#);
    let base = format!("http://127.0.0.1:{}", s.api_port);
    let alert = r#"{"version":"4","status":"firing","receiver":"r","groupKey":"g","alerts":[{"status":"firing","labels":{"alertname":"Other","x":"y"},"annotations":{},"startsAt":"2026-11-18T11:59:00Z","endsAt":"0001-01-01T00:00:00Z","fingerprint":"f1"}]}"#;
    let event = r#"{"by": "fuzz", "reason": "fuzzing the API"}"#;
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut seen = std::collections::BTreeMap::new();
    for i in 0..300 {
        let (route, seed) = match i % 3 {
            0 | 1 => ("/v1/alertmanager", alert),
            _ => ("/v1/targets/web/pause", event),
        };
        let body = fuzzed(&mut rng, seed);
        let (code, answer) = request("POST", &format!("{base}{route}"), None, Some(body));
        assert!(
            code < 500 && code != 0,
            "payload {i} to {route}: {code} {answer}"
        );
        *seen.entry(code).or_insert(0) += 1;
    }
    eprintln!("answers to 300 fuzzed payloads: {seen:?}");
    healthz(s.api_port);
    let mut daemon = s.daemon;
    daemon.assert_alive();
}

#[test]
fn shell_metacharacters_in_alert_labels_never_reach_a_shell_or_an_argv() {
    let s = setup(
        false,
        "",
        r#"[["sh", "-c", "echo \"$0\" >> {DIR}/ran", "{target}"]]"#,
    );
    let canary = s.dir.join("pwned");
    let evil = [
        format!("$(touch {})", canary.display()),
        format!("`touch {}`", canary.display()),
        format!("; touch {} #", canary.display()),
        format!("' && touch {} && '", canary.display()),
    ];
    let alerts: Vec<String> = evil
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let e = serde_json::to_string(e).unwrap();
            format!(
                r#"{{"status":"firing","labels":{{"alertname":"HighErrorRate","service":{e},"{i}":{e}}},"annotations":{{"summary":{e}}},"startsAt":"2026-11-18T11:59:00Z","fingerprint":"evil{i}"}}"#
            )
        })
        .collect();
    let payload = format!(
        r#"{{"version":"4","status":"firing","alerts":[{}]}}"#,
        alerts.join(",")
    );
    let (code, body) = http(
        "POST",
        &format!("http://127.0.0.1:{}/v1/alertmanager", s.api_port),
        None,
        Some(&payload),
    );
    assert_eq!(code, 200, "{body}");
    // The alert breaches the rule; the plan runs with the target's name only.
    let ran = s.dir.join("ran");
    wait_for(Duration::from_secs(20), "the plan to run", || {
        std::fs::read_to_string(&ran).ok()
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "web\n");
    assert!(!canary.exists(), "a label reached a shell");
    let incidents = get(&format!("http://127.0.0.1:{}/v1/incidents", s.api_port)).1;
    assert!(
        !incidents.contains("touch"),
        "labels copied into the incident: {incidents}"
    );
}

/// Lines written by the plan (one per execution).
/// [`setup`] of a target that asks for confirmation, whose plan appends
/// a line to `ran`.
fn confirming_setup() -> Setup {
    setup(
        false,
        "confirm = \"required\"\nconfirm_timeout = \"10m\"",
        r#"[["sh", "-c", "echo run >> {DIR}/ran"]]"#,
    )
}

fn runs(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("ran"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn fifty_concurrent_approvals_act_once() {
    let s = confirming_setup();
    let id = awaiting(&s);
    let url = format!("http://127.0.0.1:{}/v1/incidents/{id}/approve", s.api_port);
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                request(
                    "POST",
                    &url,
                    None,
                    Some(format!(r#"{{"by":"op{i}"}}"#).into_bytes()),
                )
                .0
            })
        })
        .collect();
    let codes: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 1, "{codes:?}");
    assert!(codes.iter().all(|c| *c == 200 || *c == 409), "{codes:?}");
    wait_for(Duration::from_secs(10), "the plan to run", || {
        (runs(&s.dir) > 0).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(runs(&s.dir), 1);
}

#[test]
fn approve_reject_race_acts_at_most_once_and_consistently() {
    let s = confirming_setup();
    let id = awaiting(&s);
    let handles: Vec<_> = (0..40)
        .map(|i| {
            let verb = if i % 2 == 0 { "approve" } else { "reject" };
            let url = format!("http://127.0.0.1:{}/v1/incidents/{id}/{verb}", s.api_port);
            std::thread::spawn(move || (verb, request("POST", &url, None, None).0))
        })
        .collect();
    let answers: Vec<(&str, u16)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let winners: Vec<&(&str, u16)> = answers.iter().filter(|(_, c)| *c == 200).collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    std::thread::sleep(Duration::from_secs(2));
    let expected = if winners[0].0 == "approve" { 1 } else { 0 };
    assert_eq!(runs(&s.dir), expected, "{answers:?}");
}

/// Unmounts on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_under_the_journal_refuses_to_act_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&state)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        mounted,
        "cannot mount a 1 MiB tmpfs on {} (this test needs root, as CI has): \
         a full disk under the journal is part of the fault matrix",
        state.display()
    );
    let _mount = Mount(state.clone());
    rollbackd::demo::create_releases(&dir).unwrap();
    let port = serve_releases(&dir);
    let api_port = free_port();
    let ran = dir.join("ran");
    let path = config(
        &dir,
        port,
        api_port,
        false,
        "",
        &format!(r#"[["touch", "{}"]]"#, ran.display()),
    );
    let mut daemon = Running::start_serving(&path, &dir.join("daemon.log"), api_port);
    // Fill the disk.
    let filler = state.join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=4k"])
        .arg(format!("of={}", filler.display()))
        .stderr(std::process::Stdio::null())
        .status();
    // The journal's last page may still have room for a line: fill it with
    // blank lines (recovery skips them) until the disk refuses.
    {
        use std::io::Write;
        let mut j = std::fs::OpenOptions::new()
            .append(true)
            .open(state.join("journal.jsonl"))
            .unwrap();
        while j
            .write_all(&[b'\n'; 16])
            .and_then(|_| j.sync_data())
            .is_ok()
        {}
    }
    let (code, body) = http(
        "POST",
        &format!("http://127.0.0.1:{api_port}/v1/targets/web/rollback"),
        None,
        Some(r#"{"reason": "disk full test"}"#),
    );
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("could not journal"), "{body}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!ran.exists(), "nothing runs unjournaled");
    daemon.assert_alive();
    std::fs::remove_file(&filler).unwrap();
    let (code, body) = http(
        "POST",
        &format!("http://127.0.0.1:{api_port}/v1/targets/web/rollback"),
        None,
        Some(r#"{"reason": "disk has room again"}"#),
    );
    assert_eq!(code, 200, "{body}");
    wait_for(Duration::from_secs(10), "the plan to run", || {
        ran.exists().then_some(())
    });
    drop(daemon);
}

#[tokio::test]
async fn two_hundred_megabytes_of_step_output_keep_a_bounded_tail() {
    let argv: Vec<String> = [
        "sh",
        "-c",
        "head -c 209715200 /dev/zero | tr '\\0' x; echo; echo the-end",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let r = rollbackd::run::process::run_step(&argv, deadline).await;
    assert!(r.ok, "{:?}", r.error);
    assert!(r.stdout.len() <= rollbackd::run::process::OUTPUT_LIMIT);
    assert!(
        r.stdout.starts_with("[output truncated: 209715209 bytes"),
        "{:.80}",
        r.stdout
    );
    assert!(r.stdout.ends_with("the-end\n"));
}

#[tokio::test]
async fn a_program_that_is_not_executable_is_a_clear_failure() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("deploy.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let argv = vec![script.display().to_string()];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let r = rollbackd::run::process::run_step(&argv, deadline).await;
    assert!(!r.ok);
    let error = r.error.unwrap();
    assert!(
        error.contains("cannot run")
            && error.contains("deploy.sh")
            && error.contains("ermission denied"),
        "{error}"
    );
}
