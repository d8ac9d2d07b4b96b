//! Overrides of an account's Unix identity (Waldur's `set_posix_attributes`), checked against
//! the offering's counters so that a number is never handed out twice.
//!
//! The rule for an explicitly set uid (and, unless it is the offering's shared primary group,
//! gid): not held by another account of the offering, and not below the pool's counter (every
//! number below it was handed out once, or skipped; a number an account held before is never
//! given to another). A number at or above the counter is claimed in place; the counter's
//! draws skip numbers an account holds (`Store::allocate_posix`). On PostgreSQL the override
//! locks the offering row, which every draw updates: a draw and an override of the same number
//! are ordered, and the later one sees the earlier.

use crate::bind::Bind;
use crate::{Backend, Result, Store, StoreError, Ts, on_db};
use muster_core::audit::AuditEntry;
use muster_core::offering::model::{Account, HistoryEntry, PosixIdentity};

/// What writing a Unix identity gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PosixWrite {
    Written,
    /// The account changed (or went) since it was read: read it again and decide again.
    Stale,
    UidTaken,
    /// Below the counter: handed out before (or skipped), never handed out again.
    UidRetired,
    GidTaken,
    GidRetired,
}

/// The pool counters of an offering, as its draws see them.
#[derive(sqlx::FromRow)]
struct Counters {
    posix_uid_min: Option<i64>,
    posix_uid_next: Option<i64>,
    posix_gid_min: Option<i64>,
    posix_gid_next: Option<i64>,
    posix_shared_gid: Option<i64>,
}

/// The next number a counter hands out (its `GREATEST(COALESCE(next, min), min)`).
fn next(min: Option<i64>, next: Option<i64>) -> i64 {
    let min = min.unwrap_or(i64::MAX);
    next.unwrap_or(min).max(min)
}

/// Consumes a release (in the transaction that claims the number; rolled back with it).
const CLAIM_RELEASED: &str = "DELETE FROM posix_released_ids WHERE offering_uuid = $1 AND kind = $2 AND number = $3";

/// What an operator's release of a number gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PosixRelease {
    Released,
    /// No such offering, or it has no such pool.
    NoPool,
    /// An account (of any state, deleted ones included) holds it: delete that row first.
    Held,
    /// At or above the counter: never handed out, nothing to release.
    NotHandedOut,
    AlreadyReleased,
}

pub(crate) const UID_HELD: &str =
    "SELECT COUNT(*) FROM offering_users WHERE offering_uuid = $1 AND uidnumber = $2 AND uuid <> $3";
pub(crate) const GID_HELD: &str =
    "SELECT COUNT(*) FROM offering_users WHERE offering_uuid = $1 AND primarygroup = $2 AND uuid <> $3";

