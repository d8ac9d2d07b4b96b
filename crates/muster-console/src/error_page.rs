//! Error pages: a refusal from a service becomes a page that says what happened, with the
//! status the API would give.

use crate::layout::{Layout, render_status};
use askama::Template;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use muster_core::error::{DomainError, ErrorKind};

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    layout: Layout,
    heading: String,
    message: String,
}

/// A page with a heading and a sentence, for errors and refusals.
pub fn plain_page(status: StatusCode, heading: &str, message: &str) -> Response {
    render_status(
        status,
        &ErrorPage {
            layout: Layout::anonymous(heading),
            heading: heading.to_owned(),
            message: message.to_owned(),
        },
    )
}

/// A service's refusal on its way to the browser.
#[derive(Debug)]
pub struct PageError(pub DomainError);

impl From<DomainError> for PageError {
    fn from(e: DomainError) -> Self {
        Self(e)
    }
}

pub type PageResult<T = Response> = Result<T, PageError>;

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = muster_server::error::status_of(e.kind);
        let (heading, message) = match e.kind {
            ErrorKind::Internal => {
                tracing::error!(error = %e.message, "internal error in the console");
                (
                    "Something went wrong",
                    "muster could not do this; the error is in its log.".to_owned(),
                )
            }
            ErrorKind::NotFound => ("Not found", e.message),
            ErrorKind::Forbidden => ("Not allowed", e.message),
            ErrorKind::Unauthenticated => ("Please sign in again", e.message),
            _ => ("Could not do that", e.message),
        };
        plain_page(status, heading, &message)
    }
}
