//! Group offerings follow membership (issue "hosting sites", part 1): a group member's
//! accounts are exactly the group's offerings. `modify_user_group` (version 2) brings every
//! active member in line when the offerings change; `modify_user` (version 2) does it for the
//! one member it modifies, whether or not they moved; the validate workflows (version 2) fail,
//! naming each missing or surplus account, when accounts and membership disagree; and
//! `task_reconcile_offering_accounts` repairs drift across all groups.
//!
//! The accounts change in the step's own transaction (a retry step: opened on first use,
//! committed with the step's record, retried with back-off on a conflict or an unavailable
//! database), so a modify either changes every member's accounts or none.

use crate::{Deps, step};
use muster_core::audit::RequestCtx;
use muster_core::workflow::SubscriptionStatus;
use muster_core::workflow::product::Block;
use muster_engine::{StepCtx, StepError, StepOutcome};
use muster_offerings::membership::{self, Reconciled};
use muster_store::Subscription;
use serde_json::json;
use std::collections::BTreeSet;
use uuid::Uuid;

/// How many reasons a failed validation names before it says how many more there are.
const REASONS_SHOWN: usize = 20;

/// Groups the reconcile task reads per batch.
const GROUP_BATCH: usize = 50;

fn offerings_of(s: &Subscription) -> BTreeSet<Uuid> {
    match &s.block {
        Block::UserGroup(g) => g.offerings.iter().copied().collect(),
        Block::User(_) => BTreeSet::new(),
    }
}

/// The offerings of `want` that still exist (a deleted offering can have no accounts to check;
/// the modify and reconcile steps report it as `missing_offerings`).
async fn existing(ctx: &StepCtx<Deps>, want: BTreeSet<Uuid>) -> Result<BTreeSet<Uuid>, StepError> {
    let store = ctx.deps.directory.store();
    let mut out = BTreeSet::new();
    for o in want {
        if store
            .offering(muster_core::offering::model::OfferingUuid(o))
            .await?
            .is_some()
        {
            out.insert(o);
        }
    }
    Ok(out)
}

fn reasons(list: &[String]) -> String {
    let mut text = list.iter().take(REASONS_SHOWN).cloned().collect::<Vec<_>>().join("; ");
    if list.len() > REASONS_SHOWN {
        text.push_str(&format!("; and {} more", list.len() - REASONS_SHOWN));
    }
    text
}

// modify_user_group (v2): every active member gets the group's offerings, and loses the rest.
step!(sync_group_accounts, |ctx| {
    let rctx = crate::model::request_ctx(ctx);
    let group = crate::model::load_own(ctx).await?;
    let want = offerings_of(&group);
    let offerings = ctx.deps.offerings.clone();
    let tx = ctx.tx().await?;
    let members = tx.group_members(group.subscription_id, false).await?;
    let report = offerings.reconcile_members(tx, &rctx, &members, &want).await?;
    Ok(StepOutcome::merge([
        ("members", json!(members.len())),
        ("offering_accounts", json!(report)),
    ]))
});

/// The User subscription in the state: its directory user and group, if active.
async fn member_of(ctx: &mut StepCtx<Deps>) -> Result<Option<(Uuid, Uuid)>, StepError> {
    let s = crate::model::load_own(ctx).await?;
    match &s.block {
        Block::User(u) if s.status == SubscriptionStatus::Active => Ok(u.directory_user.zip(u.group)),
        _ => Ok(None),
    }
}

// modify_user (v2): the member's accounts follow their group, moved or not.
step!(reconcile_member_accounts, |ctx| {
    let rctx = crate::model::request_ctx(ctx);
    let Some((user, gid)) = member_of(ctx).await? else {
        return Ok(StepOutcome::merge([(
            "offering_accounts",
            json!(Reconciled::default()),
        )]));
    };
    let group = crate::model::load(ctx, gid).await?;
    let want = offerings_of(&group);
    let offerings = ctx.deps.offerings.clone();
    let tx = ctx.tx().await?;
    let report = offerings.reconcile_members(tx, &rctx, &[user], &want).await?;
    Ok(StepOutcome::merge([("offering_accounts", json!(report))]))
});

// terminate_user (v2): the leaving user keeps no live account (the subscription is still
// active here; `set_status` follows).
step!(retire_member_accounts, |ctx| {
    let rctx = crate::model::request_ctx(ctx);
    let Some((user, _)) = member_of(ctx).await? else {
        return Ok(StepOutcome::merge([(
            "offering_accounts",
            json!(Reconciled::default()),
        )]));
    };
    let offerings = ctx.deps.offerings.clone();
    let tx = ctx.tx().await?;
    let report = offerings
        .reconcile_members(tx, &rctx, &[user], &BTreeSet::new())
        .await?;
    Ok(StepOutcome::merge([("offering_accounts", json!(report))]))
});

