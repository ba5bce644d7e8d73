//! Extractors: JSON bodies with problem+json rejections, who the caller is, and the three kinds of
//! authentication (console cookie, device signature, SCIM bearer is in `scim.rs`).

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::Response;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::sync::Arc;

use super::error::problem;
use crate::app::App;
use crate::error::ApiError;
use crate::service::AuthedDevice;
use crate::service::{Caller, ConsoleSession, StaffSession};

pub const SESSION_COOKIE: &str = "assent_session";
/// The support API's own cookie (CONTRACT.md section 8), scoped to its paths.
pub const SUPPORT_COOKIE: &str = "assent_support_session";
/// Largest request body any JSON route accepts.
pub const BODY_LIMIT: usize = 64 * 1024;

/// `Json<T>` whose rejections are problem+json: 400 for broken JSON, 422 for wrong fields or types,
/// 413 for a body over the limit, 415 without a JSON content type. Details never echo values.
pub struct ApiJson<T>(pub T);

fn describe(rejection: &JsonRejection) -> Response {
    match rejection {
        JsonRejection::JsonSyntaxError(_) => problem(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "the body is not valid JSON",
        ),
        JsonRejection::JsonDataError(e) => {
            // serde's text can quote the offending value (a password, say): keep only field names.
            let detail = data_error_detail(&e.body_text());
            problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-body", &detail)
        }
        JsonRejection::MissingJsonContentType(_) => problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "send the body as application/json",
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            &format!("the body is larger than {} KiB", BODY_LIMIT / 1024),
        ),
        other => problem(other.status(), "bad-request", "the body could not be read"),
    }
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(describe(&rejection)),
        }
    }
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        let ip = client_ip(&parts.extensions, &parts.headers, app);
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(256).collect())
            .unwrap_or_default();
        Ok(Caller { ip, user_agent })
    }
}

/// The caller's address: the peer, or behind a trusted proxy the address it forwarded.
pub fn client_ip(
    extensions: &axum::http::Extensions,
    headers: &axum::http::HeaderMap,
    app: &App,
) -> String {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let forwarded = forwarded_for(headers);
    peer.map(|peer| {
        crate::domain::proxy::client_ip(peer, forwarded.as_deref(), &app.config.trusted_proxies)
            .to_string()
    })
    .unwrap_or_else(|| "unknown".into())
}

/// What a 422 says of a body serde refused: the field's name, never the value sent. In an
/// "unknown variant" message the first quoted word is the client's value; the field is the path
/// axum puts before the message (`role: unknown variant …`).
fn data_error_detail(text: &str) -> String {
    if text.contains("missing field") {
        if let Some(field) = text.split('`').nth(1) {
            return format!("missing field {field}");
        }
    }
    if let Some((before, _)) = text.split_once(": unknown variant") {
        let path = before.rsplit(": ").next().unwrap_or_default();
        if !path.is_empty() && path.len() <= 64 && !path.contains('`') {
            return format!("unsupported value for {path}");
        }
        return "a field has an unsupported value".to_owned();
    }
    "a field is missing or has the wrong type".to_owned()
}

/// Every `X-Forwarded-For` line as one list, in order (RFC 9110 §5.3): a proxy that adds a line
/// of its own rather than appending to the client's (HAProxy's `option forwardfor`) leaves the
/// client's line first, and reading that one alone would take the client's word for its address.
/// A line that is not text becomes a hop nobody can read, which ends the walk there.
fn forwarded_for(headers: &axum::http::HeaderMap) -> Option<String> {
    let mut lines = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().unwrap_or("unreadable"))
        .peekable();
    lines.peek()?;
    Some(lines.collect::<Vec<_>>().join(","))
}

/// The value of one cookie in the request, if present.
pub fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl FromRequestParts<Arc<App>> for ConsoleSession {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        let id = cookie(parts, SESSION_COOKIE).ok_or(ApiError::Unauthorized)?;
        app.session_of(id, false)
            .await?
            .ok_or(ApiError::Unauthorized)
    }
}

impl FromRequestParts<Arc<App>> for StaffSession {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        let id = cookie(parts, SUPPORT_COOKIE).ok_or(ApiError::Unauthorized)?;
        app.session_of(id, true)
            .await?
            .map(StaffSession)
            .ok_or(ApiError::Unauthorized)
    }
}

/// A session that may ask for step-up challenges and follow them: the console's or support's.
pub trait ChallengeSession: FromRequestParts<Arc<App>, Rejection = ApiError> + Send {
    fn session(&self) -> &ConsoleSession;
}

