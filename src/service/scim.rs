//! The SCIM service provider's use cases (RFC 7644), as methods on `App`: each runs a request the
//! handler parsed through the engine (`crate::scim`) and the `ScimStore`, and returns the SCIM
//! representation to send. See `crate::scim`'s module docs for the request-by-request recipe.

use std::collections::HashMap;

use serde_json::Value;

use crate::app::App;
use crate::scim::core_schemas::ENTERPRISE_USER_URN;
use crate::scim::declared::{Declared, Prior};
use crate::scim::error::{clip, ScimError};
use crate::scim::eval::matches;
use crate::scim::filter::Filter;
use crate::scim::list::{list_response, ListRequest, PageWindow, Sort};
use crate::scim::members::GroupMembershipDelta;
use crate::scim::meta::{etag_matches, meta_json, weak_etag};
use crate::scim::patch::apply_patch;
use crate::scim::projection::Projection;
use crate::scim::resource::{
    attach_references, index_columns, normalise, IndexColumns, Normalised, Reference, References,
};
use crate::scim::schema::{ResourceKind, ResourceType};
use crate::scim::sql::{plan, sort_column, SqlPlan};
use crate::store::scim::{Change, Columns, Deleted, Edit, NewResource, StoredResource, Written};
use crate::store::{StoreError, Workspace};

/// Rows read per round trip when a listing has to look at documents (a filter or sort the
/// columns cannot answer): memory stays bounded by this and the page, whatever the workspace size.
const SCAN_BATCH: u32 = 500;

/// A resource as answered: its projected representation and what the headers need.
#[derive(Debug)]
pub struct ScimResource {
    pub id: String,
    pub version: i64,
    pub location: String,
    pub body: Value,
    /// `userName` or `displayName`, for the provisioning log.
    pub display: Option<String>,
}

impl ScimResource {
    pub fn etag(&self) -> String {
        weak_etag(self.version as u64)
    }
}

fn store_error(e: StoreError, kind: ResourceKind) -> ScimError {
    match e {
        StoreError::Conflict => ScimError::Uniqueness(match kind {
            ResourceKind::User => "userName is already taken in this workspace".into(),
            ResourceKind::Group => "displayName is already taken in this workspace".into(),
        }),
        StoreError::Unavailable(cause) => {
            tracing::error!(%cause, "SCIM store error");
            ScimError::Unavailable
        }
    }
}

fn not_found(kind: ResourceKind) -> ScimError {
    ScimError::NotFound(format!("no {} with this id", kind.resource_type().name))
}

fn missing_reference(id: &str) -> ScimError {
    // An id is the service provider's own identifier, not a submitted value worth hiding.
    ScimError::invalid_value(format!(
        "'{}' is not the id of a resource in this workspace",
        clip(id)
    ))
}

fn precondition_failed() -> ScimError {
    ScimError::PreconditionFailed("the resource has changed since that version".into())
}

/// 412 unless `If-Match` (when sent) names the current version (RFC 7644 §3.14).
fn check_if_match(if_match: Option<&str>, version: i64) -> Result<(), ScimError> {
    match if_match {
        Some(h) if !etag_matches(h, &weak_etag(version as u64)) => Err(precondition_failed()),
        _ => Ok(()),
    }
}

/// What references to a resource show: `displayName`, else a User's `userName`.
fn display_of(document: &Value) -> Option<String> {
    ["displayName", "userName"]
        .iter()
        .find_map(|k| document.get(*k).and_then(Value::as_str))
        .map(str::to_owned)
}

/// The manager a User's document names, as a reference (for its `$ref`).
fn manager_of(document: &Value) -> Option<Reference> {
    let id = document
        .get(ENTERPRISE_USER_URN)?
        .get("manager")?
        .get("value")?
        .as_str()?;
    Some(Reference {
        id: id.to_owned(),
        kind: ResourceKind::User,
        display: None,
    })
}

