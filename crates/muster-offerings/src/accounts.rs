//! Offering accounts: creation, the lifecycle transitions, field changes, deletion, listing and
//! history.

use crate::providers::parse_uuid;
use crate::views::{CommentsView, HistoryView, OfferingUserView};
use crate::{Actor, Offerings, Scope, forbidden, store_error};
use muster_core::audit::{AuditEntry, RequestCtx, actions, kinds, streams};
use muster_core::error::{DomainError, ErrorKind, codes};
use muster_core::offering::lifecycle::{
    self, AccountState, Action, CommentEffect, RuntimeState, UsernameChange, username_change,
};
use muster_core::offering::model::{Account, AccountFields, HistoryEntry, OfferingUserUuid, OfferingUuid, hex};
use muster_core::offering::naming::{self, Proposal};
use muster_store::{AccountChange, AccountOrder, AccountQuery, ChangeOutcome, StoreError};
use serde::{Deserialize, Deserializer};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

/// Django's URLField default.
pub const MAX_COMMENT_URL: usize = 200;
pub const MAX_COMMENT: usize = 10_000;

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn explicit<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `POST /api/marketplace-offering-users/`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccountInput {
    pub offering_uuid: String,
    /// The directory user's `uuid`.
    pub user_uuid: String,
    /// Creating with a username creates the account directly in `OK` (the site already made it).
    /// A portable login name: `[a-z_][a-z0-9_.-]*`, at most 32 characters.
    #[serde(default)]
    #[schema(pattern = "^[a-z_][a-z0-9_.-]{0,31}$")]
    pub username: Option<String>,
}

/// The body of `set_pending_account_linking` / `set_pending_additional_validation` (optional
/// for the other actions, which ignore nothing: they refuse a body with fields).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionInput {
    /// Instructions for the person. Omitted: unchanged; `""`: cleared. HTML is sanitised.
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<String>)]
    pub comment: Option<Option<String>>,
    /// A link for the person (form, documentation). Omitted: unchanged; `""`: cleared; `null`: 400.
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<String>)]
    pub comment_url: Option<Option<String>>,
}

/// `PATCH …/update_comments/`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentsInput {
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<String>)]
    pub service_provider_comment: Option<Option<String>>,
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<String>)]
    pub service_provider_comment_url: Option<Option<String>>,
}

/// `POST …/update_runtime_state/`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeStateInput {
    pub runtime_state: RuntimeState,
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<String>)]
    pub service_provider_comment: Option<Option<String>>,
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<String>)]
    pub service_provider_comment_url: Option<Option<String>>,
}

/// `PUT` / `PATCH /api/marketplace-offering-users/{uuid}/`: the local username.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsernameInput {
    /// A new non-empty username on an account being created moves it to `OK`; the same
    /// username again changes nothing; `null` or `""` clears it. A portable login name:
    /// `[a-z_][a-z0-9_.-]*`, at most 32 characters (else 400 `E001001`).
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<String>)]
    pub username: Option<Option<String>>,
}

/// List filters, already parsed from the query string.
#[derive(Debug, Clone, Default)]
pub struct AccountFilter {
    pub states: Vec<AccountState>,
    pub offering_uuids: Vec<Uuid>,
    pub provider_uuids: Vec<Uuid>,
    pub user_uuid: Option<Uuid>,
    pub user_username: Option<String>,
    pub is_restricted: Option<bool>,
    pub runtime_states: Vec<RuntimeState>,
    pub query: Option<String>,
    pub created_from: Option<OffsetDateTime>,
    pub created_before: Option<OffsetDateTime>,
    pub modified_from: Option<OffsetDateTime>,
    pub modified_before: Option<OffsetDateTime>,
    pub order: Vec<(AccountOrder, bool)>,
    /// 1-based.
    pub page: i64,
    pub page_size: i64,
}

fn null_error(field: &str) -> DomainError {
    DomainError::invalid_field(field, codes::INVALID_INPUT, "This field may not be null.")
}

