//! The chat page, compiled into the binary (no build step): `GET /` and its script and style,
//! served with a content security policy that allows nothing from elsewhere.

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("page/index.html");
const CHAT_JS: &str = include_str!("page/chat.js");
const CHAT_CSS: &str = include_str!("page/chat.css");

/// Scripts, styles and requests from this origin only; no inline script, no framing.
const CSP: &str =
    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            (CONTENT_SECURITY_POLICY, CSP),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

pub async fn script() -> Response {
    asset(CHAT_JS, "text/javascript; charset=utf-8")
}

pub async fn style() -> Response {
    asset(CHAT_CSS, "text/css; charset=utf-8")
}
