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

mod account_batch;
mod account_history;
mod account_query;
mod account_tx;
mod accounts;
mod api_tokens;
mod audit;
mod bind;
mod catalogue;
mod error;
mod events;
mod group_commit;
mod health;
mod listen;
mod mail;
mod nodes;
mod offering_counters;
mod offerings;
mod posix;
mod process_query;
mod process_tx;
mod processes;
mod provider_posix;
mod providers;
mod schedules;
mod sessions;
mod sqlite_batch;
mod sqlite_tx;
mod sqlite_writer;
mod subscription_query;
mod subscription_tx;
mod subscriptions;
mod tallies;
pub mod testing;
mod throttle;
mod token_cache;
mod totp;
mod ts;
mod tx;
mod user_query;
mod username_keys;
mod users;
mod work_listener;

pub use account_query::{AccountOrder, AccountQuery, Visibility};
pub use accounts::{AccountChange, ChangeOutcome};
pub use audit::{AuditQuery, AuditRecord};
pub use catalogue::{CatalogueRows, FixedInputRow, ProductBlockRow, ProductRow, ResourceTypeRow, WorkflowRow};
pub(crate) use error::{Failure, commit};
pub use error::{Result, StoreError};
pub use events::{EventListener, EventRecord};
pub use health::DatabaseHealth;
pub use listen::Heard;
pub use mail::{Followups, MailRow, NewActionToken, NewMail, Redemption};
pub use offering_counters::PosixAllocation;
pub use posix::{PosixRelease, PosixWrite};
pub use process_query::{ProcessQuery, ProcessSort};
pub use processes::{Fence, NewProcess, ProcessRow, ProcessUpdate, StepLog, StepRow};
pub use provider_posix::PosixPoolUse;
pub use schedules::ScheduleRow;
pub use sessions::{LoginGuard, LoginPassword, SessionAndTarget, SessionRecord, ThrottleReset};
pub use subscription_query::{SubscriptionListRow, SubscriptionQuery, SubscriptionSort};
pub use subscription_tx::HoldTerms;
pub use subscriptions::Subscription;
pub use ts::Ts;
pub use tx::{StoreTx, WriterHold};
pub use user_query::{UserCursor, UserOrder, UserQuery};
pub use username_keys::UsernameConflict;
pub use work_listener::WorkListener;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

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
    /// This node's offering-account changes waiting for SQLite's writer (see `account_batch`).
    account_batch: std::sync::Arc<account_batch::AccountBatch>,
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

/// Prepared statements the SQLite writer keeps (sqlx's default is 100). A transaction's held
/// statements travel as one text, so the writer sees many more distinct texts than the
/// readers: workflow steps with different numbers of events, account changes with and without
/// a history entry, each alone or as a group's first part.
const WRITER_STATEMENT_CACHE: usize = 132;

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
    conn.execute(sqlite_tx::LEASE_CHECK).await?;
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
                .pragma("temp_store", "memory")
                .statement_cache_capacity(WRITER_STATEMENT_CACHE);
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
            account_batch: Default::default(),
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
