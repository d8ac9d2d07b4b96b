//! One run of a claimed process's steps, from its next one until it stops.
//!
//! Consecutive plain steps share a transaction ("a chain"), each inside its own savepoint:
//! every step's writes, its log row and the fenced process update still commit together, and a
//! failing step is rolled back to its savepoint alone, its predecessors committing with the
//! record of its failure. Chaining saves a commit per step; a chain ends at a step that talks to
//! the outside world (retry, callback), at an input step, at `done`, after `CHAIN_STEPS` steps
//! or `CHAIN_TIME`. A crash loses the uncommitted chain, which the next claimant re-runs from
//! the last committed step: each step still commits exactly once.

use super::{RunError, commit_tx, fail_definition, later, record};
use crate::callback_token::{new_token, token_hash};
use crate::definition::{State, Step, StepCtx, StepError, StepFn, StepKind, StepOutcome, Workflow};
use crate::engine::Engine;
use muster_core::clock;
use muster_core::workflow::{ProcessStatus, StepStatus};
use muster_store::{Fence, ProcessRow, ProcessUpdate, StepLog, StoreTx};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::debug;

/// How many consecutive steps may share one transaction, and for how long.
const CHAIN_STEPS: usize = 16;
const CHAIN_TIME: Duration = Duration::from_millis(50);

/// Runs the process's steps from its next one (see the module comment).
pub(super) async fn run_steps<D: Send + Sync + 'static>(
    engine: &Engine<D>,
    row: &ProcessRow,
    fence: &Fence,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Result<(), RunError> {
    match StepRun::new(engine, row, fence) {
        Ok(run) => run.run(stop).await,
        Err(reason) => fail_definition(engine, row, fence, reason).await,
    }
}

/// What a run carries from step to step.
struct StepRun<'a, D> {
    engine: &'a Engine<D>,
    row: &'a ProcessRow,
    fence: &'a Fence,
    /// The workflow version the process is pinned to.
    wf: Arc<Workflow<D>>,
    state: State,
    next: Option<String>,
    /// How many runs of the current step failed before (retry steps).
    retries: i32,
    actor: String,
    /// The open chain, if any.
    chain: Option<Chain>,
}

/// An open chain: its transaction, how many steps it holds, since when.
struct Chain {
    tx: StoreTx,
    steps: usize,
    since: Instant,
}

/// The step being run: its name, when it started, and the chain it joined.
struct Current {
    name: String,
    started: time::OffsetDateTime,
    /// Whether the step joined an open chain (and so runs in a savepoint of its transaction).
    in_chain: bool,
    /// The steps already in the chain, and since when (0 and now for a new transaction).
    chained: usize,
    since: Instant,
}

/// Whether the run goes on to the next step.
enum Flow {
    Next,
    Stop,
}

