//! `confirm_command` with the real daemon and small real scripts: exit 0
//! approves (and the record names the command), exit 1 rejects with its
//! stderr as the reason, any other exit or no exit before the deadline is
//! no answer (humans and the confirmation timeout still decide). A command
//! still running when the incident stops waiting, or at shutdown, is killed
//! with its process group; after a restart it is asked again.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    config: PathBuf,
    api: String,
    api_port: u16,
}

/// The script every test uses: it records its run and pid, answers with
/// the exit code in `answer` if that file exists, else sleeps (no answer).
fn script(dir: &Path) -> PathBuf {
    let path = dir.join("ask-oncall");
    let text = format!(
        "#!/bin/sh\n\
         echo \"$1\" >> {dir}/runs\n\
         echo $$ > {dir}/pid\n\
         if [ -f {dir}/answer ]; then\n\
           code=$(cat {dir}/answer)\n\
           echo \"on-call says no for $1\" >&2\n\
           exit $code\n\
         fi\n\
         exec sleep 600\n",
        dir = dir.display()
    );
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn setup(answer: Option<&str>, confirm_extra: &str) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    rollbackd::demo::create_releases(&dir).unwrap();
    let port = serve_releases(&dir);
    let api_port = free_port();
    if let Some(a) = answer {
        std::fs::write(dir.join("answer"), a).unwrap();
    }
    let script = script(&dir);
    let target_extra = format!(
        "confirm = \"required\"\nconfirm_command = [\"{script}\", \"{{incident}}\"]\n{confirm_extra}",
        script = script.display()
    );
    let config =
        conf::base(&dir, api_port, "") + &conf::demo_target("web", &dir, port, &target_extra, "1s");
    let path = conf::write(&dir, &config);
    Setup {
        _tmp: tmp,
        dir,
        config: path,
        api: format!("http://127.0.0.1:{api_port}"),
        api_port,
    }
}

impl Setup {
    fn start(&self, log: &str) -> Running {
        let d = Running::start(&self.config, &self.dir.join(log));
        wait_for(Duration::from_secs(15), "the API to answer", || {
            std::net::TcpStream::connect(("127.0.0.1", self.api_port))
                .ok()
                .map(|_| ())
        });
        d
    }

    fn target(&self) -> Value {
        let (code, body) = get(&format!("{}/v1/status", self.api));
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["targets"][0].clone()
    }

    fn wait_phase(&self, phase: &str) -> Value {
        wait_for(
            Duration::from_secs(30),
            &format!("target web to be {phase}"),
            || {
                let t = self.target();
                (t["phase"] == phase).then_some(t)
            },
        )
    }

    /// Deploy the broken v2 and wait for the incident to open. A command
    /// that answers at once may already have moved it past
    /// AwaitingConfirmation, so any phase carrying an incident counts.
    fn breach(&self) -> String {
        wait_for(Duration::from_secs(15), "version v1", || {
            (self.target()["state"]["version"] == "v1").then_some(())
        });
        rollbackd::demo::switch_release(&self.dir, "v2").unwrap();
        wait_for(Duration::from_secs(30), "an incident on target web", || {
            let t = self.target();
            t["state"]["phase"]["incident"]["id"]
                .as_str()
                .map(str::to_string)
        })
    }

    fn runs(&self) -> Vec<String> {
        lines_of(&self.dir.join("runs"))
    }

    fn wait_runs(&self, n: usize) -> i32 {
        wait_for(
            Duration::from_secs(20),
            &format!("confirm_command run {n}"),
            || (self.runs().len() >= n).then_some(()),
        );
        wait_for(Duration::from_secs(5), "the command's pid file", || {
            std::fs::read_to_string(self.dir.join("pid"))
                .ok()?
                .trim()
                .parse()
                .ok()
        })
    }

    fn executions(&self) -> usize {
        executions(&self.dir.join("state"))
    }
}

/// Whether `pid` is a live process (a zombie is not).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
    }
}

fn wait_dead(pid: i32, what: &str) {
    wait_for(Duration::from_secs(15), what, || {
        (!alive(pid)).then_some(())
    });
}

