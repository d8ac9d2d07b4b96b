//! What every list shares: the pager and total, sortable column headers, and the CSV export of
//! the current filter (every page, streamed: one page of rows in memory at a time).

use crate::urls::Params;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use std::future::Future;

/// Rows fetched per round trip while exporting.
pub const EXPORT_PAGE: i64 = 500;

/// Paging links and the total of a list view.
pub struct Pager {
    pub page: i64,
    pub pages: i64,
    pub total: i64,
    pub first_row: i64,
    pub last_row: i64,
    pub prev: Option<String>,
    pub next: Option<String>,
    /// The CSV export of the same filter.
    pub csv: String,
    /// Links to other page sizes.
    pub sizes: Vec<(i64, String, bool)>,
}

impl Pager {
    /// `path` is the list's path; `csv_path` its export; `shown` the rows on this page.
    pub fn new(params: &Params, path: &str, csv_path: &str, total: i64, shown: usize) -> Self {
        let size = params.page_size();
        let page = params.page();
        let pages = ((total + size - 1) / size).max(1);
        let first_row = if shown == 0 { 0 } else { (page - 1) * size + 1 };
        let link = |p: i64| format!("{path}{}", params.with("page", Some(&p.to_string())));
        Self {
            page,
            pages,
            total,
            first_row,
            last_row: first_row + shown as i64 - if shown == 0 { 0 } else { 1 },
            prev: (page > 1).then(|| link(page - 1)),
            next: (page < pages).then(|| link(page + 1)),
            csv: format!("{csv_path}{}", params.with("page", None)),
            sizes: [10, 25, 50, 100]
                .into_iter()
                .map(|n| {
                    (
                        n,
                        format!("{path}{}", params.with("size", Some(&n.to_string()))),
                        n == size,
                    )
                })
                .collect(),
        }
    }

    /// Offset of the first row of this page.
    pub fn offset(params: &Params) -> i64 {
        (params.page() - 1).saturating_mul(params.page_size())
    }
}

/// A column header that sorts the list by its column (again: the other way).
pub struct SortLink {
    pub label: &'static str,
    pub href: String,
    /// `ascending`, `descending` or `none`, for `aria-sort`.
    pub aria: &'static str,
}

impl SortLink {
    pub fn new(params: &Params, path: &str, column: &'static str, label: &'static str) -> Self {
        let (href_value, aria) = match params.sort() {
            Some((c, false)) if c == column => (format!("-{column}"), "ascending"),
            Some((c, true)) if c == column => (column.to_owned(), "descending"),
            _ => (column.to_owned(), "none"),
        };
        Self {
            label,
            href: format!("{path}{}", params.with("sort", Some(&href_value))),
            aria,
        }
    }
}

/// One CSV cell. A cell that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab,
/// carriage return) is prefixed with `'` (OWASP's advice against CSV injection).
pub fn cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

pub fn line(cells: &[String]) -> String {
    let mut out = cells.iter().map(|c| cell(c)).collect::<Vec<_>>().join(",");
    out.push_str("\r\n");
    out
}

/// A streamed CSV answer: `header`, then the rows `fetch(offset)` returns, page after page,
/// until a page comes back short. For lists paged by offset (bounded ones); a list that can
/// hold every user or account pages by key with [`csv_by_key`].
pub async fn csv<F, Fut>(filename: &str, header: &[&str], fetch: F) -> Result<Response, muster_core::DomainError>
where
    F: Fn(i64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<Vec<String>>, muster_core::DomainError>> + Send + 'static,
{
    csv_by_key(filename, header, move |at: Option<i64>| {
        let offset = at.unwrap_or(0);
        let page = fetch(offset);
        async move {
            let rows = page.await?;
            let next = (rows.len() as i64 >= EXPORT_PAGE).then_some(offset + rows.len() as i64);
            Ok((rows, next))
        }
    })
    .await
}

/// One batch of an export: its rows, and where the next batch starts (None after the last).
pub type Batch<K> = (Vec<Vec<String>>, Option<K>);

/// A streamed CSV answer: `header`, then the batches `fetch(key)` returns, starting with
/// `fetch(None)`, until one says there is no next. One batch is in memory at a time. The first
/// batch is read before answering, so a refusal (no permission, a bad filter) is an ordinary
/// error page; an error later ends the download early (the browser shows it as failed: the
/// status line was already sent) and is logged.
pub async fn csv_by_key<K, F, Fut>(
    filename: &str,
    header: &[&str],
    fetch: F,
) -> Result<Response, muster_core::DomainError>
where
    K: Send + 'static,
    F: Fn(Option<K>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Batch<K>, muster_core::DomainError>> + Send + 'static,
{
    let (first, next) = fetch(None).await?;
    let mut head = line(&header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>());
    for r in &first {
        head.push_str(&line(r));
    }
    let body = Body::from_stream(rows(head, next, fetch));
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

fn rows<K, F, Fut>(head: String, next: Option<K>, fetch: F) -> impl Stream<Item = Result<Bytes, std::io::Error>>
where
    K: Send + 'static,
    F: Fn(Option<K>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Batch<K>, muster_core::DomainError>> + Send + 'static,
{
    // State: where the next batch starts (None: done), the header still to send.
    futures_util::stream::unfold((next, Some(head), fetch), |(key, head, fetch)| async move {
        if let Some(h) = head {
            return Some((Ok(Bytes::from(h)), (key, None, fetch)));
        }
        let key = key?;
        match fetch(Some(key)).await {
            Ok((batch, next)) => {
                if batch.is_empty() {
                    return None;
                }
                let mut chunk = String::new();
                for r in &batch {
                    chunk.push_str(&line(r));
                }
                Some((Ok(Bytes::from(chunk)), (next, None, fetch)))
            }
            Err(e) => {
                tracing::warn!(code = e.code, "CSV export stopped");
                Some((Err(std::io::Error::other("export failed")), (None, None, fetch)))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(cell("-1,2"), "\"'-1,2\"");
        assert_eq!(line(&["a".into(), "b\nc".into()]), "a,\"b\nc\"\r\n");
    }

    #[test]
    fn pager_keeps_the_filter() {
        let p = Params::parse(Some("state=OK&page=2&size=10"));
        let pager = Pager::new(&p, "/accounts", "/accounts.csv", 35, 10);
        assert_eq!(pager.pages, 4);
        assert_eq!((pager.first_row, pager.last_row), (11, 20));
        assert_eq!(pager.prev.as_deref(), Some("/accounts?state=OK&size=10&page=1"));
        assert_eq!(pager.next.as_deref(), Some("/accounts?state=OK&size=10&page=3"));
        assert_eq!(pager.csv, "/accounts.csv?state=OK&size=10");
    }
}
