//! User workflows (create, modify, terminate, validate) and the steps every workflow shares
//! (`store_process_subscription`, `unsync`, `set_status`, `resync`).

use crate::forms::{self, field_error, str_of, subscription_page, summary_page};
use crate::{Deps, model, step};
use muster_core::audit::RequestCtx;
use muster_core::directory::create::CreateUserInput;
use muster_core::error::DomainError;
use muster_core::workflow::form::{Field, FormRun, Page};
use muster_core::workflow::product::{Block, UserBlock};
use muster_core::workflow::{SubscriptionStatus, Target};
use muster_engine::{FormFuture, State, Step, StepError, StepOutcome, Workflow};
use muster_store::{StoreTx, Subscription};
use serde_json::{Value, json};
use std::future::Future;
use std::pin::Pin;
use uuid::Uuid;

const TYPE: &str = "User";
/// The sealed argon2id hash of a chosen password: carried from the form to the step that
/// creates the user, never shown (`__` keys are not public) and never in plain text.
const SEALED_HASH: &str = "__password_hash";

fn actor(pid: Uuid) -> String {
    format!("process:{pid}")
}

// ---- shared steps ----

step!(store_process_subscription, |ctx| {
    let sid = ctx.uuid("subscription_id")?;
    let target = ctx.str("workflow_target").unwrap_or("CREATE").to_owned();
    let (pid, now) = (ctx.process_id, ctx.now());
    ctx.tx()
        .await?
        .link_process_subscription(pid, sid, &target, now)
        .await?;
    Ok(StepOutcome::nothing())
});

// "Lock subscription": the process took the subscription when it started (a conditional
// UPDATE, so two workflows can never both hold it); this step checks that and keeps a copy
// of the subscription as it was.
step!(unsync, |ctx| {
    let s = model::load_own(ctx).await?;
    model::ensure_held(ctx, &s)?;
    let old = json!({ s.subscription_id.to_string(): model::summary(&s) });
    Ok(StepOutcome::merge([("__old_subscriptions__", old)]))
});

// "Unlock subscription": releases what this process holds and marks it in sync.
step!(resync, |ctx| {
    let (pid, now) = (ctx.process_id, ctx.now());
    ctx.tx().await?.release_subscriptions(pid, now).await?;
    let s = model::load_own(ctx).await?;
    model::publish(ctx, &s, muster_core::audit::kinds::SUBSCRIPTION_UPDATED).await?;
    Ok(StepOutcome::merge([("subscription", model::summary(&s))]))
});

step!(set_status_active, |ctx| {
    let s = model::load_own(ctx).await?;
    let s = model::move_status(ctx, s, SubscriptionStatus::Active).await?;
    Ok(StepOutcome::merge([("subscription", model::summary(&s))]))
});

step!(set_status_terminated, |ctx| {
    let s = model::load_own(ctx).await?;
    model::ensure_held(ctx, &s)?;
    let s = model::move_status(ctx, s, SubscriptionStatus::Terminated).await?;
    Ok(StepOutcome::merge([("subscription", model::summary(&s))]))
});

/// Compensation of an aborted create: removes the subscription it made (while it is still
/// `initial` or `provisioning`) and the directory user it made for it.
pub fn remove_unfinished<'a>(
    deps: &'a Deps,
    tx: &'a mut StoreTx,
    state: &'a State,
    pid: Uuid,
) -> Pin<Box<dyn Future<Output = Result<(), StepError>> + Send + 'a>> {
    Box::pin(async move {
        let Some(sid) = state
            .get("subscription_id")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
        else {
            return Ok(());
        };
        let Some(sub) = tx.subscription(sid).await? else {
            return Ok(());
        };
        if !matches!(
            sub.status,
            SubscriptionStatus::Initial | SubscriptionStatus::Provisioning
        ) {
            // The create got far enough to make a live subscription: nothing is orphaned.
            return Ok(());
        }
        if tx.delete_unfinished_subscription(sid).await? {
            let event = muster_core::audit::Event {
                stream: muster_core::audit::streams::SUBSCRIPTIONS,
                kind: muster_core::audit::kinds::SUBSCRIPTION_DELETED,
                subject: Some(sid.to_string()),
                data: json!({ "subscription_id": sid, "reason": "the create workflow was aborted" }),
            };
            tx.event(&event, muster_core::clock::now(), None).await?;
        }
        if let Block::User(UserBlock {
            directory_user: Some(uuid),
            ..
        }) = sub.block
        {
            let ctx = RequestCtx {
                cid: format!("process-{pid}"),
                ..Default::default()
            };
            deps.directory.delete_user_in(tx, &ctx, &actor(pid), uuid).await?;
        }
        Ok(())
    })
}

