//! HA on etcd end to end (docs/cluster.md): a real etcd (`/usr/bin/etcd`;
//! a test fails, never skips, when it is missing) and real `rollbackd run`
//! processes, two or three nodes with the same config but their own
//! `state_dir`, `listen` and `node`, watching one demo service (`current ->
//! releases/v1`, v2 is broken). The rollback plan appends a line to a file
//! all nodes share, so "exactly one rollback ran" is a line count.

mod common;
#[path = "common/etcd.rs"]
mod etcd;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use etcd::{Etcd, Proxy, TlsFiles};

/// `lease_ttl` of every node: the shortest the config allows.
const TTL: Duration = Duration::from_secs(2);
/// `poll_interval` of every node.
const POLL: Duration = Duration::from_millis(300);
/// The health rule's `for` (1s) and window (1s), the plan, verification
/// and a poll or two, with room for a loaded machine.
const ROLLBACK_WITHIN: Duration = Duration::from_secs(30);

/// The plan: append `{lease}` (as `$1`) and `$ROLLBACKD_LEASE` to the shared file, then
/// point `current` back at the previous release (so verification passes).
const PLAN: &str = r#"echo "$1 $ROLLBACKD_LEASE" >> SHARED && ln -sfn DIR/releases/"$2" DIR/current.rollback && mv -T DIR/current.rollback DIR/current"#;

/// The plan for a kill in the middle of it: the line and the switch
/// first, then the step's process group ID (for the test to clean up what
/// the killed daemon leaves behind), then a long sleep.
const SLOW_PLAN: &str = r#"echo "$1 $ROLLBACKD_LEASE" >> SHARED && ln -sfn DIR/releases/"$2" DIR/current.rollback && mv -T DIR/current.rollback DIR/current && echo $$ > DIR/step.pid && sleep 30"#;

/// The demo service, the shared file and etcd.
struct Setup {
    /// Kept (and named on stderr) when `ROLLBACKD_TEST_KEEP` is set.
    tmp: Option<tempfile::TempDir>,
    /// The release tree (`current`, `releases/`).
    dir: PathBuf,
    /// The demo service's port.
    port: u16,
    etcd: Etcd,
    /// More `[cluster]` lines for the nodes made next (TLS files, user).
    cluster_extra: String,
    /// With a TLS etcd: its CA and certificates.
    tls: Option<TlsFiles>,
}

impl Setup {
    fn new() -> Setup {
        Setup::secure(false, None)
    }

    /// An etcd that requires TLS with client certificates (`tls`) and/or
    /// authentication with user `root` and `password`; nodes made next
    /// present the client certificate and log in as root.
    fn secure(tls: bool, password: Option<&str>) -> Setup {
        let (tmp, dir, port, _) = demo_releases();
        let files = tls.then(|| TlsFiles::generate(&dir));
        let etcd = Etcd::start_with(&dir, files.clone());
        let mut cluster_extra = String::new();
        if let Some(t) = &files {
            cluster_extra.push_str(&t.cluster_keys(&t.client_cert, &t.client_key));
        }
        if let Some(pw) = password {
            etcd.enable_auth(pw);
            let file = dir.join("etcd-password");
            std::fs::write(&file, format!("{pw}\n")).unwrap();
            cluster_extra.push_str(&format!(
                "username = \"root\"\npassword_file = \"{}\"\n",
                file.display()
            ));
        }
        Setup {
            tmp: Some(tmp),
            dir,
            port,
            etcd,
            cluster_extra,
            tls: files,
        }
    }

    /// The lines the plan wrote, on every node together.
    fn lines(&self) -> Vec<String> {
        lines_of(&self.dir.join("shared.txt"))
    }

    /// A node named `name` talking to etcd at `etcd_url`, its plan
    /// `plan`, `target_extra` added to `[[target]]`; not started.
    /// Deploy v2 and wait until the rollback plan is in its step (it wrote
    /// `step.pid`); `what` names that moment.
    fn deploy_v2_until_the_step(&self, what: &str) {
        rollbackd::demo::switch_release(&self.dir, "v2").unwrap();
        wait_for(ROLLBACK_WITHIN, what, || {
            self.dir.join("step.pid").exists().then_some(())
        });
    }

