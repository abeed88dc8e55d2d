//! Processes that outlive their rollback step: found, killed and reported.
//!
//! Killing a step's process group is not enough: `setsid cmd &` or a
//! double fork leaves the group (and, without a subreaper, the daemon's
//! process tree). Every step therefore runs with a marker in its
//! environment (`ROLLBACKD_STEP=<daemon pid>-<n>`), which its descendants
//! inherit; the daemon is a child subreaper ([`crate::hostenv`]), so escaped
//! descendants are reparented to it. After a step, [`Tracked::leftovers`]
//! finds every live process still in the step's group, in a session the
//! step created, or carrying its marker.
//!
//! While a plan runs, `state_dir/running/INCIDENT.pid` names its current
//! step (pid, group, argv, start). The file is removed when the step ends;
//! one found at start ([`orphans_from_previous_run`]) is a step the
//! previous daemon left behind when it died: it is killed with its group
//! and marked descendants, and reported.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// The environment variable that marks a step's processes.
pub const MARKER_VAR: &str = "ROLLBACKD_STEP";

/// How long leftovers get between SIGTERM and SIGKILL.
const LEFTOVER_GRACE: Duration = Duration::from_millis(500);

/// Where a plan's steps leave their pid file: set by the daemon around a
/// rollback plan ([`RunContext::scope`]); without it (drills, tests) no
/// pid file is written.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// The daemon's `state_dir`.
    pub state_dir: PathBuf,
    /// The incident the plan runs for (names the pid file).
    pub incident: String,
    /// Asked before each step starts (`[cluster]`: is the lease still
    /// held?); a refusal is the step's error and the step is not started.
    pub fence: Option<Fence>,
    /// Added to every step's environment (`ROLLBACKD_LEASE`).
    pub env: Vec<(String, String)>,
}

/// A check before each step of a plan: `Err` says why it may not start.
#[derive(Clone)]
pub struct Fence(pub std::sync::Arc<dyn Fn() -> Result<(), FenceClosed> + Send + Sync>);

/// Why a fenced step may not start (e.g. the node lost its etcd lease).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FenceClosed(pub String);

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fence")
    }
}

tokio::task_local! {
    static RUN_CONTEXT: RunContext;
}

impl RunContext {
    /// Run `fut` (a plan) with this context: its steps write and remove
    /// `state_dir/running/INCIDENT.pid`.
    pub async fn scope<F: std::future::Future>(self, fut: F) -> F::Output {
        RUN_CONTEXT.scope(self, fut).await
    }

    fn current() -> Option<RunContext> {
        RUN_CONTEXT.try_with(Clone::clone).ok()
    }

    /// Whether the running plan's fence lets a step start now.
    pub fn may_start() -> Result<(), FenceClosed> {
        match RUN_CONTEXT.try_with(|c| c.fence.clone()) {
            Ok(Some(fence)) => (fence.0)(),
            _ => Ok(()),
        }
    }

    /// The environment the running plan adds to its steps.
    pub fn extra_env() -> Vec<(String, String)> {
        RUN_CONTEXT.try_with(|c| c.env.clone()).unwrap_or_default()
    }
}

/// Pids of step leaders spawned and not yet reaped by tokio: never reaped
/// here. Held while spawning, so a leader that exits at once is not
/// mistaken for an adopted orphan.
static LEADERS: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// Lock [`LEADERS`] (poison is harmless: a set of pids).
pub(crate) fn leaders() -> MutexGuard<'static, Option<HashSet<i32>>> {
    LEADERS.lock().unwrap_or_else(|p| p.into_inner())
}

