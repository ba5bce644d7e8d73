//! Records every SCIM request a workspace's token opened in the provisioning log: time, method,
//! path, resource, status, `scimType`, latency and a short detail. Never the token (the
//! `Authorization` header is not read here), never a query string (filters carry personal data),
//! never a body. A request refused for its token belongs to no workspace: it is only counted.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;
use std::time::Instant;

use super::{LogNote, ScimWorkspace, PREFIX};
use crate::app::App;
use crate::store::scim::LogRecord;

const MAX_PATH: usize = 300;
const MAX_DETAIL: usize = 200;

pub async fn record(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let at = app.now();
    let method = crate::http::method_label(request.method()).to_owned();
    let path: String = request.uri().path().chars().take(MAX_PATH).collect();
    let ip = crate::http::extract::client_ip(request.extensions(), request.headers(), &app);
    let mut response = next.run(request).await;
    let Some(ScimWorkspace(workspace)) = response.extensions_mut().remove::<ScimWorkspace>() else {
        if response.status() == StatusCode::UNAUTHORIZED {
            app.provisioning.count_refused(&ip);
        }
        return response;
    };
    let note = response
        .extensions()
        .get::<LogNote>()
        .cloned()
        .unwrap_or_default();
    let (resource_type, path_id) = resource_of(&path);
    let detail = match (note.subject, note.detail) {
        (Some(s), Some(d)) => Some(format!("{s}: {d}")),
        (s, d) => s.or(d),
    };
    app.provisioning
        .record(LogRecord {
            workspace_id: workspace.id,
            at,
            method,
            resource_type: resource_type.map(str::to_owned),
            resource_id: note.resource_id.or(path_id),
            status: response.status().as_u16(),
            scim_type: note.scim_type.map(str::to_owned),
            latency_us: i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX),
            detail: detail.map(|d| d.chars().take(MAX_DETAIL).collect()),
            path,
        })
        .await;
    response
}

/// The resource type and id a path names: `/v1/scim/v2/Users/{id}` → (User, id).
fn resource_of(path: &str) -> (Option<&'static str>, Option<String>) {
    let mut parts = path
        .strip_prefix(PREFIX)
        .unwrap_or_default()
        .trim_start_matches('/')
        .split('/');
    let kind = match parts.next() {
        Some("Users") => Some("User"),
        Some("Groups") => Some("Group"),
        _ => None,
    };
    let id = parts
        .next()
        .filter(|s| kind.is_some() && !s.is_empty() && *s != ".search")
        .map(str::to_owned);
    (kind, id)
}

#[cfg(test)]
mod tests {
    use super::resource_of;

    #[test]
    fn paths_name_their_resource() {
        assert_eq!(
            resource_of("/v1/scim/v2/Users/abc"),
            (Some("User"), Some("abc".into()))
        );
        assert_eq!(resource_of("/v1/scim/v2/Groups"), (Some("Group"), None));
        assert_eq!(
            resource_of("/v1/scim/v2/Groups/.search"),
            (Some("Group"), None)
        );
        assert_eq!(resource_of("/v1/scim/v2/Schemas/x"), (None, None));
    }
}
