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
//!
//! On PostgreSQL, a pass that numbered something announces it with `NOTIFY` on the events
//! channel (`events_channel!`) in its own transaction, so the announcement goes out when the
//! numbers are committed; every node's event hub `LISTEN`s on it (a connection of its own, see
//! `listen.rs`) and wakes its followers. An announcement is only a hint: followers always read
//! `seq > cursor`, so one from another schema sharing the name costs a re-read, and one lost
//! with a connection is made up by their poll.
//!
//! On SQLite, writes number their events themselves, as they write them (`tx.rs`,
//! `hold_numbered_events`; `audit::insert`): a write holds the database's one write lock until
//! it commits, so insert order is commit order there, and followers hear of a commit without
//! waiting for a sequencer pass. The sequencer still numbers any event found without a number
//! (one written by an older version).

use crate::listen::{Heard, Listener};
use crate::{Backend, Result, Store, Ts, on_db};
use serde::Serialize;
use sqlx::types::Json;

/// A sequenced event, as followers read it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct EventRecord {
    /// Position in its stream: 1, 2, 3, … without gaps (from the oldest kept, once retention
    /// has deleted older ones).
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

/// The events channel, as an SQL expression: `muster_events_<schema>`, where the schema is the
/// database schema the store works in (its `search_path`), so that several muster databases
/// in one PostgreSQL database (schemas of their own, e.g. tests running side by side) do not
/// wake each other. A channel name is an identifier, at most 63 bytes: with a schema name
/// longer than 49 bytes it is plain `muster_events`, shared by every such schema.
macro_rules! events_channel {
    () => {
        "CASE WHEN octet_length(current_schema()) <= 49 \
         THEN 'muster_events_' || current_schema() ELSE 'muster_events' END"
    };
}

/// Hears when events were numbered, by any node's sequencer (PostgreSQL only).
pub struct EventListener {
    inner: Listener,
}

impl EventListener {
    /// Waits until events may have been numbered: an announcement, or the connection back after
    /// it was lost ([`Heard::Reconnected`]: announcements may have been missed). An error means
    /// the connection is lost and could not be opened again ([`crate::StoreError::Closed`]: the
    /// store was closed).
    pub async fn recv(&mut self) -> Result<Heard> {
        self.inner.recv().await
    }
}

/// SQLite's pass of [`Store::sequence_events`]: the same numbering as one batch on the single
/// writer connection (one hand-off to its thread instead of a dozen). SQLite's writes number
/// their own events, so a pass usually finds nothing: it looks on a reader first, and takes the
/// writer (which the sequencer, woken after nearly every commit under load, would otherwise
/// queue for each time) only when there is something to number. Every stream with
/// unnumbered events is numbered by one windowed UPDATE, and each stream's counter is moved to
/// its highest number. The unnumbered events are found through `events_unsequenced` by name:
/// with statistics gathered while `events` was small, SQLite would otherwise read the whole
/// table on every pass.
async fn sequence_sqlite(write: &sqlx::SqlitePool, read: &sqlx::SqlitePool, limit: i64) -> Result<u64> {
    let pending: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events INDEXED BY events_unsequenced WHERE seq IS NULL)")
            .fetch_one(read)
            .await?;
    if !pending {
        return Ok(0);
    }
    const BATCH: &str = "BEGIN IMMEDIATE; \
        INSERT INTO event_streams (stream, last_seq) SELECT DISTINCT stream, 0 FROM events INDEXED BY events_unsequenced \
          WHERE seq IS NULL ON CONFLICT (stream) DO NOTHING; \
        UPDATE events SET seq = numbered.seq FROM ( \
          SELECT e.id AS id, s.last_seq + ROW_NUMBER() OVER (PARTITION BY e.stream ORDER BY e.id) AS seq \
          FROM events e INDEXED BY events_unsequenced JOIN event_streams s ON s.stream = e.stream \
          WHERE e.seq IS NULL AND e.id <= (SELECT MAX(id) FROM (SELECT id FROM events INDEXED BY events_unsequenced \
            WHERE seq IS NULL ORDER BY id LIMIT $1)) \
        ) AS numbered WHERE events.id = numbered.id; \
        SELECT changes(); \
        UPDATE event_streams SET last_seq = (SELECT MAX(seq) FROM events WHERE events.stream = event_streams.stream) \
          WHERE EXISTS (SELECT 1 FROM events WHERE events.stream = event_streams.stream AND events.seq > event_streams.last_seq); \
        COMMIT;";
    let mut conn = write.acquire().await?;
    match sqlx::query_scalar::<_, i64>(BATCH)
        .bind(limit.max(1))
        .fetch_all(&mut *conn)
        .await
    {
        Ok(n) => Ok(n.first().copied().unwrap_or(0).max(0) as u64),
        Err(e) => {
            // The batch stopped inside its transaction, which must end here.
            crate::sqlite_writer::end_failed_batch(&mut conn).await;
            Err(e.into())
        }
    }
}

