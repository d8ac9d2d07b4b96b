//! The durable step engine.
//!
//! A [`Workflow`] is an ordered list of named [`Step`]s (orchestrator-core's
//! `init >> step >> … >> done`). Starting one stores a process row that is also its queue
//! entry; workers ([`worker`]) claim queued processes with a lease and run their steps. Each
//! step's own writes, its step-log row and the fenced update of the process row commit in one
//! transaction, so a crash at any point leaves either the whole step or none of it, and a
//! process whose worker died is claimed again once its lease expires and carries on from its
//! last committed step: exactly once.
//!
//! Processes are pinned to the version of their workflow and resume by step *name*, so a new
//! version of a workflow never derails processes already in flight.
//!
//! The engine knows processes and, because workflows hold their subscription one at a time,
//! the subscription lock; it knows nothing of users or products.

mod callback_token;
mod definition;
mod engine;
mod runner;
pub mod scheduler;
mod view;
pub mod worker;

pub use definition::{
    AbortFn, FormFail, FormFn, FormFuture, PrepareFn, State, Step, StepCtx, StepError, StepFn, StepFuture, StepOutcome,
    Workflow,
};
pub use engine::{Engine, EngineConfig, EngineStatus, EventHookTaken, StartError};
pub use view::{ProcessList, ProcessView, StepView};
