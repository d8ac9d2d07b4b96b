//! What callers send about offering accounts, and how each field is checked before anything is
//! read: a bad body changes nothing.

use muster_core::error::{DomainError, codes};
use muster_core::offering::lifecycle::{AccountState, Action, CommentEffect, RuntimeState};
use muster_store::AccountOrder;
use serde::{Deserialize, Deserializer};
use time::OffsetDateTime;
use uuid::Uuid;

/// Django's URLField default.
pub const MAX_COMMENT_URL: usize = 200;
pub const MAX_COMMENT: usize = 10_000;

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn explicit<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `POST /api/marketplace-offering-users/`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccountInput {
    pub offering_uuid: String,
    /// The directory user's `uuid`.
    pub user_uuid: String,
    /// Creating with a username creates the account directly in `OK` (the site already made it).
    /// A portable login name: `[a-z_][a-z0-9_.-]*`, at most 32 characters.
    #[serde(default)]
    #[schema(pattern = "^[a-z_][a-z0-9_.-]{0,31}$")]
    pub username: Option<String>,
}

/// The body of `set_pending_account_linking` / `set_pending_additional_validation` (optional
/// for the other actions, which ignore nothing: they refuse a body with fields).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionInput {
    /// Instructions for the person. Omitted: unchanged; `""`: cleared. HTML is sanitised.
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<String>)]
    pub comment: Option<Option<String>>,
    /// A link for the person (form, documentation). Omitted: unchanged; `""`: cleared; `null`: 400.
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<String>)]
    pub comment_url: Option<Option<String>>,
}

/// `PATCH …/update_comments/`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentsInput {
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<String>)]
    pub service_provider_comment: Option<Option<String>>,
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<String>)]
    pub service_provider_comment_url: Option<Option<String>>,
}

/// `POST …/update_runtime_state/`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeStateInput {
    pub runtime_state: RuntimeState,
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<String>)]
    pub service_provider_comment: Option<Option<String>>,
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<String>)]
    pub service_provider_comment_url: Option<Option<String>>,
}

/// `PUT` / `PATCH /api/marketplace-offering-users/{uuid}/`: the local username.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsernameInput {
    /// A new non-empty username on an account being created moves it to `OK`; the same
    /// username again changes nothing; `null` or `""` clears it. A portable login name:
    /// `[a-z_][a-z0-9_.-]*`, at most 32 characters (else 400 `E001001`).
    #[serde(default, deserialize_with = "explicit")]
    #[schema(value_type = Option<String>)]
    pub username: Option<Option<String>>,
}

/// List filters, already parsed from the query string.
#[derive(Debug, Clone, Default)]
pub struct AccountFilter {
    pub states: Vec<AccountState>,
    pub offering_uuids: Vec<Uuid>,
    pub provider_uuids: Vec<Uuid>,
    pub user_uuid: Option<Uuid>,
    pub user_username: Option<String>,
    pub is_restricted: Option<bool>,
    pub runtime_states: Vec<RuntimeState>,
    pub query: Option<String>,
    pub created_from: Option<OffsetDateTime>,
    pub created_before: Option<OffsetDateTime>,
    pub modified_from: Option<OffsetDateTime>,
    pub modified_before: Option<OffsetDateTime>,
    pub order: Vec<(AccountOrder, bool)>,
    /// 1-based.
    pub page: i64,
    pub page_size: i64,
}

pub(crate) fn null_error(field: &str) -> DomainError {
    DomainError::invalid_field(field, codes::INVALID_INPUT, "This field may not be null.")
}

/// Sanitises a comment: HTML is reduced to ammonia's allow-list (so `<p>` stays and `<script>`
/// or `onerror` go), since sites write comments that the console shows to people.
pub(crate) fn clean_comment(field: &str, value: Option<String>) -> Result<String, DomainError> {
    let value = value.ok_or_else(|| null_error(field))?;
    if value.chars().count() > MAX_COMMENT {
        return Err(DomainError::invalid_field(
            field,
            codes::INVALID_INPUT,
            format!("at most {MAX_COMMENT} characters"),
        ));
    }
    Ok(SANITISER.clean(&value).to_string())
}

