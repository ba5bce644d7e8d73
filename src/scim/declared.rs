//! Extension schemas a workspace's owner declares (issue 15, `PUT /v1/console/scim/schemas`):
//! RFC 7643 §7 definitions of `urn:ietf:params:scim:schemas:extension:…` schemas. A declared
//! schema is announced in `/Schemas` and in its resource type's `schemaExtensions`, and a
//! resource's object under it is checked on every write ([`Declared::enforce`]): only declared
//! attributes, each of its type (booleans and numbers sent as strings, as Entra ID does, are
//! read as such), a single value of a multi-valued attribute taken as a list of one, readOnly
//! ones ignored, immutable ones never changed once set, and required ones present whenever the
//! resource carries the extension. Refusals are 400 `invalidValue`, naming the attribute.
//! writeOnly and `returned: never` attributes are checked and then not kept: they could never be
//! answered, and Assent has no use for them (as for a User's `password`).
//!
//! Everything else about the values (storage, PATCH, filters, the index) is
//! [`super::extension`]'s: a declared extension is an undeclared one whose values are known to
//! be of their types.

use serde_json::{json, Map, Value};

use super::error::{clip, ScimError};
use super::extension::{extends_known_urn, index_path, is_custom_urn, value_key};
use super::schema::{AttrType, Mutability, ResourceKind, Returned, Uniqueness};
use super::value::{get_ci, key_ci, parse_time};

/// Most schemas a workspace may declare, and attributes one schema may define.
pub const MAX_SCHEMAS: usize = 20;
pub const MAX_ATTRIBUTES: usize = 100;

/// One declared attribute (RFC 7643 §7), with the §2.2 defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredAttr {
    pub name: String,
    pub ty: AttrType,
    pub multi_valued: bool,
    pub description: String,
    pub required: bool,
    pub case_exact: bool,
    pub mutability: Mutability,
    pub returned: Returned,
    pub uniqueness: Uniqueness,
    pub canonical_values: Vec<String>,
    pub reference_types: Vec<String>,
    pub sub_attributes: Vec<DeclaredAttr>,
}

/// One declared extension schema, and the resource type it extends.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredSchema {
    pub id: String,
    pub kind: ResourceKind,
    pub name: String,
    pub description: String,
    pub attributes: Vec<DeclaredAttr>,
}

/// A workspace's declared schemas.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Declared(pub Vec<DeclaredSchema>);

/// A value that a declared attribute with `uniqueness` (`server` or `global`) holds, which a write
/// must find no other resource of its workspace and type holding (RFC 7643 §7; a workspace is
/// Assent's service provider for its identity provider, so both are held within it).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct UniqueValue {
    /// `scim_ext_values`' path and typed key of the value (`extension::index_path`,
    /// `extension::value_key`): what the store probes.
    pub path: String,
    pub key: String,
    /// The schema and attribute, as declared: the error names them, and a `caseExact`
    /// string's holders are read back by them.
    pub urn: String,
    pub attribute: String,
    /// A `caseExact` string: the value as stored, since the key folds case and another case of
    /// it is another value.
    pub exact: Option<String>,
}

impl UniqueValue {
    /// `urn:…:badgeId`, for the error.
    pub fn name(&self) -> String {
        format!("{}:{}", self.urn, self.attribute)
    }

    /// Whether `document` (a holder of the key) holds this very value.
    pub fn held_by(&self, document: &Value) -> bool {
        let Some(exact) = &self.exact else {
            return true;
        };
        get_ci(document, &self.urn)
            .and_then(|ext| get_ci(ext, &self.attribute))
            .and_then(Value::as_str)
            .is_some_and(|v| v == exact)
    }
}

/// What a write replaces, for [`Declared::enforce`].
#[derive(Clone, Copy, Debug)]
pub enum Prior<'a> {
    /// A POST: nothing.
    Nothing,
    /// A PUT: the stored document, replaced whole.
    Replaced(&'a Value),
    /// A PATCH: the stored document, edited.
    Patched(&'a Value),
}

fn pick<T: Copy>(
    obj: &Map<String, Value>,
    key: &str,
    default: T,
    table: &[(&str, T)],
    at: &str,
) -> Result<T, String> {
    match key_ci(obj, key).map(|k| &obj[k]) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::String(s)) => table
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s))
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
                format!("{at}: '{key}' must be one of {}", names.join(", "))
            }),
        Some(_) => Err(format!("{at}: '{key}' must be a string")),
    }
}

