//! Service providers, their managers, offerings and provider API tokens.
//!
//! Providers and offerings are created and changed by super-users. A provider's managers (and
//! super-users) mint and revoke its API tokens; a token cannot mint tokens.

use crate::views::{ApiTokenView, NewApiToken, OfferingView, ProviderView};
use crate::{Actor, Offerings, forbidden, store_error};
use muster_core::audit::{AuditEntry, RequestCtx, actions};
use muster_core::clock;
use muster_core::credentials::token;
use muster_core::error::{DomainError, codes};
use muster_core::offering::model::{
    ApiToken, ApiTokenUuid, IdentityClaim, Offering, OfferingUuid, PosixPool, PosixSettings, Provider, ProviderUuid,
    UsernamePolicy, hex,
};
use muster_core::offering::naming;
use muster_directory::Caller;
use serde::Deserialize;
use serde_json::json;

const MAX_NAME: usize = 150;

/// `POST /api/marketplace-service-providers/`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProviderInput {
    pub name: String,
    /// A uid/gid pool shared by the provider's offerings whose `posix_pool` is `provider`:
    /// a person gets one uid and primary gid on all of them.
    pub posix_settings: Option<PosixSettings>,
}

/// `PATCH /api/marketplace-service-providers/{uuid}/`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProviderInput {
    pub name: Option<String>,
    /// Sets (or changes) the shared pool; identities already allocated keep their numbers.
    pub posix_settings: Option<PosixSettings>,
}

/// `POST …/{uuid}/add_manager/` and `…/remove_manager/`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddManagerInput {
    /// The directory user's UUID.
    pub user_uuid: String,
}

/// `POST /api/marketplace-provider-offerings/`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOfferingInput {
    pub name: String,
    pub provider_uuid: String,
    /// Unique; default: derived from the name.
    pub slug: Option<String>,
    /// Waldur's offering type; default `Marketplace.Basic`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Whether the provider may create accounts (Waldur's plugin option); default true.
    pub service_provider_can_create_offering_user: Option<bool>,
    /// Default `service_provider` (the site's agent names accounts).
    pub username_generation_policy: Option<UsernamePolicy>,
    /// The `anonymized` policy's prefix: a lower-case letter first, then login-name
    /// characters, at most 27; default `walduruser_`.
    pub username_anonymized_prefix: Option<String>,
    /// The directory attribute the `identity_claim` policy uses; default `username`.
    pub username_identity_claim: Option<IdentityClaim>,
    /// The uid/gid pools, home prefix and login shell of the offering's accounts; absent: the
    /// accounts get no Unix identity (unless `posix_pool` is `provider`).
    pub posix_settings: Option<PosixSettings>,
    /// `offering` (default): the offering's own `posix_settings`; `provider`: the provider's
    /// shared pool (then `posix_settings` must be absent).
    pub posix_pool: Option<PosixPool>,
}

/// `PATCH /api/marketplace-provider-offerings/{uuid}/`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOfferingInput {
    pub name: Option<String>,
    pub slug: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub service_provider_can_create_offering_user: Option<bool>,
    /// Changing the policy never renames existing accounts.
    pub username_generation_policy: Option<UsernamePolicy>,
    pub username_anonymized_prefix: Option<String>,
    pub username_identity_claim: Option<IdentityClaim>,
    /// Sets (or changes) the pools; numbers already handed out stay taken.
    pub posix_settings: Option<PosixSettings>,
    /// Switches between the offering's own pool and the provider's: only while none of the
    /// offering's accounts has a Unix identity (409 `posix_pool_in_use`).
    pub posix_pool: Option<PosixPool>,
}

/// `POST /api/marketplace-service-providers/{uuid}/api_tokens/`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiTokenInput {
    /// What the token is for, e.g. `slurm-agent@cluster1`.
    pub name: String,
}

/// Largest uid/gid muster hands out (2^31 - 2: `-1` and `2^31 - 1` mean "none" to some tools).
const MAX_ID: i64 = (1 << 31) - 2;

