//! `git` executor against a real repository with real tags, and real build
//! and restart programs.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

mod common;

use common::exec::{self, git};
use rollbackd::config::ExecutorKind;
use rollbackd::execute::{run_plan, ExecResult, Vars};

/// A repository whose VERSION file says 1.0.0 at tag v1.0.0 and 1.0.1 at
/// v1.0.1 (checked out), plus build and restart programs next to it.
struct Fixture {
    _tmp: tempfile::TempDir,
    repo: PathBuf,
    bin: PathBuf,
    v100: String,
    v101: String,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("app");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("VERSION"), "1.0.0\n").unwrap();
    git(&repo, &["add", "VERSION"]);
    git(&repo, &["commit", "-qm", "release 1.0.0"]);
    git(&repo, &["tag", "v1.0.0"]);
    std::fs::write(repo.join("VERSION"), "1.0.1\n").unwrap();
    git(&repo, &["commit", "-qam", "release 1.0.1"]);
    git(&repo, &["tag", "-a", "v1.0.1", "-m", "annotated"]);
    let v100 = git(&repo, &["rev-parse", "v1.0.0^{commit}"]);
    let v101 = git(&repo, &["rev-parse", "HEAD"]);

    // The build reads the checked-out VERSION (it runs in the repository);
    // the restart records what it was asked to start.
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let script = |name: &str, body: &str| {
        let p = bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\nset -e\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    script("build", "mkdir -p ../out\necho \"built $(cat VERSION) in $(basename \"$PWD\")\" > ../out/build.txt\necho build ok");
    script(
        "restart",
        "echo \"restarted $1 for $2\" >> ../out/restart.log",
    );
    Fixture {
        _tmp: tmp,
        repo,
        bin,
        v100,
        v101,
    }
}

fn kind(f: &Fixture) -> ExecutorKind {
    ExecutorKind::Git(rollbackd::execute::git::Config {
        repo: f.repo.clone(),
        build: vec![vec![f.bin.join("build").display().to_string()]],
        restart: Some(vec![
            f.bin.join("restart").display().to_string(),
            "{to_version}".into(),
            "{incident}".into(),
        ]),
    })
}

async fn run(kind: ExecutorKind, from: Option<&str>, to: Option<&str>) -> ExecResult {
    let plan = exec::plan(kind);
    let vars = Vars {
        target: "app".into(),
        ..exec::vars(from, to, "inc-3")
    };
    exec::within(60, "git plan", run_plan(&plan, &vars)).await
}

fn out(f: &Fixture, name: &str) -> String {
    std::fs::read_to_string(f.repo.parent().unwrap().join("out").join(name)).unwrap_or_default()
}

#[tokio::test]
async fn git_rolls_back_to_the_previous_tag_builds_and_restarts() {
    let f = fixture();
    let r = run(kind(&f), None, None).await;
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(r.from_version.as_deref(), Some("v1.0.1"));
    assert_eq!(r.to_version.as_deref(), Some("v1.0.0"));
    assert_eq!(git(&f.repo, &["rev-parse", "HEAD"]), f.v100);
    assert_eq!(
        std::fs::read_to_string(f.repo.join("VERSION")).unwrap(),
        "1.0.0\n"
    );
    assert_eq!(out(&f, "build.txt"), "built 1.0.0 in app\n");
    assert_eq!(out(&f, "restart.log"), "restarted v1.0.0 for inc-3\n");

    let shown: Vec<String> = r
        .steps
        .iter()
        .filter(|s| s.argv[0] == "git")
        .map(|s| s.argv[3..].join(" "))
        .collect();
    let repo = f.repo.display().to_string();
    assert_eq!(r.steps[0].argv[..3], ["git", "-C", repo.as_str()]);
    assert_eq!(
        shown,
        [
            "rev-parse HEAD",
            "describe --tags --always",
            "tag --list",
            "rev-parse --verify --quiet refs/tags/v1.0.0^{commit}",
            "checkout --quiet refs/tags/v1.0.0",
        ]
    );
    // The commit left is in the record.
    assert_eq!(r.steps[0].stdout.trim(), f.v101);
    assert_eq!(r.steps[5].stdout, "build ok\n");
    assert_eq!(r.steps.len(), 7);
    assert!(r.steps.iter().all(|s| s.ok && s.exit_code == Some(0)));
}

#[tokio::test]
async fn git_goes_to_a_known_version() {
    let f = fixture();
    let r = run(kind(&f), Some("v1.0.1"), Some("v1.0.0")).await;
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(git(&f.repo, &["rev-parse", "HEAD"]), f.v100);
    // Versions were known: no describe, no tag listing.
    assert!(r
        .steps
        .iter()
        .all(|s| !s.argv.contains(&"describe".to_string())
            && !s.argv.contains(&"--list".to_string())));
}

#[tokio::test]
async fn git_missing_tag_fails_cleanly_without_building_or_restarting() {
    let f = fixture();
    let r = run(kind(&f), Some("v1.0.1"), Some("v0.9.9")).await;
    assert!(!r.ok);
    assert_eq!(
        r.error.as_deref(),
        Some(
            format!(
                "tag \"v0.9.9\" does not exist in {}; nothing was changed (HEAD stays at {})",
                f.repo.display(),
                f.v101
            )
            .as_str()
        )
    );
    assert_eq!(git(&f.repo, &["rev-parse", "HEAD"]), f.v101);
    assert_eq!(
        std::fs::read_to_string(f.repo.join("VERSION")).unwrap(),
        "1.0.1\n"
    );
    assert_eq!(out(&f, "build.txt"), "");
    assert_eq!(out(&f, "restart.log"), "");
}

#[tokio::test]
async fn git_failing_build_stops_before_the_restart() {
    let f = fixture();
    let mut k = kind(&f);
    if let ExecutorKind::Git(rollbackd::execute::git::Config { build, .. }) = &mut k {
        build.push(vec![
            "sh".into(),
            "-c".into(),
            "echo 'npm ERR! missing script: build' >&2; exit 2".into(),
        ]);
    }
    let r = run(k, None, None).await;
    assert!(!r.ok);
    let e = r.error.unwrap();
    assert!(e.starts_with("step 7 (sh -c"), "{e}");
    assert!(
        e.ends_with("exited with status 2: npm ERR! missing script: build"),
        "{e}"
    );
    assert_eq!(out(&f, "restart.log"), "");
}

#[tokio::test]
async fn git_not_a_repository_fails_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let r = run(
        ExecutorKind::Git(rollbackd::execute::git::Config {
            repo: tmp.path().to_path_buf(),
            build: vec![],
            restart: None,
        }),
        None,
        None,
    )
    .await;
    let e = r.error.unwrap();
    assert!(e.starts_with("step 1 (git -C"), "{e}");
    assert!(e.contains("not a git repository"), "{e}");
}
