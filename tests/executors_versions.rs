//! Going to a named version (`trigger --to-version`) with each executor that
//! can check one: git (a real repository), docker and kubernetes (the fakes
//! in tests/fakes/), symlink; and templates resolved before the first step.

mod common;
mod fakes;

use common::exec::{self, git, plan, within};
use fakes::{argv, Fake};
use rollbackd::config::ExecutorKind;
use rollbackd::execute::{check_version, run_plan, run_plan_to, ExecResult, Vars};
use serde_json::json;

/// One test at a time: a running plan reaps adopted zombies
/// (`waitpid(-1)`), which can steal the exit status of a fixture's `git`
/// run by another test at the same moment.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn vars(to: Option<&str>) -> Vars {
    exec::vars(None, to, "inc-7")
}

fn refused_with_nothing_run(r: &ExecResult, version: &str, why: &str) {
    assert!(!r.ok);
    assert!(r.steps.is_empty(), "nothing ran: {:?}", r.steps);
    let e = r.error.as_deref().unwrap_or_default();
    assert!(
        e.starts_with(&format!("unknown version {version:?}: {why}"))
            && e.ends_with("; nothing was run"),
        "{e}"
    );
}

#[tokio::test]
async fn git_goes_to_a_named_tag_and_refuses_an_unknown_one() {
    let _one = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("app");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    for v in ["v1", "v2", "v3"] {
        std::fs::write(repo.join("VERSION"), format!("{v}\n")).unwrap();
        git(&repo, &["add", "VERSION"]);
        git(&repo, &["commit", "-qm", v]);
        git(&repo, &["tag", v]);
    }
    let kind = ExecutorKind::Git(rollbackd::execute::git::Config {
        repo: repo.clone(),
        build: vec![],
        restart: None,
    });
    let p = plan(kind);
    assert_eq!(check_version(&p, "v1").await, Ok(()));
    let r = within(60, "git to v9", run_plan_to(&p, &vars(None), "v9")).await;
    refused_with_nothing_run(&r, "v9", "no tag or commit of that name in");
    assert_eq!(
        std::fs::read_to_string(repo.join("VERSION")).unwrap(),
        "v3\n"
    );

    let r = within(60, "git to v1", run_plan_to(&p, &vars(Some("v2")), "v1")).await;
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(r.to_version.as_deref(), Some("v1"));
    assert_eq!(
        std::fs::read_to_string(repo.join("VERSION")).unwrap(),
        "v1\n"
    );
}

#[tokio::test]
async fn docker_checks_the_image_tag_locally_then_in_the_registry() {
    let _one = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::install(
        tmp.path(),
        "docker",
        json!({
            "containers": {"web": {"image": "registry:5000/app:1.10", "running": true}},
            "images": ["registry:5000/app:1.8", "registry:5000/app:1.10"],
            "registry": ["registry:5000/app:1.7"]
        }),
    );
    let kind = exec::docker(fake.path(), argv(&["-e", "RELEASE={to_version}"]));
    let p = plan(kind);
    // Local, pullable, unknown.
    assert_eq!(check_version(&p, "1.8").await, Ok(()));
    assert_eq!(check_version(&p, "1.7").await, Ok(()));
    let r = within(60, "docker to 0.1", run_plan_to(&p, &vars(None), "0.1")).await;
    refused_with_nothing_run(
        &r,
        "0.1",
        "no local image registry:5000/app:0.1, and docker manifest inspect found none in the registry",
    );
    assert!(
        !fake
            .calls()
            .iter()
            .any(|c| c[0] == "stop" || c[0] == "run" || c[0] == "pull"),
        "the container was not touched: {:?}",
        fake.calls()
    );
    let r = within(
        60,
        "docker to 1.8",
        run_plan_to(&p, &vars(Some("1.9")), "1.8"),
    )
    .await;
    assert!(r.ok, "{:?}", r.error);
    let run = fake
        .calls()
        .into_iter()
        .find(|c| c[0] == "run")
        .expect("docker run");
    assert_eq!(
        run.last().map(String::as_str),
        Some("registry:5000/app:1.8")
    );
    assert!(run.contains(&"RELEASE=1.8".to_string()), "{run:?}");
}

#[tokio::test]
async fn kubernetes_goes_to_a_listed_revision() {
    let _one = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let fake = Fake::install(
        tmp.path(),
        "kubectl",
        json!({
            "namespace": "prod",
            "deployments": {"web": {"1": "web:1.0", "2": "web:1.1", "3": "web:1.2"}},
            "services": {},
            "pods": []
        }),
    );
    let kind = exec::kubernetes(fake.path(), None, None);
    let p = plan(kind);
    for bad in ["7", "v1"] {
        let e = check_version(&p, bad).await.unwrap_err().to_string();
        assert!(e.starts_with(&format!("unknown version {bad:?}")), "{e}");
    }
    let r = within(
        60,
        "kubernetes to 1",
        run_plan_to(&p, &vars(None), "revision 1"),
    )
    .await;
    assert!(r.ok, "{:?}", r.error);
    let undo = fake
        .calls()
        .into_iter()
        .find(|c| c[..2] == ["rollout".to_string(), "undo".to_string()])
        .expect("rollout undo");
    assert!(undo.contains(&"--to-revision=1".to_string()), "{undo:?}");
}