/// ammonia's default allow-list, built once (building it is most of the cost of a clean).
static SANITISER: std::sync::LazyLock<ammonia::Builder<'static>> = std::sync::LazyLock::new(ammonia::Builder::default);

/// A comment URL must be empty or an http(s) URL without spaces (Django's URLField, roughly).
pub(crate) fn clean_url(field: &str, value: Option<String>) -> Result<String, DomainError> {
    let value = value.ok_or_else(|| null_error(field))?;
    let value = value.trim().to_owned();
    if value.is_empty() {
        return Ok(value);
    }
    let rest = value.strip_prefix("https://").or_else(|| value.strip_prefix("http://"));
    let ok = value.len() <= MAX_COMMENT_URL
        && rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '<' || c == '>');
    if ok {
        Ok(value)
    } else {
        Err(DomainError::invalid_field(
            field,
            codes::INVALID_INPUT,
            "Enter a valid URL.",
        ))
    }
}

/// A transition's `comment` or `comment_url`: cleaned when the action sets it (the table's
/// `SetIfGiven`), refused when it does not; `null` is refused either way; absent is unchanged.
pub(crate) fn transition_text(
    action: Action,
    effect: CommentEffect,
    field: &str,
    given: Option<Option<String>>,
    clean: fn(&str, Option<String>) -> Result<String, DomainError>,
) -> Result<Option<String>, DomainError> {
    match (effect, given) {
        (CommentEffect::SetIfGiven, Some(v)) => clean(field, v).map(Some),
        (_, Some(Some(_))) => Err(DomainError::invalid_field(
            field,
            codes::INVALID_INPUT,
            format!("{action} takes no {field}"),
        )),
        (_, Some(None)) => Err(null_error(field)),
        (_, None) => Ok(None),
    }
}

/// `service_provider_comment` and `service_provider_comment_url` as given to the calls that
/// change them beside something else: each cleaned if present.
pub(crate) fn clean_comments(
    comment: Option<Option<String>>,
    url: Option<Option<String>>,
) -> Result<(Option<String>, Option<String>), DomainError> {
    Ok((
        comment
            .map(|c| clean_comment("service_provider_comment", c))
            .transpose()?,
        url.map(|c| clean_url("service_provider_comment_url", c)).transpose()?,
    ))
}

/// A local username: empty (none yet) or a portable login name (see
/// `muster_core::offering::username`).
pub(crate) fn clean_username(value: Option<String>) -> Result<String, DomainError> {
    let value = value.unwrap_or_default();
    muster_core::offering::username::check(&value)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_are_sanitised() {
        let c = clean_comment(
            "comment",
            Some("<p>hi</p><script>alert(1)</script><img src=x onerror=alert(1)>".into()),
        );
        let c = c.unwrap_or_default();
        assert!(c.contains("<p>hi</p>"), "{c}");
        assert!(!c.contains("script") && !c.contains("onerror"), "{c}");
        assert!(clean_comment("comment", None).is_err());
    }

    #[test]
    fn urls() {
        assert_eq!(clean_url("u", Some(String::new())).ok().as_deref(), Some(""));
        assert!(clean_url("u", Some("https://portal.lumi.csc.fi/verify".into())).is_ok());
        for bad in ["javascript:alert(1)", "https://", "http:///x", "https://a b", "ftp://x"] {
            assert!(clean_url("u", Some(bad.into())).is_err(), "{bad}");
        }
        assert!(clean_url("u", None).is_err());
    }

    #[test]
    fn usernames() {
        assert_eq!(clean_username(None).ok().as_deref(), Some(""));
        assert!(clean_username(Some("jsmith".into())).is_ok());
        assert!(clean_username(Some("j smith".into())).is_err());
        assert!(clean_username(Some("x".repeat(33))).is_err());
        assert!(clean_username(Some("<script>".into())).is_err());
        assert!(clean_username(Some("../../etc".into())).is_err());
    }
}
