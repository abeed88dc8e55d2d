//! The delivery loop: one task per channel (SMTP, each webhook) that sends
//! what waits in its outbox directory: new items first, oldest first, then
//! the backlog (items found at start and retries), oldest first. A backlog
//! is logged once, summed up once a minute and logged again when it clears
//! ([`super::backlog`]), not item by item.
//!
//! An item is removed only after the server accepted it. A failed attempt
//! is retried with exponential backoff and jitter (1 s doubling to 5 min);
//! an item still undelivered `give_up_after` after it was written gets one
//! last attempt and is then moved to `failed/` and counted
//! (`rollbackd_notifications_failed_total`). Items found at start (written
//! before a restart) are sent like new ones. A slow server only delays its
//! own channel: the decision loop only ever writes to the outbox.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::backlog::Backlog;
use super::limit::Limits;
use super::outbox;
use super::outlet::Transport;
use super::{Metrics, SendError};

/// First retry delay.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// How often the outbox is rescanned when nothing wakes the sender.
const RESCAN: Duration = Duration::from_secs(60);
/// How long one delivery attempt may take in all.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(600);

/// One channel: a directory of items and where they go.
#[derive(Debug)]
pub(crate) struct Channel {
    /// For logs and metric labels: `email`, `webhook[0]`.
    pub name: String,
    /// The outbox directory of this channel.
    pub dir: PathBuf,
    /// Item file extension.
    pub ext: &'static str,
    /// Where items go: the outlet's transport.
    pub transport: Box<dyn Transport>,
    /// Rate limits of this channel.
    pub limits: Limits,
}

impl Channel {
    /// The target an item is about (rate-limit key); `?` when unreadable.
    fn target_of(&self, bytes: &[u8]) -> String {
        self.transport
            .target_of(bytes)
            .unwrap_or_else(|| "?".to_string())
    }
}

/// Retry state of one item (in memory: after a restart an item starts over).
#[derive(Debug, Default)]
struct Attempts {
    count: u32,
    next: Option<Instant>,
    admitted: bool,
}

/// The delivery tasks, built at daemon start (the password is read then)
/// and started by [`Senders::spawn`].
#[derive(Debug)]
pub struct Senders {
    pub(crate) channels: Vec<Channel>,
    pub(crate) give_up_after: Duration,
    pub(crate) wake: watch::Receiver<u64>,
    pub(crate) metrics: Metrics,
}

impl Senders {
    /// How many channels deliver (0: mail stays in the outbox).
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    /// Whether nothing is delivered.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// Start one tracked task per channel; each stops when `cancel` fires
    /// (an attempt in flight is abandoned: the item stays in the outbox and
    /// is sent again after the restart, with the same Message-ID).
    pub fn spawn(self, tracker: &TaskTracker, cancel: CancellationToken) {
        for channel in self.channels {
            let sender = Sender {
                channel: Arc::new(channel),
                give_up_after: self.give_up_after,
                wake: self.wake.clone(),
                metrics: self.metrics,
                attempts: HashMap::new(),
                backlog: None,
                report: Backlog::default(),
            };
            tracker.spawn(sender.run(cancel.clone()));
        }
    }
}

/// One channel's loop.
struct Sender {
    channel: Arc<Channel>,
    give_up_after: Duration,
    wake: watch::Receiver<u64>,
    /// Where deliveries, failures and the backlog are counted.
    metrics: Metrics,
    attempts: HashMap<PathBuf, Attempts>,
    /// Items that waited when the sender started (written before it):
    /// sent after new ones. `None` until the first pass.
    backlog: Option<HashSet<PathBuf>>,
    /// Says a backlog once, then sums it up.
    report: Backlog,
}

/// What one attempt at one item left to do.
enum Next {
    /// Nothing more for this item (delivered, gone, or given up).
    Done,
    /// Try it again at this instant.
    At(Instant),
    /// Delivered: the server takes items again, retry the others now.
    Delivered,
}

