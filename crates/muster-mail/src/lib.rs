//! muster's mail: templates ([`templates`]), SMTP ([`smtp`]) and the task that delivers the
//! outbox ([`delivery`]).
//!
//! Mail is never sent from a request: the change that causes a mail writes it to the outbox
//! in its own transaction (see `muster_store::Followups`), and [`delivery::run`] sends it,
//! retrying with back-off, so an SMTP outage or a crash loses nothing.

pub mod delivery;
pub mod smtp;
pub mod templates;

pub use delivery::{DeliveryOptions, Outbox};
pub use smtp::{SendError, Smtp};
pub use templates::{Rendered, Templates, kinds};
