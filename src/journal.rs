//! The journal: `state_dir/journal.jsonl`, one JSON object per line, flushed
//! and fsync'd before the effect it records. At start [`Journal::open`]
//! replays it and returns the last state of every target, so a restart never
//! repeats a rollback or forgets an open incident. A torn last line (power
//! loss mid-write) is tolerated and reported.
//!
//! It is bounded: a step whose phase did not change is written as a delta
//! (the top-level fields of the state that changed), and when the file
//! passes its size limit (`[daemon] journal_max_size`) or an hour has gone
//! by with a thousand lines, every target's state and the recent incidents
//! are written to `state_dir/snapshot.json` and the journal starts afresh.
//! Recovery reads the snapshot, then the journal lines after it (each line
//! carries a sequence number; lines the snapshot already holds are skipped,
//! so a crash between the snapshot and the truncation loses nothing).
//! Closed incidents stay in `incidents/ID.md` for good.
//!
//! The journal also guards its own identity: before every append, and on a
//! periodic [`Journal::check`], the open file must still be the file at
//! `state_dir/journal.jsonl` (same device and inode, directory present).
//! If `state_dir` was deleted or replaced, appends fail with
//! [`JournalError::Replaced`], so nothing is acted on that a restart
//! would not know about.

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::decide::{Action, Event, TargetState, Time};
use crate::metrics::Metrics;

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// When it was recorded.
    pub at: Time,
    /// Position in the journal's history (set by [`Journal::append`];
    /// `0` on lines written before sequence numbers existed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: u64,
    /// What is recorded.
    #[serde(flatten)]
    pub record: Record,
}

/// What a journal line records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
// A `Record` lives only while one line is written or read, so the size of
// `Step` costs nothing worth a `Box` in a type other modules build.
#[allow(clippy::large_enum_variant)]
pub enum Record {
    /// One decision step that changed something: the event, the phase
    /// before and after, the actions about to be carried out and the full
    /// state after (what recovery restores).
    Step {
        /// Target name.
        target: String,
        /// The event.
        event: Event,
        /// Phase name before.
        from: String,
        /// Phase name after.
        to: String,
        /// Actions about to be carried out.
        actions: Vec<Action>,
        /// State after the step: whole, or the fields that changed.
        state: StepState,
    },
    /// The daemon started (with the version of rollbackd).
    Started {
        /// rollbackd version.
        version: String,
    },
    /// The daemon stopped cleanly.
    Stopped,
    /// A notification was written to the outbox.
    Notified {
        /// Target name.
        target: String,
        /// Incident ID; `None` for target notifications (monitoring blind, ...).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        incident: Option<String>,
        /// Notification kind.
        kind: crate::decide::NotifyKind,
        /// Outbox file, when email is configured.
        path: Option<PathBuf>,
    },
    /// A reload (or a start) found the target gone from the config: its
    /// state is kept for `[daemon] removed_target_memory` from now, and
    /// handed back if the name returns.
    Removed {
        /// Target name.
        target: String,
    },
    /// A removed target's name returned to the config and got its kept
    /// state back.
    Restored {
        /// Target name.
        target: String,
    },
    /// A removed target's kept state was forgotten (`removed_target_memory`
    /// ran out): a later target of that name starts afresh.
    Forgotten {
        /// Target name.
        target: String,
    },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The state after a step, as journaled: whole, or only the top-level
/// fields that changed since the target's previous line (a delta). The
/// daemon always hands over the whole state; [`Journal::append`] decides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StepState {
    /// The whole state.
    Full(Box<TargetState>),
    /// The fields that changed.
    Delta(serde_json::Map<String, serde_json::Value>),
}

impl From<TargetState> for StepState {
    fn from(s: TargetState) -> StepState {
        StepState::Full(Box::new(s))
    }
}

/// Most incidents a snapshot keeps (the newest; older ones are in
/// `incidents/ID.md`).
const SNAPSHOT_INCIDENTS: usize = 500;

/// A delta line at most this many times in a row per target, then the
/// whole state again (so a reader never needs a long chain).
const MAX_DELTAS: u32 = 100;

/// File name of the snapshot inside `state_dir`.
const SNAPSHOT_FILE: &str = "snapshot.json";

/// The snapshot before the current one: kept, with the journal lines
/// between the two ([`PREV_JOURNAL_FILE`]), until the next compaction has
/// written and read back a new one. If `snapshot.json` cannot be read at
/// start, recovery falls back to these.
const PREV_SNAPSHOT_FILE: &str = "snapshot.prev.json";

/// The journal lines between [`PREV_SNAPSHOT_FILE`] (or the empty start,
/// when there is none) and [`SNAPSHOT_FILE`].
const PREV_JOURNAL_FILE: &str = "journal.prev.jsonl";

/// Where an unreadable `snapshot.json` is moved once recovery fell back
/// and wrote a sound one (kept for a post-mortem; replaced by the next).
const UNREADABLE_SNAPSHOT_FILE: &str = "snapshot.json.unreadable";

/// `state_dir/snapshot.json`: every target's state and the recent
/// incidents as of journal line `seq`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Snapshot {
    seq: u64,
    at: Option<Time>,
    states: BTreeMap<String, serde_json::Value>,
    incidents: BTreeMap<String, serde_json::Value>,
    /// Targets removed from the config whose state is kept, with when.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    removed: BTreeMap<String, Time>,
}

/// A target's state as journaled, one compact JSON text per top-level
/// field: what deltas are computed against and applied to. Text, not a
/// `serde_json::Value` tree, because a tree costs about ten times the
/// bytes and the daemon keeps one per target for as long as it runs.
type Fields = BTreeMap<String, String>;

fn fields_of(value: &serde_json::Value) -> Fields {
    match value {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
        _ => Fields::new(),
    }
}

fn value_of(fields: &Fields) -> serde_json::Value {
    serde_json::Value::Object(
        fields
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    serde_json::from_str(v).unwrap_or(serde_json::Value::Null),
                )
            })
            .collect(),
    )
}

/// Replays lines onto the last known state of each target (field by field,
/// so deltas apply), remembering incidents (as JSON text, by ID).
#[derive(Debug, Default)]
struct Replay {
    states: BTreeMap<String, Fields>,
    incidents: BTreeMap<String, String>,
    /// Targets removed from the config (their state is kept), with when.
    removed: BTreeMap<String, Time>,
    problems: Vec<String>,
}

impl Replay {
    /// From a snapshot's JSON.
    fn from_snapshot(snapshot: Snapshot, problems: Vec<String>) -> Replay {
        Replay {
            states: snapshot
                .states
                .iter()
                .map(|(t, v)| (t.clone(), fields_of(v)))
                .collect(),
            incidents: snapshot
                .incidents
                .iter()
                .map(|(id, v)| (id.clone(), v.to_string()))
                .collect(),
            removed: snapshot.removed,
            problems,
        }
    }