/// Sanitises a comment: HTML is reduced to ammonia's allow-list (so `<p>` stays and `<script>`
/// or `onerror` go), since sites write comments that the console shows to people.
fn clean_comment(field: &str, value: Option<String>) -> Result<String, DomainError> {
    let value = value.ok_or_else(|| null_error(field))?;
    if value.chars().count() > MAX_COMMENT {
        return Err(DomainError::invalid_field(
            field,
            codes::INVALID_INPUT,
            format!("at most {MAX_COMMENT} characters"),
        ));
    }
    Ok(SANITISER.clean(&value).to_string())
}

/// ammonia's default allow-list, built once (building it is most of the cost of a clean).
static SANITISER: std::sync::LazyLock<ammonia::Builder<'static>> = std::sync::LazyLock::new(ammonia::Builder::default);

/// A comment URL must be empty or an http(s) URL without spaces (Django's URLField, roughly).
fn clean_url(field: &str, value: Option<String>) -> Result<String, DomainError> {
    let value = value.ok_or_else(|| null_error(field))?;
    let value = value.trim().to_owned();
    if value.is_empty() {
        return Ok(value);
    }
    let rest = value.strip_prefix("https://").or_else(|| value.strip_prefix("http://"));
    let ok = value.len() <= MAX_COMMENT_URL
        && rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '<' || c == '>');
    if ok {
        Ok(value)
    } else {
        Err(DomainError::invalid_field(
            field,
            codes::INVALID_INPUT,
            "Enter a valid URL.",
        ))
    }
}

/// A local username: empty (none yet) or a portable login name (see
/// `muster_core::offering::username`).
fn clean_username(value: Option<String>) -> Result<String, DomainError> {
    let value = value.unwrap_or_default();
    muster_core::offering::username::check(&value)?;
    Ok(value)
}

pub(crate) fn account_not_found() -> DomainError {
    DomainError::not_found("offering user")
}

