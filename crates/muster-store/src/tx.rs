//! Transactions that span several store calls.
//!
//! Most store methods are one transaction each. A workflow step is different: its own writes
//! (a subscription, a directory user), its step-log row and the fenced update of its process
//! row must commit together (DESIGN invariant 1), and only the engine knows when the step is
//! over. [`StoreTx`] is such a transaction, on either backend; the methods that run inside one
//! are defined on it, next to the tables they touch.

use crate::{Backend, Inner, Result, Store};
use sqlx::{Postgres, Sqlite, Transaction};

pub(crate) enum TxInner {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// A write transaction. Dropped without [`StoreTx::commit`], it rolls back.
///
/// It begins lazily, at its first statement: on SQLite, where there is one writer, a step that
/// never writes (or an engine step whose rows are all held, below) never holds the writer.
///
/// Events and step-log rows written through it are held until [`StoreTx::commit`] and then
/// inserted with one multi-row statement each, just before the commit: same transaction,
/// fewer round trips (a step that writes three events costs one INSERT, not three).
pub struct StoreTx {
    store: Store,
    inner: Option<TxInner>,
    /// The last savepoint was marked before the transaction began: rolling back to it is
    /// rolling back everything.
    mark_before_begin: bool,
    pub(crate) events: Vec<PendingEvent>,
    pub(crate) steps: Vec<(uuid::Uuid, i64, crate::StepLog)>,
    /// How many held events and step rows existed at the last savepoint.
    pub(crate) marks: (usize, usize),
    /// A process update staged by [`StoreTx::stage_step`], written (fenced) at commit, and
    /// the one staged when the last savepoint was marked.
    pub(crate) staged: Option<(crate::Fence, crate::ProcessUpdate)>,
    pub(crate) staged_mark: Option<(crate::Fence, crate::ProcessUpdate)>,
    /// Subscriptions this transaction has read (locked, on PostgreSQL) or written, as they now
    /// are in it: consecutive steps of a process read what their predecessor saved without
    /// asking the database again, and saves skip the rows that did not change.
    pub(crate) subs: std::collections::HashMap<uuid::Uuid, crate::Subscription>,
}

pub(crate) struct PendingEvent {
    stream: &'static str,
    kind: &'static str,
    subject: Option<String>,
    at: time::OffsetDateTime,
    cid: Option<String>,
    data: serde_json::Value,
}

impl std::fmt::Debug for StoreTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreTx").field("backend", &self.backend()).finish()
    }
}

/// Runs `$body` with `$conn` bound to the transaction's connection, once per backend.
macro_rules! on_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $tx.conn().await? {
            $crate::tx::TxInner::Sqlite(t) => {
                let $conn = &mut **t;
                $body
            }
            $crate::tx::TxInner::Postgres(t) => {
                let $conn = &mut **t;
                $body
            }
        }
    };
}
pub(crate) use on_tx;

/// This node's write connection, held (see [`Store::hold_writer`]).
pub struct WriterHold {
    _conn: Option<sqlx::pool::PoolConnection<Sqlite>>,
}

impl Store {
    /// Takes this node's SQLite write connection and keeps it until the hold is dropped,
    /// without locking the database file: this node's writes wait, other processes' do not.
    /// For tests that need a node stalled at a precise point; on PostgreSQL it holds nothing.
    pub async fn hold_writer(&self) -> Result<WriterHold> {
        Ok(WriterHold {
            _conn: match &self.inner {
                Inner::Sqlite { write, .. } => Some(write.acquire().await?),
                Inner::Postgres(_) => None,
            },
        })
    }

    /// Opens a write transaction.
    pub async fn begin(&self) -> Result<StoreTx> {
        Ok(StoreTx {
            store: self.clone(),
            inner: None,
            mark_before_begin: false,
            events: Vec::new(),
            steps: Vec::new(),
            marks: (0, 0),
            staged: None,
            staged_mark: None,
            subs: std::collections::HashMap::new(),
        })
    }
}

impl StoreTx {
    pub fn backend(&self) -> Backend {
        self.store.backend()
    }

