//! How workflows are written: named steps, forms, compensation.

use muster_core::error::DomainError;
use muster_core::workflow::Target;
use muster_core::workflow::form::{FormRun, FormStop};
use muster_store::{Store, StoreError, StoreTx};
use serde_json::{Map, Value};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// A process's state: a JSON object; each step's output is merged into it (shallow, later keys
/// win), as in orchestrator-core.
pub type State = Map<String, Value>;

pub type StepFuture<'a> = Pin<Box<dyn Future<Output = Result<StepOutcome, StepError>> + Send + 'a>>;
/// A step: reads the state and dependencies from the context, may write through
/// [`StepCtx::tx`], returns what to merge into the state.
pub type StepFn<D> = for<'a> fn(&'a mut StepCtx<D>) -> StepFuture<'a>;

pub type FormFuture<'a> = Pin<Box<dyn Future<Output = Result<(), FormFail>> + Send + 'a>>;
/// A form: asks its pages of `run` in turn (each call validates the next posted page or stops
/// with its schema). Gets the process state (empty for a start form).
pub type FormFn<D> = for<'a> fn(&'a D, &'a State, &'a mut FormRun) -> FormFuture<'a>;

/// Turns a complete start form into the initial state, outside any transaction: where slow
/// work (hashing a password) or secrets are dealt with, so that neither lands in the state.
pub type PrepareFn<D> =
    for<'a> fn(&'a D, State) -> Pin<Box<dyn Future<Output = Result<State, DomainError>> + Send + 'a>>;

/// Compensation when a process is aborted: undoes what its steps made, in the abort's
/// transaction.
pub type AbortFn<D> = for<'a> fn(
    &'a D,
    &'a mut StoreTx,
    &'a State,
    Uuid,
) -> Pin<Box<dyn Future<Output = Result<(), StepError>> + Send + 'a>>;

/// Why a form run stopped: the form protocol's answers, or a failure behind it.
#[derive(Debug)]
pub enum FormFail {
    Stop(FormStop),
    Error(DomainError),
}

impl From<FormStop> for FormFail {
    fn from(s: FormStop) -> Self {
        Self::Stop(s)
    }
}

impl From<DomainError> for FormFail {
    fn from(e: DomainError) -> Self {
        Self::Error(e)
    }
}

impl From<StoreError> for FormFail {
    fn from(e: StoreError) -> Self {
        Self::Error(e.into())
    }
}

/// What a step did.
#[derive(Debug)]
pub enum StepOutcome {
    /// Carry on; merge this into the state.
    Success(State),
    /// Nothing to do.
    Skipped,
}