#[tokio::test]
async fn symlink_checks_the_release_directory() {
    let _one = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let releases = tmp.path().join("releases");
    for v in ["v1", "v2", "v3"] {
        std::fs::create_dir_all(releases.join(v)).unwrap();
    }
    let current = tmp.path().join("current");
    std::os::unix::fs::symlink(releases.join("v3"), &current).unwrap();
    let p = plan(ExecutorKind::Symlink(rollbackd::execute::symlink::Config {
        current: current.clone(),
        releases: releases.clone(),
        restart: None,
    }));
    for (v, want) in [
        ("v1", Ok(())),
        (
            "v9",
            Err(format!(
                "unknown version \"v9\": no release directory {}",
                releases.join("v9").display()
            )),
        ),
        (
            "v3",
            Err(format!(
                "version \"v3\" is already live ({} -> {})",
                current.display(),
                releases.join("v3").display()
            )),
        ),
        (
            "../v1",
            Err("unknown version \"../v1\": not a release directory name".to_string()),
        ),
        (
            "--help",
            Err("unknown version \"--help\": not a version name: a version must not start with '-' (letters, digits and . _ + : @ / -, not starting with -, at most 200 characters)".to_string()),
        ),
        (
            "v1; rm -rf /",
            Err("unknown version \"v1; rm -rf /\": not a version name: ';' is not allowed in a version (letters, digits and . _ + : @ / -, not starting with -, at most 200 characters)".to_string()),
        ),
        (
            // Issue 18 item 3: a shell expands a leading tilde.
            "~root",
            Err("unknown version \"~root\": not a version name: '~' is not allowed in a version (letters, digits and . _ + : @ / -, not starting with -, at most 200 characters)".to_string()),
        ),
    ] {
        let got = check_version(&p, v).await.map_err(|e| e.to_string());
        assert_eq!(got, want, "{v}");
    }
    let r = within(60, "symlink to v1", run_plan_to(&p, &vars(None), "v1")).await;
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(
        std::fs::read_link(&current).unwrap().file_name().unwrap(),
        "v1"
    );
}

#[tokio::test]
async fn a_template_without_a_value_stops_the_plan_before_pre() {
    let _one = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("pre-ran");
    let mut p = plan(ExecutorKind::Command(rollbackd::execute::command::Config {
        steps: vec![argv(&["git", "checkout", "{to_version}"]).into()],
    }));
    p.pre = vec![argv(&["touch", marker.to_str().unwrap()]).into()];
    let r = within(60, "plan", run_plan(&p, &vars(None))).await;
    assert!(!r.ok);
    assert!(r.steps.is_empty());
    assert_eq!(
        r.error.as_deref(),
        Some("step 1 of 1 (git checkout {to_version}) cannot run: template variable {to_version} has no value; nothing was run")
    );
    assert!(!marker.exists(), "pre did not run");

    // A symlink plan finds {to_version} itself, so pre can use it.
    let releases = tmp.path().join("releases");
    for v in ["v1", "v2"] {
        std::fs::create_dir_all(releases.join(v)).unwrap();
    }
    let current = tmp.path().join("current");
    std::os::unix::fs::symlink(releases.join("v2"), &current).unwrap();
    let log = tmp.path().join("backup");
    let mut p = plan(ExecutorKind::Symlink(rollbackd::execute::symlink::Config {
        current,
        releases,
        restart: None,
    }));
    p.pre = vec![argv(&[
        "sh",
        "-c",
        "echo \"$1\" > \"$0\"",
        log.to_str().unwrap(),
        "{to_version}",
    ])
    .into()];
    let r = within(60, "symlink plan", run_plan(&p, &vars(None))).await;
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "v1\n");
}

#[tokio::test]
async fn blue_green_cannot_choose_a_version() {
    let _one = ONE_AT_A_TIME.lock().await;
    let p = plan(ExecutorKind::BlueGreen(
        rollbackd::execute::blue_green::Config {
            service: "web".into(),
            namespace: "prod".into(),
            context: None,
            selector_key: "version".into(),
            colors: ["blue".into(), "green".into()],
            kubectl: "/nonexistent/kubectl".into(),
        },
    ));
    let r = within(60, "blue_green to v1", run_plan_to(&p, &vars(None), "v1")).await;
    assert!(!r.ok);
    assert!(r.steps.is_empty());
    let e = r.error.unwrap();
    assert!(
        e.starts_with("version \"v1\" cannot be chosen: a blue_green rollback flips"),
        "{e}"
    );
    // command and webhook plans pass it on as {to_version}.
    let p = plan(ExecutorKind::Command(rollbackd::execute::command::Config {
        steps: vec![argv(&["test", "{to_version}", "=", "v1"]).into()],
    }));
    let r = within(
        60,
        "command to v1",
        run_plan_to(&p, &vars(Some("v0")), "v1"),
    )
    .await;
    assert!(r.ok, "{:?}", r.error);
}

#[tokio::test]
async fn plan_cwd_and_env_reach_the_executors_own_steps() {
    let _one = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("app");
    let releases = tmp.path().join("releases");
    for v in ["v1", "v2"] {
        std::fs::create_dir_all(releases.join(v)).unwrap();
    }
    std::fs::create_dir(&app).unwrap();
    let current = tmp.path().join("current");
    std::os::unix::fs::symlink(releases.join("v2"), &current).unwrap();
    let mut p = plan(ExecutorKind::Symlink(rollbackd::execute::symlink::Config {
        current,
        releases,
        restart: Some(argv(&[
            "sh",
            "-c",
            "echo \"$PM2_HOME $ROLLBACKD_TO_VERSION\" > restarted",
        ])),
    }));
    p.cwd = Some(app.clone());
    p.env = [("PM2_HOME".to_string(), "/srv/pm2".to_string())].into();
    let r = within(60, "symlink plan with context", run_plan(&p, &vars(None))).await;
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(
        std::fs::read_to_string(app.join("restarted")).unwrap(),
        "/srv/pm2 v1\n"
    );
}
