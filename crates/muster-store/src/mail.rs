//! The mail outbox and the one-time tokens that mails carry (password resets, invitations).
//!
//! A mail is written in the transaction of the change that causes it ([`Followups`]), so a
//! change is never committed without its mail nor a mail sent for a change that was rolled
//! back. A delivery task claims due mails ([`Store::claim_due_mail`]), sends them and records
//! the outcome. Tokens are stored as SHA-256 hashes only; issuing one for a user and purpose
//! replaces the one before, so older links stop working.

use crate::tx::{on_tx, write_stmt};
use crate::users::Revoke;
use crate::{Result, SessionRecord, Store, Ts, on_db};
use muster_core::audit::AuditEntry;
use muster_core::directory::User;
use time::OffsetDateTime;
use uuid::Uuid;

/// A one-time token to store (its hash only).
#[derive(Debug, Clone)]
pub struct NewActionToken {
    pub hash: [u8; 32],
    /// `password_reset` or `invitation`.
    pub purpose: &'static str,
    pub user_uuid: Uuid,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// A mail to queue.
#[derive(Debug, Clone)]
pub struct NewMail {
    pub id: Uuid,
    /// The template it was made from (`password_reset`, `invitation`, …).
    pub kind: &'static str,
    pub recipient: String,
    pub user_uuid: Option<Uuid>,
    /// The message, sealed with the server key (it may carry a one-time link).
    pub sealed_message: String,
    pub created_at: OffsetDateTime,
}

/// What a change writes besides itself, in its transaction: tokens (each replacing the
/// user's earlier token of the same purpose) and mails.
#[derive(Debug, Clone, Default)]
pub struct Followups {
    pub tokens: Vec<NewActionToken>,
    pub mails: Vec<NewMail>,
}

/// A mail in the outbox.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MailRow {
    pub id: Uuid,
    pub created_at: Ts,
    pub kind: String,
    pub recipient: String,
    pub user_uuid: Option<Uuid>,
    /// None once sent.
    pub sealed_message: Option<String>,
    /// `pending`, `sent` or `failed`.
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Ts,
    pub last_error: Option<String>,
    pub sent_at: Option<Ts>,
}

const MAIL_COLUMNS: &str = "id, created_at, kind, recipient, user_uuid, sealed_message, status, attempts, \
    next_attempt_at, last_error, sent_at";

const DELETE_TOKEN_OF: &str = "DELETE FROM action_tokens WHERE user_uuid = $1 AND purpose = $2";
const INSERT_TOKEN: &str =
    "INSERT INTO action_tokens (token_hash, purpose, user_uuid, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)";
const INSERT_MAIL: &str = "INSERT INTO mail_outbox (id, created_at, kind, recipient, user_uuid, sealed_message, \
    status, attempts, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $2)";

/// What redeeming a token does besides spending it (see [`Store::redeem_token`]).
#[derive(Debug)]
pub struct Redemption<'a> {
    /// The user as it is to be written, and the row version it was read at.
    pub user: &'a User,
    pub version: i64,
    /// A session to open for the user (an accepted invitation logs the person in).
    pub session: Option<(&'a SessionRecord, [u8; 32])>,
    pub followups: &'a Followups,
    /// An address the redemption proves reaches the user (the invitation was mailed to it).
    pub verify_email: Option<&'a str>,
    pub audit: &'a AuditEntry,
}

