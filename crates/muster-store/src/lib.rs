//! muster's storage boundary.
//!
//! [`Store`] is the one door to the database. It speaks to SQLite (the embedded default) or to
//! PostgreSQL (many nodes sharing one database) with the same methods and the same behaviour;
//! the conformance tests in `tests/` run every method against both.
//!
//! Each method that changes the directory on someone's behalf is one transaction and takes the
//! audit record (and the event it publishes) that describes the change, so they commit together
//! or not at all. Bookkeeping that is not such a change writes alone and is not audited: spending
//! a TOTP step (`consume_totp_step`), a session's idle clock (`touch_session`), login throttle
//! counters (`throttle_*`), housekeeping (`purge_*`) and numbering events (`sequence_events`).
//!
//! The store decides nothing: it writes what the services hand it and reports conflicts (a
//! taken username, a row changed underneath) as [`StoreError`]s.

mod account_history;
mod account_query;
mod account_tx;
mod accounts;
mod api_tokens;
mod audit;
mod bind;
mod catalogue;
mod events;
mod group_commit;
mod health;
mod listen;
mod mail;
mod nodes;
mod offering_counters;
mod offerings;
mod posix;
mod processes;
mod provider_posix;
mod providers;
mod schedules;
mod sessions;
mod sqlite_batch;
mod sqlite_writer;
mod subscriptions;
mod tallies;
pub mod testing;
mod throttle;
mod token_cache;
mod totp;
mod ts;
mod tx;
mod users;
mod work_listener;

pub use account_query::{AccountOrder, AccountQuery, Visibility};
pub use accounts::{AccountChange, ChangeOutcome};
pub use audit::{AuditQuery, AuditRecord};
pub use catalogue::{CatalogueRows, FixedInputRow, ProductBlockRow, ProductRow, ResourceTypeRow, WorkflowRow};
pub use events::{EventListener, EventRecord};
pub use health::DatabaseHealth;
pub use listen::Heard;
pub use mail::{Followups, MailRow, NewActionToken, NewMail, Redemption};
pub use offering_counters::PosixAllocation;
pub use posix::{PosixRelease, PosixWrite};
pub use processes::{Fence, NewProcess, ProcessQuery, ProcessRow, ProcessSort, ProcessUpdate, StepLog, StepRow};
pub use provider_posix::PosixPoolUse;
pub use schedules::ScheduleRow;
pub use sessions::{LoginGuard, LoginPassword, SessionAndTarget, SessionRecord, ThrottleReset};
pub use subscriptions::{HoldTerms, Subscription, SubscriptionListRow, SubscriptionQuery, SubscriptionSort};
pub use ts::Ts;
pub use tx::{StoreTx, WriterHold};
pub use users::{UserCursor, UserOrder, UserQuery, UsernameConflict};
pub use work_listener::WorkListener;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write; names the constraint's subject (e.g. "username").
    #[error("{0} already exists")]
    Duplicate(&'static str),
    /// A stored value could not be read back into the domain (a bug or a hand-edited row).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A fenced write matched no row: another worker holds the process now.
    #[error("the process's lease was lost")]
    Fenced,
    /// The SQLite group commit this transaction's writes were part of failed for a reason
    /// that was not theirs (another member's part broke the group): none of them is committed.
    #[error("the commit failed: {0}")]
    CommitFailed(String),
    #[error("unsupported database url (use sqlite:… or postgres://…)")]
    UnsupportedUrl,
    /// The database could not be opened at start: names what (a path, or host, port and
    /// database) and why.
    #[error("cannot open {what}: {cause}")]
    Open { what: String, cause: String },
    /// The database has no room for the write (SQLite `SQLITE_FULL`: the disk, or the
    /// configured size limit; PostgreSQL `53100 disk_full`). Nothing was written.
    #[error("the database is full: {0}")]
    StorageFull(String),
    /// The database could not be reached or did not answer (connection refused or lost, pool
    /// timeout, server shutting down, SQLite busy past its timeout). Nothing was written.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The connection was lost while a transaction was committing: whether it committed is
    /// unknown.
    #[error("the outcome of a commit is unknown: {0}")]
    OutcomeUnknown(String),
    /// The store was closed (the node is stopping).
    #[error("the store is closed")]
    Closed,
    /// Any other database error.
    #[error(transparent)]
    Database(sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    /// Sorts a database error by what the caller can do about it (see [`Failure`]).
    fn from(e: sqlx::Error) -> Self {
        if matches!(e, sqlx::Error::PoolClosed) {
            return StoreError::Closed;
        }
        match Failure::of(&e) {
            Failure::Full => StoreError::StorageFull(e.to_string()),
            Failure::Unavailable => StoreError::Unavailable(e.to_string()),
            Failure::Other => StoreError::Database(e),
        }
    }
}

/// What kind of failure a database error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No room: SQLite's `SQLITE_FULL` (13), PostgreSQL's `53100`.
    Full,
    /// The database could not be reached or used for now.
    Unavailable,
    /// Anything else: a constraint, a bug, bad data.
    Other,
}

