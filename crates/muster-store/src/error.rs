//! What the store reports: [`StoreError`], how database failures map onto it (a full disk, a lost
//! connection, a unique clash naming its subject), and how it reaches the domain.

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
    pub(crate) fn unique_as(e: sqlx::Error, column: &str, subject: &'static str) -> Self {
        Self::unique_opt(&e, column, subject).unwrap_or_else(|| StoreError::from(e))
    }

    /// [`StoreError::unique_as`] for an error that is only looked at (a held statement's
    /// failure, mapped when its batch comes back): Some only for that constraint's violation.
    pub(crate) fn unique_opt(e: &sqlx::Error, column: &str, subject: &'static str) -> Option<Self> {
        match e {
            sqlx::Error::Database(d)
                if d.is_unique_violation()
                    // PostgreSQL names the constraint; SQLite names the column in the message.
                    && (d.constraint().is_some_and(|c| c.contains(column)) || d.message().contains(column)) =>
            {
                Some(StoreError::Duplicate(subject))
            }
            _ => None,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
