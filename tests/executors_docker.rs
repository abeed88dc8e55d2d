//! `docker` executor against a fake docker that keeps containers, local
//! images and a registry in a state file and logs every argv.

mod common;
mod fakes;

use std::time::Duration;

use common::exec;
use fakes::{argv, Fake};
use rollbackd::config::{ExecutorKind, RollbackPlan};
use rollbackd::execute::{run_plan, ExecResult};
use serde_json::json;

fn host() -> serde_json::Value {
    json!({
        "containers": {"web": {"image": "registry:5000/app:1.10", "running": true}},
        "images": ["registry:5000/app:1.8", "registry:5000/app:1.9", "registry:5000/app:1.10", "other:2.0"],
        "registry": ["registry:5000/app:1.7"]
    })
}

fn kind(fake: &Fake) -> ExecutorKind {
    exec::docker(
        fake.path(),
        argv(&[
            "-p",
            "127.0.0.1:8080:80",
            "-e",
            "RELEASE={to_version}",
            "--label",
            "incident={incident}",
        ]),
    )
}

async fn run(kind: ExecutorKind, to_version: Option<&str>) -> ExecResult {
    run_within(kind, to_version, Duration::from_secs(30)).await
}

async fn run_within(kind: ExecutorKind, to_version: Option<&str>, timeout: Duration) -> ExecResult {
    let plan = RollbackPlan {
        timeout,
        ..exec::plan(kind)
    };
    let vars = exec::vars(None, to_version, "inc-9");
    exec::within(60, "plan", run_plan(&plan, &vars)).await
}

fn run_argv(tag: &str) -> Vec<String> {
    argv(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "127.0.0.1:8080:80",
        "-e",
        &format!("RELEASE={tag}"),
        "--label",
        "incident=inc-9",
        &format!("registry:5000/app:{tag}"),
    ])
}

#[tokio::test]
async fn docker_replaces_the_container_with_the_previous_local_tag() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::install(dir.path(), "docker", host());
    let r = run(kind(&fake), None).await;
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(
        fake.calls(),
        vec![
            argv(&["inspect", "--format", "{{.Config.Image}}", "web"]),
            argv(&["image", "ls", "--format", "{{.Tag}}", "registry:5000/app"]),
            argv(&["stop", "web"]),
            argv(&["rm", "web"]),
            run_argv("1.9"),
        ]
    );
    assert_eq!(r.from_version.as_deref(), Some("1.10"));
    assert_eq!(r.to_version.as_deref(), Some("1.9"));
    let web = &fake.state()["containers"]["web"];
    assert_eq!(web["image"], "registry:5000/app:1.9");
    assert_eq!(web["running"], true);
}

#[tokio::test]
async fn docker_known_version_missing_locally_is_pulled_before_anything_stops() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::install(dir.path(), "docker", host());
    let r = run(kind(&fake), Some("1.7")).await;
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(
        fake.calls(),
        vec![
            argv(&["inspect", "--format", "{{.Config.Image}}", "web"]),
            argv(&[
                "image",
                "inspect",
                "--format",
                "{{.Id}}",
                "registry:5000/app:1.7"
            ]),
            argv(&["pull", "registry:5000/app:1.7"]),
            argv(&["stop", "web"]),
            argv(&["rm", "web"]),
            run_argv("1.7"),
        ]
    );
    assert_eq!(
        fake.state()["containers"]["web"]["image"],
        "registry:5000/app:1.7"
    );
}

#[tokio::test]
async fn docker_failed_pull_leaves_the_running_container_alone() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::install(dir.path(), "docker", host());
    let r = run(kind(&fake), Some("0.1")).await;
    assert!(!r.ok);
    let e = r.error.unwrap();
    assert!(
        e.starts_with("step 3 (") && e.contains("pull registry:5000/app:0.1"),
        "{e}"
    );
    assert!(e.contains("manifest unknown"), "{e}");
    assert!(!fake.calls().iter().any(|c| c[0] == "stop"));
    assert_eq!(fake.state(), host());
}

#[tokio::test]
async fn docker_refuses_a_missing_container_and_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = host();
    state["containers"] = json!({});
    let fake = Fake::install(dir.path(), "docker", state.clone());
    let r = run(kind(&fake), Some("1.9")).await;
    let e = r.error.unwrap();
    assert!(
        e.starts_with(
            "container web cannot be inspected: exited with status 1: Error: No such object: web"
        ),
        "{e}"
    );
    assert!(e.ends_with("nothing was changed"), "{e}");
    assert_eq!(fake.calls().len(), 1);
    assert_eq!(fake.state(), state);

    let fake = Fake::install(&dir.path().join("2"), "docker", host());
    let r = run(kind(&fake), Some("1.10")).await;
    assert_eq!(
        r.error.as_deref(),
        Some("container web already runs registry:5000/app:1.10; nothing to roll back to")
    );
    assert!(!fake.calls().iter().any(|c| c[0] == "stop"));

    let mut state = host();
    state["images"] = json!(["registry:5000/app:1.10"]);
    let fake = Fake::install(&dir.path().join("3"), "docker", state);
    let r = run(kind(&fake), None).await;
    assert_eq!(
        r.error.as_deref(),
        Some("the version to go back to is unknown and no local tag of registry:5000/app sorts before 1.10; nothing was changed")
    );
}

