//! The OpenAPI document's frame: title, security scheme, tags.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

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
        (name = "audit", description = "The audit log"),
        (name = "events", description = "The event stream (JSON pages or Server-Sent Events)"),
        (name = "operations", description = "Health and metrics"),
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