    /// Replay one journal line.
    fn entry(&mut self, e: &Entry) {
        match &e.record {
            Record::Step {
                target,
                state,
                actions,
                ..
            } => {
                self.apply(target, state);
                self.remember_shadow(actions);
            }
            Record::Removed { target } => {
                self.removed.insert(target.clone(), e.at);
            }
            Record::Restored { target } => {
                self.removed.remove(target);
            }
            Record::Forgotten { target } => self.forget(target),
            Record::Started { .. } | Record::Stopped | Record::Notified { .. } => {}
        }
    }

    /// A removed target's kept state is dropped.
    fn forget(&mut self, target: &str) {
        self.removed.remove(target);
        self.states.remove(target);
    }

    /// Into a snapshot's JSON (only while one is written).
    fn to_snapshot(&self, seq: u64) -> Snapshot {
        Snapshot {
            seq,
            at: Some(chrono::Utc::now()),
            states: self
                .states
                .iter()
                .map(|(t, f)| (t.clone(), value_of(f)))
                .collect(),
            incidents: self
                .incidents
                .iter()
                .filter_map(|(id, v)| Some((id.clone(), serde_json::from_str(v).ok()?)))
                .collect(),
            removed: self.removed.clone(),
        }
    }

    fn apply(&mut self, target: &str, state: &StepState) {
        let fields = match state {
            StepState::Full(s) => match serde_json::to_value(s) {
                Ok(v) => fields_of(&v),
                Err(e) => {
                    self.problems
                        .push(format!("{target}: cannot re-encode a state: {e}"));
                    return;
                }
            },
            StepState::Delta(changed) => match self.states.get(target) {
                Some(prev) => {
                    let mut next = prev.clone();
                    for (k, v) in changed {
                        if v.is_null() {
                            next.remove(k);
                        } else {
                            next.insert(k.clone(), v.to_string());
                        }
                    }
                    next
                }
                None => {
                    self.problems.push(format!(
                        "{target}: a delta line without a state before it was skipped"
                    ));
                    return;
                }
            },
        };
        self.remember(target, fields);
    }

    /// Shadow incidents never become a target's phase: they are remembered
    /// from the record action that wrote them.
    fn remember_shadow(&mut self, actions: &[Action]) {
        for a in actions {
            let Action::WriteRecord { incident } = a else {
                continue;
            };
            if incident.outcome != Some(crate::decide::Outcome::Shadow) {
                continue;
            }
            if let Ok(text) = serde_json::to_string(&**incident) {
                self.remember_incident(incident.id.clone(), text);
            }
        }
    }

    fn remember_incident(&mut self, id: String, text: String) {
        self.incidents.insert(id, text);
        while self.incidents.len() > SNAPSHOT_INCIDENTS {
            self.incidents.pop_first();
        }
    }

    fn remember(&mut self, target: &str, fields: Fields) {
        if let Some(phase) = fields.get("phase") {
            if let Ok(serde_json::Value::Object(mut phase)) = serde_json::from_str(phase) {
                if let Some(incident) = phase.remove("incident") {
                    if let Some(id) = incident["id"].as_str() {
                        let id = id.to_string();
                        self.remember_incident(id, incident.to_string());
                    }
                }
            }
        }
        self.states.insert(target.to_string(), fields);
    }

    fn typed_states(&mut self) -> HashMap<String, TargetState> {
        let mut out = HashMap::new();
        for (target, f) in &self.states {
            match serde_json::from_value::<TargetState>(value_of(f)) {
                Ok(s) => {
                    out.insert(target.clone(), s);
                }
                Err(e) => self
                    .problems
                    .push(format!("{target}: journaled state unreadable: {e}")),
            }
        }
        out
    }

    fn typed_incidents(&self) -> BTreeMap<String, crate::decide::Incident> {
        self.incidents
            .iter()
            .filter_map(|(id, v)| Some((id.clone(), serde_json::from_str(v).ok()?)))
            .collect()
    }
}

/// What replaying the journal found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Last state of each target.
    pub states: HashMap<String, TargetState>,
    /// The latest snapshot of every incident the journal mentions, by ID.
    pub incidents: std::collections::BTreeMap<String, crate::decide::Incident>,
    /// Number of entries read.
    pub entries: usize,
    /// A torn or unreadable line that was skipped, with its line number.
    pub problems: Vec<String>,
    /// Targets removed from the config whose state is kept (in `states`),
    /// with when they were removed.
    pub removed: BTreeMap<String, Time>,
    /// `snapshot.json` could not be used and recovery fell back to the
    /// previous snapshot and the journal lines since (what it said).
    pub fell_back: Option<String>,
    /// Nothing consistent could be read: `states` is empty and must not be
    /// acted from. The journal refuses every write; the daemon runs in
    /// state-lost mode (why, and how to get out of it).
    pub lost: Option<String>,
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The journal file open in the daemon is no longer the one in
    /// `state_dir` (the directory or the file was deleted or replaced):
    /// anything journaled now would be lost at the next start.
    #[error("journal {path} is gone: {why}; rollbackd refuses to act until it is restarted on an intact state_dir", path = .path.display())]
    Replaced {
        /// `state_dir/journal.jsonl`.
        path: PathBuf,
        /// What was found instead.
        why: String,
    },
    /// Writing or syncing failed (the message names the file).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The state could not be read at start ([`Recovery::lost`]): nothing
    /// is written on top of what is left, so that it stays as found.
    #[error("state lost: {0}")]
    StateLost(String),
}

/// Append-only handle on `journal.jsonl`.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
    /// Device and inode of the file when it was opened.
    identity: (u64, u64),
    /// Sequence number of the last line written.
    seq: u64,
    /// Size of the file now.
    bytes: u64,
    /// Snapshot and start afresh past this size.
    max_bytes: u64,
    /// Lines since the last snapshot, and when it was taken.
    lines_since_snapshot: u64,
    snapshot_at: std::time::Instant,
    /// Every target's state as journaled, and the recent incidents: what a
    /// snapshot holds and what deltas are computed against.
    replay: Replay,
    /// Delta lines written in a row per target.
    deltas: HashMap<String, u32>,
    /// Set when recovery found no consistent state: every write is refused.
    lost: Option<String>,
    /// Where its size, compactions and replacement are recorded (the
    /// daemon's registry, given with [`Journal::record_metrics`]; none in
    /// tools and tests that open a journal by themselves).
    metrics: Option<Arc<Metrics>>,
}

/// Default `[daemon] journal_max_size`.
pub use crate::config::DEFAULT_JOURNAL_MAX_BYTES as DEFAULT_MAX_BYTES;

