//! Query strings: lists keep their filters, sort and page in the URL, so a view can be
//! bookmarked, shared and returned to with the back button.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Characters left as they are in a query value.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, QUERY).to_string()
}

/// A list view's parameters, in order, as they appear in its URL.
#[derive(Debug, Clone, Default)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn parse(query: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first non-empty value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == key && !v.trim().is_empty())
            .map(|(_, v)| v.trim())
    }

    /// The first value of `key` exactly as sent (passwords are not trimmed).
    pub fn raw(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every non-empty value of `key` (repeated keys: several states at once).
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, v)| k == key && !v.trim().is_empty())
            .map(|(_, v)| v.trim())
            .collect()
    }

    pub fn has(&self, key: &str, value: &str) -> bool {
        self.all(key).contains(&value)
    }

    /// The query string with `key` set to `value` (all its other values dropped); `None`
    /// removes it. Changing a filter or the sort goes back to page 1.
    pub fn with(&self, key: &str, value: Option<&str>) -> String {
        let mut out: Vec<(String, String)> = self
            .0
            .iter()
            .filter(|(k, v)| k != key && !v.trim().is_empty() && (key == "page" || k != "page"))
            .cloned()
            .collect();
        if let Some(v) = value {
            out.push((key.to_owned(), v.to_owned()));
        }
        Self(out).query()
    }

    /// `?a=1&b=2`, or empty.
    pub fn query(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }

    /// 1-based page number.
    pub fn page(&self) -> i64 {
        self.get("page")
            .and_then(|p| p.parse().ok())
            .filter(|p| *p >= 1)
            .unwrap_or(1)
    }

    /// Rows per page: 25 unless the URL says 10, 50 or 100.
    pub fn page_size(&self) -> i64 {
        self.get("size")
            .and_then(|p| p.parse().ok())
            .filter(|n| [10, 25, 50, 100].contains(n))
            .unwrap_or(25)
    }

    /// `(column, descending)` from `sort=column` or `sort=-column`.
    pub fn sort(&self) -> Option<(&str, bool)> {
        self.get("sort").map(|s| match s.strip_prefix('-') {
            Some(c) => (c, true),
            None => (s, false),
        })
    }
}

/// A submitted form as ordered pairs (repeated names allowed: the rows of a bulk action, the
/// entries of a choice list).
pub struct FormData(pub Params);

impl<S: Send + Sync> axum::extract::FromRequest<S> for FormData {
    type Rejection = axum::response::Response;

    async fn from_request(req: axum::extract::Request, _state: &S) -> Result<Self, Self::Rejection> {
        use axum::response::IntoResponse;
        let bytes = axum::body::to_bytes(req.into_body(), crate::MAX_FORM_BYTES)
            .await
            .map_err(|_| (axum::http::StatusCode::PAYLOAD_TOO_LARGE, "the form is too large").into_response())?;
        Ok(FormData(Params(
            form_urlencoded::parse(&bytes)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )))
    }
}

/// The query string of a request as [`Params`].
pub struct Query(pub Params);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Query {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Query(Params::parse(parts.uri.query())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_filters_and_resets_the_page() {
        let p = Params::parse(Some("state=OK&state=Requested&page=3&q=a%20b"));
        assert_eq!(p.all("state"), vec!["OK", "Requested"]);
        assert_eq!(p.page(), 3);
        assert_eq!(
            p.with("sort", Some("-created")),
            "?state=OK&state=Requested&q=a%20b&sort=-created"
        );
        assert_eq!(p.with("page", Some("4")), "?state=OK&state=Requested&q=a%20b&page=4");
        assert_eq!(Params::parse(None).query(), "");
    }
}