impl Sender {
    async fn run(mut self, cancel: CancellationToken) {
        let name = self.channel.name.clone();
        tracing::info!(channel = %name, outbox = %self.channel.dir.display(), "notification sender started");
        loop {
            self.wake.borrow_and_update();
            let next = tokio::select! {
                _ = cancel.cancelled() => break,
                next = self.pass() => next,
            };
            let until = next.unwrap_or_else(|| Instant::now() + RESCAN);
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.wake.changed() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
        tracing::info!(channel = %name, "notification sender stopped");
    }

    /// Try every item that is due, new ones first; return when the next
    /// one will be.
    ///
    /// New items (written since the sender started and never failed) go
    /// before the backlog (items found at start, and retries), oldest
    /// first within each. When new mail is written while the backlog is
    /// being sent, the pass ends after the item in flight and a new one
    /// starts with it: a new incident's mail never waits behind a backlog.
    async fn pass(&mut self) -> Option<Instant> {
        let (fresh, old) = match self.list().await {
            Ok(items) => items,
            Err(retry) => return Some(retry),
        };
        let mut next: Option<Instant> = None;
        let mut again = false;
        for (path, is_new) in fresh
            .into_iter()
            .map(|p| (p, true))
            .chain(old.into_iter().map(|p| (p, false)))
        {
            if !is_new && self.wake.has_changed().unwrap_or(false) {
                // New mail meanwhile: it goes before the rest of the backlog.
                return Some(Instant::now());
            }
            match self.attempt(path, is_new).await {
                Next::Done => {}
                Next::At(t) => next = Some(next.map_or(t, |n| n.min(t))),
                Next::Delivered => {
                    // The server takes mail again: whatever waits for a
                    // retry goes now, oldest first (the rest of this pass,
                    // then a new one for those passed over).
                    for a in self.attempts.values_mut() {
                        again |= a.next.take().is_some();
                    }
                }
            }
        }
        if again {
            return Some(Instant::now());
        }
        next
    }

    /// The items waiting in the outbox, new ones and then the backlog,
    /// oldest first in each; the retry state of items gone is dropped.
    /// `Err`: the outbox could not be read, try again then.
    async fn list(&mut self) -> Result<(Vec<PathBuf>, Vec<PathBuf>), Instant> {
        let ch = self.channel.clone();
        let listed = {
            let (dir, ext) = (ch.dir.clone(), ch.ext);
            tokio::task::spawn_blocking(move || outbox::pending(&dir, ext)).await
        };
        let items = match listed {
            Ok(Ok(items)) => items,
            Ok(Err(e)) => {
                tracing::error!(channel = %ch.name, dir = %ch.dir.display(), error = %e, "cannot read the outbox");
                return Err(Instant::now() + Duration::from_secs(10));
            }
            Err(e) => {
                tracing::error!(error = %e, "outbox listing task failed");
                return Err(Instant::now() + Duration::from_secs(10));
            }
        };
        let listed: HashSet<&PathBuf> = items.iter().collect();
        self.attempts.retain(|p, _| listed.contains(p));
        match &mut self.backlog {
            // The first pass: whatever waits was written before we started.
            None => self.backlog = Some(items.iter().cloned().collect()),
            Some(b) => b.retain(|p| listed.contains(p)),
        }
        drop(listed);
        if let Some(m) = self.metrics {
            m.notifications_pending(&ch.name, items.len());
        }
        self.report.observe(&ch.name, items.len(), Instant::now());
        let old = |s: &Self, p: &PathBuf| {
            s.backlog.as_ref().is_some_and(|b| b.contains(p))
                || s.attempts.get(p).is_some_and(|a| a.count > 0)
        };
        Ok(items.into_iter().partition(|p| !old(self, p)))
    }

    /// One item: wait for its retry time and its rate limit, send it, and
    /// remove it, schedule its retry, or give up on it.
    async fn attempt(&mut self, path: PathBuf, is_new: bool) -> Next {
        let ch = self.channel.clone();
        let quiet = !is_new && self.report.on();
        let mut state = self.attempts.remove(&path).unwrap_or_default();
        if let Some(at) = state.next {
            if at > Instant::now() {
                self.attempts.insert(path, state);
                return Next::At(at);
            }
        }
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            // Gone meanwhile (another process, a human): nothing to do.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Next::Done,
            Err(e) => {
                tracing::error!(channel = %ch.name, path = %path.display(), error = %e, "cannot read outbox item");
                let at = Instant::now() + BACKOFF_MAX;
                state.next = Some(at);
                self.attempts.insert(path, state);
                return Next::At(at);
            }
        };
        if !state.admitted {
            let target = ch.target_of(&bytes);
            if let Err(wait) = ch.limits.admit(&target) {
                if state.next.is_none() {
                    if let Some(m) = self.metrics {
                        m.notification_rate_limited(&ch.name, &target);
                    }
                    if quiet {
                        self.report.rate_limited();
                    } else {
                        tracing::warn!(channel = %ch.name, %target, path = %path.display(), wait = %crate::util::fmt_duration(wait), "notification rate limit reached; the notification waits in the outbox");
                    }
                }
                let at = Instant::now() + wait.max(Duration::from_millis(100));
                state.next = Some(at);
                self.attempts.insert(path, state);
                return Next::At(at);
            }
            state.admitted = true;
        }
        let created = outbox::created_at(&path);
        let result = match tokio::time::timeout(ATTEMPT_LIMIT, ch.transport.send(&bytes)).await {
            Ok(r) => r,
            Err(_) => Err(SendError::Timeout(ATTEMPT_LIMIT)),
        };
        state.count += 1;
        match result {
            Ok(()) => {
                self.delivered(&path, &state, quiet).await;
                Next::Delivered
            }
            Err(error) => self.failed(path, state, created, &error, quiet).await,
        }
    }

