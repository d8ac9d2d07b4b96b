//! The engine: its registered workflows, configuration and shared handles, and the helpers its
//! operations share. Each operation is an `impl Engine` block in a module of its own:
//! `start`, `resume`, `abort`, `callback`, `pause` (the engine lock and status) and `query`.
//!
//! Every operation that changes a process does so in one transaction with its step-log row,
//! audit record and events, and wakes the event hook after the commit: an `Ok` means
//! committed. Refused starts, resumes and aborts are audited as refused.

mod abort;
mod callback;
mod pause;
mod query;
mod resume;
mod start;

pub use pause::EngineStatus;

use crate::definition::{FormFail, Workflow};
use muster_core::audit::AuditEntry;
use muster_core::error::{DomainError, ErrorKind, codes};
use muster_core::workflow::form::FormStop;
use muster_store::{Store, StoreError, StoreTx};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use uuid::Uuid;

/// How often a worker records that it is alive; one not heard of for three beats is taken
/// to be gone (see [`Engine::worker_alive`]).
pub(crate) const WORKER_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(10);

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
}
