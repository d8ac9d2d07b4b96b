//! Provider API tokens: stored by the SHA-256 of their key, never the key.

use crate::{Result, Store, Ts, on_db};
use muster_core::audit::AuditEntry;
use muster_core::offering::model::{ApiToken, ApiTokenUuid, ProviderUuid};
use uuid::Uuid;

#[derive(sqlx::FromRow)]
struct ApiTokenRow {
    uuid: Uuid,
    provider_uuid: Uuid,
    name: String,
    created_by: String,
    created: Ts,
}

impl From<ApiTokenRow> for ApiToken {
    fn from(r: ApiTokenRow) -> Self {
        ApiToken {
            uuid: ApiTokenUuid(r.uuid),
            provider_uuid: ProviderUuid(r.provider_uuid),
            name: r.name,
            created_by: r.created_by,
            created: r.created.0,
        }
    }
}

impl Store {
    /// Stores a new token by the SHA-256 of its key.
    pub async fn insert_api_token(&self, t: &ApiToken, hash: &[u8; 32], audit: &AuditEntry) -> Result<()> {
        on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO api_tokens (uuid, provider_uuid, name, token_hash, created_by, created) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(t.uuid.0)
            .bind(t.provider_uuid.0)
            .bind(&t.name)
            .bind(&hash[..])
            .bind(&t.created_by)
            .bind(Ts(t.created))
            .execute(&mut *tx)
            .await?;
            crate::audit::insert(&mut *tx, audit).await?;
            crate::commit(tx).await?;
        });
        Ok(())
    }

    /// The token whose key hashes to `hash`, with the stored hash (for a constant-time check).
    pub async fn api_token_by_hash(&self, hash: &[u8; 32]) -> Result<Option<(ApiToken, Vec<u8>)>> {
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            token: ApiTokenRow,
            token_hash: Vec<u8>,
        }
        let row: Option<Row> = on_db!(self, read, pool => {
            sqlx::query_as(
                "SELECT uuid, provider_uuid, name, created_by, created, token_hash FROM api_tokens WHERE token_hash = $1",
            )
            .bind(&hash[..])
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|r| (ApiToken::from(r.token), r.token_hash)))
    }

    pub async fn list_api_tokens(&self, provider: ProviderUuid) -> Result<Vec<ApiToken>> {
        let rows: Vec<ApiTokenRow> = on_db!(self, read, pool => {
            sqlx::query_as(
                "SELECT uuid, provider_uuid, name, created_by, created FROM api_tokens WHERE provider_uuid = $1 \
                 ORDER BY created, uuid",
            )
            .bind(provider.0)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(ApiToken::from).collect())
    }

    /// Revokes (deletes) a provider's token. False when the provider has no such token.
    pub async fn delete_api_token(
        &self,
        provider: ProviderUuid,
        token: ApiTokenUuid,
        audit: &AuditEntry,
    ) -> Result<bool> {
        let deleted = self.delete_api_token_row(provider, token, audit).await;
        // After the commit (or a failure: evicting is always safe), so that no lookup that read
        // the row before the delete can leave it cached (see `token_cache`).
        self.tokens.evict_token(token);
        deleted
    }

    async fn delete_api_token_row(
        &self,
        provider: ProviderUuid,
        token: ApiTokenUuid,
        audit: &AuditEntry,
    ) -> Result<bool> {
        Ok(on_db!(self, write, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query("DELETE FROM api_tokens WHERE uuid = $1 AND provider_uuid = $2")
                .bind(token.0)
                .bind(provider.0)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 1 {
                crate::audit::insert(&mut *tx, audit).await?;
                crate::commit(tx).await?;
            } else {
                tx.rollback().await?;
            }
            n == 1
        }))
    }
}
