//! The engine's service side: start, resume, abort, callbacks, status; what the API calls.

use crate::definition::{FormFail, INIT, State, StepKind, Workflow};
use crate::view::{self, ProcessList, ProcessView};
use muster_core::audit::{AuditEntry, Event, RequestCtx, actions, kinds, streams};
use muster_core::clock;
use muster_core::error::{DomainError, ErrorKind, codes};
use muster_core::workflow::form::{FormRun, FormStop};
use muster_core::workflow::lifecycle::{BlockReason, start_blocked};
use muster_core::workflow::{ProcessStatus, StepStatus, Target};
use muster_store::{NewProcess, ProcessQuery, StepLog, Store, StoreError, StoreTx};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long a claim lasts without a heartbeat; a dead worker's processes are picked up
    /// after this.
    pub lease: Duration,
    /// Processes one node runs at once.
    pub concurrency: usize,
    /// Longest sleep between looks at the queue when nothing wakes the worker.
    pub poll: Duration,
    /// First back-off of a retry step; doubles with each retry up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How many times a retry step runs before the process gives up and fails (an operator can
    /// still resume it, which starts the count again); 0 retries for ever, as orchestrator-core
    /// does. With the default back-off (5 s doubling to 1 h), 20 runs span about 10 hours.
    pub retry_max_attempts: u32,
    /// This node's name in leases.
    pub worker_name: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            concurrency: 16,
            poll: Duration::from_secs(1),
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(3600),
            retry_max_attempts: 20,
            worker_name: format!("worker-{}", Uuid::new_v4().simple()),
        }
    }
}

/// Why a start (or a resume with input) did not happen.
#[derive(Debug)]
pub enum StartError {
    /// The form protocol's answer: 510 with the next page, or 400 with validation errors.
    Form(FormStop),
    Domain(DomainError),
}

impl From<DomainError> for StartError {
    fn from(e: DomainError) -> Self {
        Self::Domain(e)
    }
}

impl From<StoreError> for StartError {
    fn from(e: StoreError) -> Self {
        Self::Domain(e.into())
    }
}

impl From<FormFail> for StartError {
    fn from(f: FormFail) -> Self {
        match f {
            FormFail::Stop(s) => Self::Form(s),
            FormFail::Error(e) => Self::Domain(e),
        }
    }
}

pub(crate) fn internal(e: StoreError) -> DomainError {
    e.into()
}

/// [`Engine::on_events`] was called twice.
#[derive(Debug, thiserror::Error)]
#[error("the engine's event hook is already set")]
pub struct EventHookTaken;

/// The engine. Cheap to clone.
pub struct Engine<D> {
    pub(crate) inner: Arc<Inner<D>>,
}

impl<D> Clone for Engine<D> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

pub(crate) struct Inner<D> {
    pub(crate) store: Store,
    pub(crate) deps: Arc<D>,
    /// Every registered version of every workflow, by name; the last is the newest.
    pub(crate) workflows: HashMap<&'static str, Vec<Arc<Workflow<D>>>>,
    pub(crate) config: EngineConfig,
    pub(crate) wake: Notify,
    /// Set once, on an engine that may already be shared (see [`Engine::on_events`]).
    pub(crate) on_event: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// The engine lock as last read, and when (runners look before every step; the database
    /// is asked at most every `PAUSE_RECHECK`).
    pub(crate) paused: std::sync::Mutex<(bool, Option<std::time::Instant>)>,
    /// This node's running worker, if any: a start that finds a free slot hands its process
    /// straight to it (see `NewProcess::claimed_by`).
    pub(crate) local: std::sync::Mutex<Option<LocalWorker>>,
}

/// A running worker's free slots and its inbox of processes started on this node.
pub(crate) struct LocalWorker {
    pub(crate) slots: Arc<tokio::sync::Semaphore>,
    pub(crate) inbox: tokio::sync::mpsc::UnboundedSender<(muster_store::ProcessRow, tokio::sync::OwnedSemaphorePermit)>,
}

/// A free slot of this node's worker, taken for a process about to start.
struct Handoff {
    permit: tokio::sync::OwnedSemaphorePermit,
    inbox: tokio::sync::mpsc::UnboundedSender<(muster_store::ProcessRow, tokio::sync::OwnedSemaphorePermit)>,
}

