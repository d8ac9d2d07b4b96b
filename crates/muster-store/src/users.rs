//! Users.

use crate::{Result, Store, StoreError, Ts, on_db};
use muster_core::audit::AuditEntry;
use muster_core::directory::{ApprovalStatus, SignUpStatus, User};
use uuid::Uuid;

/// A `users` row as the database holds it.
#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    uuid: Uuid,
    username: String,
    email: Option<String>,
    display_name: Option<String>,
    first_name: Option<String>,
    middle_name: Option<String>,
    last_name: Option<String>,
    is_active: bool,
    is_internal: bool,
    is_super_user: bool,
    is_approval_needed: bool,
    approval_status: String,
    approval_status_mod_by: String,
    approval_status_mod_time: Ts,
    is_locked: bool,
    locked_time: Option<Ts>,
    locked_by: Option<String>,
    password_hash: String,
    password_is_set: bool,
    password_must_change: bool,
    password_last_set: Ts,
    password_expiry: Ts,
    sign_up_status: String,
    sign_up_time: Ts,
    is_totp_enabled: bool,
    totp_key_sealed: String,
    totp_label: String,
    totp_last_step: Option<i64>,
    version: i64,
    updated_at: Ts,
}

impl UserRow {
    pub(crate) fn into_user(self) -> Result<(User, i64)> {
        let approval_status = ApprovalStatus::parse(&self.approval_status)
            .ok_or_else(|| StoreError::Corrupt(format!("approval_status {:?}", self.approval_status)))?;
        let sign_up_status = SignUpStatus::parse(&self.sign_up_status)
            .ok_or_else(|| StoreError::Corrupt(format!("sign_up_status {:?}", self.sign_up_status)))?;
        let user = User {
            uuid: self.uuid,
            username: self.username,
            email: self.email,
            display_name: self.display_name,
            first_name: self.first_name,
            middle_name: self.middle_name,
            last_name: self.last_name,
            is_active: self.is_active,
            is_internal: self.is_internal,
            is_super_user: self.is_super_user,
            is_approval_needed: self.is_approval_needed,
            approval_status,
            approval_status_mod_by: self.approval_status_mod_by,
            approval_status_mod_time: self.approval_status_mod_time.0,
            is_locked: self.is_locked,
            locked_time: self.locked_time.map(|t| t.0),
            locked_by: self.locked_by,
            password_hash: self.password_hash,
            password_is_set: self.password_is_set,
            password_must_change: self.password_must_change,
            password_last_set: self.password_last_set.0,
            password_expiry: self.password_expiry.0,
            sign_up_status,
            sign_up_time: self.sign_up_time.0,
            is_totp_enabled: self.is_totp_enabled,
            totp_key_sealed: self.totp_key_sealed,
            totp_label: self.totp_label,
            totp_last_step: self.totp_last_step,
            updated_at: self.updated_at.0,
        };
        Ok((user, self.version))
    }
}