// ---- create_user ----

fn user_page(groups: Vec<muster_core::workflow::form::Choice>) -> Page {
    Page::new("New user")
        .field(Field::text("username").length(1, 128))
        .field(Field::integer("age").optional().range(Some(0), Some(150)))
        .field(Field::choice_list("user_group_ids", groups, 1, 1).title("User group"))
        .field(Field::text("first_name").optional().length(0, 255))
        .field(Field::text("middle_name").optional().length(0, 255))
        .field(Field::text("last_name").optional().length(0, 255))
        .field(Field::text("email").optional().length(0, 254))
        .field(Field::text("password").optional().secret().length(0, 4096))
        .last()
}

fn directory_input(v: &serde_json::Map<String, Value>, with_password: bool) -> CreateUserInput {
    let s = |k: &str| str_of(v, k).filter(|x| !x.is_empty()).map(str::to_owned);
    CreateUserInput {
        username: s("username"),
        password: if with_password { s("password") } else { None },
        first_name: s("first_name"),
        middle_name: s("middle_name"),
        last_name: s("last_name"),
        email: s("email"),
        ..Default::default()
    }
}

fn create_form<'a>(deps: &'a Deps, _: &'a State, run: &'a mut FormRun) -> FormFuture<'a> {
    Box::pin(async move {
        forms::product_page(deps, TYPE, run)?;
        let groups = forms::active_choices(deps, "UserGroup").await?;
        let page = user_page(groups);
        let title = page.title.clone();
        let v = run.page(page)?;
        // The directory's create_user rules, checked now so that a bad email or password is a
        // form error, not a failed step.
        if let Err(e) = deps.directory.check_new_user(&directory_input(&v, true)) {
            let field = e
                .errors
                .first()
                .map(|f| f.field.clone())
                .unwrap_or_else(|| "username".into());
            return Err(field_error(&title, &field, &e.message));
        }
        let username = str_of(&v, "username").unwrap_or_default();
        let store = deps.directory.store();
        if store.username_taken(username, None).await? || store.username_held(username).await? {
            return Err(field_error(
                &title,
                "username",
                "this username (or one that looks like it) is taken",
            ));
        }
        Ok(())
    })
}

/// Hashes a chosen password before the process exists, and seals the hash: the password
/// itself is never stored, and the step that creates the user does no slow work while it
/// holds its transaction.
fn prepare_create<'a>(
    deps: &'a Deps,
    mut state: State,
) -> Pin<Box<dyn Future<Output = Result<State, DomainError>> + Send + 'a>> {
    Box::pin(async move {
        if let Some(Value::String(p)) = state.remove("password")
            && !p.is_empty()
        {
            let hash = deps.directory.hash_password(p).await?;
            state.insert(SEALED_HASH.into(), json!(deps.directory.secrets().seal(&hash)));
        }
        Ok(state)
    })
}

pub fn create() -> Workflow<Deps> {
    Workflow::new("create_user", 1, Target::Create, "Create user")
        .form(create_form)
        .prepare(prepare_create)
        .on_abort(remove_unfinished)
        .then("create_subscription", create_subscription)
        .then("store_process_subscription", store_process_subscription)
        .then("initialize_subscription", initialize_subscription)
        .then("provision_user", provision_user)
        .then("set_status", set_status_active)
        .step(
            Step::retry("request_offering_accounts", crate::accounts::request_offering_accounts)
                .when(has_group_offerings),
        )
        .then("resync", resync)
        .done()
}

fn first_group(ctx: &muster_engine::StepCtx<Deps>) -> Result<Uuid, StepError> {
    ctx.state
        .get("user_group_ids")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StepError::new("no user group was chosen"))
}

