//! Processes: workflow runs, their step log, the queue, claims and leases.
//!
//! The `processes` row is at once the run's record, its queue entry (`run_after`: claimable
//! from then on) and its claim (`lease_owner`, `lease_until`, `attempt`). A worker claims a
//! batch with one conditional UPDATE (PostgreSQL picks rows with `FOR UPDATE SKIP LOCKED`, so
//! workers on many nodes never wait on each other) and bumps `attempt`. Every later write of
//! that worker names the attempt it holds ([`Fence`]): once a lease expired and another worker
//! claimed the process, the first worker's writes match no row and its transaction rolls back.

use crate::bind::sql_names;
use crate::{Backend, Result, Store, StoreError, Ts, on_db};
use muster_core::workflow::{ProcessStatus, StepStatus};
use serde_json::Value;
use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

/// What a worker holds: the process, its attempt and the worker's name.
#[derive(Debug, Clone)]
pub struct Fence {
    pub process_id: Uuid,
    pub attempt: i64,
    pub worker: String,
}

#[derive(Debug, Clone)]
pub struct NewProcess {
    pub process_id: Uuid,
    pub workflow_name: String,
    pub workflow_version: i32,
    pub target: String,
    pub is_task: bool,
    pub created_by: String,
    pub assignee: String,
    pub state: Value,
    pub next_step: String,
    pub now: OffsetDateTime,
    /// Inserted already claimed by this worker until then (attempt 1): the node that starts a
    /// process and has a free slot runs it at once, without a claim round trip. If the node
    /// dies, the lease expires and another worker claims it as any other.
    pub claimed_by: Option<(String, OffsetDateTime)>,
}

impl NewProcess {
    /// The row as inserted, when it was inserted claimed (what a claim would have returned).
    pub fn claimed_row(&self) -> Option<ProcessRow> {
        let (worker, until) = self.claimed_by.clone()?;
        Some(ProcessRow {
            process_id: self.process_id,
            workflow_name: self.workflow_name.clone(),
            workflow_version: self.workflow_version,
            target: self.target.clone(),
            is_task: self.is_task,
            last_status: ProcessStatus::Running.as_str().to_owned(),
            last_step: None,
            next_step: Some(self.next_step.clone()),
            assignee: self.assignee.clone(),
            failed_reason: None,
            traceback: None,
            created_by: self.created_by.clone(),
            started_at: Ts(self.now),
            last_modified_at: Ts(self.now),
            state: Json(self.state.clone()),
            run_after: Some(Ts(self.now)),
            lease_owner: Some(worker),
            lease_until: Some(Ts(until)),
            attempt: 1,
            retries: 0,
            callback_deadline: None,
            note: None,
        })
    }
}

/// A process row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProcessRow {
    pub process_id: Uuid,
    pub workflow_name: String,
    pub workflow_version: i32,
    pub target: String,
    pub is_task: bool,
    pub last_status: String,
    pub last_step: Option<String>,
    pub next_step: Option<String>,
    pub assignee: String,
    pub failed_reason: Option<String>,
    pub traceback: Option<String>,
    pub created_by: String,
    pub started_at: Ts,
    pub last_modified_at: Ts,
    pub state: Json<Value>,
    pub run_after: Option<Ts>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<Ts>,
    pub attempt: i64,
    pub retries: i32,
    pub callback_deadline: Option<Ts>,
    pub note: Option<String>,
}

impl ProcessRow {
    pub fn status(&self) -> Result<ProcessStatus> {
        ProcessStatus::parse(&self.last_status)
            .ok_or_else(|| StoreError::Corrupt(format!("process status {:?}", self.last_status)))
    }
}

pub(crate) const PROCESS_COLUMNS: &str = "process_id, workflow_name, workflow_version, target, is_task, last_status, last_step, \
     next_step, assignee, failed_reason, traceback, created_by, started_at, last_modified_at, state, run_after, \
     lease_owner, lease_until, attempt, retries, callback_deadline, note";

/// A step-log row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StepRow {
    pub step_id: i64,
    pub name: String,
    pub status: String,
    pub state_delta: Json<Value>,
    pub created_by: String,
    pub started_at: Ts,
    pub completed_at: Ts,
    pub attempt: i64,
    pub retries: i32,
}

