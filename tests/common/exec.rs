//! Fixtures of the executor tests (`tests/executors*.rs`): a timeout that
//! names what hung, the variables and plan a test runs with, a git that
//! works in a fresh repository, and the executor kinds that run against
//! the fake `kubectl` and `docker` of `tests/fakes/`.

use std::future::Future;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rollbackd::config::{ExecutorKind, RollbackPlan};
use rollbackd::execute::{docker, kubernetes, Vars};

/// `f`, or a panic naming `what` after `secs` seconds.
pub async fn within<T>(secs: u64, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{what} did not finish within {secs}s: likely stuck waiting on a child, a pipe, \
                 a fake's pipes or the HTTP server"
            )
        })
}

/// The variables of incident `incident` of target `web`.
pub fn vars(from: Option<&str>, to: Option<&str>, incident: &str) -> Vars {
    Vars {
        target: "web".into(),
        from_version: from.map(str::to_string),
        to_version: to.map(str::to_string),
        incident: incident.into(),
        lease: None,
    }
}

/// A plan of `kind` alone, with a 30 s timeout.
pub fn plan(kind: ExecutorKind) -> RollbackPlan {
    RollbackPlan {
        kind,
        timeout: Duration::from_secs(30),
        after: vec![],
        pre: vec![],
        step_timeout: None,
        on_failure: vec![],
        cwd: None,
        env: Default::default(),
    }
}

/// `git -C repo ARGS` as a committer that needs no global config; its
/// trimmed stdout. Panics when git fails.
pub fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .expect("git is installed");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Deployment `web` in namespace `prod`, rolled back with `kubectl` (a
/// fake's path).
pub fn kubernetes(
    kubectl: String,
    to_revision: Option<u64>,
    context: Option<&str>,
) -> ExecutorKind {
    ExecutorKind::Kubernetes(kubernetes::Config {
        deployment: "web".into(),
        namespace: "prod".into(),
        context: context.map(str::to_string),
        to_revision,
        kubectl,
    })
}

/// Container `web` of image `registry:5000/app`, replaced with `docker` (a
/// fake's path).
pub fn docker(docker: String, run_args: Vec<String>) -> ExecutorKind {
    ExecutorKind::Docker(docker::Config {
        container: "web".into(),
        image: "registry:5000/app".into(),
        run_args,
        docker,
    })
}
