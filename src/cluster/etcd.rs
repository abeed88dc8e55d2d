//! The etcd side of `[cluster]` (built with the cargo feature `cluster`):
//! the [`Cluster`] handle every worker holds, its session task
//! ([`session`]) and the [`CommandInbox`] of forwarded commands. The types
//! the daemon shares with it (authority, ownership, errors) are in the
//! parent module, which also describes the protocol.

mod explain;
mod session;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, PutOptions,
    TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{
    keys, Authority, ClusterError, Keys, LeaseId, Owner, Ownership, PendingCommand, StoredCommand,
    MAX_PENDING_COMMANDS,
};
use crate::config::{ClusterConfig, OnEtcdDown};
use crate::decide::TargetState;
use crate::metrics::Metrics;

/// This node's lease as the session last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LeaseState {
    id: i64,
    /// The keepalive that set this was sent at `valid_until - ttl`: etcd
    /// received it later, so the lease lives at least until here.
    valid_until: Instant,
}

/// The handle every worker holds; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.inner.node)
            .field("lease", &self.lease())
            .finish_non_exhaustive()
    }
}

struct Inner {
    node: String,
    keys: Keys,
    ttl: Duration,
    on_etcd_down: OnEtcdDown,
    endpoints: Vec<String>,
    options: ConnectOptions,
    client: tokio::sync::Mutex<Option<Client>>,
    failures: AtomicU64,
    /// The kinds of failure said at WARN since etcd was last reachable.
    said: Mutex<Vec<explain::Kind>>,
    lease: Mutex<Option<LeaseState>>,
    up: watch::Sender<bool>,
    /// Targets this node took under which lease (for `owns` and the
    /// owner metric); forgotten when the lease is lost.
    owned: Mutex<BTreeMap<String, i64>>,
    command_seq: AtomicU64,
    token: CancellationToken,
    /// Where ownership, reachability and renewals are recorded.
    metrics: Arc<Metrics>,
}

impl Cluster {
    /// Read the TLS and password files, resolve the node name, and start
    /// the session task on `tracker`. Returns at once: etcd need not be
    /// up (until it is, [`Cluster::authorize`] answers per
    /// `on_etcd_down`). The session stops when `token` is cancelled,
    /// without revoking the lease (see [`Cluster::shutdown`]).
    /// Ownership, etcd reachability and lease renewals are recorded in
    /// `metrics`.
    pub fn spawn(
        config: &ClusterConfig,
        tracker: &TaskTracker,
        token: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Result<Cluster, ClusterError> {
        let node = match &config.node {
            Some(n) => n.clone(),
            None => hostname()?,
        };
        let step = step_timeout(config.lease_ttl);
        let mut options = ConnectOptions::new()
            .with_connect_timeout(step)
            .with_keep_alive(step, step)
            .with_keep_alive_while_idle(true);
        if config.etcd.iter().any(|u| u.scheme() == "https") {
            let mut tls = TlsOptions::new();
            tls = match &config.ca_file {
                Some(ca) => tls.ca_certificate(Certificate::from_pem(read("ca_file", ca)?)),
                None => tls.with_native_roots(),
            };
            if let Some(c) = &config.client_cert {
                tls = tls.identity(Identity::from_pem(
                    read("cert_file", &c.cert_file)?,
                    read("key_file", &c.key_file)?,
                ));
            }
            options = options.with_tls(tls);
        }
        if let Some(a) = &config.auth {
            let password = String::from_utf8_lossy(&read("password_file", &a.password_file)?)
                .trim_end_matches(['\n', '\r'])
                .to_string();
            options = options
                .with_user(a.username.clone(), password)
                .with_auto_token_refresh(true);
        }
        let (up, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            node,
            keys: Keys::new(&config.prefix),
            ttl: config.lease_ttl,
            on_etcd_down: config.on_etcd_down,
            endpoints: config
                .etcd
                .iter()
                .map(|u| u.as_str().trim_end_matches('/').to_string())
                .collect(),
            options,
            client: tokio::sync::Mutex::new(None),
            failures: AtomicU64::new(0),
            said: Mutex::new(Vec::new()),
            lease: Mutex::new(None),
            up,
            owned: Mutex::new(BTreeMap::new()),
            command_seq: AtomicU64::new(0),
            token: token.clone(),
            metrics,
        });
        inner.metrics.cluster_etcd_up(&inner.node, false);
        tracker.spawn(session::run(inner.clone(), token));
        Ok(Cluster { inner })
    }

