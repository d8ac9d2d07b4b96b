//! What the API returns, in Waldur's field names and formats (UUIDs as 32 hex digits, states
//! and runtime states as labels, times as RFC 3339).

use muster_core::offering::lifecycle::{AccountState, RuntimeState};
use muster_core::offering::model::{
    Account, ApiToken, HistoryEntry, IdentityClaim, Offering, PosixPool, PosixSettings, Provider, UsernamePolicy, hex,
};
use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;

/// An offering account (Waldur's `OfferingUser`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OfferingUserView {
    pub url: String,
    pub uuid: String,
    /// The directory user's URL.
    pub user: String,
    /// The offering's URL.
    pub offering: String,
    /// The local account name at the site; null until the site names it.
    pub username: Option<String>,
    pub offering_uuid: String,
    pub offering_name: String,
    pub user_uuid: String,
    /// The directory username.
    pub user_username: String,
    pub user_full_name: String,
    pub user_email: Option<String>,
    /// The provider organisation.
    pub customer_uuid: String,
    pub customer_name: String,
    pub is_restricted: bool,
    pub state: AccountState,
    pub runtime_state: RuntimeState,
    pub service_provider_comment: String,
    pub service_provider_comment_url: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub modified: OffsetDateTime,
    /// Bumped by every change (muster addition).
    pub version: i64,
    /// The account's Unix identity (null when its offering has no POSIX pools); also in
    /// `backend_metadata` under Waldur's keys.
    pub uidnumber: Option<i64>,
    pub primarygroup: Option<i64>,
    pub login_shell: Option<String>,
    /// The home prefix and the username (null while the account has no name).
    pub home_directory: Option<String>,
    /// `{uidnumber, primarygroup, loginShell, homeDir}`; `{}` without a Unix identity.
    #[schema(value_type = Object)]
    pub backend_metadata: serde_json::Value,
}

impl From<&Account> for OfferingUserView {
    fn from(a: &Account) -> Self {
        Self {
            url: format!("/api/marketplace-offering-users/{}/", a.uuid),
            uuid: a.uuid.to_string(),
            user: format!("/api/users/{}", a.user_uuid),
            offering: format!("/api/marketplace-provider-offerings/{}/", a.offering_uuid),
            username: Some(a.username.clone()).filter(|u| !u.is_empty()),
            offering_uuid: a.offering_uuid.to_string(),
            offering_name: a.offering_name.clone(),
            user_uuid: hex(a.user_uuid),
            user_username: a.user_username.clone(),
            user_full_name: a.user_full_name.clone(),
            user_email: a.user_email.clone(),
            customer_uuid: a.provider_uuid.to_string(),
            customer_name: a.provider_name.clone(),
            is_restricted: a.is_restricted,
            state: a.state,
            runtime_state: a.runtime_state,
            service_provider_comment: a.comment.clone(),
            service_provider_comment_url: a.comment_url.clone(),
            created: a.created,
            modified: a.modified,
            version: a.version,
            uidnumber: a.posix.as_ref().map(|p| p.uid),
            primarygroup: a.posix.as_ref().map(|p| p.gid),
            login_shell: a.posix.as_ref().map(|p| p.login_shell.clone()),
            home_directory: a.posix.as_ref().and_then(|p| p.home_directory(&a.username)),
            backend_metadata: match &a.posix {
                Some(p) => serde_json::json!({
                    "uidnumber": p.uid,
                    "primarygroup": p.gid,
                    "loginShell": p.login_shell,
                    "homeDir": p.home_directory(&a.username),
                }),
                None => serde_json::json!({}),
            },
        }
    }
}

/// The answer of `update_comments`, as Waldur gives it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CommentsView {
    pub service_provider_comment: String,
    pub service_provider_comment_url: String,
}

/// One entry of an account's history.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HistoryView {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// A user's `user_id`, `token:<uuid>` for a provider token, or `system`.
    pub actor: Option<String>,
    pub action: String,
    pub from_state: Option<AccountState>,
    pub to_state: AccountState,
    pub comment: String,
    pub comment_url: String,
    /// The request id of the change.
    pub cid: String,
}

impl From<HistoryEntry> for HistoryView {
    fn from(h: HistoryEntry) -> Self {
        Self {
            at: h.at,
            actor: h.actor,
            action: h.action,
            from_state: h.from_state,
            to_state: h.to_state,
            comment: h.comment,
            comment_url: h.comment_url,
            cid: h.cid,
        }
    }
}