impl<'a, D: Send + Sync + 'static> StepRun<'a, D> {
    /// The run of `row`, or why its definition cannot run.
    fn new(engine: &'a Engine<D>, row: &'a ProcessRow, fence: &'a Fence) -> Result<Self, &'static str> {
        let wf = engine
            .workflow_version(&row.workflow_name, row.workflow_version)
            .cloned()
            .ok_or("the workflow version of this process is not registered")?;
        let Value::Object(state) = row.state.0.clone() else {
            return Err("the process state is not an object");
        };
        Ok(Self {
            engine,
            row,
            fence,
            wf,
            state,
            next: row.next_step.clone(),
            retries: row.retries,
            actor: row.created_by.clone(),
            chain: None,
        })
    }

    async fn run(mut self, stop: &tokio::sync::watch::Receiver<bool>) -> Result<(), RunError> {
        loop {
            if self.stopping(stop).await? {
                return self.give_back().await;
            }
            let Some(name) = self.next.clone() else {
                return self.fail("the process has no next step").await;
            };
            let wf = self.wf.clone();
            let Some(step) = wf.step_named(&name) else {
                return self
                    .fail(&format!("step `{name}` is not in this workflow version"))
                    .await;
            };
            if let Flow::Stop = self.step(name, step).await? {
                return Ok(());
            }
        }
    }

    /// Whether the worker is stopping or the engine is paused. The pause is looked at between
    /// transactions only: asking the database while a chain holds a connection would need a
    /// second one (and a full pool would then wait on itself).
    async fn stopping(&self, stop: &tokio::sync::watch::Receiver<bool>) -> Result<bool, RunError> {
        let stopping = *stop.borrow();
        Ok(stopping || (self.chain.is_none() && self.engine.paused().await?))
    }

    /// Paused (or the worker stopping) between steps: commits what ran and gives the process
    /// back.
    async fn give_back(&mut self) -> Result<(), RunError> {
        if let Some(chain) = self.chain.take() {
            commit_tx(self.engine, chain.tx).await?;
        }
        self.engine.store().release_lease(self.fence).await?;
        Ok(())
    }

    async fn fail(&self, reason: &str) -> Result<(), RunError> {
        fail_definition(self.engine, self.row, self.fence, reason).await
    }

    /// Runs one step and records it.
    async fn step(&mut self, name: String, step: &Step<D>) -> Result<Flow, RunError> {
        let started = clock::now();
        // A step that will be skipped does nothing but log, so it chains whatever its kind.
        let chainable = chains(step, &self.state);
        // A step that is not chainable starts on a transaction of its own.
        if !chainable && let Some(chain) = self.chain.take() {
            commit_tx(self.engine, chain.tx).await?;
        }
        // Only a step that runs code needs a savepoint: `done`, input steps and skipped steps
        // only record themselves.
        let runs_code = matches!(
            step.kind,
            StepKind::Run(_) | StepKind::Retry(_) | StepKind::Callback { .. }
        ) && step.when.is_none_or(|pred| pred(&self.state));
        let (tx, cur) = self.open(name, started, chainable, runs_code).await?;
        if let Some(pred) = step.when
            && !pred(&self.state)
        {
            return self.skip(&cur, tx).await;
        }
        match &step.kind {
            StepKind::Done => self.complete(&cur, tx).await,
            StepKind::Input { assignee, .. } => self.suspend(&cur, tx, assignee).await,
            StepKind::Run(f) | StepKind::Retry(f) | StepKind::Callback { action: f, .. } => {
                self.run_action(&cur, tx, step, *f).await
            }
        }
    }

    /// The step's transaction: chainable steps get the chain's (in a savepoint when they run
    /// code) or a new one; retry and callback steps, which may wait on the outside world, open
    /// theirs only if they write.
    async fn open(
        &mut self,
        name: String,
        started: time::OffsetDateTime,
        chainable: bool,
        runs_code: bool,
    ) -> Result<(Option<StoreTx>, Current), RunError> {
        let (tx, in_chain) = match self.chain.take() {
            Some(Chain { mut tx, steps, since }) => {
                if runs_code {
                    tx.savepoint().await?;
                }
                (Some(tx), Some((steps, since)))
            }
            None if chainable => (Some(self.engine.store().begin().await?), None),
            None => (None, None),
        };
        let (chained, since) = in_chain.unwrap_or((0, Instant::now()));
        let cur = Current {
            name,
            started,
            in_chain: in_chain.is_some(),
            chained,
            since,
        };
        Ok((tx, cur))
    }

    async fn tx_or_begin(&self, tx: Option<StoreTx>) -> Result<StoreTx, RunError> {
        Ok(match tx {
            Some(tx) => tx,
            None => self.engine.store().begin().await?,
        })
    }

    /// A step whose condition does not hold: logged as skipped.
    async fn skip(&mut self, cur: &Current, tx: Option<StoreTx>) -> Result<Flow, RunError> {
        let mut tx = self.tx_or_begin(tx).await?;
        let up = self.moving_on(cur);
        self.record(&mut tx, &self.log(cur, StepStatus::Skipped, json!({}), 0), &up)
            .await?;
        self.next = up.next_step;
        self.keep_or_commit(cur, tx).await?;
        Ok(Flow::Next)
    }

    /// `done`: the process completes.
    async fn complete(&mut self, cur: &Current, tx: Option<StoreTx>) -> Result<Flow, RunError> {
        let mut tx = self.tx_or_begin(tx).await?;
        let up = self.update(cur, ProcessStatus::Completed, None);
        self.record(&mut tx, &self.log(cur, StepStatus::Complete, json!({}), 0), &up)
            .await?;
        commit_tx(self.engine, tx).await?;
        debug!(process_id = %self.row.process_id, "process completed");
        Ok(Flow::Stop)
    }

    /// An input step: the process waits for its form.
    async fn suspend(&mut self, cur: &Current, tx: Option<StoreTx>, assignee: &str) -> Result<Flow, RunError> {
        let mut tx = self.tx_or_begin(tx).await?;
        let mut up = self.update(cur, ProcessStatus::Suspended, Some(cur.name.clone()));
        up.assignee = assignee.to_owned();
        self.record(&mut tx, &self.log(cur, StepStatus::Suspend, json!({}), 0), &up)
            .await?;
        commit_tx(self.engine, tx).await?;
        Ok(Flow::Stop)
    }

    /// A run, retry or callback step: runs its code and records what came of it.
    async fn run_action(
        &mut self,
        cur: &Current,
        tx: Option<StoreTx>,
        step: &Step<D>,
        f: StepFn<D>,
    ) -> Result<Flow, RunError> {
        let token = self.arm_callback(cur, &step.kind).await?;
        let mut ctx = StepCtx {
            deps: self.engine.deps().clone(),
            state: self.state.clone(),
            process_id: self.row.process_id,
            actor: self.actor.clone(),
            callback_route: token
                .as_ref()
                .map(|t| format!("/api/processes/{}/callback/{t}", self.row.process_id)),
            store: self.engine.store().clone(),
            tx,
            now: cur.started,
        };
        let mut result = f(&mut ctx).await;
        let mut tx = self.tx_or_begin(ctx.tx.take()).await?;
        // What the step wrote and may still be refused (a taken username) is sent now,
        // so that a refusal is this step's failure and not a later one's.
        if result.is_ok()
            && let Err(e) = tx.settle().await
        {
            result = Err(e.into());
        }
        match result {
            Ok(outcome) => self.succeeded(cur, tx, step, token, outcome).await,
            Err(err) if err.transient => {
                // The database failed, not the step: nothing of this transaction
                // commits, and the step runs again (see `run_through_outages`).
                if let Err(e) = tx.rollback().await {
                    debug!(error = %e, "rolling back after a database failure");
                }
                Err(RunError::Outage(err.message))
            }
            Err(err) => self.failed(cur, tx, step, err).await,
        }
    }

    /// For a callback step, the token of its route, armed before the action runs: an answer
    /// that comes while the action is still running is kept, not refused.
    async fn arm_callback(&self, cur: &Current, kind: &StepKind<D>) -> Result<Option<String>, RunError> {
        let StepKind::Callback { timeout, .. } = kind else {
            return Ok(None);
        };
        let token = new_token();
        if !self
            .engine
            .store()
            .arm_callback(self.fence, &token_hash(&token), later(cur.started, *timeout))
            .await?
        {
            return Err(RunError::LeaseLost);
        }
        Ok(Some(token))
    }

    /// The step's code succeeded: the process moves on, or waits for its callback.
    async fn succeeded(
        &mut self,
        cur: &Current,
        mut tx: StoreTx,
        step: &Step<D>,
        token: Option<String>,
        outcome: StepOutcome,
    ) -> Result<Flow, RunError> {
        let (delta, status) = match outcome {
            StepOutcome::Success(d) => (d, StepStatus::Success),
            StepOutcome::Skipped => (State::new(), StepStatus::Skipped),
        };
        self.state.extend(delta.clone());
        let early = match &token {
            Some(_) => tx.early_callback(self.row.process_id).await?,
            None => None,
        };
        if let Some(data) = early {
            return self.answered_early(cur, tx, delta, data).await;
        }
        if let (Some(token), StepKind::Callback { timeout, .. }) = (&token, &step.kind) {
            return self.await_callback(cur, tx, delta, token, *timeout).await;
        }
        let up = self.moving_on(cur);
        self.record(&mut tx, &self.log(cur, status, Value::Object(delta), 0), &up)
            .await?;
        self.next = up.next_step;
        self.retries = 0;
        if matches!(step.kind, StepKind::Run(_)) {
            self.keep_or_commit(cur, tx).await?;
        } else {
            commit_tx(self.engine, tx).await?;
        }
        Ok(Flow::Next)
    }

    /// The outside system answered while the action ran: the step is done, with its answer,
    /// as if it had waited.
    async fn answered_early(
        &mut self,
        cur: &Current,
        mut tx: StoreTx,
        mut delta: State,
        data: Value,
    ) -> Result<Flow, RunError> {
        delta.insert("callback_result".into(), data.clone());
        self.state.insert("callback_result".into(), data);
        let up = self.moving_on(cur);
        self.record(
            &mut tx,
            &self.log(cur, StepStatus::Success, Value::Object(delta), 0),
            &up,
        )
        .await?;
        commit_tx(self.engine, tx).await?;
        self.next = up.next_step;
        Ok(Flow::Next)
    }

    /// The callback step's action ran: the process waits for the outside system, at most
    /// `timeout` from the step's start.
    async fn await_callback(
        &mut self,
        cur: &Current,
        mut tx: StoreTx,
        delta: State,
        token: &str,
        timeout: Duration,
    ) -> Result<Flow, RunError> {
        let mut up = self.update(cur, ProcessStatus::AwaitingCallback, Some(cur.name.clone()));
        up.callback_token_hash = Some(token_hash(token));
        up.callback_deadline = Some(later(cur.started, timeout));
        self.record(
            &mut tx,
            &self.log(cur, StepStatus::AwaitingCallback, Value::Object(delta), 0),
            &up,
        )
        .await?;
        commit_tx(self.engine, tx).await?;
        Ok(Flow::Stop)
    }

    /// The step failed: its own writes are discarded; what ran before it in the chain commits
    /// with the record of the failure. A retry step waits and runs again, until it has run
    /// `retry_max_attempts` times; any other step fails the process.
    async fn failed(
        &mut self,
        cur: &Current,
        mut tx: StoreTx,
        step: &Step<D>,
        err: StepError,
    ) -> Result<Flow, RunError> {
        if cur.in_chain {
            tx.rollback_to_savepoint().await?;
        } else {
            tx.rollback().await?;
            tx = self.engine.store().begin().await?;
        }
        let retry = matches!(step.kind, StepKind::Retry(_));
        let detail = json!({ "error": err.message, "details": err.details });
        // `retries` counts the runs that failed before this one.
        let retries = self.retries;
        let max = self.engine.inner.config.retry_max_attempts;
        let gave_up = retry && max > 0 && i64::from(retries) + 1 >= i64::from(max);
        if retry && !gave_up {
            let mut up = self.update(cur, ProcessStatus::Waiting, Some(cur.name.clone()));
            up.retries = retries + 1;
            up.run_after = Some(later(clock::now(), backoff(self.engine, retries)));
            up.failed_reason = Some(err.message.clone());
            self.record(&mut tx, &self.log(cur, StepStatus::Waiting, detail, retries + 1), &up)
                .await?;
        } else {
            let mut up = self.update(cur, ProcessStatus::Failed, Some(cur.name.clone()));
            up.failed_reason = Some(if gave_up {
                format!("{} (gave up after {max} attempts; resume tries again)", err.message)
            } else {
                err.message.clone()
            });
            up.retries = if gave_up { retries + 1 } else { 0 };
            up.traceback = err.details.as_ref().map(|d| d.to_string());
            let logged = if gave_up { retries + 1 } else { retries };
            self.record(&mut tx, &self.log(cur, StepStatus::Failed, detail, logged), &up)
                .await?;
        }
        commit_tx(self.engine, tx).await?;
        Ok(Flow::Stop)
    }

    /// Keeps the chain open after a recorded step when the next step chains too and the chain
    /// has room and time left; commits it otherwise.
    async fn keep_or_commit(&mut self, cur: &Current, tx: StoreTx) -> Result<(), RunError> {
        let next_chains = self
            .next
            .as_deref()
            .and_then(|n| self.wf.step_named(n))
            .is_some_and(|s| chains(s, &self.state));
        if next_chains && cur.chained + 1 < CHAIN_STEPS && cur.since.elapsed() < CHAIN_TIME {
            self.chain = Some(Chain {
                tx,
                steps: cur.chained + 1,
                since: cur.since,
            });
        } else {
            commit_tx(self.engine, tx).await?;
        }
        Ok(())
    }

    /// The process update after the step, with the state as it is now.
    fn update(&self, cur: &Current, status: ProcessStatus, next_step: Option<String>) -> ProcessUpdate {
        ProcessUpdate {
            status,
            last_step: cur.name.clone(),
            next_step,
            state: Value::Object(self.state.clone()),
            run_after: None,
            lease_until: None,
            failed_reason: None,
            traceback: None,
            retries: 0,
            assignee: "SYSTEM".into(),
            callback_token_hash: None,
            callback_deadline: None,
            now: clock::now(),
        }
    }

    /// The update of a process that goes on to its next step, still claimed.
    fn moving_on(&self, cur: &Current) -> ProcessUpdate {
        let mut up = self.update(cur, ProcessStatus::Running, self.wf.after(&cur.name).map(str::to_owned));
        up.run_after = Some(cur.started);
        up.lease_until = Some(later(clock::now(), self.engine.inner.config.lease));
        up
    }

    /// The step's log row.
    fn log(&self, cur: &Current, status: StepStatus, delta: Value, retries: i32) -> StepLog {
        StepLog {
            name: cur.name.clone(),
            status,
            state_delta: crate::view::public(&delta),
            created_by: self.actor.clone(),
            started_at: cur.started,
            completed_at: clock::now(),
            retries,
        }
    }

    async fn record(&self, tx: &mut StoreTx, log: &StepLog, up: &ProcessUpdate) -> Result<(), RunError> {
        record(tx, self.fence, log, up, &self.row.workflow_name).await
    }
}

/// Whether `step` may run in a chained transaction given the state it will see: plain steps,
/// `done`, input steps, and any step its condition skips.
fn chains<D>(step: &Step<D>, state: &State) -> bool {
    matches!(step.kind, StepKind::Run(_) | StepKind::Done | StepKind::Input { .. })
        || step.when.is_some_and(|pred| !pred(state))
}

/// Exponential back-off: base · 2^retries, capped.
fn backoff<D>(engine: &Engine<D>, retries: i32) -> Duration {
    let c = &engine.inner.config;
    let factor = 2u32.saturating_pow(retries.clamp(0, 20) as u32);
    c.retry_base.saturating_mul(factor).min(c.retry_max)
}
