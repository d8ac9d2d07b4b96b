//! Static assets, compiled into the binary and served under content-hashed names.
//!
//! A file's URL carries the first 64 bits of its SHA-256 (`/static/console.3f2a….css`), so
//! browsers may keep it for a year (`immutable`): a new build with a changed file has a new
//! URL. Nothing is fetched from any other host.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// One embedded file.
pub struct Asset {
    /// The name templates ask for, e.g. `console.css`.
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// Every file the console ships. htmx and its SSE extension are vendored unchanged from their
/// npm packages (`htmx.org` 2.0.11, `htmx-ext-sse` 2.2.4; licences beside them in `static/vendor`).
pub static ASSETS: &[Asset] = &[
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../static/console.css"),
    },
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../static/console.js"),
    },
    Asset {
        name: "htmx.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../static/vendor/htmx-2.0.11.min.js"),
    },
    Asset {
        name: "htmx-sse.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../static/vendor/htmx-ext-sse-2.2.4.min.js"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../static/favicon.svg"),
    },
];

/// `(name, hashed file name)` of every asset, computed once.
static HASHED: LazyLock<Vec<(&'static str, String)>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let digest = Sha256::digest(a.body);
            let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
            let hashed = match a.name.rsplit_once('.') {
                Some((stem, ext)) => format!("{stem}.{hex}.{ext}"),
                None => format!("{}.{hex}", a.name),
            };
            (a.name, hashed)
        })
        .collect()
});

/// The URL of asset `name` (`/static/<name with its hash>`).
pub fn url(name: &str) -> String {
    HASHED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, h)| format!("/static/{h}"))
        .unwrap_or_else(|| format!("/static/{name}"))
}

/// `GET /static/{file}`: only hashed names are served, each cached for a year.
pub async fn serve(Path(file): Path<String>) -> Response {
    let Some(i) = HASHED.iter().position(|(_, h)| *h == file) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let asset = &ASSETS[i];
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn urls_carry_the_content_hash() {
        let u = url("console.css");
        assert!(
            u.starts_with("/static/console.") && u.ends_with(".css") && u.len() > 30,
            "{u}"
        );
        assert_ne!(url("console.css"), url("console.js"));
    }

    /// The console's budget: all JavaScript and CSS together at most 100 KB gzipped.
    #[test]
    fn scripts_and_styles_fit_in_100_kb_gzipped() {
        let mut total = 0;
        for a in ASSETS
            .iter()
            .filter(|a| a.name.ends_with(".js") || a.name.ends_with(".css"))
        {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            enc.write_all(a.body).expect("gzip");
            total += enc.finish().expect("gzip").len();
        }
        assert!(total <= 100 * 1024, "{total} bytes gzipped");
    }
}