impl Failure {
    pub(crate) fn of(e: &sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Failure::Unavailable,
            sqlx::Error::Database(d) => {
                let Some(code) = d.code() else { return Failure::Other };
                if let Ok(n) = code.parse::<i32>() {
                    // SQLite: the primary result code is the low byte of the extended one
                    // (https://www.sqlite.org/rescode.html).
                    return match n & 0xff {
                        13 => Failure::Full,
                        // BUSY, LOCKED (another process held the file past the busy timeout),
                        // IOERR, CANTOPEN, READONLY (a file system remounted read-only).
                        5 | 6 | 8 | 10 | 14 => Failure::Unavailable,
                        _ => Failure::Other,
                    };
                }
                // PostgreSQL SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html).
                match code.as_ref() {
                    "53100" => Failure::Full,
                    // Connection exceptions, server shutting down or starting, out of
                    // resources, a hot standby that cannot write.
                    c if c.starts_with("08") || c.starts_with("53") => Failure::Unavailable,
                    "57P01" | "57P02" | "57P03" | "25006" => Failure::Unavailable,
                    _ => Failure::Other,
                }
            }
            _ => Failure::Other,
        }
    }
}

impl StoreError {
    /// Whether the failure was the database's (unreachable, full, a commit's outcome lost)
    /// rather than the request's: trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::StorageFull(_)
                | StoreError::Unavailable(_)
                | StoreError::OutcomeUnknown(_)
                | StoreError::CommitFailed(_)
        )
    }
}

impl From<StoreError> for muster_core::DomainError {
    /// Store errors as every service reports them: a duplicate as a conflict, the database's
    /// own trouble with its own code (507 full, 503 unavailable or outcome unknown), anything
    /// else as an internal error whose detail goes to the log only.
    fn from(e: StoreError) -> Self {
        use muster_core::DomainError;
        use muster_core::error::codes;
        match e {
            StoreError::Duplicate(what) => DomainError::conflict(codes::CONFLICT, format!("{what} already exists")),
            StoreError::StorageFull(e) => {
                tracing::warn!(error = %e, "a write was refused: the database is full");
                DomainError::storage_full()
            }
            StoreError::Unavailable(e) | StoreError::CommitFailed(e) => {
                tracing::warn!(error = %e, "the database is unavailable");
                DomainError::database_unavailable()
            }
            StoreError::Closed => DomainError::database_unavailable(),
            StoreError::OutcomeUnknown(e) => {
                tracing::warn!(error = %e, "a commit's outcome is unknown");
                DomainError::outcome_unknown()
            }
            other => DomainError::internal(other),
        }
    }
}

