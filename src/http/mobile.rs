//! Mobile companion API (CONTRACT.md section 4): enrollment, push tokens, pending challenges and
//! signed decisions. Every route but enrollment needs `Authorization: Device <JWS>`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use time::OffsetDateTime;

use super::extract::ApiJson;
use crate::app::App;
use crate::clock::ser_rfc3339;
use crate::domain::challenge::{Action, Challenge};
use crate::domain::crypto::Secret;
use crate::error::{ApiError, ApiResult};
use crate::service::devices::EnrollRequest;
use crate::service::AuthedDevice;
use crate::service::Caller;
use crate::store::Platform;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/mobile/devices", post(enroll))
        .route("/v1/mobile/devices/{id}/push-token", put(push_token))
        .route("/v1/mobile/devices/{id}", delete(unenroll))
        .route("/v1/mobile/challenges", get(pending))
        .route("/v1/mobile/challenges/{id}/decision", post(decide))
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum PlatformField {
    Apns,
    Fcm,
}

#[derive(Deserialize)]
struct Enroll {
    enrollment_code: String,
    name: String,
    platform: PlatformField,
    #[serde(default)]
    push_token: Option<String>,
    #[serde(default)]
    apns_environment: Option<String>,
    public_key: serde_json::Value,
}

async fn enroll(
    State(app): State<Arc<App>>,
    caller: Caller,
    ApiJson(body): ApiJson<Enroll>,
) -> ApiResult<Response> {
    let request = EnrollRequest {
        code: Secret::new(body.enrollment_code),
        name: body.name,
        platform: match body.platform {
            PlatformField::Apns => Platform::Apns,
            PlatformField::Fcm => Platform::Fcm,
        },
        push_token: body.push_token.filter(|t| !t.is_empty()).map(Secret::new),
        apns_environment: body.apns_environment,
        public_key: body.public_key,
    };
    let (device_id, audience) = app.enroll(request, &caller).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "device_id": device_id, "audience": audience })),
    )
        .into_response())
}

/// A device may only act on itself; another id is "not found", like one that does not exist.
fn own(me: &AuthedDevice, id: &str) -> ApiResult<()> {
    if me.device.id == id {
        Ok(())
    } else {
        Err(ApiError::NotFound)
    }
}

#[derive(Deserialize)]
struct PushToken {
    push_token: String,
}

async fn push_token(
    State(app): State<Arc<App>>,
    me: AuthedDevice,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PushToken>,
) -> ApiResult<StatusCode> {
    own(&me, &id)?;
    app.refresh_push_token(&me, &Secret::new(body.push_token))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unenroll(
    State(app): State<Arc<App>>,
    me: AuthedDevice,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    own(&me, &id)?;
    app.unenroll(&me, &caller).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct PendingView {
    id: String,
    action: Action,
    nonce: String,
    number_choices: [u8; 3],
    workspace: serde_json::Value,
    requested_by: serde_json::Value,
    context: serde_json::Value,
    #[serde(serialize_with = "ser_rfc3339")]
    created_at: OffsetDateTime,
    #[serde(serialize_with = "ser_rfc3339")]
    expires_at: OffsetDateTime,
}

/// Where the request came from; for a support rotation also its ticket and reason (which the
/// phone signs); under the two-person rule, that the requester has approved already.
fn context(c: &Challenge) -> serde_json::Value {
    let mut context = json!({"ip": c.origin.ip, "user_agent": c.origin.user_agent});
    if let Some(support) = &c.support {
        context["ticket"] = json!(support.ticket);
        context["reason"] = json!(support.reason);
    }
    if c.first_approval.is_some() {
        context["second_approval"] = json!(true);
    }
    if let Some(subject) = &c.subject {
        // Whose phones a reset removes, whom a promotion raises and to what: the approver must
        // see who it is about.
        context["member"] = json!({"email": subject.email});
        if let Some(role) = subject.role {
            context["member"]["role"] = json!(role);
        }
    }
    // What the phone shows as the request, in words.
    context["description"] = json!(c.action.describe());
    context
}

impl From<Challenge> for PendingView {
    fn from(c: Challenge) -> Self {
        let context = context(&c);
        Self {
            id: c.id,
            action: c.action,
            nonce: c.nonce,
            number_choices: c.number_choices,
            workspace: json!({"slug": c.workspace_slug, "name": c.workspace_name}),
            requested_by: json!({"email": c.user_email}),
            context,
            created_at: c.created_at,
            expires_at: c.expires_at,
        }
    }
}

async fn pending(
    State(app): State<Arc<App>>,
    me: AuthedDevice,
) -> ApiResult<Json<serde_json::Value>> {
    let challenges: Vec<PendingView> = app
        .pending_for_device(&me)
        .await?
        .into_iter()
        .map(PendingView::from)
        .collect();
    Ok(Json(json!({ "challenges": challenges })))
}

#[derive(Deserialize)]
struct DecisionBody {
    decision: String,
}

async fn decide(
    State(app): State<Arc<App>>,
    me: AuthedDevice,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<DecisionBody>,
) -> ApiResult<Response> {
    let challenge = app.decide(&me, &id, &body.decision, &caller).await?;
    let answer = match challenge.awaiting() {
        // This phone's approval counts; a second person's is still to come.
        Some(awaiting) => json!({"status": "approved", "awaiting": awaiting}),
        None => json!({ "status": challenge.status.as_str() }),
    };
    Ok(Json(answer).into_response())
}
