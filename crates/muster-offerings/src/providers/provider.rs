//! The service providers themselves: creating, reading, listing, changing (the name or the
//! shared POSIX pool) and deleting them. Only super-users change a provider; its managers (and
//! its tokens) may read it, and to anyone else it does not exist.

use super::{check_name, check_posix, provider_not_found};
use crate::views::ProviderView;
use crate::{Actor, Offerings, store_error};
use muster_core::audit::{RequestCtx, actions};
use muster_core::clock;
use muster_core::error::{DomainError, codes};
use muster_core::offering::model::{PosixSettings, Provider, ProviderUuid};
use muster_directory::Caller;
use serde::Deserialize;
use serde_json::json;

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

impl Offerings {
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
}
