//! Counters of failed logins, per account name and per client address. Kept in the database
//! so that every node sees the same counts.

use crate::{Result, Store, Ts, on_db};
use muster_core::audit::AuditEntry;
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

    /// Counts a failed login against each `(key, window start)`, and writes its audit record, in
    /// one transaction. A counter whose last failure is before its window start restarts at one.
    pub async fn record_login_failure(
        &self,
        keys: &[(&str, OffsetDateTime)],
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> Result<()> {
        on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            for (key, window_start) in keys {
                sqlx::query(
                    "INSERT INTO login_throttle (key, failures, last_failure) VALUES ($1, 1, $2) \
                     ON CONFLICT (key) DO UPDATE SET \
                       failures = CASE WHEN login_throttle.last_failure < $3 THEN 1 ELSE login_throttle.failures + 1 END, \
                       last_failure = $2",
                )
                .bind(*key)
                .bind(Ts(now))
                .bind(Ts(*window_start))
                .execute(&mut *tx)
                .await?;
            }
            crate::audit::insert!(&mut *tx, audit);
            tx.commit().await?;
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