fn check_posix(p: PosixSettings) -> Result<PosixSettings, DomainError> {
    let bad = |msg: &str| DomainError::invalid_field("posix_settings", codes::INVALID_INPUT, msg.to_owned());
    let range = |min: i64, max: i64| (1..=MAX_ID).contains(&min) && (min..=MAX_ID).contains(&max);
    if !range(p.uid_min, p.uid_max) || !range(p.gid_min, p.gid_max) {
        return Err(bad(&format!("each range needs 1 <= min <= max <= {MAX_ID}")));
    }
    if p.shared_gid.is_some_and(|g| !(0..=MAX_ID).contains(&g)) {
        return Err(bad("shared_gid is out of range"));
    }
    let path =
        |v: &str| v.starts_with('/') && v.len() <= 255 && !v.contains("..") && v.chars().all(|c| c.is_ascii_graphic());
    if !path(&p.home_prefix) || !p.home_prefix.ends_with('/') {
        return Err(bad("home_prefix must be an absolute path ending with /"));
    }
    if !path(&p.login_shell) || p.login_shell.ends_with('/') {
        return Err(bad("login_shell must be an absolute path"));
    }
    Ok(p)
}

/// Settings given to an offering that draws from its provider's pool.
fn settings_of_provider_pool() -> DomainError {
    DomainError::invalid_field(
        "posix_settings",
        codes::INVALID_INPUT,
        "the offering draws from its provider's pool (posix_pool = provider): set posix_settings on the provider",
    )
}

fn check_prefix(prefix: &str) -> Result<String, DomainError> {
    if naming::is_valid_prefix(prefix) {
        Ok(prefix.to_owned())
    } else {
        Err(DomainError::invalid_field(
            "username_anonymized_prefix",
            codes::INVALID_INPUT,
            format!(
                "a lower-case letter first, then lower-case letters, digits, _, . or -, at most {} characters",
                naming::MAX_PREFIX
            ),
        ))
    }
}

fn check_name(field: &str, name: &str) -> Result<String, DomainError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(DomainError::invalid_field(
            field,
            codes::INVALID_INPUT,
            format!("{field} must be 1 to {MAX_NAME} printable characters"),
        ));
    }
    Ok(name.to_owned())
}

fn check_slug(slug: &str) -> Result<String, DomainError> {
    let ok = !slug.is_empty()
        && slug.len() <= 100
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(slug.to_owned())
    } else {
        Err(DomainError::invalid_field(
            "slug",
            codes::INVALID_INPUT,
            "slug must be 1 to 100 of a-z, 0-9, - and _",
        ))
    }
}

fn slugify(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out: String = out.trim_end_matches('-').chars().take(90).collect();
    if out.is_empty() { "offering".to_owned() } else { out }
}

pub(crate) fn parse_uuid(field: &str, text: &str) -> Result<uuid::Uuid, DomainError> {
    uuid::Uuid::parse_str(text.trim())
        .map_err(|_| DomainError::invalid_field(field, codes::INVALID_INPUT, format!("{field} must be a UUID")))
}

fn provider_not_found() -> DomainError {
    DomainError::not_found("service provider")
}

impl Offerings {
    fn entry(ctx: &RequestCtx, caller: &Caller, action: &'static str, target: String) -> AuditEntry {
        AuditEntry::new(&caller.ctx(ctx.clone()), action, Some(caller.actor()), Some(target))
    }

    // --- providers ---------------------------------------------------------------------------

    pub async fn create_provider(
        &self,
        ctx: &RequestCtx,
        caller: &Caller,
        input: CreateProviderInput,
    ) -> Result<ProviderView, DomainError> {
        if !caller.is_super_user() {
            return Err(DomainError::super_user_required());
        }
        let now = clock::now();
        let p = Provider {
            uuid: ProviderUuid::new_random(),
            name: check_name("name", &input.name)?,
            posix: input.posix_settings.map(check_posix).transpose()?,
            created: now,
            modified: now,
        };
        let audit = Self::entry(ctx, caller, actions::PROVIDER_CREATE, p.uuid.to_string())
            .with_details(json!({"name": p.name}));
        self.store.insert_provider(&p, &audit).await.map_err(store_error)?;
        Ok(ProviderView::of(&p, Some(Vec::new())))
    }