/// `host()` where `docker run` of these images fails as given.
fn host_where_run_fails(fails: serde_json::Value) -> serde_json::Value {
    let mut state = host();
    state["run_fails"] = fails;
    state
}

fn exit_codes(r: &ExecResult) -> Vec<Option<i32>> {
    r.steps.iter().map(|s| s.exit_code).collect()
}

const PORT_TAKEN: &str = "docker: Error response from daemon: driver failed programming external connectivity on endpoint web: Bind for 127.0.0.1:8080 failed: port is already allocated.";

#[tokio::test]
async fn docker_failed_run_puts_the_previous_container_back() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::install(
        dir.path(),
        "docker",
        host_where_run_fails(json!({
            "registry:5000/app:1.9": {"error": PORT_TAKEN, "created": true}
        })),
    );
    let r = run(kind(&fake), None).await;
    assert!(!r.ok);
    assert_eq!(
        fake.calls(),
        vec![
            argv(&["inspect", "--format", "{{.Config.Image}}", "web"]),
            argv(&["image", "ls", "--format", "{{.Tag}}", "registry:5000/app"]),
            argv(&["stop", "web"]),
            argv(&["rm", "web"]),
            run_argv("1.9"),
            argv(&["rm", "-f", "web"]),
            run_argv("1.10"),
        ]
    );
    assert_eq!(
        r.error.as_deref(),
        Some(&*format!(
            "docker run registry:5000/app:1.9 failed (step 5): exited with status 125: {PORT_TAKEN}; \
             the previous container (registry:5000/app:1.10) was started again"
        ))
    );
    assert_eq!(
        exit_codes(&r),
        [
            Some(0),
            Some(0),
            Some(0),
            Some(0),
            Some(125),
            Some(0),
            Some(0)
        ]
    );
    assert_eq!(
        (r.from_version.as_deref(), r.to_version.as_deref()),
        (Some("1.10"), Some("1.9"))
    );
    let web = &fake.state()["containers"]["web"];
    assert_eq!(web["image"], "registry:5000/app:1.10");
    assert_eq!(web["running"], true);
    assert_eq!(web["args"], json!(run_argv("1.10")[4..10]));
}

#[tokio::test]
async fn docker_failed_run_and_failed_restore_say_the_service_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let wrong_platform = "docker: Error response from daemon: image with reference registry:5000/app:1.9 was found but does not match the specified platform: wanted linux/amd64, actual: linux/arm64";
    let no_exec = "docker: Error response from daemon: failed to create task for container: exec: \"/app\": permission denied";
    let fake = Fake::install(
        dir.path(),
        "docker",
        host_where_run_fails(json!({
            "registry:5000/app:1.9": {"error": wrong_platform},
            "registry:5000/app:1.10": {"error": no_exec, "code": 126, "created": true}
        })),
    );
    let r = run(kind(&fake), Some("1.9")).await;
    assert!(!r.ok);
    assert_eq!(
        fake.calls(),
        vec![
            argv(&["inspect", "--format", "{{.Config.Image}}", "web"]),
            argv(&[
                "image",
                "inspect",
                "--format",
                "{{.Id}}",
                "registry:5000/app:1.9"
            ]),
            argv(&["stop", "web"]),
            argv(&["rm", "web"]),
            run_argv("1.9"),
            argv(&["rm", "-f", "web"]),
            run_argv("1.10"),
        ]
    );
    assert_eq!(
        r.error.as_deref(),
        Some(&*format!(
            "docker run registry:5000/app:1.9 failed (step 5): exited with status 125: {wrong_platform}; \
             starting the previous container (registry:5000/app:1.10) again also failed (step 7): \
             exited with status 126: {no_exec}; container web is not running: the service is down"
        ))
    );
    // Nothing was left to remove: `rm -f` failed, and the restore was still tried.
    assert_eq!(
        exit_codes(&r),
        [
            Some(0),
            Some(0),
            Some(0),
            Some(0),
            Some(125),
            Some(1),
            Some(126)
        ]
    );
    let web = &fake.state()["containers"]["web"];
    assert_eq!(web["image"], "registry:5000/app:1.10");
    assert_eq!(web["running"], false);
    assert_eq!(web["status"], "created");
}

#[tokio::test]
async fn docker_restore_runs_even_after_the_new_run_used_up_the_plan_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::install(
        dir.path(),
        "docker",
        host_where_run_fails(json!({
            "registry:5000/app:1.9": {"error": "never printed", "created": true, "sleep": 100}
        })),
    );
    let started = std::time::Instant::now();
    let r = run_within(kind(&fake), None, Duration::from_secs(3)).await;
    let took = started.elapsed();
    let e = r.error.unwrap();
    assert!(
        e.starts_with("docker run registry:5000/app:1.9 failed (step 5): timed out after")
            && e.contains("(plan deadline); process group killed"),
        "{e}"
    );
    assert!(
        e.ends_with("; the previous container (registry:5000/app:1.10) was started again"),
        "{e}"
    );
    assert_eq!(
        fake.calls()[5..],
        [argv(&["rm", "-f", "web"]), run_argv("1.10")]
    );
    assert!(r.steps[5].ok && r.steps[6].ok, "{:?}", &r.steps[5..]);
    let web = &fake.state()["containers"]["web"];
    assert_eq!(web["image"], "registry:5000/app:1.10");
    assert_eq!(web["running"], true);
    assert!(took < Duration::from_secs(15), "took {took:?}");
}
