//! Paged lists. A list answers with one page as its JSON array (the shape
//! an unpaged list had) and, when more follow, the cursor of the next page in
//! `X-Next-Cursor` and as a `Link: <...>; rel="next"` URL. A client passes
//! the cursor back as `?cursor=`; a page shorter than `limit` is the last.

use axum::Json;
use axum::http::Uri;
use axum::http::header::{HeaderName, HeaderValue, LINK};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use crate::error::{ApiError, ApiResult};

/// The response header carrying the next page's cursor.
pub const NEXT_CURSOR: &str = "x-next-cursor";
/// Default page size of paged lists.
pub const DEFAULT_PAGE: u32 = 1000;
/// Largest page a client may ask for.
pub const MAX_PAGE: u32 = 10_000;

/// `limit` and `cursor` of a paged list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// At most this many items (1 to 10,000; default 1,000).
    pub limit: Option<u32>,
    /// Where to continue: the `X-Next-Cursor` header of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The page size, checked.
    pub fn limit(&self) -> ApiResult<u32> {
        page_size(self.limit, DEFAULT_PAGE, MAX_PAGE)
    }
}

/// `limit` within 1..=max (default when absent); the error names the parameter.
pub(crate) fn page_size(limit: Option<u32>, default: u32, max: u32) -> ApiResult<u32> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::BadRequest(format!(
            "limit: {n} is out of range, use 1 to {max}"
        ))),
    }
}

/// One page and the cursor of the next one (`None`: this is the last).
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
    /// The request's URI, from which the `Link` header's URL is made.
    pub uri: Uri,
}

impl<T> Page<T> {
    /// A page of `items` asked for with `limit`: a full page has a next one
    /// (possibly empty), starting after the cursor `cursor_of` its last item.
    pub fn new(items: Vec<T>, limit: u32, uri: Uri, cursor_of: impl Fn(&T) -> String) -> Page<T> {
        let next = if items.len() >= limit as usize {
            items.last().map(cursor_of)
        } else {
            None
        };
        Page { items, next, uri }
    }
}

impl<T: Serialize> IntoResponse for Page<T> {
    fn into_response(self) -> Response {
        let mut response = Json(self.items).into_response();
        if let Some(cursor) = self.next {
            let headers = response.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&cursor) {
                headers.insert(HeaderName::from_static(NEXT_CURSOR), v);
            }
            if let Ok(v) =
                HeaderValue::from_str(&format!("<{}>; rel=\"next\"", next_url(&self.uri, &cursor)))
            {
                headers.insert(LINK, v);
            }
        }
        response
    }
}

/// The request's path and query with `cursor` set to `cursor` (and any
/// `after` dropped: the cursor replaces it).
pub fn next_url(uri: &Uri, cursor: &str) -> String {
    let mut params: Vec<String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let key = p.split('=').next().unwrap_or("");
            key != "cursor" && key != "after"
        })
        .map(str::to_string)
        .collect();
    params.push(format!("cursor={}", encode(cursor)));
    format!("{}?{}", uri.path(), params.join("&"))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_urls_keep_filters_and_replace_the_cursor() {
        for (uri, cursor, want) in [
            (
                "/api/v1/machines",
                "node-7",
                "/api/v1/machines?cursor=node-7",
            ),
            (
                "/api/v1/machines?limit=2&cursor=a",
                "b",
                "/api/v1/machines?limit=2&cursor=b",
            ),
            (
                "/api/v1/events?mac=52:54:00:00:00:01&after=9&limit=5",
                "42",
                "/api/v1/events?mac=52:54:00:00:00:01&limit=5&cursor=42",
            ),
            (
                "/api/v1/workflows?state=running",
                "1790000000123.0a0b",
                "/api/v1/workflows?state=running&cursor=1790000000123.0a0b",
            ),
            ("/x", "a b/c", "/x?cursor=a%20b%2Fc"),
        ] {
            let uri: Uri = uri.parse().unwrap();
            assert_eq!(next_url(&uri, cursor), want, "{uri}");
        }
    }

    #[test]
    fn only_a_full_page_has_a_next_one() {
        let uri: Uri = "/l".parse().unwrap();
        let full = Page::new(vec![1, 2, 3], 3, uri.clone(), |n| n.to_string());
        assert_eq!(full.next.as_deref(), Some("3"));
        let short = Page::new(vec![1, 2], 3, uri.clone(), |n| n.to_string());
        assert_eq!(short.next, None);
        let empty = Page::new(Vec::<u32>::new(), 3, uri, |n| n.to_string());
        assert_eq!(empty.next, None);
    }

    #[test]
    fn sizes_are_checked() {
        assert_eq!(page_size(None, 1000, 10_000).unwrap(), 1000);
        assert_eq!(page_size(Some(1), 1000, 10_000).unwrap(), 1);
        for bad in [0, 10_001] {
            let err = page_size(Some(bad), 1000, 10_000).unwrap_err().to_string();
            assert!(err.starts_with("limit: "), "{err}");
        }
    }
}
