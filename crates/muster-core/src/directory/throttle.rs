//! Login throttling: after a number of free failures, each further failure doubles the wait
//! before the next attempt is considered, up to a ceiling. Counters are kept per account name
//! (whether or not the account exists, so throttling reveals nothing) and per client address.

use time::{Duration, OffsetDateTime};

#[derive(Debug, Clone, Copy)]
pub struct ThrottlePolicy {
    /// Failures allowed before any wait applies.
    pub free_failures: u32,
    /// Wait after the first failure beyond the free ones.
    pub base_delay_secs: i64,
    /// Longest wait.
    pub max_delay_secs: i64,
    /// A counter is forgotten this long after its last failure.
    pub window_secs: i64,
}

impl ThrottlePolicy {
    pub fn per_account() -> Self {
        Self {
            free_failures: 5,
            base_delay_secs: 2,
            max_delay_secs: 15 * 60,
            window_secs: 15 * 60,
        }
    }

    /// Addresses get more free failures: many people may share one address.
    pub fn per_address() -> Self {
        Self {
            free_failures: 50,
            base_delay_secs: 2,
            max_delay_secs: 15 * 60,
            window_secs: 15 * 60,
        }
    }

    /// When the next attempt may be made, given `failures` so far, the last at `last_failure`.
    pub fn blocked_until(&self, failures: u32, last_failure: OffsetDateTime) -> Option<OffsetDateTime> {
        if failures < self.free_failures.max(1) {
            return None;
        }
        let excess = (failures - self.free_failures.max(1)).min(30);
        let delay = self
            .base_delay_secs
            .saturating_mul(1_i64 << excess)
            .min(self.max_delay_secs);
        Some(last_failure + Duration::seconds(delay))
    }

    /// Whether a counter last bumped at `last_failure` has lapsed by `now`.
    pub fn expired(&self, last_failure: OffsetDateTime, now: OffsetDateTime) -> bool {
        now - last_failure > Duration::seconds(self.window_secs)
    }
}

/// A stored counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleState {
    pub failures: u32,
    pub last_failure: OffsetDateTime,
}

impl ThrottleState {
    /// Seconds the caller must still wait at `now`, if any.
    pub fn wait(&self, policy: &ThrottlePolicy, now: OffsetDateTime) -> Option<u64> {
        if policy.expired(self.last_failure, now) {
            return None;
        }
        let until = policy.blocked_until(self.failures, self.last_failure)?;
        // Rounded up: a client that waits exactly Retry-After must not be refused again.
        let left = (until - now).as_seconds_f64().ceil();
        (until > now).then_some((left as u64).max(1))
    }
}

impl ThrottlePolicy {
    /// Counts one attempt at `now` against `state`: the counter to store, or the seconds to
    /// wait when the attempt must not be made at all. Attempts are counted *before* the
    /// password is checked, so concurrent guesses cannot all slip through one window.
    pub fn admit(&self, state: Option<ThrottleState>, now: OffsetDateTime) -> Result<ThrottleState, u64> {
        match state {
            Some(s) if !self.expired(s.last_failure, now) => match s.wait(self, now) {
                Some(wait) => Err(wait),
                None => Ok(ThrottleState {
                    failures: s.failures.saturating_add(1),
                    last_failure: now,
                }),
            },
            _ => Ok(ThrottleState {
                failures: 1,
                last_failure: now,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_exponentially_after_the_free_failures() {
        let p = ThrottlePolicy::per_account();
        let t0 = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        assert_eq!(p.blocked_until(4, t0), None);
        assert_eq!(p.blocked_until(5, t0), Some(t0 + Duration::seconds(2)));
        assert_eq!(p.blocked_until(6, t0), Some(t0 + Duration::seconds(4)));
        assert_eq!(p.blocked_until(100, t0), Some(t0 + Duration::seconds(900)));
        let s = ThrottleState {
            failures: 6,
            last_failure: t0,
        };
        assert_eq!(s.wait(&p, t0), Some(4));
        assert_eq!(s.wait(&p, t0 + Duration::seconds(5)), None);
        let many = ThrottleState {
            failures: 40,
            last_failure: t0,
        };
        assert_eq!(
            many.wait(&p, t0 + Duration::seconds(16 * 60)),
            None,
            "lapses after the window"
        );
    }
}

#[cfg(test)]
mod admit_tests {
    use super::*;

    #[test]
    fn admits_the_free_attempts_then_makes_callers_wait() {
        let p = ThrottlePolicy::per_account();
        let t0 = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        let mut state = None;
        for n in 1..=5 {
            let next = p.admit(state, t0).expect("free attempt");
            assert_eq!(next.failures, n);
            state = Some(next);
        }
        assert_eq!(p.admit(state, t0), Err(2), "the sixth waits");
        let later = p.admit(state, t0 + Duration::seconds(2)).expect("after the wait");
        assert_eq!(later.failures, 6);
        assert_eq!(
            p.admit(Some(later), t0 + Duration::seconds(2)),
            Err(4),
            "then twice as long"
        );
        let lapsed = p.admit(Some(later), t0 + Duration::minutes(20)).expect("lapsed");
        assert_eq!(lapsed.failures, 1, "a lapsed counter starts again");
    }
}