/// Applies the workspace's declared extension schemas to a document about to be stored, and
/// recomputes its index columns when that changed a value (a coerced boolean, say).
fn declare(
    declared: &Declared,
    kind: ResourceKind,
    document: &mut Value,
    index: &mut IndexColumns,
    prior: Prior<'_>,
) -> Result<(), ScimError> {
    if declared.of(kind).next().is_none() {
        return Ok(());
    }
    let before = document.clone();
    declared.enforce(kind, document, prior)?;
    if *document != before {
        // An extension left empty (only readOnly values were sent) leaves `schemas` too.
        if let Some(obj) = document.as_object_mut() {
            let present: Vec<Value> = obj
                .get("schemas")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
                .filter(|(i, u)| *i == 0 || u.as_str().is_some_and(|u| obj.contains_key(u)))
                .map(|(_, u)| u.clone())
                .collect();
            obj.insert("schemas".into(), Value::Array(present));
        }
        *index = index_columns(document, kind.resource_type());
    }
    Ok(())
}

/// A PUT body without `active` keeps the stored one (see `App::scim_replace`).
fn keep_active(n: &mut Normalised, current: &Value) {
    let Some(active) = current.get("active").filter(|a| a.is_boolean()) else {
        return;
    };
    if let Some(doc) = n.document.as_object_mut() {
        if !doc.contains_key("active") {
            doc.insert("active".into(), active.clone());
            n.index = index_columns(&n.document, ResourceKind::User.resource_type());
        }
    }
}

/// A new resource id: a random (version 4) UUID, lower-case and hyphenated.
fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The attribute holding a resource's references: a Group's `members`, a User's `groups`. (A
/// manager needs nothing loaded: its `$ref` follows from its id, and the store says with each row
/// whether that id names a User.)
fn refs_attr(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::Group => "members",
        ResourceKind::User => "groups",
    }
}

/// Whether the answer shows the references.
fn shows_refs(kind: ResourceKind, projection: &Projection) -> bool {
    projection.wants(kind.resource_type(), refs_attr(kind))
}

/// Whether a filter or sort reads them.
fn reads_refs(kind: ResourceKind, filter: Option<&Filter>, sort: Option<&Sort>) -> bool {
    let name = refs_attr(kind);
    filter.is_some_and(|f| f.mentions(name))
        || sort.is_some_and(|s| s.by.name.eq_ignore_ascii_case(name))
}

impl App {
    /// The declared schemas a POST or PUT body must obey: none to load when it carries no
    /// extension Assent does not define.
    async fn scim_declared_for(
        &self,
        workspace: &Workspace,
        document: &Value,
    ) -> Result<Declared, ScimError> {
        let carries = document
            .as_object()
            .is_some_and(|o| crate::scim::extension::custom_keys(o).next().is_some());
        if carries {
            self.scim_declared(workspace.id).await
        } else {
            Ok(Declared::default())
        }
    }

    fn scim_base(&self) -> String {
        self.config.scim_base_url()
    }

    /// The references of these resources, by id.
    async fn scim_refs(
        &self,
        workspace_id: i64,
        kind: ResourceKind,
        ids: Vec<String>,
    ) -> Result<HashMap<String, Vec<Reference>>, ScimError> {
        let mut refs: HashMap<String, Vec<Reference>> = HashMap::new();
        if ids.is_empty() {
            return Ok(refs);
        }
        let links = self
            .scim
            .refs_of(workspace_id, kind, &ids)
            .await
            .map_err(|e| store_error(e, kind))?;
        for link in links {
            refs.entry(link.from).or_default().push(link.to);
        }
        Ok(refs)
    }

    /// The full representation: document, `id`, `meta`, the manager's `$ref`, and the members or
    /// groups when they were read.
    fn scim_represent(&self, kind: ResourceKind, r: StoredResource) -> Value {
        let base = self.scim_base();
        let meta = meta_json(
            kind.resource_type(),
            &r.id,
            r.created,
            r.last_modified,
            r.version as u64,
            &base,
        );
        self.scim_attach(
            kind,
            r.document,
            &r.id,
            meta,
            r.refs.as_deref(),
            r.manager_found,
        )
    }

