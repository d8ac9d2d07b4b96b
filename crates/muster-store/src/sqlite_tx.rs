//! SQLite's side of a [`crate::StoreTx`]: a part of a group commit on the node's one write
//! connection (see `group_commit`), its statements held in a [`Batch`] and sent together.

use crate::sqlite_batch::Batch;
use crate::{Result, StoreError};
use sqlx::Sqlite;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnection, SqliteRow};

/// What a failed lease check raises inside a SQLite commit batch (see `LEASE_CHECK`).
const LEASE_LOST: &str = "muster: lease lost";

/// Installed on every SQLite write connection: inserting a row whose `ok` is not 1 into the
/// view `lease_check` aborts the statement, and with it the rest of a batch, before its
/// COMMIT. A commit batch inserts `changes()` of its fenced process update there, so a worker
/// that lost its lease commits nothing, in the same round trip as the commit itself.
pub(crate) const LEASE_CHECK: &str = "CREATE TEMP VIEW IF NOT EXISTS lease_check (ok) AS SELECT 1; \
    CREATE TEMP TRIGGER IF NOT EXISTS lease_check_held INSTEAD OF INSERT ON lease_check \
    WHEN NEW.ok IS NOT 1 BEGIN SELECT RAISE(ABORT, 'muster: lease lost'); END;";

/// SQLite's side of a [`StoreTx`]: the node's one write connection, with the transaction
/// managed by hand so that `BEGIN`, the statements held in [`Batch`] and `COMMIT` can travel
/// to the connection's thread together.
///
/// Why: every statement sent on its own is a hand-off to sqlx's SQLite thread and back, and on
/// the single writer those hand-offs, not SQLite, bounded how many workflow steps a node ran per
/// second. Statements whose results nobody waits for (inserts, updates whose outcome is known)
/// are held and sent with the next statement that is waited for, or at a step's end, or with
/// the COMMIT.
pub(crate) struct SqliteTx {
    conn: Option<PoolConnection<Sqlite>>,
    /// The group this transaction's part is committed with (see `group_commit`); travels
    /// with the connection.
    group: Option<crate::group_commit::Group>,
    relay: std::sync::Arc<crate::group_commit::Relay>,
    /// Its opening (`SAVEPOINT tx`, after `BEGIN IMMEDIATE` if no member began) is held or sent.
    begun: bool,
    /// The opening held includes the group's `BEGIN`.
    begins: bool,
    /// The opening was sent: this part may have changed something.
    open: bool,
    pub(crate) batch: Batch,
}

impl SqliteTx {
    /// A part on the write connection handed to it (or taken from the pool) with its group,
    /// its opening held.
    pub(crate) fn start(
        conn: PoolConnection<Sqlite>,
        group: crate::group_commit::Group,
        relay: std::sync::Arc<crate::group_commit::Relay>,
    ) -> Self {
        let mut t = SqliteTx {
            conn: Some(conn),
            group: Some(group),
            relay,
            begun: false,
            begins: false,
            open: false,
            batch: Batch::default(),
        };
        t.begin();
        t
    }

    fn conn(&mut self) -> Result<&mut SqliteConnection> {
        match self.conn.as_mut() {
            Some(c) => Ok(&mut **c),
            None => Err(StoreError::Corrupt("transaction connection unavailable".into())),
        }
    }

    /// Holds this part's opening at the head of the batch: `SAVEPOINT tx`, so that it can be
    /// undone alone inside its group, after `BEGIN IMMEDIATE` if no member began the
    /// transaction. (IMMEDIATE: take the write lock at once. A deferred transaction that reads
    /// and then writes fails with SQLITE_BUSY_SNAPSHOT if another process, a second muster on
    /// the same file, committed in between; waiting for the lock up front cannot fail that way.)
    fn begin(&mut self) {
        if !self.begun {
            let in_tx = self.group.as_ref().is_some_and(|g| g.open);
            let head = if in_tx {
                "SAVEPOINT tx; "
            } else {
                "BEGIN IMMEDIATE; SAVEPOINT tx; "
            };
            self.batch.sql.insert_str(0, head);
            self.begun = true;
            self.begins = !in_tx;
        }
    }

