//! The directory's rules, after Zato SSO's user API: what a user is, how a new one is filled in,
//! who may change what, and when a login is allowed.

pub mod config;
pub mod create;
pub mod login;
pub mod policy;
pub mod throttle;
pub mod update;
pub mod user;
pub mod username;
pub mod validate;

pub use config::DirectoryConfig;
pub use user::{ApprovalStatus, SignUpStatus, User, UserView};
