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

/// An open write transaction. Dropped without [`StoreTx::commit`], it rolls back.
pub struct StoreTx {
    pub(crate) inner: TxInner,
}

impl std::fmt::Debug for StoreTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreTx").field("backend", &self.backend()).finish()
    }
}

/// Runs `$body` with `$conn` bound to the transaction's connection, once per backend.
macro_rules! on_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match &mut $tx.inner {
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

impl Store {
    /// Opens a write transaction.
    pub async fn begin(&self) -> Result<StoreTx> {
        let inner = match &self.inner {
            Inner::Sqlite { write, .. } => TxInner::Sqlite(write.begin().await?),
            Inner::Postgres(pool) => TxInner::Postgres(pool.begin().await?),
        };
        Ok(StoreTx { inner })
    }
}

impl StoreTx {
    pub fn backend(&self) -> Backend {
        match self.inner {
            TxInner::Sqlite(_) => Backend::Sqlite,
            TxInner::Postgres(_) => Backend::Postgres,
        }
    }

    pub async fn commit(self) -> Result<()> {
        match self.inner {
            TxInner::Sqlite(t) => t.commit().await?,
            TxInner::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<()> {
        match self.inner {
            TxInner::Sqlite(t) => t.rollback().await?,
            TxInner::Postgres(t) => t.rollback().await?,
        }
        Ok(())
    }

    /// Writes an audit record (and the event it carries) inside this transaction.
    pub async fn audit(&mut self, entry: &muster_core::audit::AuditEntry) -> Result<()> {
        on_tx!(self, conn => {
            crate::audit::insert!(&mut *conn, entry);
        });
        Ok(())
    }

    /// Writes an event (unsequenced) inside this transaction.
    pub async fn event(
        &mut self,
        event: &muster_core::audit::Event,
        at: time::OffsetDateTime,
        cid: Option<&str>,
    ) -> Result<()> {
        on_tx!(self, conn => {
            sqlx::query("INSERT INTO events (stream, kind, subject, at, cid, data) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(event.stream)
                .bind(event.kind)
                .bind(&event.subject)
                .bind(crate::Ts(at))
                .bind(cid)
                .bind(sqlx::types::Json(&event.data))
                .execute(&mut *conn)
                .await?;
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
            crate::audit::insert!(&mut *conn, audit);
        });
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
            crate::audit::insert!(&mut *conn, audit);
        });
        Ok(true)
    }

    /// Deletes a user (compensation of an aborted create); false when it was already gone.
    pub async fn delete_user(&mut self, uuid: uuid::Uuid, audit: &muster_core::audit::AuditEntry) -> Result<bool> {
        on_tx!(self, conn => {
            let n = sqlx::query("DELETE FROM users WHERE uuid = $1").bind(uuid).execute(&mut *conn).await?.rows_affected();
            if n != 1 {
                return Ok(false);
            }
            crate::audit::insert!(&mut *conn, audit);
        });
        Ok(true)
    }
}
