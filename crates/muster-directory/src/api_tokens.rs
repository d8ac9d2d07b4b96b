//! Authenticating provider API tokens. Only the SHA-256 of a key is stored; the key a client
//! presents is hashed and looked up, and the stored hash is compared again in constant time.
//!
//! Lookups are cached per node for [`API_TOKEN_CACHE_MAX_AGE`] (an agent sends every request
//! with its token, and the lookup was a database round trip per request). Revocation through
//! this node takes effect at once; a revocation made on another node is seen here within that
//! age. Unknown keys are never cached.

use crate::{Directory, ProviderToken, store_error};
use muster_core::credentials::token;
use muster_core::error::DomainError;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// How long a node trusts a token lookup it made: the longest a token revoked on *another* node
/// keeps working here.
pub const API_TOKEN_CACHE_MAX_AGE: Duration = Duration::from_secs(1);

impl Directory {
    /// The provider token whose key is `key`. Every failure is the same 401, which never
    /// echoes the key.
    pub async fn authenticate_api_token(&self, key: &str) -> Result<ProviderToken, DomainError> {
        if !key.starts_with(token::API_TOKEN_PREFIX) {
            return Err(DomainError::no_session());
        }
        let hash = token::hash_token(key);
        let Some((t, stored)) = self
            .store
            .api_token_by_hash_cached(&hash, API_TOKEN_CACHE_MAX_AGE)
            .await
            .map_err(store_error)?
        else {
            return Err(DomainError::no_session());
        };
        if !bool::from(stored.as_slice().ct_eq(&hash[..])) {
            return Err(DomainError::no_session());
        }
        Ok(ProviderToken {
            token_uuid: t.uuid.0,
            provider_uuid: t.provider_uuid.0,
            name: t.name,
        })
    }
}