step!(create_subscription, |ctx| {
    let customer_id = Uuid::new_v4().to_string();
    model::create(
        ctx,
        customer_id,
        Block::User(UserBlock {
            subscription_instance_id: Uuid::new_v4(),
            username: None,
            age: None,
            user_id: None,
            directory_user: None,
            group: None,
        }),
    )
    .await
});

/// Links the chosen group (which must still be active: it is read under a row lock) and
/// creates the directory user with `create_user`'s rules.
async fn link_group(ctx: &mut muster_engine::StepCtx<Deps>, gid: Uuid) -> Result<Subscription, StepError> {
    let group = ctx
        .tx()
        .await?
        .subscription_shared(gid)
        .await?
        .ok_or_else(|| StepError::new(format!("the user group {gid} does not exist")))?;
    if group.status != SubscriptionStatus::Active || group.block.product_type().as_str() != "UserGroup" {
        return Err(StepError::new(format!(
            "the user group {gid} is {} (not an active UserGroup)",
            group.status.as_str()
        )));
    }
    Ok(group)
}

/// The offerings of a UserGroup subscription.
fn group_offerings(g: &Subscription) -> Vec<Uuid> {
    match &g.block {
        Block::UserGroup(b) => b.offerings.clone(),
        Block::User(_) => vec![],
    }
}

/// Whether the state's group has offerings (the account steps are skipped otherwise).
fn has_group_offerings(state: &State) -> bool {
    state
        .get("group_offerings")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}

/// Whether `modify_user` moved the user to another group.
fn group_changed(state: &State) -> bool {
    state.get("group_changed").and_then(Value::as_bool).unwrap_or(true)
}

fn group_name(g: &Subscription) -> String {
    match &g.block {
        Block::UserGroup(b) => b.group_name.clone().unwrap_or_default(),
        Block::User(_) => String::new(),
    }
}

/// The username as the directory stores it (the form checked it against the same rules).
fn stored_username(typed: &str) -> Result<String, StepError> {
    muster_core::directory::validate::username(typed).map_err(|e| StepError::new(e.message))
}

step!(initialize_subscription, |ctx| {
    let mut s = model::load_own(ctx).await?;
    let gid = first_group(ctx)?;
    let group = link_group(ctx, gid).await?;
    let username = stored_username(ctx.str("username")?)?;
    let affiliation = ctx
        .deps
        .catalogue
        .fixed_input(s.product_id, "affiliation")
        .unwrap_or("internal")
        .to_owned();
    let sealed = ctx.state.get(SEALED_HASH).and_then(Value::as_str).map(str::to_owned);
    let chosen_hash = match sealed {
        Some(sealed) => Some(
            ctx.deps
                .directory
                .secrets()
                .open(&sealed)
                .map_err(|_| StepError::new("the sealed password cannot be opened with this server key"))?,
        ),
        None => None,
    };
    let input = directory_input(&ctx.state, false);
    let rctx = model::request_ctx(ctx);
    let who = actor(ctx.process_id);
    let deps = ctx.deps.clone();
    let user = deps
        .directory
        .create_user_in(ctx.tx().await?, &rctx, &who, input, chosen_hash)
        .await?;
    if let Block::User(b) = &mut s.block {
        b.username = Some(username.clone());
        b.age = ctx.opt_i64("age").and_then(|a| i32::try_from(a).ok());
        b.group = Some(gid);
        b.directory_user = Some(user.uuid);
    }
    s.description = format!("User {username} from group {} ({affiliation})", group_name(&group));
    let s = model::set_status(ctx, s, SubscriptionStatus::Provisioning).await?;
    Ok(StepOutcome::merge([
        ("group_offerings", json!(group_offerings(&group))),
        ("user_uuid", json!(user.uuid)),
        ("directory_user_id", json!(user.user_id().to_string())),
        ("subscription", model::summary(&s)),
    ]))
});

// Allocates the numeric `user_id`: the allocator's row lock serialises concurrent creates and
// the UNIQUE column refuses a duplicate whatever happens.
step!(provision_user, |ctx| {
    let mut s = model::load_own(ctx).await?;
    let id = ctx.tx().await?.allocate("user_id").await?;
    if let Block::User(b) = &mut s.block {
        b.user_id = Some(id);
    }
    let s = model::save(ctx, s).await?;
    Ok(StepOutcome::merge([
        ("user_id", json!(id)),
        ("subscription", model::summary(&s)),
    ]))
});

