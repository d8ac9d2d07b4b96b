//! The products User Group, User internal and User external, and their workflows
//! (after the User / UserGroup example of orchestrator-core's documentation,
//! <https://workfloworchestrator.org/orchestrator-core/>), written on `muster-engine`.
//!
//! - [`catalogue`]: the product catalogue, loaded once (it is seeded by migration);
//! - [`subscriptions`]: reading subscriptions (domain model, lists, which workflows may start);
//! - [`model`]: changing a subscription inside a step, with the lifecycle rules;
//! - [`forms`]: the pages the workflows share (product choice, subscription choice, groups);
//! - [`user_group`], [`user`]: the eight workflows; [`tasks`]: the scheduled tasks;
//! - [`accounts`], [`membership`]: offering accounts that follow group membership.

pub mod accounts;
pub mod catalogue;
pub mod forms;
pub mod membership;
pub mod model;
pub mod processes;
pub mod subscriptions;
pub mod tasks;
pub mod user;
pub mod user_group;

use muster_directory::Directory;
use muster_engine::{Engine, Workflow};
use std::sync::{Arc, OnceLock};

pub use catalogue::Catalogue;
pub use processes::Processes;
pub use subscriptions::Subscriptions;

/// What the workflows' steps and forms use.
pub struct Deps {
    pub directory: Directory,
    pub catalogue: Arc<Catalogue>,
    /// Offering accounts: requested and retired as users join and leave groups.
    pub offerings: muster_offerings::Offerings,
    /// The engine itself, for tasks that start other workflows. Set once, after the engine
    /// is built (the engine owns these deps).
    engine: OnceLock<Engine<Deps>>,
    /// How long events are kept (`task_clean_up_events`); None keeps them for ever.
    pub event_retention: Option<time::Duration>,
}

impl Deps {
    pub fn new(directory: Directory, catalogue: Arc<Catalogue>) -> Self {
        let offerings = muster_offerings::Offerings::new(directory.store().clone());
        Self {
            directory,
            catalogue,
            offerings,
            engine: OnceLock::new(),
            event_retention: None,
        }
    }

    pub fn engine(&self) -> Option<&Engine<Deps>> {
        self.engine.get()
    }
}

/// Every workflow muster ships.
pub fn workflows() -> Vec<Workflow<Deps>> {
    vec![
        user_group::create(),
        user_group::modify_v1(),
        user_group::modify(),
        user_group::terminate(),
        user_group::validate_v1(),
        user_group::validate(),
        user::create(),
        user::modify_v1(),
        user::modify(),
        user::terminate_v1(),
        user::terminate(),
        user::validate_v1(),
        user::validate(),
        tasks::validate_subscriptions(),
        tasks::resume_workflows(),
        tasks::clean_up_tasks(),
        tasks::clean_up_events(),
        tasks::reconcile_offering_accounts(),
    ]
}

/// Builds the engine over the shipped workflows.
pub fn engine(
    store: muster_store::Store,
    directory: Directory,
    catalogue: Arc<Catalogue>,
    config: muster_engine::EngineConfig,
    event_retention: Option<time::Duration>,
) -> Engine<Deps> {
    let deps = Arc::new(Deps {
        event_retention,
        ..Deps::new(directory, catalogue)
    });
    let engine = Engine::new(store, deps.clone(), workflows(), config);
    let _ = deps.engine.set(engine.clone());
    engine
}

/// Shorthand for writing a step: `step!(name, |ctx| { … })`.
#[macro_export]
macro_rules! step {
    ($name:ident, |$ctx:ident| $body:block) => {
        pub fn $name($ctx: &mut muster_engine::StepCtx<$crate::Deps>) -> muster_engine::StepFuture<'_> {
            Box::pin(async move { $body })
        }
    };
}
