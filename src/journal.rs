//! The journal: `state_dir/journal.jsonl`, one JSON object per line, flushed
//! and fsync'd before the effect it records. At start [`Journal::open`]
//! replays it and returns the last state of every target, so a restart never
//! repeats a rollback or forgets an open incident. A torn last line (power
//! loss mid-write) is tolerated and reported.

use std::collections::HashMap;
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
        /// Incident ID.
        incident: String,
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
    /// Number of entries read.
    pub entries: usize,
    /// A torn or unreadable line that was skipped, with its line number.
    pub problems: Vec<String>,
}

/// Append-only handle on `journal.jsonl`.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
}

impl Journal {
    /// Open (creating) `state_dir/journal.jsonl` and replay it.
    pub fn open(state_dir: &Path) -> std::io::Result<(Journal, Recovery)> {
        todo!("{state_dir:?}")
    }

    /// Append one entry and fsync before returning.
    pub fn append(&mut self, entry: &Entry) -> std::io::Result<()> {
        todo!("{entry:?} {:?} {:?}", self.path, self.file)
    }

    /// Path of the journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Read every entry of a journal file (for `status`, `incidents` and tests).
pub fn read_all(path: &Path) -> std::io::Result<(Vec<Entry>, Vec<String>)> {
    todo!("{path:?}")
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
