//! Offering accounts: creation, reading, listing, history and deletion, and what every change
//! shares (its audit record, event and history entry; who may make it).

use crate::account_input::{AccountFilter, CreateAccountInput, clean_username};
use crate::new_account::NewAccount;
use crate::providers::parse_uuid;
use crate::views::{HistoryView, OfferingUserView, event_data};
use crate::{Actor, Offerings, Scope, forbidden, store_error};
use muster_core::audit::{AuditEntry, RequestCtx, actions, kinds, streams};
use muster_core::error::{DomainError, codes};
use muster_core::offering::model::{Account, AccountFields, HistoryEntry, OfferingUserUuid, OfferingUuid};
use muster_core::offering::naming::{self, Proposal};
use muster_store::{AccountQuery, ChangeOutcome, StoreError};
use serde_json::json;
use uuid::Uuid;

pub(crate) fn account_not_found() -> DomainError {
    DomainError::not_found("offering user")
}

/// The audit record (with its event) and history entry of a change from `before` to `fields`.
pub(crate) fn change_records(
    ctx: &RequestCtx,
    actor: &str,
    before: &Account,
    fields: &AccountFields,
    action: &str,
    audit_action: &'static str,
    with_history: bool,
) -> (AuditEntry, Option<HistoryEntry>) {
    let changed = fields.changed_from(&before.fields());
    let entry = AuditEntry::new(ctx, audit_action, Some(actor.to_owned()), Some(before.uuid.to_string()));
    let after = before.with(fields, entry.at);
    let details = json!({
        "action": action,
        "from": before.state.label(),
        "to": fields.state.label(),
        "changed_fields": changed,
    });
    let history = with_history.then(|| HistoryEntry {
        at: entry.at,
        actor: Some(actor.to_owned()),
        action: action.to_owned(),
        from_state: Some(before.state),
        to_state: fields.state,
        comment: fields.comment.clone(),
        comment_url: fields.comment_url.clone(),
        cid: ctx.cid.clone(),
    });
    let data = event_data(&after, Some(before.state), action, &changed);
    let audit = entry.with_details(details).with_event(
        streams::OFFERING_USERS,
        kinds::OFFERING_USER_UPDATED,
        after.uuid.to_string(),
        data,
    );
    (audit, history)
}

/// Visibility and permission for a change: invisible is 404, visible but not the provider's
/// manager is 403.
pub(crate) fn may_change(scope: &Scope, a: &Account) -> Result<(), DomainError> {
    if !scope.can_see(a.provider_uuid.0, a.user_uuid) {
        Err(account_not_found())
    } else if !scope.can_manage(a.provider_uuid.0) {
        Err(forbidden())
    } else {
        Ok(())
    }
}

pub(crate) fn outcome(o: ChangeOutcome) -> Result<Account, DomainError> {
    match o {
        ChangeOutcome::NotFound => Err(account_not_found()),
        ChangeOutcome::Refused(e) => Err(e),
        ChangeOutcome::Unchanged(a) => Ok(a),
        ChangeOutcome::Changed { after, .. } => Ok(after),
    }
}

impl Offerings {
    // --- creation ----------------------------------------------------------------------------

    /// Creates an account (`POST /api/marketplace-offering-users/`): super-users, or the
    /// offering's provider (managers and tokens), on an offering whose provider may create
    /// accounts.
    pub async fn create_account(
        &self,
        ctx: &RequestCtx,
        caller: &muster_directory::Caller,
        input: CreateAccountInput,
    ) -> Result<OfferingUserView, DomainError> {
        let offering = parse_uuid("offering_uuid", &input.offering_uuid)?;
        let user = parse_uuid("user_uuid", &input.user_uuid)?;
        let username = clean_username(input.username)?;
        let scope = self.scope(Actor::Caller(caller)).await?;
        let Some(o) = self.store.offering(OfferingUuid(offering)).await.map_err(store_error)? else {
            return Err(DomainError::invalid_field(
                "offering_uuid",
                codes::INVALID_INPUT,
                "no such offering",
            ));
        };
        if !scope.can_manage(o.provider_uuid.0) {
            return Err(forbidden());
        }
        if !o.provider_can_create {
            return Err(DomainError::invalid(
                codes::INVALID_OPERATION,
                "It is not allowed to create users for current offering.",
            ));
        }
        let a = self
            .insert_account(ctx, Actor::Caller(caller), OfferingUuid(offering), user, username)
            .await?;
        Ok(OfferingUserView::from(&a))
    }