    /// Whether `caller` manages `provider` (super-users manage all).
    async fn manages(&self, caller: &Caller, provider: ProviderUuid) -> Result<bool, DomainError> {
        let scope = self.scope(Actor::Caller(caller)).await?;
        Ok(scope.can_manage(provider.0))
    }

    /// A provider, for super-users, its managers and its tokens; invisible to others.
    pub async fn get_provider(&self, caller: &Caller, uuid: &str) -> Result<ProviderView, DomainError> {
        let uuid = ProviderUuid::parse(uuid).ok_or_else(provider_not_found)?;
        if !self.manages(caller, uuid).await? {
            return Err(provider_not_found());
        }
        let p = self
            .store
            .provider(uuid)
            .await
            .map_err(store_error)?
            .ok_or_else(provider_not_found)?;
        let managers = self.store.provider_managers(uuid).await.map_err(store_error)?;
        Ok(ProviderView::of(&p, Some(managers)))
    }

    /// The providers the caller manages (all for super-users).
    pub async fn list_providers(&self, caller: &Caller) -> Result<Vec<ProviderView>, DomainError> {
        let scope = self.scope(Actor::Caller(caller)).await?;
        let only = (!scope.super_user).then_some(scope.providers.as_slice());
        let list = self.store.list_providers(only).await.map_err(store_error)?;
        Ok(list.iter().map(|p| ProviderView::of(p, None)).collect())
    }

    pub async fn update_provider(
        &self,
        ctx: &RequestCtx,
        caller: &Caller,
        uuid: &str,
        input: UpdateProviderInput,
    ) -> Result<ProviderView, DomainError> {
        let uuid = ProviderUuid::parse(uuid).ok_or_else(provider_not_found)?;
        if !caller.is_super_user() {
            return Err(if self.manages(caller, uuid).await? {
                DomainError::super_user_required()
            } else {
                provider_not_found()
            });
        }
        let mut p = self
            .store
            .provider(uuid)
            .await
            .map_err(store_error)?
            .ok_or_else(provider_not_found)?;
        let mut changed = Vec::new();
        if let Some(name) = input.name {
            let name = check_name("name", &name)?;
            if name != p.name {
                p.name = name;
                changed.push("name");
            }
        }
        if let Some(v) = input.posix_settings {
            let v = Some(check_posix(v)?);
            if v != p.posix {
                p.posix = v;
                changed.push("posix_settings");
            }
        }
        if !changed.is_empty() {
            p.modified = clock::now();
            let audit = Self::entry(ctx, caller, actions::PROVIDER_UPDATE, p.uuid.to_string())
                .with_details(json!({"changed_fields": changed}));
            if !self.store.update_provider(&p, &audit).await.map_err(store_error)? {
                return Err(provider_not_found());
            }
        }
        let managers = self.store.provider_managers(uuid).await.map_err(store_error)?;
        Ok(ProviderView::of(&p, Some(managers)))
    }

    /// Deletes a provider without offerings (super-users).
    pub async fn delete_provider(&self, ctx: &RequestCtx, caller: &Caller, uuid: &str) -> Result<(), DomainError> {
        let uuid = ProviderUuid::parse(uuid).ok_or_else(provider_not_found)?;
        if !caller.is_super_user() {
            return Err(if self.manages(caller, uuid).await? {
                DomainError::super_user_required()
            } else {
                provider_not_found()
            });
        }
        let audit = Self::entry(ctx, caller, actions::PROVIDER_DELETE, uuid.to_string());
        match self.store.delete_provider(uuid, &audit).await.map_err(store_error)? {
            None => Err(provider_not_found()),
            Some(false) => Err(DomainError::conflict(
                codes::CONFLICT,
                "the provider still has offerings; delete them first",
            )),
            Some(true) => Ok(()),
        }
    }

