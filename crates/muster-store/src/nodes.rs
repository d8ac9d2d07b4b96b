//! What the nodes sharing a database must agree on (the server key) and who is at work (the
//! workers' heartbeats). Bookkeeping, not directory changes: not audited.

use crate::{Result, Store, Ts, on_db};
use time::OffsetDateTime;

impl Store {
    /// Records `key_id` as the server key of this database unless one is recorded already;
    /// returns the recorded one (compare it with `key_id`).
    pub async fn record_server_key(&self, key_id: &str, now: OffsetDateTime) -> Result<String> {
        Ok(on_db!(self, write, pool => {
            sqlx::query("INSERT INTO server_key (id, key_id, recorded_at) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING")
                .bind(key_id)
                .bind(Ts(now))
                .execute(pool)
                .await?;
            sqlx::query_scalar("SELECT key_id FROM server_key WHERE id = 1").fetch_one(pool).await?
        }))
    }

    /// A worker's heartbeat.
    pub async fn worker_alive(&self, name: &str, concurrency: i64, now: OffsetDateTime) -> Result<()> {
        on_db!(self, write, pool => {
            sqlx::query(
                "INSERT INTO workers (name, concurrency, last_seen) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET concurrency = excluded.concurrency, last_seen = excluded.last_seen",
            )
            .bind(name)
            .bind(concurrency)
            .bind(Ts(now))
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// A worker stopped (and forgets heartbeats older than `before`, of workers that died).
    pub async fn worker_gone(&self, name: &str, before: OffsetDateTime) -> Result<()> {
        on_db!(self, write, pool => {
            sqlx::query("DELETE FROM workers WHERE name = $1 OR last_seen < $2")
                .bind(name)
                .bind(Ts(before))
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Whether any worker was seen at or after `since`.
    pub async fn worker_seen_since(&self, since: OffsetDateTime) -> Result<bool> {
        Ok(on_db!(self, read, pool => {
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM workers WHERE last_seen >= $1)")
                .bind(Ts(since))
                .fetch_one(pool)
                .await?
        }))
    }
}
