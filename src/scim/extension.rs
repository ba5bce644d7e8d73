//! Schema extensions Assent does not define (issue 15): any
//! `urn:ietf:params:scim:schemas:extension:…` object on a User or Group, such as Entra ID's
//! `urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User` or an Okta custom
//! attribute, is kept and returned as sent, changed by PATCH (a URN-qualified path or a path-less
//! value) and filterable.
//!
//! Such an extension has no definition in the engine, so its values are read by their JSON
//! type: strings compare case-insensitively (after [`fold_case`], RFC 7643 §2.3.1's default for
//! strings), numbers numerically, booleans by `eq`/`ne`. Attribute names match case-insensitively
//! (RFC 7643 §2.1); the document keeps them as sent.
//!
//! An attribute path names one of these as `<extension URN>:<attribute>[.<sub>]`; the URN ends at
//! the last colon. A path that is the URN alone (its last segment is the resource type's name, as
//! every extension URN of RFC 7643 §3.3 does, or it names an extension the resource carries)
//! names the whole extension object.
//!
//! Filters on these attributes are planned onto `scim_ext_values` (migrations/*/0008): one row
//! per scalar value, `(workspace, resource type, resource id, lower-case path, typed key)`, kept
//! in the resource's write transaction from [`index_values`]. `eq`/`ne` on a string or boolean
//! is exact there; on a number it narrows and the evaluator confirms.

use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

use super::error::{clip, ScimError};
use super::filter::{CompValue, CompareOp};
use super::path::AttrPath;
use super::schema::{known_schema_urns, ResourceType};
use super::value::{fold_case, get_ci, is_assigned, key_ci};

/// The URN prefix of extension schemas (RFC 7643 §3.3, §10.2.2's registry namespace).
pub const EXTENSION_PREFIX: &str = "urn:ietf:params:scim:schemas:extension:";

/// Most values a resource may index across its undeclared extensions: a bound on the rows one
/// write adds to `scim_ext_values`.
pub const MAX_EXTENSION_VALUES: usize = 256;

/// Longest folded string kept as is in a typed key; a longer one is keyed by its SHA-256, so an
/// index entry stays small (Postgres refuses B-tree entries over about 2.7 kB) and `eq` exact.
const MAX_KEY_TEXT: usize = 256;

/// Whether `urn` names an extension the engine does not define: it has [`EXTENSION_PREFIX`] and is
/// not one of the engine's own schemas (the enterprise extension stays defined, and is refused on
/// a Group).
pub fn is_custom_urn(urn: &str) -> bool {
    urn.len() > EXTENSION_PREFIX.len()
        && urn.is_char_boundary(EXTENSION_PREFIX.len())
        && urn[..EXTENSION_PREFIX.len()].eq_ignore_ascii_case(EXTENSION_PREFIX)
        && !known_schema_urns()
            .iter()
            .any(|k| k.eq_ignore_ascii_case(urn))
}

/// Whether `text` begins with one of the engine's own schema URNs and then an attribute's name
/// (`<urn>:<attribute>`): an extension URN longer than one of them by a colon would read as one
/// of its attributes, so it cannot be declared (`declared.rs`).
pub fn extends_known_urn(text: &str) -> bool {
    known_prefix(text).is_some_and(|rest| rest.starts_with(':'))
}

/// What follows one of the engine's own schema URNs at the start of `text` (case-insensitively).
fn known_prefix(text: &str) -> Option<&str> {
    known_schema_urns().iter().find_map(|urn| {
        let head = text.get(..urn.len())?;
        head.eq_ignore_ascii_case(urn).then(|| &text[urn.len()..])
    })
}

/// Whether a request body names a custom extension anywhere (a key, a PATCH path, a value): an
/// [`EXTENSION_PREFIX`] URN that is not one of the engine's own, whole (a quote ends it, or a
/// colon begins an attribute's name). Entra ID names the enterprise extension in most PATCHes
/// (a department, a manager), and those need no declared schema read.
pub fn mentions_custom(body: &Value) -> bool {
    let text = body.to_string();
    let lower = text.to_ascii_lowercase();
    lower
        .match_indices(EXTENSION_PREFIX)
        .any(|(at, _)| !known_prefix(&text[at..]).is_some_and(|rest| rest.starts_with(['"', ':'])))
}

/// The custom extension keys of a document, in order.
pub fn custom_keys(doc: &Map<String, Value>) -> impl Iterator<Item = &String> {
    doc.keys().filter(|k| is_custom_urn(k))
}