/// One step's log entry.
#[derive(Debug, Clone)]
pub struct StepLog {
    pub name: String,
    pub status: StepStatus,
    pub state_delta: Value,
    pub created_by: String,
    pub started_at: OffsetDateTime,
    pub completed_at: OffsetDateTime,
    pub retries: i32,
}

/// How a step leaves its process.
#[derive(Debug, Clone)]
pub struct ProcessUpdate {
    pub status: ProcessStatus,
    pub last_step: String,
    pub next_step: Option<String>,
    pub state: Value,
    /// Queued again from then on (None: not queued).
    pub run_after: Option<OffsetDateTime>,
    /// Keep the lease until then (None: release it).
    pub lease_until: Option<OffsetDateTime>,
    pub failed_reason: Option<String>,
    pub traceback: Option<String>,
    pub retries: i32,
    pub assignee: String,
    pub callback_token_hash: Option<String>,
    pub callback_deadline: Option<OffsetDateTime>,
    pub now: OffsetDateTime,
}

pub(crate) fn statuses_sql(statuses: &[ProcessStatus]) -> String {
    sql_names(statuses.iter().map(|s| s.as_str()))
}

impl Store {
    pub async fn process(&self, id: Uuid) -> Result<Option<ProcessRow>> {
        let sql = format!("SELECT {PROCESS_COLUMNS} FROM processes WHERE process_id = $1");
        Ok(on_db!(self, read, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?
        }))
    }

    pub async fn process_steps(&self, id: Uuid) -> Result<Vec<StepRow>> {
        Ok(on_db!(self, read, pool => {
            sqlx::query_as(
                "SELECT step_id, name, status, state_delta, created_by, started_at, completed_at, attempt, retries \
                 FROM process_steps WHERE process_id = $1 ORDER BY step_id",
            )
            .bind(id)
            .fetch_all(pool)
            .await?
        }))
    }

    /// The subscriptions a process works on.
    pub async fn process_subscriptions(&self, id: Uuid) -> Result<Vec<Uuid>> {
        Ok(on_db!(self, read, pool => {
            sqlx::query_scalar("SELECT subscription_id FROM processes_subscriptions WHERE process_id = $1 ORDER BY created_at")
                .bind(id)
                .fetch_all(pool)
                .await?
        }))
    }

    /// Claims up to `limit` queued processes for `worker` until `lease_until`, unless the
    /// engine is paused. Each claim bumps the process's attempt (its fencing token).
    pub async fn claim_processes(
        &self,
        worker: &str,
        limit: i64,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<Vec<ProcessRow>> {
        let pick = "SELECT process_id FROM processes WHERE run_after <= $3 \
             AND (lease_until IS NULL OR lease_until < $3) \
             AND NOT EXISTS (SELECT 1 FROM engine_settings WHERE global_lock) \
             ORDER BY run_after LIMIT $4";
        let sql = match self.backend() {
            Backend::Postgres => format!(
                "UPDATE processes SET lease_owner = $1, lease_until = $2, attempt = attempt + 1, \
                 last_status = 'running', last_modified_at = $3 \
                 WHERE process_id IN ({pick} FOR UPDATE SKIP LOCKED) RETURNING {PROCESS_COLUMNS}"
            ),
            Backend::Sqlite => format!(
                "UPDATE processes SET lease_owner = $1, lease_until = $2, attempt = attempt + 1, \
                 last_status = 'running', last_modified_at = $3 \
                 WHERE process_id IN ({pick}) RETURNING {PROCESS_COLUMNS}"
            ),
        };
        Ok(on_db!(self, write, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(worker)
                .bind(Ts(lease_until))
                .bind(Ts(now))
                .bind(limit)
                .fetch_all(pool)
                .await?
        }))
    }

    /// Extends a held lease (a heartbeat). False: the lease was lost.
    pub async fn extend_lease(&self, fence: &Fence, until: OffsetDateTime) -> Result<bool> {
        let n = on_db!(self, write, pool => {
            sqlx::query("UPDATE processes SET lease_until = $4 WHERE process_id = $1 AND attempt = $2 AND lease_owner = $3")
                .bind(fence.process_id)
                .bind(fence.attempt)
                .bind(&fence.worker)
                .bind(Ts(until))
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// Arms a callback before its step's action runs: the token (hash) and deadline are stored
    /// at once, so an outside system that answers before the step ends is not turned away.
    pub async fn arm_callback(&self, fence: &Fence, token_hash: &str, deadline: OffsetDateTime) -> Result<bool> {
        let n = on_db!(self, write, pool => {
            sqlx::query(
                "UPDATE processes SET callback_token_hash = $4, callback_deadline = $5, callback_early = NULL \
                 WHERE process_id = $1 AND attempt = $2 AND lease_owner = $3",
            )
            .bind(fence.process_id)
            .bind(fence.attempt)
            .bind(&fence.worker)
            .bind(token_hash)
            .bind(Ts(deadline))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Releases a lease without changing anything else (a worker stopping, the engine paused).
    pub async fn release_lease(&self, fence: &Fence) -> Result<bool> {
        let n = on_db!(self, write, pool => {
            sqlx::query("UPDATE processes SET lease_owner = NULL, lease_until = NULL WHERE process_id = $1 AND attempt = $2 AND lease_owner = $3")
                .bind(fence.process_id)
                .bind(fence.attempt)
                .bind(&fence.worker)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// The earliest time a queued process becomes claimable (for the worker's sleep).
    pub async fn next_run_after(&self) -> Result<Option<OffsetDateTime>> {
        let t: Option<Option<Ts>> = on_db!(self, read, pool => {
            sqlx::query_scalar("SELECT MIN(CASE WHEN lease_until IS NULL OR lease_until < run_after THEN run_after ELSE lease_until END) FROM processes WHERE run_after IS NOT NULL")
                .fetch_optional(pool)
                .await?
        });
        Ok(t.flatten().map(|t| t.0))
    }

    /// Processes awaiting a callback whose deadline passed.
    pub async fn expired_callbacks(&self, now: OffsetDateTime, limit: i64) -> Result<Vec<Uuid>> {
        Ok(on_db!(self, read, pool => {
            sqlx::query_scalar(
                "SELECT process_id FROM processes WHERE callback_deadline < $1 AND last_status = 'awaiting_callback' LIMIT $2",
            )
            .bind(Ts(now))
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }

    pub async fn engine_locked(&self) -> Result<bool> {
        Ok(on_db!(self, read, pool => {
            sqlx::query_scalar("SELECT global_lock FROM engine_settings WHERE id = 1").fetch_one(pool).await?
        }))
    }

    pub async fn set_engine_lock(&self, locked: bool, audit: &muster_core::audit::AuditEntry) -> Result<()> {
        on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE engine_settings SET global_lock = $1 WHERE id = 1").bind(locked).execute(&mut *tx).await?;
            crate::audit::insert(&mut *tx, audit).await?;
            crate::commit(tx).await?;
        });
        Ok(())
    }

    /// Processes a worker is running now (an unexpired lease).
    pub async fn running_processes(&self, now: OffsetDateTime) -> Result<i64> {
        Ok(on_db!(self, read, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM processes WHERE last_status = 'running' AND lease_until >= $1")
                .bind(Ts(now))
                .fetch_one(pool)
                .await?
        }))
    }

    /// Deletes finished task processes that started before `before` (`task_clean_up_tasks`).
    pub async fn delete_finished_tasks(&self, before: OffsetDateTime) -> Result<u64> {
        Ok(on_db!(self, write, pool => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM processes WHERE is_task AND last_status IN ({}) AND started_at < $1",
                statuses_sql(&ProcessStatus::FINAL)
            )))
                .bind(Ts(before))
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }

    /// Moves waiting processes to the front of the queue (`task_resume_workflows`).
    pub async fn requeue_waiting(&self, now: OffsetDateTime) -> Result<u64> {
        Ok(on_db!(self, write, pool => {
            sqlx::query("UPDATE processes SET run_after = $1 WHERE last_status = 'waiting' AND run_after > $1")
                .bind(Ts(now))
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }
}
