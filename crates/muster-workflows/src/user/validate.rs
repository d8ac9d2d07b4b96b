//! `validate_user`: both versions of the workflow and the step that checks the subscription
//! against the directory user and the group it names.

use super::{TYPE, resync, store_process_subscription, unsync, user_of};
use crate::forms::subscription_page;
use crate::{Deps, model, step};
use muster_core::workflow::form::FormRun;
use muster_core::workflow::{SubscriptionStatus, Target};
use muster_engine::{FormFuture, State, StepError, StepOutcome, Workflow};
use serde_json::json;

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