/// What an attribute path names among the custom extensions of `doc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The whole extension object whose URN is this.
    Whole(String),
    /// An attribute (and sub-attribute) of the extension whose URN is `urn`.
    Attr {
        urn: String,
        name: String,
        sub: Option<String>,
    },
}

/// Reads an attribute path as a custom-extension target; None when it names none.
pub fn target(path: &AttrPath, doc: &Map<String, Value>, rt: &ResourceType) -> Option<Target> {
    let urn = path.urn.as_deref()?;
    if path.sub.is_none() {
        let whole = format!("{urn}:{}", path.name);
        if is_custom_urn(&whole)
            && (key_ci(doc, &whole).is_some() || path.name.eq_ignore_ascii_case(rt.name))
        {
            return Some(Target::Whole(whole));
        }
    }
    is_custom_urn(urn).then(|| Target::Attr {
        urn: urn.to_owned(),
        name: path.name.clone(),
        sub: path.sub.clone(),
    })
}

/// A custom extension object of a POST/PUT body (or a PATCH result), as it is kept: `schemas`
/// inside it (scim2-models repeats the URN there) and null values dropped, names that differ only
/// by case refused. None when nothing is left.
pub fn normalise_object(urn: &str, value: &Value) -> Result<Option<Value>, ScimError> {
    let obj = match value {
        Value::Null => return Ok(None),
        Value::Object(o) => o,
        _ => {
            return Err(ScimError::invalid_syntax(format!(
                "'{}' must be an object",
                clip(urn)
            )))
        }
    };
    let mut out = Map::new();
    for (k, v) in obj {
        if k.eq_ignore_ascii_case("schemas") || v.is_null() {
            continue;
        }
        if key_ci(&out, k).is_some() {
            return Err(ScimError::invalid_syntax(format!(
                "attribute '{}:{}' is given more than once",
                clip(urn),
                clip(k)
            )));
        }
        out.insert(k.clone(), v.clone());
    }
    Ok((!out.is_empty()).then_some(Value::Object(out)))
}

/// One row of `scim_ext_values`: the lower-case path (`<urn>:<name>[.<sub>]`) and the typed key.
pub type IndexedValue = (String, String);

/// The lower-case path of an attribute of a custom extension, as `scim_ext_values` keys it.
pub fn index_path(urn: &str, name: &str, sub: Option<&str>) -> String {
    let mut p = format!("{}:{}", urn.to_ascii_lowercase(), name.to_ascii_lowercase());
    if let Some(s) = sub {
        p.push('.');
        p.push_str(&s.to_ascii_lowercase());
    }
    p
}

/// The typed key of a scalar value: `s:` folded text (or `h:` its SHA-256 when long), `n:` a
/// number, `b:` a boolean. None for what a filter never matches by `eq` (null, empty text,
/// arrays and objects, which [`index_values`] walks into).
pub fn value_key(v: &Value) -> Option<String> {
    match v {
        Value::Bool(b) => Some(format!("b:{b}")),
        Value::Number(n) => Some(format!("n:{}", number_key(n))),
        Value::String(s) if !s.is_empty() => Some(text_key(s)),
        _ => None,
    }
}

/// The typed key a filter literal is looked up by.
pub fn literal_key(lit: &CompValue) -> Option<String> {
    match lit {
        CompValue::Str(s) if !s.is_empty() => Some(text_key(s)),
        CompValue::Num(n) => Some(format!("n:{}", number_key(n))),
        CompValue::Bool(b) => Some(format!("b:{b}")),
        _ => None,
    }
}

fn text_key(s: &str) -> String {
    let folded = fold_case(s);
    if folded.len() <= MAX_KEY_TEXT {
        format!("s:{folded}")
    } else {
        let digest = Sha256::digest(folded.as_bytes());
        format!("h:{}", hex::encode(digest))
    }
}

/// Integers as integers; other numbers by their f64 rendering (an integral f64 as the integer),
/// so that `42` and `42.0` share a key. Numbers are re-checked by the evaluator anyway.
fn number_key(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => (f as i64).to_string(),
        Some(f) => f.to_string(),
        None => n.to_string(),
    }
}

