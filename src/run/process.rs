//! Running one argv step: no shell, its own process group, stdout/stderr
//! captured with only a bounded tail kept, killed with its whole process
//! group (SIGTERM, then SIGKILL after a grace period) at the deadline.
//! What escapes the group is found and handled by [`super::escaped`]: after
//! a failed or killed step it is killed and listed in the step's record.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::escaped::{self, Tracked};
pub use super::escaped::{
    orphans_from_previous_run, reap_adopted, Fence, FenceClosed, Orphan, RunContext,
};
use super::template::Vars;
use crate::report::StepReport;
use crate::util::fmt_duration;

/// Bytes kept of a step's stdout and, separately, of its stderr: the tail,
/// including any truncation note. A chatty build step must not grow the
/// journal or an email without bound.
pub const OUTPUT_LIMIT: usize = 8 * 1024;

/// Between SIGTERM and SIGKILL to a timed-out step's process group: long
/// enough for a well-behaved program to clean up, short enough not to stall
/// the rollback.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// How long output is still read once the step is over. A background
/// grandchild (a daemon started by a restart step) may keep the pipes open
/// forever; waiting for EOF would hang the plan.
pub const PIPE_GRACE: Duration = Duration::from_millis(500);

/// How often the process group is polled during [`KILL_GRACE`].
const POLL: Duration = Duration::from_millis(50);

/// How long to wait to reap a SIGKILLed leader before giving up on it (it
/// could be stuck in uninterruptible sleep); `kill_on_drop` remains.
const REAP_LIMIT: Duration = Duration::from_secs(5);

/// Re-exported for `notify/` (email and record render argv with it).
pub use crate::util::display_argv;

/// Where steps run unless they say otherwise: the plan's `cwd` and `env`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    /// Working directory (`None`: the daemon's).
    pub cwd: Option<PathBuf>,
    /// Added to the inherited environment.
    pub env: BTreeMap<String, String>,
}

impl Context {
    /// A step's working directory and environment: its own (`cwd`,
    /// `env`) over the plan's.
    pub fn for_step(
        &self,
        cwd: Option<&std::path::Path>,
        env: &BTreeMap<String, String>,
    ) -> (Option<PathBuf>, BTreeMap<String, String>) {
        let cwd = cwd.map(PathBuf::from).or_else(|| self.cwd.clone());
        let mut all = self.env.clone();
        all.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
        (cwd, all)
    }
}

/// Run one already-substituted argv until it exits or `deadline` passes.
pub async fn run_step(argv: &[String], deadline: Instant) -> StepReport {
    run_step_in(argv, deadline, "plan deadline", None).await
}

/// [`run_step`] with the name of the limit `deadline` stands for (`plan
/// deadline`, `step timeout`), shown when it is hit, and a working
/// directory (`None`: the daemon's).
pub async fn run_step_in(
    argv: &[String],
    deadline: Instant,
    limit: &str,
    cwd: Option<&std::path::Path>,
) -> StepReport {
    run_step_with(
        argv,
        deadline,
        limit,
        cwd,
        &std::collections::BTreeMap::new(),
    )
    .await
}

tokio::task_local! {
    /// The plan's `cwd` and `env` while its steps run ([`with_plan_context`]).
    static PLAN_CONTEXT: Context;
}

/// Run `fut` (a plan, its `after` or `on_failure` steps) with the plan's
/// `cwd` and `env`: every process it starts, the executors' own (restart,
/// build, kubectl, docker, git) included, gets the plan's `env`, and runs in
/// its `cwd` unless it names a directory of its own.
pub async fn with_plan_context<F: std::future::Future>(context: Context, fut: F) -> F::Output {
    PLAN_CONTEXT.scope(context, fut).await
}

tokio::task_local! {
    /// The incident's values as environment variables while a plan, hook,
    /// gate or confirmation runs ([`with_vars`]); an executor that finds a
    /// version itself updates them ([`found_vars`]).
    static STEP_VARS: std::cell::RefCell<Vec<(String, String)>>;
}