impl ChallengeSession for ConsoleSession {
    fn session(&self) -> &ConsoleSession {
        self
    }
}

impl ChallengeSession for StaffSession {
    fn session(&self) -> &ConsoleSession {
        &self.0
    }
}

impl FromRequestParts<Arc<App>> for AuthedDevice {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let jws = value
            .strip_prefix("Device ")
            .ok_or(ApiError::Unauthorized)?;
        app.authenticate_device(jws.trim()).await
    }
}

/// `Set-Cookie` for a new console session, or (with `None`) one that clears it.
pub fn session_cookie(app: &App, session_id: Option<&str>) -> String {
    let secure = if app.config.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    match session_id {
        Some(id) => format!(
            "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            app.config.session_max.whole_seconds()
        ),
        None => format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

/// `Set-Cookie` for a new support session, or (with `None`) one that clears it. Sent only to the
/// support API's paths, so the console never even sees it.
pub fn support_cookie(app: &App, session_id: Option<&str>) -> String {
    let secure = if app.config.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let (value, max_age) = match session_id {
        Some(id) => (id, app.config.session_max.whole_seconds()),
        None => ("", 0),
    };
    format!(
        "{SUPPORT_COOKIE}={value}; Path=/v1/support; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    )
}

#[cfg(test)]
mod tests {
    use super::{data_error_detail, forwarded_for};
    use crate::domain::proxy::{client_ip, Cidr};
    use axum::http::{HeaderMap, HeaderValue};

    /// The texts axum's `JsonDataError` gives (serde's message behind the field's path).
    #[test]
    fn a_refused_body_is_described_by_its_field_never_its_value() {
        let unknown = "Failed to deserialize the JSON body into the target type: role: unknown \
                       variant `hunter2-secret`, expected one of `owner`, `admin`, `member` at line 1 column 29";
        let detail = data_error_detail(unknown);
        assert_eq!(detail, "unsupported value for role");
        let missing = "Failed to deserialize the JSON body into the target type: missing field \
                       `password` at line 1 column 2";
        assert_eq!(data_error_detail(missing), "missing field password");
        let typed =
            "Failed to deserialize the JSON body into the target type: email: invalid type: \
                     integer `12345`, expected a string at line 1 column 13";
        assert_eq!(
            data_error_detail(typed),
            "a field is missing or has the wrong type"
        );
    }

    /// The same, from axum's own rejection of a real body.
    #[tokio::test]
    async fn axum_s_own_rejection_names_the_field() {
        use axum::extract::{FromRequest, Json};
        #[derive(serde::Deserialize, Debug)]
        #[serde(rename_all = "lowercase")]
        #[allow(dead_code)]
        enum Role {
            Owner,
            Member,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Body {
            role: Role,
        }
        let request = axum::http::Request::builder()
            .header("content-type", "application/json")
            .body(axum::body::Body::from(r#"{"role":"hunter2-secret"}"#))
            .unwrap();
        let Err(axum::extract::rejection::JsonRejection::JsonDataError(e)) =
            Json::<Body>::from_request(request, &()).await
        else {
            panic!("not a data error");
        };
        let detail = data_error_detail(&e.body_text());
        assert_eq!(detail, "unsupported value for role");
    }

    #[test]
    fn every_forwarded_for_line_is_read_in_order() {
        let mut headers = HeaderMap::new();
        assert_eq!(forwarded_for(&headers), None);
        // The client's own line first, then the one its proxy added.
        headers.append("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        headers.append("x-forwarded-for", HeaderValue::from_static("198.51.100.7"));
        let joined = forwarded_for(&headers).unwrap();
        assert_eq!(joined, "203.0.113.9,198.51.100.7");
        let trusted = vec![Cidr::parse("10.0.0.0/8").unwrap()];
        let peer = "10.0.0.2".parse().unwrap();
        assert_eq!(
            client_ip(peer, Some(&joined), &trusted).to_string(),
            "198.51.100.7",
            "the address the trusted proxy saw, not the one the client wrote"
        );
        let mut bad = HeaderMap::new();
        bad.append("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        bad.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff10.1.1.1").unwrap(),
        );
        assert_eq!(
            client_ip(peer, forwarded_for(&bad).as_deref(), &trusted).to_string(),
            "10.0.0.2",
            "an unreadable hop ends the walk at the last trusted proxy"
        );
    }
}
