//! Shared helpers for integration tests: run the real `rollbackd` binary,
//! wait for files, read the journal; config fragments are in [`conf`].
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod conf;
pub mod exec;
pub mod smtp;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_rollbackd")
}

/// A running `rollbackd run`, killed on drop.
pub struct Running {
    pub child: Child,
    pub log: PathBuf,
}

impl Running {
    /// `rollbackd run --config CONFIG`, its log (stderr) in `log`.
    pub fn start(config: &Path, log: &Path) -> Running {
        Running::start_after(None, config, log)
    }

    /// [`Running::start`], then wait until the API listens on `api_port`.
    pub fn start_serving(config: &Path, log: &Path, api_port: u16) -> Running {
        let running = Running::start(config, log);
        api_up(api_port);
        running
    }

    /// [`Running::start`], after `shell_prefix` (e.g. `ulimit -n 1024`) in
    /// a bash that then execs the daemon, when one is given.
    pub fn start_after(shell_prefix: Option<&str>, config: &Path, log: &Path) -> Running {
        let out = std::fs::File::create(log).expect("create log");
        let mut cmd = match shell_prefix {
            Some(prefix) => {
                let mut c = Command::new("bash");
                c.arg("-c")
                    .arg(format!("{prefix}; exec \"$0\" run --config \"$1\""))
                    .arg(bin())
                    .arg(config);
                c
            }
            None => {
                let mut c = Command::new(bin());
                c.args(["run", "--config"]).arg(config);
                c
            }
        };
        let child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("start rollbackd");
        Running {
            child,
            log: log.to_path_buf(),
        }
    }

    /// SIGKILL (no shutdown at all) and reap.
    pub fn kill9(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("sigkill");
        self.child.wait().expect("wait");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(mut self) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("sigterm");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "rollbackd did not stop within 30s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().expect("wait").is_none(),
            "rollbackd exited unexpectedly; log:\n{}",
            self.log_text()
        );
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait (20 s at most) until something listens on the API port.
pub fn api_up(api_port: u16) {
    wait_for(Duration::from_secs(20), "the API to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", api_port)).ok()
    });
}

/// `GET url`, which must answer 200, as JSON.
pub fn get_json(url: &str) -> serde_json::Value {
    let (code, body) = http("GET", url, None, None);
    assert_eq!(code, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The first target of `GET /v1/status`.
pub fn target(api_port: u16) -> serde_json::Value {
    get_json(&format!("http://127.0.0.1:{api_port}/v1/status"))["targets"][0].clone()
}

/// `GET url` as JSON when something listens there and it answers 200,
/// else `None` (for polling a server that may not be up yet).
pub fn try_get_json(url: &str) -> Option<serde_json::Value> {
    std::net::TcpStream::connect(("127.0.0.1", port_of(url))).ok()?;
    let (code, body) = http("GET", url, None, None);
    (code == 200).then(|| serde_json::from_str(&body).unwrap())
}

/// Whether something listens at `url`'s port and answers `GET url` with 200.
pub fn answers_200(url: &str) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port_of(url))).is_ok()
        && http("GET", url, None, None).0 == 200
}

