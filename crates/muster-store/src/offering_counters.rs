//! An offering's counters: username numbers and Unix id draws. Each draw is one atomic UPDATE
//! committed at once, so concurrent creations never draw the same number and none waits for
//! another's transaction (a number drawn for an account that is then not created is a gap).

use crate::{Backend, Result, Store, on_db};
use muster_core::offering::model::{Offering, OfferingUuid, PosixPool};
use uuid::Uuid;

/// What drawing from an offering's POSIX pools gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PosixAllocation {
    /// The offering has no pools: the account gets no Unix identity.
    NoPool,
    UidPoolFull,
    GidPoolFull,
    Allocated {
        uid: i64,
        gid: i64,
    },
}

// The counters: the next number, if it is still in the pool, and the counter moved past it.
pub(crate) const NEXT_UID_SQLITE: &str = "UPDATE offerings SET posix_uid_next = MAX(COALESCE(posix_uid_next, \
    posix_uid_min), posix_uid_min) + 1 WHERE uuid = $1 AND posix_uid_min IS NOT NULL \
    AND MAX(COALESCE(posix_uid_next, posix_uid_min), posix_uid_min) <= posix_uid_max RETURNING posix_uid_next - 1";
pub(crate) const NEXT_GID_SQLITE: &str = "UPDATE offerings SET posix_gid_next = MAX(COALESCE(posix_gid_next, \
    posix_gid_min), posix_gid_min) + 1 WHERE uuid = $1 AND posix_gid_min IS NOT NULL \
    AND MAX(COALESCE(posix_gid_next, posix_gid_min), posix_gid_min) <= posix_gid_max RETURNING posix_gid_next - 1";
const NEXT_UID_POSTGRES: &str = "UPDATE offerings SET posix_uid_next = GREATEST(COALESCE(posix_uid_next, \
    posix_uid_min), posix_uid_min) + 1 WHERE uuid = $1 AND posix_uid_min IS NOT NULL \
    AND GREATEST(COALESCE(posix_uid_next, posix_uid_min), posix_uid_min) <= posix_uid_max RETURNING posix_uid_next - 1";
const NEXT_GID_POSTGRES: &str = "UPDATE offerings SET posix_gid_next = GREATEST(COALESCE(posix_gid_next, \
    posix_gid_min), posix_gid_min) + 1 WHERE uuid = $1 AND posix_gid_min IS NOT NULL \
    AND GREATEST(COALESCE(posix_gid_next, posix_gid_min), posix_gid_min) <= posix_gid_max RETURNING posix_gid_next - 1";

impl Store {
    /// Draws the next number of `offering`'s username counter, above `at_least` (one
    /// statement, committed at once: concurrent callers never draw the same number, and no
    /// lock is held after it). None when there is no such offering.
    pub async fn next_username_number(&self, offering: OfferingUuid, at_least: i64) -> Result<Option<i64>> {
        let sql = match self.backend() {
            Backend::Sqlite => {
                "UPDATE offerings SET username_counter = MAX(username_counter, $2) + 1 WHERE uuid = $1 \
                 RETURNING username_counter"
            }
            Backend::Postgres => {
                "UPDATE offerings SET username_counter = GREATEST(username_counter, $2) + 1 WHERE uuid = $1 \
                 RETURNING username_counter"
            }
        };
        Ok(on_db!(self, write, pool => {
            sqlx::query_scalar(sql).bind(offering.0).bind(at_least).fetch_optional(pool).await?
        }))
    }

    /// Draws a uid (and, unless the offering shares one primary group, a gid) from the
    /// offering's pools: one atomic UPDATE per counter, committed at once, so concurrent
    /// creations never draw the same number and none waits for another's transaction (a number
    /// drawn for an account that is then not created is a gap).
    /// On an offering that draws from its provider's pool, `user`'s identity there instead
    /// (`provider_posix`).
    pub async fn allocate_posix(&self, offering: &Offering, user: Uuid) -> Result<PosixAllocation> {
        let Some(p) = &offering.posix else {
            return Ok(PosixAllocation::NoPool);
        };
        if offering.posix_pool == PosixPool::Provider {
            return self.provider_posix_identity(offering.provider_uuid, user, p).await;
        }
        let (uid_sql, gid_sql) = match self.backend() {
            Backend::Sqlite => (NEXT_UID_SQLITE, NEXT_GID_SQLITE),
            Backend::Postgres => (NEXT_UID_POSTGRES, NEXT_GID_POSTGRES),
        };
        let Some(uid) = self.draw(offering, uid_sql, crate::posix::UID_HELD).await? else {
            return Ok(PosixAllocation::UidPoolFull);
        };
        let gid = match p.shared_gid {
            Some(g) => Some(g),
            None => self.draw(offering, gid_sql, crate::posix::GID_HELD).await?,
        };
        Ok(match gid {
            Some(gid) => PosixAllocation::Allocated { uid, gid },
            None => PosixAllocation::GidPoolFull,
        })
    }

    /// Draws from one counter until a number no account holds (an override may have claimed
    /// one ahead of the counter: see `posix`). None when the pool is full.
    async fn draw(&self, offering: &Offering, draw_sql: &'static str, held_sql: &'static str) -> Result<Option<i64>> {
        loop {
            let n: Option<i64> = on_db!(self, write, pool => {
                sqlx::query_scalar(draw_sql).bind(offering.uuid.0).fetch_optional(pool).await?
            });
            let Some(n) = n else { return Ok(None) };
            let held: i64 = on_db!(self, write, pool => {
                sqlx::query_scalar(held_sql).bind(offering.uuid.0).bind(n).bind(Uuid::nil()).fetch_one(pool).await?
            });
            if held == 0 {
                return Ok(Some(n));
            }
        }
    }

    /// Whether any account of `offering` (of any state) holds a Unix identity.
    pub async fn offering_has_posix_accounts(&self, offering: OfferingUuid) -> Result<bool> {
        Ok(on_db!(self, read, pool => {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM offering_users WHERE offering_uuid = $1 AND uidnumber IS NOT NULL)",
            )
            .bind(offering.0)
            .fetch_one(pool)
            .await?
        }))
    }
}
