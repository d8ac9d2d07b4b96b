//! Login throttling that slows guessing without handing a lock-out to whoever sends wrong
//! passwords (NIST SP 800-63B §5.2.2; OWASP Authentication Cheat Sheet, "Account Lockout").
//!
//! Every password check (a login, or a re-authentication from a session) is counted on:
//!
//! 1. **the account name and the client address together** (strict): a few free failures,
//!    then a doubling wait. Only guesses from that address at that name are held back.
//! 2. **the account name** (a high ceiling, at most 100 consecutive failures as NIST allows):
//!    below it failures elsewhere never hold a login back; above it the name is slowed, except
//!    from addresses that logged in to it before ("known" addresses, which NIST lists as a way
//!    to tell the subscriber from an attacker), so the real user still gets in from their own.
//! 3. **the client address, by distinct failing account names**: an address that fails on many
//!    names (password spraying) is slowed for *new* names only; names it logged in to before,
//!    and names already failing from it (held back by their own counter), are not, so the
//!    people behind a shared address are not starved by someone spraying from it.
//!
//! Counters are kept under keyed hashes (HMAC-SHA256 under a key derived from the server key):
//! the table never holds what was typed as a username (sometimes a password typed into the
//! wrong field), and counts names whether or not an account exists, so throttling reveals
//! nothing about which do. An attempt is counted *before* its password is checked, with
//! compare-and-swap updates, so a burst of concurrent guesses cannot all pass one check; an
//! attempt whose credentials turn out right is given back.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::{Duration, OffsetDateTime};

/// One counter's curve: free failures, then a doubling wait up to a ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Per (account name, address): 5 free failures, then 2 s, 4 s, … up to 15 min; forgotten
    /// 15 min after the last failure.
    pub fn per_account_and_address() -> Self {
        Self {
            free_failures: 5,
            base_delay_secs: 2,
            max_delay_secs: 15 * 60,
            window_secs: 15 * 60,
        }
    }

    /// Per account name: 100 consecutive failures (NIST's most) from anywhere, then the same
    /// doubling wait for addresses the account never logged in from; forgotten a day after the
    /// last failure, and reset by a successful login.
    pub fn per_account() -> Self {
        Self {
            free_failures: 100,
            base_delay_secs: 2,
            max_delay_secs: 15 * 60,
            window_secs: 24 * 3600,
        }
    }

    /// Per address: 50 distinct failing account names within an hour, then a doubling wait
    /// before each further new name.
    pub fn per_address() -> Self {
        Self {
            free_failures: 50,
            base_delay_secs: 2,
            max_delay_secs: 15 * 60,
            window_secs: 3600,
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

    /// The oldest failure still counted at `now`.
    pub fn since(&self, now: OffsetDateTime) -> OffsetDateTime {
        now - Duration::seconds(self.window_secs)
    }

    /// Counts one attempt at `now` against `state`: the counter to store, or the seconds to
    /// wait when the attempt must not be made at all. Attempts are counted *before* the
    /// password is checked, so concurrent guesses cannot all slip through one window.
    pub fn admit(&self, state: Option<ThrottleState>, now: OffsetDateTime) -> Result<ThrottleState, u64> {
        match state {
            Some(s) if !self.expired(s.last_failure, now) => match s.wait(self, now) {
                Some(wait) => Err(wait),
                None => Ok(self.count(Some(s), now)),
            },
            _ => Ok(self.count(None, now)),
        }
    }

    /// Counts one attempt without holding it back (an address the account logged in from).
    pub fn count(&self, state: Option<ThrottleState>, now: OffsetDateTime) -> ThrottleState {
        match state {
            Some(s) if !self.expired(s.last_failure, now) => ThrottleState {
                failures: s.failures.saturating_add(1),
                last_failure: now,
            },
            _ => ThrottleState {
                failures: 1,
                last_failure: now,
            },
        }
    }

    /// For a counter of distinct names (the accounts failing from an address): whether one
    /// more may be tried when `others` are counted besides it, the latest at `latest`.
    pub fn admit_another(&self, others: u32, latest: Option<OffsetDateTime>, now: OffsetDateTime) -> Result<(), u64> {
        let Some(last_failure) = latest else {
            return Ok(());
        };
        let state = ThrottleState {
            failures: others,
            last_failure,
        };
        match state.wait(self, now) {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
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

/// The whole login throttle: the three counters and how long a login makes its address known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginThrottle {
    pub per_account_and_address: ThrottlePolicy,
    pub per_account: ThrottlePolicy,
    pub per_address: ThrottlePolicy,
    /// A successful login makes its address known to the account for this long.
    pub known_address_days: i64,
}

/// NIST SP 800-63B §5.2.2: no more than 100 consecutive failed attempts on one account.
pub const MAX_ACCOUNT_FAILURES: u32 = 100;

impl Default for LoginThrottle {
    fn default() -> Self {
        Self {
            per_account_and_address: ThrottlePolicy::per_account_and_address(),
            per_account: ThrottlePolicy::per_account(),
            per_address: ThrottlePolicy::per_address(),
            known_address_days: 90,
        }
    }
}

impl LoginThrottle {
    /// The longest any counter row is kept.
    pub fn longest_window_secs(&self) -> i64 {
        self.per_account_and_address
            .window_secs
            .max(self.per_account.window_secs)
            .max(self.per_address.window_secs)
    }
}

/// The stored keys of one attempt's counters: keyed hashes, never the typed name or address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginKeys {
    /// The account name (its username key), whatever address.
    pub account: String,
    /// The account name from this address.
    pub pair: String,
    /// The client address, when known.
    pub address: Option<String>,
}

/// Computes [`LoginKeys`] with HMAC-SHA256 under a secret key, so that the stored keys cannot
/// be turned back into names by trying candidates without the key.
#[derive(Clone)]
pub struct ThrottleKeys {
    key: [u8; 32],
}

impl std::fmt::Debug for ThrottleKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ThrottleKeys(<redacted>)")
    }
}

