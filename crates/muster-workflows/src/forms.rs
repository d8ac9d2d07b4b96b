//! Form pages the workflows share.

use crate::Deps;
use muster_core::workflow::SubscriptionStatus;
use muster_core::workflow::form::{Choice, Field, FormError, FormRun, FormStop, Page};
use muster_engine::FormFail;
use serde_json::{Map, Value};
use uuid::Uuid;

/// Page 1 of every create form: which product (`{"product": id}`).
pub fn product_page(deps: &Deps, product_type: &str, run: &mut FormRun) -> Result<Uuid, FormStop> {
    let choices = deps
        .catalogue
        .products_of_type(product_type)
        .map(|p| Choice::new(p.product_id.to_string(), p.name.clone()))
        .collect();
    let v = run.page(Page::new("Product").field(Field::product(choices)))?;
    v.get("product")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or(FormStop::Overflow)
}

/// The active subscriptions of `product_type` as choices (queried on every replay, so a
/// submitted choice is checked against what is active *now*).
pub async fn active_choices(deps: &Deps, product_type: &str) -> Result<Vec<Choice>, FormFail> {
    let subs = deps
        .directory
        .store()
        .subscriptions_of_type(product_type, SubscriptionStatus::Active)
        .await?;
    Ok(subs
        .into_iter()
        .map(|(id, description)| Choice::new(id.to_string(), description))
        .collect())
}

/// Page 1 of modify / terminate / validate forms: `{"subscription_id", "version"?}`; the
/// subscription must be of `product_type`. Returns it.
pub async fn subscription_page(
    deps: &Deps,
    product_type: &str,
    run: &mut FormRun,
) -> Result<muster_store::Subscription, FormFail> {
    let page = Page::new("Subscription")
        .field(Field::text("subscription_id").length(36, 36))
        .field(Field::integer("version").optional().range(Some(1), None));
    let v = run.page(page.clone())?;
    let invalid = |msg: &str| {
        FormFail::Stop(FormStop::Invalid {
            title: page.title.clone(),
            errors: vec![FormError::field("subscription_id", "value_error", msg)],
        })
    };
    let id: Uuid = v
        .get("subscription_id")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("Value error, not a subscription id"))?;
    let sub = deps
        .directory
        .store()
        .subscription(id)
        .await?
        .ok_or_else(|| invalid("Value error, no such subscription"))?;
    if sub.block.product_type().as_str() != product_type {
        return Err(invalid(&format!("Value error, not a {product_type} subscription")));
    }
    Ok(sub)
}

/// A validation error on one field, as a form stop.
pub fn field_error(title: &str, field: &str, msg: &str) -> FormFail {
    FormFail::Stop(FormStop::Invalid {
        title: title.to_owned(),
        errors: vec![FormError::field(field, "value_error", &format!("Value error, {msg}"))],
    })
}

/// A summary page: shows `data`, takes no input.
pub fn summary_page(title: &str, data: Value) -> Page {
    Page::new(title).field(Field::summary("summary", data)).last()
}

pub fn str_of<'a>(v: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}
