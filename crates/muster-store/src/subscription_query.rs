//! Listing subscriptions: filters, sort keys and pages.

use crate::bind::{PushValue, SqlDb, contains_pattern};
use crate::{Result, Store, Ts, on_db};
use muster_core::workflow::SubscriptionStatus;
use uuid::Uuid;

/// A row of the subscription list (no block).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SubscriptionListRow {
    pub subscription_id: Uuid,
    pub description: String,
    pub status: String,
    pub product_id: Uuid,
    pub customer_id: String,
    pub insync: bool,
    pub start_date: Option<Ts>,
    pub end_date: Option<Ts>,
    pub note: Option<String>,
    pub version: i64,
}

/// Columns the subscription list may be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionSort {
    StartDate,
    EndDate,
    Description,
    Status,
    Product,
    Customer,
    Created,
}

impl SubscriptionSort {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "start_date" => Self::StartDate,
            "end_date" => Self::EndDate,
            "description" => Self::Description,
            "status" => Self::Status,
            "product" | "product_name" => Self::Product,
            "customer_id" => Self::Customer,
            "created_at" => Self::Created,
            _ => return None,
        })
    }

    fn column(self) -> &'static str {
        match self {
            Self::StartDate => "s.start_date",
            Self::EndDate => "s.end_date",
            Self::Description => "s.description",
            Self::Status => "s.status",
            Self::Product => "p.name",
            Self::Customer => "s.customer_id",
            Self::Created => "s.created_at",
        }
    }
}

/// Filters, order and page of [`Store::list_subscriptions`].
#[derive(Debug, Clone, Default)]
pub struct SubscriptionQuery {
    pub product_ids: Vec<Uuid>,
    pub product_types: Vec<String>,
    pub statuses: Vec<SubscriptionStatus>,
    pub insync: Option<bool>,
    pub customer_id: Option<String>,
    /// Case-insensitive substring of the description.
    pub text: Option<String>,
    /// Only the User subscriptions of this directory user.
    pub directory_user: Option<Uuid>,
    pub sort: Vec<(SubscriptionSort, bool)>,
    pub offset: i64,
    pub limit: i64,
}

fn push_subscription_filters<DB: SqlDb>(qb: &mut sqlx::QueryBuilder<DB>, q: &SubscriptionQuery) {
    qb.push(" WHERE 1 = 1");
    if let Some(u) = q.directory_user {
        qb.push(" AND s.subscription_id IN (SELECT subscription_id FROM user_blocks WHERE directory_user = ")
            .push_value(u)
            .push(")");
    }
    if !q.product_ids.is_empty() {
        qb.push(" AND s.product_id IN (");
        qb.push_list(q.product_ids.iter().copied());
        qb.push(")");
    }
    if !q.product_types.is_empty() {
        qb.push(" AND p.product_type IN (");
        qb.push_list(q.product_types.iter());
        qb.push(")");
    }
    if !q.statuses.is_empty() {
        qb.push(" AND s.status IN (");
        qb.push_list(q.statuses.iter().map(|s| s.as_str()));
        qb.push(")");
    }
    if let Some(v) = q.insync {
        qb.push(" AND s.insync = ").push_value(v);
    }
    if let Some(c) = &q.customer_id {
        qb.push(" AND s.customer_id = ").push_value(c.clone());
    }
    if let Some(t) = &q.text {
        let pattern = contains_pattern(t);
        qb.push(" AND LOWER(s.description) LIKE ")
            .push_value(pattern)
            .push(" ESCAPE '\\'");
    }
}

impl Store {
    /// Subscriptions matching `q`, and how many match in all.
    pub async fn list_subscriptions(&self, q: &SubscriptionQuery) -> Result<(Vec<SubscriptionListRow>, i64)> {
        Ok(on_db!(self, read, pool => {
            let mut qb = sqlx::QueryBuilder::new(
                "SELECT s.subscription_id, s.description, s.status, s.product_id, s.customer_id, s.insync, \
                 s.start_date, s.end_date, s.note, s.version FROM subscriptions s JOIN products p ON p.product_id = s.product_id",
            );
            push_subscription_filters(&mut qb, q);
            qb.push(" ORDER BY ");
            for (col, desc) in &q.sort {
                qb.push(col.column()).push(if *desc { " DESC, " } else { " ASC, " });
            }
            qb.push("s.subscription_id ASC LIMIT ").push_bind(q.limit).push(" OFFSET ").push_bind(q.offset);
            let rows: Vec<SubscriptionListRow> = qb.build_query_as().fetch_all(pool).await?;
            let mut cq = sqlx::QueryBuilder::new("SELECT COUNT(*) FROM subscriptions s JOIN products p ON p.product_id = s.product_id");
            push_subscription_filters(&mut cq, q);
            let total: i64 = cq.build_query_scalar().fetch_one(pool).await?;
            (rows, total)
        }))
    }
}
