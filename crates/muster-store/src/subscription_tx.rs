//! Subscriptions written inside a workflow step's transaction: inserted, saved against the
//! version they were read at, held by one process at a time and released with it, their ids
//! allocated. Every write names the version it read and fails when the row moved on.

use crate::subscriptions::{SELECT_SUBSCRIPTION, Subscription, SubscriptionRow, statuses_sql};
use crate::tx::{on_tx, write_stmt};
use crate::{Backend, Result, StoreError, StoreTx, Ts};
use muster_core::workflow::SubscriptionStatus;
use muster_core::workflow::product::Block;
use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

/// What [`StoreTx::hold_subscription`] requires of the subscription besides being in sync and
/// unheld.
#[derive(Debug, Clone, Copy)]
pub struct HoldTerms<'a> {
    /// Its status is one of these.
    pub usable: &'a [SubscriptionStatus],
    /// No subscription that uses it is live (neither initial nor terminated).
    pub no_active_users: bool,
    /// Every subscription it depends on is in sync.
    pub no_held_relations: bool,
    /// Its version is this one (optimistic concurrency from the form).
    pub expected_version: Option<i64>,
}

const INSERT_SUBSCRIPTION: &str = "INSERT INTO subscriptions (subscription_id, description, status, product_id, \
    customer_id, insync, start_date, end_date, note, locked_by_process, version, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";
const INSERT_USER_GROUP_BLOCK: &str = "INSERT INTO user_group_blocks (subscription_instance_id, subscription_id, \
    group_name, group_id, offerings) VALUES ($1, $2, $3, $4, $5)";
const INSERT_USER_BLOCK: &str = "INSERT INTO user_blocks (subscription_instance_id, subscription_id, username, age, \
    user_id, directory_user) VALUES ($1, $2, $3, $4, $5, $6)";
const INSERT_GROUP_RELATION: &str =
    "INSERT INTO subscription_relations (in_use_by_id, attribute, depends_on_id) VALUES ($1, 'group', $2)";
const UPSERT_GROUP_RELATION: &str = "INSERT INTO subscription_relations (in_use_by_id, attribute, depends_on_id) \
    VALUES ($1, 'group', $2) ON CONFLICT (in_use_by_id, attribute) DO UPDATE SET depends_on_id = excluded.depends_on_id";
const DELETE_GROUP_RELATION: &str =
    "DELETE FROM subscription_relations WHERE in_use_by_id = $1 AND attribute = 'group'";
const UPDATE_USER_GROUP_BLOCK: &str =
    "UPDATE user_group_blocks SET group_name = $2, group_id = $3, offerings = $4 WHERE subscription_id = $1";
const UPDATE_USER_BLOCK: &str =
    "UPDATE user_blocks SET username = $2, age = $3, user_id = $4, directory_user = $5 WHERE subscription_id = $1";
const UPDATE_SUBSCRIPTION: &str = "UPDATE subscriptions SET description = $2, status = $3, customer_id = $4, \
    insync = $5, start_date = $6, end_date = $7, note = $8, locked_by_process = $9, version = version + 1, \
    updated_at = $10 WHERE subscription_id = $1 AND version = $11";
const LINK_PROCESS: &str = "INSERT INTO processes_subscriptions (process_id, subscription_id, workflow_target, \
    created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (process_id, subscription_id) DO NOTHING";
const RELEASE_SUBSCRIPTIONS: &str = "UPDATE subscriptions SET insync = TRUE, locked_by_process = NULL, \
    version = version + 1, updated_at = $2 WHERE locked_by_process = $1 RETURNING subscription_id";

/// A unique violation of a subscription block (username, user_id, group_id) as
/// [`StoreError::Duplicate`]; other errors are not this function's.
fn unique_ref(e: &sqlx::Error) -> Option<StoreError> {
    [
        ("username", "username"),
        ("user_id", "user_id"),
        ("group_id", "group_id"),
    ]
    .into_iter()
    .find_map(|(column, subject)| StoreError::unique_opt(e, column, subject))
}

impl StoreTx {
    /// Reads a subscription inside this transaction; on PostgreSQL the row stays locked until
    /// the transaction ends (SQLite has one writer anyway).
    pub async fn subscription(&mut self, id: Uuid) -> Result<Option<Subscription>> {
        if let Some(s) = self.subs.get(&id) {
            return Ok(Some(s.clone()));
        }
        let lock = if self.backend() == Backend::Postgres {
            " FOR UPDATE OF s"
        } else {
            ""
        };
        let sql = format!("{SELECT_SUBSCRIPTION} WHERE s.subscription_id = $1{lock}");
        let row = self.fetch_subscription_row(&sql, id).await?;
        let sub = row.map(SubscriptionRow::into_subscription).transpose()?;
        if let Some(s) = &sub {
            self.subs.insert(id, s.clone());
        }
        Ok(sub)
    }

