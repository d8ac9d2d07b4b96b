//! Processes written inside a transaction: started, read locked, their steps finished (fenced
//! by the attempt a worker holds: a worker whose lease was lost commits nothing) and logged,
//! moved between statuses, and callbacks that came early kept for their step.

use crate::bind::{self, Bind};
use crate::processes::{Fence, NewProcess, PROCESS_COLUMNS, ProcessRow, ProcessUpdate, StepLog, statuses_sql};
use crate::sqlite_batch::BatchBinder;
use crate::tx::{on_tx, write_stmt};
use crate::{Backend, Result, StoreError, StoreTx, Ts};
use muster_core::workflow::ProcessStatus;
use serde_json::Value;
use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

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