    /// An item was delivered: remove it, count it, say so.
    async fn delivered(&mut self, path: &Path, state: &Attempts, quiet: bool) {
        let ch = &self.channel;
        if let Err(e) = blocking(path.to_path_buf(), |p| outbox::remove(&p)).await {
            // Sent but not removed: the next pass sends it again,
            // with the same Message-ID / Idempotency-Key.
            tracing::error!(channel = %ch.name, error = %e, "notification delivered but not removed from the outbox");
        }
        if let Some(m) = self.metrics {
            m.notification_sent(&ch.name);
        }
        if let Some(b) = &mut self.backlog {
            b.remove(path);
        }
        if quiet {
            self.report.delivered();
            tracing::debug!(channel = %ch.name, item = %file_name(path), attempts = state.count, "notification delivered");
        } else {
            tracing::info!(channel = %ch.name, item = %file_name(path), attempts = state.count, "notification delivered");
        }
    }

    /// An attempt failed: retry with backoff, or give up after
    /// `give_up_after` (moved to `failed/`, counted).
    async fn failed(
        &mut self,
        path: PathBuf,
        mut state: Attempts,
        created: chrono::DateTime<chrono::Utc>,
        error: &SendError,
        quiet: bool,
    ) -> Next {
        let ch = self.channel.clone();
        if let Some(m) = self.metrics {
            m.notification_send_error(&ch.name);
        }
        let age = (chrono::Utc::now() - created).to_std().unwrap_or_default();
        if age >= self.give_up_after {
            match blocking(path.clone(), |p| outbox::move_to_failed(&p)).await {
                Ok(to) => {
                    tracing::error!(channel = %ch.name, attempts = state.count, %error, moved_to = %to.display(), "giving up on a notification after give_up_after")
                }
                Err(e) => {
                    tracing::error!(channel = %ch.name, error = %e, "cannot move an undeliverable notification to failed/")
                }
            }
            if let Some(m) = self.metrics {
                m.notification_failed(&ch.name);
            }
            return Next::Done;
        }
        let delay = backoff(state.count).min(self.give_up_after - age);
        let at = Instant::now() + delay;
        state.next = Some(at);
        if quiet {
            self.report.failed(&error.to_string());
        } else {
            tracing::warn!(channel = %ch.name, item = %file_name(&path), attempt = state.count, retry_in = %crate::util::fmt_duration(delay), %error, "notification not delivered; will retry");
        }
        self.attempts.insert(path, state);
        Next::At(at)
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

async fn blocking<T: Send + 'static>(
    path: PathBuf,
    f: impl FnOnce(PathBuf) -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(move || f(path))
        .await
        .map_err(std::io::Error::other)?
}

/// Delay before attempt `n + 1` after `n` failures: 1 s doubling, capped,
/// with +-20 % jitter so that many items (or daemons) do not retry in step.
pub fn backoff(failures: u32) -> Duration {
    let exp = BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
        .min(BACKOFF_MAX);
    exp.mul_f64(0.8 + 0.4 * unit_random())
}

/// A number in [0, 1) from the std hasher's random keys: enough for jitter.
fn unit_random() -> f64 {
    use std::hash::BuildHasher;
    let x = std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now());
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for (n, base) in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (30, 300.0)] {
            let d = backoff(n).as_secs_f64();
            assert!(d >= base * 0.8 && d <= base * 1.2, "attempt {n}: {d}");
        }
        let all: std::collections::HashSet<u128> = (0..20).map(|_| backoff(5).as_nanos()).collect();
        assert!(all.len() > 1, "jitter varies");
    }
}
