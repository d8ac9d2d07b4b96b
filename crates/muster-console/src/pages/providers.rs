//! Providers: the hosting sites, their managers, offerings and API tokens (a new token's key
//! is shown once, on the page that created it; tokens can be revoked).

use crate::auth::{SecureCookies, Viewer};
use crate::layout::{Layout, render};
use crate::pages::{PageResult, done, when};
use crate::urls::FormData;
use askama::Template;
use axum::extract::{Path, State};
use muster_core::error::{DomainError, codes};
use muster_core::ids::UserId;
use muster_directory::{SearchInput, UserTarget};
use muster_offerings::{
    AddManagerInput, ApiTokenView, CreateApiTokenInput, CreateOfferingInput, CreateProviderInput, OfferingView,
    ProviderView,
};
use muster_server::AppState;

#[derive(Template)]
#[template(path = "providers.html")]
struct ProvidersPage {
    layout: Layout,
    providers: Vec<ProviderView>,
    super_user: bool,
    error: Option<String>,
}

impl ProvidersPage {
    fn when(&self, t: &time::OffsetDateTime) -> String {
        when(t)
    }
}

/// `GET /providers`.
pub async fn list(State(state): State<AppState>, viewer: Viewer) -> PageResult {
    let providers = state.offerings.list_providers(&viewer.caller()).await?;
    Ok(render(&ProvidersPage {
        layout: Layout::new(&viewer, "Providers", "providers"),
        providers,
        super_user: viewer.is_super_user(),
        error: None,
    }))
}

/// `POST /providers`: a new provider (super-users).
pub async fn create(
    State(state): State<AppState>,
    SecureCookies(secure): SecureCookies,
    viewer: Viewer,
    FormData(f): FormData,
) -> PageResult {
    let input = CreateProviderInput {
        name: f.get("name").unwrap_or("").to_owned(),
        posix_settings: None,
    };
    match state
        .offerings
        .create_provider(&viewer.ctx, &viewer.caller(), input)
        .await
    {
        Ok(p) => Ok(done(
            &format!("/providers/{}", p.uuid),
            &format!("Provider {} was created.", p.name),
            secure,
        )),
        Err(e) if e.kind == muster_core::ErrorKind::Invalid || e.kind == muster_core::ErrorKind::Conflict => {
            let providers = state.offerings.list_providers(&viewer.caller()).await?;
            Ok(render(&ProvidersPage {
                layout: Layout::new(&viewer, "Providers", "providers"),
                providers,
                super_user: viewer.is_super_user(),
                error: Some(e.message),
            }))
        }
        Err(e) => Err(e.into()),
    }
}

pub struct Manager {
    pub uuid: String,
    pub name: String,
}

#[derive(Template)]
#[template(path = "provider.html")]
struct ProviderPage {
    layout: Layout,
    p: ProviderView,
    managers: Vec<Manager>,
    offerings: Vec<OfferingView>,
    tokens: Vec<ApiTokenView>,
    super_user: bool,
    new_key: Option<(String, String)>,
    error: Option<String>,
}

impl ProviderPage {
    fn when(&self, t: &time::OffsetDateTime) -> String {
        when(t)
    }
}

async fn provider_page(state: &AppState, viewer: &Viewer, uuid: &str) -> Result<ProviderPage, DomainError> {
    let caller = viewer.caller();
    let p = state.offerings.get_provider(&caller, uuid).await?;
    let mut managers = Vec::new();
    for m in p.managers.clone().unwrap_or_default() {
        let name = match m.parse::<uuid::Uuid>() {
            Ok(u) => state
                .directory
                .get_user(&viewer.auth, UserTarget::Id(UserId::from_uuid(u)))
                .await
                .map(|v| v.username)
                .unwrap_or_else(|_| m.clone()),
            Err(_) => m.clone(),
        };
        managers.push(Manager { uuid: m, name });
    }
    let offerings = state
        .offerings
        .list_offerings(&caller)
        .await?
        .into_iter()
        .filter(|o| o.provider_uuid == p.uuid)
        .collect();
    let tokens = state.offerings.list_api_tokens(&caller, uuid).await?;
    Ok(ProviderPage {
        layout: Layout::new(viewer, format!("Provider {}", p.name), "providers"),
        p,
        managers,
        offerings,
        tokens,
        super_user: viewer.is_super_user(),
        new_key: None,
        error: None,
    })
}

