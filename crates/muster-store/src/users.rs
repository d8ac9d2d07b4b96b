//! Directory users: how a row is read and written (its columns listed once, in `WRITTEN`), and
//! the one implementation of each write, in a transaction.

use crate::bind::{Bind, Value};
use crate::sqlite_batch::BatchBinder;
use crate::tx::{on_tx, write_stmt};
use crate::{Result, Store, StoreError, StoreTx, Ts, on_db};
use muster_core::audit::AuditEntry;
use muster_core::directory::{ApprovalStatus, SignUpStatus, User};
use std::sync::LazyLock;
use time::OffsetDateTime;
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

/// A clash with another user's username key or look-alike key: `Duplicate("username")` either
/// way (when both clash, which one a database reports is its own choice); any other error
/// sorted like every other (a connection lost mid-insert is the database's unavailability, a
/// 503, not an internal error).
pub(crate) fn username_clash(e: sqlx::Error) -> StoreError {
    match username_clash_opt(&e) {
        Some(clash) => clash,
        None => StoreError::from(e),
    }
}

/// [`username_clash`] for an error that is only looked at.
pub(crate) fn username_clash_opt(e: &sqlx::Error) -> Option<StoreError> {
    StoreError::unique_opt(e, "username_skeleton", "username")
        .or_else(|| StoreError::unique_opt(e, "username_key", "username"))
}

/// How an UPDATE writes a column.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnUpdate {
    Set,
    /// Kept while the username stays the same: a user whose keys were kept from before the
    /// username rules (see migration 0008) can still be changed otherwise.
    KeptWhileUsernameStays,
}

/// A column every write of a user sets, and how a user gives its value.
struct Column {
    name: &'static str,
    value: for<'u> fn(&'u User) -> Value<'u>,
    on_update: OnUpdate,
}

const fn set(name: &'static str, value: for<'u> fn(&'u User) -> Value<'u>) -> Column {
    Column {
        name,
        value,
        on_update: OnUpdate::Set,
    }
}

fn text(s: &str) -> Value<'_> {
    Value::Text(Some(s))
}

fn time(t: OffsetDateTime) -> Value<'static> {
    Value::Time(Some(Ts(t)))
}

/// Every column a write of a user sets besides `uuid` and `version`, in one order for the
/// INSERT, the UPDATE and the binding of both (see `bind`).
static WRITTEN: [Column; 32] = [
    set("username", |u| text(&u.username)),
    Column {
        name: "username_key",
        value: |u| Value::Owned(Some(User::username_key(&u.username))),
        on_update: OnUpdate::KeptWhileUsernameStays,
    },
    Column {
        name: "username_skeleton",
        value: |u| Value::Owned(Some(User::username_skeleton(&u.username))),
        on_update: OnUpdate::KeptWhileUsernameStays,
    },
    set("email", |u| Value::Text(u.email.as_deref())),
    set("email_key", |u| {
        Value::Owned(u.email.as_ref().map(|e| e.to_lowercase()))
    }),
    set("display_name", |u| Value::Text(u.display_name.as_deref())),
    set("first_name", |u| Value::Text(u.first_name.as_deref())),
    set("middle_name", |u| Value::Text(u.middle_name.as_deref())),
    set("last_name", |u| Value::Text(u.last_name.as_deref())),
    set("search_names", |u| Value::Owned(Some(search_names(u)))),
    set("is_active", |u| Value::Bool(u.is_active)),
    set("is_internal", |u| Value::Bool(u.is_internal)),
    set("is_super_user", |u| Value::Bool(u.is_super_user)),
    set("is_approval_needed", |u| Value::Bool(u.is_approval_needed)),
    set("approval_status", |u| text(u.approval_status.as_str())),
    set("approval_status_mod_by", |u| text(&u.approval_status_mod_by)),
    set("approval_status_mod_time", |u| time(u.approval_status_mod_time)),
    set("is_locked", |u| Value::Bool(u.is_locked)),
    set("locked_time", |u| Value::Time(u.locked_time.map(Ts))),
    set("locked_by", |u| Value::Text(u.locked_by.as_deref())),
    set("password_hash", |u| text(&u.password_hash)),
    set("password_is_set", |u| Value::Bool(u.password_is_set)),
    set("password_must_change", |u| Value::Bool(u.password_must_change)),
    set("password_last_set", |u| time(u.password_last_set)),
    set("password_expiry", |u| time(u.password_expiry)),
    set("sign_up_status", |u| text(u.sign_up_status.as_str())),
    set("sign_up_time", |u| time(u.sign_up_time)),
    set("is_totp_enabled", |u| Value::Bool(u.is_totp_enabled)),
    set("totp_key_sealed", |u| text(&u.totp_key_sealed)),
    set("totp_label", |u| text(&u.totp_label)),
    set("totp_last_step", |u| Value::Int(u.totp_last_step)),
    set("updated_at", |u| time(u.updated_at)),
];

