//! Users.

use crate::{Result, Store, StoreError, Ts, on_db};
use muster_core::audit::AuditEntry;
use muster_core::directory::{ApprovalStatus, SignUpStatus, User};
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

/// Writes every mutable column of `$u` if its row is still at `$version`, on `$conn` (inside
/// another write); evaluates to the number of rows changed (0 or 1).
macro_rules! write_user {
    ($conn:expr, $u:expr, $version:expr) => {{
        let q = sqlx::query($crate::users::UPDATE_USER).bind($u.uuid);
        $crate::users::bind_user_columns!(q, $u)
            .bind($version)
            .execute($conn)
            .await
            .map_err($crate::users::username_clash)?
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
            .map_err($crate::users::username_clash)?;
    }};
}
pub(crate) use insert_user_on;

/// Binds every mutable column of a user, in the order of [`USER_COLUMNS`] after `uuid`.
macro_rules! bind_user_columns {
    ($q:expr, $u:expr) => {
        $q.bind(&$u.username)
            .bind(muster_core::directory::User::username_key(&$u.username))
            .bind(muster_core::directory::User::username_skeleton(&$u.username))
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

pub(crate) const INSERT_USER: &str = "INSERT INTO users (uuid, username, username_key, username_skeleton, email, email_key, display_name, \
    first_name, middle_name, last_name, search_names, is_active, is_internal, is_super_user, \
    is_approval_needed, approval_status, approval_status_mod_by, approval_status_mod_time, is_locked, \
    locked_time, locked_by, password_hash, password_is_set, password_must_change, password_last_set, \
    password_expiry, sign_up_status, sign_up_time, is_totp_enabled, totp_key_sealed, totp_label, \
    totp_last_step, updated_at, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
    $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, \
    $33, 1)";

/// Writes every mutable column and bumps the version, if the version is still `$34`. The
/// username's keys are kept while the username stays the same: a user whose keys were kept
/// from before the username rules (see migration 0008) can still be changed otherwise.
pub(crate) const UPDATE_USER: &str = "UPDATE users SET username = $2, \
    username_key = CASE WHEN username = $2 THEN username_key ELSE $3 END, \
    username_skeleton = CASE WHEN username = $2 THEN username_skeleton ELSE $4 END, email = $5, \
    email_key = $6, display_name = $7, first_name = $8, middle_name = $9, last_name = $10, \
    search_names = $11, is_active = $12, is_internal = $13, is_super_user = $14, \
    is_approval_needed = $15, approval_status = $16, approval_status_mod_by = $17, \
    approval_status_mod_time = $18, is_locked = $19, locked_time = $20, locked_by = $21, \
    password_hash = $22, password_is_set = $23, password_must_change = $24, password_last_set = $25, \
    password_expiry = $26, sign_up_status = $27, sign_up_time = $28, is_totp_enabled = $29, \
    totp_key_sealed = $30, totp_label = $31, totp_last_step = $32, updated_at = $33, \
    version = version + 1 WHERE uuid = $1 AND version = $34";

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

/// Where an export of [`Store::export_users`] goes on from: the sort key of the last row sent.
#[derive(Debug, Clone)]
pub struct UserCursor {
    sign_up_time: OffsetDateTime,
    username_key: String,
}

/// A users row with its sort key, for [`Store::export_users`].
#[derive(sqlx::FromRow)]
struct ExportRow {
    #[sqlx(flatten)]
    user: UserRow,
    cursor_key: String,
}

impl Store {
    /// The next `limit` users matching `q` after `after`, in `q.order`, and where the next
    /// page starts (None after the last). Keyset paging, without a count: an export of every
    /// user costs one index range scan in all, where OFFSET paging would rescan what it skips
    /// on every page. `q.offset` and `q.limit` are not used.
    pub async fn export_users(
        &self,
        q: &UserQuery,
        after: Option<&UserCursor>,
        limit: i64,
    ) -> Result<(Vec<User>, Option<UserCursor>)> {
        let key = match self.backend() {
            crate::Backend::Sqlite => "username_key",
            crate::Backend::Postgres => "username_key COLLATE \"C\"",
        };
        let rows: Vec<ExportRow> = on_db!(self, read, pool => {
            let mut page = sqlx::QueryBuilder::new(format!("SELECT {USER_COLUMNS}, username_key AS cursor_key FROM users"));
            push_user_filters!(page, q);
            if let Some(c) = after {
                match q.order {
                    UserOrder::Username => {
                        page.push(format!(" AND {key} > ")).push_bind(c.username_key.clone());
                    }
                    UserOrder::SignUpTime => {
                        page.push(" AND (sign_up_time > ").push_bind(Ts(c.sign_up_time));
                        page.push(" OR (sign_up_time = ").push_bind(Ts(c.sign_up_time));
                        page.push(format!(" AND {key} > ")).push_bind(c.username_key.clone()).push("))");
                    }
                    UserOrder::SignUpTimeDesc => {
                        page.push(" AND (sign_up_time < ").push_bind(Ts(c.sign_up_time));
                        page.push(" OR (sign_up_time = ").push_bind(Ts(c.sign_up_time));
                        page.push(format!(" AND {key} > ")).push_bind(c.username_key.clone()).push("))");
                    }
                }
            }
            page.push(match q.order {
                UserOrder::Username => format!(" ORDER BY {key}"),
                UserOrder::SignUpTime => format!(" ORDER BY sign_up_time, {key}"),
                UserOrder::SignUpTimeDesc => format!(" ORDER BY sign_up_time DESC, {key}"),
            });
            page.push(" LIMIT ").push_bind(limit.max(0));
            page.build_query_as().fetch_all(pool).await?
        });
        let full = rows.len() as i64 >= limit.max(1);
        let mut next = None;
        let mut users = Vec::with_capacity(rows.len());
        for r in rows {
            let (u, _) = r.user.into_user()?;
            next = Some(UserCursor {
                sign_up_time: u.sign_up_time,
                username_key: r.cursor_key,
            });
            users.push(u);
        }
        Ok((users, next.filter(|_| full)))
    }
}

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
                        crate::audit::insert!(&mut *tx, &entry);
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
