//! The node's etcd session: connect, grant the lease, keep it alive every
//! third of its TTL, and say whether etcd is reachable. One task per node.
//!
//! The lease is the node's liveness in etcd: every owner key is attached to
//! it, so when the node dies (no keepalive for `lease_ttl`) etcd deletes its
//! owner keys by itself. A keepalive that fails does not drop the lease at
//! once: if etcd is back before the TTL ran out, the same lease (and so
//! every lock under it) lives on. Only when etcd answers that the lease is
//! gone (TTL 0) is a new one granted, and the locks of the old one are
//! forgotten.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::Client;
use tokio_util::sync::CancellationToken;

use super::{Inner, LeaseState};

/// Run the session until `token` is cancelled. The lease is not revoked on
/// cancellation: that is what a killed process looks like to the others
/// ([`Cluster::shutdown`](super::Cluster::shutdown) revokes first).
pub(super) async fn run(inner: Arc<Inner>, token: CancellationToken) {
    let step = inner.step_timeout();
    let mut backoff = Duration::from_millis(100);
    loop {
        if token.is_cancelled() {
            break;
        }
        let client = match inner.client().await {
            Ok(c) => c,
            Err(e) => {
                inner.set_up(false, &e.to_string());
                if !pause(&token, &mut backoff, step).await {
                    break;
                }
                continue;
            }
        };
        // Keep the lease we have while it may still be alive in etcd.
        let lease = match inner.lease_state() {
            Some(l) => l,
            None => match grant(&inner, client.clone(), step).await {
                Ok(l) => {
                    backoff = Duration::from_millis(100);
                    l
                }
                Err(why) => {
                    let why = why.to_string();
                    inner.set_up(false, &why);
                    if !pause(&token, &mut backoff, step).await {
                        break;
                    }
                    continue;
                }
            },
        };
        match keep(&inner, client, lease.id, &token).await {
            Kept::Cancelled => break,
            Kept::Lost => {
                tracing::warn!(
                    lease = format!("{:x}", lease.id),
                    "etcd lease expired: this node's locks are gone; granting a new lease"
                );
                inner.lease_lost();
                inner.set_up(false, "the lease expired");
            }
            Kept::Failed(why) => {
                inner.set_up(false, &why);
                // The client reconnects by itself; a fresh one is made
                // only after repeated failures (auth tokens, DNS).
                inner.note_failure();
                if !pause(&token, &mut backoff, step).await {
                    break;
                }
            }
        }
    }
}

/// Sleep `backoff` (doubling, at most `cap`) unless cancelled; false when
/// cancelled.
async fn pause(token: &CancellationToken, backoff: &mut Duration, cap: Duration) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(cap);
    tokio::select! {
        _ = token.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

/// Why no lease could be granted.
#[derive(Debug, thiserror::Error)]
enum GrantError {
    #[error("lease grant timed out after {0:?}")]
    Timeout(Duration),
    #[error("lease grant failed: {0}")]
    Failed(#[from] etcd_client::Error),
}

async fn grant(
    inner: &Inner,
    mut client: Client,
    step: Duration,
) -> Result<LeaseState, GrantError> {
    let ttl = inner.ttl.as_secs() as i64;
    let sent = Instant::now();
    let resp = tokio::time::timeout(step, client.lease_grant(ttl, None))
        .await
        .map_err(|_| GrantError::Timeout(step))??;
    let lease = LeaseState {
        id: resp.id(),
        valid_until: sent + Duration::from_secs(resp.ttl().max(0) as u64),
    };
    inner.set_lease(Some(lease));
    inner.set_up(true, "lease granted");
    tracing::info!(
        lease = format!("{:x}", lease.id),
        ttl = resp.ttl(),
        node = %inner.node,
        "etcd lease granted"
    );
    Ok(lease)
}

enum Kept {
    Cancelled,
    Lost,
    Failed(String),
}

/// Keep `id` alive every third of the TTL until cancelled or failing.
async fn keep(inner: &Inner, mut client: Client, id: i64, token: &CancellationToken) -> Kept {
    let step = inner.step_timeout();
    let every = inner.ttl / 3;
    let opened = tokio::select! {
        _ = token.cancelled() => return Kept::Cancelled,
        r = tokio::time::timeout(step, client.lease_keep_alive(id)) => r,
    };
    let (mut keeper, mut stream) = match opened {
        Ok(Ok(pair)) => pair,
        // Opening sends a first keepalive; etcd-client reports an answer
        // of TTL 0 (the lease expired in etcd) as this error.
        Ok(Err(etcd_client::Error::LeaseKeepAliveError(m))) if m == "lease not found" => {
            return Kept::Lost
        }
        Ok(Err(e)) => return Kept::Failed(format!("lease keepalive failed: {e}")),
        Err(_) => return Kept::Failed(format!("lease keepalive timed out after {step:?}")),
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = token.cancelled() => return Kept::Cancelled,
            _ = tick.tick() => {}
        }
        let sent = Instant::now();
        let round = async {
            keeper.keep_alive().await?;
            stream.message().await
        };
        let answer = tokio::select! {
            _ = token.cancelled() => return Kept::Cancelled,
            r = tokio::time::timeout(step, round) => r,
        };
        match answer {
            Ok(Ok(Some(resp))) if resp.ttl() > 0 => {
                inner.metrics.cluster_lease_renewed(sent.elapsed());
                inner.set_lease(Some(LeaseState {
                    id,
                    valid_until: sent + Duration::from_secs(resp.ttl() as u64),
                }));
                inner.set_up(true, "lease renewed");
            }
            Ok(Ok(Some(_))) => return Kept::Lost,
            Ok(Ok(None)) => return Kept::Failed("etcd closed the keepalive stream".into()),
            Ok(Err(e)) => return Kept::Failed(format!("lease keepalive failed: {e}")),
            Err(_) => return Kept::Failed(format!("lease keepalive timed out after {step:?}")),
        }
        // Past its deadline without a renewal the lease may be gone in
        // etcd; `held` already says no. The next answer tells for sure.
    }
}
