//! Joining workflows and offering accounts (the "offering accounts" issue, part 6): a User
//! that becomes active gets an account requested on every offering of its group; a User that
//! is terminated, or moves to another group, has the accounts it no longer needs put up for
//! deletion.
//!
//! The offering-account service commits each request in a transaction of its own (with its
//! history entry, audit record and event), so these run as retry steps: outside any chained
//! step transaction, idempotent (a second request finds the account; a deletion already
//! under way is left alone), and retried with back-off if the database is unavailable.

use crate::{Deps, step};
use muster_core::offering::lifecycle::{self, Action};
use muster_core::offering::model::OfferingUuid;
use muster_core::workflow::product::Block;
use muster_engine::{StepCtx, StepError, StepOutcome};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use uuid::Uuid;

/// The offerings of a UserGroup subscription.
async fn offerings_of_group(ctx: &StepCtx<Deps>, group: Uuid) -> Result<BTreeSet<Uuid>, StepError> {
    let store = ctx.deps.directory.store();
    match store.subscription(group).await?.map(|s| s.block) {
        Some(Block::UserGroup(g)) => Ok(g.offerings.into_iter().collect()),
        _ => Ok(BTreeSet::new()),
    }
}

/// The user's directory uuid and group, from the User subscription in the state.
async fn member(ctx: &StepCtx<Deps>) -> Result<(Uuid, Option<Uuid>), StepError> {
    let sid = ctx.uuid("subscription_id")?;
    match ctx.deps.directory.store().subscription(sid).await?.map(|s| s.block) {
        Some(Block::User(u)) => {
            let user = u
                .directory_user
                .ok_or_else(|| StepError::new("the user subscription names no directory user"))?;
            Ok((user, u.group))
        }
        _ => Err(StepError::new("not a User subscription")),
    }
}

async fn request_all(ctx: &StepCtx<Deps>, user: Uuid, offerings: &BTreeSet<Uuid>) -> Result<Vec<Value>, StepError> {
    let rctx = crate::model::request_ctx(ctx);
    let mut out = Vec::new();
    for o in offerings {
        let view = ctx
            .deps
            .offerings
            .request_account(&rctx, user, OfferingUuid(*o))
            .await?;
        out.push(json!({ "offering_uuid": o, "offering_user": view.uuid, "state": view.state }));
    }
    Ok(out)
}

/// Requests deletion of the user's accounts on `offerings` where the lifecycle allows it now;
/// accounts already being deleted (or never made) are left as they are.
async fn retire_all(ctx: &StepCtx<Deps>, user: Uuid, offerings: &BTreeSet<Uuid>) -> Result<Vec<Value>, StepError> {
    let rctx = crate::model::request_ctx(ctx);
    let store = ctx.deps.directory.store();
    let mut out = Vec::new();
    for o in offerings {
        let Some(account) = store.offering_user_of(OfferingUuid(*o), user).await? else {
            continue;
        };
        if !lifecycle::sources(Action::RequestDeletion).contains(&account.state) {
            out.push(json!({ "offering_uuid": o, "offering_user": account.uuid.to_string(), "left_in": account.state.label() }));
            continue;
        }
        let view = ctx.deps.offerings.request_deletion(&rctx, account.uuid).await?;
        out.push(json!({ "offering_uuid": o, "offering_user": view.uuid, "state": view.state }));
    }
    Ok(out)
}

// create_user: the user is active; request an account on each offering of the group.
step!(request_offering_accounts, |ctx| {
    let (user, group) = member(ctx).await?;
    let offerings = match group {
        Some(g) => offerings_of_group(ctx, g).await?,
        None => BTreeSet::new(),
    };
    let requested = request_all(ctx, user, &offerings).await?;
    Ok(StepOutcome::merge([("offering_accounts_requested", json!(requested))]))
});

// terminate_user: put every account of the user's group up for deletion.
step!(request_account_deletion, |ctx| {
    let (user, group) = member(ctx).await?;
    let offerings = match group {
        Some(g) => offerings_of_group(ctx, g).await?,
        None => BTreeSet::new(),
    };
    let retired = retire_all(ctx, user, &offerings).await?;
    Ok(StepOutcome::merge([("offering_accounts_retired", json!(retired))]))
});

// modify_user: after a move to another group, request the new group's accounts and retire the
// ones only the old group needed.
step!(sync_offering_accounts, |ctx| {
    let (user, group) = member(ctx).await?;
    let previous: Option<Uuid> = ctx
        .state
        .get("previous_group")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok());
    if previous == group {
        return Ok(StepOutcome::merge([("offering_accounts_changed", json!(false))]));
    }
    let new = match group {
        Some(g) => offerings_of_group(ctx, g).await?,
        None => BTreeSet::new(),
    };
    let old = match previous {
        Some(g) => offerings_of_group(ctx, g).await?,
        None => BTreeSet::new(),
    };
    let requested = request_all(ctx, user, &new).await?;
    let only_old: BTreeSet<Uuid> = old.difference(&new).copied().collect();
    let retired = retire_all(ctx, user, &only_old).await?;
    Ok(StepOutcome::merge([
        ("offering_accounts_requested", json!(requested)),
        ("offering_accounts_retired", json!(retired)),
    ]))
});
