//! Console API (CONTRACT.md section 3): sign-in, devices, the View Token and Regenerate flows.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use time::OffsetDateTime;

use super::challenges::{challenge, events, step_up_answer};
use super::extract::{session_cookie, ApiJson, ChallengeSession};
use crate::app::App;
use crate::clock::{rfc3339, ser_opt_rfc3339, ser_rfc3339};
use crate::domain::challenge::Action;
use crate::domain::crypto::Secret;
use crate::error::{ApiError, ApiResult};
use crate::service::devices::EnrollmentStart;
use crate::service::members::{Invited, RoleChange};
use crate::service::stepup::Released;
use crate::service::EnrollmentOffer;
use crate::service::{Caller, ConsoleSession};
use crate::store::{Device, Role};

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route(
            "/v1/console/session",
            post(sign_in).get(whoami).delete(sign_out),
        )
        .route("/v1/console/session/reauth", post(reauth::<ConsoleSession>))
        .route("/v1/console/devices/enrollments", post(start_enrollment))
        .route("/v1/console/devices", get(list_devices))
        .route("/v1/console/devices/{id}", delete(remove_device))
        .route("/v1/console/scim-token/reveal", post(reveal))
        .route("/v1/console/scim-token/rotate", post(rotate))
        .route(
            "/v1/console/challenges/{id}",
            get(challenge::<ConsoleSession>),
        )
        .route(
            "/v1/console/challenges/{id}/events",
            get(events::<ConsoleSession>),
        )
        .route("/v1/console/challenges/{id}/release", post(release))
        .route("/v1/console/members", get(members).post(invite))
        .route("/v1/console/invitations/accept", post(accept_invitation))
        .route(
            "/v1/console/members/{id}",
            patch(change_role).delete(remove_member),
        )
        .route(
            "/v1/console/members/{id}/devices",
            delete(reset_member_devices),
        )
        .route("/v1/console/audit", get(audit))
        .route("/v1/console/policy", get(policy).put(set_policy))
}

#[derive(Deserialize)]
struct SignIn {
    workspace: String,
    email: String,
    password: String,
}

#[derive(Serialize)]
struct Me {
    email: String,
    role: Role,
    workspace: String,
    workspace_name: String,
    scim_base_url: String,
    /// What an owner registers at their OpenID provider (CONTRACT.md section 11).
    sso_redirect_uri: String,
}

fn me(app: &App, user: &crate::store::User, workspace: &crate::store::Workspace) -> Me {
    Me {
        email: user.email.clone(),
        role: user.role,
        workspace: workspace.slug.clone(),
        workspace_name: workspace.name.clone(),
        scim_base_url: app.config.scim_base_url(),
        sso_redirect_uri: app.sso_redirect_uri(),
    }
}

async fn sign_in(
    State(app): State<Arc<App>>,
    caller: Caller,
    ApiJson(body): ApiJson<SignIn>,
) -> ApiResult<Response> {
    let signed_in = app
        .sign_in(
            &body.workspace,
            &body.email,
            Secret::new(body.password),
            &caller,
        )
        .await?;
    let cookie = session_cookie(&app, Some(signed_in.session_id.expose()));
    let body = me(&app, &signed_in.user, &signed_in.workspace);
    Ok(([(header::SET_COOKIE, cookie)], Json(body)).into_response())
}

async fn whoami(State(app): State<Arc<App>>, session: ConsoleSession) -> Json<Me> {
    Json(me(&app, &session.user, &session.workspace))
}

async fn sign_out(
    State(app): State<Arc<App>>,
    session: ConsoleSession,
    caller: Caller,
) -> ApiResult<Response> {
    app.sign_out(&session, &caller).await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, session_cookie(&app, None))],
    )
        .into_response())
}

#[derive(Serialize)]
pub(super) struct EnrollmentAnswer {
    /// `device.enroll` when the code comes with a challenge's release.
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<Action>,
    code: String,
    uri: String,
    #[serde(serialize_with = "ser_rfc3339")]
    expires_at: OffsetDateTime,
    /// The QR code of `uri`, as an SVG document drawn by the server.
    qr_svg: String,
}

