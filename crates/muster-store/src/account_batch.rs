//! Offering-account changes on SQLite, written together.
//!
//! With many agents driving transitions at once, a round trip to the one write connection per
//! change was most of a change's cost. So the changes waiting at a moment go to the writer as
//! one part of a group commit (see `group_commit`): each change held whole (its conditional
//! update, then its history entry, audit record and event, inserted only if the update applied,
//! and a `SELECT changes()` that says whether it did; see `accounts::hold_change`), all of them
//! in one `StoreTx`, one round trip. Each change keeps its own conditional update, checked by its
//! own row count: of two conflicting changes in one part the first wins and the second matches
//! no row (its version is gone), exactly as if they had committed one after the other.
//!
//! If a statement of the part fails (a taken username, say), the part is rolled back and its
//! changes are written again one transaction each, so the failure reaches only the change that
//! caused it.
//!
//! The batches are written by a task of their own, spawned when changes wait and none runs, and
//! ended when none is left: a request that gives up while its change is queued or being
//! written (its client went away) does not cut a batch short for the others.

use crate::accounts::applied_count;
use crate::{AccountChange, Result, Store, StoreError};
use muster_core::offering::model::OfferingUserUuid;
use tokio::sync::oneshot;

/// The most changes in one part (each has about 45 bound parameters; SQLite allows 32,766 per
/// statement, and a part's statements are held as one text).
const MAX_BATCH: usize = 32;

struct Queued {
    uuid: OfferingUserUuid,
    version: i64,
    change: AccountChange,
    done: oneshot::Sender<Result<bool>>,
}

/// The changes waiting for the writer task, and whether it runs.
#[derive(Default)]
pub(crate) struct AccountBatch {
    state: std::sync::Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    queued: Vec<Queued>,
    writing: bool,
}

impl AccountBatch {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        // A poisoned lock only means a panic elsewhere while it was held; a queue and a flag
        // are still meaningful.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes `change` if the account is still at `version` (and in one of its allowed states);
    /// false when it is not.
    pub(crate) async fn write(
        &self,
        store: &Store,
        uuid: OfferingUserUuid,
        version: i64,
        change: AccountChange,
    ) -> Result<bool> {
        let (done, answer) = oneshot::channel();
        let start = {
            let mut w = self.lock();
            w.queued.push(Queued {
                uuid,
                version,
                change,
                done,
            });
            !std::mem::replace(&mut w.writing, true)
        };
        if start {
            let store = store.clone();
            tokio::spawn(async move { store.account_batch.drain(&store).await });
        }
        // The task answers every change it took; no answer means it stopped mid-batch (the
        // runtime shutting down), and then whether the change committed is unknown.
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::OutcomeUnknown("the account writer stopped".into())))
    }

    /// Writes what waits, a batch at a time, until nothing does.
    async fn drain(&self, store: &Store) {
        let mut writer = Writer {
            of: self,
            finished: false,
        };
        loop {
            let batch: Vec<Queued> = {
                let mut w = self.lock();
                if w.queued.is_empty() {
                    w.writing = false;
                    writer.finished = true;
                    return;
                }
                let n = w.queued.len().min(MAX_BATCH);
                w.queued.drain(..n).collect()
            };
            write_batch(store, batch).await;
        }
    }
}

/// The running writer task. However it ends (a panic, or dropped with its runtime), the next
/// change starts a new one; changes it had not taken yet are answered as of unknown outcome
/// (their senders are dropped) rather than left waiting.
struct Writer<'a> {
    of: &'a AccountBatch,
    /// It ended by finding nothing left (a change queued since belongs to the next task).
    finished: bool,
}

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let mut w = self.of.lock();
            w.writing = false;
            w.queued.clear();
        }
    }
}

/// Writes `batch` as one part and answers each change; on a statement's failure, writes each
/// alone.
async fn write_batch(store: &Store, batch: Vec<Queued>) {
    if batch.len() > 1 {
        match together(store, &batch).await {
            Ok(applied) => {
                for (q, n) in batch.into_iter().zip(applied) {
                    let _ = q.done.send(Ok(n == 1));
                }
                return;
            }
            // One change's own failure: the part was undone; each is written alone below, so
            // that only that change gets it.
            Err(StoreError::Duplicate(_)) => {}
            Err(e) => {
                // The part did not commit (or whether it did is unknown): every change of it
                // gets the same answer.
                for q in batch {
                    let _ = q.done.send(Err(same_failure(&e)));
                }
                return;
            }
        }
    }
    for q in batch {
        let result = alone(store, &q).await;
        let _ = q.done.send(result);
    }
}

/// `e` again, for another change of the same part: the same kind, the same words.
fn same_failure(e: &StoreError) -> StoreError {
    match e {
        StoreError::StorageFull(r) => StoreError::StorageFull(r.clone()),
        StoreError::Unavailable(r) => StoreError::Unavailable(r.clone()),
        StoreError::OutcomeUnknown(r) => StoreError::OutcomeUnknown(r.clone()),
        StoreError::CommitFailed(r) => StoreError::CommitFailed(r.clone()),
        // Committed, but the answers could not be matched to the changes.
        StoreError::Corrupt(r) => StoreError::Corrupt(r.clone()),
        other => StoreError::CommitFailed(other.to_string()),
    }
}

/// The changes of `batch` held in one transaction; each one's row count, in order.
async fn together(store: &Store, batch: &[Queued]) -> Result<Vec<i64>> {
    let mut tx = store.begin().await?;
    for q in batch {
        tx.hold_offering_user_change(q.uuid, q.version, &q.change).await?;
    }
    let rows = tx.commit_returning().await?;
    if rows.len() != batch.len() {
        // One `SELECT changes()` per change; anything else means the answers cannot be
        // matched to the changes, though the part committed.
        return Err(StoreError::Corrupt(format!(
            "an account batch of {} answered {} rows",
            batch.len(),
            rows.len()
        )));
    }
    rows.iter()
        .map(|row| applied_count(std::slice::from_ref(row)))
        .collect()
}

async fn alone(store: &Store, q: &Queued) -> Result<bool> {
    let mut tx = store.begin().await?;
    tx.hold_offering_user_change(q.uuid, q.version, &q.change).await?;
    let rows = tx.commit_returning().await?;
    Ok(applied_count(&rows)? == 1)
}
