//! What provisioning workflows do to the directory, inside the transaction of their step:
//! create a person with `create_user`'s rules, lock them on termination, remove them when the
//! workflow that created them is aborted.

use crate::{Directory, store_error};
use muster_core::audit::{AuditEntry, RequestCtx, actions, kinds, streams};
use muster_core::clock;
use muster_core::credentials::secretbox::SecretBox;
use muster_core::directory::create::{self, CreateUserInput, Creator};
use muster_core::directory::{User, UserView};
use muster_core::error::DomainError;
use muster_store::StoreTx;
use serde_json::json;
use uuid::Uuid;

impl Directory {
    /// The server key's box: workflows seal secrets they must carry between steps.
    pub fn secrets(&self) -> &SecretBox {
        &self.secrets
    }

    /// Checks `input` against `create_user`'s rules without creating anything (a form's
    /// validation, so a bad email fails the start, not a step).
    pub fn check_new_user(&self, input: &CreateUserInput) -> Result<(), DomainError> {
        create::plan(input.clone(), Creator::Auto, false, &self.config, clock::now()).map(|_| ())
    }

    /// Hashes a chosen password (argon2id on the blocking pool).
    pub async fn hash_password(&self, password: String) -> Result<String, DomainError> {
        self.hashes.hash(password).await
    }

    /// Creates a user in `tx` on behalf of workflow process `actor` with `create_user`'s rules.
    pub async fn create_user_in(
        &self,
        tx: &mut StoreTx,
        ctx: &RequestCtx,
        actor: &str,
        input: CreateUserInput,
        chosen_hash: Option<String>,
    ) -> Result<User, DomainError> {
        let entry = AuditEntry::new(ctx, actions::USER_CREATE, Some(actor.to_owned()), None);
        let (user, entry, generated) = self
            .build_new_user(entry, input, Creator::SuperUser(actor), false, chosen_hash)
            .await?;
        let (followups, entry) = self.invite_new_user(&user, entry, generated)?;
        tx.insert_user(&user, &entry).await.map_err(store_error)?;
        // The invitation commits with the step; this node's delivery looks at the outbox
        // within its polling interval.
        tx.write_followups(&followups).await.map_err(store_error)?;
        Ok(user)
    }

    /// Locks a user in `tx` and ends their sessions. False when there is no such user.
    pub async fn lock_user_in(
        &self,
        tx: &mut StoreTx,
        ctx: &RequestCtx,
        actor: &str,
        uuid: Uuid,
    ) -> Result<bool, DomainError> {
        let Some((mut user, version)) = tx.user_by_uuid(uuid).await.map_err(store_error)? else {
            return Ok(false);
        };
        if user.is_locked {
            return Ok(true);
        }
        let now = clock::now();
        user.is_locked = true;
        user.locked_time = Some(now);
        user.locked_by = Some(actor.to_owned());
        user.updated_at = now;
        let id = user.user_id().to_string();
        let entry = AuditEntry::new(ctx, actions::USER_LOCK, Some(actor.to_owned()), Some(id.clone())).with_event(
            streams::DIRECTORY,
            kinds::USER_UPDATED,
            id,
            json!(UserView::of(&user, true)),
        );
        if !tx
            .update_user(&user, version, true, &entry)
            .await
            .map_err(store_error)?
        {
            return Err(DomainError::internal("the user changed inside a locked transaction"));
        }
        Ok(true)
    }

    /// Deletes a user in `tx` (compensation of an aborted create). False when already gone.
    pub async fn delete_user_in(
        &self,
        tx: &mut StoreTx,
        ctx: &RequestCtx,
        actor: &str,
        uuid: Uuid,
    ) -> Result<bool, DomainError> {
        let Some((user, _)) = tx.user_by_uuid(uuid).await.map_err(store_error)? else {
            return Ok(false);
        };
        let id = user.user_id().to_string();
        let entry = AuditEntry::new(ctx, actions::USER_DELETE, Some(actor.to_owned()), Some(id.clone()))
            .with_details(json!({ "reason": "the workflow that created the user was aborted" }))
            .with_event(streams::DIRECTORY, kinds::USER_DELETED, id, json!({ "uuid": uuid }));
        tx.delete_user(uuid, &entry).await.map_err(store_error)
    }
}