/// Run `fut` with `vars` in the environment of every process it starts:
/// `ROLLBACKD_TARGET`, `ROLLBACKD_INCIDENT`, `ROLLBACKD_FROM_VERSION`,
/// `ROLLBACKD_TO_VERSION`, `ROLLBACKD_LEASE` ([`Vars::env`]), after the
/// plan's `env` (which cannot override them) and before a step's own.
pub async fn with_vars<F: std::future::Future>(vars: &Vars, fut: F) -> F::Output {
    STEP_VARS
        .scope(std::cell::RefCell::new(vars.env()), fut)
        .await
}

/// The executor found the versions itself (`git describe`, the live
/// container's tag, the release directory): the steps after this get them.
pub fn found_vars(vars: &Vars) {
    let _ = STEP_VARS.try_with(|v| *v.borrow_mut() = vars.env());
}

/// [`run_step_in`] with variables added to the inherited environment (a
/// step's `env` over its plan's).
pub async fn run_step_with(
    argv: &[String],
    deadline: Instant,
    limit: &str,
    cwd: Option<&std::path::Path>,
    env: &std::collections::BTreeMap<String, String>,
) -> StepReport {
    let started = Instant::now();
    let mut report = StepReport::new(argv.to_vec());
    let Some((program, args)) = argv.split_first() else {
        report.error = Some("empty command: no program to run".into());
        return report;
    };
    if started >= deadline {
        report.error = Some("not started: the plan deadline had already passed".into());
        return report;
    }
    if let Err(why) = escaped::RunContext::may_start() {
        report.error = Some(format!("not started: {why}"));
        return report;
    }

    let plan = PLAN_CONTEXT.try_with(Clone::clone).unwrap_or_default();
    let cwd = cwd.or(plan.cwd.as_deref());
    let marker = escaped::new_marker();
    let mut cmd = command(program, args, cwd, &plan.env, env, &marker);
    let mut child = match spawn(&mut cmd) {
        Ok(child) => child,
        Err(e) => {
            let place = cwd.map_or_else(String::new, |d| format!(" in {}", d.display()));
            report.error = Some(format!("cannot run {program:?}{place}: {e}"));
            report.duration = started.elapsed();
            return report;
        }
    };
    // With `process_group(0)` the child leads a new group whose id is its pid.
    let pgid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    tracing::debug!(argv = %display_argv(argv), pgid = ?pgid, "step started");
    // If this future is dropped mid-step (shutdown), `kill_on_drop` would
    // reach only the leader; the guard takes the whole group down, and
    // whatever escaped it.
    let tracked = pgid.map(|p| Tracked::start(p.as_raw(), argv, marker));
    let mut guard = GroupGuard { pgid, tracked };

    let stdout = Arc::new(Mutex::new(Tail::default()));
    let stderr = Arc::new(Mutex::new(Tail::default()));
    let mut readers = [
        spawn_reader(child.stdout.take(), stdout.clone()),
        spawn_reader(child.stderr.take(), stderr.clone()),
    ];

    let outcome = match tokio::time::timeout_at(deadline, child.wait()).await {
        Ok(status) => Outcome::Exited(status),
        Err(_elapsed) => {
            tracing::warn!(argv = %display_argv(argv), "step timed out; killing its process group");
            Outcome::TimedOut(kill_group(&mut child, pgid).await)
        }
    };
    // The leader is reaped. What is left of the step (in its group, in a
    // session it made, or marked) is killed when the step failed or was
    // killed, and only listed when it succeeded: a restart step may start
    // a service that must keep running.
    let tracked = guard.disarm();
    let succeeded = matches!(&outcome, Outcome::Exited(Ok(status)) if status.success());
    if let Some(tracked) = tracked.filter(|t| !succeeded || t.in_plan()) {
        report.leftovers = leftovers(tracked, succeeded, argv).await;
    }

    let [out_note, err_note] = drain(&mut readers, &outcome).await;
    report.stdout = lock(&stdout).render(out_note.as_deref());
    report.stderr = lock(&stderr).render(err_note.as_deref());
    report.duration = started.elapsed();

    let stderr_hint = last_line(&lock(&stderr).text())
        .map(|line| format!(": {line}"))
        .unwrap_or_default();
    let budget = round_for_display(deadline.saturating_duration_since(started));
    judge(&mut report, outcome, &stderr_hint, budget, limit);
    tracing::debug!(
        argv = %display_argv(argv),
        ok = report.ok,
        duration = ?report.duration,
        error = ?report.error,
        "step finished"
    );
    report
}

