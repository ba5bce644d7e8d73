//! The SCIM 2.0 service provider's HTTP surface (CONTRACT.md section 5, RFC 7644) at
//! `/v1/scim/v2`: the bearer gate, the SCIM request and response conventions, and the routes.
//! Handlers parse, call the use cases in `service/scim.rs` (the engine and the store), and map the
//! result; every answer is `application/scim+json` and every error uses the SCIM Error schema of
//! RFC 7644 §3.12, never problem+json.

mod discovery;
mod log;
mod resources;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use serde_json::{json, Value};
use std::sync::Arc;

use crate::app::App;
use crate::scim::error::ScimError;
use crate::scim::schema::ResourceKind;
use crate::store::Workspace;

pub const SCIM_CONTENT_TYPE: &str = "application/scim+json";
pub const PREFIX: &str = "/v1/scim/v2";
/// Largest SCIM request body: a Group PUT or PATCH carrying thousands of members is larger than
/// the 64 KiB the other APIs accept (set on the SCIM routes only, in `routes`).
pub const SCIM_BODY_LIMIT: usize = 1024 * 1024;

/// The workspace a valid SCIM token opened.
#[derive(Clone, Debug)]
pub struct ScimWorkspace(pub Workspace);

/// What a handler tells the provisioning log about its answer (a response extension).
#[derive(Clone, Debug, Default)]
pub struct LogNote {
    pub resource_id: Option<String>,
    /// Whom the request was about (`userName`, `displayName`), when known.
    pub subject: Option<String>,
    pub scim_type: Option<&'static str>,
    pub detail: Option<String>,
}

pub fn scim_json(status: StatusCode, body: Value) -> Response {
    // Written straight into the body's bytes (`Display` would go through `fmt`'s machinery).
    let bytes = serde_json::to_vec(&body).expect("a JSON value serializes");
    let mut response = (status, bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(SCIM_CONTENT_TYPE),
    );
    response
}

pub fn scim_error(status: StatusCode, scim_type: Option<&'static str>, detail: &str) -> Response {
    let mut body = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": status.as_u16().to_string(),
        "detail": detail,
    });
    if let Some(t) = scim_type {
        body["scimType"] = json!(t);
    }
    let mut response = scim_json(status, body);
    response.extensions_mut().insert(LogNote {
        scim_type,
        detail: Some(detail.to_owned()),
        ..LogNote::default()
    });
    response
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = scim_error(status, self.scim_type().map(|t| t.as_str()), self.detail());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        }
        response
    }
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
            request
                .extensions_mut()
                .insert(ScimWorkspace(workspace.clone()));
            let mut response = next.run(request).await;
            // For the provisioning log, which wraps this gate.
            response.extensions_mut().insert(ScimWorkspace(workspace));
            response
        }
        Ok(None) => {
            tracing::info!("SCIM request with an unknown or rotated token");
            unauthorized()
        }
        Err(_) => ScimError::Unavailable.into_response(),
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

/// A SCIM request body: `application/scim+json` or `application/json` (any parameters, such as
/// `charset=utf-8`), or no content type at all; malformed JSON is 400 `invalidSyntax`.
pub struct ScimBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for ScimBody {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(scim_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                None,
                "send the body as application/scim+json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ScimError::PayloadTooLarge(format!(
                    "the body is larger than {} KiB",
                    SCIM_BODY_LIMIT / 1024
                ))
                .into_response()
            } else {
                ScimError::invalid_syntax("the body could not be read").into_response()
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(ScimBody)
            .map_err(|_| ScimError::invalid_syntax("the body is not valid JSON").into_response())
    }
}

fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return true;
    };
    let Ok(text) = value.to_str() else {
        return false;
    };
    let essence = text.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case(SCIM_CONTENT_TYPE)
        || essence.eq_ignore_ascii_case("application/json")
}

async fn scim_not_found() -> Response {
    scim_error(StatusCode::NOT_FOUND, None, "no such SCIM endpoint")
}

async fn method_not_allowed() -> Response {
    scim_error(
        StatusCode::METHOD_NOT_ALLOWED,
        None,
        "this SCIM endpoint does not accept that method",
    )
}

/// RFC 7644 §3.7 and §3.11: both optional, and announced as unsupported (bulk) or absent (`/Me`:
/// the bearer is a workspace's token, not a user's).
async fn not_implemented() -> Response {
    ScimError::NotImplemented("not supported by this service provider".into()).into_response()
}

