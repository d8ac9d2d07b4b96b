//! Changes to offering accounts: lifecycle transitions (the one table decides what is allowed)
//! and field changes (username, comments, restriction, runtime state), each read, decided and
//! written with a conditional update, retried when another writer got there first.

use crate::account_input::{
    CommentsInput, RuntimeStateInput, TransitionInput, UsernameInput, clean_comment, clean_comments, clean_url,
    clean_username, transition_text,
};
use crate::accounts::{account_not_found, change_records, may_change, outcome};
use crate::views::{CommentsView, OfferingUserView};
use crate::{Actor, Offerings, store_error};
use muster_core::audit::{RequestCtx, actions};
use muster_core::error::{DomainError, ErrorKind, codes};
use muster_core::offering::lifecycle::{self, AccountState, Action, CommentEffect, UsernameChange, username_change};
use muster_core::offering::model::{Account, AccountFields, OfferingUserUuid};
use muster_store::AccountChange;

impl Offerings {
    // --- transitions -------------------------------------------------------------------------

    /// Applies a lifecycle action (`POST …/{uuid}/<action>/`) for a caller.
    pub async fn transition(
        &self,
        ctx: &RequestCtx,
        caller: &muster_directory::Caller,
        uuid: &str,
        action: Action,
        input: TransitionInput,
    ) -> Result<OfferingUserView, DomainError> {
        let uuid = OfferingUserUuid::parse(uuid).ok_or_else(account_not_found)?;
        let a = self.apply(ctx, Actor::Caller(caller), uuid, action, input).await?;
        Ok(OfferingUserView::from(&a))
    }

    /// Requests deletion of an account on muster's own behalf (a member leaving their group).
    pub async fn request_deletion(
        &self,
        ctx: &RequestCtx,
        uuid: OfferingUserUuid,
    ) -> Result<OfferingUserView, DomainError> {
        let a = self
            .apply(
                ctx,
                Actor::System,
                uuid,
                Action::RequestDeletion,
                TransitionInput::default(),
            )
            .await?;
        Ok(OfferingUserView::from(&a))
    }

    async fn apply(
        &self,
        ctx: &RequestCtx,
        actor: Actor<'_>,
        uuid: OfferingUserUuid,
        action: Action,
        input: TransitionInput,
    ) -> Result<Account, DomainError> {
        // Input is checked before anything is read: a bad body changes nothing.
        let effect = lifecycle::comment_effect(action);
        let comment = transition_text(action, effect, "comment", input.comment, clean_comment)?;
        let comment_url = transition_text(action, effect, "comment_url", input.comment_url, clean_url)?;
        let scope = self.scope(actor).await?;
        let actor_name = actor.name();
        let ctx = match actor {
            Actor::Caller(c) => c.ctx(ctx.clone()),
            Actor::System => ctx.clone(),
        };
        let outcome_ = self
            .store
            .change_offering_user(uuid, |before| {
                may_change(&scope, before)?;
                let target = lifecycle::transition(action, before.state)?;
                let mut fields = before.fields();
                fields.state = target;
                match lifecycle::comment_effect(action) {
                    CommentEffect::Clear => {
                        fields.comment.clear();
                        fields.comment_url.clear();
                    }
                    CommentEffect::SetIfGiven => {
                        if let Some(c) = &comment {
                            fields.comment = c.clone();
                        }
                        if let Some(u) = &comment_url {
                            fields.comment_url = u.clone();
                        }
                    }
                    CommentEffect::Keep => {}
                }
                let (audit, history) = change_records(
                    &ctx,
                    &actor_name,
                    before,
                    &fields,
                    action.name(),
                    actions::OFFERING_USER_TRANSITION,
                    true,
                );
                Ok(Some(AccountChange {
                    fields,
                    allowed_from: lifecycle::sources(action).to_vec(),
                    history,
                    audit,
                }))
            })
            .await
            .map_err(store_error)?;
        outcome(outcome_)
    }

    // --- field changes -----------------------------------------------------------------------

    /// Runs a field change under the row lock, with the same visibility and permission rules
    /// as transitions. `rule` returns the new fields, or None for "nothing to change".
    async fn change_fields<F>(
        &self,
        ctx: &RequestCtx,
        caller: &muster_directory::Caller,
        uuid: &str,
        action: &'static str,
        rule: F,
    ) -> Result<Account, DomainError>
    where
        F: Fn(&Account) -> Result<Option<AccountFields>, DomainError>,
    {
        let uuid = OfferingUserUuid::parse(uuid).ok_or_else(account_not_found)?;
        let scope = self.scope(Actor::Caller(caller)).await?;
        let actor_name = caller.actor();
        let ctx = caller.ctx(ctx.clone());
        let o = self
            .store
            .change_offering_user(uuid, |before| {
                may_change(&scope, before)?;
                let Some(fields) = rule(before)? else {
                    return Ok(None);
                };
                if fields == before.fields() {
                    return Ok(None);
                }
                // A change of lifecycle state or of the account's name belongs in its history.
                let with_history = fields.state != before.state || fields.username != before.username;
                let (audit, history) = change_records(
                    &ctx,
                    &actor_name,
                    before,
                    &fields,
                    action,
                    actions::OFFERING_USER_UPDATE,
                    with_history,
                );
                Ok(Some(AccountChange {
                    fields,
                    allowed_from: vec![before.state],
                    history,
                    audit,
                }))
            })
            .await
            .map_err(store_error)?;
        outcome(o)
    }

