//! `/Users` and `/Groups` (RFC 7644 §3.3–§3.6, §3.4.3) and the root `/.search`: one set of handlers,
//! the resource kind given by the route.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde_json::Value;
use std::sync::Arc;

use super::{scim_json, LogNote, ScimBody, ScimWorkspace, PREFIX};
use crate::app::App;
use crate::scim::error::{clip, ScimError};
use crate::scim::list::ListRequest;
use crate::scim::meta::etag_matches;
use crate::scim::projection::Projection;
use crate::scim::schema::ResourceKind;
use crate::service::scim::ScimResource;

pub fn routes(kind: ResourceKind) -> Router<Arc<App>> {
    let endpoint = format!("{PREFIX}{}", kind.resource_type().endpoint);
    Router::new()
        .route(&endpoint, get(list).post(create))
        .route(&format!("{endpoint}/.search"), post(search))
        .route(
            &format!("{endpoint}/{{id}}"),
            get(read).put(replace).patch(update).delete(remove),
        )
        .layer(Extension(kind))
}

/// The decoded query pairs (`+` is a space: Entra's Test Connection sends
/// `filter=userName+eq+%22…%22`).
fn query_pairs(raw: Option<String>) -> Vec<(String, String)> {
    raw.map(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect()
    })
    .unwrap_or_default()
}

/// `attributes` / `excludedAttributes` of a request about one resource.
fn projection(raw: Option<String>) -> Result<Projection, ScimError> {
    let pairs = query_pairs(raw);
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    Projection::parse(get("attributes"), get("excludedAttributes"))
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Whom a POST or PUT body is about, for the provisioning log.
fn subject_of(body: &Value) -> Option<String> {
    let obj = body.as_object()?;
    ["userName", "displayName"].iter().find_map(|name| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_str())
            .map(|s| clip(s).to_owned())
    })
}

fn one(status: StatusCode, r: ScimResource) -> Response {
    let etag = r.etag();
    let mut response = scim_json(status, r.body);
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    if status == StatusCode::CREATED {
        if let Ok(v) = HeaderValue::from_str(&r.location) {
            headers.insert(header::LOCATION, v);
        }
    }
    response.extensions_mut().insert(LogNote {
        resource_id: Some(r.id),
        subject: r.display,
        ..LogNote::default()
    });
    response
}

/// The answer, with what the request was about noted for the log even when it failed.
fn answer(result: Result<Response, ScimError>, subject: Option<String>) -> Response {
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    if let Some(s) = subject {
        let mut note = response
            .extensions_mut()
            .remove::<LogNote>()
            .unwrap_or_default();
        note.subject.get_or_insert(s);
        response.extensions_mut().insert(note);
    }
    response
}

async fn list(
    State(app): State<Arc<App>>,
    Extension(kind): Extension<ResourceKind>,
    Extension(ScimWorkspace(ws)): Extension<ScimWorkspace>,
    RawQuery(raw): RawQuery,
) -> Response {
    let run = async {
        let pairs = query_pairs(raw);
        let req = ListRequest::from_query(
            pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            kind.resource_type(),
        )?;
        let body = app.scim_list(&ws, kind, &req).await?;
        Ok(scim_json(StatusCode::OK, body))
    };
    answer(run.await, None)
}

async fn search(
    State(app): State<Arc<App>>,
    Extension(kind): Extension<ResourceKind>,
    Extension(ScimWorkspace(ws)): Extension<ScimWorkspace>,
    ScimBody(body): ScimBody,
) -> Response {
    let run = async {
        let req = ListRequest::from_search(&body, kind.resource_type())?;
        let body = app.scim_list(&ws, kind, &req).await?;
        Ok(scim_json(StatusCode::OK, body))
    };
    answer(run.await, None)
}

pub async fn search_all(
    State(app): State<Arc<App>>,
    Extension(ScimWorkspace(ws)): Extension<ScimWorkspace>,
    ScimBody(body): ScimBody,
) -> Response {
    answer(
        app.scim_search_all(&ws, &body)
            .await
            .map(|body| scim_json(StatusCode::OK, body)),
        None,
    )
}

async fn read(
    State(app): State<Arc<App>>,
    Extension(kind): Extension<ResourceKind>,
    Extension(ScimWorkspace(ws)): Extension<ScimWorkspace>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let run = async {
        let r = app.scim_get(&ws, kind, &id, &projection(raw)?).await?;
        // RFC 7644 §3.14: a GET whose If-None-Match names the current version.
        if header_text(&headers, header::IF_NONE_MATCH).is_some_and(|h| etag_matches(&h, &r.etag()))
        {
            let mut response = StatusCode::NOT_MODIFIED.into_response();
            if let Ok(v) = HeaderValue::from_str(&r.etag()) {
                response.headers_mut().insert(header::ETAG, v);
            }
            return Ok(response);
        }
        Ok(one(StatusCode::OK, r))
    };
    answer(run.await, None)
}

async fn create(
    State(app): State<Arc<App>>,
    Extension(kind): Extension<ResourceKind>,
    Extension(ScimWorkspace(ws)): Extension<ScimWorkspace>,
    RawQuery(raw): RawQuery,
    ScimBody(body): ScimBody,
) -> Response {
    let run = async {
        let r = app.scim_create(&ws, kind, &body, &projection(raw)?).await?;
        Ok(one(StatusCode::CREATED, r))
    };
    answer(run.await, subject_of(&body))
}

async fn replace(
    State(app): State<Arc<App>>,
    Extension(kind): Extension<ResourceKind>,
    Extension(ScimWorkspace(ws)): Extension<ScimWorkspace>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    ScimBody(body): ScimBody,
) -> Response {
    let run = async {
        let if_match = header_text(&headers, header::IF_MATCH);
        let r = app
            .scim_replace(&ws, kind, &id, &body, if_match, &projection(raw)?)
            .await?;
        Ok(one(StatusCode::OK, r))
    };
    let subject = subject_of(&body);
    with_id(answer(run.await, subject), id)
}

async fn update(
    State(app): State<Arc<App>>,
    Extension(kind): Extension<ResourceKind>,
    Extension(ScimWorkspace(ws)): Extension<ScimWorkspace>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    ScimBody(body): ScimBody,
) -> Response {
    let run = async {
        let if_match = header_text(&headers, header::IF_MATCH);
        let projection = projection(raw)?;
        let r = app
            .scim_patch(&ws, kind, &id, body, if_match, &projection)
            .await?;
        Ok(one(StatusCode::OK, r))
    };
    with_id(answer(run.await, None), id)
}

async fn remove(
    State(app): State<Arc<App>>,
    Extension(kind): Extension<ResourceKind>,
    Extension(ScimWorkspace(ws)): Extension<ScimWorkspace>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let if_match = header_text(&headers, header::IF_MATCH);
    let result = app
        .scim_delete(&ws, kind, &id, if_match.as_deref())
        .await
        .map(|()| StatusCode::NO_CONTENT.into_response());
    with_id(answer(result, None), id)
}

/// Notes the resource a request addressed by id, whatever its answer.
fn with_id(mut response: Response, id: String) -> Response {
    let mut note = response
        .extensions_mut()
        .remove::<LogNote>()
        .unwrap_or_default();
    note.resource_id.get_or_insert(id);
    response.extensions_mut().insert(note);
    response
}