fn qr_svg(data: &str) -> ApiResult<String> {
    let code = qrcode::QrCode::new(data.as_bytes()).map_err(|_| ApiError::Internal)?;
    Ok(code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(220, 220)
        .quiet_zone(true)
        .build())
}

async fn start_enrollment(
    State(app): State<Arc<App>>,
    session: ConsoleSession,
    caller: Caller,
) -> ApiResult<Response> {
    start_enrollment_for(&app, &session, &caller).await
}

/// The signed-in person's own phone (console user or staff): the code at once for a first phone
/// (201), or a `device.enroll` step-up on the phones they have (202).
pub(super) async fn start_enrollment_for(
    app: &App,
    session: &ConsoleSession,
    caller: &Caller,
) -> ApiResult<Response> {
    match app.request_enrollment(session, caller).await? {
        EnrollmentStart::Code(offer) => Ok((
            StatusCode::CREATED,
            [(header::CACHE_CONTROL, "no-store")],
            Json(enrollment_answer(&offer)?),
        )
            .into_response()),
        EnrollmentStart::StepUp(challenge, notified) => step_up_answer(*challenge, notified).await,
    }
}

impl EnrollmentAnswer {
    pub(super) fn set_action(&mut self, action: Action) {
        self.action = Some(action);
    }
}

pub(super) fn enrollment_answer(offer: &EnrollmentOffer) -> ApiResult<EnrollmentAnswer> {
    Ok(EnrollmentAnswer {
        action: None,
        code: offer.code.expose().to_owned(),
        uri: offer.uri.expose().to_owned(),
        expires_at: offer.expires_at,
        qr_svg: qr_svg(offer.uri.expose())?,
    })
}

#[derive(Deserialize)]
pub(super) struct Reauth {
    password: String,
}

/// Re-opens the window in which a first phone may be enrolled, for a console or support session.
pub(super) async fn reauth<S: ChallengeSession>(
    State(app): State<Arc<App>>,
    session: S,
    caller: Caller,
    ApiJson(body): ApiJson<Reauth>,
) -> ApiResult<StatusCode> {
    app.reauthenticate(session.session(), Secret::new(body.password), &caller)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn members(
    State(app): State<Arc<App>>,
    session: ConsoleSession,
) -> ApiResult<Json<serde_json::Value>> {
    let members: Vec<serde_json::Value> = app
        .members(&session)
        .await?
        .into_iter()
        .map(|m| {
            json!({
                "id": m.user.id,
                "email": m.user.email,
                "role": m.user.role,
                "devices": m.devices,
                "devices_last_seen_at": m.devices_last_seen_at.map(rfc3339),
                "last_sign_in_at": m.last_sign_in_at.map(rfc3339),
                "sso_linked": m.sso_linked,
            })
        })
        .collect();
    Ok(Json(json!({ "members": members })))
}

#[derive(Deserialize)]
struct Invite {
    email: String,
    role: Role,
    /// `password` (CONTRACT.md section 3a, the default) or `link` (issue 16).
    #[serde(default)]
    delivery: Delivery,
}

#[derive(Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Delivery {
    #[default]
    Password,
    Link,
}

/// 201 with the one-time password, or the invitation link, shown once: never cached.
async fn invite(
    State(app): State<Arc<App>>,
    session: ConsoleSession,
    caller: Caller,
    ApiJson(body): ApiJson<Invite>,
) -> ApiResult<Response> {
    let (user, invited) = app
        .invite_member(
            &session,
            &body.email,
            body.role,
            body.delivery == Delivery::Link,
            &caller,
        )
        .await?;
    let mut answer = json!({"id": user.id, "email": user.email, "role": user.role});
    match invited {
        Invited::Password(password) => answer["password"] = json!(password.expose()),
        Invited::Link { url, expires_at } => {
            answer["invitation_url"] = json!(url.expose());
            answer["expires_at"] = json!(rfc3339(expires_at));
        }
    }
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(answer),
    )
        .into_response())
}

#[derive(Deserialize)]
struct Acceptance {
    token: String,
    password: String,
}