    /// Sets the local username (`PUT`/`PATCH`). Waldur's rule: a new non-empty name on an
    /// account being created moves it to OK and clears the comments; the same name is a no-op.
    pub async fn set_username(
        &self,
        ctx: &RequestCtx,
        caller: &muster_directory::Caller,
        uuid: &str,
        input: UsernameInput,
    ) -> Result<OfferingUserView, DomainError> {
        let Some(new) = input.username else {
            // Nothing asked for: answer with the account as it is (after the usual checks).
            let a = self
                .change_fields(ctx, caller, uuid, "set_username", |_| Ok(None))
                .await?;
            return Ok(OfferingUserView::from(&a));
        };
        let new = clean_username(new)?;
        let a = self
            .change_fields(ctx, caller, uuid, "set_username", |before| {
                let change = username_change(before.state, Some(&before.username), Some(&new));
                let mut fields = before.fields();
                match change {
                    UsernameChange::Unchanged => return Ok(None),
                    UsernameChange::RefusedDeleted => {
                        return Err(DomainError::invalid_field(
                            "username",
                            codes::INVALID_OPERATION,
                            "the username of a deleted account cannot change",
                        ));
                    }
                    UsernameChange::Changed => fields.username = new.clone(),
                    UsernameChange::ChangedAndOk => {
                        fields.username = new.clone();
                        fields.state = AccountState::Ok;
                        fields.comment.clear();
                        fields.comment_url.clear();
                    }
                }
                Ok(Some(fields))
            })
            .await?;
        Ok(OfferingUserView::from(&a))
    }

    /// `PATCH …/update_comments/`: every state but Deleted (403 there, as in Waldur).
    pub async fn update_comments(
        &self,
        ctx: &RequestCtx,
        caller: &muster_directory::Caller,
        uuid: &str,
        input: CommentsInput,
    ) -> Result<CommentsView, DomainError> {
        let (comment, url) = clean_comments(input.service_provider_comment, input.service_provider_comment_url)?;
        let a = self
            .change_fields(ctx, caller, uuid, "update_comments", |before| {
                if !lifecycle::comments_allowed(before.state) {
                    return Err(DomainError::forbidden(
                        "permission_denied",
                        format!(
                            "Cannot update comments for offering user in state: {}",
                            before.state.label()
                        ),
                    ));
                }
                let mut fields = before.fields();
                if let Some(c) = &comment {
                    fields.comment = c.clone();
                }
                if let Some(u) = &url {
                    fields.comment_url = u.clone();
                }
                Ok(Some(fields))
            })
            .await?;
        Ok(CommentsView {
            service_provider_comment: a.comment,
            service_provider_comment_url: a.comment_url,
        })
    }

    /// `POST …/update_restricted/`.
    pub async fn update_restricted(
        &self,
        ctx: &RequestCtx,
        caller: &muster_directory::Caller,
        uuid: &str,
        is_restricted: bool,
    ) -> Result<OfferingUserView, DomainError> {
        let a = self
            .change_fields(ctx, caller, uuid, "update_restricted", |before| {
                let mut fields = before.fields();
                fields.is_restricted = is_restricted;
                Ok(Some(fields))
            })
            .await?;
        Ok(OfferingUserView::from(&a))
    }

    /// `POST …/update_runtime_state/`: any state but Deleted (400 there).
    pub async fn update_runtime_state(
        &self,
        ctx: &RequestCtx,
        caller: &muster_directory::Caller,
        uuid: &str,
        input: RuntimeStateInput,
    ) -> Result<OfferingUserView, DomainError> {
        let (comment, url) = clean_comments(input.service_provider_comment, input.service_provider_comment_url)?;
        let a = self
            .change_fields(ctx, caller, uuid, "update_runtime_state", |before| {
                if !lifecycle::runtime_state_allowed(before.state) {
                    return Err(DomainError::invalid(
                        codes::INVALID_OPERATION,
                        format!(
                            "Cannot update runtime state for offering user in state: {}",
                            before.state.label()
                        ),
                    ));
                }
                let mut fields = before.fields();
                fields.runtime_state = input.runtime_state;
                if let Some(c) = &comment {
                    fields.comment = c.clone();
                }
                if let Some(u) = &url {
                    fields.comment_url = u.clone();
                }
                Ok(Some(fields))
            })
            .await?;
        Ok(OfferingUserView::from(&a))
    }
}

/// Whether an error is an invalid transition's 400 (for callers that treat it as "back off").
pub fn is_invalid_transition(e: &DomainError) -> bool {
    e.kind == ErrorKind::Invalid && e.code == codes::INVALID_OPERATION
}
