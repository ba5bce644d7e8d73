//! The console page (`/`) and the support page (`/support`), built into the binary: no CDN, no
//! network at run time, a strict CSP. Both pages share `common.js` and `app.css`.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

use crate::app::App;

const INDEX: &str = include_str!("../../web/index.html");
const SUPPORT: &str = include_str!("../../web/support.html");
const COMMON_JS: &str = include_str!("../../web/common.js");
const APP_JS: &str = include_str!("../../web/app.js");
const SUPPORT_JS: &str = include_str!("../../web/support.js");
const APP_CSS: &str = include_str!("../../web/app.css");

/// Nothing but our own script and style; no inline code, no framing.
pub const CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn html(page: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        page,
    )
        .into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

const JS: &str = "text/javascript; charset=utf-8";

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(|| async { html(INDEX) }))
        .route("/support", get(|| async { html(SUPPORT) }))
        .route("/assets/common.js", get(|| async { asset(JS, COMMON_JS) }))
        .route("/assets/app.js", get(|| async { asset(JS, APP_JS) }))
        .route(
            "/assets/support.js",
            get(|| async { asset(JS, SUPPORT_JS) }),
        )
        .route(
            "/assets/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
}
