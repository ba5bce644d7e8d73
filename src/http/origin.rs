//! Cross-site requests refused (CONTRACT.md section 3): a state-changing console or support
//! request whose `Origin` is present and is not `ASSENT_PUBLIC_URL`'s origin, or that the browser
//! marks `Sec-Fetch-Site: cross-site`, is 403 and reaches no handler. SameSite=Strict cookies
//! already keep most cross-site requests unauthenticated; this holds even where a browser or a
//! proxy does not honour them, and for the sign-in route, which takes no cookie.

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;

use super::error::problem;
use crate::app::App;

/// The routes whose writes ride on a browser cookie.
fn cookie_authenticated(path: &str) -> bool {
    path.starts_with("/v1/console/") || path.starts_with("/v1/support/")
}

/// Reads change nothing; everything else may.
fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Why a request is refused, for the log; `None` when it may go on.
fn cross_site(request: &Request, expected: &str) -> Option<&'static str> {
    let headers = request.headers();
    // Every `Origin` value must be ours: a second, foreign one is no less foreign.
    let foreign = headers.get_all(header::ORIGIN).iter().any(|origin| {
        !origin
            .to_str()
            .is_ok_and(|o| o.eq_ignore_ascii_case(expected))
    });
    if foreign {
        return Some("origin");
    }
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if fetch_site.is_some_and(|s| s.eq_ignore_ascii_case("cross-site")) {
        return Some("sec-fetch-site");
    }
    None
}

pub async fn same_origin_writes(
    State(app): State<Arc<App>>,
    request: Request,
    next: Next,
) -> Response {
    if changes_state(request.method()) && cookie_authenticated(request.uri().path()) {
        if let Some(why) = cross_site(&request, &app.config.public_origin) {
            tracing::info!(
                path = request.uri().path(),
                header = why,
                "cross-site write refused"
            );
            return problem(
                StatusCode::FORBIDDEN,
                "cross-site",
                "cross-site requests may not change anything here",
            );
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, path: &str, headers: &[(&str, &str)]) -> Request {
        let mut builder = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn only_a_foreign_origin_or_a_cross_site_fetch_is_refused() {
        let ours = "https://assent.example.com";
        let post = |h: &[(&str, &str)]| request(Method::POST, "/v1/console/session", h);
        assert_eq!(cross_site(&post(&[]), ours), None);
        assert_eq!(cross_site(&post(&[("origin", ours)]), ours), None);
        assert_eq!(
            cross_site(&post(&[("sec-fetch-site", "same-origin")]), ours),
            None
        );
        assert_eq!(
            cross_site(&post(&[("origin", "https://evil.example")]), ours),
            Some("origin")
        );
        assert_eq!(
            cross_site(&post(&[("origin", "null")]), ours),
            Some("origin")
        );
        assert_eq!(
            cross_site(
                &post(&[("origin", "https://assent.example.com.evil.example")]),
                ours
            ),
            Some("origin")
        );
        assert_eq!(
            cross_site(
                &post(&[("origin", ours), ("origin", "https://evil.example")]),
                ours
            ),
            Some("origin")
        );
        assert_eq!(
            cross_site(&post(&[("sec-fetch-site", "cross-site")]), ours),
            Some("sec-fetch-site")
        );
        assert!(changes_state(&Method::DELETE) && !changes_state(&Method::GET));
        assert!(cookie_authenticated("/v1/support/session"));
        assert!(!cookie_authenticated("/v1/mobile/devices"));
        assert!(!cookie_authenticated("/v1/scim/v2/Users"));
    }
}