fn flag(obj: &Map<String, Value>, key: &str, at: &str) -> Result<bool, String> {
    match key_ci(obj, key).map(|k| &obj[k]) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("{at}: '{key}' must be true or false")),
    }
}

fn text(obj: &Map<String, Value>, key: &str, at: &str) -> Result<Option<String>, String> {
    match key_ci(obj, key).map(|k| &obj[k]) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{at}: '{key}' must be a string")),
    }
}

fn strings(obj: &Map<String, Value>, key: &str, at: &str) -> Result<Vec<String>, String> {
    match key_ci(obj, key).map(|k| &obj[k]) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{at}: '{key}' must list strings"))
            })
            .collect(),
        Some(_) => Err(format!("{at}: '{key}' must be an array of strings")),
    }
}

/// RFC 7643 §2.1 ATTRNAME.
fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

const TYPES: &[(&str, AttrType)] = &[
    ("string", AttrType::String),
    ("boolean", AttrType::Boolean),
    ("decimal", AttrType::Decimal),
    ("integer", AttrType::Integer),
    ("dateTime", AttrType::DateTime),
    ("binary", AttrType::Binary),
    ("reference", AttrType::Reference),
    ("complex", AttrType::Complex),
];
const MUTABILITY: &[(&str, Mutability)] = &[
    ("readOnly", Mutability::ReadOnly),
    ("readWrite", Mutability::ReadWrite),
    ("immutable", Mutability::Immutable),
    ("writeOnly", Mutability::WriteOnly),
];
const RETURNED: &[(&str, Returned)] = &[
    ("always", Returned::Always),
    ("never", Returned::Never),
    ("default", Returned::Default),
    ("request", Returned::Request),
];
const UNIQUENESS: &[(&str, Uniqueness)] = &[
    ("none", Uniqueness::None),
    ("server", Uniqueness::Server),
    ("global", Uniqueness::Global),
];

fn parse_attr(v: &Value, at: &str, nested: bool) -> Result<DeclaredAttr, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{at}: an attribute must be an object"))?;
    let name = text(obj, "name", at)?.ok_or_else(|| format!("{at}: 'name' is required"))?;
    if !valid_name(&name) {
        return Err(format!(
            "{at}: '{}' is not an attribute name (RFC 7643 §2.1: a letter, then letters, digits, '-' or '_')",
            clip(&name)
        ));
    }
    let at = format!("{at} '{name}'");
    let ty = match text(obj, "type", &at)? {
        None => return Err(format!("{at}: 'type' is required")),
        Some(_) => pick(obj, "type", AttrType::String, TYPES, &at)?,
    };
    let mut sub_attributes = Vec::new();
    if ty == AttrType::Complex {
        if nested {
            return Err(format!(
                "{at}: a sub-attribute cannot be complex (RFC 7643 §2.3.8)"
            ));
        }
        let subs = key_ci(obj, "subAttributes")
            .and_then(|k| obj[k].as_array())
            .filter(|a| !a.is_empty())
            .ok_or_else(|| format!("{at}: a complex attribute needs 'subAttributes'"))?;
        for (i, s) in subs.iter().enumerate() {
            sub_attributes.push(parse_attr(
                s,
                &format!("{at} sub-attribute {}", i + 1),
                true,
            )?);
        }
        check_unique(&sub_attributes, &at)?;
    }
    Ok(DeclaredAttr {
        ty,
        multi_valued: flag(obj, "multiValued", &at)?,
        description: text(obj, "description", &at)?.unwrap_or_default(),
        required: flag(obj, "required", &at)?,
        case_exact: flag(obj, "caseExact", &at)?,
        mutability: pick(obj, "mutability", Mutability::ReadWrite, MUTABILITY, &at)?,
        returned: pick(obj, "returned", Returned::Default, RETURNED, &at)?,
        uniqueness: pick(obj, "uniqueness", Uniqueness::None, UNIQUENESS, &at)?,
        canonical_values: strings(obj, "canonicalValues", &at)?,
        reference_types: strings(obj, "referenceTypes", &at)?,
        sub_attributes,
        name,
    })
}

fn check_unique(attrs: &[DeclaredAttr], at: &str) -> Result<(), String> {
    for (i, a) in attrs.iter().enumerate() {
        if attrs[..i]
            .iter()
            .any(|b| b.name.eq_ignore_ascii_case(&a.name))
        {
            return Err(format!("{at}: attribute '{}' is defined twice", a.name));
        }
    }
    Ok(())
}

