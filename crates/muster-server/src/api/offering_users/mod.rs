//! `/api/marketplace-offering-users/`: offering accounts, on Waldur's wire contract (trailing
//! slashes, bare JSON arrays, `Link` and `X-Result-Count`, labels for states, Waldur's 400 for
//! invalid transitions). Callers authenticate with a session (`Bearer`) or, as hosting-site
//! agents do, with a provider API token (`Token`).
//!
//! One module per group of operations: `list` (the collection, its query language and paging),
//! `account` (create, read, rename, delete, history), `lifecycle` (the state transitions),
//! `fields` (comments, restriction, runtime state) and `posix` (the Unix identity). The
//! modules are private and their handlers re-exported here; the route table below is the one
//! place that registers them.

mod account;
mod fields;
mod lifecycle;
mod list;
mod posix;

pub use account::{create, destroy, history, patch_username, put_username, retrieve};
pub use fields::{RestrictedInput, update_comments, update_restricted, update_runtime_state};
pub use lifecycle::{
    OptionalJson, begin_creating, request_deletion, set_deleted, set_deleting, set_error_creating, set_error_deleting,
    set_ok, set_pending_account_linking, set_pending_additional_validation, set_validation_complete,
};
pub use list::{AccountListParams, OfferingUserListItem, list};
pub use posix::{posix_allocations, posix_identities, set_posix_attributes};

use crate::AppState;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list::list, account::create))
        .routes(routes!(
            account::retrieve,
            account::put_username,
            account::patch_username,
            account::destroy
        ))
        .routes(routes!(account::history))
        .routes(routes!(lifecycle::begin_creating))
        .routes(routes!(lifecycle::set_pending_account_linking))
        .routes(routes!(lifecycle::set_pending_additional_validation))
        .routes(routes!(lifecycle::set_validation_complete))
        .routes(routes!(lifecycle::set_ok))
        .routes(routes!(lifecycle::set_error_creating))
        .routes(routes!(lifecycle::request_deletion))
        .routes(routes!(lifecycle::set_deleting))
        .routes(routes!(lifecycle::set_deleted))
        .routes(routes!(lifecycle::set_error_deleting))
        .routes(routes!(fields::update_comments))
        .routes(routes!(fields::update_restricted))
        .routes(routes!(fields::update_runtime_state))
        .routes(routes!(posix::set_posix_attributes))
        .routes(routes!(posix::posix_allocations))
        .routes(routes!(posix::posix_identities))
}
