//! Deleting users: super-users only, never oneself; the deletion, its audit record and its
//! `user_deleted` event commit together, and a refusal is audited.

use crate::{Auth, Directory, store_error};
use muster_core::audit::{AuditEntry, RequestCtx, actions, kinds, streams};
use muster_core::error::{DomainError, codes};
use muster_core::ids::UserId;
use serde_json::json;

impl Directory {
    /// Deletes a user. Super-user only, never oneself.
    pub async fn delete_user(&self, ctx: &RequestCtx, auth: &Auth, id: UserId) -> Result<(), DomainError> {
        let entry = AuditEntry::new(ctx, actions::USER_DELETE, Some(auth.user_id()), Some(id.to_string()));
        let result = async {
            auth.require_super_user()?;
            if id.uuid() == auth.user.uuid {
                return Err(DomainError::invalid(
                    codes::INVALID_OPERATION,
                    "a user cannot delete themselves",
                ));
            }
            let published = entry.clone().with_event(
                streams::DIRECTORY,
                kinds::USER_DELETED,
                id.to_string(),
                json!({ "user_id": id.to_string(), "uuid": id.uuid() }),
            );
            if self
                .store
                .delete_user(id.uuid(), &published)
                .await
                .map_err(store_error)?
            {
                Ok(())
            } else {
                Err(DomainError::not_found("user"))
            }
        }
        .await;
        if let Err(e) = &result {
            self.audit_refusal(entry, e).await;
        }
        result
    }
}
