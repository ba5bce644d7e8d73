//! A challenge as the session that asked follows it, console and support alike (CONTRACT.md
//! sections 3 and 8): the 202 that starts it, its state, and its event stream.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{Stream, StreamExt};
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;
use time::OffsetDateTime;

use super::extract::ChallengeSession;
use crate::app::App;
use crate::clock::ser_rfc3339;
use crate::domain::challenge::{Action, Challenge, Status};
use crate::error::ApiResult;
use crate::service::watch::Seen;
use crate::streams::OpenStream;

#[derive(Serialize)]
struct ChallengeCreated {
    challenge_id: String,
    number: u8,
    #[serde(serialize_with = "ser_rfc3339")]
    expires_at: OffsetDateTime,
    notified_devices: usize,
}

/// 202 for a new challenge: its id, the number to show, and how many phones were pushed.
pub(super) async fn step_up_answer(c: Challenge, notified: usize) -> ApiResult<Response> {
    let answer = ChallengeCreated {
        challenge_id: c.id,
        number: c.number,
        expires_at: c.expires_at,
        notified_devices: notified,
    };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

#[derive(Serialize)]
pub struct ChallengeView {
    id: String,
    action: Action,
    status: Status,
    #[serde(serialize_with = "ser_rfc3339")]
    expires_at: OffsetDateTime,
    /// `second_approval` while a pending challenge waits for the two-person rule's second person.
    #[serde(skip_serializing_if = "Option::is_none")]
    awaiting: Option<&'static str>,
}

impl From<&Challenge> for ChallengeView {
    fn from(c: &Challenge) -> Self {
        let seen = Seen::of(c);
        Self {
            id: c.id.clone(),
            action: c.action,
            status: seen.status,
            expires_at: c.expires_at,
            awaiting: seen.awaiting,
        }
    }
}

pub(super) async fn challenge<S: ChallengeSession>(
    State(app): State<Arc<App>>,
    session: S,
    Path(id): Path<String>,
) -> ApiResult<Json<ChallengeView>> {
    let c = app
        .challenge_of_session(&id, &session.session().id_hash)
        .await?;
    Ok(Json(ChallengeView::from(&c)))
}

fn status_event(seen: Seen) -> Event {
    let data = match seen.awaiting {
        None => json!({ "status": seen.status.as_str() }),
        Some(what) => json!({ "status": seen.status.as_str(), "awaiting": what }),
    };
    Event::default().event("status").data(data.to_string())
}

/// `text/event-stream` of `App::watch`: `event: status` at once and at every change; the stream
/// closes once there is nothing more to wait for.
pub(super) async fn events<S: ChallengeSession>(
    State(app): State<Arc<App>>,
    session: S,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>>> {
    let session_hash = session.session().id_hash.clone();
    // Its place under the stream caps first (429 beyond them), before any work for the stream.
    let open = OpenStream::new(
        app.streams.clone(),
        app.metrics.sse_streams_open.clone(),
        &session_hash,
    )?;
    let watch = app.watch(&id, &session_hash).await?;
    let stream = watch.map(move |seen| {
        // The stream holds its place for as long as it lives.
        let _held = &open;
        Ok(status_event(seen))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15))))
}
