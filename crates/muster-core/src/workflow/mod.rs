//! Subscriptions, processes and forms: the rules of orchestrator-core's model, without I/O.
//!
//! - [`status`]: process and step statuses and the process state machine;
//! - [`lifecycle`]: subscription statuses, their transitions, which workflows a status allows,
//!   and which statuses the users of a subscription may have when it changes;
//! - [`product`]: the User and UserGroup domain models and the fields each lifecycle requires;
//! - [`form`]: form pages, their JSON Schema and validation, and the replayed multi-page run.

pub mod form;
pub mod lifecycle;
pub mod product;
pub mod status;

pub use lifecycle::{SubscriptionStatus, Target};
pub use status::{ProcessStatus, StepStatus};
