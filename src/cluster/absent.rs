//! `[cluster]` in a build without the cargo feature `cluster` (the default
//! build, which needs no protoc): [`Cluster`] has no value, so the daemon's
//! cluster code compiles but never runs. `check` and the daemon refuse a
//! config with `[cluster]` ([`super::NOT_BUILT`]); [`Cluster::spawn`]
//! refuses too, for a caller that did not check.

use std::convert::Infallible;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Authority, ClusterError, Ownership, PendingCommand};
use crate::config::{ClusterConfig, OnEtcdDown};
use crate::decide::TargetState;
use crate::metrics::Metrics;

/// The etcd handle of a build with `cluster`; here it cannot exist.
#[derive(Debug, Clone)]
pub struct Cluster {
    never: Infallible,
}

/// The forwarded commands of a build with `cluster`; here it cannot exist.
#[derive(Debug)]
pub struct CommandInbox {
    never: Infallible,
}

impl Cluster {
    /// Always [`ClusterError::NotBuilt`].
    pub fn spawn(
        _config: &ClusterConfig,
        _tracker: &TaskTracker,
        _token: CancellationToken,
        _metrics: Arc<Metrics>,
    ) -> Result<Cluster, ClusterError> {
        Err(ClusterError::NotBuilt)
    }

    /// This node's name in owner records.
    pub fn node(&self) -> &str {
        match self.never {}
    }

    /// What a node does while etcd is unreachable.
    pub fn on_etcd_down(&self) -> OnEtcdDown {
        match self.never {}
    }

    /// Whether etcd is reachable.
    pub fn etcd_up(&self) -> watch::Receiver<bool> {
        match self.never {}
    }

    /// Whether this node holds a valid lease.
    pub fn held(&self) -> bool {
        match self.never {}
    }

    /// Whether `authority` still allows acting on `target`.
    pub fn still_authorized(&self, _target: &str, _authority: &Authority) -> bool {
        match self.never {}
    }

    /// May this node act on `target`?
    pub async fn authorize(&self, _target: &str) -> Authority {
        match self.never {}
    }

    /// Who holds `target`.
    pub async fn ownership(&self, _target: &str) -> Result<Ownership, ClusterError> {
        match self.never {}
    }

    /// Publish the owner's state of a target.
    pub async fn publish(&self, _state: &TargetState) -> Result<(), ClusterError> {
        match self.never {}
    }

    /// The state the owner of `target` last published.
    pub async fn read_state<T: DeserializeOwned>(
        &self,
        _target: &str,
    ) -> Result<Option<T>, ClusterError> {
        match self.never {}
    }

    /// Queue a command for the owner of `target`.
    pub async fn post_command(
        &self,
        _target: &str,
        _command: &serde_json::Value,
    ) -> Result<String, ClusterError> {
        match self.never {}
    }

    /// Take a queued command (owner-checked).
    pub async fn take_command(&self, _command: &PendingCommand) -> Result<bool, ClusterError> {
        match self.never {}
    }

    /// The commands queued for `target`.
    pub fn commands(&self, _target: &str) -> CommandInbox {
        match self.never {}
    }

    /// Revoke the lease.
    pub async fn shutdown(&self) {
        match self.never {}
    }
}

impl CommandInbox {
    /// The next queued command.
    pub async fn recv(&mut self) -> PendingCommand {
        match self.never {}
    }
}
