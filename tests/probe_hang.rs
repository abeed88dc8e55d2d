//! Issue 18 item 7: a release that accepts connections and never answers.
//! With poll 1s, timeout 5s, window 10s and min_samples 3 the probe rule
//! could never hold 3 probes (each one takes 5 s and the next starts at the
//! next 1 s slot: 6 s apart), so it stayed Unknown and the hung release was
//! never rolled back. `check` refuses that config now, naming the keys and
//! what would work; the closest config it accepts (window 13s) rolls a hung
//! release back with the real daemon and a real hung HTTP server.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// An HTTP server for the release tree at `dir`: 200 while `current` points
/// at v1; while it points at v2 it accepts, reads the request and never
/// answers (the connection stays open).
fn serve_hanging_on_v2(dir: &Path) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf);
                if live(&dir) == "v2" {
                    // Hung: hold the connection, say nothing.
                    std::thread::sleep(Duration::from_secs(600));
                    return;
                }
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                );
            });
        }
    });
    port
}

/// The target: poll 1s, a probe with timeout 5s, `window`,
/// min_samples 3.
fn config(dir: &Path, port: u16, window: &str) -> PathBuf {
    let url = format!("http://127.0.0.1:{port}/health");
    let text = [
        conf::daemon(dir, free_port(), "1s", ""),
        conf::email(&dir.join("state/outbox"), &["admin@example.com"]),
        conf::target("web", "1m", ""),
        conf::health_rule(&url, "5s", window, "1s")
            .replace("  above = 0.5", "  min_samples = 3\n  above = 0.5"),
        conf::symlink_rollback(dir, "20s", ""),
        conf::verify("30s", &url),
    ]
    .concat();
    conf::write(dir, &text)
}

fn check(config: &Path) -> (bool, String) {
    let out = run_rollbackd(config, &["check"]);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_refuses_a_window_that_cannot_hold_min_samples_probes_that_time_out() {
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path(), 1, "10s");
    let (ok, text) = check(&config);
    assert!(!ok, "check accepted the issue's config:\n{text}");
    assert!(
        text.contains("target[0].rule[0].min_samples: min_samples = 3 can never be reached while the service hangs: a probe that times out takes timeout = \"5s\", so at daemon.poll_interval \"1s\" probes start 6s apart and window = \"10s\" holds at most 2 of them (the rule would stay Unknown); widen window to \"13s\", lower timeout to \"3900ms\", or lower min_samples to 2"),
        "{text}"
    );
    // Each suggestion alone is accepted.
    let config = self::config(tmp.path(), 1, "13s");
    let (ok, text) = check(&config);
    assert!(ok, "{text}");
}

#[test]
fn a_hung_release_is_rolled_back_with_the_closest_accepted_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    rollbackd::demo::create_releases(dir).unwrap();
    let port = serve_hanging_on_v2(dir);
    let config = config(dir, port, "13s");
    let (ok, text) = check(&config);
    assert!(ok, "{text}");
    let daemon = Running::start(&config, &dir.join("daemon.log"));
    let state = dir.join("state");
    wait_for(Duration::from_secs(30), "web at v1 in the journal", || {
        journal(&state)
            .iter()
            .any(|e| e["event"]["event"] == "version_observed" && e["event"]["version"] == "v1")
            .then_some(())
    });
    rollbackd::demo::switch_release(dir, "v2").unwrap();
    // Probes 6 s apart: the third failure is in the window ~17 s after the
    // hang began, `for` 1s is judged at the next one; then the rollback.
    let rolled = wait_for(
        Duration::from_secs(90),
        "the hung release rolled back",
        || {
            journal(&state)
                .into_iter()
                .find(|e| e["to"] == "RollingBack")
        },
    );
    wait_for(Duration::from_secs(60), "v1 live and RolledBack", || {
        (live(dir) == "v1" && journal(&state).iter().any(|e| e["to"] == "RolledBack")).then_some(())
    });
    let why = rolled.to_string();
    assert!(why.contains("timed out after 5s"), "{why}");
    assert_eq!(daemon.stop(), Some(0));
}
