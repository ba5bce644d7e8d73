//! Renders `ApiError` as RFC 9457 problem+json: the one place where errors become HTTP.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::ApiError;

fn title(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Error")
}

pub fn problem(status: StatusCode, slug: &str, detail: &str) -> Response {
    problem_with(status, slug, detail, json!({}))
}

/// A problem with extension members (RFC 9457 section 3.2) beside the four standard ones.
fn problem_with(
    status: StatusCode,
    slug: &str,
    detail: &str,
    extensions: serde_json::Value,
) -> Response {
    let mut body = json!({
        "type": format!("urn:assent:problem:{slug}"),
        "title": title(status),
        "status": status.as_u16(),
        "detail": detail,
    });
    if let (Some(body), serde_json::Value::Object(more)) = (body.as_object_mut(), extensions) {
        body.extend(more);
    }
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let detail = match &self {
            ApiError::Unauthorized => "sign in again, or check the credentials".to_owned(),
            ApiError::NotFound => "no such resource".to_owned(),
            ApiError::Internal => "the server could not complete the request".to_owned(),
            other => other.to_string(),
        };
        let extensions = match &self {
            ApiError::ReauthRequired { sso_url: None } => {
                json!({"reauth_required": true, "reauth": "password"})
            }
            ApiError::ReauthRequired { sso_url: Some(url) } => {
                json!({"reauth_required": true, "reauth": "sso", "reauth_url": url})
            }
            _ => json!({}),
        };
        let mut response = problem_with(status, self.slug(), &detail, extensions);
        if let ApiError::TooManyRequests {
            retry_after_secs, ..
        } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        if let ApiError::Unavailable(_) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        }
        response
    }
}

/// Unknown routes answer problem+json too.
pub async fn not_found() -> Response {
    ApiError::NotFound.into_response()
}

/// A known route with another method answers problem+json too (axum adds the `Allow` header).
pub async fn method_not_allowed() -> Response {
    problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "this route does not accept that method",
    )
}