/// Commits `tx`. A commit that fails because the connection failed has an unknown outcome
/// (the server may have committed before the answer was lost): reported as
/// [`StoreError::OutcomeUnknown`], never as "nothing happened". On SQLite a failed COMMIT
/// did not commit (the library reports the result of the write itself).
pub(crate) async fn commit<DB: sqlx::Database>(tx: sqlx::Transaction<'_, DB>) -> Result<()> {
    tx.commit().await.map_err(|e| match Failure::of(&e) {
        Failure::Unavailable if DB::NAME == "PostgreSQL" => StoreError::OutcomeUnknown(e.to_string()),
        _ => StoreError::from(e),
    })
}

impl StoreError {
    /// Maps a unique violation to [`StoreError::Duplicate`] naming `subject`.
    /// Only a violation of the constraint on `column` is reported as a duplicate `subject`;
    /// any other (a clashing primary key, say) stays a database error.
    fn unique_as(e: sqlx::Error, column: &str, subject: &'static str) -> Self {
        match &e {
            sqlx::Error::Database(d)
                if d.is_unique_violation()
                    // PostgreSQL names the constraint; SQLite names the column in the message.
                    && (d.constraint().is_some_and(|c| c.contains(column)) || d.message().contains(column)) =>
            {
                StoreError::Duplicate(subject)
            }
            _ => StoreError::from(e),
        }
    }
}

impl StoreError {
    /// [`StoreError::unique_as`] for an error that is only looked at (a held statement's
    /// failure, mapped when its batch comes back): Some only for that constraint's violation.
    pub(crate) fn unique_opt(e: &sqlx::Error, column: &str, subject: &'static str) -> Option<Self> {
        match e {
            sqlx::Error::Database(d)
                if d.is_unique_violation()
                    && (d.constraint().is_some_and(|c| c.contains(column)) || d.message().contains(column)) =>
            {
                Some(StoreError::Duplicate(subject))
            }
            _ => None,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connections to PostgreSQL, or SQLite readers.
    pub max_connections: u32,
    /// SQLite: the largest the database file may grow, in MiB (`PRAGMA max_page_count` on
    /// the writer). A write that would need more is refused as [`StoreError::StorageFull`],
    /// as on a full disk. None: as large as the disk allows.
    pub sqlite_max_size_mib: Option<u64>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            sqlite_max_size_mib: None,
        }
    }
}

/// SQLite's page size (the default, which muster never changes).
const SQLITE_PAGE_SIZE: u64 = 4096;

#[derive(Clone)]
enum Inner {
    /// SQLite allows one writer at a time. A single-connection write pool queues writers in the
    /// process (instead of making them spin on SQLITE_BUSY); reads use their own pool and
    /// proceed in parallel under WAL.
    Sqlite {
        read: SqlitePool,
        write: SqlitePool,
        /// Stops the WAL checkpointer when the last clone of the store goes (file databases).
        checkpointer: Option<Arc<Checkpointer>>,
        /// Group commit of `StoreTx`s on the write connection (see `group_commit`).
        relay: Arc<group_commit::Relay>,
    },
    Postgres(PgPool),
}

/// The storage boundary. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Inner,
    /// This node's API token lookups (see `token_cache`); shared by every clone.
    tokens: std::sync::Arc<token_cache::TokenCache>,
    /// The last health check (see `health`).
    health: std::sync::Arc<health::HealthCache>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend()).finish()
    }
}

