//! Offering accounts changed inside a workflow step's transaction: a group's offerings change
//! and every member's accounts follow, committed with the step (or not at all).
//!
//! The standalone writes in `accounts.rs` each commit on their own; these take a [`StoreTx`]
//! instead. On PostgreSQL the members' accounts are read `FOR UPDATE`, so a site agent's
//! concurrent transition waits for the step and then finds the new state (its conditional
//! update sees the version move and its rule decides again); on SQLite the transaction holds
//! the one write lock from its first statement.
//!
//! The audit records and their events are written as they come (`audit::insert`: numbered at
//! once on SQLite, by the sequencer on PostgreSQL) rather than held for the commit, so a step
//! that changes thousands of accounts never builds one statement with more arguments than the
//! database takes.

use crate::accounts::{
    ACCOUNT_SELECT, AccountRow, INSERT_ACCOUNT, account_clash, account_values, applied_count, hold_change,
    push_postgres_change,
};
use crate::bind::Bind;
use crate::tx::{StoreTx, TxInner, on_tx};
use crate::{AccountChange, Backend, Result, StoreError};
use muster_core::audit::AuditEntry;
use muster_core::offering::model::{Account, AccountFields, HistoryEntry, Offering, OfferingUserUuid, PosixIdentity};
use uuid::Uuid;

/// How many user ids one `IN (…)` list carries (well under either database's bind limit).
const IN_CHUNK: usize = 500;

impl StoreTx {
    /// The directory users of `group`'s active members (User subscriptions whose `group`
    /// depends on it). `unheld_only` leaves out members a workflow holds (their own workflow
    /// brings their accounts in line).
    pub async fn group_members(&mut self, group: Uuid, unheld_only: bool) -> Result<Vec<Uuid>> {
        let sql = format!(
            "SELECT ub.directory_user FROM subscription_relations r \
             JOIN subscriptions s ON s.subscription_id = r.in_use_by_id \
             JOIN user_blocks ub ON ub.subscription_id = s.subscription_id \
             WHERE r.depends_on_id = $1 AND r.attribute = 'group' AND s.status = 'active' \
             AND ub.directory_user IS NOT NULL{} ORDER BY ub.directory_user",
            if unheld_only {
                " AND s.locked_by_process IS NULL"
            } else {
                ""
            }
        );
        let rows: Vec<Uuid> = on_tx!(self, conn => {
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(group).fetch_all(&mut *conn).await?
        });
        Ok(rows)
    }

