//! `create_user`: the form (a new user's fields, checked against the directory's rules and
//! taken usernames), the hashing and sealing of a chosen password before the process exists,
//! and the steps that make the subscription, link the group, create the directory user and
//! allocate the numeric `user_id`.

use super::{
    TYPE, actor, first_group, group_name, group_offerings, has_group_offerings, link_group, remove_unfinished, resync,
    set_status_active, store_process_subscription, stored_username,
};
use crate::forms::{self, field_error, str_of};
use crate::{Deps, model, step};
use muster_core::directory::create::CreateUserInput;
use muster_core::error::DomainError;
use muster_core::workflow::form::{Field, FormRun, Page};
use muster_core::workflow::product::{Block, UserBlock};
use muster_core::workflow::{SubscriptionStatus, Target};
use muster_engine::{FormFuture, State, Step, StepError, StepOutcome, Workflow};
use serde_json::{Value, json};
use std::future::Future;
use std::pin::Pin;
use uuid::Uuid;

/// The sealed argon2id hash of a chosen password: carried from the form to the step that
/// creates the user, never shown (`__` keys are not public) and never in plain text.
const SEALED_HASH: &str = "__password_hash";

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
}