/// The command for a step: `program` with `args`, in `cwd`, with the
/// plan's `env`, the incident's variables, the run's own and the step's
/// `env` (each over the ones before), `marker` to find what escapes, in
/// its own process group, stdin closed and its output piped.
fn command(
    program: &str,
    args: &[String],
    cwd: Option<&std::path::Path>,
    plan_env: &BTreeMap<String, String>,
    env: &BTreeMap<String, String>,
    marker: &str,
) -> Command {
    let mut cmd = Command::new(program);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let vars = STEP_VARS
        .try_with(|v| v.borrow().clone())
        .unwrap_or_default();
    cmd.envs(plan_env)
        .envs(vars)
        .envs(escaped::RunContext::extra_env())
        .envs(env);
    cmd.args(args)
        .env(escaped::MARKER_VAR, marker)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Spawn `cmd`, its pid registered as a leader while spawning: the
/// adopted-zombie reaper must never reap a leader tokio waits for.
fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    let mut leaders = escaped::leaders();
    let spawned = cmd.spawn();
    if let Some(id) = spawned.as_ref().ok().and_then(Child::id) {
        leaders
            .get_or_insert_with(Default::default)
            .insert(id as i32);
    }
    spawned
}

/// What the step left running (`tracked`): listed when it `succeeded`,
/// killed when not; the step's record says which.
async fn leftovers(mut tracked: Tracked, succeeded: bool, argv: &[String]) -> Vec<String> {
    let procs = tracked.leftovers();
    let mut listed = Vec::new();
    if !procs.is_empty() {
        listed = if succeeded {
            procs
                .iter()
                .map(|p| format!("left running {}", p.describe()))
                .collect()
        } else {
            tracing::warn!(argv = %display_argv(argv), count = procs.len(), "step left processes behind; killing them");
            escaped::kill_all(&procs).await
        };
    }
    tracked.finish();
    reap_adopted();
    listed
}

/// Output still in flight is read for a short while; a pipe held open by
/// a background process is abandoned, not waited on. The note for each of
/// stdout and stderr that was abandoned.
async fn drain(readers: &mut [JoinHandle<()>; 2], outcome: &Outcome) -> [Option<String>; 2] {
    let all_read = tokio::time::timeout(PIPE_GRACE, async {
        for reader in readers.iter_mut() {
            let _ = reader.await;
        }
    })
    .await
    .is_ok();
    let mut notes: [Option<String>; 2] = [None, None];
    if !all_read {
        let when = match outcome {
            Outcome::Exited(_) => "it exited",
            Outcome::TimedOut(_) => "the kill",
        };
        for (reader, note) in readers.iter().zip(notes.iter_mut()) {
            if !reader.is_finished() {
                reader.abort();
                *note = Some(format!(
                    "[stopped reading {} after {when}: the pipe is still held open, \
                     probably by a background process]",
                    fmt_duration(PIPE_GRACE)
                ));
            }
        }
    }
    notes
}

/// The step's result from how its leader's wait ended: exit code, `ok` and
/// the error, with the last stderr line (`stderr_hint`), what it left
/// behind, and for a timeout the time it had (`budget`) and the `limit`.
fn judge(
    report: &mut StepReport,
    outcome: Outcome,
    stderr_hint: &str,
    budget: Duration,
    limit: &str,
) {
    match outcome {
        Outcome::Exited(Ok(status)) => {
            report.exit_code = status.code();
            report.ok = status.success();
            if !report.ok {
                report.error = Some(format!(
                    "{}{stderr_hint}{}",
                    describe_status(status),
                    leftovers_note(&report.leftovers)
                ));
            }
        }
        Outcome::Exited(Err(e)) => {
            report.error = Some(format!("cannot wait for the process: {e}"));
        }
        Outcome::TimedOut(killed) => {
            let what = match (&killed.problem, killed.escalated) {
                (Some(problem), _) => problem.clone(),
                (None, false) => "process group killed".to_string(),
                (None, true) => format!(
                    "process group killed (SIGKILL: still running {} after SIGTERM)",
                    fmt_duration(KILL_GRACE)
                ),
            };
            let what = format!("{what}{}", leftovers_note(&report.leftovers));
            report.error = Some(format!(
                "timed out after {} ({limit}); {what}{}",
                fmt_duration(budget),
                if stderr_hint.is_empty() {
                    String::new()
                } else {
                    format!("; last stderr{stderr_hint}")
                }
            ));
        }
    }
}