    /// Every account of `users` (on any offering), read in this transaction; on PostgreSQL
    /// the account rows stay locked until it ends.
    pub async fn accounts_of_users(&mut self, users: &[Uuid]) -> Result<Vec<Account>> {
        let lock = if self.backend() == Backend::Postgres {
            " FOR UPDATE OF ou"
        } else {
            ""
        };
        let mut out = Vec::new();
        for chunk in users.chunks(IN_CHUNK) {
            let mut sql = format!("{ACCOUNT_SELECT} WHERE ou.user_uuid IN (");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("${}", i + 1));
            }
            sql.push_str(") ORDER BY ou.user_uuid, ou.offering_uuid");
            sql.push_str(lock);
            let rows: Vec<AccountRow> = on_tx!(self, conn => {
                let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
                for u in chunk {
                    q = q.bind(*u);
                }
                q.fetch_all(&mut *conn).await?
            });
            for r in rows {
                out.push(r.into_account()?);
            }
        }
        Ok(out)
    }

    /// `Store::offering_usernames`, read in this transaction (so it sees the names this step
    /// already gave).
    pub async fn offering_usernames(&mut self, offering: uuid::Uuid, prefix: &str) -> Result<Vec<String>> {
        let pattern = format!(
            "{}%",
            prefix.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
        );
        let rows: Vec<String> = on_tx!(self, conn => {
            sqlx::query_scalar(
                "SELECT username FROM offering_users WHERE offering_uuid = $1 AND username LIKE $2 ESCAPE '\\'",
            )
            .bind(offering)
            .bind(&pattern)
            .fetch_all(&mut *conn)
            .await?
        });
        Ok(rows)
    }

    /// `Store::next_username_number` for a step: on SQLite in this transaction (which holds
    /// the one write lock anyway), on PostgreSQL on a connection of its own, committed at once,
    /// so the offering's row is not locked until the step commits (a number of a step that
    /// rolls back is a gap).
    pub async fn next_username_number(&mut self, offering: uuid::Uuid, at_least: i64) -> Result<Option<i64>> {
        if self.backend() == Backend::Postgres {
            let store = self.store.clone();
            return store
                .next_username_number(muster_core::offering::model::OfferingUuid(offering), at_least)
                .await;
        }
        Ok(on_tx!(self, conn => {
            sqlx::query_scalar(
                "UPDATE offerings SET username_counter = MAX(username_counter, $2) + 1 WHERE uuid = $1 \
                 RETURNING username_counter",
            )
            .bind(offering)
            .bind(at_least)
            .fetch_optional(&mut *conn)
            .await?
        }))
    }

    /// `Store::allocate_posix` for a step: in this transaction on SQLite, on a connection of
    /// its own on PostgreSQL (see `next_username_number`).
    pub async fn allocate_posix(&mut self, offering: &Offering, user: uuid::Uuid) -> Result<crate::PosixAllocation> {
        if self.backend() == Backend::Postgres {
            let store = self.store.clone();
            return store.allocate_posix(offering, user).await;
        }
        let Some(p) = &offering.posix else {
            return Ok(crate::PosixAllocation::NoPool);
        };
        if offering.posix_pool == muster_core::offering::model::PosixPool::Provider {
            return self
                .provider_posix_identity_in_tx(offering.provider_uuid, user, p)
                .await;
        }
        let Some(uid) = self
            .draw_sqlite(
                offering,
                crate::offering_counters::NEXT_UID_SQLITE,
                crate::posix::UID_HELD,
            )
            .await?
        else {
            return Ok(crate::PosixAllocation::UidPoolFull);
        };
        let gid = match p.shared_gid {
            Some(g) => Some(g),
            None => {
                self.draw_sqlite(
                    offering,
                    crate::offering_counters::NEXT_GID_SQLITE,
                    crate::posix::GID_HELD,
                )
                .await?
            }
        };
        Ok(match gid {
            Some(gid) => crate::PosixAllocation::Allocated { uid, gid },
            None => crate::PosixAllocation::GidPoolFull,
        })
    }

    /// `Store::draw` in this transaction (SQLite).
    async fn draw_sqlite(
        &mut self,
        offering: &Offering,
        draw_sql: &'static str,
        held_sql: &'static str,
    ) -> Result<Option<i64>> {
        loop {
            let n: Option<i64> = on_tx!(self, conn => {
                sqlx::query_scalar(draw_sql).bind(offering.uuid.0).fetch_optional(&mut *conn).await?
            });
            let Some(n) = n else { return Ok(None) };
            let held: i64 = on_tx!(self, conn => {
                sqlx::query_scalar(held_sql).bind(offering.uuid.0).bind(n).bind(Uuid::nil()).fetch_one(&mut *conn).await?
            });
            if held == 0 {
                return Ok(Some(n));
            }
        }
    }

    /// Whether another live account of `offering` (any state but `deleted`, as the unique index
    /// counts them) has `username`.
    pub async fn username_taken_by_other(
        &mut self,
        offering: uuid::Uuid,
        username: &str,
        except: OfferingUserUuid,
    ) -> Result<bool> {
        let n: i64 = on_tx!(self, conn => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM offering_users WHERE offering_uuid = $1 AND username = $2 \
                 AND state <> 'deleted' AND uuid <> $3",
            )
            .bind(offering)
            .bind(username)
            .bind(except.0)
            .fetch_one(&mut *conn)
            .await?
        });
        Ok(n > 0)
    }

    /// Inserts an account with its first history entry and audit record (and event), in this
    /// transaction. `Duplicate("offering user")` / `Duplicate("username")` as
    /// `Store::insert_offering_user`.
    // The row, its first history entry, its audit record and its Unix identity: one insert.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_offering_user(
        &mut self,
        uuid: OfferingUserUuid,
        offering: &Offering,
        user: Uuid,
        fields: &AccountFields,
        history: &HistoryEntry,
        audit: &AuditEntry,
        posix: Option<&PosixIdentity>,
    ) -> Result<()> {
        let at = audit.at;
        on_tx!(self, conn => {
            crate::bind::Bind::bind_all(sqlx::query(INSERT_ACCOUNT), account_values(uuid, offering, user, fields, at, posix))
                .execute(&mut *conn)
                .await
                .map_err(account_clash)?;
            sqlx::query(crate::account_history::INSERT_HISTORY)
                .bind_all(crate::account_history::history_values(uuid.0, history))
                .execute(&mut *conn)
                .await?;
            crate::audit::insert(&mut *conn, audit).await?;
        });
        Ok(())
    }

    /// Writes `change` to an account read in this transaction if it is still at `version` (and
    /// in one of `change.allowed_from`), with its history entry, audit record and event; false
    /// when it is not (nothing written).
    pub async fn change_offering_user(
        &mut self,
        uuid: OfferingUserUuid,
        version: i64,
        change: &AccountChange,
    ) -> Result<bool> {
        let n: i64 = match self.conn().await? {
            TxInner::Sqlite(_) => {
                self.hold_offering_user_change(uuid, version, change).await?;
                let rows = self.send_for_rows().await?;
                applied_count(&rows)?
            }
            TxInner::Postgres(t) => {
                let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new("");
                push_postgres_change(&mut qb, uuid, version, change);
                qb.build_query_scalar()
                    .fetch_one(&mut **t)
                    .await
                    .map_err(|e| StoreError::unique_as(e, "username", "username"))?
            }
        };
        Ok(n == 1)
    }

    /// SQLite: holds `change` in this transaction's batch, nothing sent; the rows of the round
    /// trip that sends it end with the one of [`applied_count`]. A clash on the username is
    /// reported as `Duplicate("username")`.
    pub(crate) async fn hold_offering_user_change(
        &mut self,
        uuid: OfferingUserUuid,
        version: i64,
        change: &AccountChange,
    ) -> Result<()> {
        let Some(b) = self.batch().await? else {
            return Err(StoreError::Corrupt("an account change held on PostgreSQL".into()));
        };
        hold_change(b, uuid, version, change);
        b.may_clash(|e| StoreError::unique_opt(e, "username", "username"));
        Ok(())
    }
}