impl Store {
    /// Writes `new` as `account`'s Unix identity if the account is still at the version read,
    /// with its history entry and audit record (and event), in one transaction.
    pub async fn set_posix_identity(
        &self,
        account: &Account,
        new: &PosixIdentity,
        history: &HistoryEntry,
        audit: &AuditEntry,
    ) -> Result<PosixWrite> {
        let old = account.posix.as_ref();
        let uid_changed = old.map(|p| p.uid) != Some(new.uid);
        let gid_changed = old.map(|p| p.gid) != Some(new.gid);
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let counters_sql = format!(
            "SELECT posix_uid_min, posix_uid_next, posix_gid_min, posix_gid_next, posix_shared_gid \
             FROM offerings WHERE uuid = $1{lock}"
        );
        let offering = account.offering_uuid.0;
        on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            let c: Option<Counters> = sqlx::query_as(sqlx::AssertSqlSafe(counters_sql))
                .bind(offering)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(c) = c else {
                tx.rollback().await?;
                return Ok(PosixWrite::Stale);
            };
            let mut verdict = None;
            if uid_changed {
                let held: i64 = sqlx::query_scalar(UID_HELD)
                    .bind(offering)
                    .bind(new.uid)
                    .bind(account.uuid.0)
                    .fetch_one(&mut *tx)
                    .await?;
                if held > 0 {
                    verdict = Some(PosixWrite::UidTaken);
                } else if new.uid < next(c.posix_uid_min, c.posix_uid_next) {
                    // Only an operator's release lets it be given again, once.
                    let released = sqlx::query(CLAIM_RELEASED)
                        .bind(offering)
                        .bind("uid")
                        .bind(new.uid)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if released == 0 {
                        verdict = Some(PosixWrite::UidRetired);
                    }
                }
            }
            if verdict.is_none() && gid_changed && c.posix_shared_gid != Some(new.gid) {
                let held: i64 = sqlx::query_scalar(GID_HELD)
                    .bind(offering)
                    .bind(new.gid)
                    .bind(account.uuid.0)
                    .fetch_one(&mut *tx)
                    .await?;
                if held > 0 {
                    verdict = Some(PosixWrite::GidTaken);
                } else if new.gid < next(c.posix_gid_min, c.posix_gid_next) {
                    let released = sqlx::query(CLAIM_RELEASED)
                        .bind(offering)
                        .bind("gid")
                        .bind(new.gid)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if released == 0 {
                        verdict = Some(PosixWrite::GidRetired);
                    }
                }
            }
            if let Some(v) = verdict {
                tx.rollback().await?;
                return Ok(v);
            }
            let updated = sqlx::query(
                "UPDATE offering_users SET uidnumber = $3, primarygroup = $4, login_shell = $5, \
                 home_directory = $6, home_prefix = COALESCE(home_prefix, $7), version = version + 1, \
                 modified = $8 WHERE uuid = $1 AND version = $2",
            )
            .bind(account.uuid.0)
            .bind(account.version)
            .bind(new.uid)
            .bind(new.gid)
            .bind(&new.login_shell)
            .bind(new.home_override.as_deref())
            .bind(&new.home_prefix)
            .bind(Ts(audit.at))
            .execute(&mut *tx)
            .await;
            let updated = match updated {
                Ok(r) => r.rows_affected(),
                Err(e) => {
                    tx.rollback().await?;
                    return match StoreError::unique_as(e, "uidnumber", "uid") {
                        StoreError::Duplicate(_) => Ok(PosixWrite::UidTaken),
                        other => Err(other),
                    };
                }
            };
            if updated == 0 {
                tx.rollback().await?;
                return Ok(PosixWrite::Stale);
            }
            sqlx::query(crate::account_history::INSERT_HISTORY)
                .bind_all(crate::account_history::history_values(account.uuid.0, history))
                .execute(&mut *tx)
                .await?;
            crate::audit::insert(&mut *tx, audit).await?;
            crate::commit(tx).await?;
        });
        Ok(PosixWrite::Written)
    }
}

impl Store {
    /// Releases `number` of `offering`'s uid (`kind` = "uid") or gid pool so that one
    /// `set_posix_attributes` may claim it again, with its audit record, in one transaction.
    pub async fn release_posix_id(
        &self,
        offering: muster_core::offering::model::OfferingUuid,
        kind: &'static str,
        number: i64,
        audit: &AuditEntry,
    ) -> Result<PosixRelease> {
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let counters_sql = format!(
            "SELECT posix_uid_min, posix_uid_next, posix_gid_min, posix_gid_next, posix_shared_gid \
             FROM offerings WHERE uuid = $1{lock}"
        );
        let held_sql = if kind == "uid" { UID_HELD } else { GID_HELD };
        on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            let c: Option<Counters> = sqlx::query_as(sqlx::AssertSqlSafe(counters_sql))
                .bind(offering.0)
                .fetch_optional(&mut *tx)
                .await?;
            let (min, next_) = match (&c, kind) {
                (Some(c), "uid") => (c.posix_uid_min, c.posix_uid_next),
                (Some(c), _) => (c.posix_gid_min, c.posix_gid_next),
                (None, _) => (None, None),
            };
            if min.is_none() {
                tx.rollback().await?;
                return Ok(PosixRelease::NoPool);
            }
            let held: i64 = sqlx::query_scalar(held_sql)
                .bind(offering.0)
                .bind(number)
                .bind(uuid::Uuid::nil())
                .fetch_one(&mut *tx)
                .await?;
            let verdict = if held > 0 {
                Some(PosixRelease::Held)
            } else if number >= next(min, next_) {
                Some(PosixRelease::NotHandedOut)
            } else {
                None
            };
            if let Some(v) = verdict {
                tx.rollback().await?;
                return Ok(v);
            }
            let inserted = sqlx::query(
                "INSERT INTO posix_released_ids (offering_uuid, kind, number, released_at, released_by) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(offering.0)
            .bind(kind)
            .bind(number)
            .bind(Ts(audit.at))
            .bind(&audit.actor)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                tx.rollback().await?;
                return Ok(PosixRelease::AlreadyReleased);
            }
            crate::audit::insert(&mut *tx, audit).await?;
            crate::commit(tx).await?;
        });
        Ok(PosixRelease::Released)
    }
}