    /// The transaction's connection, beginning the transaction on first use.
    pub(crate) async fn conn(&mut self) -> Result<&mut TxInner> {
        if self.inner.is_none() {
            self.inner = Some(match &self.store.inner {
                // IMMEDIATE: take the write lock at once. A deferred transaction that reads and
                // then writes fails with SQLITE_BUSY_SNAPSHOT if another process (a second
                // muster on the same file) committed in between; waiting for the lock up front
                // (busy_timeout) cannot fail that way.
                Inner::Sqlite { write, .. } => TxInner::Sqlite(write.begin_with("BEGIN IMMEDIATE").await?),
                Inner::Postgres(pool) => TxInner::Postgres(pool.begin().await?),
            });
        }
        match self.inner.as_mut() {
            Some(inner) => Ok(inner),
            None => Err(crate::StoreError::Corrupt("transaction unavailable".into())),
        }
    }

    pub async fn commit(mut self) -> Result<()> {
        let anything =
            self.inner.is_some() || !self.events.is_empty() || !self.steps.is_empty() || self.staged.is_some();
        if !anything {
            return Ok(());
        }
        self.flush().await?;
        match self.inner.take() {
            Some(TxInner::Sqlite(t)) => t.commit().await?,
            Some(TxInner::Postgres(t)) => t.commit().await?,
            None => {}
        }
        Ok(())
    }

    pub async fn rollback(mut self) -> Result<()> {
        match self.inner.take() {
            Some(TxInner::Sqlite(t)) => t.rollback().await?,
            Some(TxInner::Postgres(t)) => t.rollback().await?,
            None => {}
        }
        Ok(())
    }

    /// Marks a savepoint (`step`): [`StoreTx::rollback_to_savepoint`] undoes what follows.
    pub async fn savepoint(&mut self) -> Result<()> {
        self.mark_before_begin = self.inner.is_none();
        if !self.mark_before_begin {
            on_tx!(self, conn => {
                sqlx::query("SAVEPOINT step").execute(&mut *conn).await?;
            });
        }
        self.marks = (self.events.len(), self.steps.len());
        self.staged_mark = self.staged.clone();
        Ok(())
    }

    /// Undoes everything since the last [`StoreTx::savepoint`], held rows included.
    pub async fn rollback_to_savepoint(&mut self) -> Result<()> {
        if self.mark_before_begin {
            // Nothing ran before the mark: undo the whole transaction, begin again if needed.
            match self.inner.take() {
                Some(TxInner::Sqlite(t)) => t.rollback().await?,
                Some(TxInner::Postgres(t)) => t.rollback().await?,
                None => {}
            }
        } else {
            on_tx!(self, conn => {
                sqlx::query("ROLLBACK TO SAVEPOINT step").execute(&mut *conn).await?;
            });
        }
        self.events.truncate(self.marks.0);
        self.steps.truncate(self.marks.1);
        self.staged = self.staged_mark.clone();
        // What the undone step saved is gone; read again what is needed.
        self.subs.clear();
        Ok(())
    }

    /// Writes an audit record (and the event it carries) inside this transaction.
    pub async fn audit(&mut self, entry: &muster_core::audit::AuditEntry) -> Result<()> {
        on_tx!(self, conn => {
            crate::audit::insert_record!(&mut *conn, entry);
        });
        self.hold_event_of(entry);
        Ok(())
    }

    fn hold_event_of(&mut self, entry: &muster_core::audit::AuditEntry) {
        if let Some(e) = &entry.event {
            self.events.push(PendingEvent {
                stream: e.stream,
                kind: e.kind,
                subject: e.subject.clone(),
                at: entry.at,
                cid: Some(entry.cid.clone()),
                data: e.data.clone(),
            });
        }
    }

    /// Writes an event (unsequenced) inside this transaction; inserted at commit.
    pub async fn event(
        &mut self,
        event: &muster_core::audit::Event,
        at: time::OffsetDateTime,
        cid: Option<&str>,
    ) -> Result<()> {
        self.events.push(PendingEvent {
            stream: event.stream,
            kind: event.kind,
            subject: event.subject.clone(),
            at,
            cid: cid.map(str::to_owned),
            data: event.data.clone(),
        });
        Ok(())
    }

