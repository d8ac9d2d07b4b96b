//! Processes: workflow runs, their step log, the queue, claims and leases.
//!
//! The `processes` row is at once the run's record, its queue entry (`run_after`: claimable
//! from then on) and its claim (`lease_owner`, `lease_until`, `attempt`). A worker claims a
//! batch with one conditional UPDATE (PostgreSQL picks rows with `FOR UPDATE SKIP LOCKED`, so
//! workers on many nodes never wait on each other) and bumps `attempt`. Every later write of
//! that worker names the attempt it holds ([`Fence`]): once a lease expired and another worker
//! claimed the process, the first worker's writes match no row and its transaction rolls back.

use crate::bind::{self, Bind, PushValue, SqlDb, sql_names};
use crate::sqlite_batch::BatchBinder;
use crate::tx::{on_tx, write_stmt};
use crate::{Backend, Result, Store, StoreError, StoreTx, Ts, on_db};
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

const PROCESS_COLUMNS: &str = "process_id, workflow_name, workflow_version, target, is_task, last_status, last_step, \
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

fn statuses_sql(statuses: &[ProcessStatus]) -> String {
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

impl StoreTx {
    pub async fn insert_process(&mut self, p: &NewProcess) -> Result<()> {
        let (status, owner, until, attempt) = match &p.claimed_by {
            Some((worker, until)) => (ProcessStatus::Running, Some(worker.as_str()), Some(Ts(*until)), 1i64),
            None => (ProcessStatus::Created, None, None, 0),
        };
        write_stmt!(
            self,
            hold = true,
            INSERT_PROCESS,
            [
                p.process_id,
                p.workflow_name.as_str(),
                p.workflow_version,
                p.target.as_str(),
                p.is_task,
                status.as_str(),
                p.next_step.as_str(),
                p.assignee.as_str(),
                p.created_by.as_str(),
                Ts(p.now),
                Json(&p.state),
                owner,
                until,
                attempt
            ]
        );
        Ok(())
    }

    /// Reads a process inside this transaction, locking its row on PostgreSQL.
    pub async fn process(&mut self, id: Uuid) -> Result<Option<ProcessRow>> {
        let lock = if self.backend() == Backend::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        let sql = format!("SELECT {PROCESS_COLUMNS} FROM processes WHERE process_id = $1{lock}");
        Ok(on_tx!(self, conn => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&mut *conn).await?
        }))
    }

    /// The callback token hash of a process (set while a callback step runs or waits).
    pub async fn callback_token_hash(&mut self, id: Uuid) -> Result<Option<String>> {
        let h: Option<Option<String>> = on_tx!(self, conn => {
            sqlx::query_scalar("SELECT callback_token_hash FROM processes WHERE process_id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
        });
        Ok(h.flatten())
    }

    /// Keeps a callback that arrived while its step is still running; false if one is kept
    /// already or the process is not running.
    pub async fn keep_early_callback(&mut self, id: Uuid, data: &Value) -> Result<bool> {
        let n = on_tx!(self, conn => {
            sqlx::query(
                "UPDATE processes SET callback_early = $2 WHERE process_id = $1 AND last_status = 'running' AND callback_early IS NULL",
            )
            .bind(id)
            .bind(Json(data))
            .execute(&mut *conn)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// The callback that arrived while the step ran, if any (the row is locked on PostgreSQL,
    /// so a callback arriving now waits and then finds the step's outcome).
    pub async fn early_callback(&mut self, id: Uuid) -> Result<Option<Value>> {
        let lock = if self.backend() == Backend::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        let sql = format!("SELECT callback_early FROM processes WHERE process_id = $1{lock}");
        let v: Option<Option<Json<Value>>> = on_tx!(self, conn => {
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&mut *conn).await?
        });
        Ok(v.flatten().map(|j| j.0))
    }

    /// Ends a step: writes its log row and moves the process on, if `fence` still holds the
    /// process. False: the lease was lost (another worker owns the process now) and the
    /// caller must roll back.
    pub async fn finish_step(&mut self, fence: &Fence, log: &StepLog, up: &ProcessUpdate) -> Result<bool> {
        if !self.finish_step_now(fence, up).await? {
            return Ok(false);
        }
        self.log_step(fence.process_id, fence.attempt, log).await?;
        Ok(true)
    }

    /// Like [`StoreTx::finish_step`], but the process update waits until commit (a later step
    /// of the same transaction replaces it): one fenced UPDATE per transaction, not per step.
    /// The commit fails with [`crate::StoreError::Fenced`] if the lease was lost.
    pub async fn stage_step(&mut self, fence: &Fence, log: &StepLog, up: &ProcessUpdate) -> Result<()> {
        self.staged = Some((fence.clone(), up.clone()));
        self.log_step(fence.process_id, fence.attempt, log).await
    }

    /// SQLite: holds the fenced update of the staged step and its lease check (see
    /// `sqlite_tx::LEASE_CHECK`) for the commit's round trip: a worker that lost its lease
    /// commits nothing.
    pub(crate) async fn hold_fenced_step(&mut self, fence: &Fence, up: &ProcessUpdate) -> Result<()> {
        let Some(b) = self.batch().await? else {
            return Err(StoreError::Corrupt("a fenced step held on PostgreSQL".into()));
        };
        b.push(FINISH_STEP);
        BatchBinder(b, Ok(())).bind_all(finish_step_values(fence, up)).done()?;
        // VALUES, not SELECT: an INSERT … SELECT into a view with a trigger goes through a
        // temporary table, one more b-tree built and freed per commit.
        b.push("INSERT INTO lease_check (ok) VALUES (changes())");
        Ok(())
    }

    pub(crate) async fn finish_step_now(&mut self, fence: &Fence, up: &ProcessUpdate) -> Result<bool> {
        let n = on_tx!(self, conn => {
            sqlx::query(FINISH_STEP).bind_all(finish_step_values(fence, up))
            .execute(&mut *conn)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Logs a step (inserted at commit, with the other rows held).
    pub async fn log_step(&mut self, pid: Uuid, attempt: i64, log: &StepLog) -> Result<()> {
        self.steps.push((pid, attempt, log.clone()));
        Ok(())
    }

    /// Moves a process out of one of `from` (and not held by a live lease) to `to`, with a new
    /// state and next step, queued from `run_after` (None: not queued). False: refused.
    #[allow(clippy::too_many_arguments)]
    pub async fn move_process(
        &mut self,
        id: Uuid,
        from: &[ProcessStatus],
        to: ProcessStatus,
        state: &Value,
        next_step: Option<&str>,
        run_after: Option<OffsetDateTime>,
        failed_reason: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let sql = format!(
            "UPDATE processes SET last_status = $2, state = $3, next_step = $4, run_after = $5, failed_reason = $6, \
             lease_owner = NULL, lease_until = NULL, callback_token_hash = NULL, callback_deadline = NULL, callback_early = NULL, \
             retries = CASE WHEN $2 = 'resumed' THEN 0 ELSE retries END, last_modified_at = $7 \
             WHERE process_id = $1 AND last_status IN ({}) AND (lease_until IS NULL OR lease_until < $7)",
            statuses_sql(from)
        );
        let n = on_tx!(self, conn => {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .bind(to.as_str())
                .bind(Json(state))
                .bind(next_step)
                .bind(run_after.map(Ts))
                .bind(failed_reason)
                .bind(Ts(now))
                .execute(&mut *conn)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }
}

/// Placeholders in column order; `$10`, the time of the start, is the row's `started_at`,
/// `last_modified_at` and `run_after` alike.
const INSERT_PROCESS: &str = "INSERT INTO processes (process_id, workflow_name, workflow_version, target, is_task, \
    last_status, next_step, assignee, created_by, started_at, last_modified_at, state, run_after, lease_owner, \
    lease_until, attempt) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $10, $12, $13, $14)";

const FINISH_STEP: &str = "UPDATE processes SET last_status = $4, last_step = $5, next_step = $6, state = $7, \
    run_after = $8, lease_owner = CASE WHEN $9 IS NULL THEN NULL ELSE lease_owner END, lease_until = $9, \
    failed_reason = $10, traceback = $11, retries = $12, assignee = $13, callback_token_hash = $14, \
    callback_deadline = $15, last_modified_at = $16, callback_early = NULL \
    WHERE process_id = $1 AND attempt = $2 AND lease_owner = $3";

/// [`FINISH_STEP`]'s arguments, in the order of its placeholders.
fn finish_step_values<'a>(fence: &'a Fence, up: &'a ProcessUpdate) -> [bind::Value<'a>; 16] {
    [
        bind::Value::Uuid(Some(fence.process_id)),
        bind::Value::Int(Some(fence.attempt)),
        bind::Value::Text(Some(fence.worker.as_str())),
        bind::Value::Text(Some(up.status.as_str())),
        bind::Value::Text(Some(up.last_step.as_str())),
        bind::Value::Text(up.next_step.as_deref()),
        bind::Value::Json(&up.state),
        bind::Value::Time(up.run_after.map(Ts)),
        bind::Value::Time(up.lease_until.map(Ts)),
        bind::Value::Text(up.failed_reason.as_deref()),
        bind::Value::Text(up.traceback.as_deref()),
        bind::Value::Int(Some(i64::from(up.retries))),
        bind::Value::Text(Some(up.assignee.as_str())),
        bind::Value::Text(up.callback_token_hash.as_deref()),
        bind::Value::Time(up.callback_deadline.map(Ts)),
        bind::Value::Time(Some(Ts(up.now))),
    ]
}