impl Store {
    /// Inserts a new user with its audit record and what follows from it (an invitation).
    pub async fn insert_user_with(&self, user: &User, audit: &AuditEntry, followups: &Followups) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.insert_user(user, audit).await?;
        tx.write_followups(followups).await?;
        tx.commit().await
    }

    /// Writes a changed user if its row is still at `version` (ending its sessions when
    /// `revoke_sessions`), with `followups` and `audit`, in one transaction; false when the row
    /// moved on.
    pub async fn update_user_and(
        &self,
        user: &User,
        version: i64,
        revoke_sessions: bool,
        audit: &AuditEntry,
        followups: &Followups,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        if !tx.update_user(user, version, revoke_sessions, audit).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.write_followups(followups).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Writes `followups` with `audit` in one transaction (a reset requested, an invitation
    /// issued again).
    pub async fn write_followups(&self, followups: &Followups, audit: &AuditEntry) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.write_followups(followups).await?;
        tx.audit(audit).await?;
        tx.commit().await
    }

    /// The user a live token of `purpose` hashing to `hash` belongs to, and when it expires.
    pub async fn action_token(&self, hash: &[u8; 32], purpose: &str) -> Result<Option<(Uuid, OffsetDateTime)>> {
        let row: Option<(Uuid, Ts)> = on_db!(self, read, pool => {
            sqlx::query_as("SELECT user_uuid, expires_at FROM action_tokens WHERE token_hash = $1 AND purpose = $2")
                .bind(&hash[..])
                .bind(purpose)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(u, t)| (u, t.0)))
    }

    /// Spends the token (`hash`, `purpose`) of `r.user` if it is live at `now`, and in the
    /// same transaction writes the user (if still at `r.version`), ends every session of the
    /// user, opens `r.session` if any, and writes the follow-ups and the audit record. False,
    /// writing nothing, when the token is gone, expired or another user's, or the user changed.
    pub async fn redeem_token(
        &self,
        hash: &[u8; 32],
        purpose: &str,
        now: OffsetDateTime,
        r: Redemption<'_>,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let spent = on_tx!(tx, conn => {
            sqlx::query(
                "DELETE FROM action_tokens WHERE token_hash = $1 AND purpose = $2 AND user_uuid = $3 AND expires_at > $4",
            )
            .bind(&hash[..])
            .bind(purpose)
            .bind(r.user.uuid)
            .bind(Ts(now))
            .execute(&mut *conn)
            .await?
            .rows_affected()
        }) == 1;
        // A reset ends every session; so does accepting an invitation (there should be none),
        // before the new one is opened.
        if !spent || !tx.write_user(r.user, r.version, Revoke::All, Some(r.audit)).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        // Any other one-time token of the user dies with it: a link must not outlive the
        // password it was sent to replace.
        write_stmt!(
            tx,
            hold = true,
            "DELETE FROM action_tokens WHERE user_uuid = $1",
            [r.user.uuid]
        );
        if let Some((s, token_hash)) = &r.session {
            write_stmt!(
                tx,
                hold = true,
                "INSERT INTO sessions (id, token_hash, user_uuid, created_at, last_seen_at, expires_at, current_app, \
                 remote_addr, user_agent) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                [
                    s.id,
                    &token_hash[..],
                    s.user_uuid,
                    Ts(s.created_at),
                    Ts(s.last_seen_at),
                    Ts(s.expires_at),
                    s.current_app.as_deref(),
                    s.remote_addr.as_deref(),
                    s.user_agent.as_deref()
                ]
            );
        }
        if let Some(email) = r.verify_email {
            write_stmt!(
                tx,
                hold = true,
                "INSERT INTO email_verifications (user_uuid, email, verified_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_uuid) DO UPDATE SET email = excluded.email, verified_at = excluded.verified_at",
                [r.user.uuid, email, Ts(now)]
            );
        }
        tx.write_followups(r.followups).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The address of `user_uuid` proven by an invitation, and when.
    pub async fn email_verification(&self, user_uuid: Uuid) -> Result<Option<(String, OffsetDateTime)>> {
        let row: Option<(String, Ts)> = on_db!(self, read, pool => {
            sqlx::query_as("SELECT email, verified_at FROM email_verifications WHERE user_uuid = $1")
                .bind(user_uuid)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(e, t)| (e, t.0)))
    }

    /// Users who signed up themselves (`approval_status_mod_by = 'signup'`) and never confirmed,
    /// since before `cutoff` (at most `limit`).
    pub async fn unconfirmed_sign_ups(&self, cutoff: OffsetDateTime, limit: i64) -> Result<Vec<Uuid>> {
        Ok(on_db!(self, read, pool => {
            sqlx::query_scalar(
                "SELECT uuid FROM users WHERE sign_up_status = 'before_confirmation' \
                 AND approval_status_mod_by = 'signup' AND sign_up_time < $1 LIMIT $2",
            )
            .bind(Ts(cutoff))
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Deletes tokens that expired before `now`.
    pub async fn purge_action_tokens(&self, now: OffsetDateTime) -> Result<u64> {
        Ok(on_db!(self, write, pool => {
            sqlx::query("DELETE FROM action_tokens WHERE expires_at <= $1").bind(Ts(now)).execute(pool).await?.rows_affected()
        }))
    }

    /// Claims up to `limit` mails due at `now` for sending until `until` (no other node sends
    /// them meanwhile). A claim that lapses (the node died mid-send) makes the mail due again.
    pub async fn claim_due_mail(&self, now: OffsetDateTime, until: OffsetDateTime, limit: i64) -> Result<Vec<MailRow>> {
        let sql = format!(
            "SELECT {MAIL_COLUMNS} FROM mail_outbox WHERE status = 'pending' AND next_attempt_at <= $1 \
             AND (claimed_until IS NULL OR claimed_until <= $1) ORDER BY next_attempt_at LIMIT $2"
        );
        let due: Vec<MailRow> = on_db!(self, read, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(Ts(now)).bind(limit).fetch_all(pool).await?
        });
        let mut claimed = Vec::with_capacity(due.len());
        for m in due {
            let n = on_db!(self, write, pool => {
                sqlx::query(
                    "UPDATE mail_outbox SET claimed_until = $2 WHERE id = $1 AND status = 'pending' \
                     AND (claimed_until IS NULL OR claimed_until <= $3)",
                )
                .bind(m.id)
                .bind(Ts(until))
                .bind(Ts(now))
                .execute(pool)
                .await?
                .rows_affected()
            });
            if n == 1 {
                claimed.push(m);
            }
        }
        Ok(claimed)
    }

    /// Records a delivery: the message itself is erased, its envelope kept.
    pub async fn mail_sent(&self, id: Uuid, now: OffsetDateTime) -> Result<()> {
        on_db!(self, write, pool => {
            sqlx::query(
                "UPDATE mail_outbox SET status = 'sent', sealed_message = NULL, sent_at = $2, attempts = attempts + 1, \
                 claimed_until = NULL, last_error = NULL WHERE id = $1",
            )
            .bind(id)
            .bind(Ts(now))
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Records a failed attempt: due again at `next` or, when `give_up`, `failed` until retried.
    pub async fn mail_attempt_failed(&self, id: Uuid, next: OffsetDateTime, error: &str, give_up: bool) -> Result<()> {
        let status = if give_up { "failed" } else { "pending" };
        on_db!(self, write, pool => {
            sqlx::query(
                "UPDATE mail_outbox SET status = $2, attempts = attempts + 1, next_attempt_at = $3, last_error = $4, \
                 claimed_until = NULL WHERE id = $1 AND status = 'pending'",
            )
            .bind(id)
            .bind(status)
            .bind(Ts(next))
            .bind(error)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The outbox, newest first; `status` filters.
    pub async fn list_mail(&self, status: Option<&str>, limit: i64) -> Result<Vec<MailRow>> {
        let sql = format!(
            "SELECT {MAIL_COLUMNS} FROM mail_outbox WHERE ($1 IS NULL OR status = $1) ORDER BY created_at DESC LIMIT $2"
        );
        Ok(on_db!(self, read, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(status).bind(limit).fetch_all(pool).await?
        }))
    }

    /// Counts of mails per status.
    pub async fn mail_counts(&self) -> Result<Vec<(String, i64)>> {
        Ok(on_db!(self, read, pool => {
            sqlx::query_as("SELECT status, COUNT(*) FROM mail_outbox GROUP BY status ORDER BY status").fetch_all(pool).await?
        }))
    }

    /// The newest unsent mail of `kind` to `user_uuid`.
    pub async fn pending_mail_of(&self, user_uuid: Uuid, kind: &str) -> Result<Option<MailRow>> {
        let sql = format!(
            "SELECT {MAIL_COLUMNS} FROM mail_outbox WHERE user_uuid = $1 AND kind = $2 AND status <> 'sent' \
             AND sealed_message IS NOT NULL ORDER BY created_at DESC LIMIT 1"
        );
        Ok(on_db!(self, read, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(user_uuid).bind(kind).fetch_optional(pool).await?
        }))
    }

    /// Makes a failed mail due again at `now`, with its attempts counted afresh, and audits it.
    /// False when there is no failed mail `id`.
    pub async fn retry_mail(&self, id: Uuid, now: OffsetDateTime, audit: &AuditEntry) -> Result<bool> {
        Ok(on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(
                "UPDATE mail_outbox SET status = 'pending', attempts = 0, next_attempt_at = $2, claimed_until = NULL \
                 WHERE id = $1 AND status = 'failed'",
            )
            .bind(id)
            .bind(Ts(now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 1 {
                crate::audit::insert(&mut *tx, audit).await?;
                crate::commit(tx).await?;
            }
            n == 1
        }))
    }
}

impl crate::StoreTx {
    /// Writes `followups` inside this transaction (a workflow step inviting the user it made).
    pub async fn write_followups(&mut self, followups: &Followups) -> Result<()> {
        for t in &followups.tokens {
            crate::tx::write_stmt!(self, hold = true, DELETE_TOKEN_OF, [t.user_uuid, t.purpose]);
            crate::tx::write_stmt!(
                self,
                hold = true,
                INSERT_TOKEN,
                [&t.hash[..], t.purpose, t.user_uuid, Ts(t.created_at), Ts(t.expires_at)]
            );
        }
        for m in &followups.mails {
            crate::tx::write_stmt!(
                self,
                hold = true,
                INSERT_MAIL,
                [
                    m.id,
                    Ts(m.created_at),
                    m.kind,
                    m.recipient.as_str(),
                    m.user_uuid,
                    m.sealed_message.as_str()
                ]
            );
        }
        Ok(())
    }
}