/// The event data of a change: identifiers and labels, nothing secret. `provider_uuid` decides
/// who may read it.
pub(crate) fn event_data(
    a: &Account,
    previous: Option<AccountState>,
    action: &str,
    changed: &[&str],
) -> serde_json::Value {
    json!({
        "offering_user_uuid": a.uuid.to_string(),
        "offering_uuid": a.offering_uuid.to_string(),
        "provider_uuid": a.provider_uuid.to_string(),
        "user_uuid": hex(a.user_uuid),
        "user_username": a.user_username,
        "username": a.username,
        "state": a.state.label(),
        "previous_state": previous.map(AccountState::label),
        "runtime_state": a.runtime_state.label(),
        "is_restricted": a.is_restricted,
        "action": action,
        "changed_fields": changed,
        "version": a.version,
    })
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

fn outcome(o: ChangeOutcome) -> Result<Account, DomainError> {
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
        let user = person.uuid;
        let state = lifecycle::creation_state(Some(&username));
        let fields = AccountFields {
            username,
            state,
            runtime_state: RuntimeState::default(),
            is_restricted: false,
            comment: String::new(),
            comment_url: String::new(),
        };
        let uuid = OfferingUserUuid::new_random();
        let actor_name = actor.name();
        let entry = AuditEntry::new(
            ctx,
            actions::OFFERING_USER_CREATE,
            Some(actor_name.clone()),
            Some(uuid.to_string()),
        );
        let at = entry.at;
        let account = Account {
            uuid,
            offering_uuid: o.uuid,
            offering_name: o.name.clone(),
            provider_uuid: o.provider_uuid,
            provider_name: String::new(),
            user_uuid: user,
            user_username: person.username.clone(),
            user_full_name: String::new(),
            user_email: person.email.clone(),
            username: fields.username.clone(),
            state,
            runtime_state: fields.runtime_state,
            is_restricted: false,
            comment: String::new(),
            comment_url: String::new(),
            version: 1,
            created: at,
            modified: at,
            posix: posix.clone(),
        };
        let history = HistoryEntry {
            at,
            actor: Some(actor_name),
            action: "create".to_owned(),
            from_state: None,
            to_state: state,
            comment: String::new(),
            comment_url: String::new(),
            cid: ctx.cid.clone(),
        };
        let audit = entry
            .with_details(json!({"offering_uuid": o.uuid.to_string(), "user_uuid": hex(user), "state": state.label()}))
            .with_event(
                streams::OFFERING_USERS,
                kinds::OFFERING_USER_CREATED,
                uuid.to_string(),
                event_data(&account, None, "create", &[]),
            );
        self.store
            .insert_offering_user(uuid, o, user, &fields, &history, &audit, posix.as_ref())
            .await?;
        Ok(uuid)
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
        let comment = match (lifecycle::comment_effect(action), input.comment) {
            (CommentEffect::SetIfGiven, Some(c)) => Some(clean_comment("comment", c)?),
            (_, Some(Some(_))) => {
                return Err(DomainError::invalid_field(
                    "comment",
                    codes::INVALID_INPUT,
                    format!("{action} takes no comment"),
                ));
            }
            (_, Some(None)) => return Err(null_error("comment")),
            (_, None) => None,
        };
        let comment_url = match (lifecycle::comment_effect(action), input.comment_url) {
            (CommentEffect::SetIfGiven, Some(c)) => Some(clean_url("comment_url", c)?),
            (_, Some(Some(_))) => {
                return Err(DomainError::invalid_field(
                    "comment_url",
                    codes::INVALID_INPUT,
                    format!("{action} takes no comment_url"),
                ));
            }
            (_, Some(None)) => return Err(null_error("comment_url")),
            (_, None) => None,
        };
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
        let comment = input
            .service_provider_comment
            .map(|c| clean_comment("service_provider_comment", c))
            .transpose()?;
        let url = input
            .service_provider_comment_url
            .map(|c| clean_url("service_provider_comment_url", c))
            .transpose()?;
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
        let comment = input
            .service_provider_comment
            .map(|c| clean_comment("service_provider_comment", c))
            .transpose()?;
        let url = input
            .service_provider_comment_url
            .map(|c| clean_url("service_provider_comment_url", c))
            .transpose()?;
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

/// Whether an error is an invalid transition's 400 (for callers that treat it as "back off").
pub fn is_invalid_transition(e: &DomainError) -> bool {
    e.kind == ErrorKind::Invalid && e.code == codes::INVALID_OPERATION
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_are_sanitised() {
        let c = clean_comment(
            "comment",
            Some("<p>hi</p><script>alert(1)</script><img src=x onerror=alert(1)>".into()),
        );
        let c = c.unwrap_or_default();
        assert!(c.contains("<p>hi</p>"), "{c}");
        assert!(!c.contains("script") && !c.contains("onerror"), "{c}");
        assert!(clean_comment("comment", None).is_err());
    }

    #[test]
    fn urls() {
        assert_eq!(clean_url("u", Some(String::new())).ok().as_deref(), Some(""));
        assert!(clean_url("u", Some("https://portal.lumi.csc.fi/verify".into())).is_ok());
        for bad in ["javascript:alert(1)", "https://", "http:///x", "https://a b", "ftp://x"] {
            assert!(clean_url("u", Some(bad.into())).is_err(), "{bad}");
        }
        assert!(clean_url("u", None).is_err());
    }

    #[test]
    fn usernames() {
        assert_eq!(clean_username(None).ok().as_deref(), Some(""));
        assert!(clean_username(Some("jsmith".into())).is_ok());
        assert!(clean_username(Some("j smith".into())).is_err());
        assert!(clean_username(Some("x".repeat(33))).is_err());
        assert!(clean_username(Some("<script>".into())).is_err());
        assert!(clean_username(Some("../../etc".into())).is_err());
    }
}
