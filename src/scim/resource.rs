//! Resource bodies of POST and PUT (RFC 7644 §3.3, §3.5.1): normalisation, validation,
//! the index columns the storage keeps, and the references it must check.
//!
//! Policy, chosen so that `/Schemas` stays truthful:
//! - attribute names are matched case-insensitively and stored in canonical case
//!   (Entra ID sends `"UserName"`, `"Active"`);
//! - readOnly attributes (`id`, `meta`, `groups`, `manager.displayName`) are ignored on
//!   input (RFC 7643 §2.2, RFC 7644 §3.3 "SHALL be
//!   ignored"), in a PUT body as in a POST (Okta's PUT echoes the GET it made);
//! - a User's `password` is accepted and discarded ([`is_discarded`]): Okta sends one on every
//!   create, even a placeholder when password sync is off, and Assent keeps no SCIM password;
//! - an attribute or schema Assent does not define is refused with 400 `invalidSyntax`,
//!   naming it, rather than silently dropped: dropping would let a client believe a
//!   value was stored and re-send it on every sync; except an extension object under
//!   `urn:ietf:params:scim:schemas:extension:…`, which is kept as sent
//!   ([`super::extension`]);
//! - `schemas` must be present and include the core schema; other URNs listed there
//!   without data are ignored (Entra ID lists a Microsoft URN on groups); an extension
//!   object present in the body is accepted even if its URN is missing from `schemas`;
//!   the stored `schemas` always lists exactly the core schema and the extensions present.
//!
//! The stored *document* holds neither `id` nor `meta` (the storage owns them), nor a
//! Group's `members` (kept as rows so membership changes are transactional), nor any
//! `$ref` (derived from ids on output by [`attach_references`]).

use serde_json::{json, Map, Value};

use super::core_schemas::ENTERPRISE_USER_URN;
use super::error::{clip, ScimError};
use super::extension::{custom_keys, index_values, is_custom_urn, normalise_object, IndexedValue};
use super::members::{DistinctIds, MemberDisplays};
use super::schema::{Location, Mutability, ResourceKind, ResourceType};
use super::value::{coerce, fold_case, get_ci, key_ci};

/// The indexed columns of `scim_users` / `scim_groups`, computed from a document.
/// Field names are the column names [`super::sql`] plans over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexColumns {
    /// Users: [`fold_case`] of `userName` (unique per workspace).
    pub user_name_lower: Option<String>,
    /// `externalId` as given (caseExact).
    pub external_id: Option<String>,
    /// [`fold_case`] of `displayName` (for Groups, unique per workspace).
    pub display_name_lower: Option<String>,
    /// Users: the folded value of the work email (the primary one if several).
    pub work_email_lower: Option<String>,
    /// Users: true when some email value differs from `work_email_lower` (another type,
    /// a second work address, or no work address at all). Email filters can rule a row
    /// out by `work_email_lower` only when this is false.
    pub email_overflow: bool,
    /// Users: `active`, None when unassigned.
    pub active: Option<bool>,
    /// The values of the undeclared schema extensions, as `scim_ext_values` rows
    /// ([`super::extension::index_values`]).
    pub extension_values: Vec<IndexedValue>,
}

/// A validated POST/PUT body.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalised {
    /// The canonical document to store (see the module docs for what it leaves out).
    pub document: Value,
    pub index: IndexColumns,
    /// Users: the enterprise manager's id. The caller must check it names a User of the
    /// same workspace and refuse the request with 400 `invalidValue` otherwise.
    pub manager_id: Option<String>,
    /// Groups: the member ids, deduplicated, in request order. The caller must check each
    /// names a User or Group of the workspace (400 `invalidValue` otherwise) and, for
    /// PUT, replace the membership with exactly this list.
    pub members: Vec<String>,
    /// Groups: the `display` sent with members, kept as sent (RFC 7643 §2.4).
    pub member_displays: MemberDisplays,
}

