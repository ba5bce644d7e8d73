//! PATCH (RFC 7644 §3.5.2) on a stored document, with the forms Entra ID sends.
//!
//! The request is parsed and validated whole, then applied to a copy: a PATCH is atomic
//! (§3.5.2 "if any operation fails, the resource SHALL be unchanged"), so on error the
//! stored document is untouched. The result goes through the same validation as a POST
//! body ([`super::resource::normalise`]), so a PATCH can never store what a POST would
//! refuse (a missing `userName`, two primary emails, a member without id).
//!
//! Entra ID forms handled (Microsoft's "Known issues … SCIM 2.0 protocol compliance"):
//! - `"op": "Add" | "Replace" | "Remove"` capitalised (op names are case-insensitive);
//! - booleans as `"True"`/`"False"`, disabling a user with `op: Add` on `active`;
//! - attribute names capitalised in paths and values (`"UserName"`, `"Active"`);
//! - path-less add/replace whose value keys are paths: `"name.givenName"`,
//!   `"urn:…:enterprise:2.0:User:employeeNumber"`, even `"emails[type eq \"work\"].value"`;
//! - the enterprise `manager` as a bare id string or `{"value": id}`;
//! - members removed with `{"op":"Remove","path":"members","value":[{"$ref":null,"value":id}]}`
//!   (only the listed ones) or with `members[value eq "id"]` (aadOptscim062020);
//! - a value-path add/replace such as `emails[type eq "work"].value` on a user without a
//!   work email creates `{"type":"work","value":…}` instead of RFC 7644 §3.5.2.3's
//!   `noTarget`, when the filter is a conjunction of `eq` terms to build the entry from.

use serde_json::Value;

use super::error::ScimError;
use super::members::GroupMembershipDelta;
use super::patch_engine::Engine;
use super::path::PatchPath;
use super::resource::{normalise, unassigned_required, IndexColumns};
use super::schema::ResourceType;
use super::value::{key_ci, remove_ci};

/// The schema URN of a PATCH request body.
pub const PATCH_OP_URN: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Add,
    Remove,
    Replace,
}

/// One validated operation.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOperation {
    pub op: OpKind,
    pub path: Option<PatchPath>,
    pub value: Option<Value>,
}

/// What a PATCH changes.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchResult {
    /// The new document to store (same shape as [`super::resource::Normalised::document`]).
    pub document: Value,
    pub index: IndexColumns,
    /// Users: the manager id after the PATCH; the caller checks it names a User of the
    /// workspace (400 `invalidValue` otherwise).
    pub manager_id: Option<String>,
    /// Groups: the membership change, to apply in the same transaction as the document
    /// (see [`super::members`]). Empty for Users.
    pub members: GroupMembershipDelta,
    /// Whether `document` differs from the one given.
    pub document_changed: bool,
}

impl PatchResult {
    /// Nothing to write: the caller keeps the version and `lastModified`.
    pub fn is_noop(&self) -> bool {
        !self.document_changed && self.members.is_empty()
    }
}

/// Parses a PatchOp body (RFC 7644 §3.5.2): `schemas` must name [`PATCH_OP_URN`] and
/// `Operations` hold at least one operation.
pub fn parse_request(request: &Value) -> Result<Vec<PatchOperation>, ScimError> {
    let obj = request
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("the PATCH body must be a JSON object"))?;
    let field = |name: &str| key_ci(obj, name).map(|k| &obj[k]);
    let has_urn = field("schemas").and_then(Value::as_array).is_some_and(|a| {
        a.iter().any(|s| {
            s.as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case(PATCH_OP_URN))
        })
    });
    if !has_urn {
        return Err(ScimError::invalid_syntax(format!(
            "'schemas' must be [\"{PATCH_OP_URN}\"]"
        )));
    }
    let ops = field("Operations")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| ScimError::invalid_syntax("'Operations' must be a non-empty array"))?;
    ops.iter()
        .enumerate()
        .map(|(i, op)| parse_operation(op).map_err(|e| e.context(format!("operation {}", i + 1))))
        .collect()
}

fn parse_operation(op: &Value) -> Result<PatchOperation, ScimError> {
    let obj = op
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("an operation must be a JSON object"))?;
    let field = |name: &str| key_ci(obj, name).map(|k| &obj[k]);
    let kind = match field("op")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("add") => OpKind::Add,
        Some("remove") => OpKind::Remove,
        Some("replace") => OpKind::Replace,
        _ => {
            return Err(ScimError::invalid_syntax(
                "'op' must be add, remove or replace",
            ))
        }
    };
    let path = match field("path") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(PatchPath::parse(s)?),
        Some(_) => return Err(ScimError::invalid_path("'path' must be a string")),
    };
    let value = field("value").cloned();
    if kind != OpKind::Remove && value.is_none() {
        return Err(ScimError::invalid_syntax(
            "'add' and 'replace' need a 'value'",
        ));
    }
    Ok(PatchOperation {
        op: kind,
        path,
        value,
    })
}

/// Applies a PatchOp body to a stored document of type `rt`.
///
/// `document` is what the storage keeps ([`super::resource::Normalised::document`]);
/// `id`, `meta`, `groups` and `members` in it are ignored (the storage owns them).
pub fn apply_patch(
    document: &Value,
    request: &Value,
    rt: &'static ResourceType,
) -> Result<PatchResult, ScimError> {
    apply_operations(document, &parse_request(request)?, rt)
}

/// Applies already parsed operations, in order, all or nothing.
pub fn apply_operations(
    document: &Value,
    ops: &[PatchOperation],
    rt: &'static ResourceType,
) -> Result<PatchResult, ScimError> {
    let mut doc = document.as_object().cloned().unwrap_or_default();
    for owned in ["id", "meta", "groups", "members"] {
        remove_ci(&mut doc, owned);
    }
    let before = Value::Object(doc.clone());
    let unassigned_before: Vec<&str> = unassigned_required(&doc, rt).collect();
    let mut engine = Engine::new(rt, doc);
    for (i, op) in ops.iter().enumerate() {
        engine
            .operation(op)
            .map_err(|e| e.context(format!("operation {}", i + 1)))?;
    }
    let (mut doc, members) = engine.into_parts();
    // RFC 7644 §3.5.2.2: a PATCH that removes a required attribute, or leaves it unassigned
    // (a replace with null), is 400 `mutability`. One that was already missing is left to
    // `normalise`, which answers `invalidValue` as for a POST or PUT without it (Table 9,
    // "a required value was missing").
    if let Some(name) = unassigned_required(&doc, rt).find(|n| !unassigned_before.contains(n)) {
        return Err(ScimError::mutability(format!(
            "'{name}' is required: it can be replaced, not removed"
        )));
    }
    // normalise recomputes `schemas` from the extension objects present.
    doc.insert("schemas".into(), Value::from(vec![rt.schema.id]));
    let n = normalise(&Value::Object(doc), rt)?;
    Ok(PatchResult {
        document_changed: n.document != before,
        document: n.document,
        index: n.index,
        manager_id: n.manager_id,
        members,
    })
}