impl StepOutcome {
    pub fn merge(pairs: impl IntoIterator<Item = (&'static str, Value)>) -> Self {
        Self::Success(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    pub fn nothing() -> Self {
        Self::Success(State::new())
    }
}

/// A step's failure: a readable reason, and details for the step log.
#[derive(Debug, Clone)]
pub struct StepError {
    pub message: String,
    pub details: Option<Value>,
    /// The database failed (unreachable, full, a commit's outcome lost), not the step: the
    /// engine keeps the process and runs the step again when the database is back, instead of
    /// failing the process.
    pub transient: bool,
}

impl StepError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            details: None,
            transient: false,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<StoreError> for StepError {
    fn from(e: StoreError) -> Self {
        let transient = e.is_transient();
        Self {
            transient,
            ..Self::new(e.to_string())
        }
    }
}

impl From<DomainError> for StepError {
    fn from(e: DomainError) -> Self {
        Self {
            transient: e.is_transient(),
            ..Self::new(e.message.clone()).with_details(serde_json::json!({ "code": e.code }))
        }
    }
}

/// What a step function gets.
pub struct StepCtx<D> {
    pub deps: Arc<D>,
    /// The state before this step.
    pub state: State,
    pub process_id: Uuid,
    /// Who started (or resumed) the process.
    pub actor: String,
    /// Where an outside system posts for a callback step (set for callback actions).
    pub callback_route: Option<String>,
    pub(crate) store: Store,
    pub(crate) tx: Option<StoreTx>,
    pub(crate) now: time::OffsetDateTime,
}

impl<D> StepCtx<D> {
    /// The step's transaction. Plain steps get one from the engine (consecutive steps may
    /// share one, each in a savepoint); retry and callback steps, which may wait on outside
    /// systems, have it opened on first use, so slow work done before holds no transaction.
    pub async fn tx(&mut self) -> Result<&mut StoreTx, StepError> {
        if self.tx.is_none() {
            self.tx = Some(self.store.begin().await?);
        }
        self.tx
            .as_mut()
            .ok_or_else(|| StepError::new("transaction unavailable"))
    }

    /// The time the step started.
    pub fn now(&self) -> time::OffsetDateTime {
        self.now
    }

    pub fn str(&self, key: &str) -> Result<&str, StepError> {
        self.state
            .get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| StepError::new(format!("state has no text `{key}`")))
    }

    pub fn uuid(&self, key: &str) -> Result<Uuid, StepError> {
        self.str(key)?
            .parse()
            .map_err(|_| StepError::new(format!("state `{key}` is not a uuid")))
    }

    pub fn opt_i64(&self, key: &str) -> Option<i64> {
        self.state.get(key).and_then(Value::as_i64)
    }
}

pub(crate) enum StepKind<D> {
    /// Runs once; an error fails the process.
    Run(StepFn<D>),
    /// An error puts the process in `waiting`; it is retried with exponential back-off.
    Retry(StepFn<D>),
    /// Suspends the process until its form is submitted through `PUT /resume`.
    Input { form: FormFn<D>, assignee: &'static str },
    /// Runs `action` (which gets [`StepCtx::callback_route`]), then waits for an outside
    /// system to post to the route, at most `timeout`.
    Callback { action: StepFn<D>, timeout: Duration },
    /// The end: the process completes.
    Done,
}

/// One named step.
pub struct Step<D> {
    pub(crate) name: &'static str,
    pub(crate) kind: StepKind<D>,
    /// Runs only when this holds for the state; otherwise logged as `skipped`.
    pub(crate) when: Option<fn(&State) -> bool>,
}

impl<D> Step<D> {
    pub fn new(name: &'static str, f: StepFn<D>) -> Self {
        Self {
            name,
            kind: StepKind::Run(f),
            when: None,
        }
    }

    pub fn retry(name: &'static str, f: StepFn<D>) -> Self {
        Self {
            name,
            kind: StepKind::Retry(f),
            when: None,
        }
    }

    pub fn input(name: &'static str, form: FormFn<D>) -> Self {
        Self {
            name,
            kind: StepKind::Input {
                form,
                assignee: "SYSTEM",
            },
            when: None,
        }
    }

    pub fn callback(name: &'static str, action: StepFn<D>, timeout: Duration) -> Self {
        Self {
            name,
            kind: StepKind::Callback { action, timeout },
            when: None,
        }
    }

    /// Runs this step only when `pred` holds (orchestrator-core's `conditional`).
    pub fn when(mut self, pred: fn(&State) -> bool) -> Self {
        self.when = Some(pred);
        self
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// A workflow definition: `Workflow::new(..).step(..).step(..)`, ending in `done` implicitly.
pub struct Workflow<D> {
    pub name: &'static str,
    /// Bumped whenever the steps change; processes keep the version they started with.
    pub version: i32,
    pub target: Target,
    pub description: &'static str,
    pub is_task: bool,
    pub(crate) form: Option<FormFn<D>>,
    pub(crate) prepare: Option<PrepareFn<D>>,
    pub(crate) on_abort: Option<AbortFn<D>>,
    pub(crate) steps: Vec<Step<D>>,
}

/// The name of the first and the last step of every workflow.
pub const INIT: &str = "init";
pub const DONE: &str = "done";

impl<D> Workflow<D> {
    pub fn new(name: &'static str, version: i32, target: Target, description: &'static str) -> Self {
        Self {
            name,
            version,
            target,
            description,
            is_task: false,
            form: None,
            prepare: None,
            on_abort: None,
            steps: vec![Step::new(INIT, init_step)],
        }
    }

    pub fn task(mut self) -> Self {
        self.is_task = true;
        self
    }

    pub fn form(mut self, form: FormFn<D>) -> Self {
        self.form = Some(form);
        self
    }

    pub fn prepare(mut self, prepare: PrepareFn<D>) -> Self {
        self.prepare = Some(prepare);
        self
    }

    pub fn on_abort(mut self, f: AbortFn<D>) -> Self {
        self.on_abort = Some(f);
        self
    }

    pub fn step(mut self, step: Step<D>) -> Self {
        self.steps.push(step);
        self
    }

    /// Shorthand for `.step(Step::new(name, f))`.
    pub fn then(self, name: &'static str, f: StepFn<D>) -> Self {
        self.step(Step::new(name, f))
    }

    /// Closes the list with `done`.
    pub fn done(mut self) -> Self {
        self.steps.push(Step {
            name: DONE,
            kind: StepKind::Done,
            when: None,
        });
        self
    }

    pub fn step_names(&self) -> Vec<&'static str> {
        self.steps.iter().map(|s| s.name).collect()
    }

    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }

    /// The step after `name`.
    pub(crate) fn after(&self, name: &str) -> Option<&'static str> {
        self.position(name).and_then(|i| self.steps.get(i + 1)).map(|s| s.name)
    }

    pub(crate) fn step_named(&self, name: &str) -> Option<&Step<D>> {
        self.steps.iter().find(|s| s.name == name)
    }
}

fn init_step<D>(_: &mut StepCtx<D>) -> StepFuture<'_> {
    Box::pin(async { Ok(StepOutcome::nothing()) })
}
