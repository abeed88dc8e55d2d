//! The journal: `state_dir/journal.jsonl`, one JSON object per line, flushed
//! and fsync'd before the effect it records. At start [`Journal::open`]
//! replays it and returns the last state of every target, so a restart never
//! repeats a rollback or forgets an open incident. A torn last line (power
//! loss mid-write) is tolerated and reported.
//!
//! The journal also guards its own identity: before every append, and on a
//! periodic [`Journal::check`], the open file must still be the file at
//! `state_dir/journal.jsonl` (same device and inode, directory present).
//! If `state_dir` was deleted or replaced, appends fail with
//! [`JournalError::Replaced`], so nothing is acted on that a restart
//! would not know about.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::decide::{Action, Event, TargetState, Time};

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// When it was recorded.
    pub at: Time,
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
        /// State after the step.
        state: TargetState,
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
}

/// Append-only handle on `journal.jsonl`.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
    /// Device and inode of the file when it was opened.
    identity: (u64, u64),
}

impl Journal {
    /// Open (creating) `state_dir/journal.jsonl` and replay it.
    ///
    /// A last line without its newline that does not parse is a torn write
    /// (power loss mid-append): it is cut off so the next append starts on a
    /// clean line, and reported in [`Recovery::problems`]. An unreadable
    /// complete line is reported and skipped; the file is left as it is.
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
        let parsed = parse(&bytes, &path);
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
        let identity = file_identity(
            &file
                .metadata()
                .map_err(|e| with_path(e, &format!("cannot stat {}", path.display())))?,
        );
        let recovery = Recovery {
            states: last_states(&parsed.entries),
            incidents: last_incidents(&parsed.entries),
            entries: parsed.entries.len(),
            problems: parsed.problems,
        };
        Ok((
            Journal {
                path,
                file,
                identity,
            },
            recovery,
        ))
    }

    /// Append one entry and fsync before returning.
    ///
    /// If the write fails half-way, the file is cut back to where it was so
    /// a partial line never glues itself to the next entry.
    pub fn append(&mut self, entry: &Entry) -> Result<(), JournalError> {
        self.check()?;
        let mut line = serde_json::to_vec(entry).map_err(|e| {
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
        crate::metrics::global().set(
            "rollbackd_journal_replaced",
            &[],
            if found.is_some() { 1.0 } else { 0.0 },
        );
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

/// Latest state per target from a list of entries.
pub fn last_states(entries: &[Entry]) -> HashMap<String, TargetState> {
    let mut states = HashMap::new();
    for e in entries {
        if let Record::Step { target, state, .. } = &e.record {
            states.insert(target.clone(), state.clone());
        }
    }
    states
}

/// Latest snapshot of every incident, by ID, from a list of entries.
pub fn last_incidents(
    entries: &[Entry],
) -> std::collections::BTreeMap<String, crate::decide::Incident> {
    let mut incidents = std::collections::BTreeMap::new();
    for e in entries {
        if let Record::Step { state, .. } = &e.record {
            if let Some(i) = state.incident() {
                incidents.insert(i.id.clone(), i.clone());
            }
        }
    }
    incidents
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
            at: t(secs),
            record: Record::Step {
                target: target.into(),
                event: Event::VersionObserved {
                    version: version.into(),
                },
                from: "Watching".into(),
                to: "Watching".into(),
                actions: Vec::new(),
                state,
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
        };
        state.rules = match &i.cause {
            crate::decide::Cause::Rules { breached, .. } => breached.clone(),
            crate::decide::Cause::Manual { .. } => Vec::new(),
        };
        vec![
            Entry {
                at: t(0),
                record: Record::Started {
                    version: "0.1.0".into(),
                },
            },
            step("frontend", "v1", 1),
            Entry {
                at: t(2),
                record: Record::Step {
                    target: "frontend".into(),
                    event: Event::VerifyChecked {
                        incident: i.id.clone(),
                        ok: false,
                        detail: "503".into(),
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
                    state,
                },
            },
            Entry {
                at: t(3),
                record: Record::Notified {
                    target: "frontend".into(),
                    incident: Some(i.id.clone()),
                    kind: NotifyKind::RollbackStarted,
                    path: Some("/var/lib/rollbackd/outbox/x.eml".into()),
                },
            },
            Entry {
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
        assert_eq!(read, entries());

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
        assert_eq!(
            read,
            vec![step("a", "v1", 1), step("a", "v2", 2), step("a", "v4", 4)]
        );
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

    #[test]
    fn a_missing_file_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let (read, problems) = read_all(&dir.path().join("journal.jsonl")).unwrap();
        assert!(read.is_empty() && problems.is_empty());
    }
}