/// `; also killed 1 process that escaped the group: pid 7 (sleep 30)`.
fn leftovers_note(leftovers: &[String]) -> String {
    if leftovers.is_empty() {
        return String::new();
    }
    format!(
        "; processes that escaped the group: {}",
        leftovers.join(", ")
    )
}

/// SIGKILLs the step's process group, and what escaped it, when dropped
/// while armed, i.e. when `run_step` is cancelled before the leader was
/// reaped (shutdown). The leader's pid cannot be reused before it is
/// reaped, so the group id is still ours.
struct GroupGuard {
    pgid: Option<Pid>,
    tracked: Option<Tracked>,
}

impl GroupGuard {
    /// The leader was reaped: hand back the tracking of its leftovers.
    fn disarm(&mut self) -> Option<Tracked> {
        if let Some(pgid) = self.pgid.take() {
            if let Some(l) = escaped::leaders().as_mut() {
                l.remove(&pgid.as_raw());
            }
        }
        self.tracked.take()
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            tracing::warn!(%pgid, "step cancelled; killing its process group");
            let _ = killpg(pgid, Signal::SIGKILL);
            if let Some(mut tracked) = self.tracked.take() {
                escaped::kill_now(&tracked.leftovers());
                tracked.finish();
            }
            // The leader is left to `kill_on_drop`: tokio reaps it.
            if let Some(l) = escaped::leaders().as_mut() {
                l.remove(&pgid.as_raw());
            }
        }
    }
}

/// How the leader's wait ended.
enum Outcome {
    /// The leader exited on its own (or waiting for it failed).
    Exited(std::io::Result<ExitStatus>),
    /// The deadline passed; the group was killed.
    TimedOut(Killed),
}

/// What killing a timed-out step's process group took.
#[derive(Default)]
struct Killed {
    /// SIGTERM was not enough; SIGKILL was sent.
    escalated: bool,
    /// A signal could not be delivered (other than "already gone").
    problem: Option<String>,
}

/// SIGTERM the group, wait up to [`KILL_GRACE`] for the leader and every live
/// member to go, then SIGKILL whatever is left, and reap the leader.
async fn kill_group(child: &mut Child, pgid: Option<Pid>) -> Killed {
    let mut killed = Killed::default();
    let Some(pgid) = pgid else {
        // No pid means tokio already saw the leader exit; nothing to signal.
        let _ = child.start_kill();
        let _ = tokio::time::timeout(REAP_LIMIT, child.wait()).await;
        return killed;
    };
    if let Err(e) = killpg(pgid, Signal::SIGTERM) {
        if e != Errno::ESRCH {
            killed.problem = Some(format!("cannot send SIGTERM to process group {pgid}: {e}"));
        }
    }
    let grace_end = Instant::now() + KILL_GRACE;
    let mut leader_reaped = false;
    loop {
        if !leader_reaped {
            leader_reaped = !matches!(child.try_wait(), Ok(None));
        }
        if leader_reaped && !group_alive(pgid) {
            break;
        }
        if Instant::now() >= grace_end {
            killed.escalated = true;
            if let Err(e) = killpg(pgid, Signal::SIGKILL) {
                if e != Errno::ESRCH {
                    killed.problem =
                        Some(format!("cannot send SIGKILL to process group {pgid}: {e}"));
                }
            }
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    if !leader_reaped
        && tokio::time::timeout(REAP_LIMIT, child.wait())
            .await
            .is_err()
    {
        tracing::warn!(%pgid, "timed-out step's leader did not die after SIGKILL");
    }
    killed
}

/// Whether the process group still has a live member. Members that already
/// died but wait to be reaped by init (zombies) do not count: they hold no
/// resources and cannot be signalled away.
fn group_alive(pgid: Pid) -> bool {
    if killpg(pgid, None) == Err(Errno::ESRCH) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((state, pgrp)) = parse_stat(&stat) {
            if pgrp == pgid.as_raw() && state != 'Z' && state != 'X' {
                return true;
            }
        }
    }
    false
}

/// State and process group from `/proc/PID/stat` (`pid (comm) S ppid pgrp ...`);
/// `comm` may contain spaces and parentheses, so parse after the last `)`.
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// `exited with status 3`, `killed by signal SIGSEGV (core dumped)`.
fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    if let Some(sig) = status.signal() {
        let name = Signal::try_from(sig)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| format!("signal {sig}"));
        let core = if status.core_dumped() {
            " (core dumped)"
        } else {
            ""
        };
        return format!("killed by signal {name}{core}");
    }
    format!("ended with {status}")
}