    /// `manager_found`: the manager names a User of the workspace, so it shows a `$ref`; one that
    /// names nobody is shown as sent (issue 15).
    fn scim_attach(
        &self,
        kind: ResourceKind,
        document: Value,
        id: &str,
        meta: Value,
        refs: Option<&[Reference]>,
        manager_found: bool,
    ) -> Value {
        let (members, groups) = match kind {
            ResourceKind::Group => (refs, None),
            ResourceKind::User => (None, refs),
        };
        let manager = manager_of(&document).filter(|_| manager_found);
        attach_references(
            document,
            id,
            meta,
            &References {
                members,
                groups,
                manager: manager.as_ref(),
            },
            &self.scim_base(),
        )
    }

    /// One resource as answered to GET, POST, PUT or PATCH.
    async fn scim_single(
        &self,
        workspace: &Workspace,
        kind: ResourceKind,
        mut r: StoredResource,
        projection: &Projection,
    ) -> Result<ScimResource, ScimError> {
        let rt = kind.resource_type();
        if r.refs.is_none() && shows_refs(kind, projection) {
            let mut refs = self
                .scim_refs(workspace.id, kind, vec![r.id.clone()])
                .await?;
            r.refs = Some(refs.remove(&r.id).unwrap_or_default());
        }
        let display = display_of(&r.document);
        let (id, version) = (r.id.clone(), r.version);
        let full = self.scim_represent(kind, r);
        Ok(ScimResource {
            location: crate::scim::meta::location(rt, &id, &self.scim_base()),
            body: projection.apply(full, rt),
            display,
            id,
            version,
        })
    }

    pub async fn scim_get(
        &self,
        workspace: &Workspace,
        kind: ResourceKind,
        id: &str,
        projection: &Projection,
    ) -> Result<ScimResource, ScimError> {
        let r = self
            .scim
            .get(workspace.id, kind, id, shows_refs(kind, projection))
            .await
            .map_err(|e| store_error(e, kind))?
            .ok_or_else(|| not_found(kind))?;
        self.scim_single(workspace, kind, r, projection).await
    }

    /// `POST /Users`, `POST /Groups` (RFC 7644 §3.3).
    pub async fn scim_create(
        &self,
        workspace: &Workspace,
        kind: ResourceKind,
        body: &Value,
        projection: &Projection,
    ) -> Result<ScimResource, ScimError> {
        // Nobody waits for the answer: begin no write for them (the provisioning log says 503).
        if crate::cancel::client_left() {
            return Err(ScimError::Unavailable);
        }
        let mut n = normalise(body, kind.resource_type())?;
        let declared = self.scim_declared_for(workspace, &n.document).await?;
        declare(
            &declared,
            kind,
            &mut n.document,
            &mut n.index,
            Prior::Nothing,
        )?;
        let new = NewResource {
            id: new_id(),
            columns: Columns {
                display: display_of(&n.document),
                index: n.index,
                manager_id: n.manager_id,
            },
            unique: declared.unique_values(kind, &n.document, None),
            document: n.document,
            members: n.members,
            member_displays: n.member_displays,
        };
        let written = self
            .scim
            .create(workspace.id, kind, new, self.now())
            .await
            .map_err(|e| store_error(e, kind))?;
        let r = self.scim_written(kind, written)?;
        self.scim_single(workspace, kind, r, projection).await
    }

    fn scim_written(
        &self,
        kind: ResourceKind,
        written: Written,
    ) -> Result<StoredResource, ScimError> {
        match written {
            Written::Done(r) => Ok(r),
            Written::NotFound => Err(not_found(kind)),
            Written::MissingReference(id) => Err(missing_reference(&id)),
            Written::Refused(e) => Err(e),
            Written::Taken(value) => Err(ScimError::Uniqueness(format!(
                "'{}' is unique, and another {} of this workspace holds that value",
                value.name(),
                kind.resource_type().name
            ))),
        }
    }