#[test]
fn exit_0_approves_and_the_record_names_the_command() {
    let s = setup(Some("0"), "confirm_timeout = \"2m\"");
    let _d = s.start("daemon.log");
    let id = s.breach();
    let t = s.wait_phase("RolledBack");
    assert_eq!(live(&s.dir), "v1");
    let inc = &t["state"]["phase"]["incident"];
    assert_eq!(inc["confirmed_by"], "confirm_command", "{inc}");
    assert!(
        inc["timeline"]
            .to_string()
            .contains("approved by confirm_command"),
        "{inc}"
    );
    assert_eq!(s.runs(), vec![id.clone()], "run once, with {{incident}}");
    let record = std::fs::read_to_string(s.dir.join(format!("state/incidents/{id}.md"))).unwrap();
    assert!(record.contains("confirm_command"), "{record}");
    assert_eq!(s.executions(), 1);
}

#[test]
fn exit_1_rejects_with_its_stderr_and_nothing_runs() {
    let s = setup(Some("1"), "confirm_timeout = \"2m\"");
    let _d = s.start("daemon.log");
    let id = s.breach();
    let t = s.wait_phase("Suppressed");
    let err = t["state"]["phase"]["incident"]["error"].as_str().unwrap();
    assert!(err.contains("rejected by confirm_command"), "{err}");
    assert!(err.contains(&format!("on-call says no for {id}")), "{err}");
    // Breaches go on; nothing is executed.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.target()["phase"], "Suppressed");
    assert_eq!(live(&s.dir), "v2");
    assert_eq!(s.executions(), 0);
}

#[test]
fn other_exit_is_no_answer_and_a_human_still_decides() {
    let s = setup(Some("3"), "confirm_timeout = \"2m\"");
    let _d = s.start("daemon.log");
    let id = s.breach();
    s.wait_runs(1);
    // The command exited 3: the incident keeps waiting.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(s.target()["phase"], "AwaitingConfirmation");
    let (code, body) = http(
        "POST",
        &format!("{}/v1/incidents/{id}/approve", s.api),
        None,
        Some(r#"{"by": "alice"}"#),
    );
    assert_eq!(code, 200, "{body}");
    let t = s.wait_phase("RolledBack");
    assert_eq!(t["state"]["phase"]["incident"]["confirmed_by"], "alice");
    assert_eq!(s.runs().len(), 1);
}

#[test]
fn a_command_that_never_answers_is_killed_at_the_confirm_timeout() {
    let s = setup(
        None,
        "confirm_timeout = \"3s\"\non_confirm_timeout = \"escalate\"",
    );
    let _d = s.start("daemon.log");
    s.breach();
    let pid = s.wait_runs(1);
    assert!(alive(pid));
    let t = s.wait_phase("Escalated");
    assert!(
        t["state"]["phase"]["incident"]["error"]
            .to_string()
            .contains("confirmation timeout"),
        "{t}"
    );
    wait_dead(pid, "the sleeping confirm_command to be killed");
    assert_eq!(s.executions(), 0);
    assert_eq!(live(&s.dir), "v2");
}

#[test]
fn a_human_answer_stops_the_running_command() {
    let s = setup(None, "confirm_timeout = \"2m\"");
    let _d = s.start("daemon.log");
    let id = s.breach();
    let pid = s.wait_runs(1);
    let (code, body) = http(
        "POST",
        &format!("{}/v1/incidents/{id}/reject", s.api),
        None,
        Some(r#"{"by": "bob", "reason": "known"}"#),
    );
    assert_eq!(code, 200, "{body}");
    s.wait_phase("Suppressed");
    wait_dead(pid, "the command to be stopped once a human answered");
}

#[test]
fn after_a_restart_the_command_is_asked_again() {
    let s = setup(None, "confirm_timeout = \"10m\"");
    let d = s.start("daemon1.log");
    let id = s.breach();
    let pid = s.wait_runs(1);
    // Shutdown kills the command with its process group (the worker takes
    // no answer any more); the incident keeps waiting in the journal.
    assert_eq!(d.stop(), Some(0));
    wait_dead(pid, "the confirm_command to be killed at shutdown");
    assert_eq!(live(&s.dir), "v2");

    // The team's flow answers yes this time.
    std::fs::write(s.dir.join("answer"), "0").unwrap();
    let _d = s.start("daemon2.log");
    let t = s.wait_phase("RolledBack");
    let inc = &t["state"]["phase"]["incident"];
    assert_eq!(inc["id"], id.as_str(), "same incident");
    assert_eq!(inc["confirmed_by"], "confirm_command", "{inc}");
    assert_eq!(
        s.runs(),
        vec![id.clone(), id],
        "asked again after the restart"
    );
    assert_eq!(live(&s.dir), "v1");
    assert_eq!(s.executions(), 1);
}