/// The SCIM endpoints themselves, without the gate and the log.
fn endpoints() -> Router<Arc<App>> {
    let at = |path: &str| format!("{PREFIX}{path}");
    Router::new()
        .route(
            &at("/ServiceProviderConfig"),
            get(discovery::service_provider_config),
        )
        .route(&at("/ResourceTypes"), get(discovery::resource_types))
        .route(&at("/ResourceTypes/{name}"), get(discovery::resource_type))
        .route(&at("/Schemas"), get(discovery::schemas))
        .route(&at("/Schemas/{id}"), get(discovery::schema))
        .route(&at("/.search"), post(resources::search_all))
        .route(&at("/Bulk"), any(not_implemented))
        .route(&at("/Me"), any(not_implemented))
        .merge(resources::routes(ResourceKind::User))
        .merge(resources::routes(ResourceKind::Group))
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(DefaultBodyLimit::max(SCIM_BODY_LIMIT))
}

/// The endpoint names of RFC 7644 §3.2, in their canonical case.
const ENDPOINT_NAMES: &[&str] = &[
    "Users",
    "Groups",
    "ServiceProviderConfig",
    "ResourceTypes",
    "Schemas",
    "Bulk",
    "Me",
    ".search",
];

/// The canonical form of a SCIM path below `PREFIX`, when it differs from the one sent: without
/// trailing slashes, endpoint names (and `.search`) in their canonical case. Clients send
/// `/Users/?filter=…` (Microsoft's reference collection) and `/users`; RFC 7644 gives the names,
/// and nothing is lost by reading them leniently. Ids are left exactly as sent.
fn canonical_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix(PREFIX)?;
    let trimmed = rest.trim_end_matches('/');
    let mut out = String::from(PREFIX);
    for (i, segment) in trimmed.split('/').skip(1).enumerate() {
        out.push('/');
        let canonical = ENDPOINT_NAMES
            .iter()
            .find(|n| n.eq_ignore_ascii_case(segment))
            .filter(|_| i == 0 || segment.eq_ignore_ascii_case(".search"));
        out.push_str(canonical.copied().unwrap_or(segment));
    }
    (out != path && out.len() > PREFIX.len()).then_some(out)
}

/// Every path the routes do not match lands here, behind the gate: one that only differs from a
/// route by case or a trailing slash is answered by that route, any other is 404.
async fn lenient(endpoints: Router, mut request: Request) -> Response {
    let Some(path) = canonical_path(request.uri().path()) else {
        return scim_not_found().await;
    };
    let uri = match request.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let Ok(uri) = uri.parse() else {
        return scim_not_found().await;
    };
    // A new request, not this one re-addressed: this route's own match (its path parameters)
    // must not reach the next one. The workspace the gate opened goes with it.
    let workspace = request.extensions_mut().remove::<ScimWorkspace>();
    let (parts, body) = request.into_parts();
    let mut request = Request::new(body);
    *request.method_mut() = parts.method;
    *request.uri_mut() = uri;
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers;
    if let Some(ws) = workspace {
        request.extensions_mut().insert(ws);
    }
    match tower::ServiceExt::oneshot(endpoints, request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

pub fn routes(app: Arc<App>) -> Router<Arc<App>> {
    let at = |path: &str| format!("{PREFIX}{path}");
    let canonical = endpoints().fallback(scim_not_found).with_state(app.clone());
    endpoints()
        .route(PREFIX, any(scim_not_found))
        .route(
            &at("/{*rest}"),
            any(move |request: Request| lenient(canonical.clone(), request)),
        )
        .route_layer(middleware::from_fn_with_state(app.clone(), require_token))
        .layer(middleware::from_fn_with_state(app, log::record))
}

#[cfg(test)]
mod tests {
    use super::canonical_path;

    #[test]
    fn lenient_paths_are_canonicalised_and_ids_left_alone() {
        let p = |s: &str| canonical_path(&format!("/v1/scim/v2{s}"));
        assert_eq!(p("/users").as_deref(), Some("/v1/scim/v2/Users"));
        assert_eq!(p("/Users/").as_deref(), Some("/v1/scim/v2/Users"));
        assert_eq!(p("/USERS/AbC/").as_deref(), Some("/v1/scim/v2/Users/AbC"));
        assert_eq!(
            p("/groups/.Search").as_deref(),
            Some("/v1/scim/v2/Groups/.search")
        );
        assert_eq!(
            p("/schemas/urn:x/").as_deref(),
            Some("/v1/scim/v2/Schemas/urn:x")
        );
        // An id named like an endpoint stays as sent.
        assert_eq!(p("/Users/groups/"), Some("/v1/scim/v2/Users/groups".into()));
        // Already canonical, or nothing left: no second dispatch.
        assert_eq!(p("/Users/AbC"), None);
        assert_eq!(p("/Nothing"), None);
        assert_eq!(p("/"), None);
        assert_eq!(canonical_path("/v1/console/x"), None);
    }
}
