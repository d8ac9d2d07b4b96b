//! Service providers and their managers.
//!
//! Every change commits with its audit record (and the event it carries) in one transaction;
//! every path that does not commit rolls back explicitly (a dropped sqlx transaction only sends
//! its ROLLBACK when the connection is next used, and until then keeps its locks).

use crate::bind::Bind;
use crate::offerings::{PosixColumns, posix_values};
use crate::{Result, Store, Ts, on_db};
use muster_core::audit::AuditEntry;
use muster_core::offering::model::{Provider, ProviderUuid};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(sqlx::FromRow)]
struct ProviderRow {
    uuid: Uuid,
    name: String,
    #[sqlx(flatten)]
    posix: PosixColumns,
    created: Ts,
    modified: Ts,
}

impl From<ProviderRow> for Provider {
    fn from(r: ProviderRow) -> Self {
        Provider {
            uuid: ProviderUuid(r.uuid),
            name: r.name,
            posix: r.posix.into_settings(),
            created: r.created.0,
            modified: r.modified.0,
        }
    }
}

const PROVIDER_COLUMNS: &str = "uuid, name, posix_uid_min, posix_uid_max, posix_gid_min, posix_gid_max, \
    posix_home_prefix, posix_login_shell, posix_shared_gid, created, modified";

impl Store {
    pub async fn insert_provider(&self, p: &Provider, audit: &AuditEntry) -> Result<()> {
        on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO service_providers (uuid, name, created, modified, posix_uid_min, posix_uid_max, \
                 posix_gid_min, posix_gid_max, posix_home_prefix, posix_login_shell, posix_shared_gid) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(p.uuid.0)
            .bind(&p.name)
            .bind(Ts(p.created))
            .bind(Ts(p.modified))
            .bind_all(posix_values(p.posix.as_ref()))
            .execute(&mut *tx)
            .await?;
            crate::audit::insert(&mut *tx, audit).await?;
            crate::commit(tx).await?;
        });
        Ok(())
    }

    pub async fn provider(&self, uuid: ProviderUuid) -> Result<Option<Provider>> {
        let sql = format!("SELECT {PROVIDER_COLUMNS} FROM service_providers WHERE uuid = $1");
        let row: Option<ProviderRow> = on_db!(self, read, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(uuid.0)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(Provider::from))
    }

    /// Providers, by name; `only` restricts the list to those providers.
    pub async fn list_providers(&self, only: Option<&[Uuid]>) -> Result<Vec<Provider>> {
        let order = self.binary("name");
        let rows: Vec<ProviderRow> = on_db!(self, read, pool => {
            let mut qb = sqlx::QueryBuilder::new(format!("SELECT {PROVIDER_COLUMNS} FROM service_providers WHERE 1=1"));
            if let Some(only) = only {
                qb.push(" AND uuid IN (NULL");
                for u in only {
                    qb.push(", ").push_bind(*u);
                }
                qb.push(")");
            }
            qb.push(format!(" ORDER BY {order}, uuid"));
            qb.build_query_as().fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(Provider::from).collect())
    }

    /// Writes a provider's name and pool settings. False when there is no such provider.
    pub async fn update_provider(&self, p: &Provider, audit: &AuditEntry) -> Result<bool> {
        Ok(on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(
                "UPDATE service_providers SET name = $2, modified = $3, posix_uid_min = $4, posix_uid_max = $5, \
                 posix_gid_min = $6, posix_gid_max = $7, posix_home_prefix = $8, posix_login_shell = $9, \
                 posix_shared_gid = $10 WHERE uuid = $1",
            )
            .bind(p.uuid.0)
            .bind(&p.name)
            .bind(Ts(p.modified))
            .bind_all(posix_values(p.posix.as_ref()))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 1 {
                crate::audit::insert(&mut *tx, audit).await?;
                crate::commit(tx).await?;
            } else {
                tx.rollback().await?;
            }
            n == 1
        }))
    }

    /// Deletes a provider that has no offerings (its managers and tokens go with it). `None`
    /// when there is no such provider, `Some(false)` when it still has offerings.
    pub async fn delete_provider(&self, uuid: ProviderUuid, audit: &AuditEntry) -> Result<Option<bool>> {
        let deleted = self.delete_provider_row(uuid, audit).await;
        // Its tokens went with it (ON DELETE CASCADE); after the commit, as for a revocation.
        self.tokens.evict_provider(uuid);
        deleted
    }

    async fn delete_provider_row(&self, uuid: ProviderUuid, audit: &AuditEntry) -> Result<Option<bool>> {
        Ok(on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            let offerings: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM offerings WHERE provider_uuid = $1")
                .bind(uuid.0)
                .fetch_one(&mut *tx)
                .await?;
            if offerings > 0 {
                let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM service_providers WHERE uuid = $1")
                    .bind(uuid.0)
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.rollback().await?;
                return Ok(exists.map(|_| false));
            }
            let n = sqlx::query("DELETE FROM service_providers WHERE uuid = $1")
                .bind(uuid.0)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 1 {
                crate::audit::insert(&mut *tx, audit).await?;
                crate::commit(tx).await?;
                Some(true)
            } else {
                tx.rollback().await?;
                None
            }
        }))
    }

    /// Makes `user` a manager of `provider`. False when they already were one.
    pub async fn add_provider_manager(
        &self,
        provider: ProviderUuid,
        user: Uuid,
        at: OffsetDateTime,
        audit: &AuditEntry,
    ) -> Result<bool> {
        Ok(on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(
                "INSERT INTO provider_managers (provider_uuid, user_uuid, created) VALUES ($1, $2, $3) \
                 ON CONFLICT (provider_uuid, user_uuid) DO NOTHING",
            )
            .bind(provider.0)
            .bind(user)
            .bind(Ts(at))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 1 {
                crate::audit::insert(&mut *tx, audit).await?;
                crate::commit(tx).await?;
            } else {
                tx.rollback().await?;
            }
            n == 1
        }))
    }

    /// Removes `user` from the managers of `provider`. False when they were not one.
    pub async fn remove_provider_manager(
        &self,
        provider: ProviderUuid,
        user: Uuid,
        audit: &AuditEntry,
    ) -> Result<bool> {
        Ok(on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query("DELETE FROM provider_managers WHERE provider_uuid = $1 AND user_uuid = $2")
                .bind(provider.0)
                .bind(user)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 1 {
                crate::audit::insert(&mut *tx, audit).await?;
                crate::commit(tx).await?;
            } else {
                tx.rollback().await?;
            }
            n == 1
        }))
    }

    /// The providers `user` manages.
    pub async fn managed_providers(&self, user: Uuid) -> Result<Vec<Uuid>> {
        Ok(on_db!(self, read, pool => {
            sqlx::query_scalar("SELECT provider_uuid FROM provider_managers WHERE user_uuid = $1 ORDER BY provider_uuid")
                .bind(user)
                .fetch_all(pool)
                .await?
        }))
    }

    /// The managers of `provider` (user UUIDs).
    pub async fn provider_managers(&self, provider: ProviderUuid) -> Result<Vec<Uuid>> {
        Ok(on_db!(self, read, pool => {
            sqlx::query_scalar("SELECT user_uuid FROM provider_managers WHERE provider_uuid = $1 ORDER BY user_uuid")
                .bind(provider.0)
                .fetch_all(pool)
                .await?
        }))
    }
}