/// How stale the cached engine lock may be: a pause reaches runners on every node within this.
const PAUSE_RECHECK: Duration = Duration::from_millis(200);

/// `GET /api/settings/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EngineStatus {
    pub global_lock: bool,
    /// RUNNING, PAUSING (locked, processes still finishing a step) or PAUSED.
    pub global_status: &'static str,
    pub running_processes: i64,
}

impl<D: Send + Sync + 'static> Engine<D> {
    /// `workflows` may hold several versions of one name; new processes use the highest.
    pub fn new(store: Store, deps: Arc<D>, workflows: Vec<Workflow<D>>, config: EngineConfig) -> Self {
        let mut map: HashMap<&'static str, Vec<Arc<Workflow<D>>>> = HashMap::new();
        for wf in workflows {
            map.entry(wf.name).or_default().push(Arc::new(wf));
        }
        for versions in map.values_mut() {
            versions.sort_by_key(|w| w.version);
        }
        Self {
            inner: Arc::new(Inner {
                store,
                deps,
                workflows: map,
                config,
                wake: Notify::new(),
                on_event: std::sync::OnceLock::new(),
                paused: std::sync::Mutex::new((false, None)),
                local: std::sync::Mutex::new(None),
            }),
        }
    }

    /// Sets what runs after every commit that wrote events (waking the event sequencer, so
    /// that followers of `/api/events` hear of a step at once rather than at their next poll).
    /// It is set on the shared engine, whoever else holds a clone; a second hook is refused.
    pub fn on_events(&self, hook: impl Fn() + Send + Sync + 'static) -> Result<(), EventHookTaken> {
        self.inner.on_event.set(Box::new(hook)).map_err(|_| EventHookTaken)
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn deps(&self) -> &Arc<D> {
        &self.inner.deps
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub(crate) fn events_written(&self) {
        if let Some(h) = self.inner.on_event.get() {
            h();
        }
    }

    /// Whether the engine is paused, from a cache at most `PAUSE_RECHECK` old.
    pub(crate) async fn paused(&self) -> Result<bool, StoreError> {
        if let Ok(p) = self.inner.paused.lock()
            && let (v, Some(at)) = *p
            && at.elapsed() < PAUSE_RECHECK
        {
            return Ok(v);
        }
        let v = self.inner.store.engine_locked().await?;
        if let Ok(mut p) = self.inner.paused.lock() {
            *p = (v, Some(std::time::Instant::now()));
        }
        Ok(v)
    }

    /// Wakes this node's workers (work was queued here).
    pub fn wake(&self) {
        self.inner.wake.notify_waiters();
        self.inner.wake.notify_one();
    }

    /// The newest version of a workflow.
    pub fn workflow(&self, name: &str) -> Option<&Arc<Workflow<D>>> {
        self.inner.workflows.get(name).and_then(|v| v.last())
    }

    /// A given version of a workflow.
    pub(crate) fn workflow_version(&self, name: &str, version: i32) -> Option<&Arc<Workflow<D>>> {
        self.inner
            .workflows
            .get(name)
            .and_then(|v| v.iter().find(|w| w.version == version))
    }

    pub fn workflow_names(&self) -> Vec<&'static str> {
        let mut v: Vec<_> = self.inner.workflows.keys().copied().collect();
        v.sort();
        v
    }

    async fn refuse_when_paused(&self) -> Result<(), DomainError> {
        if self.inner.store.engine_locked().await.map_err(internal)? {
            return Err(DomainError::new(
                ErrorKind::Unavailable,
                codes::ENGINE_PAUSED,
                "the engine is paused; try again when it runs",
            ));
        }
        Ok(())
    }

    /// Runs a start form over `inputs` without starting anything: the next page, the
    /// validation errors, or the complete input.
    pub async fn run_start_form(&self, name: &str, inputs: Vec<Value>) -> Result<State, StartError> {
        let wf = self
            .workflow(name)
            .ok_or_else(|| DomainError::not_found("workflow"))?
            .clone();
        let mut run = FormRun::new(inputs);
        if let Some(form) = wf.form {
            form(&self.inner.deps, &State::new(), &mut run).await?;
        }
        run.finish().map_err(StartError::Form)
    }

    /// `POST /api/processes/{workflow}`: validates the form, stores the process (holding its
    /// subscription for modify/terminate/validate workflows) and queues it.
    pub async fn start(
        &self,
        ctx: &RequestCtx,
        actor: &str,
        name: &str,
        inputs: Vec<Value>,
    ) -> Result<Uuid, StartError> {
        let result = self.start_unaudited(ctx, actor, name, inputs).await;
        if let Err(e) = &result {
            let entry = AuditEntry::new(ctx, actions::PROCESS_START, Some(actor.to_owned()), None)
                .with_details(json!({ "workflow": name }));
            self.audit_refusal(entry, e).await;
        }
        result
    }

    /// Writes the audit record of a refused start, resume or abort (as the directory does for
    /// its refusals). Incomplete forms are the protocol, not refusals, and are not recorded.
    async fn audit_refusal(&self, entry: AuditEntry, e: &StartError) {
        let code = match e {
            StartError::Domain(d) if d.kind != ErrorKind::Internal => d.code,
            StartError::Form(FormStop::Invalid { .. } | FormStop::Overflow) => codes::INVALID_INPUT,
            _ => return,
        };
        if let Err(err) = self.inner.store.insert_audit(&entry.failed(code)).await {
            tracing::error!(error = %err, "could not write the audit record of a refused call");
        }
    }

    async fn start_unaudited(
        &self,
        ctx: &RequestCtx,
        actor: &str,
        name: &str,
        inputs: Vec<Value>,
    ) -> Result<Uuid, StartError> {
        self.refuse_when_paused().await?;
        let state = self.run_start_form(name, inputs).await?;
        let wf = self
            .workflow(name)
            .ok_or_else(|| DomainError::not_found("workflow"))?
            .clone();
        let state = match wf.prepare {
            Some(p) => p(&self.inner.deps, state).await?,
            None => state,
        };
        let handoff = self.free_local_slot();
        let claim = handoff.as_ref().map(|_| {
            let until =
                clock::now() + time::Duration::try_from(self.inner.config.lease).unwrap_or(time::Duration::SECOND * 30);
            (self.inner.config.worker_name.clone(), until)
        });
        let mut tx = self.inner.store.begin().await?;
        let (pid, row) = self.start_claimed(&mut tx, ctx, actor, &wf, state, claim).await?;
        tx.commit().await?;
        self.events_written();
        match (handoff, row) {
            (Some(h), Some(row)) => {
                if let Err(tokio::sync::mpsc::error::SendError((row, _permit))) = h.inbox.send((row, h.permit)) {
                    // The worker stopped meanwhile: let any worker have it now rather than
                    // when the lease runs out.
                    let fence = muster_store::Fence {
                        process_id: row.process_id,
                        attempt: row.attempt,
                        worker: self.inner.config.worker_name.clone(),
                    };
                    if let Err(e) = self.inner.store.release_lease(&fence).await {
                        tracing::warn!(error = %e, "releasing a process the stopped worker was to run");
                    }
                }
            }
            _ => self.wake(),
        }
        Ok(pid)
    }

    /// Whether a workflow worker runs anywhere: this node's, or one whose heartbeat was
    /// recorded lately. A process started when none does waits until one starts.
    pub async fn worker_alive(&self) -> bool {
        if self.inner.local.lock().is_ok_and(|l| l.is_some()) {
            return true;
        }
        let since = clock::now()
            - time::Duration::try_from(crate::worker::WORKER_HEARTBEAT * 3).unwrap_or(time::Duration::MINUTE);
        // Unknown (the database did not answer) is not reported as "no worker".
        self.inner.store.worker_seen_since(since).await.unwrap_or(true)
    }

    /// A free slot of this node's worker, if it runs and has one.
    fn free_local_slot(&self) -> Option<Handoff> {
        let local = self.inner.local.lock().ok()?;
        let w = local.as_ref()?;
        let permit = w.slots.clone().try_acquire_owned().ok()?;
        Some(Handoff {
            permit,
            inbox: w.inbox.clone(),
        })
    }

    /// Stores and queues a process inside `tx` (also used by the scheduler).
    pub(crate) async fn start_in(
        &self,
        tx: &mut StoreTx,
        ctx: &RequestCtx,
        actor: &str,
        wf: &Workflow<D>,
        state: State,
    ) -> Result<Uuid, StartError> {
        Ok(self.start_claimed(tx, ctx, actor, wf, state, None).await?.0)
    }

    /// Stores a process inside `tx`: queued, or claimed by `claim` (worker, lease end), in
    /// which case the claimed row is returned for the claimant to run.
    async fn start_claimed(
        &self,
        tx: &mut StoreTx,
        ctx: &RequestCtx,
        actor: &str,
        wf: &Workflow<D>,
        mut state: State,
        claim: Option<(String, time::OffsetDateTime)>,
    ) -> Result<(Uuid, Option<muster_store::ProcessRow>), StartError> {
        let pid = Uuid::new_v4();
        let now = clock::now();
        state.insert("process_id".into(), json!(pid));
        state.insert("reporter".into(), json!(actor));
        state.insert("workflow_name".into(), json!(wf.name));
        state.insert("workflow_target".into(), json!(wf.target.as_str()));
        let first = wf.steps.first().map(|s| s.name).unwrap_or(INIT);
        let new = NewProcess {
            process_id: pid,
            workflow_name: wf.name.to_owned(),
            workflow_version: wf.version,
            target: wf.target.as_str().to_owned(),
            is_task: wf.is_task,
            created_by: actor.to_owned(),
            assignee: "SYSTEM".to_owned(),
            state: Value::Object(state.clone()),
            next_step: first.to_owned(),
            now,
            claimed_by: claim,
        };
        tx.insert_process(&new).await?;
        if matches!(wf.target, Target::Modify | Target::Terminate | Target::Validate)
            && let Some(sid) = state.get("subscription_id").and_then(Value::as_str)
        {
            let sid: Uuid = sid
                .parse()
                .map_err(|_| DomainError::invalid_field("subscription_id", codes::INVALID_INPUT, "not a uuid"))?;
            let version = state.get("version").and_then(Value::as_i64);
            let held = tx
                .hold_subscription(
                    sid,
                    pid,
                    &muster_store::HoldTerms {
                        usable: wf.target.usable_when(),
                        no_active_users: wf.target.blocked_by_users(),
                        no_held_relations: matches!(wf.target, Target::Modify | Target::Terminate),
                        expected_version: version,
                    },
                    now,
                )
                .await?;
            if !held {
                let reason = self.why_blocked(tx, sid, wf.target, version).await?;
                return Err(DomainError::conflict(codes::WORKFLOW_BLOCKED, reason).into());
            }
            tx.link_process_subscription(pid, sid, wf.target.as_str(), now).await?;
            let event = Event {
                stream: streams::SUBSCRIPTIONS,
                kind: kinds::SUBSCRIPTION_UPDATED,
                subject: Some(sid.to_string()),
                data: json!({ "subscription_id": sid, "insync": false, "locked_by_process": pid }),
            };
            tx.event(&event, now, Some(&ctx.cid)).await?;
        }
        let entry = AuditEntry::new(
            ctx,
            actions::PROCESS_START,
            Some(actor.to_owned()),
            Some(pid.to_string()),
        )
        .with_details(json!({ "workflow": wf.name, "version": wf.version }))
        .with_event(
            streams::PROCESSES,
            kinds::PROCESS_CREATED,
            pid.to_string(),
            json!({ "process_id": pid, "workflow_name": wf.name, "last_status": "created" }),
        );
        tx.audit(&entry).await?;
        let row = new.claimed_row();
        if row.is_none() {
            tx.notify_work().await?;
        }
        Ok((pid, row))
    }

    /// Explains why a subscription could not be held.
    async fn why_blocked(
        &self,
        tx: &mut StoreTx,
        sid: Uuid,
        target: Target,
        version: Option<i64>,
    ) -> Result<String, StartError> {
        let Some(sub) = tx.subscription(sid).await? else {
            return Err(DomainError::not_found("subscription").into());
        };
        if let Some(v) = version
            && v != sub.version
        {
            return Ok(format!(
                "stale data: the subscription is at version {}, the form was filled at version {v}",
                sub.version
            ));
        }
        let users = tx.in_use_by_statuses(sid).await?;
        let relations = tx.depends_on_insync(sid).await?;
        let reason = start_blocked(target, sub.status, sub.insync, &users, relations).unwrap_or(BlockReason::NotInSync);
        let holder = sub
            .locked_by_process
            .map(|p| format!(" (held by process {p})"))
            .unwrap_or_default();
        Ok(format!("{}: {}{holder}", reason.as_str(), reason.message()))
    }

    /// `PUT /api/processes/{id}/resume`: a suspended process with its input step's form, a
    /// failed or waiting one to retry its step from the last good state.
    pub async fn resume(&self, ctx: &RequestCtx, actor: &str, pid: Uuid, inputs: Vec<Value>) -> Result<(), StartError> {
        let result = self.resume_unaudited(ctx, actor, pid, inputs).await;
        if let Err(e) = &result {
            let entry = AuditEntry::new(
                ctx,
                actions::PROCESS_RESUME,
                Some(actor.to_owned()),
                Some(pid.to_string()),
            );
            self.audit_refusal(entry, e).await;
        }
        result
    }

    async fn resume_unaudited(
        &self,
        ctx: &RequestCtx,
        actor: &str,
        pid: Uuid,
        inputs: Vec<Value>,
    ) -> Result<(), StartError> {
        self.refuse_when_paused().await?;
        let row = self
            .inner
            .store
            .process(pid)
            .await?
            .ok_or_else(|| DomainError::not_found("process"))?;
        let status = row.status()?;
        let wf = self
            .workflow_version(&row.workflow_name, row.workflow_version)
            .ok_or_else(|| {
                DomainError::internal(format!(
                    "workflow {} v{} is not registered",
                    row.workflow_name, row.workflow_version
                ))
            })?
            .clone();
        let Value::Object(mut state) = row.state.0.clone() else {
            return Err(DomainError::internal("process state is not an object").into());
        };
        let now = clock::now();
        let mut tx = self.inner.store.begin().await?;
        let moved = match status {
            ProcessStatus::Suspended => {
                let step_name = row.next_step.clone().unwrap_or_default();
                let Some(step) = wf.step_named(&step_name) else {
                    return Err(DomainError::internal(format!("step {step_name} is not in the workflow")).into());
                };
                let StepKind::Input { form, .. } = &step.kind else {
                    return Err(DomainError::internal("a suspended process must wait at an input step").into());
                };
                let mut run = FormRun::new(inputs);
                form(&self.inner.deps, &state, &mut run).await?;
                let input = run.finish().map_err(StartError::Form)?;
                self.check_unchanged(&mut tx, &row).await?;
                state.extend(input.clone());
                let next = wf.after(&step_name);
                let ok = tx
                    .move_process(
                        pid,
                        &[ProcessStatus::Suspended],
                        ProcessStatus::Resumed,
                        &Value::Object(state.clone()),
                        next,
                        Some(now),
                        None,
                        now,
                    )
                    .await?;
                if ok {
                    tx.log_step(
                        pid,
                        row.attempt,
                        &StepLog {
                            name: step_name,
                            status: StepStatus::Success,
                            state_delta: view::public(&Value::Object(input)),
                            created_by: actor.to_owned(),
                            started_at: now,
                            completed_at: now,
                            retries: 0,
                        },
                    )
                    .await?;
                }
                ok
            }
            ProcessStatus::Failed | ProcessStatus::Waiting => {
                self.check_unchanged(&mut tx, &row).await?;
                tx.move_process(
                    pid,
                    &[ProcessStatus::Failed, ProcessStatus::Waiting],
                    ProcessStatus::Resumed,
                    &Value::Object(state.clone()),
                    row.next_step.as_deref(),
                    Some(now),
                    None,
                    now,
                )
                .await?
            }
            other => {
                return Err(DomainError::conflict(
                    codes::INVALID_TRANSITION,
                    format!(
                        "the process is {}; only suspended, waiting or failed processes resume",
                        other.as_str()
                    ),
                )
                .into());
            }
        };
        if !moved {
            return Err(
                DomainError::conflict(codes::INVALID_TRANSITION, "the process changed meanwhile; reload it").into(),
            );
        }
        let entry = AuditEntry::new(
            ctx,
            actions::PROCESS_RESUME,
            Some(actor.to_owned()),
            Some(pid.to_string()),
        )
        .with_event(
            streams::PROCESSES,
            kinds::PROCESS_UPDATED,
            pid.to_string(),
            json!({ "process_id": pid, "workflow_name": row.workflow_name, "last_status": "resumed" }),
        );
        tx.audit(&entry).await?;
        tx.notify_work().await?;
        tx.commit().await?;
        self.events_written();
        self.wake();
        Ok(())
    }

    /// Re-reads the process inside `tx` (locking its row on PostgreSQL; SQLite has one writer)
    /// and refuses when it moved on since `seen` was read: a resume or abort decided on a stale
    /// row would rewind the process.
    async fn check_unchanged(&self, tx: &mut StoreTx, seen: &muster_store::ProcessRow) -> Result<(), DomainError> {
        let now = tx.process(seen.process_id).await.map_err(internal)?;
        let same = now.as_ref().is_some_and(|p| {
            p.attempt == seen.attempt
                && p.last_status == seen.last_status
                && p.next_step == seen.next_step
                && p.last_modified_at == seen.last_modified_at
        });
        if !same {
            return Err(DomainError::conflict(
                codes::INVALID_TRANSITION,
                "the process changed meanwhile; reload it",
            ));
        }
        Ok(())
    }

    /// `PUT /api/processes/{id}/abort`: stops the process for good and undoes what its steps
    /// made (the workflow's compensation), releasing its subscriptions, in one transaction.
    pub async fn abort(&self, ctx: &RequestCtx, actor: &str, pid: Uuid) -> Result<(), DomainError> {
        let result = self.abort_unaudited(ctx, actor, pid).await;
        if let Err(e) = &result {
            let entry = AuditEntry::new(
                ctx,
                actions::PROCESS_ABORT,
                Some(actor.to_owned()),
                Some(pid.to_string()),
            );
            self.audit_refusal(entry, &StartError::Domain(e.clone())).await;
        }
        result
    }

    async fn abort_unaudited(&self, ctx: &RequestCtx, actor: &str, pid: Uuid) -> Result<(), DomainError> {
        let row = self
            .inner
            .store
            .process(pid)
            .await
            .map_err(internal)?
            .ok_or_else(|| DomainError::not_found("process"))?;
        let status = row.status().map_err(internal)?;
        let wf = self
            .workflow_version(&row.workflow_name, row.workflow_version)
            .ok_or_else(|| DomainError::internal("workflow version not registered"))?
            .clone();
        let sources = ProcessStatus::sources(ProcessStatus::Aborted);
        // Running is listed so that a process whose worker died can be aborted; the store
        // refuses while a live lease holds it.
        if !sources.contains(&status) && status != ProcessStatus::Running {
            return Err(DomainError::conflict(
                codes::INVALID_TRANSITION,
                format!("the process is {}; it cannot be aborted", status.as_str()),
            ));
        }
        let now = clock::now();
        let mut tx = self.inner.store.begin().await.map_err(internal)?;
        self.check_unchanged(&mut tx, &row).await?;
        let mut from = sources.clone();
        from.push(ProcessStatus::Running);
        let ok = tx
            .move_process(
                pid,
                &from,
                ProcessStatus::Aborted,
                &row.state.0,
                None,
                None,
                Some("aborted"),
                now,
            )
            .await
            .map_err(internal)?;
        if !ok {
            return Err(DomainError::conflict(
                codes::INVALID_TRANSITION,
                "the process is running a step; abort it when the step is over",
            ));
        }
        if let (Some(f), Value::Object(state)) = (wf.on_abort, &row.state.0) {
            f(&self.inner.deps, &mut tx, state, pid)
                .await
                .map_err(|e| DomainError::conflict(codes::INVALID_OPERATION, format!("compensation failed: {e}")))?;
        }
        for sid in tx.release_subscriptions(pid, now).await.map_err(internal)? {
            tx.event(
                &Event {
                    stream: streams::SUBSCRIPTIONS,
                    kind: kinds::SUBSCRIPTION_UPDATED,
                    subject: Some(sid.to_string()),
                    data: json!({ "subscription_id": sid, "insync": true, "released_by_abort_of": pid }),
                },
                now,
                Some(&ctx.cid),
            )
            .await
            .map_err(internal)?;
        }
        tx.log_step(
            pid,
            row.attempt,
            &StepLog {
                name: "User Aborted".into(),
                status: StepStatus::Abort,
                state_delta: json!({}),
                created_by: actor.to_owned(),
                started_at: now,
                completed_at: now,
                retries: 0,
            },
        )
        .await
        .map_err(internal)?;
        let entry = AuditEntry::new(
            ctx,
            actions::PROCESS_ABORT,
            Some(actor.to_owned()),
            Some(pid.to_string()),
        )
        .with_event(
            streams::PROCESSES,
            kinds::PROCESS_UPDATED,
            pid.to_string(),
            json!({ "process_id": pid, "workflow_name": row.workflow_name, "last_status": "aborted" }),
        );
        tx.audit(&entry).await.map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        self.events_written();
        Ok(())
    }

    /// `POST /api/processes/{id}/callback/{token}`: an outside system reports back. The token
    /// is compared in constant time; a wrong token and an unknown process answer alike.
    pub async fn callback(&self, ctx: &RequestCtx, pid: Uuid, token: &str, data: Value) -> Result<(), DomainError> {
        use subtle::ConstantTimeEq;
        self.refuse_when_paused().await?;
        let now = clock::now();
        let mut tx = self.inner.store.begin().await.map_err(internal)?;
        // The row first (locked on PostgreSQL): a step finishing now is either done before
        // this look, or waits for it.
        let row = tx
            .process(pid)
            .await
            .map_err(internal)?
            .ok_or_else(|| DomainError::not_found("callback"))?;
        let stored = tx.callback_token_hash(pid).await.map_err(internal)?;
        let presented = crate::runner::token_hash(token);
        let matches = stored
            .as_deref()
            .is_some_and(|h| bool::from(h.as_bytes().ct_eq(presented.as_bytes())));
        if !matches {
            return Err(DomainError::not_found("callback"));
        }
        if row.last_status == ProcessStatus::Running.as_str() {
            // The callback step's action is still running: keep the answer for it.
            if !tx.keep_early_callback(pid, &data).await.map_err(internal)? {
                return Err(DomainError::not_found("callback"));
            }
            let entry = AuditEntry::new(ctx, actions::PROCESS_CALLBACK, None, Some(pid.to_string()))
                .with_details(json!({ "kept_for_running_step": true }));
            tx.audit(&entry).await.map_err(internal)?;
            tx.commit().await.map_err(internal)?;
            return Ok(());
        }
        let wf = self
            .workflow_version(&row.workflow_name, row.workflow_version)
            .ok_or_else(|| DomainError::internal("workflow version not registered"))?
            .clone();
        let step_name = row.next_step.clone().unwrap_or_default();
        let Value::Object(mut state) = row.state.0.clone() else {
            return Err(DomainError::internal("process state is not an object"));
        };
        state.insert("callback_result".into(), data.clone());
        let ok = tx
            .move_process(
                pid,
                &[ProcessStatus::AwaitingCallback],
                ProcessStatus::Resumed,
                &Value::Object(state),
                wf.after(&step_name),
                Some(now),
                None,
                now,
            )
            .await
            .map_err(internal)?;
        if !ok {
            return Err(DomainError::not_found("callback"));
        }
        tx.log_step(
            pid,
            row.attempt,
            &StepLog {
                name: step_name,
                status: StepStatus::Success,
                state_delta: json!({ "callback_result": data }),
                created_by: "callback".into(),
                started_at: now,
                completed_at: now,
                retries: 0,
            },
        )
        .await
        .map_err(internal)?;
        let entry = AuditEntry::new(ctx, actions::PROCESS_CALLBACK, None, Some(pid.to_string())).with_event(
            streams::PROCESSES,
            kinds::PROCESS_UPDATED,
            pid.to_string(),
            json!({ "process_id": pid, "workflow_name": row.workflow_name, "last_status": "resumed" }),
        );
        tx.audit(&entry).await.map_err(internal)?;
        tx.notify_work().await.map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        self.events_written();
        self.wake();
        Ok(())
    }

    /// Fails processes whose callback did not come in time.
    pub async fn expire_callbacks(&self) -> Result<usize, DomainError> {
        let now = clock::now();
        let ids = self.inner.store.expired_callbacks(now, 100).await.map_err(internal)?;
        let mut n = 0;
        for pid in ids {
            let mut tx = self.inner.store.begin().await.map_err(internal)?;
            let Some(row) = tx.process(pid).await.map_err(internal)? else {
                continue;
            };
            // It may have been called back, and be waiting at a later callback, since the
            // expired ones were listed.
            let expired = row.last_status == ProcessStatus::AwaitingCallback.as_str()
                && row.callback_deadline.is_some_and(|d| d.0 < now);
            if !expired {
                continue;
            }
            let step = row.next_step.clone().unwrap_or_default();
            let ok = tx
                .move_process(
                    pid,
                    &[ProcessStatus::AwaitingCallback],
                    ProcessStatus::Failed,
                    &row.state.0,
                    Some(&step),
                    None,
                    Some("the callback did not arrive before its timeout"),
                    now,
                )
                .await
                .map_err(internal)?;
            if !ok {
                continue;
            }
            tx.log_step(
                pid,
                row.attempt,
                &StepLog {
                    name: step,
                    status: StepStatus::Failed,
                    state_delta: json!({ "error": "the callback did not arrive before its timeout" }),
                    created_by: "SYSTEM".into(),
                    started_at: now,
                    completed_at: now,
                    retries: row.retries,
                },
            )
            .await
            .map_err(internal)?;
            tx.event(
                &Event {
                    stream: streams::PROCESSES,
                    kind: kinds::PROCESS_UPDATED,
                    subject: Some(pid.to_string()),
                    data: json!({ "process_id": pid, "workflow_name": row.workflow_name, "last_status": "failed" }),
                },
                now,
                None,
            )
            .await
            .map_err(internal)?;
            tx.commit().await.map_err(internal)?;
            n += 1;
        }
        if n > 0 {
            self.events_written();
        }
        Ok(n)
    }

    /// One process with its steps, current state and (when suspended) its form.
    pub async fn process_view(&self, pid: Uuid) -> Result<ProcessView, DomainError> {
        let store = &self.inner.store;
        let row = store
            .process(pid)
            .await
            .map_err(internal)?
            .ok_or_else(|| DomainError::not_found("process"))?;
        let steps = store.process_steps(pid).await.map_err(internal)?;
        let subs = store.process_subscriptions(pid).await.map_err(internal)?;
        let mut form = None;
        if row.last_status == ProcessStatus::Suspended.as_str()
            && let Some(wf) = self.workflow_version(&row.workflow_name, row.workflow_version)
            && let Some(step) = row.next_step.as_deref().and_then(|n| wf.step_named(n))
            && let StepKind::Input { form: f, .. } = &step.kind
            && let Value::Object(state) = &row.state.0
        {
            let mut run = FormRun::new(vec![]);
            if let Err(FormFail::Stop(FormStop::NotComplete { form: schema, .. })) =
                f(&self.inner.deps, state, &mut run).await
            {
                form = Some(schema);
            }
        }
        Ok(view::process(&row, &steps, &subs, form))
    }

    pub async fn list(&self, q: &ProcessQuery) -> Result<ProcessList, DomainError> {
        let (rows, total) = self.inner.store.list_processes(q).await.map_err(internal)?;
        Ok(ProcessList {
            items: rows.iter().map(view::summary).collect(),
            total,
        })
    }

    /// `GET /api/processes/status-counts`.
    pub async fn status_counts(&self) -> Result<Value, DomainError> {
        let rows = self.inner.store.process_status_counts().await.map_err(internal)?;
        let mut processes = serde_json::Map::new();
        let mut tasks = serde_json::Map::new();
        for (status, is_task, n) in rows {
            let m = if is_task { &mut tasks } else { &mut processes };
            m.insert(status, json!(n));
        }
        Ok(json!({ "process_counts": processes, "task_counts": tasks }))
    }

    pub async fn status(&self) -> Result<EngineStatus, DomainError> {
        let store = &self.inner.store;
        let locked = store.engine_locked().await.map_err(internal)?;
        let running = store.running_processes(clock::now()).await.map_err(internal)?;
        Ok(EngineStatus {
            global_lock: locked,
            global_status: match (locked, running) {
                (false, _) => "RUNNING",
                (true, 0) => "PAUSED",
                (true, _) => "PAUSING",
            },
            running_processes: running,
        })
    }

    /// Pauses (workers finish their current step and claim nothing new) or resumes.
    pub async fn set_paused(&self, ctx: &RequestCtx, actor: &str, paused: bool) -> Result<EngineStatus, DomainError> {
        let entry = AuditEntry::new(ctx, actions::ENGINE_SET_STATUS, Some(actor.to_owned()), None)
            .with_details(json!({ "global_lock": paused }));
        self.inner
            .store
            .set_engine_lock(paused, &entry)
            .await
            .map_err(internal)?;
        // This node's runners see the change at their next step, not when the cache expires.
        if let Ok(mut p) = self.inner.paused.lock() {
            *p = (paused, Some(std::time::Instant::now()));
        }
        if !paused {
            self.wake();
        }
        self.status().await
    }
}
