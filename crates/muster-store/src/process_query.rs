//! Listing processes: filters, sort keys and pages, and the counts by status.

use crate::bind::{PushValue, SqlDb};
use crate::processes::{PROCESS_COLUMNS, ProcessRow};
use crate::{Result, Store, Ts, on_db};
use muster_core::workflow::ProcessStatus;
use time::OffsetDateTime;
use uuid::Uuid;

/// Order and filters of [`Store::list_processes`].
#[derive(Debug, Clone, Default)]
pub struct ProcessQuery {
    pub statuses: Vec<ProcessStatus>,
    pub workflow_names: Vec<String>,
    pub targets: Vec<String>,
    pub subscription_id: Option<Uuid>,
    pub created_by: Option<String>,
    pub is_task: Option<bool>,
    pub started_after: Option<OffsetDateTime>,
    pub started_before: Option<OffsetDateTime>,
    pub sort: Vec<(ProcessSort, bool)>,
    pub offset: i64,
    pub limit: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessSort {
    Started,
    Modified,
    Status,
    Workflow,
    Creator,
    Assignee,
}

impl ProcessSort {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "started" | "started_at" => Self::Started,
            "modified" | "last_modified_at" => Self::Modified,
            "status" | "last_status" => Self::Status,
            "workflow" | "workflow_name" => Self::Workflow,
            "creator" | "created_by" => Self::Creator,
            "assignee" => Self::Assignee,
            _ => return None,
        })
    }

    fn column(self) -> &'static str {
        match self {
            Self::Started => "started_at",
            Self::Modified => "last_modified_at",
            Self::Status => "last_status",
            Self::Workflow => "workflow_name",
            Self::Creator => "created_by",
            Self::Assignee => "assignee",
        }
    }
}

fn push_process_filters<DB: SqlDb>(qb: &mut sqlx::QueryBuilder<DB>, q: &ProcessQuery) {
    qb.push(" WHERE 1 = 1");
    if !q.statuses.is_empty() {
        qb.push(" AND last_status IN (");
        qb.push_list(q.statuses.iter().map(|s| s.as_str()));
        qb.push(")");
    }
    if !q.workflow_names.is_empty() {
        qb.push(" AND workflow_name IN (");
        qb.push_list(q.workflow_names.iter());
        qb.push(")");
    }
    if !q.targets.is_empty() {
        qb.push(" AND target IN (");
        qb.push_list(q.targets.iter());
        qb.push(")");
    }
    if let Some(sid) = q.subscription_id {
        qb.push(" AND process_id IN (SELECT process_id FROM processes_subscriptions WHERE subscription_id = ")
            .push_value(sid)
            .push(")");
    }
    if let Some(c) = &q.created_by {
        qb.push(" AND created_by = ").push_value(c.clone());
    }
    if let Some(t) = q.is_task {
        qb.push(" AND is_task = ").push_value(t);
    }
    if let Some(t) = q.started_after {
        qb.push(" AND started_at >= ").push_value(Ts(t));
    }
    if let Some(t) = q.started_before {
        qb.push(" AND started_at < ").push_value(Ts(t));
    }
}

impl Store {
    pub async fn list_processes(&self, q: &ProcessQuery) -> Result<(Vec<ProcessRow>, i64)> {
        Ok(on_db!(self, read, pool => {
            let mut qb = sqlx::QueryBuilder::new(format!("SELECT {PROCESS_COLUMNS} FROM processes"));
            push_process_filters(&mut qb, q);
            qb.push(" ORDER BY ");
            for (col, desc) in &q.sort {
                qb.push(col.column()).push(if *desc { " DESC, " } else { " ASC, " });
            }
            // The unique last key runs the same way as the key before it, so that one index,
            // (is_task, started_at, process_id), read backwards gives the newest first.
            let last_desc = q.sort.last().is_some_and(|(_, desc)| *desc);
            qb.push(if last_desc { "process_id DESC" } else { "process_id ASC" });
            qb.push(" LIMIT ").push_bind(q.limit).push(" OFFSET ").push_bind(q.offset);
            let rows: Vec<ProcessRow> = qb.build_query_as().fetch_all(pool).await?;
            let mut cq = sqlx::QueryBuilder::new("SELECT COUNT(*) FROM processes");
            push_process_filters(&mut cq, q);
            let total: i64 = cq.build_query_scalar().fetch_one(pool).await?;
            (rows, total)
        }))
    }

    /// (status, is_task, count) over all processes.
    pub async fn process_status_counts(&self) -> Result<Vec<(String, bool, i64)>> {
        Ok(on_db!(self, read, pool => {
            sqlx::query_as("SELECT last_status, is_task, COUNT(*) FROM processes GROUP BY last_status, is_task")
                .fetch_all(pool)
                .await?
        }))
    }
}
