//! muster's domain core: identifiers, errors, the directory's rules and credential primitives.
//!
//! Nothing in this crate performs I/O. Storage, HTTP and the async runtime live in other crates;
//! the rules here are plain functions over plain data so they can be tested exhaustively.

pub mod audit;
pub mod clock;
pub mod credentials;
pub mod directory;
pub mod error;
pub mod ids;
mod names;
pub mod offering;
pub mod redact;
pub mod workflow;

pub use error::{DomainError, ErrorKind};