/// The lower-cased text that name searches match against.
pub(crate) fn search_names(u: &User) -> String {
    [&u.display_name, &u.first_name, &u.middle_name, &u.last_name]
        .into_iter()
        .flatten()
        .map(|s| s.to_lowercase())
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

/// Writes every mutable column of `$u` if its row is still at `$version`, on `$conn` (inside
/// another write); evaluates to the number of rows changed (0 or 1).
macro_rules! write_user {
    ($conn:expr, $u:expr, $version:expr) => {{
        let q = sqlx::query($crate::users::UPDATE_USER).bind($u.uuid);
        $crate::users::bind_user_columns!(q, $u)
            .bind($version)
            .execute($conn)
            .await
            .map_err(|e| $crate::StoreError::unique_as(e, "username_key", "username"))?
            .rows_affected()
    }};
}
pub(crate) use write_user;

/// Inserts `$u` on `$conn` (inside another write).
macro_rules! insert_user_on {
    ($conn:expr, $u:expr) => {{
        let q = sqlx::query($crate::users::INSERT_USER).bind($u.uuid);
        $crate::users::bind_user_columns!(q, $u)
            .execute($conn)
            .await
            .map_err(|e| $crate::StoreError::unique_as(e, "username_key", "username"))?;
    }};
}
pub(crate) use insert_user_on;

/// Binds every mutable column of a user, in the order of [`USER_COLUMNS`] after `uuid`.
macro_rules! bind_user_columns {
    ($q:expr, $u:expr) => {
        $q.bind(&$u.username)
            .bind(muster_core::directory::User::username_key(&$u.username))
            .bind(&$u.email)
            .bind($u.email.as_ref().map(|e| e.to_lowercase()))
            .bind(&$u.display_name)
            .bind(&$u.first_name)
            .bind(&$u.middle_name)
            .bind(&$u.last_name)
            .bind($crate::users::search_names($u))
            .bind($u.is_active)
            .bind($u.is_internal)
            .bind($u.is_super_user)
            .bind($u.is_approval_needed)
            .bind($u.approval_status.as_str())
            .bind(&$u.approval_status_mod_by)
            .bind($crate::Ts($u.approval_status_mod_time))
            .bind($u.is_locked)
            .bind($u.locked_time.map($crate::Ts))
            .bind(&$u.locked_by)
            .bind(&$u.password_hash)
            .bind($u.password_is_set)
            .bind($u.password_must_change)
            .bind($crate::Ts($u.password_last_set))
            .bind($crate::Ts($u.password_expiry))
            .bind($u.sign_up_status.as_str())
            .bind($crate::Ts($u.sign_up_time))
            .bind($u.is_totp_enabled)
            .bind(&$u.totp_key_sealed)
            .bind(&$u.totp_label)
            .bind($u.totp_last_step)
            .bind($crate::Ts($u.updated_at))
    };
}

pub(crate) use bind_user_columns;

pub(crate) const INSERT_USER: &str = "INSERT INTO users (uuid, username, username_key, email, email_key, display_name, \
    first_name, middle_name, last_name, search_names, is_active, is_internal, is_super_user, is_approval_needed, \
    approval_status, approval_status_mod_by, approval_status_mod_time, is_locked, locked_time, locked_by, \
    password_hash, password_is_set, password_must_change, password_last_set, password_expiry, sign_up_status, \
    sign_up_time, is_totp_enabled, totp_key_sealed, totp_label, totp_last_step, updated_at, version) VALUES \
    ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, \
    $24, $25, $26, $27, $28, $29, $30, $31, $32, 1)";

/// Writes every mutable column and bumps the version, if the version is still `$33`.
pub(crate) const UPDATE_USER: &str = "UPDATE users SET username = $2, username_key = $3, email = $4, email_key = $5, \
    display_name = $6, first_name = $7, middle_name = $8, last_name = $9, search_names = $10, is_active = $11, \
    is_internal = $12, is_super_user = $13, is_approval_needed = $14, approval_status = $15, \
    approval_status_mod_by = $16, approval_status_mod_time = $17, is_locked = $18, locked_time = $19, \
    locked_by = $20, password_hash = $21, password_is_set = $22, password_must_change = $23, \
    password_last_set = $24, password_expiry = $25, sign_up_status = $26, sign_up_time = $27, \
    is_totp_enabled = $28, totp_key_sealed = $29, totp_label = $30, totp_last_step = $31, updated_at = $32, \
    version = version + 1 WHERE uuid = $1 AND version = $33";

pub(crate) const USER_COLUMNS: &str = "uuid, username, email, display_name, first_name, middle_name, last_name, \
    is_active, is_internal, is_super_user, is_approval_needed, approval_status, approval_status_mod_by, \
    approval_status_mod_time, is_locked, locked_time, locked_by, password_hash, password_is_set, \
    password_must_change, password_last_set, password_expiry, sign_up_status, sign_up_time, is_totp_enabled, \
    totp_key_sealed, totp_label, totp_last_step, version, updated_at";

/// Filters for [`Store::search_users`]. Every filter present must match.
#[derive(Debug, Clone, Default)]
pub struct UserQuery {
    /// Exact, case-insensitive.
    pub username: Option<String>,
    /// Exact, case-insensitive.
    pub email: Option<String>,
    /// Substring of any name (display, first, middle, last), case-insensitive.
    pub name: Option<String>,
    pub approval_status: Option<ApprovalStatus>,
    pub sign_up_status: Option<SignUpStatus>,
    pub is_locked: Option<bool>,
    pub order: UserOrder,
    pub offset: i64,
    pub limit: i64,
}

/// Which sessions an update ends.
#[derive(Debug, Clone, Copy)]
enum Revoke {
    None,
    All,
    AllExcept(Uuid),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UserOrder {
    #[default]
    Username,
    SignUpTime,
    SignUpTimeDesc,
}

/// Escapes `%`, `_` and `\` for a LIKE pattern with `ESCAPE '\'`.
fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

macro_rules! push_user_filters {
    ($qb:expr, $q:expr) => {{
        $qb.push(" WHERE 1=1");
        if let Some(v) = &$q.username {
            $qb.push(" AND username_key = ").push_bind(User::username_key(v));
        }
        if let Some(v) = &$q.email {
            $qb.push(" AND email_key = ").push_bind(v.to_lowercase());
        }
        if let Some(v) = &$q.name {
            $qb.push(" AND search_names LIKE ")
                .push_bind(format!("%{}%", like_escape(&v.to_lowercase())))
                .push(" ESCAPE '\\'");
        }
        if let Some(v) = $q.approval_status {
            $qb.push(" AND approval_status = ").push_bind(v.as_str());
        }
        if let Some(v) = $q.sign_up_status {
            $qb.push(" AND sign_up_status = ").push_bind(v.as_str());
        }
        if let Some(v) = $q.is_locked {
            $qb.push(" AND is_locked = ").push_bind(v);
        }
    }};
}

impl Store {
    /// Inserts a new user together with its audit record.
    pub async fn insert_user(&self, user: &User, audit: &AuditEntry) -> Result<()> {
        on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            insert_user_on!(&mut *tx, user);
            crate::audit::insert!(&mut *tx, audit);
            crate::commit(tx).await?;
        });
        Ok(())
    }

    /// The user and its row version (for [`Store::update_user`]).
    pub async fn user_by_uuid(&self, uuid: Uuid) -> Result<Option<(User, i64)>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE uuid = $1");
        let row: Option<UserRow> = on_db!(self, read, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(uuid).fetch_optional(pool).await?
        });
        row.map(UserRow::into_user).transpose()
    }

    /// Looks a user up by username, case-insensitively.
    pub async fn user_by_username(&self, username: &str) -> Result<Option<(User, i64)>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username_key = $1");
        let row: Option<UserRow> = on_db!(self, read, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(User::username_key(username)).fetch_optional(pool).await?
        });
        row.map(UserRow::into_user).transpose()
    }

    /// Writes `user` if its row is still at `version`; optionally revokes all of the user's
    /// sessions in the same transaction. Returns false when the row changed underneath (or
    /// is gone): the caller reloads and decides again.
    pub async fn update_user(
        &self,
        user: &User,
        version: i64,
        revoke_sessions: bool,
        audit: &AuditEntry,
    ) -> Result<bool> {
        let revoke = if revoke_sessions { Revoke::All } else { Revoke::None };
        self.update_user_with(user, version, revoke, audit).await
    }

    /// Like [`Store::update_user`], revoking every session of the user except `keep` (a
    /// password change keeps the session it was made from).
    pub async fn update_user_keeping_session(
        &self,
        user: &User,
        version: i64,
        keep: Uuid,
        audit: &AuditEntry,
    ) -> Result<bool> {
        self.update_user_with(user, version, Revoke::AllExcept(keep), audit)
            .await
    }

    async fn update_user_with(&self, user: &User, version: i64, revoke: Revoke, audit: &AuditEntry) -> Result<bool> {
        let updated = on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            let n = write_user!(&mut *tx, user, version);
            if n == 1 {
                match revoke {
                    Revoke::None => {}
                    Revoke::All => {
                        sqlx::query("DELETE FROM sessions WHERE user_uuid = $1").bind(user.uuid).execute(&mut *tx).await?;
                    }
                    Revoke::AllExcept(keep) => {
                        sqlx::query("DELETE FROM sessions WHERE user_uuid = $1 AND id <> $2")
                            .bind(user.uuid)
                            .bind(keep)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                crate::audit::insert!(&mut *tx, audit);
                crate::commit(tx).await?;
            }
            n == 1
        });
        Ok(updated)
    }

    /// Deletes a user (sessions go with it). False when there was no such user.
    pub async fn delete_user(&self, uuid: Uuid, audit: &AuditEntry) -> Result<bool> {
        let deleted = on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query("DELETE FROM users WHERE uuid = $1").bind(uuid).execute(&mut *tx).await?.rows_affected();
            if n == 1 {
                crate::audit::insert!(&mut *tx, audit);
                crate::commit(tx).await?;
            }
            n == 1
        });
        Ok(deleted)
    }

    /// Records that TOTP `step` was used, if no later or equal step was used before.
    /// False means the code was already spent (a replay, or a concurrent login won).
    pub async fn consume_totp_step(&self, uuid: Uuid, step: i64) -> Result<bool> {
        let n = on_db!(self, write, pool => {
            sqlx::query(
                // The version moves too: a writer holding an older copy of the row must not put
                // an earlier step back (that would let a spent code log in again).
                "UPDATE users SET totp_last_step = $2, version = version + 1 \
                 WHERE uuid = $1 AND (totp_last_step IS NULL OR totp_last_step < $2)",
            )
            .bind(uuid)
            .bind(step)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    pub async fn count_users(&self) -> Result<i64> {
        Ok(on_db!(self, read, pool => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM users").fetch_one(pool).await?
        }))
    }

    /// Users matching `q`, one page, and how many match in all.
    pub async fn search_users(&self, q: &UserQuery) -> Result<(i64, Vec<User>)> {
        // Byte order on both databases: PostgreSQL would otherwise sort by the database's
        // collation, and the same query would order names differently on the two backends.
        let key = match self.backend() {
            crate::Backend::Sqlite => "username_key",
            crate::Backend::Postgres => "username_key COLLATE \"C\"",
        };
        let order_by = match q.order {
            UserOrder::Username => format!(" ORDER BY {key}"),
            UserOrder::SignUpTime => format!(" ORDER BY sign_up_time, {key}"),
            UserOrder::SignUpTimeDesc => format!(" ORDER BY sign_up_time DESC, {key}"),
        };
        let (total, rows): (i64, Vec<UserRow>) = on_db!(self, read, pool => {
            let mut count = sqlx::QueryBuilder::new("SELECT COUNT(*) FROM users");
            push_user_filters!(count, q);
            let total: i64 = count.build_query_scalar().fetch_one(pool).await?;
            let mut page = sqlx::QueryBuilder::new(format!("SELECT {USER_COLUMNS} FROM users"));
            push_user_filters!(page, q);
            page.push(order_by);
            page.push(" LIMIT ").push_bind(q.limit.max(0)).push(" OFFSET ").push_bind(q.offset.max(0));
            (total, page.build_query_as().fetch_all(pool).await?)
        });
        let users = rows
            .into_iter()
            .map(|r| r.into_user().map(|(u, _)| u))
            .collect::<Result<_>>()?;
        Ok((total, users))
    }
}
