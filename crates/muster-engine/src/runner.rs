//! Running a claimed process: one transaction per step, fenced by the claim's attempt.

use crate::definition::{State, StepCtx, StepKind, StepOutcome};
use crate::engine::Engine;
use muster_core::audit::{Event, kinds, streams};
use muster_core::clock;
use muster_core::workflow::{ProcessStatus, StepStatus};
use muster_store::{Fence, ProcessRow, ProcessUpdate, StepLog, StoreTx};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use std::time::Duration;
use tracing::{debug, warn};

pub(crate) fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn new_token() -> String {
    // 256 bits from the OS generator, hex: the same strength as session tokens.
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("{a}{b}")
}

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

/// How many consecutive steps may share one transaction, and for how long (see `run_steps`).
const CHAIN_STEPS: usize = 16;
const CHAIN_TIME: Duration = Duration::from_millis(50);

/// Runs the process's steps from its next one.
///
/// Consecutive plain steps share a transaction ("a chain"), each inside its own savepoint:
/// every step's writes, its log row and the fenced process update still commit together, and a
/// failing step is rolled back to its savepoint alone, its predecessors committing with the
/// record of its failure. Chaining saves a commit per step; a chain ends at a step that talks to
/// the outside world (retry, callback), at an input step, at `done`, after `CHAIN_STEPS` steps
/// or `CHAIN_TIME`. A crash loses the uncommitted chain, which the next claimant re-runs from
/// the last committed step: each step still commits exactly once.
async fn run_steps<D: Send + Sync + 'static>(
    engine: &Engine<D>,
    row: &ProcessRow,
    fence: &Fence,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Result<(), RunError> {
    let Some(wf) = engine
        .workflow_version(&row.workflow_name, row.workflow_version)
        .cloned()
    else {
        return fail_definition(
            engine,
            row,
            fence,
            "the workflow version of this process is not registered",
        )
        .await;
    };
    let Value::Object(mut state) = row.state.0.clone() else {
        return fail_definition(engine, row, fence, "the process state is not an object").await;
    };
    let mut next = row.next_step.clone();
    let mut retries = row.retries;
    let actor = row.created_by.clone();
    let wf_name = row.workflow_name.as_str();
    // The open chain: its transaction, how many steps it holds, since when.
    let mut chain: Option<(StoreTx, usize, std::time::Instant)> = None;
    loop {
        // Looked at between transactions only: asking the database while a chain holds a
        // connection would need a second one (and a full pool would then wait on itself).
        if *stop.borrow() || (chain.is_none() && engine.paused().await?) {
            // Paused (or the worker stopping) between steps: commit what ran, give it back.
            if let Some((tx, _, _)) = chain.take() {
                commit_tx(engine, tx).await?;
            }
            engine.store().release_lease(fence).await?;
            return Ok(());
        }
        let Some(name) = next.clone() else {
            return fail_definition(engine, row, fence, "the process has no next step").await;
        };
        let Some(step) = wf.step_named(&name) else {
            return fail_definition(
                engine,
                row,
                fence,
                &format!("step `{name}` is not in this workflow version"),
            )
            .await;
        };
        let started = clock::now();
        let lease = engine.inner.config.lease;
        let base = |status: ProcessStatus, next_step: Option<String>, state: &State| ProcessUpdate {
            status,
            last_step: name.clone(),
            next_step,
            state: Value::Object(state.clone()),
            run_after: None,
            lease_until: None,
            failed_reason: None,
            traceback: None,
            retries: 0,
            assignee: "SYSTEM".into(),
            callback_token_hash: None,
            callback_deadline: None,
            now: clock::now(),
        };
        let log = |status: StepStatus, delta: Value, retries: i32| StepLog {
            name: name.clone(),
            status,
            state_delta: crate::view::public(&delta),
            created_by: actor.clone(),
            started_at: started,
            completed_at: clock::now(),
            retries,
        };
        // A step that will be skipped does nothing but log, so it chains whatever its kind.
        let chainable = chains(step, &state);
        // A step that is not chainable starts on a transaction of its own.
        if !chainable && let Some((tx, _, _)) = chain.take() {
            commit_tx(engine, tx).await?;
        }
        // Chainable steps get the chain's transaction (or a new one); retry and callback steps,
        // which may wait on the outside world, open theirs only if they write.
        // Only a step that runs code needs a savepoint: `done`, input steps and skipped steps
        // only record themselves.
        let runs_code = matches!(
            step.kind,
            StepKind::Run(_) | StepKind::Retry(_) | StepKind::Callback { .. }
        ) && step.when.is_none_or(|pred| pred(&state));
        let (tx_opt, in_chain) = match chain.take() {
            Some((mut tx, n, since)) => {
                if runs_code {
                    tx.savepoint().await?;
                }
                (Some(tx), Some((n, since)))
            }
            None if chainable => (Some(engine.store().begin().await?), None),
            None => (None, None),
        };
        let (n, since) = in_chain.unwrap_or((0, std::time::Instant::now()));
        // Keeps the chain open after a recorded step, or commits it.
        let keep_open = |next: Option<&str>, state: &State| -> bool {
            let next_chains = next.and_then(|n| wf.step_named(n)).is_some_and(|s| chains(s, state));
            next_chains && n + 1 < CHAIN_STEPS && since.elapsed() < CHAIN_TIME
        };
        if let Some(pred) = step.when
            && !pred(&state)
        {
            let mut tx = match tx_opt {
                Some(tx) => tx,
                None => engine.store().begin().await?,
            };
            let mut up = base(ProcessStatus::Running, wf.after(&name).map(str::to_owned), &state);
            up.run_after = Some(started);
            up.lease_until = Some(later(clock::now(), lease));
            record(&mut tx, fence, &log(StepStatus::Skipped, json!({}), 0), &up, wf_name).await?;
            next = up.next_step;
            if keep_open(next.as_deref(), &state) {
                chain = Some((tx, n + 1, since));
            } else {
                commit_tx(engine, tx).await?;
            }
            continue;
        }
        match &step.kind {
            StepKind::Done => {
                let mut tx = match tx_opt {
                    Some(tx) => tx,
                    None => engine.store().begin().await?,
                };
                let up = base(ProcessStatus::Completed, None, &state);
                record(&mut tx, fence, &log(StepStatus::Complete, json!({}), 0), &up, wf_name).await?;
                commit_tx(engine, tx).await?;
                debug!(process_id = %row.process_id, "process completed");
                return Ok(());
            }
            StepKind::Input { assignee, .. } => {
                let mut tx = match tx_opt {
                    Some(tx) => tx,
                    None => engine.store().begin().await?,
                };
                let mut up = base(ProcessStatus::Suspended, Some(name.clone()), &state);
                up.assignee = (*assignee).to_owned();
                record(&mut tx, fence, &log(StepStatus::Suspend, json!({}), 0), &up, wf_name).await?;
                commit_tx(engine, tx).await?;
                return Ok(());
            }
            StepKind::Run(f) | StepKind::Retry(f) | StepKind::Callback { action: f, .. } => {
                let token = match &step.kind {
                    StepKind::Callback { timeout, .. } => {
                        // Armed before the action runs: an answer that comes while the action
                        // is still running is kept, not refused.
                        let token = new_token();
                        if !engine
                            .store()
                            .arm_callback(fence, &token_hash(&token), later(started, *timeout))
                            .await?
                        {
                            return Err(RunError::LeaseLost);
                        }
                        Some(token)
                    }
                    _ => None,
                };
                let mut ctx = StepCtx {
                    deps: engine.deps().clone(),
                    state: state.clone(),
                    process_id: row.process_id,
                    actor: actor.clone(),
                    callback_route: token
                        .as_ref()
                        .map(|t| format!("/api/processes/{}/callback/{t}", row.process_id)),
                    store: engine.store().clone(),
                    tx: tx_opt,
                    now: started,
                };
                let mut result = f(&mut ctx).await;
                let mut tx = match ctx.tx.take() {
                    Some(tx) => tx,
                    None => engine.store().begin().await?,
                };
                // What the step wrote and may still be refused (a taken username) is sent now,
                // so that a refusal is this step's failure and not a later one's.
                if result.is_ok()
                    && let Err(e) = tx.settle().await
                {
                    result = Err(e.into());
                }
                match result {
                    Ok(outcome) => {
                        let (delta, status) = match outcome {
                            StepOutcome::Success(d) => (d, StepStatus::Success),
                            StepOutcome::Skipped => (State::new(), StepStatus::Skipped),
                        };
                        state.extend(delta.clone());
                        let early = match &token {
                            Some(_) => tx.early_callback(row.process_id).await?,
                            None => None,
                        };
                        if let Some(data) = early {
                            // The outside system answered while the action ran: the step is
                            // done, with its answer, as if it had waited.
                            let mut delta = delta;
                            delta.insert("callback_result".into(), data.clone());
                            state.insert("callback_result".into(), data);
                            let mut up = base(ProcessStatus::Running, wf.after(&name).map(str::to_owned), &state);
                            up.run_after = Some(started);
                            up.lease_until = Some(later(clock::now(), lease));
                            record(
                                &mut tx,
                                fence,
                                &log(StepStatus::Success, Value::Object(delta), 0),
                                &up,
                                wf_name,
                            )
                            .await?;
                            commit_tx(engine, tx).await?;
                            next = up.next_step;
                            continue;
                        }
                        if let (Some(token), StepKind::Callback { timeout, .. }) = (&token, &step.kind) {
                            let mut up = base(ProcessStatus::AwaitingCallback, Some(name.clone()), &state);
                            up.callback_token_hash = Some(token_hash(token));
                            up.callback_deadline = Some(later(started, *timeout));
                            record(
                                &mut tx,
                                fence,
                                &log(StepStatus::AwaitingCallback, Value::Object(delta), 0),
                                &up,
                                wf_name,
                            )
                            .await?;
                            commit_tx(engine, tx).await?;
                            return Ok(());
                        }
                        let mut up = base(ProcessStatus::Running, wf.after(&name).map(str::to_owned), &state);
                        up.run_after = Some(started);
                        up.lease_until = Some(later(clock::now(), lease));
                        record(&mut tx, fence, &log(status, Value::Object(delta), 0), &up, wf_name).await?;
                        next = up.next_step;
                        retries = 0;
                        if matches!(step.kind, StepKind::Run(_)) {
                            if keep_open(next.as_deref(), &state) {
                                chain = Some((tx, n + 1, since));
                            } else {
                                commit_tx(engine, tx).await?;
                            }
                        } else {
                            commit_tx(engine, tx).await?;
                        }
                    }
                    Err(err) if err.transient => {
                        // The database failed, not the step: nothing of this transaction
                        // commits, and the step runs again (see `run_through_outages`).
                        if let Err(e) = tx.rollback().await {
                            debug!(error = %e, "rolling back after a database failure");
                        }
                        return Err(RunError::Outage(err.message));
                    }
                    Err(err) => {
                        // The step's own writes are discarded; what ran before it in the chain
                        // commits with the record of the failure.
                        if in_chain.is_some() {
                            tx.rollback_to_savepoint().await?;
                        } else {
                            tx.rollback().await?;
                            tx = engine.store().begin().await?;
                        }
                        let retry = matches!(step.kind, StepKind::Retry(_));
                        let detail = json!({ "error": err.message, "details": err.details });
                        // `retries` counts the runs that failed before this one.
                        let max = engine.inner.config.retry_max_attempts;
                        let gave_up = retry && max > 0 && i64::from(retries) + 1 >= i64::from(max);
                        if retry && !gave_up {
                            let mut up = base(ProcessStatus::Waiting, Some(name.clone()), &state);
                            up.retries = retries + 1;
                            up.run_after = Some(later(clock::now(), backoff(engine, retries)));
                            up.failed_reason = Some(err.message.clone());
                            record(
                                &mut tx,
                                fence,
                                &log(StepStatus::Waiting, detail, retries + 1),
                                &up,
                                wf_name,
                            )
                            .await?;
                        } else {
                            let mut up = base(ProcessStatus::Failed, Some(name.clone()), &state);
                            up.failed_reason = Some(if gave_up {
                                format!("{} (gave up after {max} attempts; resume tries again)", err.message)
                            } else {
                                err.message.clone()
                            });
                            up.retries = if gave_up { retries + 1 } else { 0 };
                            up.traceback = err.details.as_ref().map(|d| d.to_string());
                            let logged = if gave_up { retries + 1 } else { retries };
                            record(&mut tx, fence, &log(StepStatus::Failed, detail, logged), &up, wf_name).await?;
                        }
                        commit_tx(engine, tx).await?;
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Whether `step` may run in a chained transaction given the state it will see: plain steps,
/// `done`, input steps, and any step its condition skips.
fn chains<D>(step: &crate::definition::Step<D>, state: &State) -> bool {
    matches!(step.kind, StepKind::Run(_) | StepKind::Done | StepKind::Input { .. })
        || step.when.is_some_and(|pred| !pred(state))
}

/// Exponential back-off: base · 2^retries, capped.
fn backoff<D>(engine: &Engine<D>, retries: i32) -> Duration {
    let c = &engine.inner.config;
    let factor = 2u32.saturating_pow(retries.clamp(0, 20) as u32);
    c.retry_base.saturating_mul(factor).min(c.retry_max)
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