/// A service provider.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProviderView {
    pub url: String,
    pub uuid: String,
    pub name: String,
    /// Waldur identifies a provider's organisation as its customer; in muster they are one.
    pub customer_uuid: String,
    /// The provider's managers (directory user UUIDs); only shown to super-users and managers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managers: Option<Vec<String>>,
    /// The pool shared by the offerings whose `posix_pool` is `provider`; null: none.
    pub posix_settings: Option<PosixSettings>,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub modified: OffsetDateTime,
}

impl ProviderView {
    pub(crate) fn of(p: &Provider, managers: Option<Vec<uuid::Uuid>>) -> Self {
        Self {
            url: format!("/api/marketplace-service-providers/{}/", p.uuid),
            uuid: p.uuid.to_string(),
            name: p.name.clone(),
            customer_uuid: p.uuid.to_string(),
            managers: managers.map(|m| m.into_iter().map(hex).collect()),
            posix_settings: p.posix.clone(),
            created: p.created,
            modified: p.modified,
        }
    }
}

/// An offering.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OfferingView {
    pub url: String,
    pub uuid: String,
    pub name: String,
    pub slug: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub provider_uuid: String,
    pub customer_uuid: String,
    pub service_provider_can_create_offering_user: bool,
    pub username_generation_policy: UsernamePolicy,
    pub username_anonymized_prefix: String,
    pub username_identity_claim: IdentityClaim,
    /// Whose pool the accounts draw from: the offering's own or the provider's shared one.
    pub posix_pool: PosixPool,
    /// The settings of that pool (the provider's when `posix_pool` is `provider`); null when
    /// the offering's accounts get no Unix identity.
    pub posix_settings: Option<PosixSettings>,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub modified: OffsetDateTime,
}

impl From<&Offering> for OfferingView {
    fn from(o: &Offering) -> Self {
        Self {
            url: format!("/api/marketplace-provider-offerings/{}/", o.uuid),
            uuid: o.uuid.to_string(),
            name: o.name.clone(),
            slug: o.slug.clone(),
            kind: o.kind.clone(),
            provider_uuid: o.provider_uuid.to_string(),
            customer_uuid: o.provider_uuid.to_string(),
            service_provider_can_create_offering_user: o.provider_can_create,
            username_generation_policy: o.username_policy,
            username_anonymized_prefix: o.username_prefix.clone(),
            username_identity_claim: o.username_claim,
            posix_pool: o.posix_pool,
            posix_settings: o.posix.clone(),
            created: o.created,
            modified: o.modified,
        }
    }
}

/// A provider API token as listed: never the key.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApiTokenView {
    pub uuid: String,
    pub provider_uuid: String,
    pub name: String,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
}

impl From<&ApiToken> for ApiTokenView {
    fn from(t: &ApiToken) -> Self {
        Self {
            uuid: t.uuid.to_string(),
            provider_uuid: t.provider_uuid.to_string(),
            name: t.name.clone(),
            created_by: t.created_by.clone(),
            created: t.created,
        }
    }
}

/// A new token: the key is shown here once and never again.
#[derive(Serialize, utoipa::ToSchema)]
pub struct NewApiToken {
    #[serde(flatten)]
    pub token: ApiTokenView,
    /// Send as `Authorization: Token <key>`.
    pub key: String,
}

muster_core::debug_redacted!(NewApiToken { token } redact { key });

/// The event data of a change: identifiers and labels, nothing secret. `provider_uuid` decides
/// who may read it.
pub(crate) fn event_data(
    a: &Account,
    previous: Option<AccountState>,
    action: &str,
    changed: &[&str],
) -> serde_json::Value {
    json!({
        "offering_user_uuid": a.uuid.to_string(),
        "offering_uuid": a.offering_uuid.to_string(),
        "provider_uuid": a.provider_uuid.to_string(),
        "user_uuid": hex(a.user_uuid),
        "user_username": a.user_username,
        "username": a.username,
        "state": a.state.label(),
        "previous_state": previous.map(AccountState::label),
        "runtime_state": a.runtime_state.label(),
        "is_restricted": a.is_restricted,
        "action": action,
        "changed_fields": changed,
        "version": a.version,
    })
}