impl ThrottleKeys {
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// `kind:` + the hex HMAC of the parts, each length-prefixed so that no two different
    /// lists of parts hash alike.
    fn tag(&self, kind: &str, parts: &[&str]) -> String {
        // HMAC takes a key of any length: this cannot fail.
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(kind.as_bytes());
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p.as_bytes());
        }
        let digest = mac.finalize().into_bytes();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{kind}:{hex}")
    }

    /// The keys of a password-reset request naming `identifier` (a username or an address,
    /// normalised here) from `address`: (per identifier, per client address).
    pub fn reset_keys(&self, identifier: &str, address: Option<&str>) -> (String, Option<String>) {
        let name = super::username::key(identifier);
        (
            self.tag("reset_account", &[&name]),
            address.map(|a| self.tag("reset_address", &[a])),
        )
    }

    /// The keys of an attempt by `username` (normalised as logins look names up) from `address`.
    pub fn of(&self, username: &str, address: Option<&str>) -> LoginKeys {
        let name = super::username::key(username);
        let addr = address.unwrap_or("");
        LoginKeys {
            account: self.tag("account", &[&name]),
            pair: self.tag("pair", &[&name, addr]),
            address: address.map(|a| self.tag("address", &[a])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + Duration::days(20_000)
    }

    #[test]
    fn backs_off_exponentially_after_the_free_failures() {
        let p = ThrottlePolicy::per_account_and_address();
        let t0 = t0();
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

    #[test]
    fn admits_the_free_attempts_then_makes_callers_wait() {
        let p = ThrottlePolicy::per_account_and_address();
        let t0 = t0();
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
        // Counting without a limit (a known address) never refuses, and still counts.
        let counted = p.count(Some(later), t0 + Duration::seconds(2));
        assert_eq!(counted.failures, 7);
    }

    #[test]
    fn the_defaults_follow_nist() {
        let t = LoginThrottle::default();
        assert!(t.per_account.free_failures <= MAX_ACCOUNT_FAILURES);
        assert!(t.per_account.free_failures > t.per_account_and_address.free_failures * 10);
        assert_eq!(t.longest_window_secs(), 24 * 3600);
    }

    #[test]
    fn distinct_names_are_free_up_to_the_ceiling() {
        let p = ThrottlePolicy::per_address();
        let t0 = t0();
        assert_eq!(p.admit_another(0, None, t0), Ok(()));
        assert_eq!(p.admit_another(49, Some(t0), t0), Ok(()));
        assert_eq!(p.admit_another(50, Some(t0), t0), Err(2));
        assert_eq!(p.admit_another(51, Some(t0), t0 + Duration::seconds(1)), Err(3));
        assert_eq!(p.admit_another(51, Some(t0), t0 + Duration::seconds(4)), Ok(()));
    }

    #[test]
    fn keys_are_keyed_hashes_of_the_normalised_name() {
        let k = ThrottleKeys::new([7; 32]);
        let a = k.of("Alice", Some("192.0.2.1"));
        assert_eq!(
            a,
            k.of("ALICE", Some("192.0.2.1")),
            "the name is normalised as logins are"
        );
        assert_eq!(a.account, k.of("ａｌｉｃｅ", None).account);
        assert_ne!(a.pair, k.of("alice", Some("192.0.2.2")).pair);
        assert_eq!(a.address, k.of("bob", Some("192.0.2.1")).address);
        for stored in [&a.account, &a.pair, a.address.as_deref().unwrap_or_default()] {
            assert!(!stored.contains("alice") && !stored.contains("192.0.2"), "{stored}");
        }
        assert!(a.account.starts_with("account:") && a.pair.starts_with("pair:"));
        let other_key = ThrottleKeys::new([8; 32]).of("alice", Some("192.0.2.1"));
        assert_ne!(a.account, other_key.account, "another server key, other keys");
        // Length prefixes: ("ab", "c") and ("a", "bc") are different pairs.
        assert_ne!(k.of("ab", Some("c")).pair, k.of("a", Some("bc")).pair);
    }
}
