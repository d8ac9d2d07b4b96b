//! Offerings: creating, reading, listing, changing and deleting them, with the checks of their
//! slugs, username prefixes and the pool their accounts' Unix identities come from. Only
//! super-users change an offering; its provider's managers and tokens may read it.

use super::{check_name, check_posix, parse_uuid};
use crate::views::OfferingView;
use crate::{Actor, Offerings, store_error};
use muster_core::audit::{RequestCtx, actions};
use muster_core::clock;
use muster_core::error::{DomainError, codes};
use muster_core::offering::model::{
    IdentityClaim, Offering, OfferingUuid, PosixPool, PosixSettings, ProviderUuid, UsernamePolicy,
};
use muster_core::offering::naming;
use muster_directory::Caller;
use serde::Deserialize;
use serde_json::json;

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

impl Offerings {
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
