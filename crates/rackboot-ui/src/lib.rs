//! The web dashboard: plain JavaScript modules, CSS and one HTML page,
//! embedded in the binary and served at `/` and `/ui/*` by `rackboot serve`.
//! No build step and no runtime besides the browser: the page talks to the
//! REST API (`/api/v1`) with the operator's bearer token and follows the event
//! stream with `fetch`, so the token never appears in a URL.
//!
//! Assets are answered with an `ETag` (a hash of their bytes) and
//! `Cache-Control: no-cache`: a browser revalidates each one and gets `304`
//! while the binary is unchanged, and a new binary's assets at once.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
    X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One embedded file.
pub struct Asset {
    /// Its path under `/ui/`.
    pub path: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            bytes: include_bytes!(concat!("../assets/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the dashboard is made of.
pub static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("live.js", JS),
    asset!("format.js", JS),
    asset!("timeline.js", JS),
    asset!("fleet.js", JS),
    asset!("machine.js", JS),
    asset!("catalog.js", JS),
    asset!("lists.js", JS),
];

/// Scripts, styles and connections from this origin only; nothing inline.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// FNV-1a, 64 bits: an ETag only has to change when the bytes do.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| format!("\"{:016x}\"", fnv1a(a.bytes)))
        .collect()
});

/// The embedded file at `path` (under `/ui/`).
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// `/` (the page) and `/ui/{path}` (its files). No fallback, so it merges
/// with the API's router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/ui/{*path}", get(file))
}

async fn index(headers: HeaderMap) -> Response {
    respond("index.html", &headers)
}

async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    respond(&path, &headers)
}

fn respond(path: &str, headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.path == path) else {
        return (
            StatusCode::NOT_FOUND,
            [(CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("no dashboard file {path:?}\n"),
        )
            .into_response();
    };
    let asset = &ASSETS[i];
    let etag = &ETAGS[i];
    let fresh = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(CONTENT_TYPE, asset.content_type)], asset.bytes).into_response()
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(ETAG, v);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if asset.path == "index.html" {
        h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(uri: &str, if_none_match: Option<&str>) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut req = Request::builder().uri(uri);
        if let Some(tag) = if_none_match {
            req = req.header(IF_NONE_MATCH, tag);
        }
        let res = router::<()>()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes().to_vec();
        (parts.status, parts.headers, bytes)
    }

    /// Paths a JavaScript module imports (`from "./x.js"`) or a page links
    /// (`src="/ui/x"`, `href="/ui/x"`), as paths under `/ui/`.
    fn references(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (open, prefix) in [
            ("from \"./", ""),
            ("import(\"./", ""),
            ("src=\"/ui/", ""),
            ("href=\"/ui/", ""),
        ] {
            let mut rest = text;
            while let Some(i) = rest.find(open) {
                rest = &rest[i + open.len()..];
                let end = rest.find('"').unwrap_or(rest.len());
                out.push(format!("{prefix}{}", &rest[..end]));
            }
        }
        out
    }

    #[tokio::test]
    async fn the_page_and_every_file_it_needs_are_served() {
        let (status, headers, body) = get("/", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(headers.contains_key(CONTENT_SECURITY_POLICY));
        let page = String::from_utf8(body).unwrap();
        assert!(page.contains("type=\"module\""), "{page}");
        // Everything the page and the modules reference is embedded: a typo
        // in an import would otherwise only show as a blank page.
        let mut missing = Vec::new();
        let mut seen = 0;
        for a in ASSETS {
            let text = std::str::from_utf8(a.bytes).unwrap();
            for r in references(text) {
                seen += 1;
                if asset(&r).is_none() {
                    missing.push(format!("{} -> {r}", a.path));
                }
            }
        }
        assert!(missing.is_empty(), "not embedded: {missing:?}");
        assert!(seen >= ASSETS.len() - 2, "only {seen} references found");
        for a in ASSETS {
            let (status, headers, body) = get(&format!("/ui/{}", a.path), None).await;
            assert_eq!(status, StatusCode::OK, "{}", a.path);
            assert_eq!(headers[CONTENT_TYPE], a.content_type, "{}", a.path);
            assert_eq!(body, a.bytes, "{}", a.path);
        }
    }

    #[tokio::test]
    async fn unchanged_files_answer_304_and_unknown_ones_404() {
        let (_, headers, _) = get("/ui/app.js", None).await;
        let tag = headers[ETAG].to_str().unwrap().to_string();
        assert_eq!(headers[CACHE_CONTROL], "no-cache");
        let (status, _, body) = get("/ui/app.js", Some(&tag)).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
        let (status, _, _) = get("/ui/app.js", Some("\"0000000000000000\"")).await;
        assert_eq!(status, StatusCode::OK);
        let (other, _, _) = get("/ui/style.css", None).await;
        assert_eq!(other, StatusCode::OK);
        let (status, _, body) = get("/ui/../Cargo.toml", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(String::from_utf8_lossy(&body).contains("no dashboard file"));
        let (status, _, _) = get("/ui/nothing.js", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn etags_differ_between_files() {
        let mut tags = ETAGS.clone();
        tags.sort();
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len());
    }
}
