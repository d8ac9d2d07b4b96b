//! The lifecycle transitions of an offering account, one `POST` per action
//! (`begin_creating`, `set_ok`, `request_deletion`, ...). Every handler takes an optional body
//! and runs its action through the offerings service, which refuses a transition the table does
//! not allow with Waldur's 400.

use crate::AppState;
use crate::error::{ApiResult, Problem};
use crate::extract::{AnyCaller, ApiJson, ApiPath, Ctx};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::response::{IntoResponse, Response};
use muster_core::offering::lifecycle::Action;
use muster_offerings::{OfferingUserView, TransitionInput};
use serde::de::DeserializeOwned;

/// A JSON body that may be absent: an empty body is `T::default()`; anything else must parse
/// strictly, like [`ApiJson`].
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        ApiJson::<T>::from_request(req, state)
            .await
            .map(|ApiJson(v)| OptionalJson(v))
    }
}

async fn run(
    state: AppState,
    ctx: muster_core::audit::RequestCtx,
    caller: muster_directory::Caller,
    uuid: String,
    action: Action,
    input: TransitionInput,
) -> ApiResult<Json<OfferingUserView>> {
    Ok(Json(
        state.offerings.transition(&ctx, &caller, &uuid, action, input).await?,
    ))
}

/// Declares the handler of one lifecycle action. The paths are written out in each
/// `utoipa::path` so the OpenAPI document lists every action.
macro_rules! action {
    ($(#[$m:meta])* $name:ident, $action:expr) => {
        $(#[$m])*
        pub async fn $name(
            State(state): State<AppState>,
            Ctx(ctx): Ctx,
            AnyCaller(caller): AnyCaller,
            ApiPath(uuid): ApiPath<String>,
            OptionalJson(input): OptionalJson<TransitionInput>,
        ) -> ApiResult<Json<OfferingUserView>> {
            run(state, ctx, caller, uuid, $action, input).await
        }
    };
}

action!(
    /// A lifecycle transition; its summary and description are generated from the table.
    #[utoipa::path(post, operation_id = "offering_user_begin_creating", path = "/api/marketplace-offering-users/{uuid}/begin_creating/", tag = "offering-users",
        security(("session" = []), ("token" = [])), params(("uuid" = String, Path)),
        responses((status = 200, body = OfferingUserView), (status = 400, body = Problem, description = "Invalid transition: `detail` names the current state and the valid ones"),
            (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
    begin_creating,
    Action::BeginCreating
);

action!(
    /// A lifecycle transition; its summary and description are generated from the table.
    #[utoipa::path(post, operation_id = "offering_user_set_pending_account_linking", path = "/api/marketplace-offering-users/{uuid}/set_pending_account_linking/", tag = "offering-users",
        security(("session" = []), ("token" = [])), params(("uuid" = String, Path)), request_body(content = TransitionInput, description = "Optional"),
        responses((status = 200, body = OfferingUserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
    set_pending_account_linking,
    Action::SetPendingAccountLinking
);

action!(
    /// A lifecycle transition; its summary and description are generated from the table.
    #[utoipa::path(post, operation_id = "offering_user_set_pending_additional_validation", path = "/api/marketplace-offering-users/{uuid}/set_pending_additional_validation/", tag = "offering-users",
        security(("session" = []), ("token" = [])), params(("uuid" = String, Path)), request_body(content = TransitionInput, description = "Optional"),
        responses((status = 200, body = OfferingUserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
    set_pending_additional_validation,
    Action::SetPendingAdditionalValidation
);

action!(
    /// A lifecycle transition; its summary and description are generated from the table.
    #[utoipa::path(post, operation_id = "offering_user_set_validation_complete", path = "/api/marketplace-offering-users/{uuid}/set_validation_complete/", tag = "offering-users",
        security(("session" = []), ("token" = [])), params(("uuid" = String, Path)),
        responses((status = 200, body = OfferingUserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
    set_validation_complete,
    Action::SetValidationComplete
);

action!(
    /// A lifecycle transition; its summary and description are generated from the table.
    #[utoipa::path(post, operation_id = "offering_user_set_ok", path = "/api/marketplace-offering-users/{uuid}/set_ok/", tag = "offering-users",
        security(("session" = []), ("token" = [])), params(("uuid" = String, Path)),
        responses((status = 200, body = OfferingUserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
    set_ok,
    Action::SetOk
);

action!(
    /// A lifecycle transition; its summary and description are generated from the table.
    #[utoipa::path(post, operation_id = "offering_user_set_error_creating", path = "/api/marketplace-offering-users/{uuid}/set_error_creating/", tag = "offering-users",
        security(("session" = []), ("token" = [])), params(("uuid" = String, Path)),
        responses((status = 200, body = OfferingUserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
    set_error_creating,
    Action::SetErrorCreating
);

action!(
    /// A lifecycle transition; its summary and description are generated from the table.
    #[utoipa::path(post, operation_id = "offering_user_request_deletion", path = "/api/marketplace-offering-users/{uuid}/request_deletion/", tag = "offering-users",
        security(("session" = []), ("token" = [])), params(("uuid" = String, Path)),
        responses((status = 200, body = OfferingUserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
    request_deletion,
    Action::RequestDeletion
);

action!(
    /// A lifecycle transition; its summary and description are generated from the table.
    #[utoipa::path(post, operation_id = "offering_user_set_deleting", path = "/api/marketplace-offering-users/{uuid}/set_deleting/", tag = "offering-users",
        security(("session" = []), ("token" = [])), params(("uuid" = String, Path)),
        responses((status = 200, body = OfferingUserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
    set_deleting,
    Action::SetDeleting
);

action!(
    /// A lifecycle transition; its summary and description are generated from the table.
    #[utoipa::path(post, operation_id = "offering_user_set_deleted", path = "/api/marketplace-offering-users/{uuid}/set_deleted/", tag = "offering-users",
        security(("session" = []), ("token" = [])), params(("uuid" = String, Path)),
        responses((status = 200, body = OfferingUserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
    set_deleted,
    Action::SetDeleted
);

action!(
    /// A lifecycle transition; its summary and description are generated from the table.
    #[utoipa::path(post, operation_id = "offering_user_set_error_deleting", path = "/api/marketplace-offering-users/{uuid}/set_error_deleting/", tag = "offering-users",
        security(("session" = []), ("token" = [])), params(("uuid" = String, Path)),
        responses((status = 200, body = OfferingUserView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
    set_error_deleting,
    Action::SetErrorDeleting
);