/// Every indexed value of a document's custom extensions: scalars of an attribute, of the
/// elements of a multi-valued one, and of the sub-attributes of a complex one (the values the
/// evaluator's `values` yields, path by path). Refused past [`MAX_EXTENSION_VALUES`].
pub fn index_values(doc: &Value) -> Result<Vec<IndexedValue>, ScimError> {
    let mut out = Vec::new();
    let Some(obj) = doc.as_object() else {
        return Ok(out);
    };
    for urn in custom_keys(obj) {
        for (name, v) in obj[urn].as_object().into_iter().flatten() {
            let path = index_path(urn, name, None);
            walk(v, &path, true, &mut out);
        }
    }
    if out.len() > MAX_EXTENSION_VALUES {
        return Err(ScimError::invalid_value(format!(
            "a resource may carry at most {MAX_EXTENSION_VALUES} values in undeclared schema extensions"
        )));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn walk(v: &Value, path: &str, top: bool, out: &mut Vec<IndexedValue>) {
    match v {
        Value::Array(items) => {
            for item in items {
                // An array inside an array is not an attribute value SCIM knows.
                if !item.is_array() {
                    walk(item, path, top, out);
                }
            }
        }
        Value::Object(subs) if top => {
            for (sub, sv) in subs {
                let p = format!("{path}.{}", sub.to_ascii_lowercase());
                walk(sv, &p, false, out);
            }
        }
        Value::Object(_) => {}
        scalar => {
            if let Some(key) = value_key(scalar) {
                out.push((path.to_owned(), key));
            }
        }
    }
}

/// Every value at an attribute path of a custom extension in `resource`, arrays flattened (the
/// evaluator's reading of [`super::eval`], without a definition).
pub fn values<'v>(resource: &'v Value, urn: &str, name: &str, sub: Option<&str>) -> Vec<&'v Value> {
    let mut out = Vec::new();
    let Some(v) = get_ci(resource, urn).and_then(|e| get_ci(e, name)) else {
        return out;
    };
    flatten(v, &mut out);
    if let Some(sub) = sub {
        let parents = std::mem::take(&mut out);
        for p in parents {
            if let Some(v) = get_ci(p, sub) {
                flatten(v, &mut out);
            }
        }
    }
    out
}

fn flatten<'v>(v: &'v Value, out: &mut Vec<&'v Value>) {
    match v {
        Value::Array(a) => out.extend(a.iter().filter(|x| !x.is_null())),
        Value::Null => {}
        other => out.push(other),
    }
}

/// Checks a filter comparison on a custom-extension attribute: booleans take only `eq`/`ne`,
/// substrings only strings. Errors are `invalidFilter`.
pub fn check_literal(path: &AttrPath, op: CompareOp, lit: &CompValue) -> Result<(), ScimError> {
    let bad = |why: &str| ScimError::invalid_filter(format!("'{path} {}': {why}", op.as_str()));
    match lit {
        CompValue::Null if !matches!(op, CompareOp::Eq | CompareOp::Ne) => {
            Err(bad("only eq and ne compare with null"))
        }
        CompValue::Bool(_) if !matches!(op, CompareOp::Eq | CompareOp::Ne) => {
            Err(bad("a boolean takes only eq, ne and pr"))
        }
        CompValue::Num(_) if op.is_substring() => Err(bad("numbers take no substring operator")),
        _ => Ok(()),
    }
}

/// Whether some value at the path matches (`ne`: none equals; `eq null`: none assigned).
pub fn matches(resource: &Value, path: &AttrPath, op: CompareOp, lit: &CompValue) -> bool {
    let Some(urn) = path.urn.as_deref() else {
        return false;
    };
    let vals = values(resource, urn, &path.name, path.sub.as_deref());
    match (op, lit) {
        (CompareOp::Eq, CompValue::Null) => !vals.into_iter().any(is_assigned),
        (CompareOp::Ne, CompValue::Null) => vals.into_iter().any(is_assigned),
        (CompareOp::Ne, _) => !vals.into_iter().any(|x| compare(x, CompareOp::Eq, lit)),
        _ => vals.into_iter().any(|x| compare(x, op, lit)),
    }
}

/// Whether some value at the path is assigned (`pr`).
pub fn present(resource: &Value, path: &AttrPath) -> bool {
    path.urn.as_deref().is_some_and(|urn| {
        values(resource, urn, &path.name, path.sub.as_deref())
            .into_iter()
            .any(is_assigned)
    })
}