// ---- modify_user ----

fn user_of(s: &Subscription) -> Option<&UserBlock> {
    match &s.block {
        Block::User(b) => Some(b),
        Block::UserGroup(_) => None,
    }
}

fn modify_form<'a>(deps: &'a Deps, _: &'a State, run: &'a mut FormRun) -> FormFuture<'a> {
    Box::pin(async move {
        let sub = subscription_page(deps, TYPE, run).await?;
        let Some(u) = user_of(&sub) else {
            return Err(field_error("Subscription", "subscription_id", "not a user"));
        };
        let groups = forms::active_choices(deps, "UserGroup").await?;
        let mut group = Field::choice_list("user_group_ids", groups, 1, 1).title("User group");
        if let Some(g) = u.group {
            group = group.default(json!([g.to_string()]));
        }
        let page = Page::new("Modify user")
            .field(Field::text("username").length(1, 128).default(json!(u.username)))
            .field(
                Field::integer("age")
                    .optional()
                    .range(Some(0), Some(150))
                    .default(json!(u.age)),
            )
            .field(group)
            .field(Field::read_only("user_id", json!(u.user_id)))
            .last();
        let title = page.title.clone();
        let v = run.page(page)?;
        let new_name = str_of(&v, "username").unwrap_or_default();
        if Some(new_name) != u.username.as_deref() {
            // The directory's username rules, checked now so that a bad name is a form error.
            if let Err(e) = muster_core::directory::validate::username(new_name) {
                return Err(field_error(&title, "username", &e.message));
            }
            // Taken by someone else: another directory user (or a look-alike of one), or
            // another User subscription. A change of case of one's own name is no clash.
            let store = deps.directory.store();
            let other_user = store.username_taken(new_name, u.directory_user).await?;
            let same_name = u
                .username
                .as_deref()
                .is_some_and(|old| old.eq_ignore_ascii_case(new_name));
            if other_user || (!same_name && store.username_held(new_name).await?) {
                return Err(field_error(
                    &title,
                    "username",
                    "this username (or one that looks like it) is taken",
                ));
            }
        }
        Ok(())
    })
}

/// Version 1, kept for processes that started with it: accounts change only on a move.
pub fn modify_v1() -> Workflow<Deps> {
    Workflow::new("modify_user", 1, Target::Modify, "Modify user")
        .form(modify_form)
        .then("store_process_subscription", store_process_subscription)
        .then("unsync", unsync)
        .then("modify_user_subscription", modify_subscription)
        .step(Step::retry("sync_offering_accounts", crate::accounts::sync_offering_accounts).when(group_changed))
        .then("resync", resync)
        .done()
}

/// Version 2: the user's accounts follow their group on every modify (a move, a return, or
/// drift a validation found), committed with the `reconcile_member_accounts` step.
pub fn modify() -> Workflow<Deps> {
    Workflow::new("modify_user", 2, Target::Modify, "Modify user")
        .form(modify_form)
        .then("store_process_subscription", store_process_subscription)
        .then("unsync", unsync)
        .then("modify_user_subscription", modify_subscription)
        .step(Step::retry(
            "reconcile_member_accounts",
            crate::membership::reconcile_member_accounts,
        ))
        .then("resync", resync)
        .done()
}