/// Runs `$body` with `$pool` bound to the right pool of either backend. The body is compiled
/// once per backend, so every value it binds must be encodable by both drivers; the SQL text
/// itself is checked only when it runs (by the conformance tests, against both databases).
macro_rules! on_db {
    ($store:expr, read, $pool:ident => $body:expr) => {
        match &$store.inner {
            $crate::Inner::Sqlite { read: $pool, .. } => $body,
            $crate::Inner::Postgres($pool) => $body,
        }
    };
    ($store:expr, write, $pool:ident => $body:expr) => {
        match &$store.inner {
            $crate::Inner::Sqlite { write: $pool, .. } => $body,
            $crate::Inner::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_db;

/// A PostgreSQL connection idle for this long is pinged before it is used again.
const PG_PING_IDLE: Duration = Duration::from_secs(1);

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The writer checkpoints the WAL itself only past this many pages (~80 MiB), a backstop:
/// normally [`Checkpointer`] does it first.
const WRITER_AUTOCHECKPOINT_PAGES: &str = "20000";

/// How often the checkpointer copies the WAL back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Copies the SQLite WAL into the database file from a connection of its own, off the writer's
/// path. SQLite's default has the committing connection do it every 1,000 pages, fsyncs
/// included: on the one writer that stalled every writer of the node while it ran. A PASSIVE
/// checkpoint waits for no one and blocks no one.
pub(crate) struct Checkpointer(tokio::task::JoinHandle<()>);

impl Checkpointer {
    fn spawn(options: SqliteConnectOptions) -> Self {
        Self(tokio::spawn(async move {
            use sqlx::Connection;
            let mut conn: Option<sqlx::SqliteConnection> = None;
            loop {
                tokio::time::sleep(CHECKPOINT_EVERY).await;
                if conn.is_none() {
                    match sqlx::SqliteConnection::connect_with(&options).await {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            tracing::warn!(error = %e, "the WAL checkpointer could not connect");
                            continue;
                        }
                    }
                }
                if let Some(c) = conn.as_mut()
                    && let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&mut *c).await
                {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                    conn = None;
                }
            }
        }))
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Puts the lease check that SQLite commit batches use on a new write connection.
async fn install_lease_check(conn: &mut sqlx::SqliteConnection) -> std::result::Result<(), sqlx::Error> {
    use sqlx::Executor;
    conn.execute(tx::LEASE_CHECK).await?;
    Ok(())
}

impl Store {
    /// Connects to `url`: `sqlite:PATH` (created if missing) or `postgres://…`.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self> {
        if url.starts_with("sqlite:") && (url.contains(":memory:") || url.contains("mode=memory")) {
            // Each connection to an in-memory database is a database of its own: one pool, one
            // connection, for both reading and writing.
            let opts = SqliteConnectOptions::from_str(url)?.foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .test_before_acquire(false)
                .idle_timeout(None)
                .max_lifetime(None)
                .after_connect(|conn, _| Box::pin(async move { install_lease_check(conn).await }))
                .connect_with(opts)
                .await?;
            Ok(Self::new(Inner::Sqlite {
                read: pool.clone(),
                write: pool,
                checkpointer: None,
                relay: Arc::default(),
            }))
        } else if url.starts_with("sqlite:") {
            // A failure to open names the file: "unable to open database file" alone does not.
            let what = || format!("the SQLite database {}", url.trim_start_matches("sqlite:"));
            Self::connect_sqlite(url, options).await.map_err(|e| match e {
                StoreError::Database(cause) => StoreError::Open {
                    what: what(),
                    cause: cause.to_string(),
                },
                StoreError::Unavailable(cause) => StoreError::Open { what: what(), cause },
                other => other,
            })
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)?;
            // One connection first, so that a wrong host, port, database or password is
            // reported at once and as itself, not as a pool timeout ten seconds later.
            {
                use sqlx::Connection;
                let what = format!(
                    "PostgreSQL at {}:{} (database {:?})",
                    opts.get_host(),
                    opts.get_port(),
                    opts.get_database().unwrap_or("(the user's)")
                );
                match sqlx::PgConnection::connect_with(&opts).await {
                    Ok(c) => {
                        let _ = c.close().await;
                    }
                    Err(e) => {
                        // The server's own words, without its source location.
                        let cause = match &e {
                            sqlx::Error::Database(d) => d.message().to_owned(),
                            other => other.to_string(),
                        };
                        return Err(StoreError::Open { what, cause });
                    }
                }
            }
            // sqlx pings every connection before handing it out, a network round trip per
            // query. It also checks each connection when it comes back, so only one that sat
            // idle (when the server may have closed it) needs the ping before use.
            let pool = PgPoolOptions::new()
                .max_connections(options.max_connections.max(1))
                .acquire_timeout(Duration::from_secs(10))
                .test_before_acquire(false)
                .before_acquire(|conn, meta| {
                    Box::pin(async move {
                        if meta.idle_for >= PG_PING_IDLE {
                            sqlx::Connection::ping(conn).await?;
                        }
                        Ok(true)
                    })
                })
                .connect_with(opts)
                .await?;
            Ok(Self::new(Inner::Postgres(pool)))
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }

    /// [`Store::connect`] for a SQLite file.
    async fn connect_sqlite(url: &str, options: &StoreOptions) -> Result<Self> {
        {
            let base = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            // The one writer keeps the upper levels of every index it updates in its own cache
            // (32 MiB rather than SQLite's 2 MiB): with large tables, re-reading them through
            // the OS on every write transaction cost more than the writes.
            // No ping before each use (sqlx's default): a SQLite connection is a file handle in
            // this process that no peer can drop, and the ping is a round trip to the
            // connection's thread, which on the single writer delayed every write. (sqlx still
            // checks each connection when it is returned.)
            // A connection whose transaction state is unknown after a failure is replaced
            // when it comes back to the pool (see `sqlite_writer`).
            let mut writer = base
                .clone()
                .pragma("cache_size", "-32768")
                .pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES)
                .pragma("temp_store", "memory");
            if let Some(mib) = options.sqlite_max_size_mib {
                let pages = (mib.saturating_mul(1024 * 1024) / SQLITE_PAGE_SIZE).max(1);
                writer = writer.pragma("max_page_count", pages.to_string());
            }
            let write = SqlitePoolOptions::new()
                .max_connections(1)
                .test_before_acquire(false)
                .after_connect(|conn, _| Box::pin(async move { install_lease_check(conn).await }))
                .after_release(|conn, _| Box::pin(async move { sqlite_writer::released_clean(conn).await }))
                .connect_with(writer)
                .await?;
            let checkpointer = Some(Arc::new(Checkpointer::spawn(base.clone())));
            // Readers do not set pragmas that write (journal mode); the writer already did.
            let read_opts = SqliteConnectOptions::from_str(url)?
                .read_only(true)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            let read = SqlitePoolOptions::new()
                .max_connections(options.max_connections.max(1))
                .test_before_acquire(false)
                .connect_with(read_opts)
                .await?;
            Ok(Self::new(Inner::Sqlite {
                read,
                write,
                checkpointer,
                relay: Arc::default(),
            }))
        }
    }

    fn new(inner: Inner) -> Self {
        Self {
            inner,
            tokens: Default::default(),
            health: Default::default(),
        }
    }

    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Sqlite { .. } => Backend::Sqlite,
            Inner::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies the embedded migrations that have not run yet.
    pub async fn migrate(&self) -> Result<()> {
        match &self.inner {
            Inner::Sqlite { write, .. } => SQLITE_MIGRATIONS.run(write).await?,
            Inner::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        for c in self.fill_username_keys().await? {
            tracing::warn!(
                user_id = %muster_core::ids::UserId::from_uuid(c.user),
                conflicts_with = ?c.with.map(muster_core::ids::UserId::from_uuid).map(|u| u.to_string()),
                "a username clashes with another user's under the username rules: the account stays, \
                 but logins by that name reach the other user until a super-user renames it"
            );
        }
        Ok(())
    }

    /// A cheap round trip, for health checks.
    pub async fn ping(&self) -> Result<()> {
        on_db!(self, read, pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// Whether [`Store::close`] was called (the node is stopping).
    pub fn is_closed(&self) -> bool {
        match &self.inner {
            Inner::Sqlite { write, .. } => write.is_closed(),
            Inner::Postgres(pool) => pool.is_closed(),
        }
    }

    pub async fn close(&self) {
        match &self.inner {
            Inner::Sqlite {
                read,
                write,
                checkpointer,
                ..
            } => {
                if let Some(c) = checkpointer {
                    c.0.abort();
                }
                read.close().await;
                write.close().await;
            }
            Inner::Postgres(pool) => pool.close().await,
        }
    }
}
