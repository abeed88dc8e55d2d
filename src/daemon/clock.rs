//! Where the daemon's decisions get the time from. Production reads the
//! wall clock; an in-process test under tokio's paused time uses
//! [`TokioClock`], whose wall time moves with tokio's clock, so that a
//! confirmation deadline an hour away is reached in no time.

use std::fmt::Debug;

use chrono::Utc;

use crate::decide::Time;

/// The time every step, deadline and journal entry of the daemon uses.
pub trait Clock: Send + Sync + Debug {
    /// Now.
    fn now(&self) -> Time;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Time {
        Utc::now()
    }
}

/// Wall time that advances with tokio's clock from the moment it was made:
/// with `tokio::time::pause()` (or `#[tokio::test(start_paused = true)]`)
/// time jumps whenever every task waits on a timer.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    wall: Time,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading the wall time now, then following tokio's clock.
    pub fn new() -> TokioClock {
        TokioClock {
            wall: Utc::now(),
            start: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Time {
        let elapsed = tokio::time::Instant::now().duration_since(self.start);
        self.wall + chrono::TimeDelta::from_std(elapsed).unwrap_or(chrono::TimeDelta::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = TokioClock::new();
        let before = clock.now();
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        let after = clock.now();
        assert_eq!((after - before).num_seconds(), 3600);
    }
}
