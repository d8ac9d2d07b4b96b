//! Counters of login attempts (per account name and address, per account name), the account
//! names failing from each address, and the addresses each account name logged in from. Kept
//! in the database so that every node sees the same counts; every key is a keyed hash made by
//! the domain, which also decides the policy (`muster_core::directory::throttle`).

use crate::{Result, Store, Ts, on_db};
use muster_core::directory::throttle::ThrottleState;
use time::OffsetDateTime;

impl Store {
    /// The counter stored under `key`, if any.
    pub async fn throttle_state(&self, key: &str) -> Result<Option<ThrottleState>> {
        let row: Option<(i64, Ts)> = on_db!(self, read, pool => {
            sqlx::query_as("SELECT failures, last_failure FROM login_throttle WHERE key = $1")
                .bind(key)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(failures, last)| ThrottleState {
            failures: u32::try_from(failures).unwrap_or(u32::MAX),
            last_failure: last.0,
        }))
    }

    /// Replaces the counter under `key` if it still is `expected` (None: absent). False when
    /// another attempt changed it first; the caller reads it again and decides again. This is
    /// how concurrent login attempts are counted without losing any and without letting more
    /// through than the policy allows.
    pub async fn throttle_cas(&self, key: &str, expected: Option<ThrottleState>, new: ThrottleState) -> Result<bool> {
        let n = on_db!(self, write, pool => {
            match expected {
                None => sqlx::query(
                    "INSERT INTO login_throttle (key, failures, last_failure) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING",
                )
                .bind(key)
                .bind(i64::from(new.failures))
                .bind(Ts(new.last_failure))
                .execute(pool)
                .await?
                .rows_affected(),
                Some(old) => sqlx::query(
                    "UPDATE login_throttle SET failures = $2, last_failure = $3 \
                     WHERE key = $1 AND failures = $4 AND last_failure = $5",
                )
                .bind(key)
                .bind(i64::from(new.failures))
                .bind(Ts(new.last_failure))
                .bind(i64::from(old.failures))
                .bind(Ts(old.last_failure))
                .execute(pool)
                .await?
                .rows_affected(),
            }
        });
        Ok(n == 1)
    }

    /// Gives back one counted attempt (the credentials turned out to be right). A counter
    /// that drops to zero is removed, so a refused burst leaves no rows behind.
    pub async fn release_throttle(&self, key: &str) -> Result<()> {
        on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE login_throttle SET failures = failures - 1 WHERE key = $1 AND failures > 0")
                .bind(key)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM login_throttle WHERE key = $1 AND failures <= 0").bind(key).execute(&mut *tx).await?;
            crate::commit(tx).await?;
        });
        Ok(())
    }

    /// Whether `account_key` logged in from `address_key` since `since`.
    pub async fn login_address_known(
        &self,
        account_key: &str,
        address_key: &str,
        since: OffsetDateTime,
    ) -> Result<bool> {
        Ok(on_db!(self, read, pool => {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM login_known_addresses WHERE account_key = $1 AND address_key = $2 AND last_success >= $3",
            )
            .bind(account_key)
            .bind(address_key)
            .bind(Ts(since))
            .fetch_one(pool)
            .await?
        }) > 0)
    }

    /// Whether `account_key` failed from `address_key` since `since`.
    pub async fn address_failure_live(
        &self,
        address_key: &str,
        account_key: &str,
        since: OffsetDateTime,
    ) -> Result<bool> {
        Ok(on_db!(self, read, pool => {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM login_address_failures WHERE address_key = $1 AND account_key = $2 AND last_failure >= $3",
            )
            .bind(address_key)
            .bind(account_key)
            .bind(Ts(since))
            .fetch_one(pool)
            .await?
        }) > 0)
    }

    /// Records that `account_key` is being tried from `address_key` at `now`.
    pub async fn note_address_failure(&self, address_key: &str, account_key: &str, now: OffsetDateTime) -> Result<()> {
        on_db!(self, write, pool => {
            sqlx::query(
                "INSERT INTO login_address_failures (address_key, account_key, last_failure) VALUES ($1, $2, $3) \
                 ON CONFLICT (address_key, account_key) DO UPDATE SET last_failure = excluded.last_failure",
            )
            .bind(address_key)
            .bind(account_key)
            .bind(Ts(now))
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// How many account names other than `account_key` failed from `address_key` since `since`,
    /// and when the latest did. Read on the writer, right after [`Store::note_address_failure`]:
    /// of two attempts racing on new names, the later to count sees the other's row, so they
    /// cannot both pass one check.
    pub async fn address_failures_besides(
        &self,
        address_key: &str,
        account_key: &str,
        since: OffsetDateTime,
    ) -> Result<(u32, Option<OffsetDateTime>)> {
        let (count, latest): (i64, Option<Ts>) = on_db!(self, write, pool => {
            sqlx::query_as(
                "SELECT COUNT(*), MAX(last_failure) FROM login_address_failures \
                 WHERE address_key = $1 AND account_key <> $2 AND last_failure >= $3",
            )
            .bind(address_key)
            .bind(account_key)
            .bind(Ts(since))
            .fetch_one(pool)
            .await?
        });
        Ok((u32::try_from(count).unwrap_or(u32::MAX), latest.map(|t| t.0)))
    }

    /// Takes `account_key` off the names failing from `address_key`.
    pub async fn forget_address_failure(&self, address_key: &str, account_key: &str) -> Result<()> {
        on_db!(self, write, pool => {
            sqlx::query("DELETE FROM login_address_failures WHERE address_key = $1 AND account_key = $2")
                .bind(address_key)
                .bind(account_key)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Forgets names that failed from an address before `failures_before`, and addresses last
    /// logged in from before `known_before`.
    pub async fn purge_login_records(
        &self,
        failures_before: OffsetDateTime,
        known_before: OffsetDateTime,
    ) -> Result<u64> {
        Ok(on_db!(self, write, pool => {
            let failures = sqlx::query("DELETE FROM login_address_failures WHERE last_failure < $1")
                .bind(Ts(failures_before))
                .execute(pool)
                .await?
                .rows_affected();
            let known = sqlx::query("DELETE FROM login_known_addresses WHERE last_success < $1")
                .bind(Ts(known_before))
                .execute(pool)
                .await?
                .rows_affected();
            failures + known
        }))
    }

    /// Removes the counter under `key` (an operator let the account back in).
    pub async fn clear_throttle(&self, key: &str) -> Result<()> {
        on_db!(self, write, pool => {
            sqlx::query("DELETE FROM login_throttle WHERE key = $1").bind(key).execute(pool).await?;
        });
        Ok(())
    }

    /// Forgets counters whose last failure is before `cutoff`.
    pub async fn purge_throttle(&self, cutoff: OffsetDateTime) -> Result<u64> {
        Ok(on_db!(self, write, pool => {
            sqlx::query("DELETE FROM login_throttle WHERE last_failure < $1").bind(Ts(cutoff)).execute(pool).await?.rows_affected()
        }))
    }
}