    /// Sends the held statements in one round trip; returns the rows they return (only the
    /// last statement of a batch is ever one that returns rows: see `StoreTx::send_for_rows`).
    pub(crate) async fn send(&mut self) -> Result<Vec<SqliteRow>> {
        self.begin();
        let batch = std::mem::take(&mut self.batch);
        if batch.sql.is_empty() {
            return Ok(Vec::new());
        }
        self.open = true;
        if self.begins
            && let Some(g) = self.group.as_mut()
        {
            g.open = true;
        }
        if let Some(failure) = self.group.as_ref().and_then(|g| g.broken.as_deref()) {
            // An earlier failure may have ended the transaction: nothing more is sent on it.
            return Err(failure.clone().into_error());
        }
        let Batch {
            sql,
            args,
            uniques,
            unencoded,
            ..
        } = batch;
        if let Some(e) = unencoded {
            return Err(StoreError::Database(sqlx::Error::Encode(e)));
        }
        let conn = self.conn()?;
        match sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
            .fetch_all(&mut *conn)
            .await
        {
            Ok(rows) => Ok(rows),
            Err(e) => {
                if !crate::sqlite_writer::statement_only(&e)
                    && let Some(g) = self.group.as_mut()
                {
                    // A full disk, an I/O error…: SQLite may have rolled the whole transaction
                    // back, every member's part with it.
                    g.broken = Some(Box::new(crate::group_commit::GroupFailure::of(&e)));
                }
                Err(map_batch_error(e, &uniques))
            }
        }
    }

    /// Ends this part: committed into the group's transaction (`commit`), or undone; then the
    /// connection goes to the next member or the group commits. Returns when the group's
    /// outcome is known: a commit is not reported before the group's COMMIT, nor an undone
    /// part before the writes it may have seen are committed (see `Relay::pass_on`).
    pub(crate) async fn leave(&mut self, commit: bool) -> Result<Vec<SqliteRow>> {
        let mut result = Ok(Vec::new());
        if commit {
            self.batch.push("RELEASE tx");
            // Nobody to hand the transaction to: commit the group in this same round trip.
            let ends_group = self.relay.nobody_waiting();
            if ends_group {
                self.batch.push("COMMIT");
            }
            match self.send().await {
                Ok(rows) => {
                    result = Ok(rows);
                    if ends_group && let Some(g) = self.group.as_mut() {
                        // Committed: every member's part with it; nothing is open any more.
                        g.open = false;
                    }
                }
                Err(e) => {
                    result = Err(e);
                    self.undo().await;
                }
            }
        } else {
            self.batch = Batch::default();
            if self.open {
                self.undo().await;
            }
        }
        self.open = false;
        self.begun = false;
        let (Some(conn), Some(group)) = (self.conn.take(), self.group.take()) else {
            return Err(StoreError::Corrupt("transaction connection unavailable".into()));
        };
        // When the group did not commit, that is the answer even for a part that failed on its
        // own: what it failed on (an earlier member's row) may be gone too.
        self.relay.pass_on(conn, group).await?;
        result
    }

    /// Undoes this part inside the open transaction. If that fails, the part's savepoint is
    /// gone, and with it, perhaps, the whole transaction: the group is broken (see
    /// `group_commit`), and every member learns that nothing of it committed.
    async fn undo(&mut self) {
        if self.group.as_ref().is_some_and(|g| g.broken.is_some()) {
            return;
        }
        let Ok(conn) = self.conn() else { return };
        if let Err(e) = sqlx::raw_sql("ROLLBACK TO tx; RELEASE tx").execute(&mut *conn).await {
            tracing::warn!(error = %e, "undoing a transaction's part failed; the group does not commit");
            if let Some(g) = self.group.as_mut() {
                g.broken = Some(Box::new(crate::group_commit::GroupFailure::of(&e)));
            }
        }
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        // Dropped while holding the connection (an error, a lost lease, a cancelled task):
        // undo this part and pass the connection on, or those queued behind it wait forever.
        let Some(conn) = self.conn.take() else {
            return;
        };
        let group = self.group.take().unwrap_or_else(crate::group_commit::Group::new);
        let relay = self.relay.clone();
        let open = self.open;
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let mut part = SqliteTx {
                        conn: Some(conn),
                        group: Some(group),
                        relay,
                        begun: true,
                        begins: false,
                        open,
                        batch: Batch::default(),
                    };
                    if let Err(e) = part.leave(false).await {
                        tracing::debug!(error = %e, "ending a dropped transaction");
                    }
                });
            }
            // No runtime left: discard the connection instead of returning it to the pool
            // inside a transaction, and send those waiting to the pool.
            Err(_) => {
                let mut conn = conn;
                conn.close_on_drop();
                relay.abandon();
            }
        }
    }
}

fn map_batch_error(e: sqlx::Error, uniques: &[fn(&sqlx::Error) -> Option<StoreError>]) -> StoreError {
    if let sqlx::Error::Database(d) = &e
        && d.message().contains(LEASE_LOST)
    {
        return StoreError::Fenced;
    }
    uniques
        .iter()
        .find_map(|m| m(&e))
        .unwrap_or_else(|| StoreError::from(e))
}

impl SqliteTx {
    /// The connection, with everything held sent first (statements run in order).
    pub(crate) async fn sent_conn(&mut self) -> Result<&mut SqliteConnection> {
        if !self.batch.sql.is_empty() || !self.open {
            self.send().await?;
        }
        self.conn()
    }
}
