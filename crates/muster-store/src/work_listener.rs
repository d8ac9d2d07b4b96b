//! Announcing new and resumed work to the workers of other nodes (PostgreSQL `NOTIFY` on one
//! channel, heard on a connection of the listener's own).

use crate::{Backend, Result, Store, StoreTx};

/// Wakes workers on other nodes: PostgreSQL `LISTEN`/`NOTIFY` on one channel, listened to on a
/// connection of its own (see `listen.rs`).
pub struct WorkListener {
    inner: crate::listen::Listener,
}

/// The channel new and resumed work is announced on.
const WORK_CHANNEL: &str = "muster_work";

impl WorkListener {
    /// Waits for the next announcement (or for the connection to come back after it was lost,
    /// when announcements may have been missed).
    pub async fn recv(&mut self) -> Result<()> {
        self.inner.recv().await?;
        Ok(())
    }
}

impl Store {
    /// A listener for work announcements (PostgreSQL only: SQLite has one node).
    pub async fn work_listener(&self) -> Result<Option<WorkListener>> {
        match &self.inner {
            crate::Inner::Postgres(pool) => Ok(Some(WorkListener {
                inner: crate::listen::Listener::connect(pool, WORK_CHANNEL).await?,
            })),
            crate::Inner::Sqlite { .. } => Ok(None),
        }
    }
}

impl StoreTx {
    /// Announces work to listening workers when this transaction commits.
    pub async fn notify_work(&mut self) -> Result<()> {
        if self.backend() == Backend::Postgres
            && let crate::tx::TxInner::Postgres(t) = self.conn().await?
        {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(WORK_CHANNEL)
                .execute(&mut **t)
                .await?;
        }
        Ok(())
    }
}