    async fn scim_update(
        &self,
        workspace: &Workspace,
        kind: ResourceKind,
        id: &str,
        edit: Edit,
        projection: &Projection,
    ) -> Result<ScimResource, ScimError> {
        let written = self
            .scim
            .update(workspace.id, kind, id, edit, self.now())
            .await
            .map_err(|e| store_error(e, kind))?;
        let r = self.scim_written(kind, written)?;
        self.scim_single(workspace, kind, r, projection).await
    }

    /// `PUT` (RFC 7644 §3.5.1): the resource becomes the body; a Group's members exactly its
    /// `members`. One exception (issue 15): a User's PUT without `active` leaves `active` as it
    /// was. Okta updates profiles with GET + full PUT of the attributes it maps, and a mapping
    /// without `active` must not clear the deactivation Okta made with a PATCH.
    pub async fn scim_replace(
        &self,
        workspace: &Workspace,
        kind: ResourceKind,
        id: &str,
        body: &Value,
        if_match: Option<String>,
        projection: &Projection,
    ) -> Result<ScimResource, ScimError> {
        // Nobody waits for the answer: begin no write for them (the provisioning log says 503).
        if crate::cancel::client_left() {
            return Err(ScimError::Unavailable);
        }
        let body = normalise(body, kind.resource_type())?;
        let declared = self.scim_declared_for(workspace, &body.document).await?;
        let edit: Edit = Box::new(move |current| {
            check_if_match(if_match.as_deref(), current.version)?;
            let mut n = body.clone();
            if kind == ResourceKind::User {
                keep_active(&mut n, &current.document);
            }
            declare(
                &declared,
                kind,
                &mut n.document,
                &mut n.index,
                Prior::Replaced(&current.document),
            )?;
            let members = if kind == ResourceKind::Group {
                GroupMembershipDelta::replacing(&n.members, n.member_displays)
            } else {
                GroupMembershipDelta::default()
            };
            Ok(Change {
                columns: Columns {
                    display: display_of(&n.document),
                    index: n.index,
                    manager_id: n.manager_id,
                },
                unique: declared.unique_values(kind, &n.document, Some(&current.document)),
                document: n.document,
                members,
            })
        });
        self.scim_update(workspace, kind, id, edit, projection)
            .await
    }

    /// `PATCH` (RFC 7644 §3.5.2), applied to the stored document while the store holds it.
    pub async fn scim_patch(
        &self,
        workspace: &Workspace,
        kind: ResourceKind,
        id: &str,
        body: Value,
        if_match: Option<String>,
        projection: &Projection,
    ) -> Result<ScimResource, ScimError> {
        // Nobody waits for the answer: begin no write for them (the provisioning log says 503).
        if crate::cancel::client_left() {
            return Err(ScimError::Unavailable);
        }
        let rt: &'static ResourceType = kind.resource_type();
        // A PATCH that names no custom extension leaves every custom extension object as it
        // was: only a PATCH that names one needs the declared schemas.
        let declared = if crate::scim::extension::mentions_custom(&body) {
            self.scim_declared(workspace.id).await?
        } else {
            Declared::default()
        };
        let edit: Edit = Box::new(move |current| {
            check_if_match(if_match.as_deref(), current.version)?;
            let mut r = apply_patch(&current.document, &body, rt)?;
            declare(
                &declared,
                kind,
                &mut r.document,
                &mut r.index,
                Prior::Patched(&current.document),
            )?;
            Ok(Change {
                columns: Columns {
                    display: display_of(&r.document),
                    index: r.index,
                    manager_id: r.manager_id,
                },
                unique: declared.unique_values(kind, &r.document, Some(&current.document)),
                document: r.document,
                members: r.members,
            })
        });
        self.scim_update(workspace, kind, id, edit, projection)
            .await
    }

