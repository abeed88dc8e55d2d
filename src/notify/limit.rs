//! No storms: governor rate limits per target and over all targets, one
//! pair per channel. A notification over the limit is not dropped: it waits
//! in the outbox until the limiter lets it through.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The limits of one channel.
pub struct Limits {
    per_target: DefaultKeyedRateLimiter<String>,
    global: DefaultDirectRateLimiter,
    clock: DefaultClock,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").finish_non_exhaustive()
    }
}

impl Limits {
    /// At most `per_target` notifications about one target and `global` in
    /// all per hour, each allowed in a burst.
    pub fn new(per_target: NonZeroU32, global: NonZeroU32) -> Limits {
        Limits {
            per_target: RateLimiter::keyed(Quota::per_hour(per_target)),
            global: RateLimiter::direct(Quota::per_hour(global)),
            clock: DefaultClock::default(),
        }
    }

    /// Admit one notification about `target` now, or say how long to wait.
    /// The per-target limit is asked first, so one noisy target cannot use
    /// up the global allowance of the others.
    pub fn admit(&self, target: &str) -> Result<(), Duration> {
        if let Err(not_until) = self.per_target.check_key(&target.to_string()) {
            return Err(not_until.wait_time_from(self.clock.now()));
        }
        if let Err(not_until) = self.global.check() {
            return Err(not_until.wait_time_from(self.clock.now()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_target_then_global() {
        let n = |v| NonZeroU32::new(v).unwrap();
        let l = Limits::new(n(2), n(3));
        assert!(l.admit("a").is_ok());
        assert!(l.admit("a").is_ok());
        let wait = l.admit("a").unwrap_err();
        // One cell per 30 minutes at 2 per hour.
        assert!(wait > Duration::from_secs(29 * 60), "{wait:?}");
        assert!(l.admit("b").is_ok());
        assert!(l.admit("c").is_err(), "global limit of 3 reached");
    }
}