    /// Makes a directory user a manager of the provider (super-users).
    pub async fn add_manager(
        &self,
        ctx: &RequestCtx,
        caller: &Caller,
        uuid: &str,
        input: AddManagerInput,
        add: bool,
    ) -> Result<ProviderView, DomainError> {
        let provider = ProviderUuid::parse(uuid).ok_or_else(provider_not_found)?;
        if !caller.is_super_user() {
            return Err(if self.manages(caller, provider).await? {
                DomainError::super_user_required()
            } else {
                provider_not_found()
            });
        }
        let user = parse_uuid("user_uuid", &input.user_uuid)?;
        let p = self
            .store
            .provider(provider)
            .await
            .map_err(store_error)?
            .ok_or_else(provider_not_found)?;
        if self.store.user_by_uuid(user).await.map_err(store_error)?.is_none() {
            return Err(DomainError::invalid_field(
                "user_uuid",
                codes::INVALID_INPUT,
                "no such user",
            ));
        }
        let action = if add {
            actions::PROVIDER_ADD_MANAGER
        } else {
            actions::PROVIDER_REMOVE_MANAGER
        };
        let audit =
            Self::entry(ctx, caller, action, provider.to_string()).with_details(json!({"user_uuid": hex(user)}));
        if add {
            self.store
                .add_provider_manager(provider, user, clock::now(), &audit)
                .await
                .map_err(store_error)?;
        } else {
            self.store
                .remove_provider_manager(provider, user, &audit)
                .await
                .map_err(store_error)?;
        }
        let managers = self.store.provider_managers(provider).await.map_err(store_error)?;
        Ok(ProviderView::of(&p, Some(managers)))
    }

    // --- offerings ---------------------------------------------------------------------------

    fn offering_not_found() -> DomainError {
        DomainError::not_found("offering")
    }

    pub async fn create_offering(
        &self,
        ctx: &RequestCtx,
        caller: &Caller,
        input: CreateOfferingInput,
    ) -> Result<OfferingView, DomainError> {
        if !caller.is_super_user() {
            return Err(DomainError::super_user_required());
        }
        let name = check_name("name", &input.name)?;
        let provider = parse_uuid("provider_uuid", &input.provider_uuid)?;
        let slug = match input.slug {
            Some(s) => check_slug(&s)?,
            None => format!("{}-{}", slugify(&name), &uuid::Uuid::new_v4().simple().to_string()[..8]),
        };
        let kind = match input.kind {
            Some(k) => check_name("type", &k)?,
            None => "Marketplace.Basic".to_owned(),
        };
        let Some(owner) = self.store.provider(ProviderUuid(provider)).await.map_err(store_error)? else {
            return Err(DomainError::invalid_field(
                "provider_uuid",
                codes::INVALID_INPUT,
                "no such service provider",
            ));
        };
        let posix_pool = input.posix_pool.unwrap_or_default();
        let posix = match posix_pool {
            PosixPool::Offering => input.posix_settings.map(check_posix).transpose()?,
            PosixPool::Provider if input.posix_settings.is_some() => return Err(settings_of_provider_pool()),
            PosixPool::Provider => owner.posix,
        };
        let now = clock::now();
        let o = Offering {
            uuid: OfferingUuid::new_random(),
            provider_uuid: ProviderUuid(provider),
            name,
            slug,
            kind,
            provider_can_create: input.service_provider_can_create_offering_user.unwrap_or(true),
            username_policy: input.username_generation_policy.unwrap_or_default(),
            username_prefix: match input.username_anonymized_prefix {
                Some(p) => check_prefix(&p)?,
                None => naming::DEFAULT_PREFIX.to_owned(),
            },
            username_claim: input.username_identity_claim.unwrap_or_default(),
            posix_pool,
            posix,
            created: now,
            modified: now,
        };
        let audit = Self::entry(ctx, caller, actions::OFFERING_CREATE, o.uuid.to_string())
            .with_details(json!({"provider_uuid": o.provider_uuid.to_string(), "slug": o.slug}));
        self.store.insert_offering(&o, &audit).await.map_err(store_error)?;
        Ok(OfferingView::from(&o))
    }

