//! Username keys of rows written before the username rules (RFC 8265 keys, TR39 look-alike
//! keys), which SQL cannot compute: filled in at migration, clashes kept apart and reported.

use crate::users::username_clash_opt;
use crate::{Result, Store, on_db};
use muster_core::audit::AuditEntry;
use muster_core::directory::User;
use uuid::Uuid;

/// A user whose username, when the keys of rows written before the username rules were
/// computed, clashed with another user's: it keeps its account and its old key, and gets a
/// look-alike key of its own (`conflict:<uuid>`), until a super-user renames it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsernameConflict {
    pub user: Uuid,
    /// The user whose name it clashes with.
    pub with: Option<Uuid>,
}

/// Rows filled in per transaction by [`Store::fill_username_keys`].
const FILL_BATCH: usize = 500;

impl Store {
    /// Computes the username keys (RFC 8265) and look-alike keys (TR39 skeletons) of users
    /// written before migration 0008, which SQL cannot compute. Rows whose stored key is
    /// already their key go first, so a name that logs in today keeps logging in; then the
    /// rest; each group oldest sign-up first. A row whose keys clash with a user already done
    /// keeps its old key and account, gets `conflict:<uuid>` as its look-alike key and an
    /// audit record `user.username_conflict`, and is returned. Run by [`Store::migrate`];
    /// cheap when there is nothing to do.
    pub async fn fill_username_keys(&self) -> Result<Vec<UsernameConflict>> {
        let rows: Vec<(Uuid, String, String)> = on_db!(self, write, pool => {
            sqlx::query_as(
                "SELECT uuid, username, username_key FROM users WHERE username_skeleton IS NULL \
                 ORDER BY sign_up_time, uuid",
            )
            .fetch_all(pool)
            .await?
        });
        let (keeps, changes): (Vec<_>, Vec<_>) = rows
            .into_iter()
            .partition(|(_, name, stored)| User::username_key(name) == *stored);
        let mut conflicts = Vec::new();
        for batch in keeps.chunks(FILL_BATCH).chain(changes.chunks(FILL_BATCH)) {
            conflicts.extend(self.fill_username_batch(batch).await?);
        }
        Ok(conflicts)
    }

    async fn fill_username_batch(&self, batch: &[(Uuid, String, String)]) -> Result<Vec<UsernameConflict>> {
        let ctx = muster_core::audit::RequestCtx {
            cid: format!("migrate-{}", Uuid::new_v4()),
            ..Default::default()
        };
        let mut conflicts = Vec::new();
        on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            for (uuid, username, _) in batch {
                let (key, skeleton) = (User::username_key(username), User::username_skeleton(username));
                // A savepoint each: on PostgreSQL a refused statement spoils its transaction.
                sqlx::query("SAVEPOINT fill_username").execute(&mut *tx).await?;
                let set = sqlx::query(
                    "UPDATE users SET username_key = $2, username_skeleton = $3 WHERE uuid = $1 AND username_skeleton IS NULL",
                )
                .bind(uuid)
                .bind(&key)
                .bind(&skeleton)
                .execute(&mut *tx)
                .await;
                match set {
                    Ok(_) => {
                        sqlx::query("RELEASE SAVEPOINT fill_username").execute(&mut *tx).await?;
                    }
                    Err(e) if username_clash_opt(&e).is_some() => {
                        sqlx::query("ROLLBACK TO SAVEPOINT fill_username").execute(&mut *tx).await?;
                        sqlx::query("RELEASE SAVEPOINT fill_username").execute(&mut *tx).await?;
                        let with: Option<Uuid> = sqlx::query_scalar(
                            "SELECT uuid FROM users WHERE (username_key = $1 OR username_skeleton = $2) AND uuid <> $3 \
                             ORDER BY sign_up_time LIMIT 1",
                        )
                        .bind(&key)
                        .bind(&skeleton)
                        .bind(uuid)
                        .fetch_optional(&mut *tx)
                        .await?;
                        let flagged = sqlx::query(
                            "UPDATE users SET username_skeleton = $2 WHERE uuid = $1 AND username_skeleton IS NULL",
                        )
                        .bind(uuid)
                        .bind(format!("conflict:{}", uuid.simple()))
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                        if flagged == 0 {
                            // Another node filled this row in meanwhile.
                            continue;
                        }
                        let user_id = muster_core::ids::UserId::from_uuid(*uuid).to_string();
                        let entry = AuditEntry::new(
                            &ctx,
                            muster_core::audit::actions::USER_USERNAME_CONFLICT,
                            Some("migrate".into()),
                            Some(user_id),
                        )
                        .with_details(serde_json::json!({
                            "conflicts_with": with.map(|w| muster_core::ids::UserId::from_uuid(w).to_string()),
                        }));
                        crate::audit::insert(&mut *tx, &entry).await?;
                        conflicts.push(UsernameConflict { user: *uuid, with });
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            tx.commit().await?;
        });
        Ok(conflicts)
    }
}
