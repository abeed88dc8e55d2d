//! What a sender says about a backlog: once when it forms, then one summary
//! a minute while it lasts, once when it clears. Ten thousand waiting mails
//! against a server that is down are one WARN and a line a minute, not a
//! WARN per item per attempt.

use std::time::Duration;

use tokio::time::Instant;

/// Items waiting in one outbox that make a backlog.
pub const BACKLOG_AT: usize = 10;

/// How often a backlog is summed up while it lasts.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// One channel's backlog reporting.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    /// When the backlog was announced; `None`: no backlog now.
    since: Option<Instant>,
    /// When the last summary (or the announcement) was logged.
    last_said: Option<Instant>,
    delivered: u64,
    failed: u64,
    rate_limited: u64,
    last_error: Option<String>,
}

impl Backlog {
    /// Whether a backlog is being reported (per-item lines are quiet then).
    pub fn on(&self) -> bool {
        self.since.is_some()
    }

    /// One pass saw `waiting` items: announce, sum up or clear.
    pub fn observe(&mut self, channel: &str, waiting: usize, now: Instant) {
        match self.since {
            None if waiting >= BACKLOG_AT => {
                tracing::warn!(
                    channel,
                    waiting,
                    "notification backlog: {waiting} notifications wait in the outbox; new incidents' notifications go first, the backlog after; a summary follows every {} while it lasts",
                    crate::util::fmt_duration(SUMMARY_EVERY)
                );
                self.since = Some(now);
                self.last_said = Some(now);
            }
            None => {}
            Some(since) if waiting == 0 => {
                tracing::info!(
                    channel,
                    delivered = self.delivered,
                    failed_attempts = self.failed,
                    lasted = %crate::util::fmt_duration(now - since),
                    "notification backlog cleared"
                );
                *self = Backlog::default();
            }
            Some(_) => {
                let due = self.last_said.is_none_or(|t| now - t >= SUMMARY_EVERY);
                if due {
                    let last_error = self.last_error.take().unwrap_or_else(|| "none".into());
                    tracing::warn!(
                        channel,
                        waiting,
                        delivered = self.delivered,
                        failed_attempts = self.failed,
                        rate_limited = self.rate_limited,
                        %last_error,
                        "notification backlog: {waiting} still wait; since the last summary {} delivered, {} attempts failed, {} held by the rate limit",
                        self.delivered,
                        self.failed,
                        self.rate_limited
                    );
                    self.delivered = 0;
                    self.failed = 0;
                    self.rate_limited = 0;
                    self.last_said = Some(now);
                }
            }
        }
    }

    /// An item was delivered.
    pub fn delivered(&mut self) {
        self.delivered += 1;
    }

    /// An attempt failed with `error`.
    pub fn failed(&mut self, error: &str) {
        self.failed += 1;
        self.last_error = Some(error.to_string());
    }

    /// An item waits for the rate limit.
    pub fn rate_limited(&mut self) {
        self.rate_limited += 1;
    }
}
