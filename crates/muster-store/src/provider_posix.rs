//! Provider-wide Unix identity pools: one uid and primary gid per person per provider, shared
//! by the provider's offerings whose `posix_pool` is `provider`.
//!
//! A person's identity is allocated the first time one of their accounts on such an offering is
//! created and kept for ever (`provider_posix_identities`; the row outlives the accounts and the
//! person, so the numbers never pass to someone else). Numbers come from the provider's
//! counters, each moved by one atomic UPDATE that commits at once (so no lock is held while an
//! account is created, and a number drawn for an identity that then lost a race is a gap). Two
//! first accounts of one person racing on two offerings (or two nodes) both insert with
//! `ON CONFLICT DO NOTHING`; the loser reads the winner's row, so both accounts get the same
//! numbers. The unique index on `(provider_uuid, uidnumber)` is what makes a duplicate uid
//! impossible whatever happens above it.

use crate::{Backend, PosixAllocation, Result, Store, StoreTx, Ts, on_db, tx::on_tx};
use muster_core::offering::model::{PosixSettings, ProviderUuid};
use uuid::Uuid;

const FIND: &str =
    "SELECT uidnumber, primarygroup FROM provider_posix_identities WHERE provider_uuid = $1 AND user_uuid = $2";
const INSERT: &str = "INSERT INTO provider_posix_identities (provider_uuid, user_uuid, uidnumber, primarygroup, created) \
    VALUES ($1, $2, $3, $4, $5) ON CONFLICT (provider_uuid, user_uuid) DO NOTHING";
const UID_HELD: &str = "SELECT COUNT(*) FROM provider_posix_identities WHERE provider_uuid = $1 AND uidnumber = $2";
const GID_HELD: &str = "SELECT COUNT(*) FROM provider_posix_identities WHERE provider_uuid = $1 AND primarygroup = $2";

/// The counter's next number if it is still in the pool, with the counter moved past it.
fn draw_sql(backend: Backend, kind: &str) -> String {
    let greatest = match backend {
        Backend::Sqlite => "MAX",
        Backend::Postgres => "GREATEST",
    };
    let (next, min, max) = (
        format!("posix_{kind}_next"),
        format!("posix_{kind}_min"),
        format!("posix_{kind}_max"),
    );
    format!(
        "UPDATE service_providers SET {next} = {greatest}(COALESCE({next}, {min}), {min}) + 1 \
         WHERE uuid = $1 AND {min} IS NOT NULL AND {greatest}(COALESCE({next}, {min}), {min}) <= {max} \
         RETURNING {next} - 1"
    )
}

/// The statements the allocation runs, on whatever connection the caller has: the pools of a
/// [`Store`] (each statement commits at once), or a step's SQLite transaction (which holds the
/// database's one write lock anyway).
trait Statements {
    fn backend(&self) -> Backend;
    async fn find(&mut self, provider: Uuid, user: Uuid) -> Result<Option<(i64, i64)>>;
    async fn draw(&mut self, sql: &str, provider: Uuid) -> Result<Option<i64>>;
    async fn held(&mut self, sql: &'static str, provider: Uuid, n: i64) -> Result<bool>;
    async fn insert(&mut self, provider: Uuid, user: Uuid, uid: i64, gid: i64) -> Result<bool>;
}

/// `user`'s identity in `provider`'s pool: the one they hold, or a new one.
async fn identity(
    db: &mut impl Statements,
    provider: ProviderUuid,
    user: Uuid,
    pool: &PosixSettings,
) -> Result<PosixAllocation> {
    if let Some((uid, gid)) = db.find(provider.0, user).await? {
        return Ok(PosixAllocation::Allocated { uid, gid });
    }
    let Some(uid) = draw(db, "uid", UID_HELD, provider.0).await? else {
        return Ok(PosixAllocation::UidPoolFull);
    };
    let gid = match pool.shared_gid {
        Some(g) => g,
        None => match draw(db, "gid", GID_HELD, provider.0).await? {
            Some(g) => g,
            None => return Ok(PosixAllocation::GidPoolFull),
        },
    };
    if db.insert(provider.0, user, uid, gid).await? {
        return Ok(PosixAllocation::Allocated { uid, gid });
    }
    // Another of the person's accounts got there first: theirs is the person's identity (the
    // numbers drawn here are gaps).
    match db.find(provider.0, user).await? {
        Some((uid, gid)) => Ok(PosixAllocation::Allocated { uid, gid }),
        None => Err(crate::StoreError::Corrupt(
            "a provider identity conflicted on insert and then could not be read".into(),
        )),
    }
}

/// Draws from one counter until a number no identity holds (the pool's range may have been
/// moved over numbers handed out before). None when the pool is full.
async fn draw(db: &mut impl Statements, kind: &str, held: &'static str, provider: Uuid) -> Result<Option<i64>> {
    let sql = draw_sql(db.backend(), kind);
    loop {
        let Some(n) = db.draw(&sql, provider).await? else {
            return Ok(None);
        };
        if !db.held(held, provider, n).await? {
            return Ok(Some(n));
        }
    }
}

struct OnPools<'a>(&'a Store);

