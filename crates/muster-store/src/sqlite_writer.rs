//! Keeping SQLite's one write connection clean after a failure.
//!
//! After certain errors (a full disk, an I/O error, `SQLITE_BUSY` on COMMIT) SQLite may or may
//! not have rolled the open transaction back by itself (<https://www.sqlite.org/lang_transaction.html>,
//! "Response To Errors Within A Transaction"). A connection whose state is guessed wrong is
//! dangerous on the single writer: a later `BEGIN` fails with "cannot start a transaction within
//! a transaction", or worse, a later transaction's writes land inside a leftover one and are
//! rolled back with it after their caller was told they committed. sqlx tracks a transaction
//! depth of its own, lowered only when COMMIT or ROLLBACK succeed, so after a failed COMMIT its
//! next `begin()` may send `SAVEPOINT` into a transaction that no longer exists.
//!
//! So every path that ends a transaction on the writer makes the connection's state known:
//! - sqlx-managed transactions: the pool's `after_release` hook ([`released_clean`]) closes a
//!   connection that sqlx still believes to be inside a transaction once its queued rollback
//!   has run (that rollback failed: the state is unknown);
//! - hand-managed batches (`BEGIN IMMEDIATE; …; COMMIT` sent as one): [`end_failed_batch`]
//!   rolls back and closes the connection unless the rollback proves it is outside any
//!   transaction;
//! - group commit (`group_commit`): a part that cannot be undone, or a COMMIT that fails,
//!   closes the connection and fails every member of the group.
//!
//! Closing is always safe: SQLite rolls back whatever is open on a connection that closes, and
//! the pool opens a fresh connection for the next writer.

use sqlx::Sqlite;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::SqliteConnection;

/// The write pool's `after_release` hook: whether the returned connection may be used again.
pub(crate) async fn released_clean(conn: &mut SqliteConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    // A transaction dropped without commit queued its rollback on the connection's thread;
    // a round trip lets it run.
    conn.ping().await?;
    if conn.is_in_transaction() {
        tracing::warn!("the SQLite write connection could not be rolled back; replacing it");
        return Ok(false);
    }
    Ok(true)
}

/// Ends a hand-managed transaction after a statement of its batch failed. Returns whether the
/// connection is known to be outside any transaction; if not, it is closed when dropped.
pub(crate) async fn end_failed_batch(conn: &mut PoolConnection<Sqlite>) -> bool {
    match sqlx::query("ROLLBACK").execute(&mut **conn).await {
        Ok(_) => true,
        // SQLite rolled back by itself already (or the failure came before BEGIN took effect).
        Err(e) if e.to_string().contains("no transaction is active") => true,
        Err(e) => {
            tracing::warn!(error = %e, "rollback of a failed SQLite batch failed; replacing the connection");
            conn.close_on_drop();
            false
        }
    }
}

/// Whether a statement's failure left its transaction as it was: a constraint (a unique
/// violation, or the lease check's `RAISE(ABORT)`) undoes just the statement. Anything else
/// (full, I/O, busy) may have rolled back the whole transaction.
pub(crate) fn statement_only(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|n| n & 0xff == 19),
        _ => false,
    }
}
