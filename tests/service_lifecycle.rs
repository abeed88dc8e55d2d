//! rollbackd as a systemd service (issue #11): SIGHUP and `rollbackd
//! reload` apply a new config without a restart (an invalid one changes
//! nothing), READY=1 only once the API answers, STATUS= summaries, the
//! watchdog fed only while every worker polls, SIGUSR1 status in the log.
//! systemd is emulated by a unix datagram socket (`NOTIFY_SOCKET`).

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

/// A target block: a probe on `url`, `confirm = "required"` so a breach
/// waits (an open incident), a harmless command rollback.
fn target(name: &str, url: &str) -> String {
    [
        conf::target(
            name,
            "10m",
            "confirm = \"required\"\nconfirm_timeout = \"10m\"",
        ),
        conf::health_rule(url, "500ms", "2s", "0s"),
        conf::command_rollback("5s", r#"[["true"]]"#),
    ]
    .concat()
}

fn daemon_section(dir: &Path, api: u16) -> String {
    conf::daemon(dir, api, "200ms", "")
}

/// [`two_targets`] on the demo service, in a temp dir: (the dir, the
/// API port, the config).
fn two_demo_targets() -> (tempfile::TempDir, u16, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    rollbackd::demo::create_releases(dir).unwrap();
    let port = serve_releases(dir);
    let api = free_port();
    let cfg = two_targets(dir, api, &format!("http://127.0.0.1:{port}/api/health"));
    (tmp, api, cfg)
}

fn status_json(api: u16) -> serde_json::Value {
    get_json(&format!("http://127.0.0.1:{api}/v1/status"))
}

fn target_names(status: &serde_json::Value) -> Vec<String> {
    status["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

fn phase_of(status: &serde_json::Value, name: &str) -> String {
    status["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .map(|t| t["phase"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

fn wait_api(api: u16) {
    wait_for(Duration::from_secs(10), "the API", || {
        std::net::TcpStream::connect(("127.0.0.1", api)).ok()
    });
}

#[test]
fn sighup_applies_a_valid_config_and_keeps_an_open_incident() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let api = free_port();
    // Nothing listens on this port: the probe fails, `old` opens an
    // incident and waits for confirmation.
    let dead = format!("http://127.0.0.1:{}/health", free_port());
    let cfg = dir.join("rollbackd.toml");
    std::fs::write(
        &cfg,
        format!("{}{}", daemon_section(dir, api), target("old", &dead)),
    )
    .unwrap();
    let mut d = Running::start(&cfg, &dir.join("rollbackd.log"));
    wait_api(api);
    wait_for(Duration::from_secs(10), "old awaiting confirmation", || {
        (phase_of(&status_json(api), "old") == "AwaitingConfirmation").then_some(())
    });
    let incident = status_json(api)["targets"][0]["state"]["phase"]["incident"]["id"].clone();

    // A valid change: `old` removed, `new` added.
    let healthy_port = serve_releases(dir);
    rollbackd::demo::create_releases(dir).unwrap();
    let healthy = format!("http://127.0.0.1:{healthy_port}/api/health");
    std::fs::write(
        &cfg,
        format!("{}{}", daemon_section(dir, api), target("new", &healthy)),
    )
    .unwrap();
    let sent = Instant::now();
    signal(&d.child, nix::sys::signal::Signal::SIGHUP);
    wait_for(Duration::from_secs(2), "the new target in status", || {
        target_names(&status_json(api))
            .contains(&"new".to_string())
            .then_some(())
    });
    println!("new target in status {:?} after SIGHUP", sent.elapsed());
    let status = status_json(api);
    assert_eq!(
        phase_of(&status, "old"),
        "AwaitingConfirmation",
        "the removed target is kept while its incident is open: {status}"
    );
    assert_eq!(
        status["targets"][1]["state"]["phase"]["incident"]["id"],
        incident
    );
    d.assert_alive();
    assert!(
        d.log_text().contains("kept until the incident ends"),
        "{}",
        d.log_text()
    );

    // Rejecting the incident ends it: the removed target then stops.
    let id = incident.as_str().unwrap();
    let out = run_rollbackd(&cfg, &["reject", id, "--reason", "not now"]);
    assert!(out.status.success(), "{out:?}");
    wait_for(Duration::from_secs(5), "old to leave status", || {
        (target_names(&status_json(api)) == vec!["new".to_string()]).then_some(())
    });

    // An invalid file: the daemon lives on with the old config and logs why.
    std::fs::write(
        &cfg,
        format!(
            "{}{}\nbogus_key = 1\n",
            daemon_section(dir, api),
            target("other", &healthy)
        ),
    )
    .unwrap();
    signal(&d.child, nix::sys::signal::Signal::SIGHUP);
    wait_for(
        Duration::from_secs(5),
        "the reload error in the log",
        || d.log_text().contains("reload refused").then_some(()),
    );
    assert!(d.log_text().contains("bogus_key"), "{}", d.log_text());
    d.assert_alive();
    assert_eq!(target_names(&status_json(api)), vec!["new".to_string()]);

    // `rollbackd reload` does the same and answers with what changed, or
    // with every problem (exit 64, invalid config; nothing changed).
    let out = run_rollbackd(&cfg, &["reload"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bogus_key"), "{err}");
    std::fs::write(
        &cfg,
        format!(
            "{}{}{}",
            daemon_section(dir, api),
            target("new", &healthy),
            target("third", &healthy)
        ),
    )
    .unwrap();
    let out = run_rollbackd(&cfg, &["reload"]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("1 added"), "{said}");
    assert_eq!(
        target_names(&status_json(api)),
        vec!["new".to_string(), "third".to_string()]
    );
    let (code, metrics) = get(&format!("http://127.0.0.1:{api}/metrics"));
    assert_eq!(code, 200);
    assert!(
        metrics.contains("rollbackd_config_last_reload_success 1"),
        "{metrics}"
    );

    // SIGUSR1: every target's state in the log.
    signal(&d.child, nix::sys::signal::Signal::SIGUSR1);
    wait_for(Duration::from_secs(5), "the status dump", || {
        d.log_text().contains("status (SIGUSR1)").then_some(())
    });
    assert_eq!(d.stop(), Some(0));
}

/// `rollbackd run` under an emulated systemd: `NOTIFY_SOCKET` bound by the
/// test, `WATCHDOG_USEC` and `WATCHDOG_PID` (the shell execs, keeping its pid).
struct Notified {
    child: Child,
    socket: UnixDatagram,
    log: PathBuf,
    _dir: PathBuf,
}

impl Notified {
    fn start(dir: &Path, cfg: &Path, watchdog_usec: Option<u64>, stall: Option<&str>) -> Notified {
        let sock_path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&sock_path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let log = dir.join("rollbackd.log");
        let mut cmd = Command::new("sh");
        let watchdog = watchdog_usec
            .map(|u| format!("WATCHDOG_USEC={u} WATCHDOG_PID=$$ "))
            .unwrap_or_default();
        cmd.arg("-c")
            .arg(format!("{watchdog}exec \"$0\" run --config \"$1\""))
            .arg(bin())
            .arg(cfg)
            .env("NOTIFY_SOCKET", &sock_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(t) = stall {
            cmd.env("ROLLBACKD_TEST_STALL_TARGET", t);
        }
        Notified {
            child: cmd.spawn().unwrap(),
            socket,
            log,
            _dir: dir.to_path_buf(),
        }
    }

    /// The next datagram, if one arrives within 100 ms.
    fn next(&self) -> Option<String> {
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

impl Drop for Notified {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn two_targets(dir: &Path, api: u16, url: &str) -> PathBuf {
    let cfg = dir.join("rollbackd.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}{}{}",
            daemon_section(dir, api),
            target("web", url),
            target("stuck", url)
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn ready_only_once_the_api_answers_and_status_says_what_is_watched() {
    let (tmp, api, cfg) = two_demo_targets();
    let dir = tmp.path();
    let d = Notified::start(dir, &cfg, None, None);
    let deadline = Instant::now() + Duration::from_secs(15);
    let ready = loop {
        assert!(
            Instant::now() < deadline,
            "no READY=1 within 15s; log:\n{}",
            std::fs::read_to_string(&d.log).unwrap_or_default()
        );
        if let Some(msg) = d.next() {
            if msg.lines().any(|l| l == "READY=1") {
                break msg;
            }
        }
    };
    // The API must already answer when READY=1 arrives.
    let (code, _) = get(&format!("http://127.0.0.1:{api}/healthz"));
    assert_eq!(code, 200);
    assert!(
        ready.contains("STATUS=watching 2 targets"),
        "STATUS with READY: {ready:?}"
    );
}

#[test]
fn the_watchdog_is_fed_only_while_every_worker_polls() {
    let count_pings = |stall: Option<&str>| -> (usize, usize) {
        let (tmp, _, cfg) = two_demo_targets();
        let dir = tmp.path();
        // 400 ms watchdog: pings every 200 ms while healthy.
        let d = Notified::start(dir, &cfg, Some(400_000), stall);
        // Times count from READY=1 (a loaded machine may take a while to
        // start the binary).
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut ready = None;
        let (mut early, mut late) = (0, 0);
        loop {
            let now = Instant::now();
            if let Some(r) = ready {
                if now.duration_since(r) > Duration::from_secs(6) {
                    break;
                }
            }
            assert!(now < deadline, "no READY=1 within 20s");
            let Some(msg) = d.next() else { continue };
            if ready.is_none() && msg.lines().any(|l| l == "READY=1") {
                ready = Some(Instant::now());
            }
            let (Some(r), true) = (ready, msg.lines().any(|l| l == "WATCHDOG=1")) else {
                continue;
            };
            let since = Instant::now().duration_since(r);
            if since < Duration::from_secs(1) {
                early += 1;
            } else if since > Duration::from_secs(4) {
                late += 1;
            }
        }
        if stall.is_some() {
            let log = std::fs::read_to_string(&d.log).unwrap_or_default();
            assert!(log.contains("not feeding the systemd watchdog"), "{log}");
            assert!(log.contains("stuck (last poll"), "{log}");
        }
        (early, late)
    };
    let (early, late) = count_pings(None);
    assert!(
        early >= 1 && late >= 5,
        "healthy: pings early {early}, late {late}"
    );
    // `stuck`'s polls never end: its budget is 2 x 200ms + 500ms probe timeout.
    let (early, late) = count_pings(Some("stuck"));
    assert!(early >= 1, "pings before the budget ran out: {early}");
    assert_eq!(late, 0, "a stuck worker stops the pings");
}