    /// Nodes `n1` and `n2` on this etcd with `plan` and `target_extra`,
    /// started and seeing v1.
    fn two_started(&self, plan: &str, target_extra: &str) -> Vec<Node> {
        let url = self.etcd.url();
        let mut nodes = vec![
            self.node("n1", &url, plan, target_extra),
            self.node("n2", &url, plan, target_extra),
        ];
        start_all(&mut nodes);
        nodes
    }

    fn node(&self, name: &str, etcd_url: &str, plan: &str, target_extra: &str) -> Node {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let api = free_port();
        let plan = plan
            .replace("SHARED", &self.dir.join("shared.txt").display().to_string())
            .replace("DIR", &self.dir.display().to_string());
        let version = format!(
            "['sh', '-c', 'basename \"$(readlink {}/current)\"']",
            self.dir.display()
        );
        let text = [
            conf::daemon(&dir, api, "300ms", ""),
            conf::email(&dir.join("state/outbox"), &["admin@example.com"]),
            format!(
                "\n[cluster]\netcd = [\"{etcd_url}\"]\nnode = \"{name}\"\nlease_ttl = \"2s\"\n{}",
                self.cluster_extra
            ),
            conf::target(
                "web",
                "1m",
                &format!("version_command = {version}\n{target_extra}"),
            ),
            conf::demo_health_rule(self.port),
            // Values as positional arguments ($1 the lease, $2 the version):
            // never in the script text.
            conf::command_rollback(
                "60s",
                &format!("[['sh', '-c', '{plan}', 'sh', '{{lease}}', '{{to_version}}']]"),
            ),
            conf::verify("15s", &format!("http://127.0.0.1:{}/api/health", self.port)),
        ]
        .concat();
        let config = dir.join("rollbackd.toml");
        std::fs::write(&config, text).unwrap();
        Node {
            name: name.to_string(),
            dir,
            api,
            config,
            daemon: None,
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if std::env::var_os("ROLLBACKD_TEST_KEEP").is_some() {
            if let Some(t) = self.tmp.take() {
                eprintln!("kept {}", t.keep().display());
            }
        }
    }
}

/// One rollbackd node.
struct Node {
    name: String,
    dir: PathBuf,
    api: u16,
    config: PathBuf,
    daemon: Option<Running>,
}

impl Node {
    fn start(&mut self) {
        let check = run_rollbackd(&self.config, &["check"]);
        assert!(
            check.status.success(),
            "rollbackd check refuses the test config: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        self.daemon = Some(Running::start_serving(
            &self.config,
            &self.dir.join("daemon.log"),
            self.api,
        ));
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// The target as `GET /v1/status` shows it.
    fn status(&self) -> serde_json::Value {
        target(self.api)
    }

    fn phase(&self) -> String {
        self.status()["phase"].as_str().unwrap_or("?").to_string()
    }

    /// `(owner, standby)` as this node's status shows them.
    fn cluster(&self) -> (Option<String>, bool) {
        let c = &self.status()["cluster"];
        (
            c["owner"].as_str().map(str::to_string),
            c["standby"].as_bool().unwrap_or(false),
        )
    }

    /// Journal entries whose actions run the plan.
    fn executions(&self) -> usize {
        journal(&self.state_dir())
            .iter()
            .flat_map(|e| e["actions"].as_array().cloned().unwrap_or_default())
            .filter(|a| a["action"] == "execute")
            .count()
    }

    /// The journaled steps of `event`.
    fn steps_of(&self, event: &str) -> Vec<serde_json::Value> {
        journal(&self.state_dir())
            .into_iter()
            .filter(|e| e["type"] == "step" && e["event"]["event"] == event)
            .collect()
    }

