//! Counters of login attempts, per account name and per client address. Kept in the database
//! so that every node sees the same counts; the policy (how many, how long to wait) is the
//! domain's, in `muster_core::directory::throttle`.

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

    /// Forgets counters whose last failure is before `cutoff`.
    pub async fn purge_throttle(&self, cutoff: OffsetDateTime) -> Result<u64> {
        Ok(on_db!(self, write, pool => {
            sqlx::query("DELETE FROM login_throttle WHERE last_failure < $1").bind(Ts(cutoff)).execute(pool).await?.rows_affected()
        }))
    }
}