step!(modify_subscription, |ctx| {
    let mut s = model::load_own(ctx).await?;
    model::ensure_held(ctx, &s)?;
    let previous_group = user_of(&s).and_then(|u| u.group);
    let gid = first_group(ctx)?;
    let group = link_group(ctx, gid).await?;
    let username = stored_username(ctx.str("username")?)?;
    let affiliation = ctx
        .deps
        .catalogue
        .fixed_input(s.product_id, "affiliation")
        .unwrap_or("internal")
        .to_owned();
    let age = ctx.opt_i64("age").and_then(|a| i32::try_from(a).ok());
    let (rctx, who) = (model::request_ctx(ctx), actor(ctx.process_id));
    if let Block::User(b) = &mut s.block {
        if b.username.as_deref() != Some(&username)
            && let Some(uuid) = b.directory_user
        {
            // The directory user is renamed with the subscription, in the same transaction.
            let now = ctx.now();
            let tx = ctx.tx().await?;
            if let Some((mut user, version)) = tx.user_by_uuid(uuid).await? {
                user.username = username.clone();
                user.updated_at = now;
                let id = user.user_id().to_string();
                let entry = muster_core::audit::AuditEntry::new(
                    &rctx,
                    muster_core::audit::actions::USER_UPDATE,
                    Some(who.clone()),
                    Some(id.clone()),
                )
                .with_event(
                    muster_core::audit::streams::DIRECTORY,
                    muster_core::audit::kinds::USER_UPDATED,
                    id,
                    json!(muster_core::directory::UserView::of(&user, true)),
                );
                if !tx
                    .update_user(&user, version, false, &entry)
                    .await
                    .map_err(|e| match e {
                        muster_store::StoreError::Duplicate(_) => {
                            StepError::new("the username is taken in the directory")
                        }
                        other => other.into(),
                    })?
                {
                    return Err(StepError::new("the directory user changed underneath this step"));
                }
            }
        }
        b.username = Some(username.clone());
        b.age = age;
        b.group = Some(gid);
    }
    s.description = format!("User {username} from group {} ({affiliation})", group_name(&group));
    let s = model::save(ctx, s).await?;
    Ok(StepOutcome::merge([
        ("subscription", model::summary(&s)),
        ("previous_group", json!(previous_group)),
        ("group_changed", json!(previous_group != Some(gid))),
    ]))
});

// ---- terminate_user ----

fn terminate_form<'a>(deps: &'a Deps, _: &'a State, run: &'a mut FormRun) -> FormFuture<'a> {
    Box::pin(async move {
        let sub = subscription_page(deps, TYPE, run).await?;
        run.page(summary_page(
            "Terminate user",
            json!({ "question": format!("Are you sure you want to remove {}?", sub.description) }),
        ))?;
        Ok(())
    })
}

/// Version 1, kept for processes that started with it: only `OK` accounts are put up for
/// deletion; accounts still being made stay as they are.
pub fn terminate_v1() -> Workflow<Deps> {
    Workflow::new("terminate_user", 1, Target::Terminate, "Terminate user")
        .form(terminate_form)
        .then("store_process_subscription", store_process_subscription)
        .then("unsync", unsync)
        .then("deprovision_user", deprovision_user)
        .step(
            Step::retry("request_account_deletion", crate::accounts::request_account_deletion)
                .when(has_group_offerings),
        )
        .then("set_status", set_status_terminated)
        .then("resync", resync)
        .done()
}

/// Version 2: every live account of the user is retired (`request_deletion` from `OK`,
/// `discard` from `Requested`, `withdraw` while the site is making it), in the step.
pub fn terminate() -> Workflow<Deps> {
    Workflow::new("terminate_user", 2, Target::Terminate, "Terminate user")
        .form(terminate_form)
        .then("store_process_subscription", store_process_subscription)
        .then("unsync", unsync)
        .then("deprovision_user", deprovision_user)
        .step(Step::retry(
            "retire_member_accounts",
            crate::membership::retire_member_accounts,
        ))
        .then("set_status", set_status_terminated)
        .then("resync", resync)
        .done()
}

// Locks the directory user (and ends their sessions); the account stays for the record.
step!(deprovision_user, |ctx| {
    let s = model::load_own(ctx).await?;
    let offerings = match user_of(&s).and_then(|u| u.group) {
        Some(g) => group_offerings(&model::load(ctx, g).await?),
        None => vec![],
    };
    let Some(uuid) = user_of(&s).and_then(|u| u.directory_user) else {
        return Ok(StepOutcome::merge([
            ("directory_user_locked", json!(false)),
            ("group_offerings", json!(offerings)),
        ]));
    };
    let (rctx, who) = (model::request_ctx(ctx), actor(ctx.process_id));
    let deps = ctx.deps.clone();
    let locked = deps.directory.lock_user_in(ctx.tx().await?, &rctx, &who, uuid).await?;
    Ok(StepOutcome::merge([
        ("directory_user_locked", json!(locked)),
        ("group_offerings", json!(offerings)),
    ]))
});

// ---- validate_user ----