    /// Whether `/metrics` says this node's etcd session is `up`.
    fn etcd_up(&self) -> bool {
        let (code, text) = get(&format!("http://127.0.0.1:{}/metrics", self.api));
        code == 200
            && text.contains(&format!(
                "rollbackd_cluster_etcd_up{{node=\"{}\"}} 1",
                self.name
            ))
    }

    /// Mails in this node's outbox of `kind` (the `X-Rollbackd-Kind`).
    fn mails_of(&self, kind: &str) -> Vec<String> {
        let header = format!("X-Rollbackd-Kind: {kind}");
        mails(&self.state_dir().join("outbox"))
            .into_iter()
            .map(|(_, m)| m)
            .filter(|m| m.contains(&header))
            .collect()
    }

    fn kill9(&mut self) {
        self.daemon.take().expect("running").kill9();
    }

    fn stop(&mut self) {
        let code = self.daemon.take().expect("running").stop();
        assert_eq!(
            code,
            Some(0),
            "node {} exit; log:\n{}",
            self.name,
            self.log()
        );
    }

    fn assert_alive(&mut self) {
        self.daemon.as_mut().expect("running").assert_alive();
    }
}

/// Start every node and wait until each has seen v1 live and reaches etcd.
fn start_all(nodes: &mut [Node]) {
    for n in nodes.iter_mut() {
        n.start();
    }
    for n in nodes.iter() {
        wait_for(
            Duration::from_secs(20),
            &format!("node {} to see v1 and reach etcd", n.name),
            || {
                let seen = n
                    .steps_of("version_observed")
                    .iter()
                    .any(|e| e["event"]["version"] == "v1");
                (seen && n.etcd_up()).then_some(())
            },
        );
    }
}

/// Wait until the nodes agree on `phase` and on one owner; returns the
/// index of the owner (the node whose status says it is not standby and
/// names itself).
/// Two nodes running `plan`, v2 deployed, the owner in the plan's step
/// (`what` names that moment): the setup, the nodes, the owner's index.
fn mid_plan(plan: &str, what: &str) -> (Setup, Vec<Node>, usize) {
    let s = Setup::new();
    let nodes = s.two_started(plan, "");
    s.deploy_v2_until_the_step(what);
    let owner = agree(&nodes, "RollingBack", Duration::from_secs(10));
    (s, nodes, owner)
}

/// [`wait_agreement`] of all `nodes`.
fn agree(nodes: &[Node], phase: &str, within: Duration) -> usize {
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_agreement(&refs, phase, within)
}

fn wait_agreement(nodes: &[&Node], phase: &str, within: Duration) -> usize {
    wait_for(
        within,
        &format!("every node to show {phase} and the same owner"),
        || {
            let views: Vec<(String, Option<String>, bool)> = nodes
                .iter()
                .map(|n| {
                    let (owner, standby) = n.cluster();
                    (n.phase(), owner, standby)
                })
                .collect();
            let owner = views[0].1.clone()?;
            let agree = views
                .iter()
                .all(|(p, o, _)| p == phase && o.as_deref() == Some(owner.as_str()));
            if !agree {
                return None;
            }
            let owners: Vec<usize> = nodes
                .iter()
                .enumerate()
                .filter(|(i, n)| !views[*i].2 && n.name == owner)
                .map(|(i, _)| i)
                .collect();
            let standbys = views.iter().filter(|v| v.2).count();
            (owners.len() == 1 && standbys == nodes.len() - 1).then(|| owners[0])
        },
    )
}

/// A lease as `{lease}` and `ROLLBACKD_LEASE` give it: both the same,
/// non-empty hex.
fn assert_fenced_line(line: &str) {
    let parts: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        parts.len(),
        2,
        "line {line:?}: want `{{lease}} $ROLLBACKD_LEASE`"
    );
    assert_eq!(parts[0], parts[1], "{{lease}} and ROLLBACKD_LEASE differ");
    assert!(
        i64::from_str_radix(parts[0], 16).is_ok(),
        "lease {:?} is not hex",
        parts[0]
    );
}