    /// An offering: visible to super-users and to its provider's managers and tokens.
    pub async fn get_offering(&self, caller: &Caller, uuid: &str) -> Result<OfferingView, DomainError> {
        let uuid = OfferingUuid::parse(uuid).ok_or_else(Self::offering_not_found)?;
        let o = self
            .store
            .offering(uuid)
            .await
            .map_err(store_error)?
            .ok_or_else(Self::offering_not_found)?;
        if !self.manages(caller, o.provider_uuid).await? {
            return Err(Self::offering_not_found());
        }
        Ok(OfferingView::from(&o))
    }

    pub async fn list_offerings(&self, caller: &Caller) -> Result<Vec<OfferingView>, DomainError> {
        let scope = self.scope(Actor::Caller(caller)).await?;
        let only = (!scope.super_user).then_some(scope.providers.as_slice());
        let list = self.store.list_offerings(only).await.map_err(store_error)?;
        Ok(list.iter().map(OfferingView::from).collect())
    }

    pub async fn update_offering(
        &self,
        ctx: &RequestCtx,
        caller: &Caller,
        uuid: &str,
        input: UpdateOfferingInput,
    ) -> Result<OfferingView, DomainError> {
        let uuid = OfferingUuid::parse(uuid).ok_or_else(Self::offering_not_found)?;
        let mut o = self
            .store
            .offering(uuid)
            .await
            .map_err(store_error)?
            .ok_or_else(Self::offering_not_found)?;
        if !caller.is_super_user() {
            return Err(if self.manages(caller, o.provider_uuid).await? {
                DomainError::super_user_required()
            } else {
                Self::offering_not_found()
            });
        }
        let before = o.clone();
        if let Some(v) = input.name {
            o.name = check_name("name", &v)?;
        }
        if let Some(v) = input.slug {
            o.slug = check_slug(&v)?;
        }
        if let Some(v) = input.kind {
            o.kind = check_name("type", &v)?;
        }
        if let Some(v) = input.service_provider_can_create_offering_user {
            o.provider_can_create = v;
        }
        // Changing the policy never renames existing accounts (Waldur renamed even OK ones).
        if let Some(v) = input.username_generation_policy {
            o.username_policy = v;
        }
        if let Some(v) = input.username_anonymized_prefix {
            o.username_prefix = check_prefix(&v)?;
        }
        if let Some(v) = input.username_identity_claim {
            o.username_claim = v;
        }
        if let Some(pool) = input.posix_pool.filter(|p| *p != o.posix_pool) {
            // An account's numbers belong to the pool they came from: moving the offering to
            // another pool with accounts in it would let the two pools hand out a number twice.
            if self
                .store
                .offering_has_posix_accounts(o.uuid)
                .await
                .map_err(store_error)?
            {
                return Err(DomainError::conflict(
                    "posix_pool_in_use",
                    "some of the offering's accounts hold Unix identities from its current pool; \
                     the pool can only change while none does",
                ));
            }
            o.posix_pool = pool;
            o.posix = match pool {
                PosixPool::Offering => None,
                PosixPool::Provider => {
                    let owner = self.store.provider(o.provider_uuid).await.map_err(store_error)?;
                    owner.and_then(|p| p.posix)
                }
            };
        }
        if let Some(v) = input.posix_settings {
            if o.posix_pool == PosixPool::Provider {
                return Err(settings_of_provider_pool());
            }
            o.posix = Some(check_posix(v)?);
        }
        if o != before {
            o.modified = clock::now();
            let audit = Self::entry(ctx, caller, actions::OFFERING_UPDATE, o.uuid.to_string());
            if !self.store.update_offering(&o, &audit).await.map_err(store_error)? {
                return Err(Self::offering_not_found());
            }
        }
        Ok(OfferingView::from(&o))
    }

