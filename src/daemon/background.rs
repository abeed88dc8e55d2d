//! Tasks beside the workers: journal housekeeping (state_dir still there,
//! compaction, reaping adopted leftovers) and Prometheus server watch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::decide::{self, Action};

/// How often the daemon checks that its journal is still the file in
/// `state_dir` (besides before every append).
pub(super) const JOURNAL_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Periodic checks beside the workers: the journal is still the file in
/// `state_dir` (logged, gauged and notified once when not: every step is
/// refused from then on), and zombies of processes reparented to the
/// daemon are reaped.
pub(super) async fn housekeeping(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(JOURNAL_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut notified = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        crate::run::process::reap_adopted();
        let checked = {
            let mut journal = shared.journal.lock().unwrap_or_else(|p| p.into_inner());
            journal
                .check()
                .and_then(|()| journal.compact_if_due().map(|_| ()))
        };
        match checked {
            Ok(()) => notified = false,
            Err(e) => {
                if !notified {
                    tracing::error!(error = %e, "state directory lost: not acting on anything");
                    notified = true;
                    let message = format!(
                        "{e}. rollbackd is not acting on any target (every step would be lost at the next restart). \
                         Restore {} or restart rollbackd on a new state_dir.",
                        shared.state_dir.display()
                    );
                    if let Err(e) = shared
                        .live()
                        .notifier
                        .notify_target(decide::NotifyKind::Escalated, "rollbackd", &message)
                        .await
                    {
                        tracing::error!(error = %e, "cannot notify that the state directory is lost");
                    }
                }
            }
        }
    }
}

/// How often each Prometheus server's reachability is checked.
pub(super) const SERVER_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Tell the admin once when a Prometheus server has been unreachable for
/// its `blind_after`, and once when it answers again (the decision is
/// [`decide::server_watch::check`]'s; the facts are the clients'). What was
/// sent is kept across reloads by server name.
pub(super) async fn watch_servers(shared: Arc<Shared>, cancel: CancellationToken) {
    use crate::sources::prometheus::Reachability;
    use decide::server_watch::{check, Seen, Watch};
    let mut tick = tokio::time::interval(SERVER_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watches: BTreeMap<String, Watch> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let live = shared.live();
        watches.retain(|name, _| {
            let kept = live.prometheus.contains_key(name);
            if !kept {
                crate::metrics::global().prometheus_reachable(name, None);
            }
            kept
        });
        for server in &live.servers {
            let Some(client) = live.prometheus.get(&server.name) else {
                continue;
            };
            let seen = match client.reachability() {
                Reachability::Unknown => Seen::NotYet,
                Reachability::Reachable => Seen::Answers,
                Reachability::Unreachable { since, error } => Seen::Silent { since, error },
            };
            crate::metrics::global().prometheus_reachable(
                &server.name,
                match &seen {
                    Seen::NotYet => None,
                    Seen::Answers => Some(true),
                    Seen::Silent { .. } => Some(false),
                },
            );
            let watch = watches.entry(server.name.clone()).or_default();
            let Some(Action::NotifyTarget {
                kind,
                target,
                message,
            }) = check(watch, server, &seen, shared.now())
            else {
                continue;
            };
            if kind == decide::NotifyKind::ServerUnreachable {
                tracing::warn!(server = %server.name, "{message}");
            } else {
                tracing::info!(server = %server.name, "{message}");
            }
            notify_about(&shared, kind, &target, &message).await;
        }
    }
}

/// A notification about the daemon's own surroundings (a Prometheus
/// server, etcd): written to the outbox and shown to observers.
pub(super) async fn notify_about(
    shared: &Shared,
    kind: decide::NotifyKind,
    target: &str,
    message: &str,
) {
    match shared
        .live()
        .notifier
        .notify_target(kind, target, message)
        .await
    {
        Ok(Some(path)) => shared.observe(Observation::Mail {
            at: shared.now(),
            target: target.to_string(),
            path,
            kind,
        }),
        Ok(None) => {}
        Err(e) => tracing::error!(%target, error = %e, "cannot notify"),
    }
}

/// With `[cluster]`: tell the admin once when this node loses etcd (it
/// acts on nothing from then on, unless `on_etcd_down = "act_alone"`), and
/// once when it is back. Nothing is said before etcd first answered.
pub(super) async fn watch_etcd(
    shared: Arc<Shared>,
    cluster: crate::cluster::Cluster,
    cancel: CancellationToken,
) {
    let mut up = cluster.etcd_up();
    let mut seen = false;
    let mut lost = false;
    loop {
        let now_up = *up.borrow_and_update();
        let notice = match (now_up, seen, lost) {
            (true, _, true) => Some((
                decide::NotifyKind::ServerReachable,
                format!(
                    "cluster coordination restored: node {} reaches etcd again and acts on the targets it owns",
                    cluster.node()
                ),
            )),
            (false, true, false) => Some((
                decide::NotifyKind::ServerUnreachable,
                match cluster.on_etcd_down() {
                    crate::config::OnEtcdDown::Hold => format!(
                        "cluster coordination lost: node {} cannot reach etcd; it keeps evaluating but acts on no target until etcd is back (another node may act instead)",
                        cluster.node()
                    ),
                    crate::config::OnEtcdDown::ActAlone => format!(
                        "cluster coordination lost: node {} cannot reach etcd; on_etcd_down = \"act_alone\": it acts on every target without a lock until etcd is back (another node may act on the same target)",
                        cluster.node()
                    ),
                },
            )),
            _ => None,
        };
        seen |= now_up;
        if let Some((kind, message)) = notice {
            lost = !now_up;
            if lost {
                tracing::error!(node = %cluster.node(), "{message}");
            } else {
                tracing::info!(node = %cluster.node(), "{message}");
            }
            notify_about(&shared, kind, "etcd (cluster coordination)", &message).await;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = up.changed() => if changed.is_err() { return },
        }
    }
}