    /// Inserts the held events and step-log rows, and writes the staged process update (fenced:
    /// [`StoreError::Fenced`] when the lease was lost, and nothing commits).
    async fn flush(&mut self) -> Result<()> {
        if let Some((fence, up)) = self.staged.take()
            && !self.finish_step_now(&fence, &up).await?
        {
            return Err(crate::StoreError::Fenced);
        }
        let events = std::mem::take(&mut self.events);
        let steps = std::mem::take(&mut self.steps);
        on_tx!(self, conn => {
            if !events.is_empty() {
                let mut qb = sqlx::QueryBuilder::new("INSERT INTO events (stream, kind, subject, at, cid, data) ");
                qb.push_values(&events, |mut b, e| {
                    b.push_bind(e.stream)
                        .push_bind(e.kind)
                        .push_bind(e.subject.clone())
                        .push_bind(crate::Ts(e.at))
                        .push_bind(e.cid.clone())
                        .push_bind(sqlx::types::Json(e.data.clone()));
                });
                qb.build().execute(&mut *conn).await?;
            }
            if !steps.is_empty() {
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO process_steps (process_id, name, status, state_delta, created_by, started_at, completed_at, attempt, retries) ",
                );
                qb.push_values(&steps, |mut b, (pid, attempt, log)| {
                    b.push_bind(*pid)
                        .push_bind(log.name.clone())
                        .push_bind(log.status.as_str())
                        .push_bind(sqlx::types::Json(log.state_delta.clone()))
                        .push_bind(log.created_by.clone())
                        .push_bind(crate::Ts(log.started_at))
                        .push_bind(crate::Ts(log.completed_at))
                        .push_bind(*attempt)
                        .push_bind(log.retries);
                });
                qb.build().execute(&mut *conn).await?;
            }
        });
        Ok(())
    }

    /// Inserts a directory user inside this transaction (a workflow step creating a person).
    pub async fn insert_user(
        &mut self,
        user: &muster_core::directory::User,
        audit: &muster_core::audit::AuditEntry,
    ) -> Result<()> {
        on_tx!(self, conn => {
            crate::users::insert_user_on!(&mut *conn, user);
            crate::audit::insert_record!(&mut *conn, audit);
        });
        self.hold_event_of(audit);
        Ok(())
    }

    /// Reads a user and its row version inside this transaction.
    pub async fn user_by_uuid(&mut self, uuid: uuid::Uuid) -> Result<Option<(muster_core::directory::User, i64)>> {
        let sql = format!("SELECT {} FROM users WHERE uuid = $1", crate::users::USER_COLUMNS);
        let row: Option<crate::users::UserRow> = on_tx!(self, conn => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(uuid).fetch_optional(&mut *conn).await?
        });
        row.map(crate::users::UserRow::into_user).transpose()
    }

    /// Writes a changed user if its row is still at `version`, ending its sessions when
    /// `revoke_sessions`; false when the row moved on.
    pub async fn update_user(
        &mut self,
        user: &muster_core::directory::User,
        version: i64,
        revoke_sessions: bool,
        audit: &muster_core::audit::AuditEntry,
    ) -> Result<bool> {
        on_tx!(self, conn => {
            let n = crate::users::write_user!(&mut *conn, user, version);
            if n != 1 {
                return Ok(false);
            }
            if revoke_sessions {
                sqlx::query("DELETE FROM sessions WHERE user_uuid = $1").bind(user.uuid).execute(&mut *conn).await?;
            }
            crate::audit::insert_record!(&mut *conn, audit);
        });
        self.hold_event_of(audit);
        Ok(true)
    }

    /// Deletes a user (compensation of an aborted create); false when it was already gone.
    pub async fn delete_user(&mut self, uuid: uuid::Uuid, audit: &muster_core::audit::AuditEntry) -> Result<bool> {
        on_tx!(self, conn => {
            let n = sqlx::query("DELETE FROM users WHERE uuid = $1").bind(uuid).execute(&mut *conn).await?.rows_affected();
            if n != 1 {
                return Ok(false);
            }
            crate::audit::insert_record!(&mut *conn, audit);
        });
        self.hold_event_of(audit);
        Ok(true)
    }
}
