//! The console page (`/`) and the support page (`/support`), built into the binary: no CDN, no
//! network at run time, a strict CSP. Both pages share `common.js` and `app.css`.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::{Arc, LazyLock};

use crate::app::App;

const INDEX_TEMPLATE: &str = include_str!("../../web/index.html");
const SUPPORT_TEMPLATE: &str = include_str!("../../web/support.html");
const DIALOGS: &str = include_str!("../../web/dialogs.html");
const DIALOGS_MARK: &str =
    "  <!-- SHARED-DIALOGS: the step-up and enrollment dialogs of web/dialogs.html go here. -->";

/// A page with the dialogs both pages share put in its place, once per process.
fn with_dialogs(template: &str) -> String {
    assert!(
        template.contains(DIALOGS_MARK),
        "a page without its SHARED-DIALOGS mark"
    );
    template.replace(DIALOGS_MARK, DIALOGS)
}

static INDEX: LazyLock<String> = LazyLock::new(|| with_dialogs(INDEX_TEMPLATE));
static SUPPORT: LazyLock<String> = LazyLock::new(|| with_dialogs(SUPPORT_TEMPLATE));
const COMMON_JS: &str = include_str!("../../web/common.js");
const APP_JS: &str = include_str!("../../web/app.js");
const SUPPORT_JS: &str = include_str!("../../web/support.js");
const APP_CSS: &str = include_str!("../../web/app.css");

/// Nothing but our own script and style; no inline code, no framing.
pub const CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn html(page: &'static LazyLock<String>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        page.as_str(),
    )
        .into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

const JS: &str = "text/javascript; charset=utf-8";

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(|| async { html(&INDEX) }))
        .route("/support", get(|| async { html(&SUPPORT) }))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_pages_carry_the_shared_dialogs_once() {
        for page in [&*INDEX, &*SUPPORT] {
            assert!(!page.contains("SHARED-DIALOGS"));
            assert_eq!(page.matches(r#"id="challenge-dialog""#).count(), 1);
            assert_eq!(page.matches(r#"id="enroll-dialog""#).count(), 1);
        }
    }
}