    /// `DELETE` (RFC 7644 §3.6): the resource and every reference to it.
    pub async fn scim_delete(
        &self,
        workspace: &Workspace,
        kind: ResourceKind,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<(), ScimError> {
        // Nobody waits for the answer: begin no write for them (the provisioning log says 503).
        if crate::cancel::client_left() {
            return Err(ScimError::Unavailable);
        }
        let err = |e| store_error(e, kind);
        let expected = match if_match {
            None => None,
            Some(h) => {
                let current = self
                    .scim
                    .get(workspace.id, kind, id, false)
                    .await
                    .map_err(err)?
                    .ok_or_else(|| not_found(kind))?;
                check_if_match(Some(h), current.version)?;
                Some(current.version)
            }
        };
        match self
            .scim
            .delete(workspace.id, kind, id, expected, self.now())
            .await
            .map_err(err)?
        {
            Deleted::Done => Ok(()),
            Deleted::NotFound => Err(not_found(kind)),
            Deleted::VersionMismatch => Err(precondition_failed()),
        }
    }

    /// `GET /Users`, `POST /Users/.search` and the same for Groups (RFC 7644 §3.4.2, §3.4.3).
    ///
    /// When the columns answer the whole query (no filter, or an exact plan, and no sort or an
    /// indexed one), the database pages and counts. Otherwise rows stream in batches, narrowed by
    /// the plan when there is one, each checked by the evaluator, and a `PageWindow` keeps only the
    /// page: never a whole workspace in memory.
    pub async fn scim_list(
        &self,
        workspace: &Workspace,
        kind: ResourceKind,
        req: &ListRequest,
    ) -> Result<Value, ScimError> {
        let rt = kind.resource_type();
        let planned: Option<Option<SqlPlan>> = req.filter.as_ref().map(|f| plan(f, kind));
        let sort_col = req.sort.as_ref().map(|s| sort_column(s, kind));
        let in_sql = !matches!(planned, Some(None))
            && !matches!(&planned, Some(Some(p)) if !p.exact)
            && !matches!(sort_col, Some(None));
        if in_sql {
            let rows = self
                .scim
                .page(
                    workspace.id,
                    kind,
                    planned.as_ref().and_then(Option::as_ref),
                    sort_col.flatten(),
                    req.page.offset(),
                    req.page.count,
                    shows_refs(kind, &req.projection),
                )
                .await
                .map_err(|e| store_error(e, kind))?;
            let page = rows
                .resources
                .into_iter()
                .map(|r| req.projection.apply(self.scim_represent(kind, r), rt))
                .collect();
            return Ok(list_response(page, rows.total, req.page.start_index));
        }
        let mut window = PageWindow::new(req.page, req.sort.as_ref());
        let superset = planned.flatten();
        self.scim_stream(workspace, kind, req, superset.as_ref(), &mut window)
            .await?;
        let total = window.total();
        let page = self
            .scim_finish_page(workspace, window.into_page(), &[(kind, req)])
            .await?;
        Ok(list_response(page, total, req.page.start_index))
    }

    /// Offers every resource of `kind` that matches `req.filter` to `window`, in id order, with
    /// its references when the filter or sort reads them.
    async fn scim_stream(
        &self,
        workspace: &Workspace,
        kind: ResourceKind,
        req: &ListRequest,
        superset: Option<&SqlPlan>,
        window: &mut PageWindow<'_>,
    ) -> Result<(), ScimError> {
        let rt = kind.resource_type();
        let refs = reads_refs(kind, req.filter.as_ref(), req.sort.as_ref());
        let mut after: Option<String> = None;
        loop {
            let batch = self
                .scim
                .scan(
                    workspace.id,
                    kind,
                    superset,
                    after.as_deref(),
                    SCAN_BATCH,
                    refs,
                )
                .await
                .map_err(|e| store_error(e, kind))?;
            let full_batch = batch.resources.len() as u32 == SCAN_BATCH;
            after = batch.resources.last().map(|last| last.id.clone());
            for r in batch.resources {
                let full = self.scim_represent(kind, r);
                if req.filter.as_ref().is_none_or(|f| matches(f, &full, rt)) {
                    window.offer(full);
                }
            }
            if !full_batch || after.is_none() {
                return Ok(());
            }
        }
    }

    /// Projects a streamed page as the request for each resource's type asks, first attaching the
    /// references it shows when streaming did not read them.
    async fn scim_finish_page(
        &self,
        workspace: &Workspace,
        page: Vec<Value>,
        requests: &[(ResourceKind, &ListRequest)],
    ) -> Result<Vec<Value>, ScimError> {
        let mut done: HashMap<String, Value> = HashMap::with_capacity(page.len());
        for (kind, req) in requests {
            let rt = kind.resource_type();
            let of_kind: Vec<(&str, &Value)> = page
                .iter()
                .filter(|v| v["meta"]["resourceType"] == rt.name)
                .map(|v| (v["id"].as_str().unwrap_or_default(), v))
                .collect();
            let missing = shows_refs(*kind, &req.projection)
                && !reads_refs(*kind, req.filter.as_ref(), req.sort.as_ref());
            let mut refs = if missing {
                let ids = of_kind.iter().map(|(id, _)| (*id).to_owned()).collect();
                Some(self.scim_refs(workspace.id, *kind, ids).await?)
            } else {
                None
            };
            for (id, v) in of_kind {
                let full = match refs.as_mut() {
                    Some(refs) => {
                        let mine = refs.remove(id).unwrap_or_default();
                        // `v` is a full representation already: its manager has its `$ref` or not.
                        let found = v[ENTERPRISE_USER_URN]["manager"]["$ref"].is_string();
                        self.scim_attach(
                            *kind,
                            v.clone(),
                            id,
                            v["meta"].clone(),
                            Some(&mine),
                            found,
                        )
                    }
                    None => v.clone(),
                };
                done.insert(id.to_owned(), req.projection.apply(full, rt));
            }
        }
        // In the window's order.
        Ok(page
            .iter()
            .filter_map(|v| done.remove(v["id"].as_str().unwrap_or_default()))
            .collect())
    }

    /// `POST /.search` at the root (RFC 7644 §3.4.3): Users and Groups together. The query is read
    /// for each resource type; a type whose attributes the filter does not name is left out, and a
    /// filter no type understands is refused.
    pub async fn scim_search_all(
        &self,
        workspace: &Workspace,
        body: &Value,
    ) -> Result<Value, ScimError> {
        let kinds = [ResourceKind::User, ResourceKind::Group];
        let parsed: Vec<Result<ListRequest, ScimError>> = kinds
            .iter()
            .map(|k| ListRequest::from_search(body, k.resource_type()))
            .collect();
        let requests: Vec<(ResourceKind, &ListRequest)> = kinds
            .iter()
            .zip(&parsed)
            .filter_map(|(k, r)| r.as_ref().ok().map(|r| (*k, r)))
            .collect();
        let Some((_, lead)) = requests.first() else {
            return Err(parsed
                .into_iter()
                .find_map(Result::err)
                .unwrap_or(ScimError::Internal));
        };
        let mut window = PageWindow::new(lead.page, lead.sort.as_ref());
        for (kind, req) in &requests {
            let superset = req.filter.as_ref().and_then(|f| plan(f, *kind));
            self.scim_stream(workspace, *kind, req, superset.as_ref(), &mut window)
                .await?;
        }
        let total = window.total();
        let page = self
            .scim_finish_page(workspace, window.into_page(), &requests)
            .await?;
        Ok(list_response(page, total, lead.page.start_index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_version_4_uuids() {
        let id = new_id();
        assert_eq!(id.len(), 36);
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"));
        assert_ne!(new_id(), id);
    }

    #[test]
    fn if_match_is_checked_only_when_sent() {
        assert!(check_if_match(None, 3).is_ok());
        assert!(check_if_match(Some("W/\"3\""), 3).is_ok());
        assert!(check_if_match(Some("*"), 3).is_ok());
        assert_eq!(
            check_if_match(Some("W/\"2\""), 3).unwrap_err().status(),
            412
        );
    }

    #[test]
    fn display_prefers_display_name() {
        let v = serde_json::json!({"userName": "ann", "displayName": "Ann A"});
        assert_eq!(display_of(&v).as_deref(), Some("Ann A"));
        let v = serde_json::json!({"userName": "ann"});
        assert_eq!(display_of(&v).as_deref(), Some("ann"));
    }
}
