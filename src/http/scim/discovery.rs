//! Discovery (RFC 7644 §4): `/ServiceProviderConfig`, `/ResourceTypes`, `/Schemas`, built by the
//! engine from the definitions it obeys, so what they announce is what it does: Assent's own
//! schemas, and the extension schemas the workspace declared.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use std::sync::Arc;

use axum::Extension;

use super::{scim_json, ScimWorkspace};
use crate::app::App;
use crate::scim::discovery;
use crate::scim::error::{clip, ScimError};

pub async fn service_provider_config(State(app): State<Arc<App>>) -> Response {
    scim_json(
        StatusCode::OK,
        discovery::service_provider_config(&app.config.scim_base_url(), None),
    )
}

pub async fn resource_types(
    State(app): State<Arc<App>>,
    Extension(ScimWorkspace(ws)): Extension<ScimWorkspace>,
) -> Result<Response, ScimError> {
    let declared = app.scim_declared(ws.id).await?;
    Ok(scim_json(
        StatusCode::OK,
        discovery::resource_types(&app.config.scim_base_url(), &declared),
    ))
}

pub async fn resource_type(
    State(app): State<Arc<App>>,
    Extension(ScimWorkspace(ws)): Extension<ScimWorkspace>,
    Path(name): Path<String>,
) -> Result<Response, ScimError> {
    let declared = app.scim_declared(ws.id).await?;
    let doc = discovery::resource_type(&name, &app.config.scim_base_url(), &declared)
        .ok_or_else(|| ScimError::NotFound(format!("no resource type '{}'", clip(&name))))?;
    Ok(scim_json(StatusCode::OK, doc))
}

pub async fn schemas(
    State(app): State<Arc<App>>,
    Extension(ScimWorkspace(ws)): Extension<ScimWorkspace>,
) -> Result<Response, ScimError> {
    let declared = app.scim_declared(ws.id).await?;
    Ok(scim_json(
        StatusCode::OK,
        discovery::schemas(&app.config.scim_base_url(), &declared),
    ))
}

pub async fn schema(
    State(app): State<Arc<App>>,
    Extension(ScimWorkspace(ws)): Extension<ScimWorkspace>,
    Path(id): Path<String>,
) -> Result<Response, ScimError> {
    let declared = app.scim_declared(ws.id).await?;
    let doc = discovery::schema(&id, &app.config.scim_base_url(), &declared)
        .ok_or_else(|| ScimError::NotFound(format!("no schema '{}'", clip(&id))))?;
    Ok(scim_json(StatusCode::OK, doc))
}