fn entry_time(e: &serde_json::Value) -> DateTime<Utc> {
    e["at"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("journal entry without `at`: {e}"))
}

/// Kill the process group a killed daemon's step left running.
fn kill_orphan_step(dir: &Path) {
    if let Some(pid) = std::fs::read_to_string(dir.join("step.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[test]
fn two_nodes_one_rollback_and_the_same_status() {
    let s = Setup::new();
    let mut nodes = s.two_started(PLAN, "");
    rollbackd::demo::switch_release(&s.dir, "v2").unwrap();

    let owner = agree(&nodes, "RolledBack", ROLLBACK_WITHIN);
    let standby = 1 - owner;
    assert_eq!(live(&s.dir), "v1");
    // A few more polls: nobody runs it again.
    std::thread::sleep(TTL);
    let lines = s.lines();
    assert_eq!(lines.len(), 1, "exactly one rollback ran: {lines:?}");
    assert_fenced_line(&lines[0]);
    assert_eq!(nodes[owner].executions(), 1, "the owner ran the plan");
    assert_eq!(nodes[standby].executions(), 0, "the standby ran nothing");
    // The standby mirrors the owner's state without observing its own
    // version again at every poll (v1, v2, v1: three observations).
    let observed = nodes[standby].steps_of("version_observed").len();
    assert!(
        observed <= 3,
        "the standby observed the version {observed} times"
    );
    assert!(
        nodes[owner].log().contains("took the target's lock"),
        "{}",
        nodes[owner].log()
    );
    // Both show the same incident; only the owner mailed about it.
    let id = |n: &Node| n.status()["state"]["phase"]["incident"]["id"].clone();
    assert_eq!(id(&nodes[owner]), id(&nodes[standby]));
    assert_eq!(nodes[owner].mails_of("rolled_back").len(), 1);
    assert!(nodes[standby].mails_of("rolled_back").is_empty());
    for n in nodes.iter_mut() {
        n.stop();
    }
}

#[test]
fn owner_killed_mid_plan_the_standby_verifies_without_running_it_again() {
    // The plan is in its sleep: the line is written, the release switched.
    let (s, mut nodes, owner) = mid_plan(SLOW_PLAN, "the plan to reach its sleep");
    let survivor = 1 - owner;
    let killed_at = Utc::now();
    nodes[owner].kill9();
    // The host died with it: so did the step.
    kill_orphan_step(&s.dir);

    let recovered = wait_for(
        Duration::from_secs(15),
        "the survivor to take the incident over",
        || nodes[survivor].steps_of("recovered").into_iter().next(),
    );
    assert_eq!(recovered["from"], "RollingBack", "{recovered}");
    assert_eq!(recovered["to"], "Verifying", "{recovered}");
    let took = (entry_time(&recovered) - killed_at)
        .to_std()
        .unwrap_or_default();
    assert!(
        took <= TTL + POLL + Duration::from_secs(1),
        "takeover took {took:?} (lease_ttl {TTL:?} + one poll {POLL:?}, + 1s slack for a loaded machine)"
    );
    wait_for(ROLLBACK_WITHIN, "the survivor to verify", || {
        (nodes[survivor].phase() == "RolledBack").then_some(())
    });
    assert_eq!(
        nodes[survivor].cluster(),
        (Some(nodes[survivor].name.clone()), false),
        "the survivor owns the target"
    );
    let interrupted = nodes[survivor].mails_of("interrupted");
    assert_eq!(interrupted.len(), 1, "one ROLLBACK INTERRUPTED mail");
    assert!(interrupted[0].contains("ROLLBACK INTERRUPTED"));
    assert_eq!(nodes[survivor].mails_of("rolled_back").len(), 1);
    assert_eq!(
        nodes[survivor].executions(),
        0,
        "the survivor never ran the plan"
    );
    std::thread::sleep(TTL);
    let lines = s.lines();
    assert_eq!(lines.len(), 1, "the plan ran once: {lines:?}");
    assert_fenced_line(&lines[0]);
    nodes[survivor].stop();
}

#[test]
fn approval_sent_to_the_standby_acts_once_on_the_owner() {
    let s = Setup::new();
    let confirm = "confirm = \"required\"\nconfirm_timeout = \"5m\"\n";
    let mut nodes = s.two_started(PLAN, confirm);
    rollbackd::demo::switch_release(&s.dir, "v2").unwrap();

    let owner = agree(&nodes, "AwaitingConfirmation", ROLLBACK_WITHIN);
    let standby = 1 - owner;
    let id = nodes[owner].status()["state"]["phase"]["incident"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        nodes[standby].status()["state"]["phase"]["incident"]["id"],
        id.as_str(),
        "the standby shows the owner's incident"
    );
    assert!(s.lines().is_empty(), "nothing ran before the approval");

    // The CLI against the standby, then the same approval again over HTTP.
    let out = run_rollbackd(&nodes[standby].config, &["approve", &id]);
    assert!(
        out.status.success(),
        "approve via the standby: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, body) = http(
        "POST",
        &format!(
            "http://127.0.0.1:{}/v1/incidents/{id}/approve",
            nodes[standby].api
        ),
        None,
        Some(r#"{"by": "second-approver"}"#),
    );
    assert!(code == 200 || code == 409, "{code} {body}");

    agree(&nodes, "RolledBack", ROLLBACK_WITHIN);
    std::thread::sleep(TTL);
    let lines = s.lines();
    assert_eq!(lines.len(), 1, "the approval acted once: {lines:?}");
    assert_eq!(nodes[owner].executions(), 1, "the owner ran the plan");
    assert_eq!(nodes[standby].executions(), 0, "the standby ran nothing");
    assert_eq!(
        nodes[owner].steps_of("approve").len(),
        1,
        "the owner journaled the approval once"
    );
    assert!(
        nodes[owner]
            .log()
            .contains("command forwarded from another node"),
        "{}",
        nodes[owner].log()
    );
    for n in nodes.iter_mut() {
        n.stop();
    }
}

#[test]
fn etcd_down_nobody_acts_then_one_rollback_when_it_is_back() {
    let mut s = Setup::new();
    let mut nodes = s.two_started(PLAN, "");

    s.etcd.stop();
    for n in &nodes {
        wait_for(
            Duration::from_secs(15),
            &format!("node {}'s coordination-lost mail", n.name),
            || (!n.mails_of("server_unreachable").is_empty()).then_some(()),
        );
    }
    rollbackd::demo::switch_release(&s.dir, "v2").unwrap();
    // The breach holds its `for` many times over: nobody acts.
    std::thread::sleep(Duration::from_secs(4));
    assert!(s.lines().is_empty(), "no node may act without etcd");
    for n in nodes.iter_mut() {
        n.assert_alive();
        assert_eq!(n.phase(), "Watching", "node {}", n.name);
        assert_eq!(n.executions(), 0, "node {}", n.name);
        let lost = n.mails_of("server_unreachable");
        assert_eq!(lost.len(), 1, "node {}: lost is told once", n.name);
        assert!(
            lost[0].contains("cluster coordination lost")
                && lost[0].contains("X-Rollbackd-Target: etcd (cluster coordination)"),
            "{}",
            lost[0]
        );
    }

    s.etcd.start_again();
    agree(&nodes, "RolledBack", ROLLBACK_WITHIN);
    std::thread::sleep(TTL);
    let lines = s.lines();
    assert_eq!(lines.len(), 1, "the breach is acted on once: {lines:?}");
    let executions: usize = nodes.iter().map(Node::executions).sum();
    assert_eq!(executions, 1, "no backlog of actions");
    for n in &nodes {
        assert_eq!(n.mails_of("server_unreachable").len(), 1, "node {}", n.name);
        let restored = n.mails_of("server_reachable");
        assert_eq!(restored.len(), 1, "node {}: restored is told once", n.name);
        assert!(restored[0].contains("cluster coordination restored"));
    }
    for n in nodes.iter_mut() {
        n.stop();
    }
}

/// Three nodes, each reaching etcd through its own [`Proxy`] (so that
/// any of them can be cut off), on a runtime that lives as long as they.
struct Three {
    nodes: Vec<Node>,
    proxies: Vec<Proxy>,
    _rt: tokio::runtime::Runtime,
}

fn three(s: &Setup, plan: &str) -> Three {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let proxies: Vec<Proxy> = (0..3)
        .map(|_| rt.block_on(Proxy::start(s.etcd.client_port)))
        .collect();
    let mut nodes: Vec<Node> = proxies
        .iter()
        .enumerate()
        .map(|(i, p)| s.node(&format!("n{}", i + 1), &p.url(), plan, ""))
        .collect();
    start_all(&mut nodes);
    Three {
        nodes,
        proxies,
        _rt: rt,
    }
}

/// The plan with a pause between the line and the switch, so that every
/// node sees the breach for a while.
const PAUSED_PLAN: &str = r#"echo "$1 $ROLLBACKD_LEASE" >> SHARED && sleep 2 && ln -sfn DIR/releases/"$2" DIR/current.rollback && mv -T DIR/current.rollback DIR/current"#;

#[test]
fn partitioned_node_of_three_does_not_act() {
    let s = Setup::new();
    let mut t = three(&s, PAUSED_PLAN);
    t.proxies[2].partition();
    wait_for(
        Duration::from_secs(15),
        "the partitioned node to notice",
        || (!t.nodes[2].mails_of("server_unreachable").is_empty()).then_some(()),
    );
    rollbackd::demo::switch_release(&s.dir, "v2").unwrap();
    let pair: Vec<&Node> = t.nodes[..2].iter().collect();
    let owner = wait_agreement(&pair, "RolledBack", ROLLBACK_WITHIN);
    std::thread::sleep(TTL);
    let lines = s.lines();
    assert_eq!(lines.len(), 1, "one rollback: {lines:?}");
    assert_eq!(t.nodes[owner].executions(), 1);
    assert_eq!(
        t.nodes[2].executions(),
        0,
        "the partitioned node did not act"
    );
    // It saw the breach too, and held back for want of etcd.
    let log = t.nodes[2].log();
    assert!(
        log.contains("not acting: cluster coordination lost"),
        "the partitioned node must have seen the breach: {log}"
    );
    t.nodes[2].assert_alive();

    // Healed, it gets a lease again, comes back as a standby and shows
    // the owner's outcome.
    t.proxies[2].heal();
    wait_for(
        Duration::from_secs(15),
        "the healed node's etcd session",
        || t.nodes[2].etcd_up().then_some(()),
    );
    let all: Vec<&Node> = t.nodes.iter().collect();
    assert_eq!(
        wait_agreement(&all, "RolledBack", Duration::from_secs(20)),
        owner
    );
    assert_eq!(t.nodes[2].executions(), 0);
    assert_eq!(t.nodes[2].mails_of("server_reachable").len(), 1);
    assert_eq!(s.lines().len(), 1);
    for n in t.nodes.iter_mut() {
        n.stop();
    }
}

#[test]
fn owner_cut_off_mid_plan_another_node_takes_over_and_the_old_owner_stands_by() {
    let s = Setup::new();
    let mut t = three(&s, SLOW_PLAN.replace("sleep 30", "sleep 5").as_str());
    s.deploy_v2_until_the_step("the plan to reach its sleep");
    let all: Vec<&Node> = t.nodes.iter().collect();
    let owner = wait_agreement(&all, "RollingBack", Duration::from_secs(10));
    let cut_at = Utc::now();
    t.proxies[owner].partition();

    // Another node takes over once the owner's lease ran out in etcd.
    let others: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    let (next, recovered) = wait_for(
        Duration::from_secs(15),
        "another node to take the incident over",
        || {
            others.iter().find_map(|i| {
                t.nodes[*i]
                    .steps_of("recovered")
                    .into_iter()
                    .next()
                    .map(|e| (*i, e))
            })
        },
    );
    let took = (entry_time(&recovered) - cut_at)
        .to_std()
        .unwrap_or_default();
    assert!(
        took <= TTL + POLL + Duration::from_secs(1),
        "takeover took {took:?}"
    );
    wait_for(ROLLBACK_WITHIN, "the new owner to verify", || {
        (t.nodes[next].phase() == "RolledBack").then_some(())
    });
    // The old owner's step ends (its sleep) while it is cut off: its
    // result is not adopted, it runs nothing more.
    std::thread::sleep(Duration::from_secs(5));
    t.proxies[owner].heal();
    wait_for(
        Duration::from_secs(15),
        "the old owner's etcd session",
        || t.nodes[owner].etcd_up().then_some(()),
    );
    let all: Vec<&Node> = t.nodes.iter().collect();
    assert_eq!(
        wait_agreement(&all, "RolledBack", Duration::from_secs(20)),
        next,
        "everyone agrees on the new owner"
    );
    let lines = s.lines();
    assert_eq!(lines.len(), 1, "the plan ran once: {lines:?}");
    let executions: usize = t.nodes.iter().map(Node::executions).sum();
    assert_eq!(executions, 1);
    assert!(
        t.nodes[owner].mails_of("rolled_back").is_empty(),
        "the old owner reports nothing it no longer owns"
    );
    for n in t.nodes.iter_mut() {
        n.stop();
    }
}

/// Two steps: the line and the switch, then a step that outlasts
/// `lease_ttl`, then one more line.
const TWO_STEP_PLAN: &str = r#"echo "$1 $ROLLBACKD_LEASE" >> SHARED && ln -sfn DIR/releases/"$2" DIR/current.rollback && mv -T DIR/current.rollback DIR/current && echo $$ > DIR/step.pid && sleep 3', 'sh', '{lease}', '{to_version}'], ['sh', '-c', 'echo "second $1" >> SHARED"#;

#[test]
fn owner_stopped_mid_plan_finishes_it_under_its_lease_then_hands_over() {
    let (s, mut nodes, owner) = mid_plan(TWO_STEP_PLAN, "the plan's first step");
    let other = 1 - owner;
    // SIGTERM: the running step ends (3 s, longer than lease_ttl), the
    // second step still runs under the same lease, the outcome is
    // journaled and published, and the lease is revoked at exit.
    nodes[owner].stop();
    let lines = s.lines();
    assert_eq!(lines.len(), 2, "both steps ran, once: {lines:?}");
    assert_fenced_line(&lines[0]);
    assert_eq!(
        lines[1],
        format!("second {}", lines[0].split_whitespace().next().unwrap()),
        "the second step ran under the same lease"
    );
    assert!(
        nodes[owner]
            .steps_of("exec_finished")
            .iter()
            .any(|e| e["to"] == "Verifying"),
        "the stopping owner journaled the plan's success"
    );
    assert!(nodes[owner].log().contains("etcd lease revoked"));
    // The other node takes the verification over at once (the lease was
    // revoked), without running anything.
    wait_for(
        Duration::from_secs(10),
        "the other node to finish the incident",
        || (nodes[other].phase() == "RolledBack").then_some(()),
    );
    assert_eq!(nodes[other].executions(), 0);
    assert_eq!(s.lines().len(), 2);
    nodes[other].stop();
}

/// Two nodes on `s`'s etcd: they agree on one owner, and one rollback runs.
fn two_nodes_agree_on_one_owner_and_one_rollback(s: &Setup) {
    let mut nodes = s.two_started(PLAN, "");
    rollbackd::demo::switch_release(&s.dir, "v2").unwrap();
    let owner = agree(&nodes, "RolledBack", ROLLBACK_WITHIN);
    assert_eq!(live(&s.dir), "v1");
    std::thread::sleep(TTL);
    let lines = s.lines();
    assert_eq!(lines.len(), 1, "exactly one rollback ran: {lines:?}");
    assert_fenced_line(&lines[0]);
    assert_eq!(nodes[owner].executions(), 1, "the owner ran the plan");
    assert_eq!(nodes[1 - owner].executions(), 0, "the standby ran nothing");
    for n in nodes.iter_mut() {
        n.stop();
    }
}

#[test]
fn two_nodes_on_an_etcd_that_requires_tls_client_certificates() {
    let s = Setup::secure(true, None);
    assert!(s.etcd.url().starts_with("https://"));
    two_nodes_agree_on_one_owner_and_one_rollback(&s);
}

#[test]
fn two_nodes_on_an_etcd_with_authentication() {
    let s = Setup::secure(false, Some("pw-for-root"));
    two_nodes_agree_on_one_owner_and_one_rollback(&s);
}

#[test]
fn two_nodes_on_an_etcd_with_tls_client_certificates_and_authentication() {
    let s = Setup::secure(true, Some("pw-for-root"));
    two_nodes_agree_on_one_owner_and_one_rollback(&s);
}

/// `hold` (the default) and `act_alone` nodes that etcd refuses: the
/// refusal is logged naming the endpoint and what to check; only the
/// `act_alone` node rolls back.
fn refused_node_holds_unless_act_alone(s: &mut Setup, refused: &str, wrong: &str, hint: &str) {
    let url = s.etcd.url();
    let base = std::mem::replace(&mut s.cluster_extra, wrong.to_string());
    let mut hold = s.node("hold", &url, PLAN, "");
    s.cluster_extra = format!("{wrong}on_etcd_down = \"act_alone\"\n");
    let mut alone = s.node("alone", &url, PLAN, "");
    s.cluster_extra = base;
    hold.start();
    let said = wait_for(
        Duration::from_secs(20),
        "the refusal in the log, naming the endpoint",
        || {
            let log = hold.log();
            log.lines()
                .find(|l| l.contains("WARN") && l.contains(&url) && l.contains(refused))
                .map(str::to_string)
        },
    );
    assert!(said.contains(hint), "{said}");
    wait_for(Duration::from_secs(20), "hold to see v1", || {
        hold.steps_of("version_observed")
            .iter()
            .any(|e| e["event"]["version"] == "v1")
            .then_some(())
    });
    rollbackd::demo::switch_release(&s.dir, "v2").unwrap();
    // `for` is 1s at a 300ms poll: a node that acted would have by now.
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        s.lines().is_empty(),
        "a refused node acted: {:?}",
        s.lines()
    );
    assert_eq!(hold.executions(), 0);
    hold.stop();

    rollbackd::demo::switch_release(&s.dir, "v1").unwrap();
    alone.start();
    wait_for(Duration::from_secs(20), "alone to see v1", || {
        alone
            .steps_of("version_observed")
            .iter()
            .any(|e| e["event"]["version"] == "v1")
            .then_some(())
    });
    rollbackd::demo::switch_release(&s.dir, "v2").unwrap();
    wait_for(ROLLBACK_WITHIN, "the act_alone node to roll back", || {
        (s.lines().len() == 1 && live(&s.dir) == "v1").then_some(())
    });
    assert_eq!(alone.executions(), 1);
    alone.stop();
}

#[test]
fn a_client_certificate_etcd_does_not_trust_is_named_and_the_node_holds() {
    let mut s = Setup::secure(true, None);
    let t = s.tls.clone().unwrap();
    let wrong = t.cluster_keys(&t.stranger_cert, &t.stranger_key);
    refused_node_holds_unless_act_alone(&mut s, "TLS", wrong.as_str(), "cluster.cert_file");
}

#[test]
fn a_wrong_etcd_password_is_named_and_the_node_holds() {
    let mut s = Setup::secure(false, Some("pw-for-root"));
    let file = s.dir.join("wrong-password");
    std::fs::write(&file, "not-the-password\n").unwrap();
    let wrong = format!(
        "username = \"root\"\npassword_file = \"{}\"\n",
        file.display()
    );
    refused_node_holds_unless_act_alone(&mut s, "authentication", &wrong, "cluster.password_file");
}
