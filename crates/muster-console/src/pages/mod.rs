//! One module per page (or group of pages) of the console.

pub mod accounts;
pub mod audit;
pub mod catalogue;
pub mod dashboard;
pub mod login;
pub mod mail;
pub mod me;
pub mod processes;
pub mod providers;
pub mod recovery;
pub mod start;
pub mod subscriptions;
pub mod users;

use crate::cookies;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};

pub use crate::error_page::{PageError, PageResult};

/// A redirect after a successful change (post/redirect/get), with a one-time message for the
/// next page. `secure`: whether the flash cookie gets `Secure`.
pub fn done(to: &str, message: &str, secure: bool) -> Response {
    let mut resp = Redirect::to(to).into_response();
    let c = cookies::set(cookies::FLASH, &cookies::encode_flash(message), "/", Some(60), secure);
    if let Ok(v) = HeaderValue::from_str(&c) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// Formats a time for people: `2025-01-31 14:05 UTC`.
pub fn when(t: &time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// An RFC 3339 string from the API's JSON, formatted like [`when`]; anything else as it is.
pub fn when_str(s: &str) -> String {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| when(&t))
        .unwrap_or_else(|_| s.to_owned())
}

/// The CSS class of a status badge: `s-` and the status in lower case, spaces as underscores,
/// with the offering states grouped (`Pending …` → `s-pending`, `Error …` → `s-error`).
pub fn badge_class(status: &str) -> String {
    let s = status.to_ascii_lowercase();
    if s.starts_with("pending") {
        return "s-pending".into();
    }
    if s.starts_with("error") {
        return "s-error".into();
    }
    if s == "requested deletion" {
        return "s-deleting".into();
    }
    format!("s-{}", s.replace(' ', "_"))
}
