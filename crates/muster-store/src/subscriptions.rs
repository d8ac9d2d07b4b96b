//! Subscriptions, their typed blocks and their relations.
//!
//! Attributes live in typed columns (`user_blocks.user_id BIGINT UNIQUE`, …) rather than
//! orchestrator-core's all-strings EAV, so the database refuses a second user with the same
//! `user_id` or `username` however the workflows race. Changes are versioned: a save names the
//! version it read and fails when the row moved on.

use crate::bind::sql_names;
use crate::{Result, Store, StoreError, Ts, on_db};
use muster_core::workflow::SubscriptionStatus;
use muster_core::workflow::product::{Block, UserBlock, UserGroupBlock};
use muster_core::workflow::status::ProcessStatus;
use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

/// A subscription with its root block.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub subscription_id: Uuid,
    pub description: String,
    pub status: SubscriptionStatus,
    pub product_id: Uuid,
    pub customer_id: String,
    pub insync: bool,
    pub start_date: Option<OffsetDateTime>,
    pub end_date: Option<OffsetDateTime>,
    pub note: Option<String>,
    /// The process holding the subscription (one workflow at a time).
    pub locked_by_process: Option<Uuid>,
    pub version: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub block: Block,
}

#[derive(sqlx::FromRow)]
pub(crate) struct SubscriptionRow {
    subscription_id: Uuid,
    description: String,
    status: String,
    product_id: Uuid,
    customer_id: String,
    insync: bool,
    start_date: Option<Ts>,
    end_date: Option<Ts>,
    note: Option<String>,
    locked_by_process: Option<Uuid>,
    version: i64,
    created_at: Ts,
    updated_at: Ts,
    ug_instance: Option<Uuid>,
    group_name: Option<String>,
    group_id: Option<i64>,
    offerings: Option<Json<Vec<Uuid>>>,
    u_instance: Option<Uuid>,
    username: Option<String>,
    age: Option<i32>,
    user_id: Option<i64>,
    directory_user: Option<Uuid>,
    group_subscription: Option<Uuid>,
}

impl SubscriptionRow {
    pub(crate) fn into_subscription(self) -> Result<Subscription> {
        let status = SubscriptionStatus::parse(&self.status)
            .ok_or_else(|| StoreError::Corrupt(format!("subscription status {:?}", self.status)))?;
        let block = match (self.ug_instance, self.u_instance) {
            (Some(id), None) => Block::UserGroup(UserGroupBlock {
                subscription_instance_id: id,
                group_name: self.group_name,
                group_id: self.group_id,
                offerings: self.offerings.map(|j| j.0).unwrap_or_default(),
            }),
            (None, Some(id)) => Block::User(UserBlock {
                subscription_instance_id: id,
                username: self.username,
                age: self.age,
                user_id: self.user_id,
                directory_user: self.directory_user,
                group: self.group_subscription,
            }),
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "subscription {} has no single root block",
                    self.subscription_id
                )));
            }
        };
        Ok(Subscription {
            subscription_id: self.subscription_id,
            description: self.description,
            status,
            product_id: self.product_id,
            customer_id: self.customer_id,
            insync: self.insync,
            start_date: self.start_date.map(|t| t.0),
            end_date: self.end_date.map(|t| t.0),
            note: self.note,
            locked_by_process: self.locked_by_process,
            version: self.version,
            created_at: self.created_at.0,
            updated_at: self.updated_at.0,
            block,
        })
    }
}

pub(crate) const SELECT_SUBSCRIPTION: &str = "SELECT s.subscription_id, s.description, s.status, s.product_id, s.customer_id, \
     s.insync, s.start_date, s.end_date, s.note, s.locked_by_process, s.version, s.created_at, s.updated_at, \
     g.subscription_instance_id AS ug_instance, g.group_name, g.group_id, g.offerings, \
     u.subscription_instance_id AS u_instance, u.username, u.age, u.user_id, u.directory_user, \
     r.depends_on_id AS group_subscription \
     FROM subscriptions s \
     LEFT JOIN user_group_blocks g ON g.subscription_id = s.subscription_id \
     LEFT JOIN user_blocks u ON u.subscription_id = s.subscription_id \
     LEFT JOIN subscription_relations r ON r.in_use_by_id = s.subscription_id AND r.attribute = 'group'";

pub(crate) fn statuses_sql(statuses: &[SubscriptionStatus]) -> String {
    sql_names(statuses.iter().map(|s| s.as_str()))
}

