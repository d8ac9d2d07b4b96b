//! Scheduled tasks (orchestrator-core's built-in tasks).

use crate::{Deps, step};
use muster_core::audit::RequestCtx;
use muster_core::workflow::{SubscriptionStatus, Target};
use muster_engine::{StartError, Step, StepError, StepOutcome, Workflow};
use serde_json::json;

/// How long finished tasks are kept (`TASK_LOG_RETENTION_DAYS`).
const TASK_RETENTION_DAYS: i64 = 3;

pub fn validate_subscriptions() -> Workflow<Deps> {
    Workflow::new(
        "task_validate_subscriptions",
        1,
        Target::System,
        "Validate subscriptions",
    )
    .task()
    .then("start_validations", start_validations)
    .done()
}

// Starts the validate workflow of every active, in-sync subscription; a subscription another
// workflow holds is skipped (its start is refused) and counted.
step!(start_validations, |ctx| {
    let engine = ctx
        .deps
        .engine()
        .cloned()
        .ok_or_else(|| StepError::new("engine not wired"))?;
    let store = ctx.deps.directory.store().clone();
    let ids = store.subscription_ids_in(SubscriptionStatus::Active, 100_000).await?;
    let rctx = RequestCtx {
        cid: format!("process-{}", ctx.process_id),
        ..Default::default()
    };
    let (mut started, mut skipped) = (0, 0);
    for id in ids {
        let Some(sub) = store.subscription(id).await? else {
            continue;
        };
        let wf = match sub.block.product_type().as_str() {
            "UserGroup" => "validate_user_group",
            _ => "validate_user",
        };
        match engine
            .start(
                &rctx,
                "scheduler",
                wf,
                vec![json!({ "subscription_id": id.to_string() })],
            )
            .await
        {
            Ok(_) => started += 1,
            Err(StartError::Domain(_)) | Err(StartError::Form(_)) => skipped += 1,
        }
    }
    Ok(StepOutcome::merge([
        ("validations_started", json!(started)),
        ("validations_skipped", json!(skipped)),
    ]))
});

pub fn resume_workflows() -> Workflow<Deps> {
    Workflow::new("task_resume_workflows", 1, Target::System, "Resume workflows")
        .task()
        .step(Step::retry("resume_waiting", resume_waiting))
        .done()
}

step!(resume_waiting, |ctx| {
    let n = ctx.deps.directory.store().requeue_waiting(ctx.now()).await?;
    Ok(StepOutcome::merge([("resumed", json!(n))]))
});

pub fn clean_up_tasks() -> Workflow<Deps> {
    Workflow::new("task_clean_up_tasks", 1, Target::System, "Clean up old tasks")
        .task()
        .step(Step::retry("remove_old_tasks", remove_old_tasks))
        .done()
}

step!(remove_old_tasks, |ctx| {
    let before = ctx.now() - time::Duration::days(TASK_RETENTION_DAYS);
    let n = ctx.deps.directory.store().delete_finished_tasks(before).await?;
    Ok(StepOutcome::merge([("deleted", json!(n))]))
});

pub fn clean_up_events() -> Workflow<Deps> {
    Workflow::new("task_clean_up_events", 1, Target::System, "Clean up old events")
        .task()
        .step(Step::retry("remove_old_events", remove_old_events))
        .done()
}

/// Events deleted per transaction: small enough not to hold the writer for long.
const EVENT_PURGE_BATCH: i64 = 5_000;

// Deletes events older than the retention period (MUSTER_EVENT_RETENTION_DAYS); with no
// retention set it deletes nothing and says so.
step!(remove_old_events, |ctx| {
    let Some(keep) = ctx.deps.event_retention else {
        return Ok(StepOutcome::merge([
            ("deleted", json!(0)),
            ("retention", json!("forever")),
        ]));
    };
    let before = ctx.now() - keep;
    let n = ctx
        .deps
        .directory
        .store()
        .purge_events(before, EVENT_PURGE_BATCH)
        .await?;
    Ok(StepOutcome::merge([
        ("deleted", json!(n)),
        ("retention_days", json!(keep.whole_days())),
    ]))
});

pub fn reconcile_offering_accounts() -> Workflow<Deps> {
    Workflow::new(
        "task_reconcile_offering_accounts",
        1,
        Target::System,
        "Reconcile offering accounts with group membership",
    )
    .task()
    .step(Step::retry(
        "reconcile_all_groups",
        crate::membership::reconcile_all_groups,
    ))
    .done()
}