/// Whole seconds from (almost) a second on: a step started right after its
/// plan has `2s` minus microseconds until a `2s` deadline.
fn round_for_display(d: Duration) -> Duration {
    if d >= Duration::from_millis(950) {
        Duration::from_secs(d.as_secs_f64().round() as u64)
    } else {
        Duration::from_millis(d.as_millis() as u64)
    }
}

/// The last non-empty line, trimmed and shortened for a one-line error.
fn last_line(text: &str) -> Option<String> {
    const MAX: usize = 300;
    let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
    if line.len() <= MAX {
        return Some(line.to_string());
    }
    let mut end = MAX;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    Some(format!("{}...", &line[..end]))
}

/// The bounded tail of one output stream.
#[derive(Default)]
struct Tail {
    /// The most recent bytes; trimmed to [`OUTPUT_LIMIT`] whenever it
    /// reaches twice that, so memory stays bounded.
    buf: Vec<u8>,
    /// Every byte ever read, to say how much was dropped.
    total: u64,
    /// Why reading stopped early, if it did.
    read_error: Option<String>,
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= 2 * OUTPUT_LIMIT {
            let cut = self.buf.len() - OUTPUT_LIMIT;
            self.buf.drain(..cut);
        }
    }

    /// The kept bytes as text, without notes.
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }

    /// At most [`OUTPUT_LIMIT`] bytes: a truncation note if output was
    /// dropped, the tail, then `note` and any read error.
    fn render(&self, note: Option<&str>) -> String {
        let mut suffix = String::new();
        for extra in [note.map(str::to_string), self.read_error.clone()]
            .into_iter()
            .flatten()
        {
            if !suffix.is_empty() || !self.buf.is_empty() {
                suffix.push('\n');
            }
            suffix.push_str(&extra);
        }
        let room = OUTPUT_LIMIT.saturating_sub(suffix.len());
        let prefix = if self.total > room as u64 {
            format!(
                "[output truncated: {} bytes in all, only the tail is kept]\n",
                self.total
            )
        } else {
            String::new()
        };
        let room = room.saturating_sub(prefix.len());
        let mut start = self.buf.len().saturating_sub(room);
        // Do not start in the middle of a UTF-8 sequence.
        while start < self.buf.len() && (self.buf[start] & 0b1100_0000) == 0b1000_0000 {
            start += 1;
        }
        let mut body = String::from_utf8_lossy(&self.buf[start..]).into_owned();
        // Replacement characters are longer than the bytes they replace.
        while body.len() > room {
            let mut cut = body.len() - room;
            while !body.is_char_boundary(cut) {
                cut += 1;
            }
            body.drain(..cut);
        }
        format!("{prefix}{body}{suffix}")
    }
}

fn lock(tail: &Mutex<Tail>) -> MutexGuard<'_, Tail> {
    tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Read a pipe to EOF into `tail`. Runs as its own task so that it can be