/// Parses and checks `{"schemas": [<RFC 7643 §7 schema>, …]}`. Each schema's `id` is an
/// extension URN (`urn:ietf:params:scim:schemas:extension:…`, not one Assent defines); the
/// resource type it extends is its `resourceType` (`User` or `Group`) when given, else the URN's
/// last segment. The error names the schema and attribute at fault.
pub fn parse_definitions(body: &Value) -> Result<Declared, String> {
    let list = body
        .get("schemas")
        .and_then(Value::as_array)
        .ok_or("the body must be {\"schemas\": [ … RFC 7643 section 7 schema definitions … ]}")?;
    if list.len() > MAX_SCHEMAS {
        return Err(format!("at most {MAX_SCHEMAS} schemas may be declared"));
    }
    let mut out: Vec<DeclaredSchema> = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let at = format!("schema {}", i + 1);
        let obj = s
            .as_object()
            .ok_or_else(|| format!("{at}: a schema must be an object"))?;
        let id = text(obj, "id", &at)?.ok_or_else(|| format!("{at}: 'id' is required"))?;
        let at = format!("schema '{}'", clip(&id));
        if !is_custom_urn(&id) || extends_known_urn(&id) || id.contains(['/', '?', '#', ' ']) {
            return Err(format!(
                "{at}: 'id' must be an extension URN, urn:ietf:params:scim:schemas:extension:…, other than Assent's own"
            ));
        }
        if out.iter().any(|d| d.id.eq_ignore_ascii_case(&id)) {
            return Err(format!("{at} is declared twice"));
        }
        let last = id.rsplit(':').next().unwrap_or_default();
        let kind_name = text(obj, "resourceType", &at)?.unwrap_or_else(|| last.to_owned());
        let kind = if kind_name.eq_ignore_ascii_case("User") {
            ResourceKind::User
        } else if kind_name.eq_ignore_ascii_case("Group") {
            ResourceKind::Group
        } else {
            return Err(format!(
                "{at}: say which resource type it extends: 'resourceType' User or Group, or an id ending in :User or :Group"
            ));
        };
        let attrs = key_ci(obj, "attributes")
            .and_then(|k| obj[k].as_array())
            .ok_or_else(|| format!("{at}: 'attributes' must be an array"))?;
        if attrs.len() > MAX_ATTRIBUTES {
            return Err(format!("{at}: at most {MAX_ATTRIBUTES} attributes"));
        }
        let attributes = attrs
            .iter()
            .enumerate()
            .map(|(j, a)| parse_attr(a, &format!("{at} attribute {}", j + 1), false))
            .collect::<Result<Vec<_>, _>>()?;
        check_unique(&attributes, &at)?;
        out.push(DeclaredSchema {
            name: text(obj, "name", &at)?
                .unwrap_or_else(|| id.rsplit(':').nth(2).unwrap_or_default().to_owned()),
            description: text(obj, "description", &at)?.unwrap_or_default(),
            id,
            kind,
            attributes,
        });
    }
    Ok(Declared(out))
}

impl DeclaredAttr {
    /// The RFC 7643 §7 representation.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        m.insert("type".into(), json!(self.ty.as_str()));
        m.insert("multiValued".into(), json!(self.multi_valued));
        m.insert("description".into(), json!(self.description));
        m.insert("required".into(), json!(self.required));
        m.insert("caseExact".into(), json!(self.case_exact));
        m.insert("mutability".into(), json!(self.mutability.as_str()));
        m.insert("returned".into(), json!(self.returned.as_str()));
        m.insert("uniqueness".into(), json!(self.uniqueness.as_str()));
        if !self.canonical_values.is_empty() {
            m.insert("canonicalValues".into(), json!(self.canonical_values));
        }
        if self.ty == AttrType::Reference {
            m.insert("referenceTypes".into(), json!(self.reference_types));
        }
        if self.ty == AttrType::Complex {
            let subs: Vec<Value> = self.sub_attributes.iter().map(Self::to_json).collect();
            m.insert("subAttributes".into(), Value::Array(subs));
        }
        Value::Object(m)
    }
}

