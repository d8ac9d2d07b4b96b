//! Transactions that span several store calls.
//!
//! Most store methods are one transaction each. A workflow step is different: its own writes
//! (a subscription, a directory user), its step-log row and the fenced update of its process
//! row must commit together, so that a step is either wholly done or not done at all, and only the engine knows when the step is
//! over. [`StoreTx`] is such a transaction, on either backend; the methods that run inside one
//! are defined on it, next to the tables they touch.

use crate::bind::{PushValue, SqlWriter};
pub(crate) use crate::sqlite_batch::{Batch, hold};
use crate::sqlite_tx::SqliteTx;
use crate::{Backend, Inner, Result, Store, StoreError};
use sqlx::sqlite::SqliteRow;
use sqlx::{Postgres, Sqlite, Transaction};

pub(crate) enum TxInner {
    /// (Boxed: it carries the batch, the group and the relay; one allocation per transaction.)
    Sqlite(Box<SqliteTx>),
    Postgres(Transaction<'static, Postgres>),
}

/// Writes one statement in a transaction whose result nobody waits for: held in the SQLite
/// batch when `hold` is true (see [`Batch`]), sent at once otherwise (and always on
/// PostgreSQL). `clash` maps a unique violation, as [`Batch::may_clash`] does for a held one.
/// One statement, one list of arguments, for both ways of sending it.
macro_rules! write_stmt {
    ($tx:expr, hold = $hold:expr, $sql:expr, [$($v:expr),* $(,)?] $(, clash = $map:expr)?) => {{
        let batch = if $hold { $tx.batch().await? } else { None };
        match batch {
            Some(b) => {
                let _held = $crate::tx::hold!(b, $sql, $($v),*);
                $( _held.may_clash($map); )?
            }
            None => {
                $crate::tx::on_tx!($tx, conn => {
                    let r = sqlx::query($sql)$(.bind($v))*.execute(&mut *conn).await;
                    $( let r = r.map_err(|e| ($map)(&e).unwrap_or_else(|| $crate::StoreError::from(e))); )?
                    r?;
                });
            }
        }
    }};
}
pub(crate) use write_stmt;

/// A write transaction. Dropped without [`StoreTx::commit`], it rolls back.
///
/// It begins lazily, at its first statement: on SQLite, where there is one writer, a step that
/// never writes (or an engine step whose rows are all held, below) never holds the writer.
///
/// Events and step-log rows written through it are held until [`StoreTx::commit`] and then
/// inserted with one multi-row statement each, just before the commit: same transaction,
/// fewer round trips (a step that writes three events costs one INSERT, not three).
pub struct StoreTx {
    pub(crate) store: Store,
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

/// Held events and step rows go in by multi-row statements of at most this many rows each (at
/// most 9 arguments a row; a SQLite statement takes at most 32,766, a PostgreSQL one 65,535).
const EVENTS_PER_STATEMENT: usize = 1000;

/// The head of the multi-row insert of held step-log rows; each row's values are
/// [`step_values`].
const INSERT_STEPS: &str = "INSERT INTO process_steps (process_id, name, status, state_delta, created_by, \
    started_at, completed_at, attempt, retries) VALUES ";

fn step_values((pid, attempt, log): &(uuid::Uuid, i64, crate::StepLog)) -> [crate::bind::Value<'_>; 9] {
    use crate::bind::Value;
    [
        Value::Uuid(Some(*pid)),
        Value::Text(Some(&log.name)),
        Value::Text(Some(log.status.as_str())),
        Value::Json(&log.state_delta),
        Value::Text(Some(&log.created_by)),
        Value::Time(Some(crate::Ts(log.started_at))),
        Value::Time(Some(crate::Ts(log.completed_at))),
        Value::Int(Some(*attempt)),
        Value::Int(Some(i64::from(log.retries))),
    ]
}

impl PendingEvent {
    /// Its values, in [`crate::audit::event_columns!`] order.
    fn values(&self) -> [crate::bind::Value<'_>; 6] {
        use crate::bind::Value;
        [
            Value::Text(Some(self.stream)),
            Value::Text(Some(self.kind)),
            Value::Text(self.subject.as_deref()),
            Value::Time(Some(crate::Ts(self.at))),
            Value::Text(self.cid.as_deref()),
            Value::Json(&self.data),
        ]
    }
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
                let $conn = t.sent_conn().await?;
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