/// abandoned when a background process keeps the pipe open.
fn spawn_reader<R>(pipe: Option<R>, tail: Arc<Mutex<Tail>>) -> JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let Some(mut pipe) = pipe else { return };
        let mut chunk = vec![0u8; 8 * 1024];
        loop {
            match pipe.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => lock(&tail).push(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    lock(&tail).read_error = Some(format!("[reading the output failed: {e}]"));
                    break;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tail_is_bounded_and_notes_truncation() {
        let mut t = Tail::default();
        for _ in 0..1000 {
            t.push(&[b'x'; 1000]);
        }
        t.push(b"\nthe end");
        let s = t.render(Some("[note]"));
        assert!(s.len() <= OUTPUT_LIMIT, "{}", s.len());
        assert!(s.starts_with("[output truncated: 1000008 bytes"), "{s:.80}");
        assert!(s.ends_with("the end\n[note]"));
        assert!(t.buf.len() < 2 * OUTPUT_LIMIT);
    }

    #[test]
    fn tail_small_output_is_verbatim() {
        let mut t = Tail::default();
        t.push(b"hello\n");
        assert_eq!(t.render(None), "hello\n");
        assert_eq!(Tail::default().render(None), "");
    }

    #[test]
    fn tail_never_splits_utf8_or_exceeds_limit() {
        let mut t = Tail::default();
        for _ in 0..10_000 {
            t.push("é".as_bytes());
        }
        t.push(&[0xff; 5000]);
        let s = t.render(None);
        assert!(s.len() <= OUTPUT_LIMIT);
        let mut t = Tail::default();
        for _ in 0..10_000 {
            t.push("日本".as_bytes());
        }
        let s = t.render(None);
        assert!(s.len() <= OUTPUT_LIMIT);
        assert!(s.ends_with("日本"));
    }

    #[test]
    fn parse_stat_table() {
        assert_eq!(parse_stat("42 (sh) S 1 42 42 0"), Some(('S', 42)));
        assert_eq!(parse_stat("43 (a) (b) Z 1 40 40"), Some(('Z', 40)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) R"), None);
    }

    #[test]
    fn last_line_skips_blank_lines() {
        assert_eq!(
            last_line("a\nerror: bad\n\n  \n"),
            Some("error: bad".into())
        );
        assert_eq!(last_line("\n \n"), None);
        assert!(last_line(&"x".repeat(1000)).unwrap().len() < 400);
    }

    #[test]
    fn display_argv_quotes_when_needed() {
        assert_eq!(
            display_argv(&argv(&["git", "checkout", "v1"])),
            "git checkout v1"
        );
        assert_eq!(
            display_argv(&argv(&["sh", "-c", "sleep 1", ""])),
            "sh -c \"sleep 1\" \"\""
        );
    }

    #[test]
    fn round_for_display_table() {
        assert_eq!(
            round_for_display(Duration::from_millis(1999)),
            Duration::from_secs(2)
        );
        assert_eq!(
            round_for_display(Duration::from_millis(999)),
            Duration::from_secs(1)
        );
        assert_eq!(
            round_for_display(Duration::from_millis(250)),
            Duration::from_millis(250)
        );
    }

    #[tokio::test]
    async fn empty_argv_is_a_failed_step() {
        let r = run_step(&[], Instant::now() + Duration::from_secs(5)).await;
        assert!(!r.ok);
        assert_eq!(r.exit_code, None);
        assert!(r.error.unwrap().contains("empty command"));
    }

    #[tokio::test]
    async fn passed_deadline_runs_nothing() {
        let r = run_step(&argv(&["true"]), Instant::now()).await;
        assert!(!r.ok);
        assert!(r.error.unwrap().contains("deadline"));
    }

    #[tokio::test]
    async fn signal_is_named() {
        let r = run_step(
            &argv(&["sh", "-c", "kill -SEGV $$"]),
            Instant::now() + Duration::from_secs(10),
        )
        .await;
        assert!(!r.ok);
        assert_eq!(r.exit_code, None);
        assert!(
            r.error
                .as_deref()
                .unwrap()
                .starts_with("killed by signal SIGSEGV"),
            "{:?}",
            r.error
        );
    }
}