impl Journal {
    /// Open (creating) `state_dir/journal.jsonl` and replay it onto the
    /// snapshot.
    ///
    /// A last line without its newline that does not parse is a torn write
    /// (power loss mid-append): it is cut off so the next append starts on a
    /// clean line, and reported in [`Recovery::problems`]. An unreadable
    /// complete line is reported and skipped; the file is left as it is.
    ///
    /// An unreadable (or missing) `snapshot.json` falls back to the
    /// previous snapshot and the journal lines since, and a sound snapshot
    /// is written at once ([`Recovery::fell_back`]). When nothing
    /// consistent can be read, [`Recovery::lost`] says why, the states are
    /// empty, no file is changed, and every write is refused.
    pub fn open(state_dir: &Path) -> std::io::Result<(Journal, Recovery)> {
        std::fs::create_dir_all(state_dir).map_err(|e| {
            with_path(
                e,
                &format!("cannot create state dir {}", state_dir.display()),
            )
        })?;
        let path = state_dir.join(JOURNAL_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| with_path(e, &format!("cannot open {}", path.display())))?;
        // The file may have just been created: make its directory entry durable.
        sync_dir(state_dir)?;

        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| with_path(e, &format!("cannot read {}", path.display())))?;
        let mut parsed = parse(&bytes, &path);
        let chain = replay_chain(state_dir, &parsed.entries, &mut parsed.problems)?;
        let (mut replay, seq, replayed, fell_back, lost) = match chain {
            Ok(c) => (c.replay, c.seq, c.replayed, c.fell_back, None),
            Err(why) => (Replay::default(), 0, 0, None, Some(why)),
        };
        // A state that cannot be read is left exactly as found.
        if lost.is_none() {
            match parsed.tail {
                Tail::Clean => {}
                Tail::Torn { keep } => {
                    file.set_len(keep as u64)
                        .and_then(|()| file.sync_all())
                        .map_err(|e| {
                            with_path(
                                e,
                                &format!("cannot truncate torn line of {}", path.display()),
                            )
                        })?;
                }
                Tail::MissingNewline => {
                    // A complete entry whose newline never reached the disk.
                    file.write_all(b"\n")
                        .and_then(|()| file.sync_data())
                        .map_err(|e| with_path(e, &format!("cannot write {}", path.display())))?;
                }
            }
        }
        let identity = file_identity(
            &file
                .metadata()
                .map_err(|e| with_path(e, &format!("cannot stat {}", path.display())))?,
        );
        let states = replay.typed_states();
        let incidents = replay.typed_incidents();
        parsed.problems.append(&mut replay.problems);
        let removed = replay.removed.clone();
        let size = file
            .metadata()
            .map(|m| m.len())
            .unwrap_or(bytes.len() as u64);
        let mut journal = Journal {
            path,
            file,
            identity,
            seq,
            bytes: size,
            max_bytes: DEFAULT_MAX_BYTES,
            lines_since_snapshot: replayed as u64,
            snapshot_at: std::time::Instant::now(),
            replay,
            deltas: HashMap::new(),
            lost: lost.clone(),
            metrics: None,
        };
        if fell_back.is_some() {
            // Make the files consistent again before anything is appended:
            // the previous snapshot stays the base of a journal segment that
            // now runs up to a new, verified snapshot.
            journal.repair().map_err(|e| match e {
                JournalError::Io(e) => e,
                other => std::io::Error::other(other.to_string()),
            })?;
        }
        let recovery = Recovery {
            states,
            incidents,
            entries: replayed,
            problems: parsed.problems,
            removed,
            fell_back,
            lost,
        };
        Ok((journal, recovery))
    }

    /// After a fallback: `journal.prev.jsonl` gets every line since the
    /// previous snapshot (its own and `journal.jsonl`'s), the unreadable
    /// `snapshot.json` is moved aside, a new snapshot is written and read
    /// back, and `journal.jsonl` starts afresh. A crash at any point leaves
    /// files the next start reads the same way.
    fn repair(&mut self) -> Result<(), JournalError> {
        let dir = self.dir();
        let prev_journal = dir.join(PREV_JOURNAL_FILE);
        let mut segment = match std::fs::read(&prev_journal) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(with_path(e, &format!("cannot read {}", prev_journal.display())).into())
            }
        };
        // Only complete lines (a torn last line was never journaled).
        let keep = segment
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        segment.truncate(keep);
        let current = std::fs::read(&self.path)
            .map_err(|e| with_path(e, &format!("cannot read {}", self.path.display())))?;
        segment.extend_from_slice(&current);
        if !segment.is_empty() && !segment.ends_with(b"\n") {
            segment.push(b'\n');
        }
        write_atomic(&dir, PREV_JOURNAL_FILE, &segment)?;
        let tmp = self.write_snapshot_tmp()?;
        let unreadable = dir.join(SNAPSHOT_FILE);
        if unreadable.exists() {
            std::fs::rename(&unreadable, dir.join(UNREADABLE_SNAPSHOT_FILE)).map_err(|e| {
                with_path(e, &format!("cannot move {} aside", unreadable.display()))
            })?;
        }
        std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE))
            .and_then(|()| sync_dir(&dir))
            .map_err(|e| with_path(e, &format!("cannot install {}", tmp.display())))?;
        self.file
            .set_len(0)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| with_path(e, &format!("cannot empty {}", self.path.display())))?;
        self.bytes = 0;
        self.lines_since_snapshot = 0;
        self.deltas.clear();
        self.record(|m| m.journal_bytes(0));
        tracing::warn!(
            moved_to = %dir.join(UNREADABLE_SNAPSHOT_FILE).display(),
            "snapshot rebuilt from the previous snapshot and the journal"
        );
        Ok(())
    }

    /// The directory the journal lives in (`state_dir`).
    fn dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// Write the snapshot of everything journaled so far to
    /// `snapshot.json.tmp` (fsync'd) and read it back: a snapshot that does
    /// not read back as written never replaces anything.
    fn write_snapshot_tmp(&self) -> Result<PathBuf, JournalError> {
        let dir = self.dir();
        let snapshot = self.replay.to_snapshot(self.seq);
        let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        let text = serde_json::to_vec(&snapshot).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("cannot serialize the snapshot: {e}"),
            )
        })?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()
        };
        write().map_err(|e| with_path(e, &format!("cannot write {}", tmp.display())))?;
        let back = std::fs::read(&tmp)
            .map_err(|e| with_path(e, &format!("cannot read back {}", tmp.display())))?;
        match serde_json::from_slice::<Snapshot>(&back) {
            Ok(read) if read.seq == snapshot.seq && read.states.len() == snapshot.states.len() => {
                Ok(tmp)
            }
            Ok(_) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} does not read back as written", tmp.display()),
            )
            .into()),
            Err(e) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} does not read back: {e}", tmp.display()),
            )
            .into()),
        }
    }

    /// Refuse every write in state-lost mode.
    fn refuse_if_lost(&self) -> Result<(), JournalError> {
        match &self.lost {
            Some(why) => Err(JournalError::StateLost(why.clone())),
            None => Ok(()),
        }
    }

    /// Snapshot and start afresh once the file passes `max` bytes.
    pub fn set_max_bytes(&mut self, max: u64) {
        self.max_bytes = max;
    }

    /// Record the journal's size (`rollbackd_journal_bytes`, from now),
    /// compactions and replacement in `metrics` from now on.
    pub fn record_metrics(&mut self, metrics: Arc<Metrics>) {
        metrics.journal_bytes(self.bytes);
        self.metrics = Some(metrics);
    }

    fn record(&self, what: impl FnOnce(&Metrics)) {
        if let Some(m) = &self.metrics {
            what(m);
        }
    }

    /// Size of the journal file now.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Append one entry and fsync before returning. A step whose phase did
    /// not change and that asks for no action is written as a delta of the
    /// target's previous line. Past the size limit the journal is
    /// compacted into a snapshot afterwards.
    ///
    /// If the write fails half-way, the file is cut back to where it was so
    /// a partial line never glues itself to the next entry.
    pub fn append(&mut self, entry: &Entry) -> Result<(), JournalError> {
        self.refuse_if_lost()?;
        self.check()?;
        let mut entry = entry.clone();
        entry.seq = self.seq + 1;
        let mut full = None;
        if let Record::Step {
            target,
            from,
            to,
            actions,
            state,
            ..
        } = &mut entry.record
        {
            if let StepState::Full(s) = state {
                let value = serde_json::to_value(&**s).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("cannot serialize the state of {target}: {e}"),
                    )
                })?;
                let n = self.deltas.get(target.as_str()).copied().unwrap_or(0);
                let next = fields_of(&value);
                let delta = match self.replay.states.get(target.as_str()) {
                    Some(prev) if from == to && actions.is_empty() && n < MAX_DELTAS => {
                        // Fields that went away are written as null.
                        let mut changed: serde_json::Map<String, serde_json::Value> = value
                            .as_object()
                            .into_iter()
                            .flatten()
                            .filter(|(k, _)| prev.get(*k) != next.get(*k))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect();
                        for k in prev.keys().filter(|k| !next.contains_key(*k)) {
                            changed.insert(k.clone(), serde_json::Value::Null);
                        }
                        Some(changed)
                    }
                    _ => None,
                };
                if let Some(changed) = delta {
                    *state = StepState::Delta(changed);
                    self.deltas.insert(target.clone(), n + 1);
                } else {
                    self.deltas.insert(target.clone(), 0);
                }
                full = Some((target.clone(), next));
            }
        }
        let mut line = serde_json::to_vec(&entry).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("cannot serialize journal entry: {e}"),
            )
        })?;
        line.push(b'\n');
        let before = self
            .file
            .metadata()
            .map_err(|e| with_path(e, &format!("cannot stat {}", self.path.display())))?
            .len();
        let written = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            let _ = self.file.set_len(before);
            return Err(with_path(e, &format!("cannot append to {}", self.path.display())).into());
        }
        self.seq = entry.seq;
        self.bytes = before + line.len() as u64;
        self.lines_since_snapshot += 1;
        if let Some((target, value)) = full {
            self.replay.remember(&target, value);
        }
        match &entry.record {
            Record::Step { actions, .. } => self.replay.remember_shadow(actions),
            Record::Forgotten { target } => {
                self.replay.forget(target);
                self.deltas.remove(target);
            }
            other => self.replay.entry(&Entry {
                at: entry.at,
                seq: entry.seq,
                record: other.clone(),
            }),
        }
        let bytes = self.bytes;
        self.record(|m| m.journal_bytes(bytes));
        if self.bytes > self.max_bytes {
            // The line is journaled; a failed compaction is retried at the
            // next append and does not fail this one.
            if let Err(e) = self.compact() {
                tracing::error!(error = %e, "journal compaction failed; the journal keeps growing until it works");
            }
        }
        Ok(())
    }

    /// Compact when it is time even below the size limit: an hour since the
    /// last snapshot with at least a thousand lines (called periodically).
    pub fn compact_if_due(&mut self) -> Result<bool, JournalError> {
        if self.lines_since_snapshot >= 1000
            && self.snapshot_at.elapsed() >= std::time::Duration::from_secs(3600)
        {
            self.compact()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Write every target's state and the recent incidents to
    /// `snapshot.json` and start the journal afresh, keeping the previous
    /// generation: the new snapshot is written to a temp file, fsync'd and
    /// read back; only then does the current snapshot become
    /// `snapshot.prev.json` and the journal `journal.prev.jsonl` (the lines
    /// between the two snapshots), and the new one is renamed into place.
    /// If `snapshot.json` is ever unreadable, recovery falls back to them.
    pub fn compact(&mut self) -> Result<(), JournalError> {
        self.refuse_if_lost()?;
        self.check()?;
        let dir = self.dir();
        let tmp = self.write_snapshot_tmp()?;
        let current = dir.join(SNAPSHOT_FILE);
        let prev = dir.join(PREV_SNAPSHOT_FILE);
        let rotate = || -> std::io::Result<()> {
            if current.exists() {
                std::fs::rename(&current, &prev)
            } else {
                // The first snapshot: the previous base is the empty start.
                match std::fs::remove_file(&prev) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                }
            }
        };
        rotate().map_err(|e| with_path(e, &format!("cannot keep {}", prev.display())))?;
        let prev_journal = dir.join(PREV_JOURNAL_FILE);
        std::fs::rename(&self.path, &prev_journal)
            .map_err(|e| with_path(e, &format!("cannot keep {}", self.path.display())))?;
        let fresh = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.path)
            .and_then(|f| Ok((file_identity(&f.metadata()?), f)));
        let (identity, file) = match fresh {
            Ok(f) => f,
            Err(e) => {
                // Put the journal back: appends go on in the old file.
                let _ = std::fs::rename(&prev_journal, &self.path);
                return Err(with_path(e, &format!("cannot create {}", self.path.display())).into());
            }
        };
        self.file = file;
        self.identity = identity;
        std::fs::rename(&tmp, &current)
            .and_then(|()| sync_dir(&dir))
            .map_err(|e| with_path(e, &format!("cannot install {}", tmp.display())))?;
        tracing::info!(
            bytes = self.bytes,
            lines = self.lines_since_snapshot,
            targets = self.replay.states.len(),
            "journal compacted into snapshot.json (the previous one kept as snapshot.prev.json)"
        );
        self.bytes = 0;
        self.lines_since_snapshot = 0;
        self.snapshot_at = std::time::Instant::now();
        self.deltas.clear();
        self.record(|m| {
            m.journal_bytes(0);
            m.journal_compacted();
        });
        Ok(())
    }

    /// Whether the open file is still `state_dir/journal.jsonl`: the
    /// directory exists and the path names the same device and inode.
    /// Called before every append and periodically by the daemon; the
    /// result is also the gauge `rollbackd_journal_replaced` (1 when gone).
    pub fn check(&self) -> Result<(), JournalError> {
        let found = match std::fs::metadata(&self.path) {
            Ok(meta) if file_identity(&meta) == self.identity => None,
            Ok(_) => Some("the path now names a different file".to_string()),
            Err(e) => match self.path.parent() {
                Some(dir) if !dir.exists() => {
                    Some(format!("state directory {} was deleted", dir.display()))
                }
                _ => Some(format!("the file was deleted ({e})")),
            },
        };
        self.record(|m| m.journal_replaced(found.is_some()));
        match found {
            None => Ok(()),
            Some(why) => Err(JournalError::Replaced {
                path: self.path.clone(),
                why,
            }),
        }
    }

    /// Path of the journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Read every entry of a journal file (for `status`, `incidents` and tests).
