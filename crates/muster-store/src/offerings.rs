//! Offerings: what a provider hosts, with its username policy and Unix id pool settings.
//!
//! An offering whose `posix_pool` is `provider` stores no pool settings of its own; reads join
//! its provider and show the provider's. Every change commits with its audit record in one
//! transaction.

use crate::bind::{Bind, Value};
use crate::{Backend, Result, Store, StoreError, Ts, on_db};
use muster_core::audit::AuditEntry;
use muster_core::offering::model::{
    IdentityClaim, Offering, OfferingUuid, PosixPool, PosixSettings, ProviderUuid, UsernamePolicy,
};
use uuid::Uuid;

/// A pool's settings as offerings and providers store them (all four bounds or none).
#[derive(sqlx::FromRow)]
pub(crate) struct PosixColumns {
    posix_uid_min: Option<i64>,
    posix_uid_max: Option<i64>,
    posix_gid_min: Option<i64>,
    posix_gid_max: Option<i64>,
    posix_home_prefix: String,
    posix_login_shell: String,
    posix_shared_gid: Option<i64>,
}

impl PosixColumns {
    pub(crate) fn into_settings(self) -> Option<PosixSettings> {
        match (
            self.posix_uid_min,
            self.posix_uid_max,
            self.posix_gid_min,
            self.posix_gid_max,
        ) {
            (Some(uid_min), Some(uid_max), Some(gid_min), Some(gid_max)) => Some(PosixSettings {
                uid_min,
                uid_max,
                gid_min,
                gid_max,
                home_prefix: self.posix_home_prefix,
                login_shell: self.posix_login_shell,
                shared_gid: self.posix_shared_gid,
            }),
            _ => None,
        }
    }
}

#[derive(sqlx::FromRow)]
struct OfferingRow {
    uuid: Uuid,
    provider_uuid: Uuid,
    name: String,
    slug: String,
    #[sqlx(rename = "type")]
    kind: String,
    provider_can_create: bool,
    username_policy: String,
    username_policy_generated: Option<String>,
    username_prefix: String,
    username_claim: String,
    posix_pool: String,
    #[sqlx(flatten)]
    posix: PosixColumns,
    created: Ts,
    modified: Ts,
}

impl OfferingRow {
    fn into_offering(self) -> Result<Offering> {
        Ok(Offering {
            uuid: OfferingUuid(self.uuid),
            provider_uuid: ProviderUuid(self.provider_uuid),
            name: self.name,
            slug: self.slug,
            kind: self.kind,
            provider_can_create: self.provider_can_create,
            username_policy: UsernamePolicy::parse(
                self.username_policy_generated
                    .as_deref()
                    .unwrap_or(&self.username_policy),
            )
            .ok_or_else(|| StoreError::Corrupt(format!("username_policy {:?}", self.username_policy)))?,
            username_prefix: self.username_prefix,
            username_claim: IdentityClaim::parse(&self.username_claim)
                .ok_or_else(|| StoreError::Corrupt(format!("username_claim {:?}", self.username_claim)))?,
            posix_pool: PosixPool::parse(&self.posix_pool)
                .ok_or_else(|| StoreError::Corrupt(format!("posix_pool {:?}", self.posix_pool)))?,
            posix: self.posix.into_settings(),
            created: self.created.0,
            modified: self.modified.0,
        })
    }
}