impl DeclaredSchema {
    /// The definition as stored and as the console shows it (no `meta`).
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "resourceType": self.kind.resource_type().name,
            "name": self.name,
            "description": self.description,
            "attributes": self.attributes.iter().map(DeclaredAttr::to_json).collect::<Vec<_>>(),
        })
    }
}

impl Declared {
    /// The schemas extending resources of `kind`.
    pub fn of(&self, kind: ResourceKind) -> impl Iterator<Item = &DeclaredSchema> {
        self.0.iter().filter(move |s| s.kind == kind)
    }

    /// The values of `doc` (as `enforce` left it) that its declared unique attributes hold and
    /// `before` (the stored document a PUT or PATCH replaces) did not: a resource keeps a value
    /// it already had, even one another resource took before the schema was declared. Single-
    /// valued attributes of a simple type only: a multi-valued or complex one is announced, not
    /// enforced.
    pub fn unique_values(
        &self,
        kind: ResourceKind,
        doc: &Value,
        before: Option<&Value>,
    ) -> Vec<UniqueValue> {
        let mut out = Vec::new();
        for schema in self.of(kind) {
            let Some(ext) = get_ci(doc, &schema.id) else {
                continue;
            };
            let held = before.and_then(|b| get_ci(b, &schema.id));
            for def in &schema.attributes {
                if def.uniqueness == Uniqueness::None
                    || def.multi_valued
                    || def.ty == AttrType::Complex
                {
                    continue;
                }
                let Some(v) = get_ci(ext, &def.name) else {
                    continue;
                };
                let Some(key) = value_key(v) else {
                    continue;
                };
                if held.and_then(|h| get_ci(h, &def.name)) == Some(v) {
                    continue;
                }
                let exact = match v {
                    Value::String(text) if def.case_exact => Some(text.clone()),
                    _ => None,
                };
                out.push(UniqueValue {
                    path: index_path(&schema.id, &def.name, None),
                    key,
                    urn: schema.id.clone(),
                    attribute: def.name.clone(),
                    exact,
                });
            }
        }
        out.sort();
        out
    }

    /// The stored form: `{"schemas": [...]}`, read back by [`parse_definitions`].
    pub fn to_json(&self) -> Value {
        json!({"schemas": self.0.iter().map(DeclaredSchema::to_json).collect::<Vec<_>>()})
    }

    /// Checks and coerces, in place, a resource's objects under its declared schemas, before it
    /// is stored. `prior` is what the write replaces: an immutable attribute keeps its value, and
    /// a PATCH may not remove a required one.
    ///
    /// Errors are 400: `invalidValue` for a value of the wrong type, an attribute the schema
    /// does not have, or a required one missing from a POST or PUT (RFC 7644 Table 9, "a
    /// required value was missing"); `mutability` for an immutable attribute given another value
    /// (§3.5.1) and a required one a PATCH removes or leaves unassigned (§3.5.2.2), as for the
    /// core schema's required attributes (`scim::patch`). A write that leaves out a whole
    /// extension is not held to it: its schema is not required (`schemaExtensions`), and a POST
    /// without it is fine too.
    pub fn enforce(
        &self,
        kind: ResourceKind,
        doc: &mut Value,
        prior: Prior<'_>,
    ) -> Result<(), ScimError> {
        let Some(obj) = doc.as_object_mut() else {
            return Ok(());
        };
        let previous = match prior {
            Prior::Nothing => None,
            Prior::Replaced(p) | Prior::Patched(p) => Some(p),
        };
        for schema in self.of(kind) {
            let Some(key) = key_ci(obj, &schema.id).cloned() else {
                continue;
            };
            let before = previous.and_then(|p| get_ci(p, &schema.id));
            let ext = obj[&key].as_object().cloned().unwrap_or_default();
            let mut out = Map::new();
            for (k, v) in &ext {
                let def = schema
                    .attributes
                    .iter()
                    .find(|a| a.name.eq_ignore_ascii_case(k))
                    .ok_or_else(|| {
                        ScimError::invalid_value(format!(
                            "'{}' is not an attribute of the declared schema '{}'",
                            clip(k),
                            schema.id
                        ))
                    })?;
                let path = format!("{}:{}", schema.id, def.name);
                if def.mutability == Mutability::ReadOnly {
                    continue;
                }
                let value = coerce(def, v, &path)?;
                // Never to be answered, and Assent has no use of its own for it: checked, then
                // not kept, like a User's password.
                if def.mutability == Mutability::WriteOnly || def.returned == Returned::Never {
                    continue;
                }
                if def.mutability == Mutability::Immutable {
                    let old = before.and_then(|b| get_ci(b, &def.name));
                    if old.is_some_and(|o| !o.is_null() && *o != value) {
                        return Err(ScimError::mutability(format!(
                            "'{path}' is immutable: it keeps the value it was given"
                        )));
                    }
                }
                out.insert(def.name.clone(), value);
            }
            for def in schema.attributes.iter().filter(|a| a.required) {
                if out.contains_key(&def.name) {
                    continue;
                }
                let path = format!("{}:{}", schema.id, def.name);
                let had = before
                    .and_then(|b| get_ci(b, &def.name))
                    .is_some_and(|v| !v.is_null());
                return Err(if had && matches!(prior, Prior::Patched(_)) {
                    ScimError::mutability(format!(
                        "'{path}' is required: it can be replaced, not removed"
                    ))
                } else {
                    ScimError::invalid_value(format!("'{path}' is required"))
                });
            }
            if out.is_empty() {
                obj.remove(&key);
            } else {
                obj.insert(key, Value::Object(out));
            }
        }
        Ok(())
    }
}