/// `POST /v1/console/invitations/accept` (issue 16): the invitee's link and chosen password →
/// 200 and a console session, as a sign-in answers.
async fn accept_invitation(
    State(app): State<Arc<App>>,
    caller: Caller,
    ApiJson(body): ApiJson<Acceptance>,
) -> ApiResult<Response> {
    let signed_in = app
        .accept_invitation(
            &Secret::new(body.token),
            Secret::new(body.password),
            &caller,
        )
        .await?;
    let cookie = session_cookie(&app, Some(signed_in.session_id.expose()));
    let body = me(&app, &signed_in.user, &signed_in.workspace);
    Ok(([(header::SET_COOKIE, cookie)], Json(body)).into_response())
}

/// Member ids are integers; anything else names nobody.
fn member_id(id: &str) -> ApiResult<i64> {
    id.trim().parse().map_err(|_| ApiError::NotFound)
}

#[derive(Deserialize)]
struct RoleBody {
    role: Role,
}

async fn change_role(
    State(app): State<Arc<App>>,
    session: ConsoleSession,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RoleBody>,
) -> ApiResult<Response> {
    match app
        .change_role(&session, member_id(&id)?, body.role, &caller)
        .await?
    {
        RoleChange::Changed(user) => Ok(Json(
            json!({"id": user.id, "email": user.email, "role": user.role}),
        )
        .into_response()),
        RoleChange::StepUp(challenge, notified) => step_up_answer(*challenge, notified).await,
    }
}

