//! The dashboard: one static page, its script and its style, compiled into the binary (no build
//! step). They hold no data, so they are served without the token; the script asks for the token,
//! keeps it in the tab's `sessionStorage`, and sends it as a bearer token to `/api`.
//!
//! `choreo up` prints the dashboard's address with the token in the URL fragment (`#token=...`):
//! browsers never send a fragment to the server, so the token stays out of access logs and
//! `Referer` headers; the script moves it to `sessionStorage` and clears it from the address bar.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

/// Scripts only from this origin, no framing, no referrer: an injected script could read the token.
const CSP: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'";

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { page("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/dashboard.js",
            get(|| async { page("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/dashboard.css",
            get(|| async { page("text/css; charset=utf-8", STYLE) }),
        )
}

fn page(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