/// Validates and normalises a POST or PUT body for `rt`.
pub fn normalise(input: &Value, rt: &'static ResourceType) -> Result<Normalised, ScimError> {
    let obj = input
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("the resource must be a JSON object"))?;
    check_schemas(obj, rt)?;
    let mut doc = Map::new();
    for (key, value) in obj {
        if key.eq_ignore_ascii_case("schemas") || is_discarded(rt, None, key) {
            continue;
        }
        if is_custom_urn(key) {
            if let Some(obj) = normalise_object(key, value)? {
                if custom_keys(&doc).any(|k| k.eq_ignore_ascii_case(key)) {
                    return Err(ScimError::invalid_syntax(format!(
                        "schema extension '{}' is given more than once",
                        clip(key)
                    )));
                }
                doc.insert(key.clone(), obj);
            }
            continue;
        }
        if let Some(ext) = rt.extension_by_urn(key) {
            let ext_obj = match value {
                Value::Null => continue,
                Value::Object(o) => o,
                _ => {
                    return Err(ScimError::invalid_syntax(format!(
                        "'{}' must be an object",
                        ext.id
                    )))
                }
            };
            let mut out = Map::new();
            for (k, v) in ext_obj {
                // Clients that serialise the extension as a resource of its own repeat its URN
                // in a `schemas` key there (scim2-models does); it carries no data.
                if k.eq_ignore_ascii_case("schemas") {
                    continue;
                }
                let def = ext.attr(k).ok_or_else(|| {
                    ScimError::invalid_syntax(format!("unknown attribute '{}:{}'", ext.id, clip(k)))
                })?;
                if def.mutability == Mutability::ReadOnly {
                    continue;
                }
                if let Some(c) = coerce(def, v, def.name)? {
                    insert_once(&mut out, def.name, c)?;
                }
            }
            if !out.is_empty() {
                insert_once(&mut doc, ext.id, Value::Object(out))?;
            }
            continue;
        }
        let found = rt
            .find(None, key)
            .filter(|f| f.location == Location::Core)
            .ok_or_else(|| {
                let hint = match rt.find(None, key).and_then(|f| f.location.urn()) {
                    Some(urn) => format!("'{key}' belongs inside the '{urn}' object"),
                    None if key.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:")) => {
                        format!("unsupported schema extension '{}'", clip(key))
                    }
                    None => format!("unknown attribute '{}'", clip(key)),
                };
                ScimError::invalid_syntax(hint)
            })?;
        if found.def.mutability == Mutability::ReadOnly {
            continue;
        }
        let value = if rt.kind == ResourceKind::Group && found.def.name == "members" {
            members_leniently(value)
        } else {
            std::borrow::Cow::Borrowed(value)
        };
        if let Some(c) = coerce(found.def, &value, found.def.name)? {
            insert_once(&mut doc, found.def.name, c)?;
        }
    }
    finish(doc, rt)
}

/// Whether an attribute sent to `rt` is dropped unread: a User's `password` (issue 15). Okta sends
/// `"password"` on every create (a placeholder when password sync is off) and may PUT or PATCH
/// one; Assent keeps no SCIM password (ServiceProviderConfig `changePassword: false`), so the
/// value is never stored, logged, answered or put in the provisioning log. It is not announced in
/// `/Schemas`, which lists what a client can read back.
pub(super) fn is_discarded(rt: &ResourceType, urn: Option<&str>, name: &str) -> bool {
    rt.kind == ResourceKind::User
        && urn.is_none_or(|u| u.eq_ignore_ascii_case(rt.schema.id))
        && name.eq_ignore_ascii_case("password")
}

/// The required attributes of `rt` that `doc` leaves unassigned: absent or null
/// (RFC 7643 §2.5). A blank string is assigned here; [`finish`] refuses it as a value.
pub(super) fn unassigned_required<'d>(
    doc: &'d Map<String, Value>,
    rt: &'static ResourceType,
) -> impl Iterator<Item = &'static str> + 'd {
    rt.schema
        .attributes
        .iter()
        .filter(|d| d.required)
        .filter(|d| key_ci(doc, d.name).is_none_or(|k| doc[k].is_null()))
        .map(|d| d.name)
}

/// Checks the required attributes, moves out what the document does not keep, and
/// computes the index columns.
fn finish(mut doc: Map<String, Value>, rt: &'static ResourceType) -> Result<Normalised, ScimError> {
    for def in rt.schema.attributes.iter().filter(|d| d.required) {
        let ok = doc
            .get(def.name)
            .is_some_and(|v| v.as_str().is_none_or(|s| !s.trim().is_empty()));
        if !ok {
            // RFC 7644 Table 9: invalidValue is "a required value was missing".
            return Err(ScimError::invalid_value(format!(
                "'{}' is required",
                def.name
            )));
        }
    }
    let (members, member_displays) = match rt.kind {
        ResourceKind::Group => {
            let members = doc.remove("members");
            (
                member_ids(members.as_ref())?,
                member_displays(members.as_ref()),
            )
        }
        ResourceKind::User => Default::default(),
    };
    let manager_id = strip_manager_ref(&mut doc, rt);
    let mut schemas: Vec<String> = rt
        .schema_urns()
        .enumerate()
        .filter(|(i, urn)| *i == 0 || doc.contains_key(*urn))
        .map(|(_, urn)| urn.to_owned())
        .collect();
    schemas.extend(custom_keys(&doc).cloned());
    doc.insert("schemas".into(), json!(schemas));
    let document = Value::Object(doc);
    // Refuses a document with more extension values than the index keeps for one resource.
    index_values(&document)?;
    Ok(Normalised {
        index: index_columns(&document, rt),
        document,
        manager_id,
        members,
        member_displays,
    })
}

