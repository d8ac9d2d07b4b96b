//! Group commit of offering-account changes on SQLite.
//!
//! SQLite has one writer, and every use of it is a hand-off to sqlx's connection thread and
//! back, plus the pool's bookkeeping when the connection is taken and returned; with many agents
//! driving transitions at once, those hand-offs and each transaction's commit (every page it
//! touched is written to the WAL again) were most of a transition's cost. So a node's account
//! changes go through one task, which takes every change waiting when the writer is free and
//! commits them in one transaction, sent as one batch:
//!
//! ```text
//! BEGIN IMMEDIATE;
//!   UPDATE … WHERE uuid AND version AND state IN (…); INSERT history … WHERE changes() = 1;
//!   INSERT audit … WHERE changes() = 1; INSERT event … WHERE changes() = 1; SELECT changes();
//!   (the same for the next change) …
//! COMMIT;
//! ```
//!
//! Each change keeps its own conditional update, checked by its own row count, and its history
//! entry, audit record and event are inserted only if its update applied, in the same
//! transaction: of two conflicting changes in one batch the first wins and the second matches
//! no row (its version is gone), exactly as if they had committed one after the other. If any
//! statement of a batch fails (a taken username, say), the batch is rolled back and its changes
//! are written again one transaction each, so the failure reaches only the change that caused it.
//!
//! The task runs the batches, not the requests: a request that gives up (its client went away)
//! while its change is queued or being written does not cut a batch short for the others.

use crate::accounts::push_sqlite_change;
use crate::sqlite_writer::end_failed_batch;
use crate::{AccountChange, Result, StoreError};
use muster_core::offering::model::OfferingUserUuid;
use sqlx::pool::PoolConnection;
use sqlx::{Sqlite, SqlitePool};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// The most changes committed together (each has about 45 bound parameters; SQLite allows
/// 32,766 per statement). Each batch size is one cached statement on the writer.
pub(crate) const MAX_BATCH: usize = 32;

/// How long the task keeps the write connection for consecutive batches.
const MAX_HOLD: Duration = Duration::from_millis(5);

struct Queued {
    uuid: OfferingUserUuid,
    version: i64,
    change: AccountChange,
    done: oneshot::Sender<Result<bool>>,
}

/// The queue to the node's writer task, started on first use.
#[derive(Default)]
pub(crate) struct AccountWrites {
    queue: OnceLock<mpsc::UnboundedSender<Queued>>,
}

impl AccountWrites {
    /// Writes `change` if the account is still at `version` (and in one of its allowed states);
    /// false when it is not.
    pub(crate) async fn write(
        &self,
        pool: &SqlitePool,
        uuid: OfferingUserUuid,
        version: i64,
        change: AccountChange,
    ) -> Result<bool> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run(pool.clone(), rx));
            tx
        });
        let (done, answer) = oneshot::channel();
        let queued = Queued {
            uuid,
            version,
            change,
            done,
        };
        if let Err(mpsc::error::SendError(q)) = queue.send(queued) {
            // The task is gone (the runtime that started it has shut down): write directly.
            let mut conn = pool.acquire().await?;
            return write_alone(&mut conn, &q).await.0;
        }
        // The task answers every change it received; no answer means it was stopped mid-batch
        // (the runtime shutting down), and then whether the change committed is unknown.
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::OutcomeUnknown("the account writer stopped".into())))
    }
}

/// The writer task: until every sender is gone, takes what is queued and commits it together.
async fn run(pool: SqlitePool, mut rx: mpsc::UnboundedReceiver<Queued>) {
    let mut batch: Vec<Queued> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let mut conn = match pool.acquire().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "account writer: no connection");
                let failure = crate::group_commit::GroupFailure::of(&e);
                for q in batch.drain(..) {
                    let _ = q.done.send(Err(failure.clone().into_error()));
                }
                continue;
            }
        };
        let taken = Instant::now();
        loop {
            // Changes queued while the writer was busy join this batch.
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(q) => batch.push(q),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            if !write_batch(&mut conn, &mut batch).await {
                // The connection is being replaced (its state after a failure is unknown).
                break;
            }
            // Changes that came in meanwhile are written on the connection already in hand
            // (returning it to the pool and taking it again costs two more hand-offs to its
            // thread), but not for longer than this: other writers (the event sequencer,
            // workflow steps) queue for the same connection.
            if taken.elapsed() >= MAX_HOLD {
                break;
            }
        }
    }
}

/// Commits `batch` in one transaction and answers each change; on a failure, writes each alone.
/// Returns false when the connection must not be used again (it is closed when dropped).
async fn write_batch(conn: &mut PoolConnection<Sqlite>, batch: &mut Vec<Queued>) -> bool {
    if batch.len() > 1 {
        let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new("BEGIN IMMEDIATE; ");
        for q in batch.iter() {
            push_sqlite_change(&mut qb, q.uuid, q.version, &q.change);
        }
        qb.push("COMMIT;");
        match qb.build_query_scalar::<i64>().fetch_all(&mut **conn).await {
            Ok(applied) if applied.len() == batch.len() => {
                for (q, n) in batch.drain(..).zip(applied) {
                    let _ = q.done.send(Ok(n == 1));
                }
                return true;
            }
            Ok(applied) => {
                // Cannot happen (one `SELECT changes()` per change); if it did, the batch
                // committed but its answers cannot be matched to the changes.
                tracing::error!(
                    expected = batch.len(),
                    got = applied.len(),
                    "account writer: unexpected batch answer"
                );
                for q in batch.drain(..) {
                    let _ = q.done.send(Err(StoreError::Corrupt("account batch answer".into())));
                }
                return true;
            }
            Err(e) => {
                // The batch stopped inside its transaction, which must end here; then each change
                // is written alone, so that only the one that failed gets the error.
                if !end_failed_batch(conn).await {
                    let failure = crate::group_commit::GroupFailure::of(&e);
                    for q in batch.drain(..) {
                        let _ = q.done.send(Err(failure.clone().into_error()));
                    }
                    return false;
                }
            }
        }
    }
    let mut usable = true;
    for q in batch.drain(..) {
        let result = if usable {
            let (result, clean) = write_alone(conn, &q).await;
            usable = clean;
            result
        } else {
            Err(StoreError::Unavailable("the write connection is being replaced".into()))
        };
        let _ = q.done.send(result);
    }
    usable
}

/// Writes one change in its own transaction; also says whether the connection is still usable.
async fn write_alone(conn: &mut PoolConnection<Sqlite>, q: &Queued) -> (Result<bool>, bool) {
    let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new("BEGIN IMMEDIATE; ");
    push_sqlite_change(&mut qb, q.uuid, q.version, &q.change);
    qb.push("COMMIT;");
    match qb.build_query_scalar::<i64>().fetch_all(&mut **conn).await {
        Ok(applied) => (Ok(applied.first() == Some(&1)), true),
        Err(e) => {
            let clean = end_failed_batch(conn).await;
            (Err(StoreError::unique_as(e, "username", "username")), clean)
        }
    }
}
