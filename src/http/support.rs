//! Support API (CONTRACT.md section 8): staff sign-in with its own cookie, their phones'
//! enrollment, a workspace's non-secret summary, and the token rotation that never shows the
//! token.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use time::OffsetDateTime;

use super::challenges::{challenge, events, step_up_answer};
use super::console::{device_list, enrollment_answer, reauth, start_enrollment_for};
use super::extract::{support_cookie, ApiJson};
use crate::app::App;
use crate::clock::{ser_opt_rfc3339, ser_rfc3339};
use crate::domain::challenge::Action;
use crate::domain::crypto::Secret;
use crate::error::ApiResult;
use crate::service::support::SupportReleased;
use crate::service::{Caller, StaffSession};

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route(
            "/v1/support/session",
            post(sign_in).get(whoami).delete(sign_out),
        )
        .route("/v1/support/session/reauth", post(reauth::<StaffSession>))
        .route("/v1/support/devices/enrollments", post(start_enrollment))
        .route("/v1/support/devices", get(list_devices))
        .route("/v1/support/workspaces/{slug}", get(summary))
        .route(
            "/v1/support/workspaces/{slug}/scim-token/rotate",
            post(rotate),
        )
        .route(
            "/v1/support/challenges/{id}",
            get(challenge::<StaffSession>),
        )
        .route(
            "/v1/support/challenges/{id}/events",
            get(events::<StaffSession>),
        )
        .route("/v1/support/challenges/{id}/release", post(release))
}

#[derive(Deserialize)]
struct SignIn {
    email: String,
    password: String,
}

async fn sign_in(
    State(app): State<Arc<App>>,
    caller: Caller,
    ApiJson(body): ApiJson<SignIn>,
) -> ApiResult<Response> {
    let signed_in = app
        .staff_sign_in(&body.email, Secret::new(body.password), &caller)
        .await?;
    let cookie = support_cookie(&app, Some(signed_in.session_id.expose()));
    Ok((
        [(header::SET_COOKIE, cookie)],
        Json(json!({ "email": signed_in.user.email })),
    )
        .into_response())
}

/// `GET /v1/support/session` (issue 16): who is signed in, for the support page (401 when nobody).
async fn whoami(staff: StaffSession) -> Json<serde_json::Value> {
    Json(json!({ "email": staff.0.user.email }))
}

async fn sign_out(
    State(app): State<Arc<App>>,
    staff: StaffSession,
    caller: Caller,
) -> ApiResult<Response> {
    app.sign_out(&staff.0, &caller).await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, support_cookie(&app, None))],
    )
        .into_response())
}

async fn start_enrollment(
    State(app): State<Arc<App>>,
    staff: StaffSession,
    caller: Caller,
) -> ApiResult<Response> {
    start_enrollment_for(&app, &staff.0, &caller).await
}

/// `GET /v1/support/devices` (issue 16): the staff member's own phones, as the console lists its
/// person's (`GET /v1/console/devices`).
async fn list_devices(
    State(app): State<Arc<App>>,
    staff: StaffSession,
) -> ApiResult<Json<serde_json::Value>> {
    device_list(&app, &staff.0).await
}

#[derive(Serialize)]
struct Summary {
    slug: String,
    name: String,
    #[serde(serialize_with = "ser_opt_rfc3339")]
    token_created_at: Option<OffsetDateTime>,
    token_rotated_by: Option<String>,
    #[serde(serialize_with = "ser_opt_rfc3339")]
    last_scim_request_at: Option<OffsetDateTime>,
    scim_errors_24h: i64,
}

async fn summary(
    State(app): State<Arc<App>>,
    staff: StaffSession,
    caller: Caller,
    Path(slug): Path<String>,
) -> ApiResult<Json<Summary>> {
    let s = app.support_summary(&staff, &slug, &caller).await?;
    Ok(Json(Summary {
        slug: s.workspace.slug,
        name: s.workspace.name,
        token_created_at: s.token_created_at,
        token_rotated_by: s.token_rotated_by,
        last_scim_request_at: s.last_scim_request_at,
        scim_errors_24h: s.scim_errors_24h,
    }))
}

#[derive(Deserialize)]
struct Rotate {
    ticket: String,
    reason: String,
}

async fn rotate(
    State(app): State<Arc<App>>,
    staff: StaffSession,
    caller: Caller,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson<Rotate>,
) -> ApiResult<Response> {
    let (c, notified) = app
        .request_support_rotation(&staff, &slug, &body.ticket, &body.reason, &caller)
        .await?;
    step_up_answer(c, notified).await
}

#[derive(Serialize)]
struct Rotated {
    action: Action,
    #[serde(serialize_with = "ser_rfc3339")]
    rotated_at: OffsetDateTime,
}

async fn release(
    State(app): State<Arc<App>>,
    staff: StaffSession,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    match app.support_release(&id, &staff, &caller).await? {
        SupportReleased::Rotated(rotated_at) => Ok(Json(Rotated {
            action: Action::SupportRotate,
            rotated_at,
        })
        .into_response()),
        SupportReleased::Enrollment(offer) => {
            let mut answer = enrollment_answer(&offer)?;
            answer.set_action(Action::DeviceEnroll);
            Ok(([(header::CACHE_CONTROL, "no-store")], Json(answer)).into_response())
        }
    }
}