/// `schemas` must list the core schema. Other URNs it lists are not checked: listing a
/// schema carries no data, and Entra ID lists
/// `http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/Group` on every
/// group it creates. Data under a schema Assent does not define is refused elsewhere.
fn check_schemas(obj: &Map<String, Value>, rt: &ResourceType) -> Result<(), ScimError> {
    let schemas = key_ci(obj, "schemas")
        .and_then(|k| obj[k].as_array())
        .ok_or_else(|| ScimError::invalid_syntax("'schemas' is required (RFC 7643 §3)"))?;
    let mut has_core = false;
    for s in schemas {
        let urn = s
            .as_str()
            .ok_or_else(|| ScimError::invalid_syntax("'schemas' must list URN strings"))?;
        has_core |= urn.eq_ignore_ascii_case(rt.schema.id);
    }
    if !has_core {
        return Err(ScimError::invalid_syntax(format!(
            "'schemas' must include '{}'",
            rt.schema.id
        )));
    }
    Ok(())
}

/// Refuses `{"userName": …, "UserName": …}` instead of keeping one at random.
fn insert_once(map: &mut Map<String, Value>, key: &str, v: Value) -> Result<(), ScimError> {
    if map.insert(key.to_owned(), v).is_some() {
        return Err(ScimError::invalid_syntax(format!(
            "attribute '{key}' is given more than once"
        )));
    }
    Ok(())
}

/// The member ids of a coerced `members` value, deduplicated in order.
pub(super) fn member_ids(members: Option<&Value>) -> Result<Vec<String>, ScimError> {
    let mut ids: Vec<String> = Vec::new();
    let mut distinct = DistinctIds::new(&mut ids);
    for m in members.and_then(Value::as_array).into_iter().flatten() {
        let id = get_ci(m, "value")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ScimError::invalid_value("every member needs a 'value' (the member's id)")
            })?;
        distinct.push(id);
    }
    Ok(ids)
}

/// The `display` of each member of a coerced `members` value that has one.
pub(super) fn member_displays(members: Option<&Value>) -> MemberDisplays {
    let mut out = MemberDisplays::new();
    for m in members.and_then(Value::as_array).into_iter().flatten() {
        let id = get_ci(m, "value").and_then(Value::as_str);
        let display = get_ci(m, "display").and_then(Value::as_str);
        if let (Some(id), Some(d)) = (id, display) {
            out.entry(id.to_owned()).or_insert_with(|| d.to_owned());
        }
    }
    out
}

/// A `members` value as sent, with a member's `displayName` read as its `display`: Microsoft's
/// SCIM reference collection adds members as `{"displayName": …, "value": …}`.
pub(super) fn members_leniently(value: &Value) -> std::borrow::Cow<'_, Value> {
    let has_alias = |m: &Value| {
        m.as_object()
            .is_some_and(|o| key_ci(o, "displayName").is_some())
    };
    let fix = |m: &Value| -> Value {
        let Some(o) = m.as_object() else {
            return m.clone();
        };
        let mut o = o.clone();
        if let Some(k) = key_ci(&o, "displayName").map(|k| k.to_owned()) {
            let d = o.remove(&k);
            if key_ci(&o, "display").is_none() {
                if let Some(d) = d {
                    o.insert("display".into(), d);
                }
            }
        }
        Value::Object(o)
    };
    match value {
        Value::Array(a) if a.iter().any(has_alias) => {
            std::borrow::Cow::Owned(Value::Array(a.iter().map(fix).collect()))
        }
        Value::Object(_) if has_alias(value) => std::borrow::Cow::Owned(fix(value)),
        _ => std::borrow::Cow::Borrowed(value),
    }
}

