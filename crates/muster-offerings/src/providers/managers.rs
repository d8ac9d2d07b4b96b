//! Who manages a provider: super-users add and remove its managers, who then see the
//! provider and its offerings and manage its accounts and API tokens.

use super::{parse_uuid, provider_not_found};
use crate::views::ProviderView;
use crate::{Offerings, store_error};
use muster_core::audit::{RequestCtx, actions};
use muster_core::clock;
use muster_core::error::{DomainError, codes};
use muster_core::offering::model::{ProviderUuid, hex};
use muster_directory::Caller;
use serde::Deserialize;
use serde_json::json;

/// `POST …/{uuid}/add_manager/` and `…/remove_manager/`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddManagerInput {
    /// The directory user's UUID.
    pub user_uuid: String,
}

impl Offerings {
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
}
