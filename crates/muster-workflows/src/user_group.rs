//! UserGroup workflows: create, modify, terminate, validate.

use crate::forms::{self, field_error, subscription_page, summary_page};
use crate::{Deps, model, step};
use muster_core::workflow::form::{Choice, Field, FormRun, Page};
use muster_core::workflow::product::{Block, UserGroupBlock};
use muster_core::workflow::{SubscriptionStatus, Target};
use muster_engine::{FormFuture, State, Step, StepError, StepOutcome, Workflow};
use muster_store::Subscription;
use serde_json::{Value, json};
use uuid::Uuid;

const TYPE: &str = "UserGroup";

fn offerings_of(v: &serde_json::Map<String, Value>) -> Vec<Uuid> {
    v.get("offerings")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| x.as_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// The offerings a group's members may get accounts on (queried on every replay).
async fn offering_choices(deps: &Deps) -> Result<Vec<Choice>, muster_engine::FormFail> {
    let offerings = deps.directory.store().list_offerings(None).await?;
    Ok(offerings
        .into_iter()
        .map(|o| Choice::new(o.uuid.to_string(), format!("{} ({})", o.name, o.slug)))
        .collect())
}

fn group_fields(name_default: Option<&str>, offerings_default: &[Uuid], choices: Vec<Choice>) -> Vec<Field> {
    let mut name = Field::text("group_name").length(1, 255).title("Group name");
    if let Some(d) = name_default {
        name = name.default(json!(d));
    }
    // Defaults in the offering API's spelling (hex without hyphens), so they match the choices.
    let defaults: Vec<String> = offerings_default.iter().map(|u| u.simple().to_string()).collect();
    let n = choices.len();
    let offerings = Field::choice_list("offerings", choices, 0, n)
        .default(json!(defaults))
        .title("Hosting offerings");
    vec![name, offerings]
}

fn create_form<'a>(deps: &'a Deps, _: &'a State, run: &'a mut FormRun) -> FormFuture<'a> {
    Box::pin(async move {
        forms::product_page(deps, TYPE, run)?;
        let choices = offering_choices(deps).await?;
        let mut page = Page::new("New user group");
        for f in group_fields(None, &[], choices) {
            page = page.field(f);
        }
        page = page.field(Field::text("customer_id").length(1, 255).default(json!("default")));
        run.page(page.last())?;
        Ok(())
    })
}

pub fn create() -> Workflow<Deps> {
    Workflow::new("create_user_group", 1, Target::Create, "Create user group")
        .form(create_form)
        .on_abort(crate::user::remove_unfinished)
        .then("create_subscription", create_subscription)
        .then("store_process_subscription", crate::user::store_process_subscription)
        .then("initialize_subscription", initialize_subscription)
        .then("provision_user_group", provision_user_group)
        .then("set_status", crate::user::set_status_active)
        .then("resync", crate::user::resync)
        .done()
}

step!(create_subscription, |ctx| {
    let customer_id = ctx.str("customer_id").unwrap_or("default").to_owned();
    model::create(
        ctx,
        customer_id,
        Block::UserGroup(UserGroupBlock {
            subscription_instance_id: Uuid::new_v4(),
            group_name: None,
            group_id: None,
            offerings: vec![],
        }),
    )
    .await
});

step!(initialize_subscription, |ctx| {
    let mut s = model::load_own(ctx).await?;
    let name = ctx.str("group_name")?.to_owned();
    if let Block::UserGroup(b) = &mut s.block {
        b.group_name = Some(name.clone());
        b.offerings = offerings_of(&ctx.state);
    }
    s.description = format!("User Group {name}");
    let s = model::set_status(ctx, s, SubscriptionStatus::Provisioning).await?;
    Ok(StepOutcome::merge([("subscription", model::summary(&s))]))
});

step!(provision_user_group, |ctx| {
    let mut s = model::load_own(ctx).await?;
    let id = ctx.tx().await?.allocate("group_id").await?;
    if let Block::UserGroup(b) = &mut s.block {
        b.group_id = Some(id);
    }
    let s = model::save(ctx, s).await?;
    Ok(StepOutcome::merge([
        ("group_id", json!(id)),
        ("subscription", model::summary(&s)),
    ]))
});

fn group_of(s: &Subscription) -> Option<&UserGroupBlock> {
    match &s.block {
        Block::UserGroup(b) => Some(b),
        Block::User(_) => None,
    }
}

fn modify_form<'a>(deps: &'a Deps, _: &'a State, run: &'a mut FormRun) -> FormFuture<'a> {
    Box::pin(async move {
        let sub = subscription_page(deps, TYPE, run).await?;
        let Some(g) = group_of(&sub) else {
            return Err(field_error("Subscription", "subscription_id", "not a user group"));
        };
        let choices = offering_choices(deps).await?;
        let mut page = Page::new("Modify user group");
        for f in group_fields(g.group_name.as_deref(), &g.offerings, choices) {
            page = page.field(f);
        }
        page = page.field(Field::read_only("group_id", json!(g.group_id)));
        run.page(page.last())?;
        Ok(())
    })
}