/// Keeps only the manager's id in the document (its `$ref` is derived on output) and
/// returns it. Coercion already refused a manager without `value`.
fn strip_manager_ref(doc: &mut Map<String, Value>, rt: &ResourceType) -> Option<String> {
    let ext = rt.extension_by_urn(ENTERPRISE_USER_URN)?;
    let manager = doc.get_mut(ext.id)?.get_mut("manager")?;
    let id = manager.get("value")?.as_str()?.to_owned();
    *manager = json!({ "value": id });
    Some(id)
}

/// Computes the index columns of a stored document.
pub fn index_columns(document: &Value, rt: &ResourceType) -> IndexColumns {
    let s = |name: &str| {
        get_ci(document, name)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let mut cols = IndexColumns {
        external_id: s("externalId"),
        display_name_lower: s("displayName").map(|d| fold_case(&d)),
        // A stored document is within the bound: `finish` refused any other.
        extension_values: index_values(document).unwrap_or_default(),
        ..IndexColumns::default()
    };
    if rt.kind == ResourceKind::User {
        cols.user_name_lower = s("userName").map(|u| fold_case(&u));
        cols.active = get_ci(document, "active").and_then(Value::as_bool);
        let emails: Vec<&Value> = get_ci(document, "emails")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .collect();
        let is_work = |e: &Value| {
            get_ci(e, "type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.eq_ignore_ascii_case("work"))
        };
        let is_primary = |e: &Value| get_ci(e, "primary") == Some(&Value::Bool(true));
        let work = emails
            .iter()
            .find(|e| is_work(e) && is_primary(e))
            .or_else(|| emails.iter().find(|e| is_work(e)));
        cols.work_email_lower = work
            .and_then(|e| get_ci(e, "value"))
            .and_then(Value::as_str)
            .map(fold_case);
        cols.email_overflow = emails.iter().any(|e| {
            let v = get_ci(e, "value").and_then(Value::as_str).map(fold_case);
            v.is_some() && v != cols.work_email_lower
        });
    }
    cols
}

/// A resource another one points at, as the storage found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub id: String,
    pub kind: ResourceKind,
    /// The referenced resource's `displayName` (`userName` for a User without one).
    pub display: Option<String>,
}

impl Reference {
    fn location(&self, base_url: &str) -> String {
        format!(
            "{base_url}{}/{}",
            self.kind.resource_type().endpoint,
            self.id
        )
    }
}

/// What the storage attaches to a document on output.
#[derive(Debug, Clone, Default)]
pub struct References<'a> {
    /// Groups: its members.
    pub members: Option<&'a [Reference]>,
    /// Users: the groups it belongs to (RFC 7643 §4.1.2, `type: direct`).
    pub groups: Option<&'a [Reference]>,
    /// Users: the manager, to fill `$ref` and `displayName`.
    pub manager: Option<&'a Reference>,
}

/// Builds the full representation: the stored document plus `id`, `meta` and the
/// references, each with its `$ref` under `base_url` (`…/v1/scim/v2`).
pub fn attach_references(
    document: Value,
    id: &str,
    meta: Value,
    refs: &References<'_>,
    base_url: &str,
) -> Value {
    let mut out = document;
    let Some(obj) = out.as_object_mut() else {
        return out;
    };
    obj.insert("id".into(), json!(id));
    obj.insert("meta".into(), meta);
    let list = |items: &[Reference],
                kind_key: &str,
                kind_of: &dyn Fn(&Reference) -> &'static str|
     -> Value {
        Value::Array(
            items
                .iter()
                .map(|r| {
                    let mut m = Map::new();
                    m.insert("value".into(), json!(r.id));
                    m.insert("$ref".into(), json!(r.location(base_url)));
                    if let Some(d) = &r.display {
                        m.insert("display".into(), json!(d));
                    }
                    m.insert(kind_key.into(), json!(kind_of(r)));
                    Value::Object(m)
                })
                .collect(),
        )
    };
    if let Some(members) = refs.members.filter(|m| !m.is_empty()) {
        obj.insert(
            "members".into(),
            list(members, "type", &|r| r.kind.resource_type().name),
        );
    }
    if let Some(groups) = refs.groups.filter(|g| !g.is_empty()) {
        obj.insert("groups".into(), list(groups, "type", &|_| "direct"));
    }
    if let Some(mgr) = refs.manager {
        if let Some(Value::Object(m)) = obj
            .get_mut(ENTERPRISE_USER_URN)
            .and_then(|e| e.get_mut("manager"))
        {
            m.insert("$ref".into(), json!(mgr.location(base_url)));
            if let Some(d) = &mgr.display {
                m.insert("displayName".into(), json!(d));
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "resource_tests.rs"]
mod tests;
