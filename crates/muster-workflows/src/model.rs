//! Changing subscriptions inside a step, with the lifecycle rules: a status moves only along
//! the table in `muster_core::workflow::lifecycle`, only with the fields it requires, and only
//! when the subscriptions that use this one can live with it. Every change is an event.

use crate::Deps;
use muster_core::audit::{Event, kinds, streams};
use muster_core::workflow::SubscriptionStatus;
use muster_engine::{StepCtx, StepError};
use muster_store::{StoreError, Subscription};
use serde_json::{Value, json};
use uuid::Uuid;

/// The subscription `id`, read (and on PostgreSQL locked) in the step's transaction.
pub async fn load(ctx: &mut StepCtx<Deps>, id: Uuid) -> Result<Subscription, StepError> {
    ctx.tx()
        .await?
        .subscription(id)
        .await?
        .ok_or_else(|| StepError::new(format!("subscription {id} does not exist")))
}

/// The subscription named by the state's `subscription_id`.
pub async fn load_own(ctx: &mut StepCtx<Deps>) -> Result<Subscription, StepError> {
    let id = ctx.uuid("subscription_id")?;
    load(ctx, id).await
}

fn duplicate(e: StoreError) -> StepError {
    match e {
        StoreError::Duplicate(what) => StepError::new(format!("{what} is already taken by another subscription")),
        other => other.into(),
    }
}

/// A short JSON of the subscription for events and state.
pub fn summary(s: &Subscription) -> Value {
    json!({
        "subscription_id": s.subscription_id,
        "description": s.description,
        "status": s.status.as_str(),
        "insync": s.insync,
        "product_id": s.product_id,
        "customer_id": s.customer_id,
        "version": s.version,
    })
}

/// Saves `s` (checking the fields its status requires), publishing `subscription.updated`.
pub async fn save(ctx: &mut StepCtx<Deps>, s: Subscription) -> Result<Subscription, StepError> {
    write(ctx, s, true).await
}

async fn write(ctx: &mut StepCtx<Deps>, mut s: Subscription, block_changed: bool) -> Result<Subscription, StepError> {
    let missing = s.block.missing_for(s.status);
    if !missing.is_empty() {
        return Err(StepError::new(format!(
            "a {} subscription in status {} needs {}",
            s.block.product_type().as_str(),
            s.status.as_str(),
            missing.join(", ")
        )));
    }
    let now = ctx.now();
    let tx = ctx.tx().await?;
    let saved = if block_changed {
        tx.save_subscription(&s, now).await
    } else {
        tx.save_subscription_row(&s, now).await
    };
    let version = saved
        .map_err(duplicate)?
        .ok_or_else(|| StepError::new("the subscription changed underneath this step"))?;
    s.version = version;
    s.updated_at = now;
    publish(ctx, &s, kinds::SUBSCRIPTION_UPDATED).await?;
    Ok(s)
}

/// Creates the `initial` subscription of the state's `product`, held by this process (a create
/// workflow's `create_subscription` step), and returns what the step adds to the state.
pub async fn create(
    ctx: &mut StepCtx<Deps>,
    customer_id: String,
    block: muster_core::workflow::product::Block,
) -> Result<muster_engine::StepOutcome, StepError> {
    let product: Uuid = ctx.uuid("product")?;
    let description = ctx
        .deps
        .catalogue
        .product(product)
        .map(|p| format!("Initial subscription of {}", p.description))
        .ok_or_else(|| StepError::new("unknown product"))?;
    let now = ctx.now();
    let s = Subscription {
        subscription_id: Uuid::new_v4(),
        description,
        status: SubscriptionStatus::Initial,
        product_id: product,
        customer_id,
        insync: false,
        start_date: None,
        end_date: None,
        note: None,
        locked_by_process: Some(ctx.process_id),
        version: 1,
        created_at: now,
        updated_at: now,
        block,
    };
    insert(ctx, &s).await?;
    Ok(muster_engine::StepOutcome::merge([
        ("subscription_id", json!(s.subscription_id)),
        ("subscription", summary(&s)),
    ]))
}

/// The request context of a step's own changes (audit `cid` = the process).
pub fn request_ctx(ctx: &StepCtx<Deps>) -> muster_core::audit::RequestCtx {
    muster_core::audit::RequestCtx {
        cid: format!("process-{}", ctx.process_id),
        ..Default::default()
    }
}

pub async fn insert(ctx: &mut StepCtx<Deps>, s: &Subscription) -> Result<(), StepError> {
    ctx.tx().await?.insert_subscription(s).await.map_err(duplicate)?;
    publish(ctx, s, kinds::SUBSCRIPTION_CREATED).await
}

pub async fn publish(ctx: &mut StepCtx<Deps>, s: &Subscription, kind: &'static str) -> Result<(), StepError> {
    let now = ctx.now();
    let event = Event {
        stream: streams::SUBSCRIPTIONS,
        kind,
        subject: Some(s.subscription_id.to_string()),
        data: summary(s),
    };
    ctx.tx().await?.event(&event, now, None).await?;
    Ok(())
}

/// Moves `s` to `to`: along the lifecycle table, with the required fields, and only when
/// every subscription using it is in a status that `to` allows. Sets `start_date` on becoming
/// active and `end_date` on termination, as orchestrator-core does.
pub async fn set_status(
    ctx: &mut StepCtx<Deps>,
    s: Subscription,
    to: SubscriptionStatus,
) -> Result<Subscription, StepError> {
    change_status(ctx, s, to, true).await
}

/// [`set_status`] for a subscription whose block this step did not change.
pub async fn move_status(
    ctx: &mut StepCtx<Deps>,
    s: Subscription,
    to: SubscriptionStatus,
) -> Result<Subscription, StepError> {
    change_status(ctx, s, to, false).await
}

async fn change_status(
    ctx: &mut StepCtx<Deps>,
    mut s: Subscription,
    to: SubscriptionStatus,
    block_changed: bool,
) -> Result<Subscription, StepError> {
    if !s.status.can_move_to(to) {
        return Err(StepError::new(format!(
            "a subscription cannot move from {} to {}",
            s.status.as_str(),
            to.as_str()
        )));
    }
    // Only a UserGroup's block is ever depended on (product_block_relations); a User has no
    // users to ask about.
    let users = match s.block {
        muster_core::workflow::product::Block::UserGroup(_) => {
            ctx.tx().await?.in_use_by_statuses(s.subscription_id).await?
        }
        muster_core::workflow::product::Block::User(_) => vec![],
    };
    if let Some(bad) = users.iter().find(|u| !to.safe_for_users().contains(u)) {
        return Err(StepError::new(format!(
            "a subscription in status {} uses this one, which therefore cannot become {}",
            bad.as_str(),
            to.as_str()
        )));
    }
    let now = ctx.now();
    if to == SubscriptionStatus::Active && s.start_date.is_none() {
        s.start_date = Some(now);
    }
    if to == SubscriptionStatus::Terminated && s.end_date.is_none() {
        s.end_date = Some(now);
    }
    s.status = to;
    write(ctx, s, block_changed).await
}

/// Fails unless this process holds the subscription (taken when the process started).
pub fn ensure_held(ctx: &StepCtx<Deps>, s: &Subscription) -> Result<(), StepError> {
    if s.locked_by_process != Some(ctx.process_id) {
        return Err(StepError::new(
            "Subscription is already out of sync, cannot continue! (another process holds it)",
        ));
    }
    Ok(())
}