/// Version 1, kept for processes that started with it: the offerings change, the members'
/// accounts do not.
pub fn modify_v1() -> Workflow<Deps> {
    Workflow::new("modify_user_group", 1, Target::Modify, "Modify user group")
        .form(modify_form)
        .then("store_process_subscription", crate::user::store_process_subscription)
        .then("unsync", crate::user::unsync)
        .then("modify_user_group_subscription", modify_subscription)
        .then("resync", crate::user::resync)
        .done()
}

/// Version 2: every active member's accounts follow the group's offerings, committed with the
/// `sync_group_accounts` step.
pub fn modify() -> Workflow<Deps> {
    Workflow::new("modify_user_group", 2, Target::Modify, "Modify user group")
        .form(modify_form)
        .then("store_process_subscription", crate::user::store_process_subscription)
        .then("unsync", crate::user::unsync)
        .then("modify_user_group_subscription", modify_subscription)
        .step(Step::retry(
            "sync_group_accounts",
            crate::membership::sync_group_accounts,
        ))
        .then("resync", crate::user::resync)
        .done()
}

step!(modify_subscription, |ctx| {
    let mut s = model::load_own(ctx).await?;
    model::ensure_held(ctx, &s)?;
    let name = ctx.str("group_name")?.to_owned();
    let offerings = offerings_of(&ctx.state);
    if let Block::UserGroup(b) = &mut s.block {
        b.group_name = Some(name.clone());
        b.offerings = offerings;
    }
    s.description = format!("User Group {name}");
    let s = model::save(ctx, s).await?;
    Ok(StepOutcome::merge([("subscription", model::summary(&s))]))
});

fn terminate_form<'a>(deps: &'a Deps, _: &'a State, run: &'a mut FormRun) -> FormFuture<'a> {
    Box::pin(async move {
        let sub = subscription_page(deps, TYPE, run).await?;
        run.page(summary_page(
            "Terminate user group",
            json!({ "question": format!("Are you sure you want to terminate {}?", sub.description) }),
        ))?;
        Ok(())
    })
}

pub fn terminate() -> Workflow<Deps> {
    Workflow::new("terminate_user_group", 1, Target::Terminate, "Terminate user group")
        .form(terminate_form)
        .then("store_process_subscription", crate::user::store_process_subscription)
        .then("unsync", crate::user::unsync)
        .then("set_status", crate::user::set_status_terminated)
        .then("resync", crate::user::resync)
        .done()
}

fn validate_form<'a>(deps: &'a Deps, _: &'a State, run: &'a mut FormRun) -> FormFuture<'a> {
    Box::pin(async move {
        subscription_page(deps, TYPE, run).await?;
        Ok(())
    })
}

/// Version 1, kept for processes that started with it.
pub fn validate_v1() -> Workflow<Deps> {
    Workflow::new("validate_user_group", 1, Target::Validate, "Validate user group")
        .form(validate_form)
        .then("store_process_subscription", crate::user::store_process_subscription)
        .then("unsync_unchecked", crate::user::unsync)
        .then("validate_user_group_subscription", validate_subscription)
        .then("resync", crate::user::resync)
        .done()
}

/// Version 2 also checks that every active member's accounts match the group's offerings.
pub fn validate() -> Workflow<Deps> {
    Workflow::new("validate_user_group", 2, Target::Validate, "Validate user group")
        .form(validate_form)
        .then("store_process_subscription", crate::user::store_process_subscription)
        .then("unsync_unchecked", crate::user::unsync)
        .then("validate_user_group_subscription", validate_subscription)
        .then("validate_group_accounts", crate::membership::validate_group_accounts)
        .then("resync", crate::user::resync)
        .done()
}

step!(validate_subscription, |ctx| {
    let s = model::load_own(ctx).await?;
    let missing = s.block.missing_for(s.status);
    if !missing.is_empty() {
        return Err(StepError::new(format!(
            "the user group is {} but lacks {}",
            s.status.as_str(),
            missing.join(", ")
        )));
    }
    let Some(g) = group_of(&s) else {
        return Err(StepError::new("the subscription's block is not a UserGroupBlock"));
    };
    if s.description != format!("User Group {}", g.group_name.as_deref().unwrap_or_default()) {
        return Err(StepError::new(format!(
            "the description {:?} does not name the group {:?}",
            s.description,
            g.group_name.as_deref().unwrap_or_default()
        )));
    }
    Ok(StepOutcome::merge([("validated", json!(true))]))
});