///
/// Tolerant like [`Journal::open`] (unreadable lines are skipped and
/// reported) but read-only: a torn last line is reported, not cut off,
/// since the daemon may be writing it right now. A missing file is empty.
pub fn read_all(path: &Path) -> std::io::Result<(Vec<Entry>, Vec<String>)> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(with_path(e, &format!("cannot read {}", path.display()))),
    };
    let parsed = parse(&bytes, path);
    Ok((parsed.entries, parsed.problems))
}

/// Device and inode: what makes a file the same file.
fn file_identity(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

/// File name of the journal inside `state_dir`.
const JOURNAL_FILE: &str = "journal.jsonl";

/// How the file ends.
enum Tail {
    /// Empty, or the last line is complete.
    Clean,
    /// The last line has no newline and does not parse: keep this many bytes.
    Torn {
        /// Length up to and including the last complete line.
        keep: usize,
    },
    /// The last line parses but its newline is missing.
    MissingNewline,
}

/// What [`parse`] found.
struct Parsed {
    entries: Vec<Entry>,
    problems: Vec<String>,
    tail: Tail,
}

/// Parse journal bytes line by line; `path` only names the file in problems.
fn parse(bytes: &[u8], path: &Path) -> Parsed {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    let mut tail = Tail::Clean;
    let mut start = 0;
    let mut lineno = 0;
    while start < bytes.len() {
        lineno += 1;
        let (line, complete, next) = match bytes[start..].iter().position(|&b| b == b'\n') {
            Some(i) => (&bytes[start..start + i], true, start + i + 1),
            None => (&bytes[start..], false, bytes.len()),
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            start = next;
            continue;
        }
        match serde_json::from_slice::<Entry>(line) {
            Ok(entry) => {
                entries.push(entry);
                if !complete {
                    tail = Tail::MissingNewline;
                }
            }
            Err(_) if !complete => {
                problems.push(format!(
                    "{} line {lineno}: torn last line ({} bytes) discarded",
                    path.display(),
                    line.len()
                ));
                tail = Tail::Torn { keep: start };
            }
            Err(e) => problems.push(format!("{} line {lineno}: {e}", path.display())),
        }
        start = next;
    }
    Parsed {
        entries,
        problems,
        tail,
    }
}

/// Replace `dir/name` with `bytes` atomically: a temp file, fsync, rename,
/// fsync the directory.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))?;
        sync_dir(dir)
    };
    write().map_err(|e| with_path(e, &format!("cannot write {}", dir.join(name).display())))
}