// validate_user_group (v2): every active member's accounts match the group's offerings.
// Members a workflow holds are left out: their accounts may be half-way (a create_user between
// `set_status` and `request_offering_accounts`), and that workflow brings them in line.
step!(validate_group_accounts, |ctx| {
    let group = crate::model::load_own(ctx).await?;
    let want = existing(ctx, offerings_of(&group)).await?;
    let tx = ctx.tx().await?;
    let members = tx.group_members(group.subscription_id, true).await?;
    let accounts = tx.accounts_of_users(&members).await?;
    let drift = membership::drift(&members, &want, &accounts);
    if !drift.is_empty() {
        return Err(StepError::new(format!(
            "{} offering account(s) disagree with the group's members: {}",
            drift.len(),
            reasons(&drift)
        )));
    }
    Ok(StepOutcome::merge([(
        "offering_accounts_checked",
        json!(members.len()),
    )]))
});

// validate_user (v2): an active user's accounts match their group's offerings.
step!(validate_member_accounts, |ctx| {
    let Some((user, gid)) = member_of(ctx).await? else {
        return Ok(StepOutcome::merge([("offering_accounts_checked", json!(0))]));
    };
    let group = crate::model::load(ctx, gid).await?;
    let want = existing(ctx, offerings_of(&group)).await?;
    let accounts = ctx.tx().await?.accounts_of_users(&[user]).await?;
    let drift = membership::drift(&[user], &want, &accounts);
    if !drift.is_empty() {
        return Err(StepError::new(format!(
            "{} offering account(s) disagree with the user's group: {}",
            drift.len(),
            reasons(&drift)
        )));
    }
    Ok(StepOutcome::merge([("offering_accounts_checked", json!(1))]))
});

// task_reconcile_offering_accounts: every active group, in batches, one transaction per group.
// A group a workflow holds is skipped (that workflow brings it in line), as are members a
// workflow holds; the report names the groups it changed and what it did.
step!(reconcile_all_groups, |ctx| {
    let store = ctx.deps.directory.store().clone();
    let offerings = ctx.deps.offerings.clone();
    let rctx = RequestCtx {
        cid: format!("process-{}", ctx.process_id),
        ..Default::default()
    };
    let groups = store
        .subscriptions_of_type("UserGroup", SubscriptionStatus::Active)
        .await?;
    let (mut checked, mut skipped, mut total) = (0u64, 0u64, Reconciled::default());
    let (mut changed, mut failed) = (Vec::new(), Vec::new());
    for batch in groups.chunks(GROUP_BATCH) {
        for (gid, description) in batch {
            let mut tx = store.begin().await?;
            // Read (on PostgreSQL: locked) in the transaction, so a workflow cannot take the
            // group half-way through.
            let held = match tx.subscription(*gid).await? {
                Some(g) if g.status == SubscriptionStatus::Active && g.locked_by_process.is_none() => Some(g),
                _ => None,
            };
            let Some(group) = held else {
                tx.rollback().await?;
                skipped += 1;
                continue;
            };
            let members = tx.group_members(*gid, true).await?;
            let report = match offerings
                .reconcile_members(&mut tx, &rctx, &members, &offerings_of(&group))
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    // One group that cannot be brought in line (a full uid pool, say) does not
                    // stop the others; the report names it.
                    tx.rollback().await?;
                    tracing::warn!(group = %gid, error = %e, "reconciling a group's offering accounts failed");
                    let reason = match e.kind {
                        muster_core::error::ErrorKind::Internal => "internal error (see the log)".to_owned(),
                        _ => e.message,
                    };
                    failed.push(json!({"subscription_id": gid, "description": description, "reason": reason}));
                    continue;
                }
            };
            tx.commit().await?;
            checked += 1;
            if report.changed() > 0 {
                total.requested += report.requested;
                total.restored += report.restored;
                total.rerequested += report.rerequested;
                total.deletion_requested += report.deletion_requested;
                total.discarded += report.discarded;
                total.withdrawn += report.withdrawn;
                changed.push(json!({
                    "subscription_id": gid,
                    "description": description,
                    "members": members.len(),
                    "offering_accounts": report,
                }));
            }
        }
    }
    total.sample.clear();
    Ok(StepOutcome::merge([
        ("groups_checked", json!(checked)),
        ("groups_skipped", json!(skipped)),
        ("groups_changed", json!(changed)),
        ("groups_failed", json!(failed)),
        ("offering_accounts", json!(total)),
    ]))
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_name_the_first_twenty_then_how_many_more() {
        assert_eq!(reasons(&[]), "");
        assert_eq!(reasons(&["a".into(), "b".into()]), "a; b");
        let many: Vec<String> = (0..23).map(|i| format!("r{i}")).collect();
        let text = reasons(&many);
        assert!(text.starts_with("r0; r1; "), "{text}");
        assert!(text.contains("r19; and 3 more"), "{text}");
        assert!(!text.contains("r20"), "{text}");
    }
}
