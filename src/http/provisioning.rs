//! `GET /v1/console/provisioning-log` (issue 3) and `GET /v1/console/provisioning-summary`
//! (issue 16): the workspace's SCIM requests, newest first, for
//! its owners and admins, so they see which users and groups were provisioned and which failed.
//!
//! Query: `limit` (1–200, default 50), `before` (an entry id: the next page), `status`
//! (`success` = below 400, `failure` = 400 and above, a class such as `4xx`, or one code such as
//! `409`).

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

use crate::app::App;
use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::service::ConsoleSession;
use crate::store::scim::StatusRange;
use crate::store::Role;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/console/provisioning-log", get(page))
        .route("/v1/console/provisioning-summary", get(summary))
}

fn may_read(session: &ConsoleSession) -> ApiResult<()> {
    if session.user.role < Role::Admin {
        return Err(ApiError::Forbidden(
            "only owners and admins may read the provisioning log",
        ));
    }
    Ok(())
}

/// `GET /v1/console/provisioning-summary` (issue 16): the last 24 hours' SCIM requests and
/// failures, and when a client (Entra ID) last called.
async fn summary(State(app): State<Arc<App>>, session: ConsoleSession) -> ApiResult<Json<Value>> {
    may_read(&session)?;
    let s = app.provisioning_summary(session.workspace.id).await?;
    Ok(Json(json!({
        "since": rfc3339(s.since),
        "requests_24h": s.requests,
        "failures_24h": s.failures,
        "last_request_at": s.last_request_at.map(rfc3339),
    })))
}

/// Read as text, so a bad value is a problem+json 400 naming it.
#[derive(Deserialize)]
struct LogQuery {
    limit: Option<String>,
    before: Option<String>,
    status: Option<String>,
}

fn status_range(text: Option<&str>) -> Option<StatusRange> {
    let text = match text.map(str::trim) {
        None | Some("") | Some("all") => return Some(StatusRange::ALL),
        Some(t) => t.to_ascii_lowercase(),
    };
    match text.as_str() {
        "success" => Some(StatusRange { from: 0, to: 399 }),
        "failure" => Some(StatusRange { from: 400, to: 999 }),
        t if t.len() == 3 && t.ends_with("xx") => {
            let class = t[..1].parse::<u16>().ok().filter(|c| (1..=5).contains(c))?;
            Some(StatusRange {
                from: class * 100,
                to: class * 100 + 99,
            })
        }
        t => {
            let code = t.parse::<u16>().ok().filter(|c| (100..=599).contains(c))?;
            Some(StatusRange {
                from: code,
                to: code,
            })
        }
    }
}

async fn page(
    State(app): State<Arc<App>>,
    session: ConsoleSession,
    Query(q): Query<LogQuery>,
) -> ApiResult<Json<Value>> {
    may_read(&session)?;
    let limit = match q.limit.as_deref() {
        None => 50,
        Some(t) => t
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=200).contains(n))
            .ok_or_else(|| ApiError::BadRequest("limit must be a number from 1 to 200".into()))?,
    };
    let before = q
        .before
        .as_deref()
        .map(|t| t.trim().parse::<i64>())
        .transpose()
        .map_err(|_| ApiError::BadRequest("before must be an entry id".into()))?;
    let status = status_range(q.status.as_deref()).ok_or_else(|| {
        ApiError::BadRequest(
            "status must be success, failure, a class such as 4xx, or a status code".into(),
        )
    })?;
    let entries = app
        .provisioning_log(session.workspace.id, before, status, limit)
        .await?;
    let next_before = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            let r = e.record;
            json!({
                "id": e.id,
                "at": rfc3339(r.at),
                "method": r.method,
                "path": r.path,
                "resource_type": r.resource_type,
                "resource_id": r.resource_id,
                "status": r.status,
                "scim_type": r.scim_type,
                "latency_ms": r.latency_us as f64 / 1000.0,
                "detail": r.detail,
            })
        })
        .collect();
    Ok(Json(
        json!({ "entries": entries, "next_before": next_before }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_filters() {
        assert_eq!(status_range(None), Some(StatusRange::ALL));
        assert_eq!(
            status_range(Some("success")),
            Some(StatusRange { from: 0, to: 399 })
        );
        assert_eq!(
            status_range(Some("FAILURE")),
            Some(StatusRange { from: 400, to: 999 })
        );
        assert_eq!(
            status_range(Some("4xx")),
            Some(StatusRange { from: 400, to: 499 })
        );
        assert_eq!(
            status_range(Some("409")),
            Some(StatusRange { from: 409, to: 409 })
        );
        for bad in ["9xx", "x", "1000", "4x", "-1"] {
            assert_eq!(status_range(Some(bad)), None, "{bad}");
        }
    }
}