fn compare(x: &Value, op: CompareOp, lit: &CompValue) -> bool {
    use std::cmp::Ordering;
    let ordered = |o: Ordering| match op {
        CompareOp::Eq => o == Ordering::Equal,
        CompareOp::Ne => o != Ordering::Equal,
        CompareOp::Gt => o == Ordering::Greater,
        CompareOp::Ge => o != Ordering::Less,
        CompareOp::Lt => o == Ordering::Less,
        CompareOp::Le => o != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    };
    match (x, lit) {
        (Value::String(s), CompValue::Str(l)) => {
            let (s, l) = (fold_case(s), fold_case(l));
            match op {
                CompareOp::Co => s.contains(&l),
                CompareOp::Sw => s.starts_with(&l),
                CompareOp::Ew => s.ends_with(&l),
                _ => ordered(s.cmp(&l)),
            }
        }
        (Value::Number(a), CompValue::Num(b)) => {
            let o = match (a.as_i64(), b.as_i64()) {
                (Some(a), Some(b)) => Some(a.cmp(&b)),
                _ => a
                    .as_f64()
                    .zip(b.as_f64())
                    .and_then(|(a, b)| a.partial_cmp(&b)),
            };
            o.is_some_and(ordered)
        }
        (Value::Bool(a), CompValue::Bool(b)) => op == CompareOp::Eq && a == b,
        _ => false,
    }
}

/// Applies one PATCH operation to a custom extension of `doc` (RFC 7644 §3.5.2 on values without
/// a definition): `add` appends to a multi-valued attribute and sets others, `replace` sets,
/// `remove` deletes; on the whole extension, `add`/`replace` set each attribute of the value.
pub fn patch(
    doc: &mut Map<String, Value>,
    remove: bool,
    add: bool,
    target: &Target,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    match target {
        Target::Whole(urn) => {
            if remove {
                if let Some(k) = key_ci(doc, urn).cloned() {
                    doc.remove(&k);
                }
                return Ok(());
            }
            let obj = value.and_then(Value::as_object).ok_or_else(|| {
                ScimError::invalid_value(format!("'{}' takes an object", clip(urn)))
            })?;
            for (k, v) in obj {
                if k.eq_ignore_ascii_case("schemas") {
                    continue;
                }
                let t = Target::Attr {
                    urn: urn.clone(),
                    name: k.clone(),
                    sub: None,
                };
                patch(doc, false, add, &t, Some(v))?;
            }
            Ok(())
        }
        Target::Attr { urn, name, sub } => {
            let value = value.filter(|v| !v.is_null());
            let ext_key = key_ci(doc, urn).cloned().unwrap_or_else(|| urn.clone());
            let ext = doc
                .entry(ext_key.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if !ext.is_object() {
                *ext = Value::Object(Map::new());
            }
            let ext = ext.as_object_mut().expect("just made an object");
            let attr_key = key_ci(ext, name).cloned().unwrap_or_else(|| name.clone());
            match (sub, value) {
                (None, None) => {
                    ext.remove(&attr_key);
                }
                (None, Some(v)) if remove => {
                    // `remove` with a value: take those values out of a multi-valued attribute.
                    if let Some(Value::Array(items)) = ext.get_mut(&attr_key) {
                        let gone: Vec<&Value> = match v {
                            Value::Array(a) => a.iter().collect(),
                            one => vec![one],
                        };
                        items.retain(|x| !gone.contains(&x));
                    } else {
                        ext.remove(&attr_key);
                    }
                }
                (None, Some(v)) => {
                    let merged = match (add, ext.get_mut(&attr_key)) {
                        (true, Some(Value::Array(items))) => {
                            let more: Vec<Value> = match v {
                                Value::Array(a) => a.clone(),
                                one => vec![one.clone()],
                            };
                            for m in more {
                                if !items.contains(&m) {
                                    items.push(m);
                                }
                            }
                            true
                        }
                        _ => false,
                    };
                    if !merged {
                        ext.insert(attr_key, v.clone());
                    }
                }
                (Some(sub), v) => {
                    let slot = ext
                        .entry(attr_key)
                        .or_insert_with(|| Value::Object(Map::new()));
                    let Value::Object(complex) = slot else {
                        return Err(ScimError::invalid_path(format!(
                            "'{}:{}' is not complex: '.{}' names nothing",
                            clip(urn),
                            clip(name),
                            clip(sub)
                        )));
                    };
                    let sub_key = key_ci(complex, sub).cloned().unwrap_or_else(|| sub.clone());
                    match v {
                        Some(v) if !remove => {
                            complex.insert(sub_key, v.clone());
                        }
                        _ => {
                            complex.remove(&sub_key);
                        }
                    }
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
#[path = "extension_tests.rs"]
mod tests;