impl Store {
    pub async fn subscription(&self, id: Uuid) -> Result<Option<Subscription>> {
        let sql = format!("{SELECT_SUBSCRIPTION} WHERE s.subscription_id = $1");
        let row: Option<SubscriptionRow> = on_db!(self, read, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?
        });
        row.map(SubscriptionRow::into_subscription).transpose()
    }

    /// The subscriptions that use `id` (`in_use_by`), with their statuses.
    pub async fn in_use_by(&self, id: Uuid) -> Result<Vec<(Uuid, SubscriptionStatus)>> {
        let rows: Vec<(Uuid, String)> = on_db!(self, read, pool => {
            sqlx::query_as(
                "SELECT s.subscription_id, s.status FROM subscription_relations r \
                 JOIN subscriptions s ON s.subscription_id = r.in_use_by_id WHERE r.depends_on_id = $1 ORDER BY s.created_at",
            )
            .bind(id)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(id, s)| {
                SubscriptionStatus::parse(&s)
                    .map(|st| (id, st))
                    .ok_or_else(|| StoreError::Corrupt(format!("subscription status {s:?}")))
            })
            .collect()
    }

    /// Whether every subscription `id` depends on is in sync (no workflow holds them).
    pub async fn depends_on_insync(&self, id: Uuid) -> Result<bool> {
        let held: i64 = on_db!(self, read, pool => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM subscription_relations r JOIN subscriptions d ON d.subscription_id = r.depends_on_id \
                 WHERE r.in_use_by_id = $1 AND NOT d.insync",
            )
            .bind(id)
            .fetch_one(pool)
            .await?
        });
        Ok(held == 0)
    }

    /// Whether a User subscription (of any status) holds `username`.
    pub async fn username_held(&self, username: &str) -> Result<bool> {
        // `user_blocks_username_lower` answers this from the index.
        let held: bool = on_db!(self, read, pool => {
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM user_blocks WHERE LOWER(username) = LOWER($1))")
                .bind(username)
                .fetch_one(pool)
                .await?
        });
        Ok(held)
    }

    /// Subscriptions of `product_type` in `status`: (id, description), for dropdowns.
    pub async fn subscriptions_of_type(
        &self,
        product_type: &str,
        status: SubscriptionStatus,
    ) -> Result<Vec<(Uuid, String)>> {
        Ok(on_db!(self, read, pool => {
            sqlx::query_as(
                // By product, then status: the index on (product_id, status) gives just the rows
                // wanted (by status alone, every active User would be read to find the groups).
                "SELECT s.subscription_id, s.description FROM subscriptions s \
                 WHERE s.product_id IN (SELECT product_id FROM products WHERE product_type = $1) AND s.status = $2 \
                 ORDER BY s.description, s.subscription_id",
            )
            .bind(product_type)
            .bind(status.as_str())
            .fetch_all(pool)
            .await?
        }))
    }

    /// Ids of subscriptions in `status` that no workflow holds, oldest first.
    pub async fn subscription_ids_in(&self, status: SubscriptionStatus, limit: i64) -> Result<Vec<Uuid>> {
        Ok(on_db!(self, read, pool => {
            sqlx::query_scalar(
                "SELECT subscription_id FROM subscriptions WHERE status = $1 AND insync ORDER BY created_at LIMIT $2",
            )
            .bind(status.as_str())
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }

    /// `PUT /set_in_sync`: marks the subscription in sync unless a process that is neither
    /// completed nor aborted holds it. False when one does (or the subscription is unknown).
    pub async fn set_in_sync(&self, id: Uuid, audit: &muster_core::audit::AuditEntry) -> Result<bool> {
        Ok(on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE subscriptions SET insync = TRUE, locked_by_process = NULL, version = version + 1, updated_at = $2 \
                 WHERE subscription_id = $1 AND (locked_by_process IS NULL OR EXISTS ( \
                   SELECT 1 FROM processes p WHERE p.process_id = subscriptions.locked_by_process \
                   AND p.last_status IN ({})))",
                sql_names(ProcessStatus::FINAL.map(ProcessStatus::as_str))
            )))
            .bind(id)
            .bind(Ts(audit.at))
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

    /// Deletes subscription `id` if it is `initial` or `terminated`, no other subscription
    /// depends on it and no unfinished process holds it (a lock left by a finished process,
    /// or by one since deleted, holds nothing; the rule is
    /// `muster_core::workflow::lifecycle::delete_blocked`; this one conditional statement
    /// enforces it against concurrent changes). Its blocks, its own relations and its process
    /// links go with it; the processes keep their history. Whether it was deleted.
    pub async fn delete_subscription(&self, id: Uuid, audit: &muster_core::audit::AuditEntry) -> Result<bool> {
        Ok(on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM subscriptions WHERE subscription_id = $1 \
                 AND status IN ({}) \
                 AND NOT EXISTS (SELECT 1 FROM subscription_relations r WHERE r.depends_on_id = $1) \
                 AND NOT EXISTS (SELECT 1 FROM processes p WHERE p.process_id = subscriptions.locked_by_process \
                   AND p.last_status NOT IN ({}))",
                statuses_sql(&SubscriptionStatus::NOT_LIVE),
                sql_names(ProcessStatus::FINAL.map(ProcessStatus::as_str))
            )))
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 1 {
                crate::audit::insert(&mut *tx, audit).await?;
                crate::commit(tx).await?;
            } else {
                tx.rollback().await?;
            }
            n == 1
        }))
    }
}
