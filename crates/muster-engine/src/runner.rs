//! Running a claimed process: its steps (in `steps`), its lease heartbeat, and what happens
//! when a step panics or the database fails under it.
//!
//! Every step commits its writes, its log row and its process update together, fenced by the
//! claim's attempt: a runner whose lease was taken over commits nothing more.

mod steps;

use crate::engine::Engine;
use muster_core::audit::{Event, kinds, streams};
use muster_core::clock;
use muster_core::workflow::{ProcessStatus, StepStatus};
use muster_store::{Fence, ProcessRow, ProcessUpdate, StepLog, StoreTx};
use serde_json::json;
use std::time::Duration;
use steps::run_steps;
use tracing::warn;

fn later(now: time::OffsetDateTime, d: Duration) -> time::OffsetDateTime {
    now + time::Duration::try_from(d).unwrap_or(time::Duration::HOUR)
}

/// Stops the lease heartbeat however the run ends (a panic included).
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `row`'s steps until the process stops (done, suspended, waiting, failed, lost lease,
/// or `stop`: the worker shutting down, which ends the run at the next step boundary).
pub(crate) async fn run<D: Send + Sync + 'static>(
    engine: &Engine<D>,
    row: ProcessRow,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let pid = row.process_id;
    let fence = Fence {
        process_id: pid,
        attempt: row.attempt,
        worker: engine.inner.config.worker_name.clone(),
    };
    let heartbeat = Heartbeat(spawn_heartbeat(engine, fence.clone()));
    // The steps run in a task of their own so that a panicking step fails its process instead
    // of leaving it claimed.
    let task = {
        let (engine, row, fence) = (engine.clone(), row.clone(), fence.clone());
        tokio::spawn(async move { run_through_outages(&engine, row, &fence, &stop).await })
    };
    match task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(process_id = %pid, error = %e, "process run stopped"),
        Err(e) if e.is_panic() => {
            warn!(process_id = %pid, "a step panicked; the process fails");
            let reason = "a step panicked (a bug in the workflow); resume retries it";
            if let Err(e) = fail_definition(engine, &row, &fence, reason).await {
                warn!(process_id = %pid, error = %e, "recording the panic failed");
            }
        }
        Err(_) => {}
    }
    drop(heartbeat);
}

fn spawn_heartbeat<D: Send + Sync + 'static>(engine: &Engine<D>, fence: Fence) -> tokio::task::JoinHandle<()> {
    let store = engine.store().clone();
    let lease = engine.inner.config.lease;
    tokio::spawn(async move {
        let every = lease / 3;
        loop {
            tokio::time::sleep(every).await;
            let until = later(clock::now(), lease);
            match store.extend_lease(&fence, until).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => warn!(error = %e, "lease heartbeat failed"),
            }
        }
    })
}

#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("lease lost")]
    LeaseLost,
    #[error("{0}")]
    Store(#[from] muster_store::StoreError),
    /// A step failed because the database did (see `StepError::transient`).
    #[error("{0}")]
    Outage(String),
    #[error("{0}")]
    Definition(String),
}

impl RunError {
    /// The database failed (unreachable, full, a commit's outcome lost): the step may succeed
    /// when it is back.
    fn is_outage(&self) -> bool {
        match self {
            RunError::Store(e) => e.is_transient(),
            RunError::Outage(_) => true,
            _ => false,
        }
    }
}

/// The first wait before a step that failed on the database runs again, and the longest.
const OUTAGE_FIRST_WAIT: Duration = Duration::from_millis(100);
const OUTAGE_MAX_WAIT: Duration = Duration::from_secs(5);

/// Runs the process's steps, and when the database fails under them (a lost connection, a
/// full disk), keeps the lease (its heartbeat goes on) and runs them again once the database
/// answers, with back-off, instead of abandoning the process until its lease expires.
/// Nothing is lost or done twice: what did not commit is re-run from the last committed step,
/// read again from the database (a commit whose outcome was unknown may have happened).
async fn run_through_outages<D: Send + Sync + 'static>(
    engine: &Engine<D>,
    mut row: ProcessRow,
    fence: &Fence,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Result<(), RunError> {
    let mut wait = OUTAGE_FIRST_WAIT;
    loop {
        let err = match run_steps(engine, &row, fence, stop).await {
            Err(e) if e.is_outage() => e,
            other => return other,
        };
        warn!(process_id = %fence.process_id, error = %err, "the database failed under a step; it runs again when the database is back");
        // Read again where the process stands, waiting out the outage.
        row = loop {
            let mut stopping = stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stopping.wait_for(|s| *s) => return Ok(()),
            }
            wait = (wait * 2).min(OUTAGE_MAX_WAIT);
            match engine.store().process(fence.process_id).await {
                Ok(Some(r)) => break r,
                Ok(None) => return Ok(()),
                Err(e) if e.is_transient() => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let still_ours = row.attempt == fence.attempt
            && row.lease_owner.as_deref() == Some(fence.worker.as_str())
            && row.status().is_ok_and(|s| s == ProcessStatus::Running);
        if !still_ours {
            // Another worker took it over (the outage outlasted the lease), or the step that
            // seemed lost did commit and ended the run.
            return Ok(());
        }
    }
}

/// Records a step in `tx`: its log row, the fenced process update and the process event.
async fn record(
    tx: &mut StoreTx,
    fence: &Fence,
    log: &StepLog,
    up: &ProcessUpdate,
    workflow_name: &str,
) -> Result<(), RunError> {
    // The fenced process update is staged: it runs once, when the transaction commits.
    tx.stage_step(fence, log, up).await?;
    tx.event(
        &Event {
            stream: streams::PROCESSES,
            kind: kinds::PROCESS_UPDATED,
            subject: Some(fence.process_id.to_string()),
            data: json!({
                "process_id": fence.process_id,
                "workflow_name": workflow_name,
                "last_status": up.status.as_str(),
                "last_step": log.name,
                "step_status": log.status.as_str(),
            }),
        },
        up.now,
        None,
    )
    .await?;
    Ok(())
}

async fn commit_tx<D: Send + Sync + 'static>(engine: &Engine<D>, tx: StoreTx) -> Result<(), RunError> {
    match tx.commit().await {
        Ok(()) => {}
        Err(muster_store::StoreError::Fenced) => return Err(RunError::LeaseLost),
        Err(e) => return Err(e.into()),
    }
    engine.events_written();
    Ok(())
}

async fn fail_definition<D: Send + Sync + 'static>(
    engine: &Engine<D>,
    row: &ProcessRow,
    fence: &Fence,
    reason: &str,
) -> Result<(), RunError> {
    let now = clock::now();
    let step = row.next_step.clone().unwrap_or_default();
    let up = ProcessUpdate {
        status: ProcessStatus::Failed,
        last_step: step.clone(),
        next_step: row.next_step.clone(),
        state: row.state.0.clone(),
        run_after: None,
        lease_until: None,
        failed_reason: Some(reason.to_owned()),
        traceback: None,
        retries: row.retries,
        assignee: "SYSTEM".into(),
        callback_token_hash: None,
        callback_deadline: None,
        now,
    };
    let log = StepLog {
        name: step,
        status: StepStatus::Failed,
        state_delta: json!({ "error": reason }),
        created_by: "SYSTEM".into(),
        started_at: now,
        completed_at: now,
        retries: row.retries,
    };
    let mut tx = engine.store().begin().await?;
    record(&mut tx, fence, &log, &up, &row.workflow_name).await?;
    commit_tx(engine, tx).await?;
    Err(RunError::Definition(reason.to_owned()))
}
