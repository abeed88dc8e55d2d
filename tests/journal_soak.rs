//! The bounded journal under churn (issue #11): 50 targets flapping against
//! one server, in dry-run with a 1 s cooldown, so incidents open and close
//! all the time. The journal file stays under `journal_max_size` (plus one
//! line), compactions happen, and after SIGKILL the snapshot plus the tail
//! give back exactly the states the daemon had.
//!
//! Compressed to 30 s in the suite; `ROLLBACKD_SOAK_SECS=600 cargo test
//! --test journal_soak` is the 10-minute soak.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// Answers 503 during the first half of every 600 ms while `flap` is set,
/// 200 otherwise.
fn flapping_server(flap: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let started = Instant::now();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let flap = flap.clone();
            std::thread::spawn(move || serve(stream, &flap, started));
        }
    });
    port
}

fn serve(mut stream: TcpStream, flap: &AtomicBool, started: Instant) {
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok();
    let mut buf = [0u8; 1024];
    let _ = stream.read(&mut buf);
    let bad = flap.load(Ordering::SeqCst) && started.elapsed().as_millis() % 600 < 300;
    let status = if bad {
        "503 Service Unavailable"
    } else {
        "200 OK"
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
    );
}

const MAX: u64 = 64 * 1024;

fn config(dir: &std::path::Path, api: u16, port: u16) -> std::path::PathBuf {
    let mut text = conf::daemon(
        dir,
        api,
        "100ms",
        "dry_run = true\nmax_simultaneous_breaches = 0\njournal_max_size = \"64KiB\"",
    );
    let url = format!("http://127.0.0.1:{port}/health");
    for i in 0..50 {
        text.push_str(&conf::target(&format!("flap-{i:02}"), "1s", ""));
        text.push_str(&conf::health_rule(&url, "500ms", "2s", "200ms"));
        text.push_str(&conf::command_rollback("5s", r#"[["true"]]"#));
    }
    let path = dir.join("rollbackd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// What must survive a restart, per target, from `/v1/status`.
fn durable(api: u16) -> BTreeMap<String, String> {
    let (code, body) = get(&format!("http://127.0.0.1:{api}/v1/status"));
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let s = &t["state"];
            (
                t["name"].as_str().unwrap().to_string(),
                format!(
                    "phase={} incident={} seq={} rollbacks={} guard={} version={}",
                    t["phase"],
                    s["phase"]["incident"]["id"],
                    s["incident_seq"],
                    s["rollbacks"],
                    s["loop_guard"],
                    s["version"]
                ),
            )
        })
        .collect()
}

#[test]
fn flapping_targets_keep_the_journal_bounded_and_recover_exactly() {
    let secs: u64 = std::env::var("ROLLBACKD_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let flap = Arc::new(AtomicBool::new(true));
    let port = flapping_server(flap.clone());
    let api = free_port();
    let cfg = config(dir, api, port);
    let state = dir.join("state");
    let journal_file = state.join("journal.jsonl");
    let mut d = Running::start(&cfg, &dir.join("rollbackd.log"));
    wait_for(Duration::from_secs(10), "the API", || {
        TcpStream::connect(("127.0.0.1", api)).ok()
    });

    let started = Instant::now();
    let mut largest = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        let len = std::fs::metadata(&journal_file).map_or(0, |m| m.len());
        largest = largest.max(len);
        std::thread::sleep(Duration::from_millis(50));
    }
    d.assert_alive();
    let (_, metrics) = get(&format!("http://127.0.0.1:{api}/metrics"));
    let compactions: f64 = metrics
        .lines()
        .find(|l| l.starts_with("rollbackd_journal_compactions_total"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let incidents: usize = std::fs::read_dir(state.join("incidents"))
        .map(|rd| rd.count())
        .unwrap_or(0);
    println!(
        "{secs}s: {incidents} incidents, {compactions} compactions, journal at most {largest} bytes"
    );
    assert!(
        incidents >= 50,
        "the targets flapped: {incidents} incidents"
    );
    assert!(compactions >= 1.0, "the journal was compacted:\n{metrics}");
    // One line past the limit triggers the compaction; a line is at most a
    // few KiB here.
    assert!(
        largest <= MAX + 16 * 1024,
        "journal grew to {largest} bytes with journal_max_size = {MAX}"
    );
    assert!(state.join("snapshot.json").exists());

    // Calm down, let every cooldown end, then kill it hard.
    // Every target is Watching again within a few seconds (cooldown 1s); a
    // loaded machine polls late, so wait for it rather than for a fixed time.
    flap.store(false, Ordering::SeqCst);
    let calm = Instant::now();
    let mut before = durable(api);
    while !before.values().all(|v| v.starts_with("phase=\"Watching\""))
        && calm.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(250));
        before = durable(api);
    }
    assert!(
        before.values().all(|v| v.starts_with("phase=\"Watching\"")),
        "{before:#?}"
    );
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    drop(d);

    // Offline: the snapshot plus the tail hold exactly these states.
    let recovered = rollbackd::journal::recover_states(&state).unwrap();
    assert_eq!(recovered.len(), 50);
    let _d = Running::start(&cfg, &dir.join("rollbackd2.log"));
    wait_for(Duration::from_secs(10), "the API after the restart", || {
        TcpStream::connect(("127.0.0.1", api)).ok()
    });
    std::thread::sleep(Duration::from_millis(500));
    let after = durable(api);
    assert_eq!(before, after, "recovered states differ");
}
