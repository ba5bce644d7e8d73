//! A workspace's declared SCIM extension schemas (issue 15): read and replaced from the console
//! (`GET`/`PUT /v1/console/scim/schemas`), loaded for `/Schemas`, `/ResourceTypes` and every SCIM
//! write that must obey them (`crate::scim::declared`).

use serde_json::{json, Value};

use crate::app::App;
use crate::domain::audit::Kind;
use crate::error::{ApiError, ApiResult};
use crate::scim::declared::{parse_definitions, Declared};
use crate::scim::error::ScimError;
use crate::service::audit::Audit;
use crate::service::{Caller, ConsoleSession};
use crate::store::{Role, StoreError};

impl App {
    /// The workspace's declared schemas, for the SCIM surface.
    pub async fn scim_declared(&self, workspace_id: i64) -> Result<Declared, ScimError> {
        let stored = self
            .scim
            .declared_schemas(workspace_id)
            .await
            .map_err(|e| match e {
                StoreError::Unavailable(cause) => {
                    tracing::error!(%cause, "SCIM store error");
                    ScimError::Unavailable
                }
                StoreError::Conflict => ScimError::Internal,
            })?;
        let Some(text) = stored else {
            return Ok(Declared::default());
        };
        // Written by `put_scim_schemas` after the same parse: a failure here is a damaged row.
        let parsed = serde_json::from_str::<Value>(&text)
            .map_err(|e| e.to_string())
            .and_then(|v| parse_definitions(&v));
        parsed.map_err(|cause| {
            tracing::error!(%cause, workspace_id, "stored SCIM schema definitions do not parse");
            ScimError::Internal
        })
    }

    /// `GET /v1/console/scim/schemas`: owners and admins.
    pub async fn scim_schemas(&self, session: &ConsoleSession) -> ApiResult<Value> {
        if session.user.role < Role::Admin {
            return Err(ApiError::Forbidden(
                "only owners and admins may read the SCIM schemas",
            ));
        }
        let stored = self.scim.declared_schemas(session.workspace.id).await?;
        let declared = match stored {
            None => Declared::default(),
            Some(text) => serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| parse_definitions(&v).ok())
                .unwrap_or_default(),
        };
        Ok(declared.to_json())
    }

    /// `PUT /v1/console/scim/schemas`: owners only. The body replaces every declared schema; a
    /// definition RFC 7643 §7 does not allow is 400 naming the schema and attribute at fault, and
    /// nothing changes.
    pub async fn put_scim_schemas(
        &self,
        session: &ConsoleSession,
        body: &Value,
        caller: &Caller,
    ) -> ApiResult<Value> {
        if session.user.role != Role::Owner {
            return Err(ApiError::Forbidden("only owners may declare SCIM schemas"));
        }
        let declared = parse_definitions(body).map_err(ApiError::BadRequest)?;
        let stored = declared.to_json();
        let ids: Vec<&str> = declared.0.iter().map(|s| s.id.as_str()).collect();
        // On record before it happens, as every change an owner makes (503 and nothing changed
        // when the audit log cannot be written).
        self.record(
            Audit::new(Kind::ScimSchemasDeclared)
                .workspace(session.workspace.id)
                .actor(&session.user.email)
                .ip(&caller.ip)
                .detail(json!({"schemas": ids})),
        )
        .await?;
        self.scim
            .put_declared_schemas(session.workspace.id, &stored.to_string(), self.now())
            .await?;
        Ok(stored)
    }
}