/// An offering's columns, with the settings of the pool its accounts draw from: its own, or
/// its provider's (`OFFERING_FROM` joins the provider).
const OFFERING_COLUMNS: &str = "o.uuid, o.provider_uuid, o.name, o.slug, o.type, o.provider_can_create, \
    o.username_policy, o.username_policy_generated, o.username_prefix, o.username_claim, o.posix_pool, \
    CASE WHEN o.posix_pool = 'provider' THEN p.posix_uid_min ELSE o.posix_uid_min END AS posix_uid_min, \
    CASE WHEN o.posix_pool = 'provider' THEN p.posix_uid_max ELSE o.posix_uid_max END AS posix_uid_max, \
    CASE WHEN o.posix_pool = 'provider' THEN p.posix_gid_min ELSE o.posix_gid_min END AS posix_gid_min, \
    CASE WHEN o.posix_pool = 'provider' THEN p.posix_gid_max ELSE o.posix_gid_max END AS posix_gid_max, \
    CASE WHEN o.posix_pool = 'provider' THEN p.posix_home_prefix ELSE o.posix_home_prefix END AS posix_home_prefix, \
    CASE WHEN o.posix_pool = 'provider' THEN p.posix_login_shell ELSE o.posix_login_shell END AS posix_login_shell, \
    CASE WHEN o.posix_pool = 'provider' THEN p.posix_shared_gid ELSE o.posix_shared_gid END AS posix_shared_gid, \
    o.created, o.modified";
const OFFERING_FROM: &str = "offerings o JOIN service_providers p ON p.uuid = o.provider_uuid";

/// A pool's settings as offerings and providers store them (`posix_uid_min, posix_uid_max,
/// posix_gid_min, posix_gid_max, posix_home_prefix, posix_login_shell, posix_shared_gid`; no
/// pool: NULL bounds and the defaults).
pub(crate) fn posix_values(p: Option<&PosixSettings>) -> [Value<'_>; 7] {
    [
        Value::Int(p.map(|x| x.uid_min)),
        Value::Int(p.map(|x| x.uid_max)),
        Value::Int(p.map(|x| x.gid_min)),
        Value::Int(p.map(|x| x.gid_max)),
        Value::Text(Some(p.map_or("/home/", |x| x.home_prefix.as_str()))),
        Value::Text(Some(p.map_or("/bin/bash", |x| x.login_shell.as_str()))),
        Value::Int(p.and_then(|x| x.shared_gid)),
    ]
}

/// The pool settings an offering stores as its own: none when it draws from its provider's.
fn own_posix(o: &Offering) -> Option<&PosixSettings> {
    match o.posix_pool {
        PosixPool::Offering => o.posix.as_ref(),
        PosixPool::Provider => None,
    }
}

/// How a policy is stored: the original column holds the two policies its CHECK constraint
/// knows, `username_policy_generated` the newer ones (see migration 0014).
fn stored_policy(p: UsernamePolicy) -> (&'static str, Option<&'static str>) {
    match p {
        UsernamePolicy::ServiceProvider | UsernamePolicy::WaldurUsername => (p.as_str(), None),
        _ => (UsernamePolicy::ServiceProvider.as_str(), Some(p.as_str())),
    }
}

impl Store {
    /// Byte order for text sort keys on both databases (PostgreSQL would otherwise use the
    /// database's collation and order differently from SQLite).
    pub(crate) fn binary(&self, column: &str) -> String {
        match self.backend() {
            Backend::Sqlite => column.to_owned(),
            Backend::Postgres => format!("{column} COLLATE \"C\""),
        }
    }

