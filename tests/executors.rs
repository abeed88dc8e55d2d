//! Executors against real processes, real files and a real HTTP server.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::exec::{self, within};
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use rollbackd::execute::{command, symlink, verify, Vars};
use rollbackd::run::process;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

fn s(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

fn vars() -> Vars {
    exec::vars(Some("v2"), Some("v1"), "inc-1")
}

/// The pid the step printed first (`echo $$`): with its own process group,
/// it is also the group id.
fn printed_pgid(stdout: &str) -> Pid {
    let first = stdout.lines().next().expect("step printed its pid");
    Pid::from_raw(first.trim().parse().expect("a pid"))
}

/// Whether any member of the group is alive (not a zombie awaiting reaping).
fn group_has_live_member(pgid: Pid) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        let Some(close) = stat.rfind(')') else {
            return false;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        fields.len() > 2 && fields[2] == pgid.as_raw().to_string() && fields[0] != "Z"
    })
}

/// No live member right away, and the group entirely gone (ESRCH) once init
/// has reaped the orphaned zombies; some container inits reap lazily.
async fn assert_group_gone(pgid: Pid) {
    // SIGKILL is delivered asynchronously: allow the kernel a moment to
    // finish the members off on a loaded machine.
    let live_deadline = Instant::now() + Duration::from_secs(3);
    while group_has_live_member(pgid) {
        assert!(
            Instant::now() < live_deadline,
            "process group {pgid} still has live members 3s after the kill"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        match killpg(pgid, None) {
            Err(Errno::ESRCH) => return,
            _ if Instant::now() > give_up => panic!("process group {pgid} still exists"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

// ---------------------------------------------------------------- command

#[tokio::test]
async fn steps_run_in_order_and_the_first_failure_stops_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let log = log.to_str().unwrap();
    let steps = vec![
        s(&["sh", "-c", "echo one >> \"$0\"", log]),
        s(&[
            "sh",
            "-c",
            "echo two >> \"$0\"; echo noise >&2; echo \"error: pathspec 'v1' did not match\" >&2; echo >&2; exit 1",
            log,
        ]),
        s(&["sh", "-c", "echo three >> \"$0\"", log]),
    ];
    let r = within(
        20,
        "command plan",
        command::run(&steps, &vars(), deadline(20)),
    )
    .await;
    assert!(!r.ok);
    assert_eq!(std::fs::read_to_string(log).unwrap(), "one\ntwo\n");
    assert_eq!(r.steps.len(), 2);
    assert!(r.steps[0].ok);
    assert_eq!(r.steps[0].exit_code, Some(0));
    assert_eq!(r.steps[1].exit_code, Some(1));
    assert!(r.steps[1]
        .stderr
        .contains("error: pathspec 'v1' did not match"));
    let error = r.error.unwrap();
    assert!(error.starts_with("step 2 of 3 (sh -c "), "{error}");
    assert!(
        error.ends_with("failed: exited with status 1: error: pathspec 'v1' did not match"),
        "{error}"
    );
    assert_eq!(
        r.steps[1].error.as_deref(),
        Some("exited with status 1: error: pathspec 'v1' did not match")
    );
    assert_eq!(r.from_version.as_deref(), Some("v2"));
    assert_eq!(r.to_version.as_deref(), Some("v1"));
}

#[tokio::test]
async fn all_steps_ok() {
    let steps = vec![s(&["true"]), s(&["echo", "hi"])];
    let r = within(
        20,
        "command plan",
        command::run(&steps, &vars(), deadline(20)),
    )
    .await;
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(r.steps.len(), 2);
    assert_eq!(r.steps[1].stdout, "hi\n");
    assert_eq!(r.error, None);
}

#[tokio::test]
async fn missing_program_is_a_clear_failure() {
    let steps = vec![s(&["/nonexistent/prog", "x"]), s(&["true"])];
    let r = within(
        20,
        "command plan",
        command::run(&steps, &vars(), deadline(20)),
    )
    .await;
    assert!(!r.ok);
    assert_eq!(r.steps.len(), 1);
    assert_eq!(r.steps[0].exit_code, None);
    assert_eq!(
        r.steps[0].error.as_deref(),
        Some("cannot run \"/nonexistent/prog\": No such file or directory (os error 2)")
    );
    assert_eq!(
        r.error.as_deref(),
        Some("step 1 of 2 (/nonexistent/prog x) failed: cannot run \"/nonexistent/prog\": No such file or directory (os error 2)")
    );
}

#[tokio::test]
async fn templates_are_substituted_per_argument_without_a_shell() {
    let steps = vec![s(&[
        "sh",
        "-c",
        "for a in \"$@\"; do printf '[%s]' \"$a\"; done",
        "sh",
        "{target}",
        "{to_version}-{from_version}",
        "{unknown}",
        "a b; echo {incident}",
        "$HOME",
    ])];
    let r = within(
        20,
        "command plan",
        command::run(&steps, &vars(), deadline(20)),
    )
    .await;
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(
        r.steps[0].stdout,
        "[web][v1-v2][{unknown}][a b; echo inc-1][$HOME]"
    );
    assert_eq!(r.steps[0].argv[4], "web");

    let no_to = Vars {
        to_version: None,
        ..vars()
    };
    let steps = vec![s(&["true"]), s(&["git", "checkout", "{to_version}"])];
    let r = within(
        20,
        "command plan",
        command::run(&steps, &no_to, deadline(20)),
    )
    .await;
    assert!(!r.ok);
    assert!(
        r.steps.is_empty(),
        "nothing runs when a variable is missing"
    );
    assert!(
        r.error
            .as_deref()
            .unwrap()
            .contains("template variable {to_version} has no value"),
        "{:?}",
        r.error
    );
}

#[tokio::test]
async fn output_is_bounded_to_the_tail() {
    let script = "head -c 1048576 /dev/zero | tr '\\0' x; echo; echo stdout-end; \
                  head -c 1048576 /dev/zero | tr '\\0' y >&2; echo >&2; echo stderr-end >&2";
    let r = within(
        30,
        "chatty step",
        process::run_step(&s(&["sh", "-c", script]), deadline(30)),
    )
    .await;
    assert!(r.ok, "{:?}", r.error);
    for (name, text, end) in [
        ("stdout", &r.stdout, "stdout-end\n"),
        ("stderr", &r.stderr, "stderr-end\n"),
    ] {
        assert!(
            text.len() <= process::OUTPUT_LIMIT,
            "{name} kept {} bytes",
            text.len()
        );
        assert!(text.len() > 4096, "{name} kept too little: {}", text.len());
        assert!(text.ends_with(end), "{name} lost its tail");
        assert!(
            text.starts_with("[output truncated: 1048588 bytes"),
            "{name}: {:.80}",
            text
        );
    }
}

#[tokio::test]
async fn killed_by_signal_is_named() {
    let r = within(
        20,
        "segv step",
        process::run_step(&s(&["sh", "-c", "kill -SEGV $$"]), deadline(20)),
    )
    .await;
    assert!(!r.ok);
    assert_eq!(r.exit_code, None);
    assert!(
        r.error
            .as_deref()
            .unwrap()
            .starts_with("killed by signal SIGSEGV"),
        "{:?}",
        r.error
    );
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let started = Instant::now();
    let r = within(
        15,
        "timed-out step",
        process::run_step(
            &s(&["sh", "-c", "echo $$; sleep 100 & sleep 100"]),
            deadline(2),
        ),
    )
    .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(took >= Duration::from_secs(2), "took {took:?}");
    assert!(!r.ok);
    assert_eq!(r.exit_code, None);
    assert_eq!(
        r.error.as_deref(),
        Some("timed out after 2s (plan deadline); process group killed")
    );
    assert_group_gone(printed_pgid(&r.stdout)).await;
}

#[tokio::test]
async fn a_step_ignoring_sigterm_is_sigkilled_after_the_grace() {
    let started = Instant::now();
    let r = within(
        15,
        "TERM-ignoring step",
        process::run_step(
            &s(&["sh", "-c", "echo $$; trap '' TERM; sleep 100 & sleep 100"]),
            deadline(1),
        ),
    )
    .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(3),
        "SIGKILL came before the grace: {took:?}"
    );
    assert!(took < Duration::from_secs(6), "took {took:?}");
    assert!(!r.ok);
    let error = r.error.unwrap();
    assert!(
        error.starts_with("timed out after 1s (plan deadline); process group killed (SIGKILL"),
        "{error}"
    );
    assert_group_gone(printed_pgid(&r.stdout)).await;
}

#[tokio::test]
async fn a_cancelled_step_takes_its_process_group_down() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let argv = s(&[
        "sh",
        "-c",
        "echo $$ > \"$0\"; sleep 100 & sleep 100",
        pid_file.to_str().unwrap(),
    ]);
    let step = process::run_step(&argv, deadline(60));
    assert!(
        tokio::time::timeout(Duration::from_secs(1), step)
            .await
            .is_err(),
        "the step should still be running when cancelled"
    );
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    assert_group_gone(Pid::from_raw(pid.trim().parse().unwrap())).await;
}

#[tokio::test]
async fn a_daemon_left_behind_by_a_step_is_not_killed_nor_waited_for() {
    let started = Instant::now();
    let r = within(
        15,
        "step leaving a daemon",
        process::run_step(
            &s(&["sh", "-c", "echo $$; sleep 60 & echo started"]),
            deadline(30),
        ),
    )
    .await;
    let took = started.elapsed();
    assert!(r.ok, "{:?}", r.error);
    assert!(
        took < Duration::from_secs(3),
        "waited on the daemon's pipe: {took:?}"
    );
    assert!(r.stdout.contains("started\n"));
    assert!(r.stdout.contains("stopped reading"), "{}", r.stdout);
    let pgid = printed_pgid(&r.stdout);
    assert!(
        group_has_live_member(pgid),
        "the background daemon was killed"
    );
    killpg(pgid, Signal::SIGKILL).unwrap();
}

// ---------------------------------------------------------------- symlink

struct Releases {
    _dir: tempfile::TempDir,
    root: PathBuf,
    current: PathBuf,
    releases: PathBuf,
}

fn releases(names: &[&str], live: &str) -> Releases {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let releases = root.join("releases");
    for name in names {
        std::fs::create_dir_all(releases.join(name)).unwrap();
    }
    let current = root.join("current");
    std::os::unix::fs::symlink(releases.join(live), &current).unwrap();
    Releases {
        _dir: dir,
        root,
        current,
        releases,
    }
}

fn points_to(current: &Path) -> PathBuf {
    std::fs::read_link(current).unwrap()
}

#[tokio::test]
async fn symlink_goes_to_the_previous_release_and_restarts() {
    let t = releases(&["v1", "v2", "v10"], "v10");
    std::fs::write(t.releases.join("not-a-dir"), "").unwrap();
    let marker = t.root.join("restarted");
    let restart = s(&[
        "sh",
        "-c",
        "echo \"$1 -> $2 for $3\" > \"$0\"",
        marker.to_str().unwrap(),
        "{from_version}",
        "{to_version}",
        "{target}",
    ]);
    let v = Vars {
        from_version: None,
        to_version: None,
        ..vars()
    };
    let r = within(
        20,
        "symlink plan",
        symlink::run(&t.current, &t.releases, Some(&restart), &v, deadline(20)),
    )
    .await;
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(points_to(&t.current), t.releases.join("v2"));
    assert_eq!(symlink::live_release(&t.current).unwrap(), "v2");
    assert_eq!(r.from_version.as_deref(), Some("v10"));
    assert_eq!(r.to_version.as_deref(), Some("v2"));
    assert_eq!(r.steps.len(), 2);
    assert_eq!(
        r.steps[0].argv,
        s(&[
            "symlink",
            t.current.to_str().unwrap(),
            "->",
            t.releases.join("v2").to_str().unwrap()
        ])
    );
    assert!(r.steps[0].ok);
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "v10 -> v2 for web\n"
    );
    let mut tmp = t.current.as_os_str().to_owned();
    tmp.push(symlink::TMP_SUFFIX);
    assert!(
        std::fs::symlink_metadata(&tmp).is_err(),
        "temporary link left behind"
    );
}

#[tokio::test]
async fn symlink_honours_to_version_and_relative_links() {
    let t = releases(&["v1", "v2", "v10"], "v10");
    // A relative link, as `ln -s releases/v10 current` makes.
    std::fs::remove_file(&t.current).unwrap();
    std::os::unix::fs::symlink("releases/v10", &t.current).unwrap();
    let r = within(
        20,
        "symlink plan",
        symlink::run(&t.current, &t.releases, None, &vars(), deadline(20)),
    )
    .await;
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(points_to(&t.current), t.releases.join("v1"));
    assert_eq!(r.from_version.as_deref(), Some("v10"));
    assert_eq!(r.to_version.as_deref(), Some("v1"));
    assert_eq!(r.steps.len(), 1);
}

#[tokio::test]
async fn symlink_removes_a_stale_temporary_link() {
    let t = releases(&["v1", "v2"], "v2");
    let mut tmp = t.current.as_os_str().to_owned();
    tmp.push(symlink::TMP_SUFFIX);
    std::os::unix::fs::symlink("/nowhere", &tmp).unwrap();
    let r = within(
        20,
        "symlink plan",
        symlink::run(
            &t.current,
            &t.releases,
            None,
            &Vars::default(),
            deadline(20),
        ),
    )
    .await;
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(points_to(&t.current), t.releases.join("v1"));
}

#[tokio::test]
async fn symlink_without_an_older_release_fails_without_changes() {
    let t = releases(&["v1", "v2"], "v1");
    let r = within(
        20,
        "symlink plan",
        symlink::run(
            &t.current,
            &t.releases,
            None,
            &Vars::default(),
            deadline(20),
        ),
    )
    .await;
    assert!(!r.ok);
    assert!(r.steps.is_empty());
    assert_eq!(
        r.error.unwrap(),
        format!("no release older than \"v1\" in {}", t.releases.display())
    );
    assert_eq!(points_to(&t.current), t.releases.join("v1"));
}

#[tokio::test]
async fn symlink_missing_releases_dir_fails_cleanly() {
    let t = releases(&["v1", "v2"], "v2");
    let missing = t.root.join("no-such-releases");
    let r = within(
        20,
        "symlink plan",
        symlink::run(&t.current, &missing, None, &Vars::default(), deadline(20)),
    )
    .await;
    assert!(!r.ok);
    assert!(r.steps.is_empty());
    let error = r.error.unwrap();
    assert!(error.contains(missing.to_str().unwrap()), "{error}");
    assert!(error.contains("No such file or directory"), "{error}");
    assert_eq!(points_to(&t.current), t.releases.join("v2"));
}

#[tokio::test]
async fn symlink_current_not_a_link_fails_cleanly() {
    let t = releases(&["v1", "v2"], "v2");
    let plain = t.root.join("plain");
    std::fs::create_dir(&plain).unwrap();
    let r = within(
        20,
        "symlink plan",
        symlink::run(&plain, &t.releases, None, &Vars::default(), deadline(20)),
    )
    .await;
    assert!(!r.ok);
    assert!(r.error.unwrap().contains("is not a symlink"));
    assert!(plain.is_dir());
}

#[tokio::test]
async fn symlink_restart_failure_is_reported_after_the_switch() {
    let t = releases(&["v1", "v2"], "v2");
    let restart = s(&["sh", "-c", "echo 'unit not found' >&2; exit 5"]);
    let r = within(
        20,
        "symlink plan",
        symlink::run(
            &t.current,
            &t.releases,
            Some(&restart),
            &Vars::default(),
            deadline(20),
        ),
    )
    .await;
    assert!(!r.ok);
    assert_eq!(r.steps.len(), 2);
    assert!(r.steps[0].ok);
    assert_eq!(
        r.error.as_deref(),
        Some("step 2 of 2 (sh -c \"echo 'unit not found' >&2; exit 5\") failed: exited with status 5: unit not found")
    );
    assert_eq!(points_to(&t.current), t.releases.join("v1"));
}

#[test]
fn symlink_switch_is_atomic_for_readers() {
    let t = releases(&["v1", "v2"], "v2");
    let stop = Arc::new(AtomicBool::new(false));
    let (seen, missing) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let reader = {
        let (current, stop, seen, missing) = (
            t.current.clone(),
            stop.clone(),
            seen.clone(),
            missing.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match std::fs::metadata(&current) {
                    Ok(_) => seen.fetch_add(1, Ordering::Relaxed),
                    Err(_) => missing.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(within(60, "repeated switches", async {
        for i in 0..300 {
            let want = if i % 2 == 0 { "v1" } else { "v2" };
            let v = Vars {
                to_version: Some(want.into()),
                ..Vars::default()
            };
            let r = symlink::run(&t.current, &t.releases, None, &v, deadline(20)).await;
            assert!(r.ok, "{:?}", r.error);
            assert_eq!(r.to_version.as_deref(), Some(want));
        }
    }));
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    assert_eq!(
        missing.load(Ordering::Relaxed),
        0,
        "a reader saw `current` missing"
    );
    assert!(seen.load(Ordering::Relaxed) > 300, "the reader hardly ran");
}

// ---------------------------------------------------------------- verify

/// Answers `/ok` with 200, `/bad` with 503; `/hang` never answers.
async fn http_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&req);
                let status = if req.starts_with("GET /ok ") {
                    "200 OK"
                } else if req.starts_with("GET /bad ") {
                    "503 Service Unavailable"
                } else {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return;
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi"
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn verify_url_against_a_real_server() {
    let addr = http_server().await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let url = |path: &str| url::Url::parse(&format!("http://{addr}{path}")).unwrap();

    let (ok, detail) = within(10, "GET /ok", verify::check_url(&client, &url("/ok"), None)).await;
    assert!(ok, "{detail}");
    assert!(
        detail.starts_with("HTTP 200 in ") && detail.ends_with("ms"),
        "{detail}"
    );

    let (ok, detail) = within(
        10,
        "GET /bad",
        verify::check_url(&client, &url("/bad"), None),
    )
    .await;
    assert!(!ok);
    assert_eq!(detail, "HTTP 503 (expected 2xx)");

    let (ok, detail) = within(
        10,
        "GET /ok",
        verify::check_url(&client, &url("/ok"), Some(204)),
    )
    .await;
    assert!(!ok);
    assert_eq!(detail, "HTTP 200 (expected 204)");

    let (ok, detail) = within(
        10,
        "GET /bad",
        verify::check_url(&client, &url("/bad"), Some(503)),
    )
    .await;
    assert!(ok, "{detail}");

    let (ok, detail) = within(
        10,
        "GET /hang",
        verify::check_url(&client, &url("/hang"), None),
    )
    .await;
    assert!(!ok);
    assert!(detail.to_lowercase().contains("timed out"), "{detail}");
}

#[tokio::test]
async fn verify_url_connection_refused() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let url = url::Url::parse(&format!("http://127.0.0.1:{port}/health")).unwrap();
    let (ok, detail) = within(10, "GET refused", verify::check_url(&client, &url, None)).await;
    assert!(!ok);
    assert!(detail.to_lowercase().contains("refused"), "{detail}");
}