    /// Requests an account for `user` on `offering` on muster's own behalf (workflows). Idempotent:
    /// an existing account, in whatever state, is returned as it is.
    pub async fn request_account(
        &self,
        ctx: &RequestCtx,
        user: Uuid,
        offering: OfferingUuid,
    ) -> Result<OfferingUserView, DomainError> {
        if let Some(a) = self.store.offering_user_of(offering, user).await.map_err(store_error)? {
            return Ok(OfferingUserView::from(&a));
        }
        match self
            .insert_account(ctx, Actor::System, offering, user, String::new())
            .await
        {
            Ok(a) => Ok(OfferingUserView::from(&a)),
            // A concurrent request won the race: its account is the answer.
            Err(e) if e.code == "not_unique" => self
                .store
                .offering_user_of(offering, user)
                .await
                .map_err(store_error)?
                .map(|a| OfferingUserView::from(&a))
                .ok_or_else(account_not_found),
            Err(e) => Err(e),
        }
    }

    async fn insert_account(
        &self,
        ctx: &RequestCtx,
        actor: Actor<'_>,
        offering: OfferingUuid,
        user: Uuid,
        username: String,
    ) -> Result<Account, DomainError> {
        let Some(o) = self.store.offering(offering).await.map_err(store_error)? else {
            return Err(DomainError::invalid_field(
                "offering_uuid",
                codes::INVALID_INPUT,
                "no such offering",
            ));
        };
        let Some((person, _)) = self.store.user_by_uuid(user).await.map_err(store_error)? else {
            return Err(DomainError::invalid_field(
                "user_uuid",
                codes::INVALID_INPUT,
                "no such user",
            ));
        };
        // A name given by the caller is used as it is; otherwise the offering's policy may name
        // the account (see `muster_core::offering::naming`). A generated name that another
        // account took in the meantime is picked again.
        let proposal = if username.is_empty() {
            crate::naming::proposal(&o, &person)
        } else {
            Proposal::None
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            let name = match proposal.prefix() {
                Some(prefix) => {
                    let taken: std::collections::BTreeSet<String> = self
                        .store
                        .offering_usernames(o.uuid, prefix)
                        .await
                        .map_err(store_error)?
                        .into_iter()
                        .collect();
                    if let Proposal::Counter(prefix) = &proposal {
                        let n = self
                            .store
                            .next_username_number(o.uuid, naming::highest_counter(prefix, &taken))
                            .await
                            .map_err(store_error)?
                            .unwrap_or(0);
                        naming::counter_name(prefix, n)
                    } else {
                        proposal.pick(&taken)
                    }
                }
                None => username.clone(),
            };
            let generated = proposal.prefix().is_some() && !name.is_empty();
            let posix = crate::posix::allocate(
                self.store.allocate_posix(&o, person.uuid).await.map_err(store_error)?,
                &o,
            )?;
            match self.insert_named(ctx, actor, &o, &person, name, posix).await {
                Err(StoreError::Duplicate("username")) if generated && attempts < 8 => continue,
                Err(e) => return Err(store_error(e)),
                Ok(uuid) => {
                    // Read back for the joined fields (provider name, the person's names).
                    return self
                        .store
                        .offering_user(uuid)
                        .await
                        .map_err(store_error)?
                        .ok_or_else(account_not_found);
                }
            }
        }
    }

    async fn insert_named(
        &self,
        ctx: &RequestCtx,
        actor: Actor<'_>,
        o: &muster_core::offering::model::Offering,
        person: &muster_core::directory::User,
        username: String,
        posix: Option<muster_core::offering::model::PosixIdentity>,
    ) -> Result<OfferingUserUuid, StoreError> {
        let n = NewAccount::build(ctx, actor.name(), o, person, username, posix);
        self.store
            .insert_offering_user(
                n.uuid,
                o,
                person.uuid,
                &n.fields,
                &n.history,
                &n.audit,
                n.posix.as_ref(),
            )
            .await?;
        Ok(n.uuid)
    }

