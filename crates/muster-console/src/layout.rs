//! What every full page shows around its content: the navigation for the person's role, the
//! live badge, a one-time message, and the asset URLs.

use crate::assets;
use crate::auth::Viewer;
use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

/// One link of the navigation.
pub struct NavItem {
    pub href: &'static str,
    pub label: &'static str,
    pub key: &'static str,
}

pub struct Layout {
    pub title: String,
    /// The navigation entry this page belongs to.
    pub section: &'static str,
    pub user_name: String,
    pub csrf: String,
    pub nav: Vec<NavItem>,
    pub flash: Option<String>,
    /// The SSE endpoint this page follows, if it is live.
    pub live: Option<String>,
    pub css: String,
    pub js: String,
    pub htmx: String,
    pub sse: String,
    pub favicon: String,
}

impl Layout {
    pub fn new(viewer: &Viewer, title: impl Into<String>, section: &'static str) -> Self {
        let mut nav = Vec::new();
        let super_user = viewer.is_super_user();
        if super_user {
            nav.push(NavItem {
                href: "/",
                label: "Dashboard",
                key: "dashboard",
            });
            nav.push(NavItem {
                href: "/users",
                label: "Users",
                key: "users",
            });
            nav.push(NavItem {
                href: "/subscriptions",
                label: "Subscriptions",
                key: "subscriptions",
            });
            nav.push(NavItem {
                href: "/processes",
                label: "Processes",
                key: "processes",
            });
            nav.push(NavItem {
                href: "/start",
                label: "Start workflow",
                key: "start",
            });
        }
        if super_user || viewer.managed_providers > 0 {
            nav.push(NavItem {
                href: "/accounts",
                label: "Offering accounts",
                key: "accounts",
            });
            nav.push(NavItem {
                href: "/providers",
                label: "Providers",
                key: "providers",
            });
        }
        if super_user {
            nav.push(NavItem {
                href: "/audit",
                label: "Audit",
                key: "audit",
            });
        }
        nav.push(NavItem {
            href: "/catalogue",
            label: "Catalogue",
            key: "catalogue",
        });
        nav.push(NavItem {
            href: "/me",
            label: "Me",
            key: "me",
        });
        Self {
            title: title.into(),
            section,
            user_name: viewer.name(),
            csrf: viewer.csrf.clone(),
            nav,
            flash: viewer.flash.clone(),
            live: None,
            ..Self::anonymous("")
        }
    }

    /// A page for someone not signed in (the sign-in steps, errors).
    pub fn anonymous(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            section: "",
            user_name: String::new(),
            csrf: String::new(),
            nav: Vec::new(),
            flash: None,
            live: None,
            css: assets::url("console.css"),
            js: assets::url("console.js"),
            htmx: assets::url("htmx.js"),
            sse: assets::url("htmx-sse.js"),
            favicon: assets::url("favicon.svg"),
        }
    }

    /// Follows muster's event streams while the page is open, at `url` (see `live::url`).
    pub fn live(mut self, url: String) -> Self {
        self.live = Some(url);
        self
    }
}

/// Renders a template as an HTML answer with `status`.
pub fn render_status<T: Template>(status: StatusCode, t: &T) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a console template failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// Renders a page with 200. A form shown again with what went wrong is such a page too: the
/// messages are in it (next to their fields, announced as alerts), and a browser treats a
/// document answered 4xx as a failed load.
pub fn render<T: Template>(t: &T) -> Response {
    render_status(StatusCode::OK, t)
}