    /// Inserts an offering. `Duplicate("slug")` when the slug is taken.
    pub async fn insert_offering(&self, o: &Offering, audit: &AuditEntry) -> Result<()> {
        on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO offerings (uuid, provider_uuid, name, slug, type, provider_can_create, username_policy, \
                 username_policy_generated, username_prefix, username_claim, created, modified, posix_uid_min, \
                 posix_uid_max, posix_gid_min, posix_gid_max, posix_home_prefix, posix_login_shell, posix_shared_gid, \
                 posix_pool) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
            )
            .bind(o.uuid.0)
            .bind(o.provider_uuid.0)
            .bind(&o.name)
            .bind(&o.slug)
            .bind(&o.kind)
            .bind(o.provider_can_create)
            .bind(stored_policy(o.username_policy).0)
            .bind(stored_policy(o.username_policy).1)
            .bind(&o.username_prefix)
            .bind(o.username_claim.as_str())
            .bind(Ts(o.created))
            .bind(Ts(o.modified))
            .bind_all(posix_values(own_posix(o)))
            .bind(o.posix_pool.as_str())
            .execute(&mut *tx)
            .await;
            if let Err(e) = inserted {
                tx.rollback().await?;
                return Err(StoreError::unique_as(e, "slug", "slug"));
            }
            crate::audit::insert(&mut *tx, audit).await?;
            crate::commit(tx).await?;
        });
        Ok(())
    }

    pub async fn offering(&self, uuid: OfferingUuid) -> Result<Option<Offering>> {
        let sql = format!("SELECT {OFFERING_COLUMNS} FROM {OFFERING_FROM} WHERE o.uuid = $1");
        let row: Option<OfferingRow> = on_db!(self, read, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(uuid.0).fetch_optional(pool).await?
        });
        row.map(OfferingRow::into_offering).transpose()
    }

    /// Offerings by name; `providers` restricts the list to those providers' offerings.
    pub async fn list_offerings(&self, providers: Option<&[Uuid]>) -> Result<Vec<Offering>> {
        let order = self.binary("o.name");
        let rows: Vec<OfferingRow> = on_db!(self, read, pool => {
            let mut qb = sqlx::QueryBuilder::new(format!("SELECT {OFFERING_COLUMNS} FROM {OFFERING_FROM} WHERE 1=1"));
            if let Some(only) = providers {
                qb.push(" AND o.provider_uuid IN (NULL");
                for u in only {
                    qb.push(", ").push_bind(*u);
                }
                qb.push(")");
            }
            qb.push(format!(" ORDER BY {order}, o.uuid"));
            qb.build_query_as().fetch_all(pool).await?
        });
        rows.into_iter().map(OfferingRow::into_offering).collect()
    }

    /// Writes an offering's mutable fields. False when there is no such offering.
    pub async fn update_offering(&self, o: &Offering, audit: &AuditEntry) -> Result<bool> {
        Ok(on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(
                "UPDATE offerings SET name = $2, slug = $3, type = $4, provider_can_create = $5, username_policy = $6, \
                 username_policy_generated = $7, username_prefix = $8, username_claim = $9, modified = $10, \
                 posix_uid_min = $11, posix_uid_max = $12, posix_gid_min = $13, posix_gid_max = $14, \
                 posix_home_prefix = $15, posix_login_shell = $16, posix_shared_gid = $17, posix_pool = $18 \
                 WHERE uuid = $1",
            )
            .bind(o.uuid.0)
            .bind(&o.name)
            .bind(&o.slug)
            .bind(&o.kind)
            .bind(o.provider_can_create)
            .bind(stored_policy(o.username_policy).0)
            .bind(stored_policy(o.username_policy).1)
            .bind(&o.username_prefix)
            .bind(o.username_claim.as_str())
            .bind(Ts(o.modified))
            .bind_all(posix_values(own_posix(o)))
            .bind(o.posix_pool.as_str())
            .execute(&mut *tx)
            .await;
            let n = match updated {
                Ok(done) => done.rows_affected(),
                Err(e) => {
                    tx.rollback().await?;
                    return Err(StoreError::unique_as(e, "slug", "slug"));
                }
            };
            if n == 1 {
                crate::audit::insert(&mut *tx, audit).await?;
                crate::commit(tx).await?;
            } else {
                tx.rollback().await?;
            }
            n == 1
        }))
    }

    /// Deletes an offering that has no accounts. `None` when there is no such offering,
    /// `Some(false)` when it still has accounts.
    pub async fn delete_offering(&self, uuid: OfferingUuid, audit: &AuditEntry) -> Result<Option<bool>> {
        Ok(on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            let accounts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM offering_users WHERE offering_uuid = $1")
                .bind(uuid.0)
                .fetch_one(&mut *tx)
                .await?;
            if accounts > 0 {
                tx.rollback().await?;
                return Ok(Some(false));
            }
            let n = sqlx::query("DELETE FROM offerings WHERE uuid = $1")
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
}