    // --- reading -----------------------------------------------------------------------------

    pub(crate) async fn visible(&self, caller: &muster_directory::Caller, uuid: &str) -> Result<Account, DomainError> {
        let uuid = OfferingUserUuid::parse(uuid).ok_or_else(account_not_found)?;
        let scope = self.scope(Actor::Caller(caller)).await?;
        let a = self
            .store
            .offering_user(uuid)
            .await
            .map_err(store_error)?
            .ok_or_else(account_not_found)?;
        if !scope.can_see(a.provider_uuid.0, a.user_uuid) {
            return Err(account_not_found());
        }
        Ok(a)
    }

    pub async fn get_account(
        &self,
        caller: &muster_directory::Caller,
        uuid: &str,
    ) -> Result<OfferingUserView, DomainError> {
        Ok(OfferingUserView::from(&self.visible(caller, uuid).await?))
    }

    pub async fn history(
        &self,
        caller: &muster_directory::Caller,
        uuid: &str,
    ) -> Result<Vec<HistoryView>, DomainError> {
        let a = self.visible(caller, uuid).await?;
        let list = self.store.offering_user_history(a.uuid).await.map_err(store_error)?;
        Ok(list.into_iter().map(HistoryView::from).collect())
    }

    pub(crate) fn query(scope: &Scope, f: &AccountFilter) -> AccountQuery {
        AccountQuery {
            visibility: scope.visibility(),
            states: f.states.clone(),
            offering_uuids: f.offering_uuids.clone(),
            provider_uuids: f.provider_uuids.clone(),
            user_uuid: f.user_uuid,
            user_username: f.user_username.clone(),
            is_restricted: f.is_restricted,
            runtime_states: f.runtime_states.clone(),
            query: f.query.clone().filter(|q| !q.is_empty()),
            created_from: f.created_from,
            created_before: f.created_before,
            modified_from: f.modified_from,
            modified_before: f.modified_before,
            order: f.order.clone(),
            offset: (f.page.max(1) - 1).saturating_mul(f.page_size),
            limit: f.page_size,
        }
    }

    /// How many visible accounts match `filter`.
    pub async fn count_accounts(
        &self,
        caller: &muster_directory::Caller,
        filter: &AccountFilter,
    ) -> Result<i64, DomainError> {
        let scope = self.scope(Actor::Caller(caller)).await?;
        self.store
            .count_offering_users(&Self::query(&scope, filter))
            .await
            .map_err(store_error)
    }

    /// One page of the visible accounts matching `filter`, and how many match in all.
    pub async fn list_accounts(
        &self,
        caller: &muster_directory::Caller,
        filter: &AccountFilter,
    ) -> Result<(i64, Vec<OfferingUserView>), DomainError> {
        let scope = self.scope(Actor::Caller(caller)).await?;
        let q = Self::query(&scope, filter);
        let total = self.store.count_offering_users(&q).await.map_err(store_error)?;
        let list = if q.offset < total {
            self.store.list_offering_users(&q).await.map_err(store_error)?
        } else {
            Vec::new()
        };
        Ok((total, list.iter().map(OfferingUserView::from).collect()))
    }

    /// `DELETE /api/marketplace-offering-users/{uuid}/`: removes the row (Waldur's hard
    /// delete; the lifecycle's `Deleted` is reached with `set_deleted`).
    pub async fn delete_account(
        &self,
        ctx: &RequestCtx,
        caller: &muster_directory::Caller,
        uuid: &str,
    ) -> Result<(), DomainError> {
        let a = self.visible(caller, uuid).await?;
        let scope = self.scope(Actor::Caller(caller)).await?;
        may_change(&scope, &a)?;
        let audit = AuditEntry::new(
            &caller.ctx(ctx.clone()),
            actions::OFFERING_USER_DELETE,
            Some(caller.actor()),
            Some(a.uuid.to_string()),
        )
        .with_details(json!({"state": a.state.label()}))
        .with_event(
            streams::OFFERING_USERS,
            kinds::OFFERING_USER_DELETED,
            a.uuid.to_string(),
            event_data(&a, Some(a.state), "delete", &[]),
        );
        match self.store.delete_offering_user(a.uuid, &audit).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(account_not_found()),
            Err(e) => Err(store_error(e)),
        }
    }
}
