//! Single sign-on routes (CONTRACT.md section 11): the owner's settings, and the browser's round
//! trip through the provider, to sign in or (`?reauth=1`) to re-authenticate the console session.
//! Failures of the round trip are redirects to `/?sso_error=<reason>`, never a page of ours with
//! the provider's text on it; only a flood from one address is answered 429 (issue 13).

use axum::extract::{Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use time::OffsetDateTime;

use super::extract::{cookie, session_cookie, ApiJson, SESSION_COOKIE};
use crate::app::App;
use crate::challenges::LOGIN_WINDOW;
use crate::clock::ser_rfc3339;
use crate::domain::crypto::Secret;
use crate::domain::sso::Failure;
use crate::error::{ApiError, ApiResult};
use crate::service::sso::{CallbackParams, SsoFinished, SsoSettings, StartFor, PENDING_TTL};
use crate::service::{Caller, ConsoleSession};
use crate::store::sso::SsoConfig;
use crate::store::Role;

/// Ties a started sign-in to the browser that started it (the callback must carry it back).
pub const BINDING_COOKIE: &str = "assent_sso";
const CALLBACK_PATH: &str = "/v1/sso/callback";

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/console/sso", get(read_settings).put(write_settings))
        .route("/v1/sso/{workspace}/start", get(start))
        .route(CALLBACK_PATH, get(callback))
}

#[derive(Deserialize)]
struct SettingsBody {
    issuer: String,
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    allowed_email_domains: Vec<String>,
    #[serde(default = "member")]
    default_role: Role,
    #[serde(default)]
    enforce: bool,
}

fn member() -> Role {
    Role::Member
}

/// The settings as shown: never the client secret.
#[derive(Serialize)]
struct SettingsView {
    issuer: String,
    client_id: String,
    allowed_email_domains: Vec<String>,
    default_role: Role,
    enforce: bool,
    /// What to register at the provider.
    redirect_uri: String,
    #[serde(serialize_with = "ser_rfc3339")]
    updated_at: OffsetDateTime,
    updated_by: String,
}

fn view(app: &App, c: SsoConfig) -> SettingsView {
    SettingsView {
        issuer: c.issuer,
        client_id: c.client_id,
        allowed_email_domains: c.allowed_email_domains,
        default_role: c.default_role,
        enforce: c.enforce,
        redirect_uri: app.sso_redirect_uri(),
        updated_at: c.updated_at,
        updated_by: c.updated_by,
    }
}

async fn read_settings(
    State(app): State<Arc<App>>,
    session: ConsoleSession,
) -> ApiResult<Json<SettingsView>> {
    let config = app.sso_settings(&session).await?;
    Ok(Json(view(&app, config)))
}

async fn write_settings(
    State(app): State<Arc<App>>,
    session: ConsoleSession,
    caller: Caller,
    ApiJson(body): ApiJson<SettingsBody>,
) -> ApiResult<Json<SettingsView>> {
    let settings = SsoSettings {
        issuer: body.issuer,
        client_id: body.client_id,
        client_secret: body.client_secret.map(Secret::new),
        allowed_email_domains: body.allowed_email_domains,
        default_role: body.default_role,
        enforce: body.enforce,
    };
    let config = app.put_sso_settings(&session, settings, &caller).await?;
    Ok(Json(view(&app, config)))
}

/// The binding cookie, set for the callback path only. SameSite=Lax, not Strict: the browser
/// comes back to the callback by a top-level navigation from the provider's site, and Strict
/// cookies are not sent on cross-site navigations (Lax ones are, for GET). It only works with the
/// provider redirecting by GET (the default `query` response mode), which is what we ask for.
fn binding_cookie(app: &App, value: Option<&str>) -> String {
    let secure = if app.config.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    match value {
        Some(v) => format!(
            "{BINDING_COOKIE}={v}; Path={CALLBACK_PATH}; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
            PENDING_TTL.whole_seconds()
        ),
        None => format!(
            "{BINDING_COOKIE}=; Path={CALLBACK_PATH}; HttpOnly; SameSite=Lax; Max-Age=0{secure}"
        ),
    }
}