async fn remove_member(
    State(app): State<Arc<App>>,
    session: ConsoleSession,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    app.remove_member(&session, member_id(&id)?, &caller)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn reset_member_devices(
    State(app): State<Arc<App>>,
    session: ConsoleSession,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (challenge, notified) = app
        .request_devices_reset(&session, member_id(&id)?, &caller)
        .await?;
    step_up_answer(challenge, notified).await
}

#[derive(Serialize)]
struct DeviceView {
    id: String,
    name: String,
    platform: &'static str,
    #[serde(serialize_with = "ser_rfc3339")]
    created_at: OffsetDateTime,
    #[serde(serialize_with = "ser_opt_rfc3339")]
    last_seen_at: Option<OffsetDateTime>,
    /// `ok`, `invalid` (the push service refused it; the phone's next refresh fixes it) or `none`.
    push_token_state: &'static str,
}

impl From<&Device> for DeviceView {
    fn from(d: &Device) -> Self {
        Self {
            id: d.id.clone(),
            name: d.name.clone(),
            platform: d.platform.as_str(),
            created_at: d.created_at,
            last_seen_at: d.last_seen_at,
            push_token_state: match (&d.push_token, d.push_token_invalid) {
                (None, _) => "none",
                (Some(_), true) => "invalid",
                (Some(_), false) => "ok",
            },
        }
    }
}

async fn list_devices(
    State(app): State<Arc<App>>,
    session: ConsoleSession,
) -> ApiResult<Json<serde_json::Value>> {
    device_list(&app, &session).await
}

/// The signed-in person's phones (a console user's or a staff member's).
pub(super) async fn device_list(
    app: &App,
    session: &ConsoleSession,
) -> ApiResult<Json<serde_json::Value>> {
    let devices = app.devices_of(session.user.id).await?;
    let views: Vec<DeviceView> = devices.iter().map(DeviceView::from).collect();
    Ok(Json(json!({ "devices": views })))
}

async fn remove_device(
    State(app): State<Arc<App>>,
    session: ConsoleSession,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    app.remove_device(&session, &id, &caller).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn step_up(
    app: &App,
    session: &ConsoleSession,
    action: Action,
    caller: &Caller,
) -> ApiResult<Response> {
    let (c, notified) = app.request_step_up(session, action, caller).await?;
    step_up_answer(c, notified).await
}

async fn reveal(
    State(app): State<Arc<App>>,
    session: ConsoleSession,
    caller: Caller,
) -> ApiResult<Response> {
    step_up(&app, &session, Action::Reveal, &caller).await
}

async fn rotate(
    State(app): State<Arc<App>>,
    session: ConsoleSession,
    caller: Caller,
) -> ApiResult<Response> {
    step_up(&app, &session, Action::Rotate, &caller).await
}

#[derive(Serialize)]
struct ReleasedView {
    token: String,
    action: Action,
    #[serde(serialize_with = "ser_rfc3339")]
    token_created_at: OffsetDateTime,
}

async fn release(
    State(app): State<Arc<App>>,
    session: ConsoleSession,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let body = match app.release(&id, &session, &caller).await? {
        Released::Token {
            token,
            action,
            token_created_at,
        } => json!(ReleasedView {
            token: token.expose().to_owned(),
            action,
            token_created_at,
        }),
        Released::Enrollment(offer) => {
            let mut answer = enrollment_answer(&offer)?;
            answer.set_action(Action::DeviceEnroll);
            json!(answer)
        }
        Released::DevicesReset { member_id, removed } => json!({
            "action": Action::MemberDevicesReset,
            "id": member_id,
            "devices_removed": removed,
        }),
        Released::Promoted { member_id, role } => json!({
            "action": Action::MemberPromote,
            "id": member_id,
            "role": role,
        }),
    };
    // A token or a code must not linger in any cache.
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

/// Read as text, so a bad value is a problem+json 400 naming it.
#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<String>,
    before: Option<String>,
    kind: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

fn query_time(name: &str, text: Option<&str>) -> ApiResult<Option<OffsetDateTime>> {
    text.map(|t| {
        OffsetDateTime::parse(t.trim(), &time::format_description::well_known::Rfc3339).map_err(
            |_| {
                ApiError::BadRequest(format!(
                    "{name} must be an RFC 3339 time such as 2026-11-28T12:00:00Z"
                ))
            },
        )
    })
    .transpose()
}

/// Newest first; `kind` an exact kind, `since <= at < until`, `before` an entry id (the next page).
async fn audit(
    State(app): State<Arc<App>>,
    session: ConsoleSession,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    if session.user.role < Role::Admin {
        return Err(ApiError::Forbidden(
            "only owners and admins may read the activity log",
        ));
    }
    let limit = match q.limit.as_deref() {
        None => 50,
        Some(t) => t
            .trim()
            .parse::<i64>()
            .map_err(|_| ApiError::BadRequest("limit must be a number from 1 to 200".into()))?
            .clamp(1, 200),
    };
    let filter = crate::store::AuditFilter {
        before_id: q
            .before
            .as_deref()
            .map(|t| t.trim().parse::<i64>())
            .transpose()
            .map_err(|_| ApiError::BadRequest("before must be an entry id".into()))?,
        kind: q.kind.filter(|k| !k.trim().is_empty()),
        since: query_time("since", q.since.as_deref())?,
        until: query_time("until", q.until.as_deref())?,
        limit,
    };
    let entries = app.store.audit_page(session.workspace.id, &filter).await?;
    let next_before = if entries.len() as i64 == limit {
        entries.last().map(|e| e.id)
    } else {
        None
    };
    let entries: Vec<_> = entries
        .into_iter()
        .map(|e| {
            json!({"id": e.id, "at": rfc3339(e.at), "kind": e.kind, "actor": e.actor, "ip": e.ip,
                   "device_id": e.device_id, "detail": e.detail, "seq": e.seq,
                   "prev_hash": e.prev_hash, "hash": e.hash})
        })
        .collect();
    Ok(Json(
        json!({ "entries": entries, "next_before": next_before }),
    ))
}

#[derive(Serialize)]
struct PolicyAnswer {
    #[serde(flatten)]
    policy: crate::domain::policy::Policy,
    /// While a rotation's grace period lasts: until when the replaced token still works.
    #[serde(serialize_with = "ser_opt_rfc3339")]
    old_token_valid_until: Option<OffsetDateTime>,
}

impl From<crate::service::policy::PolicyView> for PolicyAnswer {
    fn from(v: crate::service::policy::PolicyView) -> Self {
        Self {
            policy: v.policy,
            old_token_valid_until: v.old_token_valid_until,
        }
    }
}

async fn policy(
    State(app): State<Arc<App>>,
    session: ConsoleSession,
) -> ApiResult<Json<PolicyAnswer>> {
    Ok(Json(app.workspace_policy(&session).await?.into()))
}

async fn set_policy(
    State(app): State<Arc<App>>,
    session: ConsoleSession,
    caller: Caller,
    ApiJson(body): ApiJson<crate::domain::policy::Policy>,
) -> ApiResult<Json<PolicyAnswer>> {
    Ok(Json(
        app.set_workspace_policy(&session, body, &caller)
            .await?
            .into(),
    ))
}
