//! The OpenAPI document: its frame (title, security schemes, tags) and [`complete`], which
//! adds what every operation shares once the routes are merged.

use axum::http::StatusCode;
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Header, Ref, RefOr};
use utoipa::{Modify, OpenApi};

/// The media type of every error body (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "muster",
        description = "The system of record for people and their accounts: directory, provisioning workflows, offering accounts.\n\nErrors are `application/problem+json` (RFC 9457) with a stable `code`; Zato SSO sub-status codes (`E001002`, …) are used where one fits.",
        license(name = "Apache-2.0")
    ),
    modifiers(&SecurityAddon),
    tags(
        (name = "session", description = "Login, logout and sessions"),
        (name = "users", description = "The directory of users (Zato SSO semantics)"),
        (name = "password-reset", description = "Self-service password reset by mailed link"),
        (name = "signup", description = "Sign-up with confirmation by mail (when MUSTER_SIGNUP allows)"),
        (name = "mail", description = "The mail outbox: queued, sent and failed mail"),
        (name = "audit", description = "The audit log"),
        (name = "events", description = "The event stream (JSON pages or Server-Sent Events)"),
        (name = "operations", description = "Health and metrics"),
        (name = "processes", description = "Workflow runs and the engine (orchestrator-core's paths and form protocol)"),
        (name = "subscriptions", description = "Subscriptions: what the workflows made"),
        (name = "catalogue", description = "Products, product blocks and workflows (read-only)"),
        (name = "providers", description = "Service providers, their managers and API tokens, and offerings (Waldur's paths)"),
        (name = "offering-users", description = "Offering accounts and their lifecycle (Waldur's marketplace-offering-users contract)"),
    )
)]
pub struct ApiDoc;

struct SecurityAddon;

impl Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("Session token from POST /api/session"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Header(
                utoipa::openapi::security::ApiKeyValue::with_description(
                    "Authorization",
                    "Provider API token, sent as `Token <key>` (hosting-site agents)",
                ),
            )),
        );
    }
}

/// Adds to every operation the answers that come from the shared machinery rather than from
/// the handler (so no annotation can forget them), and serves every problem document as
/// `application/problem+json`:
///
/// - credentials are checked: 401;
/// - a JSON body is parsed: 400, 413, 415;
/// - path or query parameters are parsed: 400;
/// - everything reaches the database: 503 when it is unavailable;
/// - writes: 507 when its storage is full.
///
/// A problem answer an operation declares without a description of its own refers to the
/// shared one in `components/responses`, which says what the status means and which codes
/// come with it.
///
/// This runs on the merged document: `ApiDoc`'s own modifiers run before any route is added.
pub fn complete(doc: &mut utoipa::openapi::OpenApi) {
    describe_transitions(doc);
    for item in doc.paths.paths.values_mut() {
        for (method, op) in operations_mut(item) {
            add_shared_responses(method, op);
            for (status, response) in op.responses.responses.iter_mut() {
                let RefOr::T(inline) = response else { continue };
                problem_media_type(inline);
                if status == "429" && inline.content.get(PROBLEM_JSON).is_some_and(is_problem) {
                    inline
                        .headers
                        .entry("Retry-After".to_owned())
                        .or_insert_with(retry_after);
                }
                if let Some(shared) = SHARED.iter().find(|s| s.status == status.as_str())
                    && is_plain_problem(inline)
                {
                    *response = RefOr::Ref(Ref::from_response_name(shared.name));
                } else if inline.description.is_empty() {
                    inline.description = status
                        .parse::<u16>()
                        .ok()
                        .and_then(|s| StatusCode::from_u16(s).ok())
                        .and_then(|s| s.canonical_reason())
                        .unwrap_or("Success")
                        .to_owned();
                }
            }
        }
    }
    let components = doc.components.get_or_insert_with(Default::default);
    for shared in SHARED {
        let mut response = ResponseBuilder::new()
            .description(shared.description)
            .content(
                PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build();
        if shared.retry_after {
            response.headers.insert("Retry-After".to_owned(), retry_after());
        }
        components.responses.insert(shared.name.to_owned(), RefOr::T(response));
    }
}

fn retry_after() -> Header {
    let mut header = Header::new(ObjectBuilder::new().schema_type(SchemaType::Type(Type::Integer)));
    header.description = Some("Seconds to wait before trying again".to_owned());
    header
}

/// A problem answer every operation of a kind may give, declared once.
struct Shared {
    status: &'static str,
    name: &'static str,
    description: &'static str,
    retry_after: bool,
}

const SHARED: &[Shared] = &[
    Shared {
        status: "400",
        name: "BadRequest",
        description: "Invalid input: the body is not JSON (`malformed_json`), a field or parameter is unknown (`unknown_field`), missing (`E008003`) or invalid (`E008002` or a more specific code); `errors` names the fields",
        retry_after: false,
    },
    Shared {
        status: "401",
        name: "Unauthorized",
        description: "No valid credentials (`E007001`)",
        retry_after: false,
    },
    Shared {
        status: "403",
        name: "Forbidden",
        description: "The caller may not do this (`E005005` super-user required, or a more specific code)",
        retry_after: false,
    },
    Shared {
        status: "404",
        name: "NotFound",
        description: "No such resource, or none the caller may see (`not_found`)",
        retry_after: false,
    },
    Shared {
        status: "409",
        name: "Conflict",
        description: "The resource's current state does not allow this (`conflict` or a more specific code)",
        retry_after: false,
    },
    Shared {
        status: "413",
        name: "PayloadTooLarge",
        description: "The body is larger than this server accepts (`body_too_large`)",
        retry_after: false,
    },
    Shared {
        status: "415",
        name: "UnsupportedMediaType",
        description: "The body is not sent as `application/json` (`unsupported_media_type`)",
        retry_after: false,
    },
    Shared {
        status: "429",
        name: "TooManyRequests",
        description: "Too many failed attempts (`throttled`); `Retry-After` says when to try again",
        retry_after: true,
    },
    Shared {
        status: "503",
        name: "ServiceUnavailable",
        description: "The database is unavailable (`database_unavailable`); try again after `Retry-After` seconds",
        retry_after: true,
    },
    Shared {
        status: "507",
        name: "InsufficientStorage",
        description: "The server's storage is full (`storage_full`); nothing was written",
        retry_after: false,
    },
];

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", &mut item.get),
        ("put", &mut item.put),
        ("post", &mut item.post),
        ("delete", &mut item.delete),
        ("options", &mut item.options),
        ("head", &mut item.head),
        ("patch", &mut item.patch),
        ("trace", &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.as_mut().map(|op| (method, op)))
}