/// Binds `uuid`'s successors: every [`WRITTEN`] column of `u`, in order (`$2` on).
fn bind_user<B: Bind>(q: B, u: &User) -> B {
    q.bind_all(WRITTEN.iter().map(|c| (c.value)(u)))
}

/// `INSERT INTO users (uuid, <WRITTEN>, version) VALUES ($1, $2, …, 1)`.
static INSERT_USER: LazyLock<String> = LazyLock::new(|| {
    let names: Vec<&str> = WRITTEN.iter().map(|c| c.name).collect();
    let values: Vec<String> = (2..=WRITTEN.len() + 1).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO users (uuid, {}, version) VALUES ($1, {}, 1)",
        names.join(", "),
        values.join(", ")
    )
});

/// Writes every [`WRITTEN`] column and bumps the version, if the row is still at the version
/// bound last (after the columns).
static UPDATE_USER: LazyLock<String> = LazyLock::new(|| {
    let username = WRITTEN.iter().position(|c| c.name == "username").map_or(0, |i| i + 2);
    let sets: Vec<String> = WRITTEN
        .iter()
        .enumerate()
        .map(|(i, c)| match c.on_update {
            OnUpdate::Set => format!("{} = ${}", c.name, i + 2),
            OnUpdate::KeptWhileUsernameStays => format!(
                "{n} = CASE WHEN username = ${username} THEN {n} ELSE ${i} END",
                n = c.name,
                i = i + 2
            ),
        })
        .collect();
    format!(
        "UPDATE users SET {}, version = version + 1 WHERE uuid = $1 AND version = ${}",
        sets.join(", "),
        WRITTEN.len() + 2
    )
});

pub(crate) const USER_COLUMNS: &str = "uuid, username, email, display_name, first_name, middle_name, last_name, \
    is_active, is_internal, is_super_user, is_approval_needed, approval_status, approval_status_mod_by, \
    approval_status_mod_time, is_locked, locked_time, locked_by, password_hash, password_is_set, \
    password_must_change, password_last_set, password_expiry, sign_up_status, sign_up_time, is_totp_enabled, \
    totp_key_sealed, totp_label, totp_last_step, version, updated_at";

/// Which sessions an update ends.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Revoke {
    None,
    All,
    AllExcept(Uuid),
}

impl Store {
    /// Inserts a new user together with its audit record (and event), in one transaction
    /// ([`StoreTx::insert_user`]).
    pub async fn insert_user(&self, user: &User, audit: &AuditEntry) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.insert_user(user, audit).await?;
        tx.commit().await
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

