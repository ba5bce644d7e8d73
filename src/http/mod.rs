//! HTTP: the router assembled from one module per surface, plus the layers every route shares.

pub mod challenges;
pub mod console;
pub mod detach;
pub mod error;
pub mod extract;
pub mod health;
pub mod mobile;
pub mod origin;
pub mod provisioning;

pub mod scim;
pub mod scim_schemas;
pub mod serve;
pub mod sso;
pub mod support;
#[cfg(test)]
mod tests;
pub mod web;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use std::sync::Arc;
use std::time::Instant;

use crate::app::App;
use crate::metrics::{HttpLabels, RouteLabels};

/// The method as a label from a closed set. A client may send any token as its method (hyper
/// passes on a 60 KB one); a metrics label or a log column must not keep what clients invent.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Counts every request by method, route template (never the raw path, which holds ids) and
/// status: labels from closed sets, so that no request can add a series of its own.
async fn observe(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "other".into());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    app.metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method,
            route: route.clone(),
            status: response.status().as_u16(),
        })
        .inc();
    app.metrics
        .http_duration
        .get_or_create(&RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Every request body fails past the largest size any route accepts (SCIM's 1 MiB), whatever
/// reads it. The extractors' own limits (64 KiB for JSON, 1 MiB for SCIM) stay the ones that
/// answer, in their own formats; this makes sure a route that reads its body some other way cannot
/// be made to buffer without end. tower-http's `RequestBodyLimitLayer` would refuse a large
/// `Content-Length` itself, in plain text, before SCIM could answer in its Error schema.
async fn cap_body(request: Request, next: Next) -> Response {
    let request =
        request.map(|body| Body::new(http_body_util::Limited::new(body, scim::SCIM_BODY_LIMIT)));
    next.run(request).await
}

/// Security headers for every answer.
async fn harden(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(web::CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .merge(console::routes())
        .merge(mobile::routes())
        .merge(scim::routes(app.clone()))
        .merge(provisioning::routes())
        .merge(scim_schemas::routes())
        .merge(sso::routes())
        .merge(support::routes())
        .merge(health::routes())
        .merge(web::routes())
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(middleware::from_fn(detach::detach))
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            origin::same_origin_writes,
        ))
        .layer(middleware::from_fn(cap_body))
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .layer(middleware::from_fn(harden))
        .with_state(app)
}
