//! The login throttle: how a password check is counted before the password is looked at, and
//! given back when the credentials were right (the policy is
//! `muster_core::directory::throttle`).
//!
//! An attempt that must wait leaves nothing counted; counters are bumped by compare-and-swap,
//! so racing attempts are each counted once.

use crate::{Directory, store_error};
use muster_core::audit::RequestCtx;
use muster_core::directory::throttle::{LoginKeys, ThrottlePolicy};
use muster_core::error::DomainError;
use time::{Duration, OffsetDateTime};

/// One password check's claim on the login throttle, to give back when the credentials were
/// right.
pub(crate) struct Attempt {
    pub(super) keys: LoginKeys,
    /// This attempt added the name to the address's failing names.
    noted_address: bool,
}

/// The longest of the waits found so far.
#[derive(Default)]
struct Wait(Option<u64>);

impl Wait {
    fn add(&mut self, wait: Option<u64>) {
        if let Some(w) = wait {
            self.0 = Some(self.0.map_or(w, |x| x.max(w)));
        }
    }
}

impl Directory {
    /// Counts one password check by `username` from `ctx` on the login throttle before the
    /// password is looked at (see `muster_core::directory::throttle`): Err(wait) when the
    /// attempt must not be made, and then nothing stays counted.
    pub(crate) async fn claim_attempt(
        &self,
        username: &str,
        ctx: &RequestCtx,
        now: OffsetDateTime,
    ) -> Result<Result<Attempt, u64>, DomainError> {
        let t = &self.config.throttle;
        let keys = self.throttle_keys.of(username, ctx.remote_addr.as_deref());
        let known = match &keys.address {
            Some(address) => self
                .store
                .login_address_known(&keys.account, address, now - Duration::days(t.known_address_days))
                .await
                .map_err(store_error)?,
            None => false,
        };
        // A name new to the address's failing names is held to the address's limit; a name
        // already failing from it is held back by its own counter instead.
        let new_name = match (&keys.address, known) {
            (Some(address), false) => !self
                .store
                .address_failure_live(address, &keys.account, t.per_address.since(now))
                .await
                .map_err(store_error)?,
            _ => false,
        };

        // First look at every counter without writing: a throttled attempt must not bump (and
        // so keep fresh) the counters that did not hold it back.
        let mut wait = Wait::default();
        let pair = self.store.throttle_state(&keys.pair).await.map_err(store_error)?;
        wait.add(t.per_account_and_address.admit(pair, now).err());
        if !known {
            let account = self.store.throttle_state(&keys.account).await.map_err(store_error)?;
            wait.add(t.per_account.admit(account, now).err());
        }
        if let (Some(address), true) = (&keys.address, new_name) {
            wait.add(self.address_wait(address, &keys.account, now).await?);
        }
        if let Some(w) = wait.0 {
            return Ok(Err(w));
        }

        let mut attempt = Attempt {
            keys,
            noted_address: false,
        };
        if let Err(w) = self
            .bump(&attempt.keys.pair, &t.per_account_and_address, true, now)
            .await?
        {
            return Ok(Err(w));
        }
        if let Err(w) = self.bump(&attempt.keys.account, &t.per_account, !known, now).await? {
            self.release_throttle_keys(&[&attempt.keys.pair]).await;
            return Ok(Err(w));
        }
        if let (Some(address), false) = (attempt.keys.address.clone(), known) {
            self.store
                .note_address_failure(&address, &attempt.keys.account, now)
                .await
                .map_err(store_error)?;
            if new_name {
                attempt.noted_address = true;
                // Counted again after writing: of two attempts racing on new names, the later
                // to count sees the other.
                if let Some(w) = self.address_wait(&address, &attempt.keys.account, now).await? {
                    self.release_attempt(&attempt).await;
                    return Ok(Err(w));
                }
            }
        }
        Ok(Ok(attempt))
    }

    /// The wait before `account` may be tried as a new name from `address`, if any.
    async fn address_wait(
        &self,
        address: &str,
        account: &str,
        now: OffsetDateTime,
    ) -> Result<Option<u64>, DomainError> {
        let policy = &self.config.throttle.per_address;
        let (others, latest) = self
            .store
            .address_failures_besides(address, account, policy.since(now))
            .await
            .map_err(store_error)?;
        Ok(policy.admit_another(others, latest, now).err())
    }

    /// Counts one attempt on the counter `key` by compare-and-swap (a lost race means another
    /// attempt was counted first: read again). `limited`: the policy may refuse it.
    pub(crate) async fn bump(
        &self,
        key: &str,
        policy: &ThrottlePolicy,
        limited: bool,
        now: OffsetDateTime,
    ) -> Result<Result<(), u64>, DomainError> {
        // Sixteen lost races in a row means a burst on this key: treat it as throttled.
        for _ in 0..16 {
            let state = self.store.throttle_state(key).await.map_err(store_error)?;
            let next = if limited {
                match policy.admit(state, now) {
                    Ok(next) => next,
                    Err(wait) => return Ok(Err(wait)),
                }
            } else {
                policy.count(state, now)
            };
            if self.store.throttle_cas(key, state, next).await.map_err(store_error)? {
                return Ok(Ok(()));
            }
        }
        Ok(Err(1))
    }

    async fn release_throttle_keys(&self, keys: &[&str]) {
        for key in keys {
            if let Err(e) = self.store.release_throttle(key).await {
                tracing::warn!(error = %e, "could not release a login attempt");
            }
        }
    }

    /// Gives a counted attempt back: the credentials were right.
    pub(crate) async fn release_attempt(&self, attempt: &Attempt) {
        self.release_throttle_keys(&[&attempt.keys.pair, &attempt.keys.account])
            .await;
        if let (Some(address), true) = (&attempt.keys.address, attempt.noted_address)
            && let Err(e) = self.store.forget_address_failure(address, &attempt.keys.account).await
        {
            tracing::warn!(error = %e, "could not release a login attempt");
        }
    }
}
