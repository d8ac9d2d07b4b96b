//! The process service: starting workflows, reading processes and steering the engine, with
//! who may do what decided here rather than by each caller (the REST API and the console both
//! come through these methods).
//!
//! The engine itself knows nothing of users; this is where a caller meets it. Today every
//! call needs a super-user, as orchestrator-core's API does without its optional auth
//! plug-ins. A refusal happens before anything is read, so a caller who may not see processes
//! learns nothing about them (not even whether an id exists).

use crate::Deps;
use muster_core::audit::RequestCtx;
use muster_core::error::DomainError;
use muster_directory::Auth;
use muster_engine::{Engine, EngineStatus, ProcessList, ProcessView, StartError};
use muster_store::ProcessQuery;
use serde_json::Value;
use uuid::Uuid;

/// What a start says when no worker runs anywhere.
pub const NO_WORKER: &str = "no workflow worker has been seen lately: the process is queued and waits until one runs \
     (start muster serve with workers, or muster worker)";

/// Cheap to clone.
#[derive(Clone)]
pub struct Processes {
    engine: Engine<Deps>,
}

/// A path id: a malformed one names nothing, so it is a 404 like an unknown one.
pub(crate) fn parse_id(id: &str, what: &str) -> Result<Uuid, DomainError> {
    id.parse().map_err(|_| DomainError::not_found(what))
}

impl Processes {
    pub fn new(engine: Engine<Deps>) -> Self {
        Self { engine }
    }

    /// The engine, for callers that are not a person (the worker, the scheduler, tests).
    pub fn engine(&self) -> &Engine<Deps> {
        &self.engine
    }

    /// Who may start, steer and read processes.
    fn may_operate(auth: &Auth) -> Result<(), DomainError> {
        auth.require_super_user()
    }

    /// Starts workflow `name` with the form pages filled so far: the next page (510), the
    /// validation errors (400) or the new process' id.
    pub async fn start(
        &self,
        ctx: &RequestCtx,
        auth: &Auth,
        name: &str,
        inputs: Vec<Value>,
    ) -> Result<Uuid, StartError> {
        Self::may_operate(auth).map_err(StartError::Domain)?;
        self.engine.start(ctx, &auth.user_id(), name, inputs).await
    }

    /// Said after a start when no workflow worker runs anywhere: the process is queued, but
    /// nothing will run it until one starts (`muster serve` with workers, or `muster worker`).
    pub async fn no_worker_warning(&self) -> Option<&'static str> {
        if self.engine.worker_alive().await {
            return None;
        }
        tracing::warn!("a workflow was started, but no worker runs: it waits until one starts");
        Some(NO_WORKER)
    }

    /// One process with its steps and, while suspended at an input step, its form.
    pub async fn get(&self, auth: &Auth, id: &str) -> Result<ProcessView, DomainError> {
        Self::may_operate(auth)?;
        self.engine.process_view(parse_id(id, "process")?).await
    }

    /// Resumes a suspended (with its form's pages), failed or waiting process.
    pub async fn resume(&self, ctx: &RequestCtx, auth: &Auth, id: &str, inputs: Vec<Value>) -> Result<(), StartError> {
        Self::may_operate(auth).map_err(StartError::Domain)?;
        let id = parse_id(id, "process").map_err(StartError::Domain)?;
        self.engine.resume(ctx, &auth.user_id(), id, inputs).await
    }

    /// Aborts a process and undoes what it made.
    pub async fn abort(&self, ctx: &RequestCtx, auth: &Auth, id: &str) -> Result<(), DomainError> {
        Self::may_operate(auth)?;
        self.engine.abort(ctx, &auth.user_id(), parse_id(id, "process")?).await
    }

    /// An outside system reports back to a callback step: no person is involved; the token in
    /// the callback URL is the credential, checked by the engine in constant time.
    /// Answers the process id.
    pub async fn callback(&self, ctx: &RequestCtx, id: &str, token: &str, data: Value) -> Result<Uuid, DomainError> {
        let id = parse_id(id, "callback")?;
        self.engine.callback(ctx, id, token, data).await?;
        Ok(id)
    }

    /// A page of processes and the total.
    pub async fn list(&self, auth: &Auth, q: &ProcessQuery) -> Result<ProcessList, DomainError> {
        Self::may_operate(auth)?;
        self.engine.list(q).await
    }

    /// `{"process_counts": {status: n}, "task_counts": {status: n}}`.
    pub async fn status_counts(&self, auth: &Auth) -> Result<Value, DomainError> {
        Self::may_operate(auth)?;
        self.engine.status_counts().await
    }

    /// Whether the engine runs, is pausing or is paused, and how many processes run.
    pub async fn engine_status(&self, auth: &Auth) -> Result<EngineStatus, DomainError> {
        Self::may_operate(auth)?;
        self.engine.status().await
    }

    /// Pauses (workers finish their current step and claim nothing new) or resumes the engine.
    pub async fn set_paused(&self, ctx: &RequestCtx, auth: &Auth, paused: bool) -> Result<EngineStatus, DomainError> {
        Self::may_operate(auth)?;
        self.engine.set_paused(ctx, &auth.user_id(), paused).await
    }

    /// The version and step names of workflow `name`'s current definition (the catalogue is
    /// readable by every signed-in person).
    pub fn workflow_steps(&self, _auth: &Auth, name: &str) -> Option<(i32, Vec<&'static str>)> {
        self.engine.workflow(name).map(|def| (def.version, def.step_names()))
    }
}
