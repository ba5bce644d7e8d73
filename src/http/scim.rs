//! The SCIM bearer gate (CONTRACT.md section 5): every `/v1/scim/v2` request must carry the
//! workspace's current token; the resolved workspace travels on as a request extension. Errors
//! here use the SCIM Error schema of RFC 7644 §3.12, not problem+json.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::json;
use std::sync::Arc;

use crate::app::App;
use crate::store::Workspace;

pub const SCIM_CONTENT_TYPE: &str = "application/scim+json";

/// The workspace a valid SCIM token opened.
#[derive(Clone, Debug)]
pub struct ScimWorkspace(pub Workspace);

pub fn scim_json(status: StatusCode, body: serde_json::Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(SCIM_CONTENT_TYPE),
    );
    response
}

pub fn scim_error(status: StatusCode, scim_type: Option<&str>, detail: &str) -> Response {
    let mut body = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": status.as_u16().to_string(),
        "detail": detail,
    });
    if let Some(t) = scim_type {
        body["scimType"] = json!(t);
    }
    scim_json(status, body)
}

async fn require_token(State(app): State<Arc<App>>, mut request: Request, next: Next) -> Response {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(bearer) = bearer else {
        return unauthorized();
    };
    match app.authenticate_scim(bearer).await {
        Ok(Some(workspace)) => {
            request.extensions_mut().insert(ScimWorkspace(workspace));
            next.run(request).await
        }
        Ok(None) => {
            tracing::info!("SCIM request with an unknown or rotated token");
            unauthorized()
        }
        Err(_) => scim_error(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "the service is unavailable; try again shortly",
        ),
    }
}

fn unauthorized() -> Response {
    let mut response = scim_error(
        StatusCode::UNAUTHORIZED,
        None,
        "a valid bearer token is required",
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// What this build supports, truthfully: the resource endpoints arrive with the SCIM issue, so
/// every optional feature is announced as unsupported for now.
async fn service_provider_config(Extension(_): Extension<ScimWorkspace>) -> Response {
    scim_json(
        StatusCode::OK,
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "patch": {"supported": false},
            "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": false, "maxResults": 0},
            "changePassword": {"supported": false},
            "sort": {"supported": false},
            "etag": {"supported": false},
            "authenticationSchemes": [{
                "type": "oauthbearertoken",
                "name": "OAuth Bearer Token",
                "description": "The workspace's SCIM token, revealed in the Assent console after approval on a phone",
                "primary": true
            }],
            "meta": {"resourceType": "ServiceProviderConfig", "location": "/v1/scim/v2/ServiceProviderConfig"}
        }),
    )
}

async fn scim_not_found() -> Response {
    scim_error(StatusCode::NOT_FOUND, None, "no such SCIM endpoint")
}

pub fn routes(app: Arc<App>) -> Router<Arc<App>> {
    Router::new()
        .route(
            "/v1/scim/v2/ServiceProviderConfig",
            get(service_provider_config),
        )
        .route("/v1/scim/v2/{*rest}", axum::routing::any(scim_not_found))
        .route_layer(middleware::from_fn_with_state(app, require_token))
}