fn add_shared_responses(method: &str, op: &mut Operation) {
    // An operation whose requirements include the empty one may also be called without
    // credentials; it does not answer 401 for their absence.
    let authenticated = op
        .security
        .as_ref()
        .is_some_and(|reqs| !reqs.is_empty() && !reqs.contains(&SecurityRequirement::default()));
    let has_body = op.request_body.is_some();
    let parses_parameters = op
        .parameters
        .iter()
        .flatten()
        .any(|p| matches!(p.parameter_in, ParameterIn::Query | ParameterIn::Path));
    let writes = !matches!(method, "get" | "head" | "options");

    let mut statuses = Vec::new();
    if has_body || parses_parameters {
        statuses.push("400");
    }
    if authenticated {
        statuses.push("401");
    }
    if has_body {
        statuses.extend(["413", "415"]);
    }
    statuses.push("503");
    if writes {
        statuses.push("507");
    }
    for status in statuses {
        let Some(shared) = SHARED.iter().find(|s| s.status == status) else {
            continue;
        };
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(shared.name)));
    }
}

fn is_problem(content: &utoipa::openapi::Content) -> bool {
    matches!(&content.schema, Some(RefOr::Ref(r)) if r.ref_location == "#/components/schemas/Problem")
}

/// utoipa writes `application/json` for every `body = Problem`; the server sends
/// `application/problem+json`.
fn problem_media_type(response: &mut Response) {
    if response.content.get("application/json").is_some_and(is_problem)
        && let Some(content) = response.content.shift_remove("application/json")
    {
        response.content.insert(PROBLEM_JSON.to_owned(), content);
    }
}

/// A problem answer with nothing of its own (no description, headers or other content).
fn is_plain_problem(response: &Response) -> bool {
    response.description.is_empty()
        && response.headers.is_empty()
        && response.content.len() == 1
        && response.content.get(PROBLEM_JSON).is_some_and(is_problem)
}

/// Each lifecycle action's operation is described from the one transition table (its allowed
/// sources, its target, what it does to the comments), so that the document cannot disagree
/// with what the service enforces.
fn describe_transitions(doc: &mut utoipa::openapi::OpenApi) {
    use muster_core::offering::lifecycle::{self, Action};
    for action in Action::ALL {
        let path = format!("/api/marketplace-offering-users/{{uuid}}/{}/", action.name());
        let Some(op) = doc.paths.paths.get_mut(&path).and_then(|item| item.post.as_mut()) else {
            continue;
        };
        op.summary = Some(format!("{}: {}", action.name(), lifecycle::describe(action)));
        op.description = Some(format!(
            "{}\n\nFrom any other state: 400 naming the current state and the valid ones. \
             Allowed sources and target come from the lifecycle table (`muster_core::offering::lifecycle`).",
            lifecycle::describe(action)
        ));
    }
}
