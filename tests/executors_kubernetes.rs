//! `kubernetes` and `blue_green` executors against a fake kubectl that keeps
//! revisions, services and pods in a state file and logs every argv.

mod common;
mod fakes;

use std::time::Duration;

use common::exec::{self, plan};
use fakes::{argv, Fake};
use rollbackd::config::ExecutorKind;
use rollbackd::execute::{blue_green::PODS_JSONPATH, run_plan, ExecResult, Vars};
use serde_json::json;

fn vars() -> Vars {
    exec::vars(None, None, "inc-1")
}

async fn run(kind: ExecutorKind) -> ExecResult {
    tokio::time::timeout(Duration::from_secs(60), run_plan(&plan(kind), &vars()))
        .await
        .expect("plan did not finish within 60s: likely stuck on the fake kubectl's pipes")
}

fn cluster() -> serde_json::Value {
    json!({
        "namespace": "prod",
        "deployments": {"web": {"1": "web:1.0", "2": "web:1.1", "3": "web:1.2"}},
        "services": {"web": {"selector": {"app": "web", "version": "blue"}}},
        "pods": [
            {"name": "web-blue-1", "labels": {"app": "web", "version": "blue"}, "ready": true},
            {"name": "web-green-1", "labels": {"app": "web", "version": "green"}, "ready": true},
            {"name": "web-green-2", "labels": {"app": "web", "version": "green"}, "ready": false},
            {"name": "other-green", "labels": {"app": "other", "version": "green"}, "ready": true}
        ]
    })
}

fn k8s(fake: &Fake, to_revision: Option<u64>, context: Option<&str>) -> ExecutorKind {
    exec::kubernetes(fake.path(), to_revision, context)
}

/// The status step's last argument is `--timeout=Ns` with the time left:
/// check its form and bound, then drop it for exact comparison.
fn strip_status_timeout(mut calls: Vec<Vec<String>>, max_secs: u64) -> Vec<Vec<String>> {
    for call in calls.iter_mut() {
        if call.get(1).map(String::as_str) == Some("status") {
            let flag = call.pop().expect("status has args");
            let secs: u64 = flag
                .strip_prefix("--timeout=")
                .and_then(|s| s.strip_suffix('s'))
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("status timeout flag {flag:?}"));
            assert!((1..=max_secs).contains(&secs), "{flag}");
        }
    }
    calls
}

#[tokio::test]
async fn kubernetes_undoes_to_the_previous_revision_and_waits_for_the_rollout() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::install(dir.path(), "kubectl", cluster());
    let r = run(k8s(&fake, None, None)).await;
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(
        strip_status_timeout(fake.calls(), 30),
        vec![
            argv(&["rollout", "history", "deployment/web", "-n", "prod"]),
            argv(&[
                "rollout",
                "undo",
                "deployment/web",
                "-n",
                "prod",
                "--to-revision=2"
            ]),
            argv(&["rollout", "status", "deployment/web", "-n", "prod"]),
        ]
    );
    assert_eq!(r.from_version.as_deref(), Some("3"));
    assert_eq!(r.to_version.as_deref(), Some("2"));
    let state = fake.state();
    assert_eq!(state["live_image"], "web:1.1");
    assert_eq!(
        state["deployments"]["web"],
        json!({"1": "web:1.0", "3": "web:1.2", "4": "web:1.1"})
    );
    assert_eq!(r.steps.len(), 3);
    assert!(r.steps[0].stdout.contains("REVISION"));
    assert!(r.steps[2].stdout.contains("successfully rolled out"));
}

#[tokio::test]
async fn kubernetes_to_revision_and_context_are_passed() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::install(dir.path(), "kubectl", cluster());
    let r = run(k8s(&fake, Some(1), Some("staging"))).await;
    assert!(r.ok, "{:?}", r.error);
    let ctx = ["--context", "staging"];
    assert_eq!(
        strip_status_timeout(fake.calls(), 30),
        vec![
            [
                &["rollout", "history", "deployment/web", "-n", "prod"][..],
                &ctx
            ]
            .concat(),
            [
                &[
                    "rollout",
                    "undo",
                    "deployment/web",
                    "-n",
                    "prod",
                    "--to-revision=1"
                ][..],
                &ctx
            ]
            .concat(),
            // The timeout flag (dropped above) comes last, after the context.
            [
                &["rollout", "status", "deployment/web", "-n", "prod"][..],
                &ctx
            ]
            .concat(),
        ]
        .into_iter()
        .map(|a| argv(&a))
        .collect::<Vec<_>>()
    );
    assert_eq!(fake.state()["live_image"], "web:1.0");
    assert_eq!(r.to_version.as_deref(), Some("1"));
}

#[tokio::test]
async fn kubernetes_refuses_an_unknown_revision_without_touching_the_deployment() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::install(dir.path(), "kubectl", cluster());
    let r = run(k8s(&fake, Some(7), None)).await;
    assert!(!r.ok);
    assert_eq!(
        r.error.as_deref(),
        Some("revision 7 is not in the rollout history of deployment/web in namespace prod (revisions 1, 2, 3); nothing was changed")
    );
    assert_eq!(
        fake.calls(),
        vec![argv(&[
            "rollout",
            "history",
            "deployment/web",
            "-n",
            "prod"
        ])]
    );
    assert_eq!(fake.state(), cluster());

    let r = run(k8s(&fake, Some(3), None)).await;
    assert!(r
        .error
        .unwrap()
        .contains("to_revision 3 is the live revision"));
}