    /// One subscription row by `sql` (`$1` = its id); on SQLite sent with what is held.
    async fn fetch_subscription_row(&mut self, sql: &str, id: Uuid) -> Result<Option<SubscriptionRow>> {
        if let Some(b) = self.batch().await? {
            crate::tx::hold!(b, sql, id);
            let rows = self.send_for_rows().await?;
            return rows
                .first()
                .map(<SubscriptionRow as sqlx::FromRow<_>>::from_row)
                .transpose()
                .map_err(Into::into);
        }
        Ok(on_tx!(self, conn => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned())).bind(id).fetch_optional(&mut *conn).await?
        }))
    }

    /// Whether this transaction knows `s`'s row to be at `s.version` (read or written in it):
    /// on SQLite, whose one writer this transaction holds, nothing else can have changed it,
    /// so a write of it needs no version check and can be held.
    fn known_at_version(&self, s: &Subscription) -> bool {
        self.backend() == Backend::Sqlite
            && self
                .subs
                .get(&s.subscription_id)
                .is_some_and(|c| c.version == s.version)
    }

    /// Remembers `s` as saved at `version` (see `StoreTx::subs`).
    fn remember(&mut self, s: &Subscription, version: i64, now: OffsetDateTime) {
        let mut saved = s.clone();
        saved.version = version;
        saved.updated_at = now;
        self.subs.insert(s.subscription_id, saved);
    }

    pub async fn insert_subscription(&mut self, s: &Subscription) -> Result<()> {
        write_stmt!(
            self,
            hold = true,
            INSERT_SUBSCRIPTION,
            [
                s.subscription_id,
                s.description.as_str(),
                s.status.as_str(),
                s.product_id,
                s.customer_id.as_str(),
                s.insync,
                s.start_date.map(Ts),
                s.end_date.map(Ts),
                s.note.as_deref(),
                s.locked_by_process,
                s.version,
                Ts(s.created_at),
                Ts(s.updated_at)
            ]
        );
        match &s.block {
            Block::UserGroup(bl) => write_stmt!(
                self,
                hold = true,
                INSERT_USER_GROUP_BLOCK,
                [
                    bl.subscription_instance_id,
                    s.subscription_id,
                    bl.group_name.as_deref(),
                    bl.group_id,
                    Json(&bl.offerings)
                ],
                clash = unique_ref
            ),
            Block::User(bl) => {
                write_stmt!(
                    self,
                    hold = true,
                    INSERT_USER_BLOCK,
                    [
                        bl.subscription_instance_id,
                        s.subscription_id,
                        bl.username.as_deref(),
                        bl.age,
                        bl.user_id,
                        bl.directory_user
                    ],
                    clash = unique_ref
                );
                if let Some(g) = bl.group {
                    write_stmt!(self, hold = true, INSERT_GROUP_RELATION, [s.subscription_id, g]);
                }
            }
        }
        self.subs.insert(s.subscription_id, s.clone());
        Ok(())
    }

    /// Writes every field of `s` if the row is still at `s.version`; returns the new version,
    /// or None when the row moved on (or is gone).
    pub async fn save_subscription(&mut self, s: &Subscription, now: OffsetDateTime) -> Result<Option<i64>> {
        // What this transaction knows the row to hold: unchanged parts are not written again.
        let (block_same, group_same) = match (self.subs.get(&s.subscription_id).map(|p| &p.block), &s.block) {
            (Some(Block::UserGroup(a)), Block::UserGroup(b)) => (a == b, true),
            (Some(Block::User(a)), Block::User(b)) => (
                a.username == b.username
                    && a.age == b.age
                    && a.user_id == b.user_id
                    && a.directory_user == b.directory_user,
                a.group == b.group,
            ),
            _ => (false, false),
        };
        // The subscription row first: it carries the version check.
        let held = self.known_at_version(s);
        if self.save_subscription_row(s, now).await?.is_none() {
            return Ok(None);
        }
        match &s.block {
            Block::UserGroup(_) if block_same => {}
            Block::UserGroup(bl) => write_stmt!(
                self,
                hold = held,
                UPDATE_USER_GROUP_BLOCK,
                [
                    s.subscription_id,
                    bl.group_name.as_deref(),
                    bl.group_id,
                    Json(&bl.offerings)
                ],
                clash = unique_ref
            ),
            Block::User(bl) => {
                if !block_same {
                    write_stmt!(
                        self,
                        hold = held,
                        UPDATE_USER_BLOCK,
                        [
                            s.subscription_id,
                            bl.username.as_deref(),
                            bl.age,
                            bl.user_id,
                            bl.directory_user
                        ],
                        clash = unique_ref
                    );
                }
                match bl.group {
                    _ if group_same => {}
                    Some(g) => write_stmt!(self, hold = held, UPSERT_GROUP_RELATION, [s.subscription_id, g]),
                    None => write_stmt!(self, hold = held, DELETE_GROUP_RELATION, [s.subscription_id]),
                }
            }
        }
        self.remember(s, s.version + 1, now);
        Ok(Some(s.version + 1))
    }

    /// Like [`StoreTx::save_subscription`] for changes of the subscription row alone (status,
    /// dates, sync, description): the block is not rewritten.
    pub async fn save_subscription_row(&mut self, s: &Subscription, now: OffsetDateTime) -> Result<Option<i64>> {
        if self.known_at_version(s)
            && let Some(b) = self.batch().await?
        {
            crate::tx::hold!(
                b,
                UPDATE_SUBSCRIPTION,
                s.subscription_id,
                s.description.as_str(),
                s.status.as_str(),
                s.customer_id.as_str(),
                s.insync,
                s.start_date.map(Ts),
                s.end_date.map(Ts),
                s.note.as_deref(),
                s.locked_by_process,
                Ts(now),
                s.version
            );
            self.remember(s, s.version + 1, now);
            return Ok(Some(s.version + 1));
        }
        let n = on_tx!(self, conn => {
            sqlx::query(UPDATE_SUBSCRIPTION)
            .bind(s.subscription_id)
            .bind(&s.description)
            .bind(s.status.as_str())
            .bind(&s.customer_id)
            .bind(s.insync)
            .bind(s.start_date.map(Ts))
            .bind(s.end_date.map(Ts))
            .bind(&s.note)
            .bind(s.locked_by_process)
            .bind(Ts(now))
            .bind(s.version)
            .execute(&mut *conn)
            .await?
            .rows_affected()
        });
        if n != 1 {
            return Ok(None);
        }
        self.remember(s, s.version + 1, now);
        Ok(Some(s.version + 1))
    }

    /// Takes the subscription for process `pid` (one workflow at a time): a conditional
    /// UPDATE that only matches an in-sync, unheld subscription meeting `terms`. False: refused.
    pub async fn hold_subscription(
        &mut self,
        id: Uuid,
        pid: Uuid,
        terms: &HoldTerms<'_>,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let HoldTerms {
            usable,
            no_active_users,
            no_held_relations,
            expected_version,
        } = *terms;
        let users = if no_active_users {
            format!(
                " AND NOT EXISTS (SELECT 1 FROM subscription_relations r JOIN subscriptions u ON u.subscription_id = r.in_use_by_id \
                  WHERE r.depends_on_id = $1 AND u.status NOT IN ({}))",
                statuses_sql(&SubscriptionStatus::NOT_LIVE)
            )
        } else {
            String::new()
        };
        let relations = if no_held_relations {
            " AND NOT EXISTS (SELECT 1 FROM subscription_relations r JOIN subscriptions d ON d.subscription_id = r.depends_on_id \
              WHERE r.in_use_by_id = $1 AND NOT d.insync)"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE subscriptions SET insync = FALSE, locked_by_process = $2, version = version + 1, updated_at = $3 \
             WHERE subscription_id = $1 AND insync AND locked_by_process IS NULL AND status IN ({}) \
             AND ($4 IS NULL OR version = $4){users}{relations}",
            statuses_sql(usable)
        );
        self.subs.remove(&id);
        let n = on_tx!(self, conn => {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .bind(pid)
                .bind(Ts(now))
                .bind(expected_version)
                .execute(&mut *conn)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// Releases the subscriptions process `pid` holds (`resync`, or abort), marking them in
    /// sync; returns their ids.
    pub async fn release_subscriptions(&mut self, pid: Uuid, now: OffsetDateTime) -> Result<Vec<Uuid>> {
        let ids: Vec<Uuid> = if let Some(b) = self.batch().await? {
            crate::tx::hold!(b, RELEASE_SUBSCRIPTIONS, pid, Ts(now));
            self.send_for_rows()
                .await?
                .iter()
                .map(|r| sqlx::Row::try_get(r, 0))
                .collect::<std::result::Result<_, _>>()?
        } else {
            on_tx!(self, conn => {
                sqlx::query_scalar(RELEASE_SUBSCRIPTIONS)
                .bind(pid)
                .bind(Ts(now))
                .fetch_all(&mut *conn)
                .await?
            })
        };
        for id in &ids {
            if let Some(s) = self.subs.get_mut(id) {
                s.insync = true;
                s.locked_by_process = None;
                s.version += 1;
                s.updated_at = now;
            }
        }
        Ok(ids)
    }

    /// Deletes a subscription (an aborted create's orphan). Only `initial`/`provisioning` ones.
    pub async fn delete_unfinished_subscription(&mut self, id: Uuid) -> Result<bool> {
        self.subs.remove(&id);
        Ok(on_tx!(self, conn => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM subscriptions WHERE subscription_id = $1 AND status IN ({})",
                statuses_sql(&SubscriptionStatus::BEFORE_ACTIVE)
            )))
                .bind(id)
                .execute(&mut *conn)
                .await?
                .rows_affected()
        }) == 1)
    }

    /// Whether every subscription `id` depends on is in sync, inside this transaction.
    pub async fn depends_on_insync(&mut self, id: Uuid) -> Result<bool> {
        let held: i64 = on_tx!(self, conn => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM subscription_relations r JOIN subscriptions d ON d.subscription_id = r.depends_on_id \
                 WHERE r.in_use_by_id = $1 AND NOT d.insync",
            )
            .bind(id)
            .fetch_one(&mut *conn)
            .await?
        });
        Ok(held == 0)
    }

    /// The statuses of the subscriptions that use `id`.
    pub async fn in_use_by_statuses(&mut self, id: Uuid) -> Result<Vec<SubscriptionStatus>> {
        let rows: Vec<String> = on_tx!(self, conn => {
            sqlx::query_scalar(
                "SELECT s.status FROM subscription_relations r JOIN subscriptions s ON s.subscription_id = r.in_use_by_id \
                 WHERE r.depends_on_id = $1",
            )
            .bind(id)
            .fetch_all(&mut *conn)
            .await?
        });
        rows.iter()
            .map(|s| {
                SubscriptionStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("subscription status {s:?}")))
            })
            .collect()
    }

    /// The next number of allocator `name` (`user_id`, `group_id`); never handed out twice.
    /// PostgreSQL: a sequence (no lock held until commit). SQLite: a counter row (one writer).
    pub async fn allocate(&mut self, name: &str) -> Result<i64> {
        let sequence = match name {
            "user_id" => "user_id_seq",
            "group_id" => "group_id_seq",
            other => return Err(StoreError::Corrupt(format!("no allocator named {other}"))),
        };
        Ok(match self.conn().await? {
            crate::tx::TxInner::Postgres(t) => {
                sqlx::query_scalar("SELECT nextval($1::regclass)")
                    .bind(sequence)
                    .fetch_one(&mut **t)
                    .await?
            }
            crate::tx::TxInner::Sqlite(t) => {
                // With whatever is held, in one round trip.
                crate::tx::hold!(
                    &mut t.batch,
                    "UPDATE id_allocators SET next_value = next_value + 1 WHERE name = $1 RETURNING next_value - 1",
                    name
                );
                let rows = t.send().await?;
                match rows.first() {
                    Some(row) => sqlx::Row::try_get(row, 0)?,
                    None => return Err(StoreError::Corrupt(format!("no allocator row {name}"))),
                }
            }
        })
    }

    /// Reads a subscription that this transaction depends on but does not change (a User's
    /// group): on PostgreSQL under a share lock, so it cannot be terminated meanwhile while
    /// concurrent readers (other users joining the group) are not held up.
    pub async fn subscription_shared(&mut self, id: Uuid) -> Result<Option<Subscription>> {
        if let Some(s) = self.subs.get(&id) {
            // Already locked for update by this transaction.
            return Ok(Some(s.clone()));
        }
        let lock = if self.backend() == Backend::Postgres {
            " FOR SHARE OF s"
        } else {
            ""
        };
        let sql = format!("{SELECT_SUBSCRIPTION} WHERE s.subscription_id = $1{lock}");
        let row = self.fetch_subscription_row(&sql, id).await?;
        row.map(SubscriptionRow::into_subscription).transpose()
    }

    /// Records that process `pid` works on subscription `sid` (`store_process_subscription`).
    pub async fn link_process_subscription(
        &mut self,
        pid: Uuid,
        sid: Uuid,
        target: &str,
        now: OffsetDateTime,
    ) -> Result<()> {
        write_stmt!(self, hold = true, LINK_PROCESS, [pid, sid, target, Ts(now)]);
        Ok(())
    }
}