    /// This node's name in owner records.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// `lease_ttl`.
    pub fn lease_ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// What this node does while etcd is unreachable.
    pub fn on_etcd_down(&self) -> OnEtcdDown {
        self.inner.on_etcd_down
    }

    /// Whether etcd is reachable: true after a lease grant or renewal
    /// succeeded, false after one failed. Starts false.
    pub fn etcd_up(&self) -> watch::Receiver<bool> {
        self.inner.up.subscribe()
    }

    /// The lease this node holds, if it is valid now.
    pub fn lease(&self) -> Option<LeaseId> {
        self.inner
            .lease_state()
            .filter(|l| Instant::now() < l.valid_until)
            .map(|l| LeaseId(l.id))
    }

    /// Whether this node's lease is certainly alive now: its latest
    /// keepalive was answered, and was sent less than the lease's TTL ago.
    /// Check it before starting each step.
    pub fn held(&self) -> bool {
        self.lease().is_some()
    }

    /// Whether this node holds `target`'s lock under a lease that is
    /// valid now (no etcd round trip).
    pub fn owns(&self, target: &str) -> bool {
        match self.lease() {
            Some(l) => {
                self.inner
                    .owned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(target)
                    == Some(&l.0)
            }
            None => false,
        }
    }

    /// Whether a worker that was given `authority` may start its next
    /// step now: an owner while [`Cluster::owns`], `Alone` while etcd is
    /// still unreachable (once it is back, the worker must authorize
    /// again), never otherwise.
    pub fn still_authorized(&self, target: &str, authority: &Authority) -> bool {
        match authority {
            Authority::Owner { lease, .. } => self.owns(target) && self.lease() == Some(*lease),
            Authority::Alone => !*self.inner.up.borrow(),
            Authority::Standby { .. } | Authority::Hold { .. } => false,
        }
    }

    /// May this node act on `target`? Takes the lock if nobody holds it
    /// (or keeps it if this node does). When etcd cannot be asked, answers
    /// per `on_etcd_down`.
    pub async fn authorize(&self, target: &str) -> Authority {
        match self.acquire(target).await {
            Ok(a) => a,
            Err(e) if e.is_unavailable() => match self.inner.on_etcd_down {
                OnEtcdDown::Hold => Authority::Hold { why: e.to_string() },
                OnEtcdDown::ActAlone => Authority::Alone,
            },
            Err(e) => Authority::Hold { why: e.to_string() },
        }
    }

