//! `modify_user`: the form (a new username, age or group, with the username checked against
//! the directory's rules and names already taken), both versions of the workflow, and the step
//! that renames the directory user with the subscription and records whether the group changed.

use super::{
    TYPE, actor, first_group, group_changed, group_name, link_group, resync, store_process_subscription,
    stored_username, unsync, user_of,
};
use crate::forms::{self, field_error, str_of, subscription_page};
use crate::{Deps, model, step};
use muster_core::workflow::Target;
use muster_core::workflow::form::{Field, FormRun, Page};
use muster_core::workflow::product::Block;
use muster_engine::{FormFuture, State, Step, StepError, StepOutcome, Workflow};
use serde_json::json;

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