/// A new marker value for one step.
pub(crate) fn new_marker() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `state_dir/running/INCIDENT.pid`: what a running step is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PidFile {
    /// The step's leader.
    pub pid: i32,
    /// Its process group (the same id: steps lead their own group).
    pub pgid: i32,
    /// The step's argv.
    pub argv: Vec<String>,
    /// When it started.
    pub started: chrono::DateTime<chrono::Utc>,
    /// The leader's start time in clock ticks after boot (`/proc/PID/stat`
    /// field 22), so a reused pid is not mistaken for the step.
    pub start_ticks: u64,
    /// The `ROLLBACKD_STEP` value of its processes.
    pub marker: String,
    /// The daemon that ran it.
    pub daemon_pid: u32,
    /// `/proc/sys/kernel/random/boot_id` then: after a reboot nothing of the
    /// step can still run, and its pids and ticks mean nothing.
    #[serde(default)]
    pub boot_id: String,
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// One step being watched: its pid file (when there is a run context) and
/// what identifies its processes.
#[derive(Debug)]
pub(crate) struct Tracked {
    pub leader: i32,
    pub marker: String,
    pid_file: Option<PathBuf>,
}

impl Tracked {
    /// Start watching a just-spawned step; writes the pid file when the plan
    /// runs in a [`RunContext`] (a failure to write it is logged).
    pub fn start(leader: i32, argv: &[String], marker: String) -> Tracked {
        let pid_file = RunContext::current().and_then(|ctx| {
            let dir = ctx.state_dir.join("running");
            let path = dir.join(format!("{}.pid", file_safe(&ctx.incident)));
            let record = PidFile {
                pid: leader,
                pgid: leader,
                argv: argv.to_vec(),
                started: chrono::Utc::now(),
                start_ticks: read_stat(leader).map_or(0, |p| p.start),
                marker: marker.clone(),
                daemon_pid: std::process::id(),
                boot_id: boot_id(),
            };
            let written = std::fs::create_dir_all(&dir).and_then(|()| {
                let text = serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?;
                std::fs::write(&path, text)
            });
            match written {
                Ok(()) => Some(path),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot write the running step's pid file");
                    None
                }
            }
        });
        Tracked {
            leader,
            marker,
            pid_file,
        }
    }

    /// Whether the step belongs to a rollback plan (a [`RunContext`] was
    /// set): only then is a successful step searched for what it left
    /// running, so a version command every poll costs no `/proc` scan.
    pub fn in_plan(&self) -> bool {
        self.pid_file.is_some()
    }

    /// Live processes left by the step: in its group, in a session it
    /// created, or carrying its marker. The leader itself is excluded
    /// (it is reaped by the caller).
    pub fn leftovers(&self) -> Vec<Proc> {
        find(self.leader, &self.marker)
    }

    /// The step is over: remove its pid file.
    pub fn finish(&mut self) {
        if let Some(path) = self.pid_file.take() {
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove the step's pid file");
                }
            }
        }
    }
}

/// Replace what cannot be in a file name.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A process as `/proc` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Proc {
    /// Its pid.
    pub pid: i32,
    /// Its parent.
    pub ppid: i32,
    /// Its process group.
    pub pgrp: i32,
    /// Its session.
    pub session: i32,
    /// `R`, `S`, `Z`, ...
    pub state: char,
    /// Start time in clock ticks after boot.
    pub start: u64,
}

impl Proc {
    /// `pid 123 (sleep 3015)`.
    pub fn describe(&self) -> String {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.pid))
            .map(|b| {
                let text: Vec<String> = b
                    .split(|c| *c == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                text.join(" ")
            })
            .unwrap_or_default();
        let mut cmd: String = cmdline.chars().take(120).collect();
        if cmd.is_empty() {
            cmd = "?".into();
        }
        format!("pid {} ({cmd})", self.pid)
    }
}

/// Parse `/proc/PID/stat` (`pid (comm) S ppid pgrp session ... starttime`);
/// `comm` may hold spaces and parentheses, so fields are read after the
/// last `)`.
pub(crate) fn parse_proc_stat(text: &str) -> Option<Proc> {
    let pid = text.split_whitespace().next()?.parse().ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Proc {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        session: fields.get(3)?.parse().ok()?,
        // Field 22 of stat; `fields` starts at field 3.
        start: fields.get(19)?.parse().ok()?,
    })
}