    /// Take `target`'s lock if it is free, in one transaction with reading
    /// its shared state: `Owner` (with that state) or `Standby`.
    pub async fn acquire(&self, target: &str) -> Result<Authority, ClusterError> {
        let what = format!("acquire {target}");
        let lease = self.lease().ok_or(ClusterError::NoLease)?;
        let me = self.me(lease);
        let owner_key = self.inner.keys.owner(target);
        let state_key = self.inner.keys.state(target);
        let txn = Txn::new()
            .when([Compare::create_revision(
                owner_key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then([
                TxnOp::put(
                    owner_key.clone(),
                    me.encode(),
                    Some(PutOptions::new().with_lease(lease.0)),
                ),
                TxnOp::get(state_key.clone(), None),
            ])
            .or_else([
                TxnOp::get(owner_key.clone(), None),
                TxnOp::get(state_key, None),
            ]);
        let resp = self.txn(&what, txn).await?;
        let ops = resp.op_responses();
        let state = get_value(ops.get(1))
            .map(|v| json(&format!("{target} state"), &v))
            .transpose()?;
        let holder = if resp.succeeded() {
            Some(me.clone())
        } else {
            get_value(ops.first()).and_then(|v| Owner::decode(&v))
        };
        match holder {
            Some(o) if o == me => {
                let first = self
                    .inner
                    .owned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(target.to_string(), lease.0)
                    != Some(lease.0);
                if first {
                    tracing::info!(target, node = %self.inner.node, lease = %lease, "took the target's lock");
                    self.inner.metrics.cluster_owner(target, true);
                }
                Ok(Authority::Owner {
                    lease,
                    shared_state: state,
                })
            }
            Some(owner) => {
                self.forget(target);
                Ok(Authority::Standby { owner })
            }
            // Deleted between compare and read (its lease just expired):
            // try again later.
            None => Err(ClusterError::Unavailable {
                what,
                why: "the lock changed hands while it was read; try again".into(),
            }),
        }
    }

    /// Give up `target`'s lock (if this node holds it), e.g. when the
    /// target is removed by a reload.
    pub async fn release(&self, target: &str) -> Result<(), ClusterError> {
        let Some(lease) = self.inner.lease_state() else {
            self.forget(target);
            return Ok(());
        };
        let me = self.me(LeaseId(lease.id));
        let owner_key = self.inner.keys.owner(target);
        let txn = Txn::new()
            .when([Compare::value(
                owner_key.clone(),
                CompareOp::Equal,
                me.encode(),
            )])
            .and_then([TxnOp::delete(owner_key, None)]);
        let r = self.txn(&format!("release {target}"), txn).await;
        self.forget(target);
        r.map(|_| ())
    }

    /// Who holds `target` now (asks etcd).
    pub async fn ownership(&self, target: &str) -> Result<Ownership, ClusterError> {
        let owner = self
            .get(
                &format!("owner of {target}"),
                &self.inner.keys.owner(target),
            )
            .await?
            .and_then(|v| Owner::decode(&v));
        let standby = owner.as_ref().is_some_and(|o| o.node != self.inner.node);
        Ok(Ownership { owner, standby })
    }

    /// Write the target's state, and its incident if the phase carries
    /// one, in one transaction that checks this node still owns the
    /// target. `NotOwner`: this node lost the lock; stop acting.
    pub async fn publish(&self, state: &TargetState) -> Result<(), ClusterError> {
        let value = to_json(&format!("{} state", state.target), state)?;
        let incident = match state.incident() {
            Some(i) => Some((i.id.as_str(), to_json(&format!("incident {}", i.id), i)?)),
            None => None,
        };
        self.write(
            &state.target,
            &value,
            incident.as_ref().map(|(id, v)| (*id, v)),
        )
        .await
    }

    /// [`Cluster::publish`] for any JSON: `state` to the target's state
    /// key, `incident` (ID, value) to `PREFIX/incidents/ID`, both only if
    /// this node still owns the target.
    pub async fn write(
        &self,
        target: &str,
        state: &serde_json::Value,
        incident: Option<(&str, &serde_json::Value)>,
    ) -> Result<(), ClusterError> {
        let lease = self.lease().ok_or(ClusterError::NoLease)?;
        let mut ops = vec![TxnOp::put(
            self.inner.keys.state(target),
            state.to_string(),
            None,
        )];
        if let Some((id, v)) = incident {
            ops.push(TxnOp::put(
                self.inner.keys.incident(id),
                v.to_string(),
                None,
            ));
        }
        let what = format!("publish {target}");
        match self.owner_checked(&what, target, lease, ops, []).await? {
            true => Ok(()),
            false => Err(ClusterError::Unavailable {
                what,
                why: "the lock changed while it was checked; try again".into(),
            }),
        }
    }

    /// The state last published for `target` (to adopt when taking over,
    /// or to show on a standby node).
    pub async fn read_state<T: DeserializeOwned>(
        &self,
        target: &str,
    ) -> Result<Option<T>, ClusterError> {
        let what = format!("{target} state");
        self.get(&what, &self.inner.keys.state(target))
            .await?
            .map(|v| json(&what, &v))
            .transpose()
    }

    /// An incident as last published.
    pub async fn read_incident<T: DeserializeOwned>(
        &self,
        id: &str,
    ) -> Result<Option<T>, ClusterError> {
        let what = format!("incident {id}");
        self.get(&what, &self.inner.keys.incident(id))
            .await?
            .map(|v| json(&what, &v))
            .transpose()
    }

    /// Queue `command` for `target`'s owner (whichever node that is, or
    /// will be). Returns the command's ID. Needs etcd, not a lease.
    pub async fn post_command(
        &self,
        target: &str,
        command: &serde_json::Value,
    ) -> Result<String, ClusterError> {
        let what = format!("post command for {target}");
        let prefix = self.inner.keys.commands(target);
        let mut client = self.inner.client().await?;
        let step = self.inner.step_timeout();
        let pending = tokio::time::timeout(
            step,
            client.get(
                prefix.clone(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            ),
        )
        .await
        .map_err(|_| timed_out(&what, step))?
        .map_err(|e| self.inner.unavailable(&what, e))?
        .count() as usize;
        if pending >= MAX_PENDING_COMMANDS {
            return Err(ClusterError::TooManyCommands {
                target: target.to_string(),
                pending,
            });
        }
        let now = chrono::Utc::now();
        let id = keys::command_id(
            now.timestamp_nanos_opt().map_or(0, i128::from),
            &self.inner.node,
            self.inner.command_seq.fetch_add(1, Ordering::Relaxed),
        );
        let stored = StoredCommand {
            id: id.clone(),
            from: self.inner.node.clone(),
            posted_at: now.to_rfc3339(),
            command: command.clone(),
        };
        let value = to_json(&what, &stored)?.to_string();
        tokio::time::timeout(
            step,
            client.put(self.inner.keys.command(target, &id), value, None),
        )
        .await
        .map_err(|_| timed_out(&what, step))?
        .map_err(|e| self.inner.unavailable(&what, e))?;
        Ok(id)
    }

    /// The commands waiting for `target`'s owner, oldest first, not taken.
    pub async fn pending_commands(
        &self,
        target: &str,
    ) -> Result<(Vec<PendingCommand>, i64), ClusterError> {
        let what = format!("commands of {target}");
        let mut client = self.inner.client().await?;
        let step = self.inner.step_timeout();
        let resp = tokio::time::timeout(
            step,
            client.get(
                self.inner.keys.commands(target),
                Some(GetOptions::new().with_prefix()),
            ),
        )
        .await
        .map_err(|_| timed_out(&what, step))?
        .map_err(|e| self.inner.unavailable(&what, e))?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut out = Vec::new();
        for kv in resp.kvs() {
            match serde_json::from_slice::<StoredCommand>(kv.value()) {
                Ok(stored) => out.push((
                    kv.create_revision(),
                    PendingCommand {
                        target: target.to_string(),
                        stored,
                        mod_revision: kv.mod_revision(),
                    },
                )),
                Err(e) => tracing::warn!(
                    key = %String::from_utf8_lossy(kv.key()),
                    "ignoring a command that is not valid JSON: {e}"
                ),
            }
        }
        out.sort_by_key(|(rev, _)| *rev);
        Ok((out.into_iter().map(|(_, c)| c).collect(), revision))
    }

    /// Take `command` off the queue if this node owns its target: true
    /// when this call removed it (act on it), false when it was already
    /// gone (another taker acted). `NotOwner` when the target is not ours.
    pub async fn take_command(&self, command: &PendingCommand) -> Result<bool, ClusterError> {
        let lease = self.lease().ok_or(ClusterError::NoLease)?;
        let key = self.inner.keys.command(&command.target, &command.stored.id);
        let ops = vec![TxnOp::delete(key.clone(), None)];
        let compare = [Compare::mod_revision(
            key,
            CompareOp::Equal,
            command.mod_revision,
        )];
        self.owner_checked(
            &format!("take command {}", command.stored.id),
            &command.target,
            lease,
            ops,
            compare,
        )
        .await
    }

    /// Follow `target`'s command queue (see [`CommandInbox`]).
    pub fn commands(&self, target: &str) -> CommandInbox {
        CommandInbox {
            cluster: self.clone(),
            target: target.to_string(),
            seen: Vec::new(),
            queue: Vec::new(),
            watch: None,
        }
    }

    /// Revoke the lease (the others may take this node's targets at once)
    /// and stop the session. For a clean shutdown, after the in-flight
    /// step ended.
    pub async fn shutdown(&self) {
        if let Some(l) = self.inner.lease_state() {
            if let Ok(mut c) = self.inner.client().await {
                let step = self.inner.step_timeout();
                match tokio::time::timeout(step, c.lease_revoke(l.id)).await {
                    Ok(Ok(_)) => tracing::info!(lease = %LeaseId(l.id), "etcd lease revoked"),
                    Ok(Err(e)) => tracing::warn!("could not revoke the etcd lease: {e}"),
                    Err(_) => tracing::warn!("could not revoke the etcd lease: timed out"),
                }
            }
        }
        self.inner.lease_lost();
        self.inner.token.cancel();
    }

    fn me(&self, lease: LeaseId) -> Owner {
        Owner {
            node: self.inner.node.clone(),
            lease: lease.0,
        }
    }

    fn forget(&self, target: &str) {
        let had = self
            .inner
            .owned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(target)
            .is_some();
        if had {
            self.inner.metrics.cluster_owner(target, false);
        }
    }

    /// `ops` if the owner key is ours (value and lease) and `extra` holds:
    /// true. False when the target is ours but `extra` did not hold
    /// (`take_command`: already taken); `NotOwner` (with the holder) when
    /// it is not ours.
    async fn owner_checked<const N: usize>(
        &self,
        what: &str,
        target: &str,
        lease: LeaseId,
        ops: Vec<TxnOp>,
        extra: [Compare; N],
    ) -> Result<bool, ClusterError> {
        let owner_key = self.inner.keys.owner(target);
        let me = self.me(lease);
        let mut compares = vec![
            Compare::value(owner_key.clone(), CompareOp::Equal, me.encode()),
            Compare::lease(owner_key.clone(), CompareOp::Equal, lease.0),
        ];
        compares.extend(extra);
        let txn = Txn::new()
            .when(compares)
            .and_then(ops)
            .or_else([TxnOp::get(owner_key, None)]);
        let resp = self.txn(what, txn).await?;
        if resp.succeeded() {
            return Ok(true);
        }
        let owner = get_value(resp.op_responses().first()).and_then(|v| Owner::decode(&v));
        if owner.as_ref() == Some(&me) {
            return Ok(false);
        }
        self.forget(target);
        Err(ClusterError::NotOwner {
            target: target.to_string(),
            owner,
        })
    }

    async fn txn(&self, what: &str, txn: Txn) -> Result<etcd_client::TxnResponse, ClusterError> {
        let mut client = self.inner.client().await?;
        let step = self.inner.step_timeout();
        tokio::time::timeout(step, client.txn(txn))
            .await
            .map_err(|_| timed_out(what, step))?
            .map_err(|e| self.inner.unavailable(what, e))
    }

    async fn get(&self, what: &str, key: &str) -> Result<Option<Vec<u8>>, ClusterError> {
        let mut client = self.inner.client().await?;
        let step = self.inner.step_timeout();
        let resp = tokio::time::timeout(step, client.get(key, None))
            .await
            .map_err(|_| timed_out(what, step))?
            .map_err(|e| self.inner.unavailable(what, e))?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }
}

/// Follows one target's command queue for its owner: [`CommandInbox::recv`]
/// yields each command once per inbox, oldest first; the worker then calls
/// [`Cluster::take_command`] and acts only when that returns true. Woken by
/// an etcd watch, and polls every third of `lease_ttl` in case the watch
/// broke, so a lost event delays a command, never drops it.
pub struct CommandInbox {
    cluster: Cluster,
    target: String,
    /// IDs already yielded that were still queued at the last listing
    /// (bounded by the queue's own bound).
    seen: Vec<String>,
    queue: Vec<PendingCommand>,
    watch: Option<etcd_client::WatchStream>,
}

impl CommandInbox {
    /// The next command not yet yielded by this inbox. Cancel-safe: use it
    /// in `select!`.
    pub async fn recv(&mut self) -> PendingCommand {
        loop {
            if !self.queue.is_empty() {
                let c = self.queue.remove(0);
                self.seen.push(c.stored.id.clone());
                return c;
            }
            let revision = match self.cluster.pending_commands(&self.target).await {
                Ok((list, revision)) => {
                    self.seen
                        .retain(|id| list.iter().any(|c| &c.stored.id == id));
                    self.queue = list
                        .into_iter()
                        .filter(|c| !self.seen.contains(&c.stored.id))
                        .collect();
                    if !self.queue.is_empty() {
                        continue;
                    }
                    Some(revision)
                }
                Err(e) => {
                    tracing::debug!(target = %self.target, "cannot list commands: {e}");
                    self.watch = None;
                    None
                }
            };
            self.wait(revision).await;
        }
    }

    /// Until a command key changes, or a poll interval passed.
    async fn wait(&mut self, revision: Option<i64>) {
        let poll = self.cluster.inner.ttl / 3;
        if self.watch.is_none() {
            if let Some(rev) = revision {
                if let Ok(mut c) = self.cluster.inner.client().await {
                    let opts = WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(rev + 1);
                    let key = self.cluster.inner.keys.commands(&self.target);
                    if let Ok(Ok(w)) = tokio::time::timeout(poll, c.watch(key, Some(opts))).await {
                        self.watch = Some(w);
                    }
                }
            }
        }
        match self.watch.as_mut() {
            Some(w) => match tokio::time::timeout(poll, w.message()).await {
                Ok(Ok(Some(_))) | Err(_) => {}
                Ok(Ok(None)) | Ok(Err(_)) => self.watch = None,
            },
            None => tokio::time::sleep(poll).await,
        }
    }
}

impl Inner {
    /// A connected client, made on first use (and again after repeated
    /// failures).
    async fn client(&self) -> Result<Client, ClusterError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let step = self.step_timeout();
        let c = tokio::time::timeout(
            step,
            Client::connect(&self.endpoints, Some(self.options.clone())),
        )
        .await
        .map_err(|_| timed_out("connect", step))?
        .map_err(|e| ClusterError::Unavailable {
            what: format!(
                "connect to {}",
                crate::util::redact_urls(&self.endpoints.join(", "))
            ),
            why: crate::util::redact_urls(&e.to_string()),
        })?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Every third consecutive session failure, drop the client so the
    /// next use connects anew.
    fn note_failure(&self) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(3) {
            if let Ok(mut slot) = self.client.try_lock() {
                *slot = None;
            }
        }
    }

    fn unavailable(&self, what: &str, e: etcd_client::Error) -> ClusterError {
        ClusterError::Unavailable {
            what: what.to_string(),
            why: e.to_string(),
        }
    }

    /// How long one etcd request may take: a third of the TTL, so that a
    /// keepalive that times out leaves time for another before the lease
    /// runs out.
    fn step_timeout(&self) -> Duration {
        step_timeout(self.ttl)
    }

    fn lease_state(&self) -> Option<LeaseState> {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_lease(&self, lease: Option<LeaseState>) {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = lease;
    }

    /// The lease is gone: so are the locks under it.
    fn lease_lost(&self) {
        self.set_lease(None);
        let owned = std::mem::take(&mut *self.owned.lock().unwrap_or_else(|e| e.into_inner()));
        for target in owned.keys() {
            self.metrics.cluster_owner(target, false);
        }
    }

    fn set_up(&self, up: bool, why: &str) {
        if !up {
            tracing::debug!(node = %self.node, "etcd session: {why}");
            // Said once per kind until etcd is back, from the first
            // failure on: a refused login or certificate never lets the
            // session come up, so waiting for a change would say nothing.
            let https = self.endpoints.iter().any(|e| e.starts_with("https://"));
            let kind = explain::kind(why, https);
            let mut said = self.said.lock().unwrap_or_else(|e| e.into_inner());
            if !said.contains(&kind) {
                said.push(kind);
                tracing::warn!(node = %self.node, "{}", explain::say(kind, &self.endpoints, why));
            }
        }
        if up {
            self.failures.store(0, Ordering::Relaxed);
            self.said.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        let changed = self.up.send_if_modified(|v| std::mem::replace(v, up) != up);
        if changed {
            self.metrics.cluster_etcd_up(&self.node, up);
            if up {
                tracing::info!(node = %self.node, "etcd reachable: {why}");
            } else {
                tracing::warn!(node = %self.node, "etcd unreachable: {why}");
            }
        }
    }
}

fn step_timeout(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(500))
}

fn timed_out(what: &str, after: Duration) -> ClusterError {
    ClusterError::Unavailable {
        what: what.to_string(),
        why: format!("no answer within {after:?}"),
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, ClusterError> {
    std::fs::read(path).map_err(|e| ClusterError::File {
        key,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn hostname() -> Result<String, ClusterError> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|e| ClusterError::Hostname(e.to_string()))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(ClusterError::Hostname("it is empty".into()));
    }
    Ok(name.to_string())
}

fn get_value(op: Option<&TxnOpResponse>) -> Option<Vec<u8>> {
    match op {
        Some(TxnOpResponse::Get(g)) => g.kvs().first().map(|kv| kv.value().to_vec()),
        _ => None,
    }
}

fn json<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, ClusterError> {
    serde_json::from_slice(bytes).map_err(|e| ClusterError::Json {
        what: what.to_string(),
        why: e.to_string(),
    })
}

fn to_json<T: serde::Serialize>(what: &str, v: &T) -> Result<serde_json::Value, ClusterError> {
    serde_json::to_value(v).map_err(|e| ClusterError::Json {
        what: what.to_string(),
        why: e.to_string(),
    })
}
