//! `rollbackd drill` through the real binary, without a daemon: dry-run
//! prints the substituted plan, checks programs and the executor's read-only
//! checks and changes nothing; `--live` runs it; `--history` lists drills.

mod common;
mod fakes;

use std::path::Path;
use std::process::{Command, Output};

use common::bin;
use common::exec::git;
use fakes::Fake;
use serde_json::json;

fn config(dir: &Path, targets: &str) -> std::path::PathBuf {
    let text = format!(
        "[daemon]\nstate_dir = \"{}/state\"\nlisten = \"127.0.0.1:0\"\n{targets}",
        dir.display()
    );
    let path = dir.join("rollbackd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn target(name: &str, rollback: &str) -> String {
    format!(
        "\n[[target]]\nname = \"{name}\"\n  [[target.rule]]\n  name = \"cpu\"\n  source = \"host\"\n  metric = \"cpu\"\n  above = 0.99\n  [target.rollback]\n{rollback}\n"
    )
}

/// Run `rollbackd drill ARGS` with `path_first` at the front of PATH.
fn drill(config: &Path, path_first: &Path, args: &[&str]) -> (Output, String) {
    let path = format!(
        "{}:{}",
        path_first.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(bin())
        .arg("drill")
        .args(args)
        .arg("--config")
        .arg(config)
        .env("PATH", path)
        .output()
        .expect("run rollbackd drill");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

#[test]
fn drill_dry_run_history_and_live() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let fakebin = dir.join("fakebin");
    let kubectl = Fake::install(
        &fakebin,
        "kubectl",
        json!({
            "namespace": "prod",
            "deployments": {"web": {"1": "web:1.0", "2": "web:1.1"}},
            "services": {"shop": {"selector": {"app": "shop", "version": "green"}}},
            "pods": [{"name": "shop-blue-1", "labels": {"app": "shop", "version": "blue"}, "ready": false}]
        }),
    );
    let state_before = kubectl.state();

    let repo = dir.join("app");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    for v in ["1.0.0", "1.0.1"] {
        std::fs::write(repo.join("VERSION"), v).unwrap();
        git(&repo, &["add", "VERSION"]);
        git(&repo, &["commit", "-qm", v]);
        git(&repo, &["tag", &format!("v{v}")]);
    }
    let head = git(&repo, &["rev-parse", "HEAD"]);

    let targets = [
        target("web", "kind = \"kubernetes\"\ndeployment = \"web\"\nnamespace = \"prod\"\nafter = [[\"curl\", \"-X\", \"PURGE\", \"https://cdn.example.com/{target}\"]]"),
        target("shop", "kind = \"blue_green\"\nservice = \"shop\"\nnamespace = \"prod\""),
        target(
            "app",
            &format!(
                "kind = \"git\"\nrepo = \"{}\"\nbuild = [[\"sh\", \"-c\", \"cat VERSION > ../built\"]]\nrestart = [\"no-such-restart-program\", \"{{to_version}}\"]",
                repo.display()
            ),
        ),
        target("app2", &format!("kind = \"git\"\nrepo = \"{}\"\nbuild = [[\"sh\", \"-c\", \"cat VERSION > ../built\"]]", repo.display())),
    ]
    .concat();
    let cfg = config(dir, &targets);

    // kubernetes, dry-run: the plan is printed, only history was read.
    let (out, text) = drill(&cfg, &fakebin, &["web"]);
    assert!(out.status.success(), "{text}");
    for needle in [
        "drill web (dry-run), kind kubernetes",
        "ok     kubectl rollout history deployment/web -n prod",
        "kubectl rollout undo deployment/web -n prod --to-revision=1",
        "kubectl rollout status deployment/web -n prod --timeout=<time left>",
        "curl -X PURGE https://cdn.example.com/web",
        "verdict: ready",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(
        text.contains(&format!("ok       kubectl ({})", kubectl.program.display())),
        "{text}"
    );
    assert_eq!(
        kubectl.calls(),
        vec![fakes::argv(&[
            "rollout",
            "history",
            "deployment/web",
            "-n",
            "prod"
        ])]
    );
    assert_eq!(kubectl.state(), state_before, "a dry-run changes nothing");

    // blue_green, dry-run: the standby has no ready pod.
    let (out, text) = drill(&cfg, &fakebin, &["shop"]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("refused: refusing to switch service shop to blue"),
        "{text}"
    );
    assert!(text.contains("verdict: not ready"), "{text}");
    assert!(!kubectl.calls().iter().any(|c| c[0] == "patch"));

    // git, dry-run: the missing restart program and a missing tag are found.
    let (out, text) = drill(&cfg, &fakebin, &["app", "--to-version", "v9.9.9"]);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("MISSING  no-such-restart-program: not found on PATH"),
        "{text}"
    );
    assert!(
        text.contains("tag \\\"v9.9.9\\\" does not exist")
            || text.contains("tag \"v9.9.9\" does not exist"),
        "{text}"
    );
    assert_eq!(
        git(&repo, &["rev-parse", "HEAD"]),
        head,
        "a dry-run changes nothing"
    );

    // git, live: really rolled back, built.
    let (out, text) = drill(&cfg, &fakebin, &["app2", "--live"]);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("verdict: rolled back v1.0.1 -> v1.0.0 and verified"),
        "{text}"
    );
    assert_eq!(
        git(&repo, &["rev-parse", "HEAD"]),
        git(&repo, &["rev-parse", "v1.0.0^{commit}"])
    );
    assert_eq!(std::fs::read_to_string(dir.join("built")).unwrap(), "1.0.0");

    // Unknown target: a clear error.
    let (out, text) = drill(&cfg, &fakebin, &["nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text.contains("no target named \"nope\" (targets: web, shop, app, app2)"),
        "{text}"
    );

    // The rehearsal record.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("state/drills.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(String, String, bool)> = lines
        .iter()
        .map(|l| {
            (
                l["target"].as_str().unwrap().into(),
                l["mode"].as_str().unwrap().into(),
                l["success"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("web".into(), "dry-run".into(), true),
            ("shop".into(), "dry-run".into(), false),
            ("app".into(), "dry-run".into(), false),
            ("app2".into(), "live".into(), true),
        ]
    );
    assert!(lines
        .iter()
        .all(|l| l["duration"].is_string() || l["duration"].is_number()));

    let (out, text) = drill(&cfg, &fakebin, &["--history"]);
    assert!(out.status.success(), "{text}");
    let rows: Vec<&str> = text.lines().collect();
    assert!(
        rows[0].starts_with("DATE (UTC)") && rows[0].contains("DURATION"),
        "{text}"
    );
    assert!(
        rows[1].contains("web") && rows[1].contains("dry-run") && rows[1].contains("success"),
        "{text}"
    );
    assert!(
        rows[2].contains("shop") && rows[2].contains("FAILED"),
        "{text}"
    );
    assert!(
        rows[4].contains("app2") && rows[4].contains("live") && rows[4].contains("success"),
        "{text}"
    );
    assert!(text.contains("4 drill(s), 2 successful"), "{text}");

    let (_, text) = drill(&cfg, &fakebin, &["--history", "shop"]);
    assert!(text.contains("1 drill(s), 0 successful"), "{text}");

    // Neither a target nor --history: usage error.
    let (out, _) = drill(&cfg, &fakebin, &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn drill_warns_about_a_missing_program_inside_sh_c() {
    let tmp = tempfile::tempdir().unwrap();
    let rollback = "  kind = \"command\"\n  steps = [[\"true\"], { argv = [\"sh\", \"-c\", \"rollbackd-no-such-tool --dump > /tmp/x\"], cwd = \"/tmp\" }]\n  on_failure = [[\"sh\", \"-c\", \"cat /dev/null | head\"]]";
    let cfg = config(tmp.path(), &target("web", rollback));
    let (out, text) = drill(&cfg, tmp.path(), &["web"]);
    assert!(
        text.contains("warning: rollbackd-no-such-tool (first word of an sh -c script) not found"),
        "{text}"
    );
    assert!(text.contains("ok       cat ("), "{text}");
    assert!(text.contains("on_failure steps (would run"), "{text}");
    assert!(
        text.contains("(in /tmp)"),
        "the step's cwd is shown:\n{text}"
    );
    // A warning, not a failure: every program drill must find is there.
    assert!(out.status.success(), "{text}");
}
