//! Fault matrix (issue #14) items that live in the worker loop: a person's
//! command and SIGTERM are never queued behind a slow poll (item 4), an
//! effect's result is retried until it is journaled and `status` says the
//! journal is failing meanwhile (items 3 and 9).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("rollbackd.toml");
    std::fs::write(&path, body).unwrap();
    path
}

fn client(config: &Path, args: &[&str]) -> (Duration, std::process::Output) {
    let started = Instant::now();
    let out = Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (started.elapsed(), out)
}

#[test]
fn commands_and_sigterm_do_not_wait_behind_a_hung_probe() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let hung = hung_server();
    let api = free_port();
    let text = [
        conf::daemon(dir, api, "1s", ""),
        conf::target("web", "10m", ""),
        conf::health_rule(
            &format!("http://127.0.0.1:{hung}/health"),
            "30s",
            "2m",
            "5m",
        ),
        conf::command_rollback("10s", &format!(r#"[["touch", "{}/ran"]]"#, dir.display())),
        conf::verify("2s", ""),
    ]
    .concat();
    let cfg = write_config(dir, &text);
    let mut d = Running::start_serving(&cfg, &dir.join("rollbackd.log"), api);
    // Let the first poll start and hang.
    std::thread::sleep(Duration::from_secs(2));

    let (took, out) = client(&cfg, &["pause", "web"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        took < Duration::from_secs(1),
        "pause took {took:?} behind a hung probe"
    );

    let (took, out) = client(&cfg, &["resume", "web"]);
    assert!(out.status.success(), "{out:?}");
    assert!(took < Duration::from_secs(1), "resume took {took:?}");

    let (took, out) = client(&cfg, &["trigger", "web", "--reason", "cve"]);
    assert!(out.status.success(), "{out:?}");
    assert!(took < Duration::from_secs(1), "trigger took {took:?}");
    wait_for(Duration::from_secs(5), "the manual rollback ran", || {
        dir.join("ran").exists().then_some(())
    });

    d.assert_alive();
    let pid = nix::unistd::Pid::from_raw(d.child.id() as i32);
    let started = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = wait_for(Duration::from_secs(20), "exit after SIGTERM", || {
        d.child.try_wait().unwrap()
    });
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0), "{}", d.log_text());
    assert!(
        took < Duration::from_secs(3),
        "SIGTERM to exit took {took:?} with a probe hanging for 30s"
    );
}

/// `chattr +i` on the journal half a second into a 3 s step, `chattr -i`
/// five seconds later: the step's outcome is retried until journaled,
/// `status` says the journal is failing meanwhile, and the incident ends as
/// usual (verified, mailed) once it can be written.
#[test]
fn an_outcome_is_journaled_once_the_journal_is_writable_again() {
    assert!(
        Command::new("chattr").arg("--help").output().is_ok(),
        "chattr (e2fsprogs) is needed for this test"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    rollbackd::demo::create_releases(dir).unwrap();
    let port = serve_releases(dir);
    let cfg = symlink_config(dir, port, r#"pre = [["sleep", "3"]]"#);
    let cfg = write_config(dir, &cfg);
    let state = dir.join("state");
    let journal_file = state.join("journal.jsonl");
    let mut d = Running::start(&cfg, &dir.join("rollbackd.log"));
    wait_for(Duration::from_secs(10), "v1 watched", || {
        journal(&state)
            .iter()
            .any(|e| e["event"]["event"] == "version_observed")
            .then_some(())
    });
    // Deploy the bad release.
    let tmp_link = dir.join("current.tmp");
    std::os::unix::fs::symlink(dir.join("releases/v2"), &tmp_link).unwrap();
    std::fs::rename(&tmp_link, dir.join("current")).unwrap();
    wait_for(Duration::from_secs(15), "the rollback started", || {
        journal(&state)
            .iter()
            .any(|e| e["to"] == "RollingBack")
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let lock = Command::new("chattr")
        .arg("+i")
        .arg(&journal_file)
        .status()
        .unwrap();
    assert!(lock.success(), "chattr +i failed (root and ext4 needed)");
    struct Unlock(PathBuf);
    impl Drop for Unlock {
        fn drop(&mut self) {
            let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
        }
    }
    let unlock = Unlock(journal_file.clone());
    // The step ends while the journal is immutable: status says so.
    let banner = wait_for(Duration::from_secs(8), "the journal banner", || {
        let (_, out) = client(&cfg, &["status"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("JOURNAL FAILING").then_some(text)
    });
    assert!(banner.contains("journal.jsonl"), "{banner}");
    std::thread::sleep(Duration::from_secs(4));
    drop(unlock);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !journal(&state).iter().any(|e| e["to"] == "RolledBack") {
        assert!(
            Instant::now() < deadline,
            "the incident was not verified after the journal came back; log:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, out) = client(&cfg, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!text.contains("JOURNAL FAILING"), "{text}");
    assert_eq!(live(dir), "v1");
    d.assert_alive();
    let mut log = String::new();
    std::fs::File::open(&d.log)
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(log.contains("effect result not journaled yet"), "{log}");
}