/// One attribute's value, of its declared type.
fn coerce(def: &DeclaredAttr, v: &Value, path: &str) -> Result<Value, ScimError> {
    if def.multi_valued {
        let items: Vec<&Value> = match v {
            Value::Array(a) => a.iter().collect(),
            one => vec![one],
        };
        return items
            .into_iter()
            .map(|x| coerce_one(def, x, path))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    if v.is_array() {
        return Err(ScimError::invalid_value(format!(
            "'{path}' is single-valued: send one {}",
            def.ty.as_str()
        )));
    }
    coerce_one(def, v, path)
}

fn coerce_one(def: &DeclaredAttr, v: &Value, path: &str) -> Result<Value, ScimError> {
    let bad = || {
        ScimError::invalid_value(format!(
            "'{path}' must be {} {}",
            if def.ty == AttrType::Integer {
                "an"
            } else {
                "a"
            },
            def.ty.as_str()
        ))
    };
    Ok(match def.ty {
        AttrType::String | AttrType::Reference | AttrType::Binary => match v {
            Value::String(s) => {
                if !def.canonical_values.is_empty()
                    && !def.canonical_values.iter().any(|c| {
                        if def.case_exact {
                            c == s
                        } else {
                            c.eq_ignore_ascii_case(s)
                        }
                    })
                {
                    return Err(ScimError::invalid_value(format!(
                        "'{path}' must be one of {}",
                        def.canonical_values.join(", ")
                    )));
                }
                v.clone()
            }
            _ => return Err(bad()),
        },
        AttrType::Boolean => match v {
            Value::Bool(_) => v.clone(),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Value::Bool(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Value::Bool(false),
            _ => return Err(bad()),
        },
        AttrType::Integer => match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => v.clone(),
            Value::String(s) => s
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| bad())?,
            _ => return Err(bad()),
        },
        AttrType::Decimal => match v {
            Value::Number(_) => v.clone(),
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(bad)?,
            _ => return Err(bad()),
        },
        AttrType::DateTime => match v {
            Value::String(s) if parse_time(s).is_some() => v.clone(),
            _ => return Err(bad()),
        },
        AttrType::Complex => {
            let obj = v.as_object().ok_or_else(bad)?;
            let mut out = Map::new();
            for (k, sv) in obj {
                let sub = def
                    .sub_attributes
                    .iter()
                    .find(|s| s.name.eq_ignore_ascii_case(k))
                    .ok_or_else(|| {
                        ScimError::invalid_value(format!("'{path}.{}' is not declared", clip(k)))
                    })?;
                if sub.mutability == Mutability::ReadOnly || sv.is_null() {
                    continue;
                }
                out.insert(
                    sub.name.clone(),
                    coerce(sub, sv, &format!("{path}.{}", sub.name))?,
                );
            }
            for sub in def.sub_attributes.iter().filter(|s| s.required) {
                if !out.contains_key(&sub.name) {
                    return Err(ScimError::invalid_value(format!(
                        "'{path}.{}' is required",
                        sub.name
                    )));
                }
            }
            Value::Object(out)
        }
    })
}

#[cfg(test)]
#[path = "declared_tests.rs"]
mod tests;
