//! `[target.rollback]`: every executor kind with its defaults.

use super::*;

#[test]
fn every_executor_kind_with_its_defaults() {
    let kind = |rollback: &str| {
        load_str("t", &config(&[("rollback", rollback)]))
            .unwrap_or_else(|e| panic!("{rollback}: {e}"))
            .targets
            .remove(0)
    };
    let t = kind("kind = \"kubernetes\"\ndeployment = \"web\"\nnamespace = \"prod\"\nto_revision = 3\nstep_timeout = \"20s\"\npre = [[\"true\"]]");
    assert_eq!(
        t.rollback.kind,
        ExecutorKind::Kubernetes(crate::execute::kubernetes::Config {
            deployment: "web".into(),
            namespace: "prod".into(),
            context: None,
            to_revision: Some(3),
            kubectl: "kubectl".into(),
        })
    );
    assert_eq!(t.rollback.step_timeout, Some(Duration::from_secs(20)));
    assert_eq!(t.rollback.pre, vec![vec!["true".to_string()].into()]);
    // Step context: plan-level cwd and env, table steps next to plain
    // argv lists, on_failure; verification gates.
    let t = load_str(
        "t",
        &config(&[
            (
                "rollback",
                "kind = \"command\"\ncwd = \"/srv/app\"\nenv = { NODE_ENV = \"production\" }\nsteps = [[\"pm2\", \"stop\", \"app\"], { argv = [\"sh\", \"-c\", \"cp .env.example .env.local\"], cwd = \"/srv/app/web\", env = { A = \"1\" }, timeout = \"10s\" }]\non_failure = [[\"sh\", \"-c\", \"journalctl -u app > \\\"/tmp/$1.log\\\"\", \"sh\", \"{incident}\"]]",
            ),
            (
                "verify",
                "commands = [[\"curl\", \"-fsS\", \"http://127.0.0.1/login\"]]\nchecks = [{ url = \"http://127.0.0.1/api\", expect_status = 200, body_contains = \"ok\", max_latency = \"500ms\" }]",
            ),
        ]),
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .targets
    .remove(0);
    assert_eq!(t.rollback.cwd, Some(PathBuf::from("/srv/app")));
    assert_eq!(
        t.rollback.env.get("NODE_ENV").map(String::as_str),
        Some("production")
    );
    let ExecutorKind::Command(crate::execute::command::Config { steps }) = &t.rollback.kind else {
        panic!("command");
    };
    assert_eq!(
        steps[0],
        crate::config::Step::from(vec!["pm2".to_string(), "stop".into(), "app".into()])
    );
    assert_eq!(steps[1].cwd, Some(PathBuf::from("/srv/app/web")));
    assert_eq!(steps[1].env.get("A").map(String::as_str), Some("1"));
    assert_eq!(steps[1].timeout, Some(Duration::from_secs(10)));
    assert_eq!(t.rollback.on_failure.len(), 1);
    assert_eq!(t.verify.commands.len(), 1);
    assert_eq!(
        t.verify.checks[0].max_latency,
        Some(Duration::from_millis(500))
    );
    assert_eq!(t.verify.checks[0].body_contains.as_deref(), Some("ok"));
    assert_eq!(t.verify.checks[0].expect_status, Some(200));
    let t = kind("kind = \"blue_green\"\nservice = \"web\"\nnamespace = \"prod\"");
    assert_eq!(
        t.rollback.kind,
        ExecutorKind::BlueGreen(crate::execute::blue_green::Config {
            service: "web".into(),
            namespace: "prod".into(),
            context: None,
            selector_key: "version".into(),
            colors: ["blue".into(), "green".into()],
            kubectl: "kubectl".into(),
        })
    );
    let t = kind("kind = \"docker\"\ncontainer = \"web\"\nimage = \"registry:5000/app\"\nrun_args = [\"-p\", \"80:80\"]");
    assert_eq!(
        t.rollback.kind,
        ExecutorKind::Docker(crate::execute::docker::Config {
            container: "web".into(),
            image: "registry:5000/app".into(),
            run_args: vec!["-p".into(), "80:80".into()],
            docker: "docker".into(),
        })
    );
    let t = kind("kind = \"git\"\nrepo = \"/srv/app\"\nbuild = [[\"npm\", \"ci\"]]\nrestart = [\"pm2\", \"restart\", \"{target}\"]");
    assert_eq!(
        t.version,
        Some(VersionSource::Command(
            ["git", "-C", "/srv/app", "describe", "--tags", "--always"]
                .map(String::from)
                .to_vec()
        ))
    );
    let t = kind("kind = \"webhook\"\nurl = \"https://ci.example.com/rollback\"\ntoken_file = \"/etc/rollbackd/ci-token\"\nbody = { ref = \"{to_version}\", why = \"{incident}\" }");
    let ExecutorKind::Webhook(crate::execute::webhook::Config { body, .. }) = t.rollback.kind
    else {
        panic!("webhook expected");
    };
    let body: serde_json::Value = serde_json::from_str(&body.unwrap()).unwrap();
    assert_eq!(body["ref"], "{to_version}");
}
