//! Sessions. Only the SHA-256 of a session's token is stored.

use crate::users::USER_COLUMNS;
use crate::{Result, Store, Ts, on_db};
use muster_core::audit::AuditEntry;
use muster_core::directory::User;
use std::sync::LazyLock;
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: Uuid,
    pub user_uuid: Uuid,
    pub created_at: OffsetDateTime,
    pub last_seen_at: OffsetDateTime,
    /// Absolute expiry; idle expiry is `last_seen_at` plus the configured idle time.
    pub expires_at: OffsetDateTime,
    pub current_app: Option<String>,
    pub remote_addr: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: Uuid,
    user_uuid: Uuid,
    created_at: Ts,
    last_seen_at: Ts,
    expires_at: Ts,
    current_app: Option<String>,
    remote_addr: Option<String>,
    user_agent: Option<String>,
}

impl From<SessionRow> for SessionRecord {
    fn from(r: SessionRow) -> Self {
        Self {
            id: r.id,
            user_uuid: r.user_uuid,
            created_at: r.created_at.0,
            last_seen_at: r.last_seen_at.0,
            expires_at: r.expires_at.0,
            current_app: r.current_app,
            remote_addr: r.remote_addr,
            user_agent: r.user_agent,
        }
    }
}

#[derive(sqlx::FromRow)]
struct SessionUserRow {
    #[sqlx(flatten)]
    session: SessionRow,
    #[sqlx(flatten)]
    user: crate::users::UserRow,
}

const SESSION_COLUMNS: &str =
    "id, user_uuid, created_at, last_seen_at, expires_at, current_app, remote_addr, user_agent";

