//! `terminate_user`: the confirmation form, both versions of the workflow, and the step that
//! locks the directory user and names the group's offerings whose accounts are retired.

use super::{
    TYPE, actor, group_offerings, has_group_offerings, resync, set_status_terminated, store_process_subscription,
    unsync, user_of,
};
use crate::forms::{subscription_page, summary_page};
use crate::{Deps, model, step};
use muster_core::workflow::Target;
use muster_core::workflow::form::FormRun;
use muster_engine::{FormFuture, State, Step, StepOutcome, Workflow};
use serde_json::json;

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
