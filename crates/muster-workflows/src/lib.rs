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

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::workflow::lifecycle::Target;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn every_workflow_is_registered_once_per_version_and_ends_in_done() {
        let all = workflows();
        let mut seen = BTreeSet::new();
        let mut latest: BTreeMap<&str, i32> = BTreeMap::new();
        for w in &all {
            assert!(seen.insert((w.name, w.version)), "{} v{} twice", w.name, w.version);
            let v = latest.entry(w.name).or_insert(w.version);
            *v = (*v).max(w.version);
            let steps = w.step_names();
            assert_eq!(steps.first(), Some(&"init"), "{}", w.name);
            assert_eq!(steps.last(), Some(&"done"), "{}", w.name);
            let names: BTreeSet<_> = steps.iter().collect();
            assert_eq!(names.len(), steps.len(), "{}: a step name twice", w.name);
            assert_eq!(
                w.is_task,
                w.target == Target::System,
                "{}: tasks are the system workflows",
                w.name
            );
        }
        // Older versions stay registered for processes already running: every version up to
        // the latest is there.
        for (name, last) in latest {
            for v in 1..=last {
                assert!(seen.contains(&(name, v)), "{name} v{v} is missing");
            }
        }
        // The products' four targets each have their workflow for both products.
        for name in [
            "create_user_group",
            "modify_user_group",
            "terminate_user_group",
            "validate_user_group",
        ] {
            assert!(seen.iter().any(|(n, _)| *n == name), "{name}");
            let user = name.replace("_group", "");
            assert!(seen.iter().any(|(n, _)| *n == user), "{user}");
        }
    }
}