fn validate_form<'a>(deps: &'a Deps, _: &'a State, run: &'a mut FormRun) -> FormFuture<'a> {
    Box::pin(async move {
        subscription_page(deps, TYPE, run).await?;
        Ok(())
    })
}

/// Version 1, kept for processes that started with it.
pub fn validate_v1() -> Workflow<Deps> {
    Workflow::new("validate_user", 1, Target::Validate, "Validate user")
        .form(validate_form)
        .then("store_process_subscription", store_process_subscription)
        .then("unsync_unchecked", unsync)
        .then("validate_user_subscription", validate_subscription)
        .then("resync", resync)
        .done()
}

/// Version 2 also checks that an active user's accounts match their group's offerings.
pub fn validate() -> Workflow<Deps> {
    Workflow::new("validate_user", 2, Target::Validate, "Validate user")
        .form(validate_form)
        .then("store_process_subscription", store_process_subscription)
        .then("unsync_unchecked", unsync)
        .then("validate_user_subscription", validate_subscription)
        .then(
            "validate_offering_accounts",
            crate::membership::validate_member_accounts,
        )
        .then("resync", resync)
        .done()
}

// The subscription, the directory and the relations must agree.
step!(validate_subscription, |ctx| {
    let s = model::load_own(ctx).await?;
    let missing = s.block.missing_for(s.status);
    if !missing.is_empty() {
        return Err(StepError::new(format!(
            "the user is {} but lacks {}",
            s.status.as_str(),
            missing.join(", ")
        )));
    }
    let Some(u) = user_of(&s).cloned() else {
        return Err(StepError::new("the subscription's block is not a UserBlock"));
    };
    let Some(uuid) = u.directory_user else {
        return Err(StepError::new("the subscription names no directory user"));
    };
    let Some((user, _)) = ctx.tx().await?.user_by_uuid(uuid).await? else {
        return Err(StepError::new(format!("the directory user {uuid} does not exist")));
    };
    if Some(user.username.as_str()) != u.username.as_deref() {
        return Err(StepError::new(format!(
            "the subscription's username {:?} differs from the directory's {:?}",
            u.username.as_deref().unwrap_or_default(),
            user.username
        )));
    }
    if s.status == SubscriptionStatus::Active && user.is_locked {
        return Err(StepError::new("the user is active but the directory user is locked"));
    }
    let Some(gid) = u.group else {
        return Err(StepError::new("the user belongs to no group"));
    };
    let group = model::load(ctx, gid).await?;
    if s.status == SubscriptionStatus::Active && group.status != SubscriptionStatus::Active {
        return Err(StepError::new(format!(
            "the user is active but its group is {}",
            group.status.as_str()
        )));
    }
    Ok(StepOutcome::merge([("validated", json!(true))]))
});

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn form(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn the_directory_gets_the_forms_fields_without_empty_ones_and_the_password_only_when_asked() {
        let v = form(json!({"username": "ann", "first_name": "", "last_name": "Lee", "password": "S3cret-pass"}));
        let with = directory_input(&v, true);
        assert_eq!(with.username.as_deref(), Some("ann"));
        assert_eq!(with.first_name, None, "an empty field is no field");
        assert_eq!(with.last_name.as_deref(), Some("Lee"));
        assert_eq!(with.password.as_deref(), Some("S3cret-pass"));
        assert_eq!(directory_input(&v, false).password, None);
    }

    #[test]
    fn account_steps_run_only_for_groups_with_offerings_and_a_move_is_assumed_unless_said() {
        let mut state = State::new();
        assert!(!has_group_offerings(&state));
        state.insert("group_offerings".into(), json!([]));
        assert!(!has_group_offerings(&state));
        state.insert(
            "group_offerings".into(),
            json!(["6c1b0b0e-3a7e-4f5e-9d1e-2f7d5b0c9a11"]),
        );
        assert!(has_group_offerings(&state));
        assert!(
            group_changed(&state),
            "older processes' state has no flag: treat as moved"
        );
        state.insert("group_changed".into(), json!(false));
        assert!(!group_changed(&state));
    }

    #[test]
    fn a_username_is_stored_as_the_directory_would_store_it() {
        assert!(stored_username("ann").is_ok());
        assert!(stored_username("").is_err());
        assert!(stored_username("a b").is_err());
    }
}