fn read_stat(pid: i32) -> Option<Proc> {
    parse_proc_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process in `/proc`.
fn all_procs() -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_stat)
        .collect()
}

/// Whether the process's environment holds `ROLLBACKD_STEP=marker`.
fn has_marker(pid: i32, marker: &str) -> bool {
    let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let want = format!("{MARKER_VAR}={marker}");
    env.split(|c| *c == 0).any(|kv| kv == want.as_bytes())
}

/// Live processes of a step (see [`Tracked::leftovers`]).
fn find(leader: i32, marker: &str) -> Vec<Proc> {
    let me = std::process::id() as i32;
    let procs = all_procs();
    let mut found: Vec<Proc> = Vec::new();
    let mut ids: HashSet<i32> = HashSet::new();
    // Direct: group, session, marker.
    for p in &procs {
        if p.pid == me || p.pid == leader || p.state == 'Z' || p.state == 'X' {
            continue;
        }
        if p.pgrp == leader || p.session == leader || has_marker(p.pid, marker) {
            ids.insert(p.pid);
            found.push(p.clone());
        }
    }
    // Their descendants (a marked process may have cleared its environment
    // for its own children).
    loop {
        let more: Vec<Proc> = procs
            .iter()
            .filter(|p| p.state != 'Z' && p.pid != me && !ids.contains(&p.pid))
            .filter(|p| ids.contains(&p.ppid) || p.ppid == leader)
            .cloned()
            .collect();
        if more.is_empty() {
            break;
        }
        for p in more {
            ids.insert(p.pid);
            found.push(p);
        }
    }
    // Once they exit they are our zombies (we are their subreaper): only
    // these are ever reaped by [`reap_adopted`].
    adopted().extend(found.iter().map(|p| p.pid));
    found
}