    /// Whether a user other than `except` has `username`, or a look-alike of it (the same
    /// username key or confusable skeleton).
    pub async fn username_taken(&self, username: &str, except: Option<Uuid>) -> Result<bool> {
        let (key, skeleton) = (User::username_key(username), User::username_skeleton(username));
        let found: Vec<Uuid> = on_db!(self, read, pool => {
            sqlx::query_scalar("SELECT uuid FROM users WHERE username_key = $1 OR username_skeleton = $2 LIMIT 2")
                .bind(&key)
                .bind(&skeleton)
                .fetch_all(pool)
                .await?
        });
        Ok(found.iter().any(|u| Some(*u) != except))
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
        let mut tx = self.begin().await?;
        if !tx.write_user(user, version, revoke, Some(audit)).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Deletes a user (sessions go with it). False when there was no such user.
    pub async fn delete_user(&self, uuid: Uuid, audit: &AuditEntry) -> Result<bool> {
        let mut tx = self.begin().await?;
        if !tx.delete_user(uuid, audit).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
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
}

/// The one implementation of each write of a user; the one-shot [`Store`] methods begin a
/// transaction, call these and commit.
impl StoreTx {
    /// Inserts a directory user with its audit record (and event). `Duplicate("username")`
    /// when the username (or a look-alike of it) is taken, reported by this call or, on
    /// SQLite where the insert is held for the next round trip, by the commit.
    pub async fn insert_user(&mut self, user: &User, audit: &AuditEntry) -> Result<()> {
        if let Some(b) = self.batch().await? {
            b.push(&INSERT_USER).bind(user.uuid)?;
            bind_user(BatchBinder(&mut *b, Ok(())), user).done()?;
            b.may_clash(username_clash_opt);
        } else {
            on_tx!(self, conn => {
                bind_user(sqlx::query(INSERT_USER.as_str()).bind(user.uuid), user)
                    .execute(&mut *conn)
                    .await
                    .map_err(username_clash)?;
            });
        }
        self.audit(audit).await
    }

    /// Reads a user and its row version inside this transaction.
    pub async fn user_by_uuid(&mut self, uuid: Uuid) -> Result<Option<(User, i64)>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE uuid = $1");
        let row: Option<UserRow> = on_tx!(self, conn => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(uuid).fetch_optional(&mut *conn).await?
        });
        row.map(UserRow::into_user).transpose()
    }

    /// Writes a changed user if its row is still at `version`, ending its sessions when
    /// `revoke_sessions`; false (nothing written) when the row moved on.
    pub async fn update_user(
        &mut self,
        user: &User,
        version: i64,
        revoke_sessions: bool,
        audit: &AuditEntry,
    ) -> Result<bool> {
        let revoke = if revoke_sessions { Revoke::All } else { Revoke::None };
        self.write_user(user, version, revoke, Some(audit)).await
    }

    /// The one conditional write of a user: every column, if the row is still at `version`;
    /// then the sessions `revoke` names go, and `audit` is written. False (nothing written)
    /// when the row moved on.
    pub(crate) async fn write_user(
        &mut self,
        user: &User,
        version: i64,
        revoke: Revoke,
        audit: Option<&AuditEntry>,
    ) -> Result<bool> {
        let n = on_tx!(self, conn => {
            bind_user(sqlx::query(UPDATE_USER.as_str()).bind(user.uuid), user)
                .bind(version)
                .execute(&mut *conn)
                .await
                .map_err(username_clash)?
                .rows_affected()
        });
        if n != 1 {
            return Ok(false);
        }
        match revoke {
            Revoke::None => {}
            Revoke::All => {
                write_stmt!(
                    self,
                    hold = true,
                    "DELETE FROM sessions WHERE user_uuid = $1",
                    [user.uuid]
                );
            }
            Revoke::AllExcept(keep) => {
                write_stmt!(
                    self,
                    hold = true,
                    "DELETE FROM sessions WHERE user_uuid = $1 AND id <> $2",
                    [user.uuid, keep]
                );
            }
        }
        if let Some(a) = audit {
            self.audit(a).await?;
        }
        Ok(true)
    }

    /// Deletes a user (sessions go with it); false when it was already gone.
    pub async fn delete_user(&mut self, uuid: Uuid, audit: &AuditEntry) -> Result<bool> {
        let n = on_tx!(self, conn => {
            sqlx::query("DELETE FROM users WHERE uuid = $1").bind(uuid).execute(&mut *conn).await?.rows_affected()
        });
        if n != 1 {
            return Ok(false);
        }
        self.audit(audit).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_statements_have_one_placeholder_per_written_column() {
        let columns = WRITTEN.len();
        assert!(
            INSERT_USER.contains(&format!("${}, 1)", columns + 1)),
            "{}",
            *INSERT_USER
        );
        assert!(!INSERT_USER.contains(&format!("${}", columns + 2)), "{}", *INSERT_USER);
        assert!(
            UPDATE_USER.ends_with(&format!("WHERE uuid = $1 AND version = ${}", columns + 2)),
            "{}",
            *UPDATE_USER
        );
        assert!(
            UPDATE_USER.contains("username_key = CASE WHEN username = $2 THEN username_key ELSE $3 END"),
            "{}",
            *UPDATE_USER
        );
        let names: std::collections::BTreeSet<_> = WRITTEN.iter().map(|c| c.name).collect();
        assert_eq!(names.len(), columns, "a column is listed twice");
    }
}