impl Statements for OnPools<'_> {
    fn backend(&self) -> Backend {
        self.0.backend()
    }
    async fn find(&mut self, provider: Uuid, user: Uuid) -> Result<Option<(i64, i64)>> {
        Ok(on_db!(self.0, write, pool => {
            sqlx::query_as(FIND).bind(provider).bind(user).fetch_optional(pool).await?
        }))
    }
    async fn draw(&mut self, sql: &str, provider: Uuid) -> Result<Option<i64>> {
        let sql = sql.to_owned();
        Ok(on_db!(self.0, write, pool => {
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(provider).fetch_optional(pool).await?
        }))
    }
    async fn held(&mut self, sql: &'static str, provider: Uuid, n: i64) -> Result<bool> {
        let count: i64 = on_db!(self.0, write, pool => {
            sqlx::query_scalar(sql).bind(provider).bind(n).fetch_one(pool).await?
        });
        Ok(count > 0)
    }
    async fn insert(&mut self, provider: Uuid, user: Uuid, uid: i64, gid: i64) -> Result<bool> {
        let now = Ts(time::OffsetDateTime::now_utc());
        let n = on_db!(self.0, write, pool => {
            sqlx::query(INSERT).bind(provider).bind(user).bind(uid).bind(gid).bind(now).execute(pool).await?.rows_affected()
        });
        Ok(n == 1)
    }
}

struct InTx<'a>(&'a mut StoreTx);

impl Statements for InTx<'_> {
    fn backend(&self) -> Backend {
        self.0.backend()
    }
    async fn find(&mut self, provider: Uuid, user: Uuid) -> Result<Option<(i64, i64)>> {
        Ok(on_tx!(self.0, conn => {
            sqlx::query_as(FIND).bind(provider).bind(user).fetch_optional(&mut *conn).await?
        }))
    }
    async fn draw(&mut self, sql: &str, provider: Uuid) -> Result<Option<i64>> {
        let sql = sql.to_owned();
        Ok(on_tx!(self.0, conn => {
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(provider).fetch_optional(&mut *conn).await?
        }))
    }
    async fn held(&mut self, sql: &'static str, provider: Uuid, n: i64) -> Result<bool> {
        let count: i64 = on_tx!(self.0, conn => {
            sqlx::query_scalar(sql).bind(provider).bind(n).fetch_one(&mut *conn).await?
        });
        Ok(count > 0)
    }
    async fn insert(&mut self, provider: Uuid, user: Uuid, uid: i64, gid: i64) -> Result<bool> {
        let now = Ts(time::OffsetDateTime::now_utc());
        let n = on_tx!(self.0, conn => {
            sqlx::query(INSERT).bind(provider).bind(user).bind(uid).bind(gid).bind(now).execute(&mut *conn).await?.rows_affected()
        });
        Ok(n == 1)
    }
}

impl Store {
    /// `user`'s identity in `provider`'s shared pool, allocated on first use (see the module
    /// comment).
    pub(crate) async fn provider_posix_identity(
        &self,
        provider: ProviderUuid,
        user: Uuid,
        pool: &PosixSettings,
    ) -> Result<PosixAllocation> {
        identity(&mut OnPools(self), provider, user, pool).await
    }
}

impl StoreTx {
    /// [`Store::provider_posix_identity`] in this transaction (SQLite only: on PostgreSQL a
    /// step allocates on a connection of its own, so the provider's row is not locked until the
    /// step commits).
    pub(crate) async fn provider_posix_identity_in_tx(
        &mut self,
        provider: ProviderUuid,
        user: Uuid,
        pool: &PosixSettings,
    ) -> Result<PosixAllocation> {
        identity(&mut InTx(self), provider, user, pool).await
    }
}

/// How much of one Unix id pool is handed out.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PosixPoolUse {
    /// `provider` (a provider's shared pool) or `offering`.
    pub scope: String,
    pub uuid: Uuid,
    pub provider_uuid: Uuid,
    pub name: String,
    pub uid_min: i64,
    pub uid_max: i64,
    /// Numbers of the uid pool handed out so far (gaps included: a number is never handed out
    /// twice, so a gap is used up too).
    pub uid_used: i64,
    pub gid_min: i64,
    pub gid_max: i64,
    pub gid_used: i64,
    pub shared_gid: Option<i64>,
}

/// Numbers handed out of a range: how far the counter moved into it.
fn used(kind: &str) -> String {
    let (next, min, max) = (
        format!("posix_{kind}_next"),
        format!("posix_{kind}_min"),
        format!("posix_{kind}_max"),
    );
    format!(
        "CASE WHEN COALESCE({next}, {min}) <= {min} THEN 0 \
         WHEN COALESCE({next}, {min}) > {max} THEN {max} - {min} + 1 \
         ELSE {next} - {min} END"
    )
}

impl Store {
    /// Every pool with its use: providers' shared pools and offerings' own pools;
    /// `providers` restricts the list to those providers' pools.
    pub async fn posix_pool_use(&self, providers: Option<&[Uuid]>) -> Result<Vec<PosixPoolUse>> {
        let (uid, gid) = (used("uid"), used("gid"));
        let columns = format!(
            "name, posix_uid_min AS uid_min, posix_uid_max AS uid_max, {uid} AS uid_used, \
             posix_gid_min AS gid_min, posix_gid_max AS gid_max, {gid} AS gid_used, posix_shared_gid AS shared_gid"
        );
        let sql = format!(
            "SELECT * FROM (SELECT 'provider' AS scope, uuid, uuid AS provider_uuid, {columns} FROM service_providers \
             WHERE posix_uid_min IS NOT NULL AND posix_gid_min IS NOT NULL \
             UNION ALL SELECT 'offering' AS scope, uuid, provider_uuid, {columns} FROM offerings \
             WHERE posix_pool = 'offering' AND posix_uid_min IS NOT NULL AND posix_gid_min IS NOT NULL) pools WHERE 1=1"
        );
        Ok(on_db!(self, read, pool => {
            let mut qb = sqlx::QueryBuilder::new(sql.clone());
            if let Some(only) = providers {
                qb.push(" AND provider_uuid IN (NULL");
                for u in only {
                    qb.push(", ").push_bind(*u);
                }
                qb.push(")");
            }
            qb.push(" ORDER BY name, uuid");
            qb.build_query_as().fetch_all(pool).await?
        }))
    }
}