/// fsync a directory so that entries created or renamed in it survive power loss.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| with_path(e, &format!("cannot fsync directory {}", dir.display())))
}

/// Prefix an I/O error with what was being done to which path, keeping its kind.
pub(crate) fn with_path(e: std::io::Error, what: &str) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// A snapshot file: `Ok(None)` when it does not exist, `Err` (why, naming
/// the file) when it cannot be read or parsed.
fn read_snapshot(path: &Path) -> Result<Option<Snapshot>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{} is unreadable: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// What [`replay_chain`] rebuilt.
struct Chain {
    replay: Replay,
    /// The last sequence number it holds.
    seq: u64,
    /// Journal lines applied on top of the snapshot.
    replayed: usize,
    /// `Some(why)` when `snapshot.json` could not be used and the previous
    /// generation was.
    fell_back: Option<String>,
}

/// Replay `segments` (journal lines, oldest file first) onto `base`.
/// Lines the base already holds are skipped by their sequence numbers; the
/// first line each file adds must follow the last one held, or lines are
/// missing and the result is not consistent (`Err` says which).
fn replay_onto(base: Snapshot, segments: &[(&Path, &[Entry])]) -> Result<Chain, String> {
    let mut seq = base.seq;
    let mut replay = Replay::from_snapshot(base, Vec::new());
    let mut replayed = 0;
    for (file, entries) in segments {
        let mut first = true;
        for e in entries.iter() {
            if e.seq != 0 && e.seq <= seq {
                continue;
            }
            if e.seq != 0 {
                if first && e.seq != seq + 1 {
                    return Err(format!(
                        "{} continues at line {} but the state before it ends at line {seq}: \
                         lines {}..{} are missing",
                        file.display(),
                        e.seq,
                        seq + 1,
                        e.seq - 1
                    ));
                }
                first = false;
                seq = e.seq;
            }
            replayed += 1;
            replay.entry(e);
        }
    }
    Ok(Chain {
        replay,
        seq,
        replayed,
        fell_back: None,
    })
}

/// Rebuild the state from `state_dir`: `snapshot.json` and the journal
/// lines after it; if that snapshot is unreadable or missing while a
/// previous generation exists, `snapshot.prev.json` (or the empty start
/// when the first snapshot was the only one) and every line since. The
/// inner `Err` says why nothing consistent could be read; a fresh
/// `state_dir` (no snapshot, no journal) is consistent and empty.
fn replay_chain(
    state_dir: &Path,
    journal: &[Entry],
    problems: &mut Vec<String>,
) -> std::io::Result<Result<Chain, String>> {
    let journal_path = state_dir.join(JOURNAL_FILE);
    let prev_journal_path = state_dir.join(PREV_JOURNAL_FILE);
    let prev_path = state_dir.join(PREV_SNAPSHOT_FILE);
    let snapshot_path = state_dir.join(SNAPSHOT_FILE);
    let (prev_lines, prev_problems) = read_all(&prev_journal_path)?;
    let segments = [
        (prev_journal_path.as_path(), prev_lines.as_slice()),
        (journal_path.as_path(), journal),
    ];
    let previous_exists = prev_path.exists() || prev_journal_path.exists();
    let mut why = Vec::new();
    match read_snapshot(&snapshot_path) {
        Ok(Some(s)) => match replay_onto(s, &segments) {
            Ok(c) => return Ok(Ok(c)),
            Err(e) => why.push(e),
        },
        Ok(None) if !previous_exists => {
            return Ok(replay_onto(Snapshot::default(), &segments[1..])
                .map_err(|e| format!("there is no {SNAPSHOT_FILE} (nor a previous one) and {e}")));
        }
        // A compaction was interrupted between its renames.
        Ok(None) => why.push(format!("{} is missing", snapshot_path.display())),
        Err(e) => why.push(e),
    }
    // The previous generation: its snapshot (absent: the empty start, when
    // its journal segment exists) and every line since.
    let base = match read_snapshot(&prev_path) {
        Ok(Some(s)) => Some(s),
        Ok(None) if prev_journal_path.exists() => Some(Snapshot::default()),
        Ok(None) => {
            why.push(format!(
                "there is no previous snapshot ({}) to fall back to",
                prev_path.display()
            ));
            None
        }
        Err(e) => {
            why.push(e);
            None
        }
    };
    let fallback = base.map(|b| replay_onto(b, &segments));
    match fallback {
        Some(Ok(mut c)) => {
            problems.extend(prev_problems);
            let said = format!(
                "{}; recovered from {} and the journal lines since",
                why.join("; "),
                if prev_path.exists() {
                    prev_path.display().to_string()
                } else {
                    format!("the start of {}", prev_journal_path.display())
                }
            );
            problems.push(said.clone());
            c.fell_back = Some(said);
            Ok(Ok(c))
        }
        Some(Err(e)) => {
            why.push(e);
            Ok(Err(why.join("; ")))
        }
        None => Ok(Err(why.join("; "))),
    }
}