    pub async fn delete_offering(&self, ctx: &RequestCtx, caller: &Caller, uuid: &str) -> Result<(), DomainError> {
        let uuid = OfferingUuid::parse(uuid).ok_or_else(Self::offering_not_found)?;
        if !caller.is_super_user() {
            return Err(DomainError::super_user_required());
        }
        let audit = Self::entry(ctx, caller, actions::OFFERING_DELETE, uuid.to_string());
        match self.store.delete_offering(uuid, &audit).await.map_err(store_error)? {
            None => Err(Self::offering_not_found()),
            Some(false) => Err(DomainError::conflict(
                codes::CONFLICT,
                "the offering still has accounts; delete them first",
            )),
            Some(true) => Ok(()),
        }
    }

    // --- API tokens --------------------------------------------------------------------------

    /// Only people mint and revoke tokens: super-users, or the provider's managers.
    async fn token_admin(&self, caller: &Caller, provider: ProviderUuid) -> Result<(), DomainError> {
        if let Caller::Provider(t) = caller {
            return Err(if t.provider_uuid == provider.0 {
                forbidden()
            } else {
                provider_not_found()
            });
        }
        if !self.manages(caller, provider).await? {
            return Err(provider_not_found());
        }
        if self.store.provider(provider).await.map_err(store_error)?.is_none() {
            return Err(provider_not_found());
        }
        Ok(())
    }

    /// Mints a token for the provider. The key is in the answer and nowhere else.
    pub async fn create_api_token(
        &self,
        ctx: &RequestCtx,
        caller: &Caller,
        provider: &str,
        input: CreateApiTokenInput,
    ) -> Result<NewApiToken, DomainError> {
        let provider = ProviderUuid::parse(provider).ok_or_else(provider_not_found)?;
        self.token_admin(caller, provider).await?;
        let name = check_name("name", &input.name)?;
        let (key, hash) = token::new_token(token::API_TOKEN_PREFIX);
        let t = ApiToken {
            uuid: ApiTokenUuid::new_random(),
            provider_uuid: provider,
            name,
            created_by: caller.actor(),
            created: clock::now(),
        };
        // The audit record names the token, never the key.
        let audit = Self::entry(ctx, caller, actions::API_TOKEN_CREATE, provider.to_string())
            .with_details(json!({"token_uuid": t.uuid.to_string(), "name": t.name}));
        self.store
            .insert_api_token(&t, &hash, &audit)
            .await
            .map_err(store_error)?;
        Ok(NewApiToken {
            token: ApiTokenView::from(&t),
            key,
        })
    }

    pub async fn list_api_tokens(&self, caller: &Caller, provider: &str) -> Result<Vec<ApiTokenView>, DomainError> {
        let provider = ProviderUuid::parse(provider).ok_or_else(provider_not_found)?;
        self.token_admin(caller, provider).await?;
        let list = self.store.list_api_tokens(provider).await.map_err(store_error)?;
        Ok(list.iter().map(ApiTokenView::from).collect())
    }

    /// Revokes a token: the next request with its key is a 401.
    pub async fn revoke_api_token(
        &self,
        ctx: &RequestCtx,
        caller: &Caller,
        provider: &str,
        token_uuid: &str,
    ) -> Result<(), DomainError> {
        let provider = ProviderUuid::parse(provider).ok_or_else(provider_not_found)?;
        self.token_admin(caller, provider).await?;
        let not_found = || DomainError::not_found("API token");
        let t = ApiTokenUuid::parse(token_uuid).ok_or_else(not_found)?;
        let audit = Self::entry(ctx, caller, actions::API_TOKEN_REVOKE, provider.to_string())
            .with_details(json!({"token_uuid": t.to_string()}));
        if self
            .store
            .delete_api_token(provider, t, &audit)
            .await
            .map_err(store_error)?
        {
            Ok(())
        } else {
            Err(not_found())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(slugify("HPC Cluster #1"), "hpc-cluster-1");
        assert_eq!(slugify("***"), "offering");
        assert!(check_slug("hpc-1").is_ok());
        assert!(check_slug("HPC").is_err());
        assert!(check_slug("").is_err());
    }
}
