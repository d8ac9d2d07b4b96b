//! Provider API tokens, the keys hosting-site agents call with: minting, listing and revoking
//! them. Only people do this (super-users or the provider's managers); a token cannot mint
//! tokens, and the key is shown once, in the answer that mints it.

use super::{check_name, provider_not_found};
use crate::views::{ApiTokenView, NewApiToken};
use crate::{Offerings, forbidden, store_error};
use muster_core::audit::{RequestCtx, actions};
use muster_core::clock;
use muster_core::credentials::token;
use muster_core::error::DomainError;
use muster_core::offering::model::{ApiToken, ApiTokenUuid, ProviderUuid};
use muster_directory::Caller;
use serde::Deserialize;
use serde_json::json;

/// `POST /api/marketplace-service-providers/{uuid}/api_tokens/`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiTokenInput {
    /// What the token is for, e.g. `slurm-agent@cluster1`.
    pub name: String,
}

impl Offerings {
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