/// Latest state per target from a list of entries (deltas applied).
pub fn last_states(entries: &[Entry]) -> HashMap<String, TargetState> {
    let mut replay = Replay::default();
    for e in entries {
        if let Record::Step { target, state, .. } = &e.record {
            replay.apply(target, state);
        }
    }
    replay.typed_states()
}

/// Latest state per target from `state_dir`: its snapshot, then the
/// journal lines after it, falling back like [`Journal::open`]
/// (read-only: for `drill` and tools). Nothing consistent is an error.
pub fn recover_states(state_dir: &Path) -> std::io::Result<HashMap<String, TargetState>> {
    let (entries, mut problems) = read_all(&state_dir.join(JOURNAL_FILE))?;
    match replay_chain(state_dir, &entries, &mut problems)? {
        Ok(mut c) => Ok(c.replay.typed_states()),
        Err(why) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the state in {} cannot be read: {why}", state_dir.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{NotifyKind, Phase};
    use crate::notify::record::tests::{incident, t};

    fn step(target: &str, version: &str, secs: i64) -> Entry {
        let mut state = TargetState::new(target);
        state.version = Some(version.into());
        state.incident_seq = secs as u64;
        Entry {
            seq: 0,
            at: t(secs),
            record: Record::Step {
                target: target.into(),
                event: Event::VersionObserved {
                    version: version.into(),
                },
                from: "Watching".into(),
                to: "Watching".into(),
                actions: Vec::new(),
                state: state.into(),
            },
        }
    }

    /// One of each record, with a full incident inside.
    fn entries() -> Vec<Entry> {
        let i = incident();
        let mut state = TargetState::new("frontend");
        state.phase = Phase::Verifying {
            incident: Box::new(i.clone()),
            deadline: t(60),
            url_ok: Some(false),
            gates_running: true,
        };
        state.rules = match &i.cause {
            crate::decide::Cause::Rules { breached, .. } => breached.clone(),
            crate::decide::Cause::Manual { .. } => Vec::new(),
        };
        vec![
            Entry {
                seq: 0,
                at: t(0),
                record: Record::Started {
                    version: "0.1.0".into(),
                },
            },
            step("frontend", "v1", 1),
            Entry {
                seq: 0,
                at: t(2),
                record: Record::Step {
                    target: "frontend".into(),
                    event: Event::VerifyChecked {
                        incident: i.id.clone(),
                        ok: false,
                        detail: "503".into(),
                        checks: vec![],
                    },
                    from: "RollingBack".into(),
                    to: "Verifying".into(),
                    actions: vec![
                        Action::Notify {
                            kind: NotifyKind::RollbackStarted,
                            incident: Box::new(i.clone()),
                        },
                        Action::Verify {
                            incident: i.id.clone(),
                        },
                    ],
                    state: state.into(),
                },
            },
            Entry {
                seq: 0,
                at: t(3),
                record: Record::Notified {
                    target: "frontend".into(),
                    incident: Some(i.id.clone()),
                    kind: NotifyKind::RollbackStarted,
                    path: Some("/var/lib/rollbackd/outbox/x.eml".into()),
                },
            },
            Entry {
                seq: 0,
                at: t(4),
                record: Record::Stopped,
            },
        ]
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let (mut j, rec) = Journal::open(&state_dir).unwrap();
        assert_eq!(rec.entries, 0);
        assert!(rec.problems.is_empty());
        assert_eq!(j.path(), state_dir.join("journal.jsonl"));
        for e in entries() {
            j.append(&e).unwrap();
        }
        drop(j);

        let (read, problems) = read_all(&state_dir.join("journal.jsonl")).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        // Numbered in order; the same records (no delta here: the phase of
        // the second step changed, the first is the target's first line).
        let seqs: Vec<u64> = read.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        let unnumbered: Vec<Entry> = read.into_iter().map(|e| Entry { seq: 0, ..e }).collect();
        assert_eq!(unnumbered, entries());

        let (_, rec) = Journal::open(&state_dir).unwrap();
        assert_eq!(rec.entries, 5);
        assert!(rec.problems.is_empty(), "{:?}", rec.problems);
        assert_eq!(rec.states.len(), 1);
        assert_eq!(rec.states["frontend"].phase.name(), "Verifying");
        assert_eq!(
            rec.states["frontend"].incident().unwrap().id,
            "20250601-120000-frontend-1"
        );
    }

    #[test]
    fn compaction_keeps_every_state_and_recovery_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.set_max_bytes(4096);
        let mut want = HashMap::new();
        for i in 0..300u64 {
            let target = format!("t{}", i % 7);
            let e = step(&target, &format!("v{i}"), i as i64);
            if let Record::Step {
                state: StepState::Full(s),
                ..
            } = &e.record
            {
                want.insert(target.clone(), (**s).clone());
            }
            j.append(&e).unwrap();
            assert!(j.bytes() <= 4096 + 1024, "bounded: {} bytes", j.bytes());
        }
        let path = j.path().to_path_buf();
        drop(j);
        assert!(dir.path().join("snapshot.json").exists());
        assert!(std::fs::metadata(&path).unwrap().len() <= 4096 + 1024);
        let (_, rec) = Journal::open(dir.path()).unwrap();
        assert!(rec.problems.is_empty(), "{:?}", rec.problems);
        assert_eq!(rec.states, want);
        assert_eq!(recover_states(dir.path()).unwrap(), want);

        // A crash after the snapshot but before the journal was emptied:
        // the old lines are skipped by their sequence numbers.
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.append(&step("t0", "late", 1000)).unwrap();
        let lines = std::fs::read(&path).unwrap();
        j.compact().unwrap();
        drop(j);
        let mut stale = lines.clone();
        stale.extend_from_slice(&lines);
        std::fs::write(&path, &stale).unwrap();
        let (_, rec) = Journal::open(dir.path()).unwrap();
        assert_eq!(rec.states["t0"].version.as_deref(), Some("late"));
        assert_eq!(rec.entries, 0, "every line is older than the snapshot");
    }

    #[test]
    fn one_json_object_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.append(&step("a", "v1", 1)).unwrap();
        let text = std::fs::read_to_string(j.path()).unwrap();
        assert!(text.ends_with('\n'));
        assert_eq!(text.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["type"], "step");
        assert_eq!(v["event"]["event"], "version_observed");
    }

    #[test]
    fn torn_last_line_is_cut_off_and_appending_works() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.append(&step("a", "v1", 1)).unwrap();
        j.append(&step("a", "v2", 2)).unwrap();
        let path = j.path().to_path_buf();
        drop(j);
        let good = std::fs::read(&path).unwrap();
        let torn = serde_json::to_string(&step("a", "v3", 3)).unwrap();
        let torn = &torn[..torn.len() / 2];
        let mut bytes = good.clone();
        bytes.extend_from_slice(torn.as_bytes());
        std::fs::write(&path, &bytes).unwrap();

        // A reader reports it but leaves the file alone.
        let (read, problems) = read_all(&path).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes);

        let (mut j, rec) = Journal::open(dir.path()).unwrap();
        assert_eq!(rec.entries, 2);
        assert_eq!(rec.states["a"].version.as_deref(), Some("v2"));
        assert_eq!(rec.problems.len(), 1, "{:?}", rec.problems);
        let want = format!(
            "journal.jsonl line 3: torn last line ({} bytes) discarded",
            torn.len()
        );
        assert!(rec.problems[0].ends_with(&want), "{:?}", rec.problems);
        assert_eq!(std::fs::read(&path).unwrap(), good, "torn line truncated");

        j.append(&step("a", "v4", 4)).unwrap();
        drop(j);
        let (read, problems) = read_all(&path).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(read.len(), 3);
        // Same phase, no action: the later lines are deltas of the first.
        let Record::Step { state, .. } = &read[2].record else {
            panic!()
        };
        let StepState::Delta(fields) = state else {
            panic!("{state:?}")
        };
        assert_eq!(fields["version"], "v4");
        assert!(!fields.contains_key("rules"), "{fields:?}");
        assert_eq!(last_states(&read)["a"], {
            let mut s = TargetState::new("a");
            s.version = Some("v4".into());
            s.incident_seq = 4;
            s
        });
    }

    #[test]
    fn complete_last_line_without_newline_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let line = serde_json::to_string(&step("a", "v1", 1)).unwrap();
        std::fs::write(&path, &line).unwrap();
        let (mut j, rec) = Journal::open(dir.path()).unwrap();
        assert_eq!(rec.entries, 1);
        assert!(rec.problems.is_empty(), "{:?}", rec.problems);
        j.append(&step("a", "v2", 2)).unwrap();
        let (read, problems) = read_all(&path).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(read.len(), 2);
    }

    #[test]
    fn corrupt_middle_line_is_skipped_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let text = format!(
            "{}\n{{\"at\": garbage\n\n{}\n",
            serde_json::to_string(&step("a", "v1", 1)).unwrap(),
            serde_json::to_string(&step("a", "v2", 2)).unwrap(),
        );
        std::fs::write(&path, &text).unwrap();
        let (mut j, rec) = Journal::open(dir.path()).unwrap();
        assert_eq!(rec.entries, 2);
        assert_eq!(rec.states["a"].version.as_deref(), Some("v2"));
        assert_eq!(rec.problems.len(), 1, "{:?}", rec.problems);
        assert!(
            rec.problems[0].contains("journal.jsonl line 2: expected value"),
            "{:?}",
            rec.problems
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "left as is");
        j.append(&step("a", "v3", 3)).unwrap();
        let (read, problems) = read_all(&path).unwrap();
        assert_eq!(read.len(), 3);
        assert_eq!(problems.len(), 1);
    }

    #[test]
    fn states_are_the_last_per_target() {
        let es = vec![
            step("a", "v1", 1),
            step("b", "v7", 2),
            Entry {
                seq: 0,
                at: t(3),
                record: Record::Stopped,
            },
            step("a", "v2", 4),
        ];
        let states = last_states(&es);
        assert_eq!(states.len(), 2);
        assert_eq!(states["a"].version.as_deref(), Some("v2"));
        assert_eq!(states["b"].version.as_deref(), Some("v7"));
    }

    #[test]
    fn append_refuses_when_state_dir_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (mut j, _) = Journal::open(&state).unwrap();
        j.append(&step("a", "v1", 1)).unwrap();
        j.check().unwrap();
        std::fs::remove_dir_all(&state).unwrap();
        let err = j.append(&step("a", "v2", 2)).unwrap_err();
        assert!(matches!(err, JournalError::Replaced { .. }), "{err}");
        assert!(err.to_string().contains("was deleted"), "{err}");
        // Recreated empty: still not the same file.
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join(JOURNAL_FILE), b"").unwrap();
        let err = j.check().unwrap_err();
        assert!(err.to_string().contains("different file"), "{err}");
    }

    /// A journal of 300 steps over 7 targets compacted several times (at
    /// least `min` snapshots): the dir, and every target's last state.
    fn compacted(min: u64) -> (tempfile::TempDir, HashMap<String, TargetState>) {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.set_max_bytes(4096);
        let mut want = HashMap::new();
        let mut compactions = 0;
        let mut i = 0u64;
        while compactions < min || i < 300 {
            let target = format!("t{}", i % 7);
            let e = step(&target, &format!("v{i}"), i as i64);
            if let Record::Step {
                state: StepState::Full(s),
                ..
            } = &e.record
            {
                want.insert(target.clone(), (**s).clone());
            }
            let bytes = j.bytes();
            j.append(&e).unwrap();
            if j.bytes() < bytes {
                compactions += 1;
            }
            i += 1;
        }
        // A few lines after the last snapshot.
        for k in 0..3 {
            let e = step("t0", &format!("tail{k}"), 10_000 + k);
            if let Record::Step {
                state: StepState::Full(s),
                ..
            } = &e.record
            {
                want.insert("t0".into(), (**s).clone());
            }
            j.append(&e).unwrap();
        }
        (dir, want)
    }

    fn half_truncate(path: &Path) {
        let bytes = std::fs::read(path).unwrap();
        std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
    }

    #[test]
    fn compaction_keeps_the_previous_generation() {
        let (dir, want) = compacted(2);
        for f in [
            SNAPSHOT_FILE,
            PREV_SNAPSHOT_FILE,
            PREV_JOURNAL_FILE,
            JOURNAL_FILE,
        ] {
            assert!(dir.path().join(f).exists(), "{f}");
        }
        assert!(!dir.path().join(format!("{SNAPSHOT_FILE}.tmp")).exists());
        let (_, rec) = Journal::open(dir.path()).unwrap();
        assert!(rec.fell_back.is_none() && rec.lost.is_none(), "{rec:?}");
        assert_eq!(rec.states, want);
    }

    #[test]
    fn an_unreadable_snapshot_falls_back_to_the_previous_one_and_the_journal() {
        let (dir, want) = compacted(2);
        half_truncate(&dir.path().join(SNAPSHOT_FILE));
        let (mut j, rec) = Journal::open(dir.path()).unwrap();
        assert!(rec.lost.is_none(), "{:?}", rec.lost);
        let said = rec.fell_back.clone().expect("fell back");
        assert!(said.contains("snapshot.json is unreadable"), "{said}");
        assert!(said.contains("snapshot.prev.json"), "{said}");
        assert!(
            rec.problems.iter().any(|p| p == &said),
            "{:?}",
            rec.problems
        );
        assert_eq!(rec.states, want);
        // Repaired at once: the unreadable file is kept aside, the new
        // snapshot reads, and the journal goes on.
        assert!(dir.path().join(UNREADABLE_SNAPSHOT_FILE).exists());
        j.append(&step("t1", "after", 20_000)).unwrap();
        drop(j);
        let (_, rec) = Journal::open(dir.path()).unwrap();
        assert!(rec.fell_back.is_none() && rec.lost.is_none(), "{rec:?}");
        assert_eq!(rec.states["t1"].version.as_deref(), Some("after"));
        assert_eq!(rec.states["t0"], want["t0"]);
        assert_eq!(recover_states(dir.path()).unwrap().len(), 7);
    }

    #[test]
    fn the_first_snapshot_unreadable_falls_back_to_the_start_of_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        for i in 0..5 {
            j.append(&step("a", &format!("v{i}"), i)).unwrap();
        }
        j.compact().unwrap();
        j.append(&step("a", "v9", 9)).unwrap();
        drop(j);
        assert!(!dir.path().join(PREV_SNAPSHOT_FILE).exists());
        assert!(dir.path().join(PREV_JOURNAL_FILE).exists());
        std::fs::write(dir.path().join(SNAPSHOT_FILE), b"{\"seq\": 5, \"sta").unwrap();
        let (_, rec) = Journal::open(dir.path()).unwrap();
        assert!(rec.lost.is_none(), "{:?}", rec.lost);
        assert!(rec.fell_back.is_some());
        assert_eq!(rec.states["a"].version.as_deref(), Some("v9"));
    }

    #[test]
    fn an_interrupted_compaction_is_recovered() {
        // Killed between keeping the previous snapshot and installing the
        // new one: no snapshot.json at all.
        let (dir, want) = compacted(2);
        std::fs::remove_file(dir.path().join(SNAPSHOT_FILE)).unwrap();
        let (_, rec) = Journal::open(dir.path()).unwrap();
        assert!(rec.lost.is_none(), "{:?}", rec.lost);
        assert!(rec.fell_back.as_deref().unwrap().contains("is missing"));
        assert_eq!(rec.states, want);
    }

    #[test]
    fn nothing_consistent_is_state_lost_and_nothing_is_written() {
        // As a state_dir written before the previous generation was kept:
        // a snapshot and the lines after it, nothing else.
        let (dir, _) = compacted(2);
        std::fs::remove_file(dir.path().join(PREV_SNAPSHOT_FILE)).unwrap();
        std::fs::remove_file(dir.path().join(PREV_JOURNAL_FILE)).unwrap();
        half_truncate(&dir.path().join(SNAPSHOT_FILE));
        let files = |d: &Path| -> Vec<(String, Vec<u8>)> {
            let mut v: Vec<_> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap(),
                    )
                })
                .collect();
            v.sort();
            v
        };
        let before = files(dir.path());
        let (mut j, rec) = Journal::open(dir.path()).unwrap();
        let lost = rec.lost.clone().expect("state lost");
        assert!(lost.contains("snapshot.json is unreadable"), "{lost}");
        assert!(lost.contains("no previous snapshot"), "{lost}");
        assert!(rec.states.is_empty() && rec.incidents.is_empty());
        let err = j.append(&step("a", "v1", 1)).unwrap_err();
        assert!(matches!(err, JournalError::StateLost(_)), "{err}");
        assert!(matches!(j.compact(), Err(JournalError::StateLost(_))));
        drop(j);
        assert_eq!(files(dir.path()), before, "left exactly as found");
        assert!(recover_states(dir.path()).is_err());
    }

    #[test]
    fn a_journal_without_its_beginning_is_state_lost() {
        // snapshot.json deleted: the journal starts at a line far past 1.
        let (dir, _) = compacted(2);
        for f in [SNAPSHOT_FILE, PREV_SNAPSHOT_FILE, PREV_JOURNAL_FILE] {
            std::fs::remove_file(dir.path().join(f)).unwrap();
        }
        let (_, rec) = Journal::open(dir.path()).unwrap();
        let lost = rec.lost.expect("state lost");
        assert!(lost.contains("are missing"), "{lost}");
        // A fresh state_dir is a normal first start.
        let fresh = tempfile::tempdir().unwrap();
        let (_, rec) = Journal::open(fresh.path()).unwrap();
        assert!(rec.lost.is_none() && rec.fell_back.is_none());
    }

    #[test]
    fn removed_targets_are_kept_until_forgotten_across_compactions() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.append(&step("a", "v1", 1)).unwrap();
        j.append(&step("b", "v1", 2)).unwrap();
        let removed = |target: &str, secs| Entry {
            seq: 0,
            at: t(secs),
            record: Record::Removed {
                target: target.into(),
            },
        };
        j.append(&removed("a", 3)).unwrap();
        j.append(&removed("b", 4)).unwrap();
        j.compact().unwrap();
        drop(j);
        let (mut j, rec) = Journal::open(dir.path()).unwrap();
        assert_eq!(rec.removed.get("a"), Some(&t(3)));
        assert_eq!(rec.states["a"].version.as_deref(), Some("v1"));
        // b returns; a is forgotten.
        j.append(&Entry {
            seq: 0,
            at: t(5),
            record: Record::Restored { target: "b".into() },
        })
        .unwrap();
        j.append(&Entry {
            seq: 0,
            at: t(6),
            record: Record::Forgotten { target: "a".into() },
        })
        .unwrap();
        drop(j);
        let (mut j, rec) = Journal::open(dir.path()).unwrap();
        assert!(rec.removed.is_empty(), "{:?}", rec.removed);
        assert!(!rec.states.contains_key("a"));
        assert!(rec.states.contains_key("b"));
        j.compact().unwrap();
        drop(j);
        let (_, rec) = Journal::open(dir.path()).unwrap();
        assert!(!rec.states.contains_key("a") && rec.removed.is_empty());
    }

    #[test]
    fn a_missing_file_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let (read, problems) = read_all(&dir.path().join("journal.jsonl")).unwrap();
        assert!(read.is_empty() && problems.is_empty());
    }
}