#[tokio::test]
async fn kubernetes_with_a_single_revision_has_nothing_to_roll_back_to() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = cluster();
    state["deployments"]["web"] = json!({"5": "web:2.0"});
    let fake = Fake::install(dir.path(), "kubectl", state.clone());
    let r = run(k8s(&fake, None, None)).await;
    assert_eq!(
        r.error.as_deref(),
        Some("deployment/web in namespace prod has only revision 5: nothing to roll back to")
    );
    assert_eq!(fake.calls().len(), 1);
    assert_eq!(fake.state(), state);
}

#[tokio::test]
async fn kubernetes_unreachable_cluster_and_failed_rollout_are_reported_with_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = cluster();
    state["unreachable"] = json!(true);
    let fake = Fake::install(dir.path(), "kubectl", state);
    let r = run(k8s(&fake, None, None)).await;
    let e = r.error.unwrap();
    assert!(
        e.starts_with("step 1 (") && e.contains("rollout history"),
        "{e}"
    );
    assert!(
        e.contains("exited with status 1: The connection to the server"),
        "{e}"
    );

    let mut state = cluster();
    state["status_fails"] = json!(true);
    fake.set_state(state);
    let r = run(k8s(&fake, None, None)).await;
    assert!(!r.ok);
    let e = r.error.unwrap();
    assert!(e.starts_with("step 3 ("), "{e}");
    assert!(e.contains("exceeded its progress deadline"), "{e}");
    assert_eq!(r.steps.len(), 3);
    assert!(r.steps[1].ok && !r.steps[2].ok);
}

#[tokio::test]
async fn missing_kubectl_is_a_clean_failure() {
    let r = run(ExecutorKind::Kubernetes(
        rollbackd::execute::kubernetes::Config {
            deployment: "web".into(),
            namespace: "prod".into(),
            context: None,
            to_revision: None,
            kubectl: "/nonexistent/kubectl".into(),
        },
    ))
    .await;
    let e = r.error.unwrap();
    assert!(e.contains("cannot run \"/nonexistent/kubectl\""), "{e}");
}

// ------------------------------------------------------------- blue_green

fn blue_green(fake: &Fake) -> ExecutorKind {
    ExecutorKind::BlueGreen(rollbackd::execute::blue_green::Config {
        service: "web".into(),
        namespace: "prod".into(),
        context: None,
        selector_key: "version".into(),
        colors: ["blue".into(), "green".into()],
        kubectl: fake.path(),
    })
}

#[tokio::test]
async fn blue_green_switches_to_the_ready_standby_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::install(dir.path(), "kubectl", cluster());
    let r = run(blue_green(&fake)).await;
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(
        fake.calls(),
        vec![
            argv(&[
                "get",
                "service",
                "web",
                "-o",
                "jsonpath={.spec.selector}",
                "-n",
                "prod"
            ]),
            argv(&[
                "get",
                "pods",
                "-l",
                "app=web,version=green",
                "-o",
                PODS_JSONPATH,
                "-n",
                "prod"
            ]),
            argv(&[
                "patch",
                "service",
                "web",
                "--type=merge",
                "-p",
                r#"{"spec":{"selector":{"version":"green"}}}"#,
                "-n",
                "prod"
            ]),
        ]
    );
    assert_eq!(
        fake.state()["services"]["web"]["selector"],
        json!({"app": "web", "version": "green"})
    );
    assert_eq!(r.from_version.as_deref(), Some("blue"));
    assert_eq!(r.to_version.as_deref(), Some("green"));

    // And back: green is live now, blue is the standby.
    let r = run(blue_green(&fake)).await;
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(
        fake.state()["services"]["web"]["selector"],
        json!({"app": "web", "version": "blue"})
    );
    assert_eq!(fake.calls()[4][3], "app=web,version=blue");
}

#[tokio::test]
async fn blue_green_refuses_when_no_standby_pod_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = cluster();
    // The only ready green pod belongs to another app: it must not count.
    state["pods"][1]["ready"] = json!(false);
    let fake = Fake::install(dir.path(), "kubectl", state.clone());
    let r = run(blue_green(&fake)).await;
    assert!(!r.ok);
    assert_eq!(
        r.error.as_deref(),
        Some("refusing to switch service web to green: no ready pods match app=web,version=green (0 of 2 ready); the service still selects blue")
    );
    assert_eq!(fake.calls().len(), 2, "no patch: {:?}", fake.calls());
    assert!(fake.calls().iter().all(|c| c[0] == "get"));
    assert_eq!(fake.state(), state);
}

#[tokio::test]
async fn blue_green_refuses_a_live_color_it_does_not_know() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = cluster();
    state["services"]["web"]["selector"]["version"] = json!("canary");
    let fake = Fake::install(dir.path(), "kubectl", state.clone());
    let r = run(blue_green(&fake)).await;
    assert_eq!(
        r.error.as_deref(),
        Some("service web selects version=canary, which is neither blue nor green; nothing was changed")
    );
    assert_eq!(fake.calls().len(), 1);
    assert_eq!(fake.state(), state);
}
