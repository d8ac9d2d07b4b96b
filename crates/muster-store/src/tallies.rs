//! Upkeep of `offering_user_tallies`, the per (provider, offering, state) account counts that
//! triggers keep on every write to `offering_users` (see its migration): the rows are appended
//! +1/-1 per change and folded here into one row per key, so that reading a count stays a sum
//! over a few hundred rows.

use crate::{Result, Store, on_db};

/// Serialises compactions of nodes sharing one PostgreSQL database: two at once would each
/// fold the same rows and count them twice. Writers are not blocked by it.
const PG_COMPACTION_LOCK: i64 = 0x6d75_7374_6572_0001;

/// Folds at least this large are followed by a vacuum of the table on PostgreSQL.
const VACUUM_AFTER: i64 = 10_000;

impl Store {
    /// Folds the tallies into one row per key (dropping keys that sum to zero); returns how many
    /// rows fewer there are. Safe while accounts change: rows appended meanwhile are left for
    /// the next compaction.
    pub async fn compact_offering_user_tallies(&self) -> Result<i64> {
        Ok(on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            if matches!(self.backend(), crate::Backend::Postgres) {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(PG_COMPACTION_LOCK)
                    .execute(&mut *tx)
                    .await?;
            }
            let (last, rows): (Option<i64>, i64) =
                sqlx::query_as("SELECT MAX(id), COUNT(*) FROM offering_user_tallies")
                    .fetch_one(&mut *tx)
                    .await?;
            let keys: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM (SELECT 1 FROM offering_user_tallies GROUP BY provider_uuid, offering_uuid, state) k",
            )
            .fetch_one(&mut *tx)
            .await?;
            // Nothing to fold: one row per key already.
            let Some(last) = last.filter(|_| rows > keys) else {
                tx.rollback().await?;
                return Ok(0);
            };
            let inserted = sqlx::query(
                "INSERT INTO offering_user_tallies (provider_uuid, offering_uuid, state, n) \
                 SELECT provider_uuid, offering_uuid, state, SUM(n) FROM offering_user_tallies WHERE id <= $1 \
                 GROUP BY provider_uuid, offering_uuid, state HAVING SUM(n) <> 0",
            )
            .bind(last)
            .execute(&mut *tx)
            .await?
            .rows_affected() as i64;
            let deleted = sqlx::query("DELETE FROM offering_user_tallies WHERE id <= $1")
                .bind(last)
                .execute(&mut *tx)
                .await?
                .rows_affected() as i64;
            crate::commit(tx).await?;
            // PostgreSQL keeps deleted rows until a vacuum; after a large fold (a bulk load)
            // reading the few live rows would mean reading all the dead ones too, until
            // autovacuum came by.
            if deleted >= VACUUM_AFTER && matches!(self.backend(), crate::Backend::Postgres) {
                sqlx::query("VACUUM (ANALYZE) offering_user_tallies").execute(pool).await?;
            }
            deleted - inserted
        }))
    }
}
