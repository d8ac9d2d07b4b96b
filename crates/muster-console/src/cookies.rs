//! Reading the `Cookie` header and writing `Set-Cookie` values.

use axum::http::HeaderMap;
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// A one-time message carried over a redirect (post/redirect/get), shown on the next page.
pub const FLASH: &str = "muster_flash";

/// The request's cookies, by name (the first of a name wins).
pub struct Cookies(Vec<(String, String)>);

impl Cookies {
    pub fn of(headers: &HeaderMap) -> Self {
        let mut out = Vec::new();
        for v in headers.get_all(axum::http::header::COOKIE) {
            let Ok(v) = v.to_str() else { continue };
            for pair in v.split(';') {
                if let Some((k, val)) = pair.trim().split_once('=') {
                    out.push((k.trim().to_owned(), val.trim().trim_matches('"').to_owned()));
                }
            }
        }
        Self(out)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, and `Secure` when the console is
/// reached over https. `max_age` None makes a cookie that ends with the browser session.
pub fn set(name: &str, value: &str, path: &str, max_age: Option<i64>, secure: bool) -> String {
    let mut c = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// A `Set-Cookie` value that deletes cookie `name`.
pub fn clear(name: &str, path: &str, secure: bool) -> String {
    set(name, "", path, Some(0), secure)
}

/// A flash message as a cookie value.
pub fn encode_flash(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

pub fn decode_flash(value: &str) -> String {
    percent_decode_str(value)
        .decode_utf8_lossy()
        .chars()
        .take(500)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cookies_and_writes_safe_ones() {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            "a=1; muster_session=mst_x; b=".parse().expect("header"),
        );
        let c = Cookies::of(&h);
        assert_eq!(c.get("muster_session"), Some("mst_x"));
        assert_eq!(c.get("b"), None);
        let s = set("muster_session", "v", "/", None, true);
        assert!(
            s.contains("HttpOnly") && s.contains("SameSite=Strict") && s.ends_with("Secure"),
            "{s}"
        );
        assert!(!set("x", "v", "/", Some(5), false).contains("Secure"));
        assert_eq!(decode_flash(&encode_flash("Done; ok=1 ✓")), "Done; ok=1 ✓");
    }
}
