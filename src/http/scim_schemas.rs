//! `GET` and `PUT /v1/console/scim/schemas` (issue 15): the extension schemas a workspace's SCIM
//! clients may send, as RFC 7643 §7 definitions. Owners declare them, admins read them, members
//! are refused (403); a cross-site write is refused before this runs (`origin.rs`). A definition
//! RFC 7643 §7 does not allow is a problem+json 400 naming the schema and attribute at fault.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;
use std::sync::Arc;

use super::extract::ApiJson;
use crate::app::App;
use crate::error::ApiResult;
use crate::service::{Caller, ConsoleSession};

pub fn routes() -> Router<Arc<App>> {
    Router::new().route("/v1/console/scim/schemas", get(read).put(replace))
}

async fn read(State(app): State<Arc<App>>, session: ConsoleSession) -> ApiResult<Json<Value>> {
    Ok(Json(app.scim_schemas(&session).await?))
}

async fn replace(
    State(app): State<Arc<App>>,
    session: ConsoleSession,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    Ok(Json(app.put_scim_schemas(&session, &body, &caller).await?))
}