impl Store {
    /// A listener for the announcements of numbered events (PostgreSQL only: on SQLite, one
    /// process numbers and follows).
    pub async fn event_listener(&self) -> Result<Option<EventListener>> {
        match &self.inner {
            crate::Inner::Postgres(pool) => {
                let channel: String = sqlx::query_scalar(concat!("SELECT ", events_channel!()))
                    .fetch_one(pool)
                    .await?;
                Ok(Some(EventListener {
                    inner: Listener::connect(pool, &channel).await?,
                }))
            }
            crate::Inner::Sqlite { .. } => Ok(None),
        }
    }

    /// Numbers up to `limit` committed, unnumbered events. Returns how many it numbered (0 also
    /// when another node's sequencer holds the lock).
    pub async fn sequence_events(&self, limit: i64) -> Result<u64> {
        Ok(self.try_sequence_events(limit).await?.unwrap_or(0))
    }

    /// [`Store::sequence_events`], saying when it could not run: None when another node's
    /// sequencer holds the lock (PostgreSQL), so that events committed during that pass may be
    /// left for this one.
    pub async fn try_sequence_events(&self, limit: i64) -> Result<Option<u64>> {
        if let crate::Inner::Sqlite { write, read, .. } = &self.inner {
            return sequence_sqlite(write, read, limit).await.map(Some);
        }
        let postgres = self.backend() == Backend::Postgres;
        Ok(on_db!(self, write, pool => {
            // SQLite: IMMEDIATE, so that a second process writing the same file (a `muster
            // worker` beside `serve`) makes this wait rather than fail with BUSY_SNAPSHOT.
            let mut tx = if postgres { pool.begin().await? } else { pool.begin_with("BEGIN IMMEDIATE").await? };
            if postgres {
                let locked: Option<i32> =
                    sqlx::query_scalar("SELECT id FROM event_sequencer WHERE id = 1 FOR UPDATE SKIP LOCKED")
                        .fetch_optional(&mut *tx)
                        .await?;
                if locked.is_none() {
                    // Ended here, not by dropping it: sqlx only queues the rollback of a dropped
                    // transaction for the connection's next use, and the idle connection would
                    // keep the transaction open meanwhile.
                    tx.rollback().await?;
                    return Ok(None);
                }
            }
            // Which streams have committed, unnumbered events, and up to which id this pass
            // numbers (a bounded batch).
            let pending: Vec<(i64, String)> =
                sqlx::query_as("SELECT id, stream FROM events WHERE seq IS NULL ORDER BY id LIMIT $1")
                    .bind(limit.max(1))
                    .fetch_all(&mut *tx)
                    .await?;
            let Some(max_id) = pending.last().map(|(id, _)| *id) else {
                // Nothing to number: end the transaction (and the sequencer's row lock) now.
                tx.rollback().await?;
                return Ok(Some(0));
            };
            let mut streams: Vec<&str> = pending.iter().map(|(_, s)| s.as_str()).collect();
            streams.sort_unstable();
            streams.dedup();
            let mut numbered = 0u64;
            for stream in streams {
                let base: i64 = sqlx::query_scalar(
                    "INSERT INTO event_streams (stream, last_seq) VALUES ($1, 0) \
                     ON CONFLICT (stream) DO UPDATE SET last_seq = event_streams.last_seq RETURNING last_seq",
                )
                .bind(stream)
                .fetch_one(&mut *tx)
                .await?;
                // One statement numbers the whole batch of the stream in id order. Only
                // committed rows are visible to it, and it counts what it numbered, so a row
                // that committed since the SELECT above is simply numbered too.
                let n = sqlx::query(
                    "UPDATE events SET seq = numbered.seq FROM ( \
                       SELECT id, $2 + ROW_NUMBER() OVER (ORDER BY id) AS seq FROM events \
                       WHERE stream = $1 AND seq IS NULL AND id <= $3 \
                     ) AS numbered WHERE events.id = numbered.id",
                )
                .bind(stream)
                .bind(base)
                .bind(max_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                sqlx::query("UPDATE event_streams SET last_seq = $2 WHERE stream = $1")
                    .bind(stream)
                    .bind(base + n as i64)
                    .execute(&mut *tx)
                    .await?;
                numbered += n;
            }
            if postgres && numbered > 0 {
                // Sent when the numbers commit (and not at all if they do not).
                sqlx::query(concat!("SELECT pg_notify(", events_channel!(), ", '')"))
                    .execute(&mut *tx)
                    .await?;
            }
            crate::commit(tx).await?;
            Some(numbered)
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

    /// Deletes the numbered events recorded before `before`, oldest first in each stream, in
    /// transactions of at most `batch` events (`task_clean_up_events`); returns how many went.
    /// Each stream's `purged_seq` moves to the highest number deleted, so readers whose cursor
    /// is older learn that they missed events (see `purged_event_seq`). Only a prefix of a
    /// stream goes, never a hole: each batch deletes up to the newest old-enough event among the
    /// stream's oldest `batch`, taking along any slightly newer event numbered before it (an
    /// event's time is when its change was made, its number when it committed). Events not yet
    /// numbered are left alone. Numbering goes on from `event_streams.last_seq`, so it never
    /// restarts, whatever is deleted.
    pub async fn purge_events(&self, before: time::OffsetDateTime, batch: i64) -> Result<u64> {
        let streams: Vec<(String, i64)> = on_db!(self, read, pool => {
            sqlx::query_as("SELECT stream, purged_seq FROM event_streams ORDER BY stream")
                .fetch_all(pool)
                .await?
        });
        let mut deleted = 0;
        for (stream, mut purged) in streams {
            loop {
                let cut: Option<i64> = on_db!(self, read, pool => {
                    sqlx::query_scalar(
                        "SELECT MAX(seq) FROM (SELECT seq, at FROM events WHERE stream = $1 AND seq > $2 \
                         ORDER BY seq LIMIT $3) oldest WHERE at < $4",
                    )
                    .bind(&stream)
                    .bind(purged)
                    .bind(batch.max(1))
                    .bind(Ts(before))
                    .fetch_one(pool)
                    .await?
                });
                let Some(cut) = cut else { break };
                deleted += on_db!(self, write, pool => {
                    let mut tx = pool.begin().await?;
                    let n = sqlx::query("DELETE FROM events WHERE stream = $1 AND seq > $2 AND seq <= $3")
                        .bind(&stream)
                        .bind(purged)
                        .bind(cut)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    sqlx::query("UPDATE event_streams SET purged_seq = $2 WHERE stream = $1 AND purged_seq < $2")
                        .bind(&stream)
                        .bind(cut)
                        .execute(&mut *tx)
                        .await?;
                    crate::commit(tx).await?;
                    n
                });
                purged = cut;
            }
        }
        Ok(deleted)
    }

    /// The highest number deleted from `stream` by retention (0 when none): a reader asking for
    /// events after an older number has missed some.
    pub async fn purged_event_seq(&self, stream: &str) -> Result<i64> {
        let purged: Option<i64> = on_db!(self, read, pool => {
            sqlx::query_scalar("SELECT purged_seq FROM event_streams WHERE stream = $1")
                .bind(stream)
                .fetch_optional(pool)
                .await?
        });
        Ok(purged.unwrap_or(0))
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