    /// The transaction, begun on first use (on SQLite, its `BEGIN` held until the first
    /// round trip).
    pub(crate) async fn conn(&mut self) -> Result<&mut TxInner> {
        if self.inner.is_none() {
            self.inner = Some(match &self.store.inner {
                Inner::Sqlite { write, relay, .. } => {
                    // Join the group of the transaction holding the connection, if any;
                    // otherwise take the connection from the pool (and answer the queue).
                    let handed = match relay.join() {
                        Some(rx) => rx.await.ok().flatten(),
                        None => None,
                    };
                    let (conn, group) = match handed {
                        Some(h) => (h.conn, h.group),
                        None => {
                            let conn = write.acquire().await?;
                            relay.hold();
                            (conn, crate::group_commit::Group::new())
                        }
                    };
                    TxInner::Sqlite(Box::new(SqliteTx::start(conn, group, relay.clone())))
                }
                Inner::Postgres(pool) => TxInner::Postgres(pool.begin().await?),
            });
        }
        match self.inner.as_mut() {
            Some(inner) => Ok(inner),
            None => Err(crate::StoreError::Corrupt("transaction unavailable".into())),
        }
    }

    /// SQLite: the batch to hold statements in (the transaction begun). None on PostgreSQL,
    /// where statements are sent as they come.
    pub(crate) async fn batch(&mut self) -> Result<Option<&mut Batch>> {
        Ok(match self.conn().await? {
            TxInner::Sqlite(t) => Some(&mut t.batch),
            TxInner::Postgres(_) => None,
        })
    }

    /// SQLite: sends the held statements with the one just held by [`Batch::push`] last, and
    /// returns its rows.
    pub(crate) async fn send_for_rows(&mut self) -> Result<Vec<SqliteRow>> {
        match self.conn().await? {
            TxInner::Sqlite(t) => t.send().await,
            TxInner::Postgres(_) => Err(StoreError::Corrupt("send_for_rows on PostgreSQL".into())),
        }
    }

    /// A step's end: sends what it holds if any of it may still fail, so that the failure is
    /// that step's (and is rolled back to its savepoint) rather than a later one's.
    pub async fn settle(&mut self) -> Result<()> {
        if let Some(TxInner::Sqlite(t)) = self.inner.as_mut()
            && t.batch.fallible
        {
            t.send().await?;
        }
        Ok(())
    }

    pub async fn commit(self) -> Result<()> {
        self.commit_returning().await.map(drop)
    }

    /// Commits, and returns the rows of the round trip that ended it (SQLite: what was held
    /// last went with the end of the transaction; see
    /// [`StoreTx::hold_offering_user_change`]). Empty on PostgreSQL.
    pub(crate) async fn commit_returning(mut self) -> Result<Vec<SqliteRow>> {
        let anything =
            self.inner.is_some() || !self.events.is_empty() || !self.steps.is_empty() || self.staged.is_some();
        if !anything {
            return Ok(Vec::new());
        }
        self.flush().await?;
        // On SQLite the held statements and the end of this part go in one round trip; the
        // group's COMMIT follows (see `group_commit`).
        match self.inner.take() {
            Some(TxInner::Sqlite(mut t)) => t.leave(true).await,
            Some(TxInner::Postgres(t)) => {
                crate::commit(t).await?;
                Ok(Vec::new())
            }
            None => Ok(Vec::new()),
        }
    }

    pub async fn rollback(mut self) -> Result<()> {
        match self.inner.take() {
            Some(TxInner::Sqlite(mut t)) => drop(t.leave(false).await?),
            Some(TxInner::Postgres(t)) => t.rollback().await?,
            None => {}
        }
        Ok(())
    }

