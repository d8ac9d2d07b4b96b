//! The event stream: an outbox in the database, numbered per stream in commit order.
//!
//! A change writes its event (with `seq` NULL) in the same transaction as the change and its
//! audit record. The sequencer then numbers committed events, one stream counter at a time,
//! in the order it finds them. Because it only ever sees committed rows, a follower that
//! reads `seq > cursor` cannot skip an event that committed after a later-numbered one: such
//! an event gets a *higher* number when it shows up. (Numbering at insert time — an identity
//! column — would hand out numbers in insert order, and a reader could pass over a number
//! whose transaction had not committed yet.)
//!
//! One sequencer runs at a time: on PostgreSQL it holds the row lock of `event_sequencer`
//! (taken with SKIP LOCKED: a node that finds it taken simply tries again later; a row lock,
//! unlike an advisory lock, is scoped to this schema), on SQLite there is one writer anyway.

use crate::{Backend, Result, Store, Ts, on_db};
use serde::Serialize;
use sqlx::types::Json;

/// A sequenced event, as followers read it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct EventRecord {
    /// Position in its stream: 1, 2, 3, … without gaps.
    pub seq: i64,
    pub stream: String,
    /// e.g. `user.created`.
    pub kind: String,
    /// The id of what changed.
    pub subject: Option<String>,
    #[serde(serialize_with = "ser_ts")]
    #[schema(value_type = String, format = DateTime)]
    pub at: Ts,
    /// Correlation id of the request that made the change.
    pub cid: Option<String>,
    #[schema(value_type = Object)]
    pub data: Json<serde_json::Value>,
}

fn ser_ts<S: serde::Serializer>(t: &Ts, s: S) -> std::result::Result<S::Ok, S::Error> {
    time::serde::rfc3339::serialize(&t.0, s)
}

impl Store {
    /// Numbers up to `limit` committed, unnumbered events. Returns how many it numbered (0 also
    /// when another node's sequencer holds the lock).
    pub async fn sequence_events(&self, limit: i64) -> Result<u64> {
        let postgres = self.backend() == Backend::Postgres;
        Ok(on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            if postgres {
                let locked: Option<i32> =
                    sqlx::query_scalar("SELECT id FROM event_sequencer WHERE id = 1 FOR UPDATE SKIP LOCKED")
                        .fetch_optional(&mut *tx)
                        .await?;
                if locked.is_none() {
                    return Ok(0);
                }
            }
            let pending: Vec<(i64, String)> =
                sqlx::query_as("SELECT id, stream FROM events WHERE seq IS NULL ORDER BY id LIMIT $1")
                    .bind(limit.max(1))
                    .fetch_all(&mut *tx)
                    .await?;
            // Group by stream, keeping insertion order within each.
            let mut streams: Vec<(String, Vec<i64>)> = Vec::new();
            for (id, stream) in pending.iter().cloned() {
                match streams.iter_mut().find(|(s, _)| *s == stream) {
                    Some((_, ids)) => ids.push(id),
                    None => streams.push((stream, vec![id])),
                }
            }
            for (stream, ids) in &streams {
                let n = ids.len() as i64;
                let last: i64 = sqlx::query_scalar(
                    "INSERT INTO event_streams (stream, last_seq) VALUES ($1, $2) \
                     ON CONFLICT (stream) DO UPDATE SET last_seq = event_streams.last_seq + $2 RETURNING last_seq",
                )
                .bind(stream)
                .bind(n)
                .fetch_one(&mut *tx)
                .await?;
                for (i, id) in ids.iter().enumerate() {
                    sqlx::query("UPDATE events SET seq = $2 WHERE id = $1")
                        .bind(id)
                        .bind(last - n + 1 + i as i64)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            pending.len() as u64
        }))
    }

    /// Events of `stream` numbered after `after`, oldest first, at most `limit`.
    pub async fn events_after(&self, stream: &str, after: i64, limit: i64) -> Result<Vec<EventRecord>> {
        Ok(on_db!(self, read, pool => {
            sqlx::query_as(
                "SELECT seq, stream, kind, subject, at, cid, data FROM events \
                 WHERE stream = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            )
            .bind(stream)
            .bind(after)
            .bind(limit.max(0))
            .fetch_all(pool)
            .await?
        }))
    }

    /// The highest number given out in `stream` (0 when none).
    pub async fn last_event_seq(&self, stream: &str) -> Result<i64> {
        let last: Option<i64> = on_db!(self, read, pool => {
            sqlx::query_scalar("SELECT last_seq FROM event_streams WHERE stream = $1")
                .bind(stream)
                .fetch_optional(pool)
                .await?
        });
        Ok(last.unwrap_or(0))
    }
}
