//! `docker` executor against a fake docker that keeps containers, local
//! images and a registry in a state file and logs every argv.

mod fakes;

use std::time::Duration;

use fakes::{argv, Fake};
use rollbackd::config::{ExecutorKind, RollbackPlan};
use rollbackd::execute::{run_plan, ExecResult, Vars};
use serde_json::json;

fn host() -> serde_json::Value {
    json!({
        "containers": {"web": {"image": "registry:5000/app:1.10", "running": true}},
        "images": ["registry:5000/app:1.8", "registry:5000/app:1.9", "registry:5000/app:1.10", "other:2.0"],
        "registry": ["registry:5000/app:1.7"]
    })
}

fn kind(fake: &Fake) -> ExecutorKind {
    ExecutorKind::Docker {
        container: "web".into(),
        image: "registry:5000/app".into(),
        run_args: argv(&[
            "-p",
            "127.0.0.1:8080:80",
            "-e",
            "RELEASE={to_version}",
            "--label",
            "incident={incident}",
        ]),
        docker: fake.path(),
    }
}

async fn run(kind: ExecutorKind, to_version: Option<&str>) -> ExecResult {
    let plan = RollbackPlan {
        kind,
        timeout: Duration::from_secs(30),
        after: vec![],
        pre: vec![],
        step_timeout: None,
    };
    let vars = Vars {
        target: "web".into(),
        from_version: None,
        to_version: to_version.map(str::to_string),
        incident: "inc-9".into(),
    };
    tokio::time::timeout(Duration::from_secs(60), run_plan(&plan, &vars))
        .await
        .expect("plan did not finish within 60s: likely stuck on the fake docker's pipes")
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
