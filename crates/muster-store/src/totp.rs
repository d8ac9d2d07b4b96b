//! TOTP enrolment: a pending key per user until a code proves the user's app has it.

use crate::{Result, Store, Ts, on_db};
use muster_core::audit::AuditEntry;
use time::OffsetDateTime;
use uuid::Uuid;

impl Store {
    /// Stores (or replaces) the user's pending key, with its audit record.
    pub async fn put_totp_enrollment(
        &self,
        user_uuid: Uuid,
        key_sealed: &str,
        now: OffsetDateTime,
        audit: &AuditEntry,
    ) -> Result<()> {
        on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO totp_enrollments (user_uuid, key_sealed, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_uuid) DO UPDATE SET key_sealed = $2, created_at = $3",
            )
            .bind(user_uuid)
            .bind(key_sealed)
            .bind(Ts(now))
            .execute(&mut *tx)
            .await?;
            crate::audit::insert(&mut *tx, audit).await?;
            crate::commit(tx).await?;
        });
        Ok(())
    }

    /// The user's pending key and when it was made.
    pub async fn totp_enrollment(&self, user_uuid: Uuid) -> Result<Option<(String, OffsetDateTime)>> {
        let row: Option<(String, Ts)> = on_db!(self, read, pool => {
            sqlx::query_as("SELECT key_sealed, created_at FROM totp_enrollments WHERE user_uuid = $1")
                .bind(user_uuid)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(k, t)| (k, t.0)))
    }

    /// Activates a pending key: writes the user (at `version`) and removes the enrolment, in one
    /// transaction, only if the pending key is still `key_sealed` (not replaced meanwhile).
    /// False when either changed underneath.
    pub async fn complete_totp_enrollment(
        &self,
        user: &muster_core::directory::User,
        version: i64,
        key_sealed: &str,
        audit: &AuditEntry,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let removed = crate::tx::on_tx!(tx, conn => {
            sqlx::query("DELETE FROM totp_enrollments WHERE user_uuid = $1 AND key_sealed = $2")
                .bind(user.uuid)
                .bind(key_sealed)
                .execute(&mut *conn)
                .await?
                .rows_affected()
        });
        if removed != 1
            || !tx
                .write_user(user, version, crate::users::Revoke::None, Some(audit))
                .await?
        {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }
}