/// Kill `procs` (SIGTERM to each and to the groups they lead, SIGKILL after
/// a short grace), reap those reparented to the daemon, and say for each
/// whether it died: `killed pid 123 (sleep 3015)` or `survived pid ...`.
pub(crate) async fn kill_all(procs: &[Proc]) -> Vec<String> {
    let described: Vec<(Proc, String)> = procs.iter().map(|p| (p.clone(), p.describe())).collect();
    for (p, _) in &described {
        signal(p, Signal::SIGTERM);
    }
    let end = tokio::time::Instant::now() + LEFTOVER_GRACE;
    while tokio::time::Instant::now() < end && described.iter().any(|(p, _)| alive(p)) {
        reap_adopted();
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut escalated = false;
    for (p, _) in &described {
        if alive(p) {
            escalated = true;
            signal(p, Signal::SIGKILL);
        }
    }
    if escalated {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reap_adopted();
    described
        .into_iter()
        .map(|(p, what)| {
            if alive(&p) {
                format!("survived {what}")
            } else {
                format!("killed {what}")
            }
        })
        .collect()
}

/// The synchronous [`kill_all`] of a drop guard: SIGKILL at once.
pub(crate) fn kill_now(procs: &[Proc]) {
    for p in procs {
        signal(p, Signal::SIGKILL);
    }
    reap_adopted();
}

fn signal(p: &Proc, sig: Signal) {
    let _ = kill(Pid::from_raw(p.pid), sig);
    if p.pgrp == p.pid {
        let _ = killpg(Pid::from_raw(p.pid), sig);
    }
}

/// The same process (same start time) still runs, and is not a zombie.
fn alive(p: &Proc) -> bool {
    matches!(read_stat(p.pid), Some(now) if now.start == p.start && now.state != 'Z' && now.state != 'X')
}

/// Pids found as a step's leftovers (escaped its group, reparented to the
/// daemon). Only these are reaped here: any other child of the process
/// (tokio's, `std::process`'s, a test harness's) is waited for by whoever
/// spawned it, and reaping it would steal its exit status.
static ADOPTED: Mutex<std::collections::BTreeSet<i32>> =
    Mutex::new(std::collections::BTreeSet::new());

fn adopted() -> MutexGuard<'static, std::collections::BTreeSet<i32>> {
    ADOPTED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reap the step leftovers that have exited since (zombies reparented to
/// the daemon as a subreaper), and forget those that are gone. Cheap;
/// called after every step and by the daemon's housekeeping.
pub fn reap_adopted() {
    let me = std::process::id() as i32;
    let leaders = leaders();
    let mut adopted = adopted();
    adopted.retain(|pid| {
        if leaders.as_ref().is_some_and(|l| l.contains(pid)) {
            return true;
        }
        match read_stat(*pid) {
            Some(p) if p.ppid == me && p.state == 'Z' => {
                let _ = waitpid(Pid::from_raw(*pid), Some(WaitPidFlag::WNOHANG));
                false
            }
            Some(p) => p.ppid == me || p.state != 'Z',
            None => false,
        }
    });
}

/// A step the previous daemon left running when it died (found through its
/// pid file at start).
#[derive(Debug, Clone, PartialEq)]
pub struct Orphan {
    /// The incident the step ran for (the pid file's name).
    pub incident: String,
    /// The pid file's content.
    pub step: PidFile,
    /// What was found and done: `killed pid ...`, `survived pid ...`;
    /// empty when nothing of it still ran.
    pub processes: Vec<String>,
}

impl Orphan {
    /// One line for the log and the incident.
    pub fn describe(&self) -> String {
        let argv = crate::util::display_argv(&self.step.argv);
        if self.processes.is_empty() {
            format!(
                "step `{argv}` (pid {}) of incident {} was running when the previous rollbackd died; it has ended since",
                self.step.pid, self.incident
            )
        } else {
            format!(
                "step `{argv}` (pid {}) of incident {} was still running from the previous rollbackd: {}",
                self.step.pid,
                self.incident,
                self.processes.join(", ")
            )
        }
    }
}

/// Steps a previous daemon left running: read `state_dir/running/*.pid`,
/// kill what still runs of each (its leader if its start time matches, its
/// group, its marked descendants), remove the files, and return what was
/// found. Each is logged at warn. Call at start, with the state lock held.
pub async fn orphans_from_previous_run(state_dir: &Path) -> Vec<Orphan> {
    let dir = state_dir.join("running");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut orphans = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("pid") {
            continue;
        }
        let incident = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let step: PidFile = match std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            Some(s) => s,
            None => {
                tracing::warn!(path = %path.display(), "unreadable pid file of a previous run's step; removed");
                let _ = std::fs::remove_file(&path);
                continue;
            }
        };
        if step.boot_id != boot_id() {
            tracing::warn!(%incident, pid = step.pid, "pid file of a step from before the last reboot; removed");
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let mut procs = find(step.pid, &step.marker);
        if let Some(leader) = read_stat(step.pid) {
            if leader.start == step.start_ticks && leader.state != 'Z' {
                procs.insert(0, leader);
            }
        }
        // A reused pgid/session id is not the step: keep only processes
        // that started after it (or carry its marker).
        procs.retain(|p| p.start >= step.start_ticks || has_marker(p.pid, &step.marker));
        let processes = if procs.is_empty() {
            Vec::new()
        } else {
            kill_all(&procs).await
        };
        let _ = std::fs::remove_file(&path);
        let orphan = Orphan {
            incident,
            step,
            processes,
        };
        tracing::warn!(incident = %orphan.incident, "{}", orphan.describe());
        orphans.push(orphan);
    }
    orphans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_proc_stat_reads_the_fields() {
        let line =
            "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
        let p = parse_proc_stat(line).unwrap();
        assert_eq!(
            (p.pid, p.state, p.ppid, p.pgrp, p.session, p.start),
            (4242, 'S', 1, 4242, 4242, 987654)
        );
        assert_eq!(parse_proc_stat("1 (x) R"), None);
    }

    #[test]
    fn file_safe_names() {
        assert_eq!(file_safe("2025-06-01-web.1"), "2025-06-01-web.1");
        assert_eq!(file_safe("../x y"), ".._x_y");
    }
}
