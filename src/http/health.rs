//! Liveness, readiness and Prometheus metrics (CONTRACT.md section 7).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;

use crate::app::App;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the database and the challenge store answer, and the bus carries other instances'
/// changes here (on Redis, its subscription is up).
async fn readyz(State(app): State<Arc<App>>) -> Response {
    let database = app.store.ping().await.is_ok();
    let challenges = app.challenges.ping().await.is_ok();
    let bus = app.bus.listening();
    let status = if database && challenges && bus {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    (
        status,
        Json(json!({
            "database": word(database),
            "challenge_store": word(challenges),
            "bus": word(bus),
        })),
    )
        .into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}