/// The port of `http://127.0.0.1:PORT/...`.
fn port_of(url: &str) -> u16 {
    url.split(':')
        .nth(2)
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

/// `GET /v1/status` once the API answers, else `None`.
pub fn try_status(api_port: u16) -> Option<serde_json::Value> {
    try_get_json(&format!("http://127.0.0.1:{api_port}/v1/status"))
}

/// Wait up to 20 s until the first target's first rule has been
/// evaluated Ok.
pub fn wait_first_ok(api_port: u16) {
    wait_for(Duration::from_secs(20), "a first evaluation", || {
        (target(api_port)["state"]["rules"][0]["status"]["status"] == "ok").then_some(())
    });
}

/// Wait up to `timeout` until the first target's phase is `phase`;
/// returns that target. `what` names it in the panic.
pub fn wait_phase(api_port: u16, timeout: Duration, what: &str, phase: &str) -> serde_json::Value {
    wait_for(timeout, what, || {
        let t = target(api_port);
        (t["phase"] == phase).then_some(t)
    })
}

/// Poll `f` every 100 ms until it returns `Some`, or panic after `timeout`
/// with `what` (which names what we were waiting for).
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// All mails in an outbox directory as (path, text).
pub fn mails(outbox: &Path) -> Vec<(PathBuf, String)> {
    let mut out: Vec<(PathBuf, String)> = std::fs::read_dir(outbox)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .map(|p| {
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    (p, decode_quoted_printable(&text))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Wait up to `timeout` for a mail in `outbox` containing `needle`; `what`
/// names it in the panic.
pub fn wait_mail(outbox: &Path, timeout: Duration, what: &str, needle: &str) -> (PathBuf, String) {
    wait_for(timeout, what, || {
        mails(outbox).into_iter().find(|(_, m)| m.contains(needle))
    })
}

/// Wait up to `secs` seconds for a mail in `dir/state/outbox` (the
/// outbox of the shared test configs) containing `needle`; its text.
pub fn outbox_mail(dir: &Path, secs: u64, what: &str, needle: &str) -> String {
    wait_mail(
        &dir.join("state/outbox"),
        Duration::from_secs(secs),
        what,
        needle,
    )
    .1
}

/// `rollbackd ARGS --config CONFIG`, run to its end.
pub fn run_rollbackd(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run rollbackd")
}

/// `rollbackd ARGS --config CONFIG`: (exit code, stdout, stderr).
pub fn cli(config: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = run_rollbackd(config, args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Rewrite the file at `path` through `edit` (a test's variation on a
/// shared config).
pub fn edit_file(path: &Path, edit: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(path).unwrap();
    std::fs::write(path, edit(text)).unwrap();
}

/// The journal as parsed JSON lines.
pub fn journal(state_dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(state_dir.join("journal.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Wait up to 15 s for a journal entry in `state` for which `found`
/// holds; `what` names it in the panic.
pub fn wait_journal(state: &Path, what: &str, found: impl Fn(&serde_json::Value) -> bool) {
    wait_for(Duration::from_secs(15), what, || {
        journal(state).iter().any(&found).then_some(())
    });
}

/// Wait up to 15 s until the journal in `state` has seen `version` live.
pub fn wait_version_seen(state: &Path, version: &str) {
    wait_journal(state, &format!("version {version} in the journal"), |e| {
        e["event"]["event"] == "version_observed" && e["event"]["version"] == version
    });
}

/// How many `execute` actions the journal in `state` holds.
pub fn executions(state: &Path) -> usize {
    journal(state)
        .iter()
        .flat_map(|e| e["actions"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["action"] == "execute")
        .count()
}

/// The lines of the file at `path` (none when it is missing).
pub fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Target of the `current` symlink, as a release name.
pub fn live(dir: &Path) -> String {
    std::fs::read_link(dir.join("current"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
}

/// A config for one symlink target served by the demo service at `port`,
/// with compressed durations. `extra_rollback` is appended to `[target.rollback]`.
pub fn symlink_config(dir: &Path, port: u16, extra_rollback: &str) -> String {
    [
        conf::daemon(dir, free_port(), "200ms", ""),
        conf::email(
            &dir.join("state/outbox"),
            &["admin@example.com", "oncall@example.com"],
        ),
        conf::target("web", "1m", ""),
        conf::demo_health_rule(port),
        conf::symlink_rollback(dir, "20s", extra_rollback),
        conf::verify("10s", &format!("http://127.0.0.1:{port}/api/health")),
    ]
    .concat()
}

/// Write `text` as `dir/rollbackd.toml`, start the daemon on it (its log
/// in `dir/daemon.log`) and wait until its first rule has been evaluated
/// Ok: the config's path and the daemon.
pub fn start_watching(dir: &Path, text: &str, api_port: u16) -> (PathBuf, Running) {
    let config = conf::write(dir, text);
    let daemon = Running::start_serving(&config, &dir.join("daemon.log"), api_port);
    wait_first_ok(api_port);
    (config, daemon)
}

/// A temp dir with the demo releases (`current -> v1` healthy, `v2`
/// broken) served on a port, and a free port for the daemon's API:
/// `(temp dir, kept for the test's length; its path; port; api port)`.
pub fn demo_releases() -> (tempfile::TempDir, PathBuf, u16, u16) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    rollbackd::demo::create_releases(&dir).unwrap();
    let port = serve_releases(&dir);
    let api_port = free_port();
    (tmp, dir, port, api_port)
}

/// Start the demo release service for `dir` on its own runtime thread;
/// returns the port. It lives until the test process ends.
pub fn serve_releases(dir: &Path) -> u16 {
    let dir = dir.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let cancel = tokio_util::sync::CancellationToken::new();
            let addr = rollbackd::demo::serve(dir, cancel.clone())
                .await
                .expect("serve");
            tx.send(addr.port()).expect("send port");
            std::future::pending::<()>().await;
        });
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("demo service port")
}

/// Undo quoted-printable soft line breaks and `=XX` escapes so tests can
/// search a mail body as text (headers are unaffected).
pub fn decode_quoted_printable(text: &str) -> String {
    let text = text.replace("=\r\n", "").replace("=\n", "");
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A server on a free loopback port that hands each connection, in turn,
/// to `each` on one thread of its own; returns the port. It lives until
/// the test process ends.
pub fn serve_each(mut each: impl FnMut(std::net::TcpStream) + Send + 'static) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            each(stream);
        }
    });
    port
}

/// Serve `app` on a free loopback port from the current tokio runtime;
/// returns the port.
pub async fn serve_axum(app: axum::Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// A server that accepts connections and never answers (a hung backend).
pub fn hung_server() -> u16 {
    let mut held = Vec::new();
    serve_each(move |s| held.push(s))
}

/// Read (one read of) the request on `stream`, then answer `head` (the
/// status line and headers but the length) with `body` and close.
pub fn answer(mut stream: std::net::TcpStream, head: &str, body: &str) {
    use std::io::{Read, Write};
    let mut buf = [0u8; 65536];
    let _ = stream.read(&mut buf);
    let _ = write!(
        stream,
        "{head}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// [`answer`] a Prometheus scrape with the exposition text `body`.
pub fn answer_metrics(stream: std::net::TcpStream, body: &str) {
    answer(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4",
        body,
    );
}

/// A port that was free a moment ago (bind 127.0.0.1:0, read it, close).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// `GET url` with no token: (status, body).
pub fn get(url: &str) -> (u16, String) {
    http("GET", url, None, None)
}

/// `GET /metrics` of the API on `api_port`: the exposition text.
pub fn metrics(api_port: u16) -> String {
    get(&format!("http://127.0.0.1:{api_port}/metrics")).1
}

/// One HTTP request with a small runtime: (status, body).
pub fn http(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let mut req = client.request(method.parse().unwrap(), url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    })
}

/// A finished, verified rollback of `frontend` from v2 to v1 after the
/// `errors` rule breached: the incident the notification tests send.
pub fn rolled_back_incident() -> rollbackd::decide::Incident {
    use chrono::TimeZone;
    use rollbackd::decide::{Cause, Incident, Outcome};
    use rollbackd::rules::RuleReport;
    let at = chrono::Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap();
    Incident {
        id: "20250601-120000-frontend-1".into(),
        target: "frontend".into(),
        cause: Cause::Rules {
            abstained: Vec::new(),
            breached: vec![RuleReport::ok("errors", at)
                .source("probe GET http://127.0.0.1:1/health failure_ratio")
                .breached(at)
                .value(0.75)
                .threshold(0.2)
                .for_(Duration::from_secs(60))],
        },
        from_version: Some("v2".into()),
        to_version: Some("v1".into()),
        method: "command".into(),
        dry_run: false,
        opened_at: at,
        rollback_started: Some(at),
        rollback_finished: Some(at),
        verify_finished: Some(at),
        steps: Vec::new(),
        verification: Some("verify URL healthy".into()),
        outcome: Some(Outcome::RolledBack),
        error: None,
        timeline: Vec::new(),
        after_steps: Vec::new(),
        verify_checks: Vec::new(),
        on_failure_steps: Vec::new(),
        requested_version: None,
        confirmed_by: None,
        first_evidence: Some(at),
        rto: Some(Duration::from_secs(300)),
        blast_radius_after_acting: None,
    }
}

/// The journaled phase changes, in order, as `From->To`.
pub fn transitions(state_dir: &Path) -> Vec<String> {
    journal(state_dir)
        .iter()
        .filter(|e| e["type"] == "step" && e["from"] != e["to"])
        .map(|e| {
            format!(
                "{}->{}",
                e["from"].as_str().unwrap_or("?"),
                e["to"].as_str().unwrap_or("?")
            )
        })
        .collect()
}