/// `GET /providers/{uuid}`.
pub async fn detail(State(state): State<AppState>, viewer: Viewer, Path(uuid): Path<String>) -> PageResult {
    Ok(render(&provider_page(&state, &viewer, &uuid).await?))
}

/// `POST /providers/{uuid}/{action}`: add-manager, remove-manager, offering, token, revoke.
pub async fn act(
    State(state): State<AppState>,
    SecureCookies(secure): SecureCookies,
    viewer: Viewer,
    Path((uuid, action)): Path<(String, String)>,
    FormData(f): FormData,
) -> PageResult {
    let (ctx, caller) = (&viewer.ctx, viewer.caller());
    let o = &state.offerings;
    let here = format!("/providers/{uuid}");
    let result: Result<String, DomainError> = async {
        match action.as_str() {
            "add-manager" | "remove-manager" => {
                let user_uuid = match f.get("user_uuid") {
                    Some(u) => u.to_owned(),
                    None => {
                        let username = f.get("username").unwrap_or("").to_owned();
                        let found = state
                            .directory
                            .search_users(
                                &viewer.auth,
                                SearchInput {
                                    username: Some(username),
                                    page: 1,
                                    page_size: 1,
                                    ..Default::default()
                                },
                            )
                            .await?;
                        found
                            .result
                            .first()
                            .map(|u| u.uuid.simple().to_string())
                            .ok_or_else(|| {
                                DomainError::invalid_field(
                                    "username",
                                    codes::INVALID_INPUT,
                                    "no user has that username",
                                )
                            })?
                    }
                };
                let add = action == "add-manager";
                o.add_manager(ctx, &caller, &uuid, AddManagerInput { user_uuid }, add)
                    .await?;
                Ok(if add { "Manager added." } else { "Manager removed." }.to_owned())
            }
            "offering" => {
                let input = CreateOfferingInput {
                    name: f.get("name").unwrap_or("").to_owned(),
                    provider_uuid: uuid.clone(),
                    slug: f.get("slug").map(str::to_owned),
                    kind: f.get("type").map(str::to_owned),
                    service_provider_can_create_offering_user: Some(f.get("provider_can_create").is_some()),
                    username_generation_policy: None,
                    username_anonymized_prefix: None,
                    username_identity_claim: None,
                    posix_settings: None,
                    posix_pool: None,
                };
                let off = o.create_offering(ctx, &caller, input).await?;
                Ok(format!("Offering {} was created.", off.name))
            }
            "revoke" => {
                let token = f.get("token").unwrap_or("").to_owned();
                o.revoke_api_token(ctx, &caller, &uuid, &token).await?;
                Ok("The token was revoked: its key no longer works.".to_owned())
            }
            _ => Err(DomainError::not_found("action")),
        }
    }
    .await;
    if action == "token" {
        // The key is shown on this answer only: no redirect, nothing stored.
        let input = CreateApiTokenInput {
            name: f.get("name").unwrap_or("").to_owned(),
        };
        return match o.create_api_token(ctx, &caller, &uuid, input).await {
            Ok(t) => {
                let mut page = provider_page(&state, &viewer, &uuid).await?;
                page.new_key = Some((t.token.name.clone(), t.key));
                Ok(render(&page))
            }
            Err(e) if e.kind == muster_core::ErrorKind::Invalid => {
                let mut page = provider_page(&state, &viewer, &uuid).await?;
                page.error = Some(e.message);
                Ok(render(&page))
            }
            Err(e) => Err(e.into()),
        };
    }
    match result {
        Ok(msg) => Ok(done(&here, &msg, secure)),
        Err(e)
            if matches!(
                e.kind,
                muster_core::ErrorKind::Invalid | muster_core::ErrorKind::Conflict
            ) =>
        {
            let mut page = provider_page(&state, &viewer, &uuid).await?;
            page.error = Some(e.message);
            Ok(render(&page))
        }
        Err(e) => Err(e.into()),
    }
}