    /// Marks a savepoint (`step`): [`StoreTx::rollback_to_savepoint`] undoes what follows.
    pub async fn savepoint(&mut self) -> Result<()> {
        // Before the transaction began there is nothing to keep: rolling back to the mark is
        // rolling back everything (and a step that never writes never takes the writer).
        self.mark_before_begin = self.inner.is_none();
        match self.inner.as_mut() {
            None => {}
            // Held, not sent: it goes with the step's first statement, and if the step fails
            // before sending anything, rolling back to it costs nothing.
            Some(TxInner::Sqlite(t)) => t.batch.savepoint(),
            Some(TxInner::Postgres(t)) => {
                sqlx::query("SAVEPOINT step").execute(&mut **t).await?;
            }
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
                Some(TxInner::Sqlite(mut t)) => drop(t.leave(false).await?),
                Some(TxInner::Postgres(t)) => t.rollback().await?,
                None => {}
            }
        } else if let Some(TxInner::Sqlite(t)) = self.inner.as_mut() {
            if !t.batch.drop_to_mark() {
                // Sent already: the rollback is held for the next round trip.
                t.batch.push("ROLLBACK TO SAVEPOINT step");
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
        if let Some(b) = self.batch().await? {
            crate::audit::hold_record(b, entry)?;
        } else {
            on_tx!(self, conn => {
                crate::audit::bind_audit(sqlx::query(crate::audit::INSERT_AUDIT), entry)
                    .execute(&mut *conn)
                    .await?;
            });
        }
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
        if self.backend() == Backend::Sqlite {
            return self.hold_commit_rows().await;
        }
        if let Some((fence, up)) = self.staged.take()
            && !self.finish_step_now(&fence, &up).await?
        {
            return Err(crate::StoreError::Fenced);
        }
        let events = std::mem::take(&mut self.events);
        let steps = std::mem::take(&mut self.steps);
        on_tx!(self, conn => {
            for chunk in events.chunks(EVENTS_PER_STATEMENT) {
                let mut qb = sqlx::QueryBuilder::new(concat!("INSERT INTO events (", crate::audit::event_columns!(), ") VALUES "));
                for (i, e) in chunk.iter().enumerate() {
                    qb.push(if i == 0 { "(" } else { ", (" }).push_list(e.values()).push(")");
                }
                qb.build().execute(&mut *conn).await?;
            }
            for chunk in steps.chunks(EVENTS_PER_STATEMENT) {
                let mut qb = sqlx::QueryBuilder::new(INSERT_STEPS);
                for (i, step) in chunk.iter().enumerate() {
                    qb.push(if i == 0 { "(" } else { ", (" }).push_list(step_values(step)).push(")");
                }
                qb.build().execute(&mut *conn).await?;
            }
        });
        Ok(())
    }

    /// SQLite's [`StoreTx::flush`]: the staged process update with its lease check
    /// ([`StoreTx::hold_fenced_step`]), the events and the step rows are held for the commit's
    /// round trip.
    async fn hold_commit_rows(&mut self) -> Result<()> {
        if let Some((fence, up)) = self.staged.take() {
            self.hold_fenced_step(&fence, &up).await?;
        }
        let events = std::mem::take(&mut self.events);
        let steps = std::mem::take(&mut self.steps);
        let Some(b) = self.batch().await? else {
            return Err(StoreError::Corrupt("no SQLite batch".into()));
        };
        if !events.is_empty() {
            hold_numbered_events(b, &events)?;
        }
        for chunk in steps.chunks(EVENTS_PER_STATEMENT) {
            b.text(INSERT_STEPS);
            for (i, step) in chunk.iter().enumerate() {
                b.text(if i == 0 { "(" } else { ", (" })
                    .push_list(step_values(step))
                    .text(")");
            }
            b.text("; ");
        }
        Ok(())
    }
}

/// Holds the insert of `events` numbered at once (SQLite only).
///
/// On PostgreSQL events are numbered after they commit (see `events.rs`: a transaction that
/// took a number first may commit last). On SQLite every write transaction holds the one
/// database write lock from its first statement to its commit, so transactions commit in the
/// order they number in, and numbering inside the transaction is just as safe: each event
/// takes its stream's counter plus its place in the batch, and the counter moves on. Writes
/// outside a `StoreTx` number theirs the same way (`audit::insert`); an event found without a
/// number (written by an older version) is numbered by the sequencer from the same counter.
fn hold_numbered_events(b: &mut Batch, events: &[PendingEvent]) -> Result<()> {
    let mut streams: Vec<(&'static str, i64)> = Vec::new();
    let mut place = Vec::with_capacity(events.len());
    for e in events {
        let n = match streams.iter_mut().find(|(s, _)| *s == e.stream) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                streams.push((e.stream, 1));
                1
            }
        };
        place.push(n);
    }
    for (stream, _) in &streams {
        // Every SQLite write numbers its events as it writes them (here and `audit::insert`),
        // under the one write lock: numbers follow the order of commits.
        hold!(
            b,
            "INSERT INTO event_streams (stream, last_seq) VALUES ($1, 0) ON CONFLICT (stream) DO NOTHING",
            *stream
        );
    }
    // Each takes its stream's counter plus its place; the counters move on after the last.
    let mut place = place.into_iter();
    for chunk in events.chunks(EVENTS_PER_STATEMENT) {
        b.text(concat!(
            "INSERT INTO events (",
            crate::audit::event_columns!(),
            ", seq) VALUES "
        ));
        for (i, (e, n)) in chunk.iter().zip(place.by_ref()).enumerate() {
            b.text(if i == 0 { "(" } else { ", (" })
                .push_list(e.values())
                .text(", (SELECT last_seq FROM event_streams WHERE stream = ")
                .push_value(e.stream)
                .text(") + ")
                .push_value(n)
                .text(")");
        }
        b.text("; ");
    }
    for (stream, n) in &streams {
        hold!(
            b,
            "UPDATE event_streams SET last_seq = last_seq + $2 WHERE stream = $1",
            *stream,
            *n
        );
    }
    Ok(())
}