/// A 302 that no cache keeps, with these cookies.
fn redirect(location: &str, cookies: &[String]) -> Response {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for c in cookies {
        if let Ok(value) = HeaderValue::from_str(c) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    (StatusCode::FOUND, headers).into_response()
}

fn failed(failure: Failure, cookies: &[String]) -> Response {
    if failure == Failure::TooManyRequests {
        // A flood is no browser to send back to the page: a plain 429. The counting window is
        // fixed from its first request, so it ends within LOGIN_WINDOW.
        return ApiError::TooManyRequests {
            detail: "too many single sign-on requests from this address; wait before trying again"
                .into(),
            retry_after_secs: LOGIN_WINDOW.whole_seconds() as u64,
        }
        .into_response();
    }
    redirect(&format!("/?sso_error={}", failure.as_str()), cookies)
}

/// Whether the start's query asks for a re-authentication (`reauth=1`).
fn wants_reauth(query: Option<&str>) -> bool {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .any(|(name, value)| name == "reauth" && value == "1")
}

async fn start(
    State(app): State<Arc<App>>,
    Path(workspace): Path<String>,
    caller: Caller,
    RawQuery(query): RawQuery,
    parts: Parts,
) -> Response {
    let existing = cookie(&parts, BINDING_COOKIE);
    let purpose = if wants_reauth(query.as_deref()) {
        StartFor::Reauth {
            session_cookie: cookie(&parts, SESSION_COOKIE),
        }
    } else {
        StartFor::SignIn
    };
    match app.sso_start(&workspace, existing, purpose, &caller).await {
        Ok(started) => redirect(
            &started.location,
            &[binding_cookie(&app, Some(started.binding.expose()))],
        ),
        Err(failure) => failed(failure, &[]),
    }
}

fn callback_params(query: Option<&str>) -> CallbackParams {
    let mut params = CallbackParams::default();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let slot = match name.as_ref() {
            "state" => &mut params.state,
            "code" => &mut params.code,
            "error" => &mut params.error,
            "iss" => &mut params.iss,
            _ => continue,
        };
        // A repeated parameter is ambiguous: keep the first, like most servers.
        if slot.is_none() {
            *slot = Some(value.into_owned());
        }
    }
    params
}

async fn callback(
    State(app): State<Arc<App>>,
    caller: Caller,
    RawQuery(query): RawQuery,
    parts: Parts,
) -> Response {
    let binding = cookie(&parts, BINDING_COOKIE);
    let params = callback_params(query.as_deref());
    let clear = binding_cookie(&app, None);
    match app.sso_callback(params, binding, &caller).await {
        Ok(SsoFinished::SignedIn(signed_in)) => redirect(
            "/",
            &[
                clear,
                session_cookie(&app, Some(signed_in.session_id.expose())),
            ],
        ),
        Ok(SsoFinished::Reauthenticated) => redirect("/?reauth=ok", &[clear]),
        Err(failure) => failed(failure, &[clear]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_parameters_are_read_once_each() {
        let p = callback_params(Some(
            "code=a%20b&state=s1&state=s2&iss=https%3A%2F%2Fidp&x=1",
        ));
        assert_eq!(p.code.as_deref(), Some("a b"));
        assert_eq!(p.state.as_deref(), Some("s1"));
        assert_eq!(p.iss.as_deref(), Some("https://idp"));
        assert_eq!(p.error, None);
        let empty = callback_params(None);
        assert!(empty.state.is_none() && empty.code.is_none());
    }

    #[test]
    fn only_reauth_1_asks_for_a_reauthentication() {
        assert!(wants_reauth(Some("reauth=1")));
        assert!(wants_reauth(Some("x=2&reauth=1")));
        for no in [
            None,
            Some(""),
            Some("reauth=0"),
            Some("reauth=yes"),
            Some("reauthx=1"),
        ] {
            assert!(!wants_reauth(no), "{no:?}");
        }
    }

    #[test]
    fn a_flood_is_a_429_and_other_failures_a_redirect() {
        let flood = failed(Failure::TooManyRequests, &[]);
        assert_eq!(flood.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(flood.headers().contains_key(header::RETRY_AFTER));
        let other = failed(Failure::InvalidState, &[]);
        assert_eq!(other.status(), StatusCode::FOUND);
        assert_eq!(
            other.headers()[header::LOCATION],
            "/?sso_error=invalid_state"
        );
    }
}