/// One query resolves a token to its session and user: this runs on every authenticated call.
static SESSION_WITH_USER: LazyLock<String> = LazyLock::new(|| {
    let session = SESSION_COLUMNS
        .split(", ")
        .map(|c| format!("s.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let user = USER_COLUMNS
        .split(',')
        .map(|c| c.trim())
        .filter(|c| *c != "uuid")
        .map(|c| format!("u.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT {session}, u.uuid, {user} FROM sessions s JOIN users u ON u.uuid = s.user_uuid WHERE s.token_hash = $1"
    )
});

/// The same session and user as [`SESSION_WITH_USER`], plus one more user (`$2`) in a second row
/// whose session columns are NULL: authentication and the lookup of the user a request is about
/// cost one round trip instead of two.
static SESSION_WITH_USER_AND_TARGET: LazyLock<String> = LazyLock::new(|| {
    let user = USER_COLUMNS
        .split(',')
        .map(|c| c.trim())
        .filter(|c| *c != "uuid")
        .collect::<Vec<_>>();
    let target = user.iter().map(|c| format!("t.{c}")).collect::<Vec<_>>().join(", ");
    let nulls = SESSION_COLUMNS
        .split(", ")
        .map(|_| "NULL")
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{} UNION ALL SELECT {nulls}, t.uuid, {target} FROM users t WHERE t.uuid = $2",
        SESSION_WITH_USER.as_str()
    )
});

/// A row of [`SESSION_WITH_USER_AND_TARGET`]: the session columns are NULL on the target's row.
#[derive(sqlx::FromRow)]
struct MaybeSessionUserRow {
    id: Option<Uuid>,
    user_uuid: Option<Uuid>,
    created_at: Option<Ts>,
    last_seen_at: Option<Ts>,
    expires_at: Option<Ts>,
    current_app: Option<String>,
    remote_addr: Option<String>,
    user_agent: Option<String>,
    #[sqlx(flatten)]
    user: crate::users::UserRow,
}

/// A session with its user, and (when asked for) another user.
pub type SessionAndTarget = (SessionRecord, User, i64, Option<(User, i64)>);

/// What a login's final transaction re-checks: the user row is still the one the login read
/// (no password reset, lock or rejection committed in between), and the TOTP step it verified
/// (if any) is still unspent; it is spent in the same transaction.
#[derive(Debug, Clone, Copy)]
pub struct LoginGuard {
    pub user_version: i64,
    pub totp_step: Option<i64>,
}

/// A password written as part of a login (must-change, expired, or a rehash).
#[derive(Debug, Clone)]
pub struct LoginPassword {
    pub hash: String,
    pub last_set: OffsetDateTime,
    pub expiry: OffsetDateTime,
    pub must_change: bool,
    /// A new password (not just a rehash of the same one) ends the user's other sessions.
    pub revoke_other_sessions: bool,
}

/// What a successful login does to the login throttle, in the login's transaction.
#[derive(Debug, Clone, Default)]
pub struct ThrottleReset {
    /// Counters reset (the account name's, and the name's from this address).
    pub clear: Vec<String>,
    /// (address key, account key): the name is no longer failing from that address, and the
    /// address is now known to the name.
    pub address: Option<(String, String)>,
}

impl ThrottleReset {
    /// Resets only the counters `keys`.
    pub fn clearing(keys: &[&str]) -> Self {
        Self {
            clear: keys.iter().map(|k| (*k).to_owned()).collect(),
            address: None,
        }
    }
}

impl Store {
    /// Opens a session after a successful login, in one transaction with: the guard's checks
    /// (see [`LoginGuard`]), the password the login carried (if any), the throttle's reset
    /// (see [`ThrottleReset`]), and the audit record. Returns false, writing nothing, when
    /// the guard fails.
    pub async fn open_session(
        &self,
        session: &SessionRecord,
        token_hash: &[u8; 32],
        guard: LoginGuard,
        password: Option<&LoginPassword>,
        throttle: &ThrottleReset,
        audit: &AuditEntry,
    ) -> Result<bool> {
        Ok(on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            // Locks the row (PostgreSQL) until commit: a concurrent reset waits, then revokes
            // this session too. Spending a step bumps the version, so no writer holding an
            // older copy of the row can put an earlier step back.
            let held = sqlx::query(
                "UPDATE users SET totp_last_step = COALESCE($3, totp_last_step), \
                 version = version + CASE WHEN $3 IS NULL THEN 0 ELSE 1 END \
                 WHERE uuid = $1 AND version = $2 AND ($3 IS NULL OR totp_last_step IS NULL OR totp_last_step < $3)",
            )
            .bind(session.user_uuid)
            .bind(guard.user_version)
            .bind(guard.totp_step)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if held {
                if let Some(p) = password {
                    sqlx::query(
                        "UPDATE users SET password_hash = $2, password_is_set = $3, password_last_set = $4, \
                         password_expiry = $5, password_must_change = $6, version = version + 1, updated_at = $4 WHERE uuid = $1",
                    )
                    .bind(session.user_uuid)
                    .bind(&p.hash)
                    .bind(true)
                    .bind(Ts(p.last_set))
                    .bind(Ts(p.expiry))
                    .bind(p.must_change)
                    .execute(&mut *tx)
                    .await?;
                    if p.revoke_other_sessions {
                        sqlx::query("DELETE FROM sessions WHERE user_uuid = $1").bind(session.user_uuid).execute(&mut *tx).await?;
                    }
                }
                sqlx::query(
                    "INSERT INTO sessions (id, token_hash, user_uuid, created_at, last_seen_at, expires_at, current_app, remote_addr, user_agent) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(session.id)
                .bind(&token_hash[..])
                .bind(session.user_uuid)
                .bind(Ts(session.created_at))
                .bind(Ts(session.last_seen_at))
                .bind(Ts(session.expires_at))
                .bind(&session.current_app)
                .bind(&session.remote_addr)
                .bind(&session.user_agent)
                .execute(&mut *tx)
                .await?;
                for key in &throttle.clear {
                    sqlx::query("DELETE FROM login_throttle WHERE key = $1").bind(key).execute(&mut *tx).await?;
                }
                if let Some((address, account)) = &throttle.address {
                    sqlx::query("DELETE FROM login_address_failures WHERE address_key = $1 AND account_key = $2")
                        .bind(address)
                        .bind(account)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(
                        "INSERT INTO login_known_addresses (account_key, address_key, last_success) VALUES ($1, $2, $3) \
                         ON CONFLICT (account_key, address_key) DO UPDATE SET last_success = excluded.last_success",
                    )
                    .bind(account)
                    .bind(address)
                    .bind(Ts(session.created_at))
                    .execute(&mut *tx)
                    .await?;
                }
                crate::audit::insert(&mut *tx, audit).await?;
                crate::commit(tx).await?;
            }
            held
        }))
    }

    /// The session whose token hashes to `token_hash`, with its user (and the user's version).
    pub async fn session_by_token_hash(&self, token_hash: &[u8; 32]) -> Result<Option<(SessionRecord, User, i64)>> {
        let row: Option<SessionUserRow> = on_db!(self, read, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(SESSION_WITH_USER.as_str())).bind(&token_hash[..]).fetch_optional(pool).await?
        });
        match row {
            None => Ok(None),
            Some(r) => {
                let (user, version) = r.user.into_user()?;
                Ok(Some((r.session.into(), user, version)))
            }
        }
    }

    /// Like [`Store::session_by_token_hash`], and also the user `target`, in one round trip (the
    /// hot path of reading a user by id). The target is None when it does not exist; nothing at
    /// all is returned when the token matches no session.
    pub async fn session_by_token_hash_with(
        &self,
        token_hash: &[u8; 32],
        target: Uuid,
    ) -> Result<Option<SessionAndTarget>> {
        let rows: Vec<MaybeSessionUserRow> = on_db!(self, read, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(SESSION_WITH_USER_AND_TARGET.as_str()))
                .bind(&token_hash[..])
                .bind(target)
                .fetch_all(pool)
                .await?
        });
        let mut session = None;
        let mut other = None;
        for r in rows {
            let (user, version) = r.user.into_user()?;
            match (r.id, r.user_uuid, r.created_at, r.last_seen_at, r.expires_at) {
                (Some(id), Some(user_uuid), Some(created_at), Some(last_seen_at), Some(expires_at)) => {
                    let record = SessionRecord {
                        id,
                        user_uuid,
                        created_at: created_at.0,
                        last_seen_at: last_seen_at.0,
                        expires_at: expires_at.0,
                        current_app: r.current_app,
                        remote_addr: r.remote_addr,
                        user_agent: r.user_agent,
                    };
                    session = Some((record, user, version));
                }
                _ => other = Some((user, version)),
            }
        }
        Ok(session.map(|(s, u, v)| (s, u, v, other)))
    }

    /// Marks a session used at `now` (resets its idle clock).
    pub async fn touch_session(&self, id: Uuid, now: OffsetDateTime) -> Result<bool> {
        let n = on_db!(self, write, pool => {
            sqlx::query("UPDATE sessions SET last_seen_at = $2 WHERE id = $1 AND last_seen_at < $2")
                .bind(id)
                .bind(Ts(now))
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// Renews a session (resets its idle clock), with an audit record.
    pub async fn renew_session(&self, id: Uuid, now: OffsetDateTime, audit: &AuditEntry) -> Result<bool> {
        let n = on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query("UPDATE sessions SET last_seen_at = $2 WHERE id = $1")
                .bind(id)
                .bind(Ts(now))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 1 {
                crate::audit::insert(&mut *tx, audit).await?;
                crate::commit(tx).await?;
            }
            n
        });
        Ok(n == 1)
    }

    /// Deletes one session of `user_uuid`. False when it was not there (or not theirs).
    pub async fn delete_session(&self, id: Uuid, user_uuid: Uuid, audit: &AuditEntry) -> Result<bool> {
        let n = on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query("DELETE FROM sessions WHERE id = $1 AND user_uuid = $2")
                .bind(id)
                .bind(user_uuid)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 1 {
                crate::audit::insert(&mut *tx, audit).await?;
                crate::commit(tx).await?;
            }
            n
        });
        Ok(n == 1)
    }

    /// Deletes every session of a user, except `keep` if given. Returns how many went.
    pub async fn delete_user_sessions(&self, user_uuid: Uuid, keep: Option<Uuid>, audit: &AuditEntry) -> Result<u64> {
        Ok(on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            let n = match keep {
                Some(k) => sqlx::query("DELETE FROM sessions WHERE user_uuid = $1 AND id <> $2").bind(user_uuid).bind(k).execute(&mut *tx).await?,
                None => sqlx::query("DELETE FROM sessions WHERE user_uuid = $1").bind(user_uuid).execute(&mut *tx).await?,
            }
            .rows_affected();
            crate::audit::insert(&mut *tx, audit).await?;
            crate::commit(tx).await?;
            n
        }))
    }

    /// A user's sessions that have not passed their absolute expiry, newest first.
    pub async fn list_sessions(&self, user_uuid: Uuid, now: OffsetDateTime) -> Result<Vec<SessionRecord>> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_uuid = $1 AND expires_at > $2 ORDER BY created_at DESC"
        );
        let rows: Vec<SessionRow> = on_db!(self, read, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(user_uuid).bind(Ts(now)).fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Deletes sessions past their absolute expiry or idle since before `idle_cutoff`.
    pub async fn purge_sessions(&self, now: OffsetDateTime, idle_cutoff: OffsetDateTime) -> Result<u64> {
        Ok(on_db!(self, write, pool => {
            sqlx::query("DELETE FROM sessions WHERE expires_at <= $1 OR last_seen_at <= $2")
                .bind(Ts(now))
                .bind(Ts(idle_cutoff))
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }
}
