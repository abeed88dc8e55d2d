//! The handle types through which the API (and signals) reach a running
//! daemon: a command to one target's worker with its reply, the worker's
//! published state, and requests to the daemon itself. The daemon creates
//! them and the API holds them; the API never imports the daemon.

use tokio::sync::{mpsc, oneshot, watch};

use crate::decide::{Event, StepError, TargetState};

/// A request from the API to one target's worker: step this event and
/// answer with the state after it, or why it does not fit.
#[derive(Debug)]
pub struct Command {
    /// The event (approve, reject, manual trigger, pause, resume).
    pub event: Event,
    /// The state after the step, or the reason it was refused.
    pub reply: oneshot::Sender<Result<TargetState, Refusal>>,
}

/// Why a command was refused; nothing was done. The API answers each with
/// its status code and this type's text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// The decision core refused the event (its reason, as data).
    #[error(transparent)]
    Step(#[from] StepError),
    /// `trigger --to-version V` named a version the executor cannot find.
    #[error("{0}; nothing was run")]
    UnknownVersion(String),
    /// The step could not be journaled, so it was not acted on.
    #[error("rollbackd could not journal the step, so nothing was done; see its log")]
    NotJournaled,
    /// With `[cluster]`: this node may not act on the target (etcd is
    /// unreachable and `on_etcd_down = "hold"`), or forwarding the command
    /// to the owner failed.
    #[error("{0}")]
    Cluster(String),
}

/// Why a reload changed nothing (the running configuration is kept).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The daemon runs from a config it was handed, not from a file.
    #[error("this daemon was not started from a config file; nothing to re-read")]
    NoFile,
    /// The file is invalid: every problem, one per line, as `check`
    /// prints them.
    #[error("{0}")]
    Invalid(#[from] crate::config::ConfigErrors),
    /// The new settings could not be put in place (a client or the
    /// notification delivery could not be built).
    #[error("{0}")]
    Setup(String),
    /// The daemon is not running, or stopped during the reload.
    #[error("{0}")]
    NotRunning(&'static str),
}

/// What the API holds of one target: a way to send it events and a
/// read-only view of its latest state.
#[derive(Debug, Clone)]
pub struct TargetHandle {
    /// Target name.
    pub name: String,
    /// Events for the worker, each with its reply.
    pub commands: mpsc::Sender<Command>,
    /// The state after the worker's latest step.
    pub state: watch::Receiver<TargetState>,
    /// With `[cluster]`: which node holds the target (`None` without
    /// `[cluster]`, or before the first look).
    pub cluster: watch::Receiver<Option<crate::cluster::Ownership>>,
}

/// A request to the daemon itself (from a signal or the API).
#[derive(Debug)]
pub enum DaemonRequest {
    /// Re-read and apply the config file; the answer says what changed, or
    /// every problem of an invalid file.
    Reload {
        /// The outcome.
        reply: oneshot::Sender<Result<String, ReloadError>>,
    },
    /// Write every target's state to the log (SIGUSR1).
    DumpStatus,
    /// The handles of every running worker.
    Targets {
        /// The handles.
        reply: oneshot::Sender<Vec<TargetHandle>>,
    },
}
