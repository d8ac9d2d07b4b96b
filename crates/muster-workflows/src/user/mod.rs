//! User workflows (create, modify, terminate, validate) and the steps every workflow shares
//! (`store_process_subscription`, `unsync`, `set_status`, `resync`).
//!
//! One module per workflow, each with its form, its versions and the steps only it runs:
//! `create`, `modify`, `terminate` and `validate`. What several of them use stays here: the
//! shared steps and the compensation of an aborted create (the UserGroup workflows run them
//! too), and the User product's helpers (its group, its username, when the account steps run).
//! The modules are private and their workflows and steps re-exported here.

mod create;
mod modify;
mod terminate;
mod validate;

pub use create::{create, create_subscription, initialize_subscription, provision_user};
pub use modify::{modify, modify_subscription, modify_v1};
pub use terminate::{deprovision_user, terminate, terminate_v1};
pub use validate::{validate, validate_subscription, validate_v1};

use crate::{Deps, model, step};
use muster_core::audit::RequestCtx;
use muster_core::workflow::SubscriptionStatus;
use muster_core::workflow::product::{Block, UserBlock};
use muster_engine::{State, StepError, StepOutcome};
use muster_store::{StoreTx, Subscription};
use serde_json::{Value, json};
use std::future::Future;
use std::pin::Pin;
use uuid::Uuid;

const TYPE: &str = "User";

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

// ---- the User product ----

fn first_group(ctx: &muster_engine::StepCtx<Deps>) -> Result<Uuid, StepError> {
    ctx.state
        .get("user_group_ids")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StepError::new("no user group was chosen"))
}

/// The chosen group, read under a shared row lock (on PostgreSQL) so that it stays what was
/// checked until the step commits: an active UserGroup, or the step fails.
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

fn user_of(s: &Subscription) -> Option<&UserBlock> {
    match &s.block {
        Block::User(b) => Some(b),
        Block::UserGroup(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
