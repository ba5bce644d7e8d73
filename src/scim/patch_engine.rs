//! The PATCH engine proper: each operation of [`super::patch`] applied to a working
//! copy of the document, attribute by attribute (RFC 7644 §3.5.2.1–3), with the Entra ID
//! forms listed there.

use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

use super::error::{clip, ScimError, ScimType};
use super::eval::{check, eval, resolve, Resolved, Scope};
use super::extension;
use super::filter::{CompValue, CompareOp, Filter};
use super::members::{GroupMembershipDelta, MembershipEdits};
use super::patch::{OpKind, PatchOperation};
use super::path::{AttrPath, PatchPath};
use super::resource::{is_discarded, member_displays, member_ids, members_leniently};
use super::schema::{AttrDef, AttrType, Location, Mutability, ResourceKind, ResourceType};
use super::value::{coerce, coerce_one};

/// Whether a target came from a `path` or from the keys of a path-less value. Keys of a
/// path-less value are read like a POST body, whose readOnly attributes are ignored
/// (RFC 7644 §3.3); a `path` that names one is a `mutability` error (§3.5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Path,
    Body,
}

/// The values of multi-valued attributes a PATCH's operations may walk in all (each operation
/// on a list walks it: a value filter, `emails.type`, an add that skips values already there).
/// Entra ID and Okta walk a handful; 20,000 value-filtered removes on a user of 70,000 emails
/// (two requests of 1 MiB) would have held a runtime thread for minutes. Past it: 400 tooMany.
/// It still lets one PATCH add some 700 values to one list one operation at a time (each walks
/// the list as it has grown), and costs at most a few tenths of a second.
const MAX_WALKED: usize = 250_000;

/// A document being patched, and the membership delta collected so far.
pub(super) struct Engine {
    rt: &'static ResourceType,
    doc: Map<String, Value>,
    members: MembershipEdits,
    /// Values walked so far (`MAX_WALKED`).
    walked: usize,
}

impl Engine {
    pub(super) fn new(rt: &'static ResourceType, doc: Map<String, Value>) -> Self {
        Engine {
            rt,
            doc,
            members: MembershipEdits::default(),
            walked: 0,
        }
    }

    pub(super) fn into_parts(self) -> (Map<String, Value>, GroupMembershipDelta) {
        (self.doc, self.members.delta())
    }

    pub(super) fn operation(&mut self, op: &PatchOperation) -> Result<(), ScimError> {
        match (&op.path, op.op) {
            (None, OpKind::Remove) => Err(ScimError::no_target(
                "'remove' needs a path (RFC 7644 §3.5.2.2)",
            )),
            (None, kind) => {
                let obj = op
                    .value
                    .as_ref()
                    .and_then(Value::as_object)
                    .ok_or_else(|| {
                        ScimError::invalid_syntax(
                            "an 'add' or 'replace' without path needs an object value",
                        )
                    })?;
                for (key, v) in obj {
                    if key.eq_ignore_ascii_case("schemas") {
                        continue;
                    }
                    self.target(kind, &PatchPath::parse(key)?, Some(v), Origin::Body)?;
                }
                Ok(())
            }
            (Some(path), kind) => self.target(kind, path, op.value.as_ref(), Origin::Path),
        }
    }

    fn target(
        &mut self,
        kind: OpKind,
        path: &PatchPath,
        value: Option<&Value>,
        origin: Origin,
    ) -> Result<(), ScimError> {
        match path {
            PatchPath::Schema(urn) => self.extension(kind, urn, value),
            PatchPath::Attr(a) if is_discarded(self.rt, a.urn.as_deref(), &a.name) => Ok(()),
            PatchPath::Attr(a) if self.rt.find(a.urn.as_deref(), &a.name).is_none() => {
                match extension::target(a, &self.doc, self.rt) {
                    Some(t) => extension::patch(
                        &mut self.doc,
                        kind == OpKind::Remove,
                        kind == OpKind::Add,
                        &t,
                        value,
                    ),
                    None => self.resolve(a).map(|_| ()),
                }
            }
            PatchPath::Filtered { attr, .. }
                if attr.urn.as_deref().is_some_and(extension::is_custom_urn) =>
            {
                Err(ScimError::invalid_path(format!(
                    "'{}' is in an undeclared schema extension: value filters need a declared schema",
                    clip(&attr.to_string())
                )))
            }
            PatchPath::Attr(a) => {
                let r = self.resolve(a)?;
                if self.is_members(&r) {
                    return self.members_op(kind, None, r.sub.is_some(), value);
                }
                if !writable(&r, origin, a)? {
                    return Ok(());
                }
                self.walk(&r)?;
                match r.sub {
                    None => self.attr_op(kind, &r, value),
                    Some(sub) => self.sub_op(kind, &r, sub, value),
                }
            }
            PatchPath::Filtered { attr, filter, sub } => {
                let r = self.resolve(attr)?;
                if self.is_members(&r) {
                    return self.members_op(kind, Some(filter), sub.is_some(), value);
                }
                if !writable(&r, origin, attr)? {
                    return Ok(());
                }
                if r.attr.ty != AttrType::Complex || !r.attr.multi_valued {
                    return Err(ScimError::invalid_path(format!(
                        "'{attr}' is not a multi-valued complex attribute and takes no value filter"
                    )));
                }
                let filter = check(filter.clone(), Scope::Complex(r.attr))
                    .map_err(|e| ScimError::invalid_path(e.detail().to_owned()))?;
                let sub = match sub {
                    Some(s) => {
                        let d = r.attr.sub(s).ok_or_else(|| {
                            ScimError::invalid_path(format!(
                                "unknown attribute '{}.{}'",
                                clip(&attr.to_string()),
                                clip(s)
                            ))
                        })?;
                        if d.mutability == Mutability::ReadOnly {
                            return readonly(origin, &format!("{attr}.{s}"));
                        }
                        Some(d)
                    }
                    None => None,
                };
                self.walk(&r)?;
                self.filtered_op(kind, &r, &filter, sub, value)
            }
        }
    }

    fn resolve(&self, a: &AttrPath) -> Result<Resolved, ScimError> {
        resolve(Scope::Resource(self.rt), a).ok_or_else(|| {
            ScimError::invalid_path(format!("unknown attribute '{}'", clip(&a.to_string())))
        })
    }

    fn is_members(&self, r: &Resolved) -> bool {
        self.rt.kind == ResourceKind::Group
            && r.attr.name == "members"
            && r.location == Location::Core
    }

    /// Counts the values of the list an operation is about to walk (`MAX_WALKED`).
    fn walk(&mut self, r: &Resolved) -> Result<(), ScimError> {
        if !r.attr.multi_valued {
            return Ok(());
        }
        let held = match r.location {
            Location::Core => Some(&self.doc),
            Location::Extension(s) => self.doc.get(s.id).and_then(Value::as_object),
        };
        self.walked += held
            .and_then(|c| c.get(r.attr.name))
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if self.walked > MAX_WALKED {
            return Err(ScimError::bad_request(
                ScimType::TooMany,
                format!(
                    "the operations walk more than {MAX_WALKED} values of multi-valued attributes; \
                     send fewer operations per request"
                ),
            ));
        }
        Ok(())
    }

    /// The object an attribute lives in; extension objects are created on demand.
    fn container(&mut self, loc: Location) -> &mut Map<String, Value> {
        match loc {
            Location::Core => &mut self.doc,
            Location::Extension(s) => {
                let slot = self
                    .doc
                    .entry(s.id)
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                slot.as_object_mut().expect("just made an object")
            }
        }
    }

    /// `urn:…:enterprise:2.0:User` as a path: the whole extension object.
    fn extension(
        &mut self,
        kind: OpKind,
        urn: &str,
        value: Option<&Value>,
    ) -> Result<(), ScimError> {
        let ext = self.rt.extension_by_urn(urn).ok_or_else(|| {
            ScimError::invalid_path(format!("'{urn}' is not an extension of {}", self.rt.name))
        })?;
        if kind == OpKind::Remove {
            self.doc.remove(ext.id);
            return Ok(());
        }
        let obj = value
            .and_then(Value::as_object)
            .ok_or_else(|| ScimError::invalid_value(format!("'{}' takes an object", ext.id)))?;
        for (k, v) in obj {
            // The extension's own URN list, as in a POST body (see `resource::normalise`).
            if k.eq_ignore_ascii_case("schemas") {
                continue;
            }
            let mut p = AttrPath::parse(k)?;
            if p.urn.is_some() {
                return Err(ScimError::invalid_path(format!(
                    "'{k}' inside '{}'",
                    ext.id
                )));
            }
            p.urn = Some(ext.id.to_owned());
            self.target(kind, &PatchPath::Attr(p), Some(v), Origin::Body)?;
        }
        Ok(())
    }

    /// add / replace / remove of a whole attribute.
    fn attr_op(
        &mut self,
        kind: OpKind,
        r: &Resolved,
        value: Option<&Value>,
    ) -> Result<(), ScimError> {
        let def = r.attr;
        let v = match value {
            Some(v) => coerce(def, v, def.name)?,
            None => None,
        };
        let c = self.container(r.location);
        match (kind, v) {
            // An add of nothing changes nothing (Entra sends `"roles": []`).
            (OpKind::Add, None) => {}
            (OpKind::Add, Some(v)) => add_value(c, def, v),
            (OpKind::Replace, Some(v)) => replace_value(c, def, v),
            (OpKind::Replace, None) | (OpKind::Remove, None) => {
                c.remove(def.name);
            }
            // Remove with a value on a multi-valued attribute removes the listed values
            // only (Entra's form for members, applied alike to every list).
            (OpKind::Remove, Some(v)) if def.multi_valued => {
                if let Some(Value::Array(arr)) = c.get_mut(def.name) {
                    let gone = Listed::new(v.as_array().map(Vec::as_slice).unwrap_or_default());
                    arr.retain(|e| !gone.lists(e));
                }
            }
            (OpKind::Remove, Some(_)) => {
                c.remove(def.name);
            }
        }
        Ok(())
    }

    /// `name.givenName`, `manager.value`, or `emails.type` (every element).
    fn sub_op(
        &mut self,
        kind: OpKind,
        r: &Resolved,
        sub: &AttrDef,
        value: Option<&Value>,
    ) -> Result<(), ScimError> {
        let def = r.attr;
        let sv = match (kind, value) {
            (OpKind::Remove, _) | (_, None) => None,
            (_, Some(v)) => coerce(sub, v, &format!("{}.{}", def.name, sub.name))?,
        };
        let c = self.container(r.location);
        if !def.multi_valued {
            match sv {
                Some(x) => {
                    let obj = object_slot(c, def.name);
                    obj.insert(sub.name.to_owned(), x);
                }
                None if kind == OpKind::Add => {}
                None => {
                    if let Some(Value::Object(o)) = c.get_mut(def.name) {
                        o.remove(sub.name);
                    }
                }
            }
            return Ok(());
        }
        let arr = array_slot(c, def.name);
        match sv {
            Some(x) if arr.is_empty() => {
                let mut m = Map::new();
                m.insert(sub.name.to_owned(), x);
                arr.push(Value::Object(m));
            }
            Some(x) => {
                for e in arr.iter_mut().filter_map(Value::as_object_mut) {
                    e.insert(sub.name.to_owned(), x.clone());
                }
            }
            None if kind == OpKind::Add => {}
            None => {
                for e in arr.iter_mut().filter_map(Value::as_object_mut) {
                    e.remove(sub.name);
                }
            }
        }
        Ok(())
    }

    /// `emails[type eq "work"]` and `emails[type eq "work"].value`.
    fn filtered_op(
        &mut self,
        kind: OpKind,
        r: &Resolved,
        filter: &Filter,
        sub: Option<&AttrDef>,
        value: Option<&Value>,
    ) -> Result<(), ScimError> {
        let def = r.attr;
        let new = match (kind, value) {
            (OpKind::Remove, _) | (_, None) => None,
            (_, Some(v)) => match sub {
                Some(s) => coerce(s, v, &format!("{}.{}", def.name, s.name))?,
                None => coerce_one(def, v, def.name)?,
            },
        };
        let c = self.container(r.location);
        let arr = array_slot(c, def.name);
        let matched: Vec<usize> = (0..arr.len())
            .filter(|&i| eval(filter, &arr[i], Scope::Complex(def)))
            .collect();
        let mut written = Vec::new();
        match (kind, sub, new) {
            (OpKind::Remove, None, _) | (OpKind::Replace, None, None) => {
                // `matched` is in order: each element is the next one's or not.
                let mut next = matched.iter().peekable();
                let mut i = 0;
                arr.retain(|_| {
                    let gone = next.next_if_eq(&&i).is_some();
                    i += 1;
                    !gone
                });
            }
            (OpKind::Remove, Some(s), _) | (OpKind::Replace, Some(s), None) => {
                for &i in &matched {
                    if let Some(o) = arr[i].as_object_mut() {
                        o.remove(s.name);
                    }
                }
            }
            (OpKind::Add, _, None) => {}
            (_, Some(s), Some(x)) if !matched.is_empty() => {
                for &i in &matched {
                    if let Some(o) = arr[i].as_object_mut() {
                        o.insert(s.name.to_owned(), x.clone());
                    }
                }
                written = matched;
            }
            (_, None, Some(Value::Object(x))) if !matched.is_empty() => {
                for &i in &matched {
                    match (kind, arr[i].as_object_mut()) {
                        (OpKind::Add, Some(o)) => o.extend(x.clone()),
                        _ => arr[i] = Value::Object(x.clone()),
                    }
                }
                written = matched;
            }
            (_, _, Some(x)) => {
                // No element matches: build one from the filter (Entra ID's behaviour).
                let mut entry = eq_template(filter, def).ok_or_else(|| {
                    ScimError::no_target("no value matches the filter, and it is not a set of 'eq' terms to create one from")
                })?;
                match (sub, x) {
                    (Some(s), x) => {
                        entry.insert(s.name.to_owned(), x);
                    }
                    (None, Value::Object(o)) => entry.extend(o),
                    (None, _) => {
                        return Err(ScimError::invalid_value(format!(
                            "'{}' takes an object",
                            def.name
                        )))
                    }
                }
                arr.push(Value::Object(entry));
                written.push(arr.len() - 1);
            }
        }
        settle_primary(arr, &written);
        Ok(())
    }

    /// Group members become a [`GroupMembershipDelta`], never a rewritten list.
    fn members_op(
        &mut self,
        kind: OpKind,
        filter: Option<&Filter>,
        has_sub: bool,
        value: Option<&Value>,
    ) -> Result<(), ScimError> {
        let immutable = || {
            ScimError::mutability(
                "members are immutable: add or remove whole members (RFC 7643 §4.2)",
            )
        };
        if has_sub {
            return Err(immutable());
        }
        let def = self
            .rt
            .schema
            .attr("members")
            .expect("Group schema has members");
        let coerced = |v: Option<&Value>| -> Result<Option<Value>, ScimError> {
            match v {
                Some(v) => coerce(def, &members_leniently(v), "members"),
                None => Ok(None),
            }
        };
        let ids = |v: Option<&Value>| member_ids(coerced(v)?.as_ref());
        match (kind, filter) {
            (OpKind::Add | OpKind::Replace, None) => {
                let c = coerced(value)?;
                let ids = member_ids(c.as_ref())?;
                if kind == OpKind::Add {
                    self.members.add(&ids);
                } else {
                    self.members.replace(&ids);
                }
                self.members.note_displays(member_displays(c.as_ref()));
            }
            (OpKind::Remove, None) => match value.filter(|v| !v.is_null()) {
                Some(v) => self.members.remove(&ids(Some(v))?),
                None => self.members.replace::<String>(&[]),
            },
            (OpKind::Remove, Some(f)) => {
                let selected = value_eq_ids(f).ok_or_else(|| {
                    ScimError::invalid_path(
                        "select members with 'value eq \"id\"' terms joined by 'or'",
                    )
                })?;
                self.members.remove(&selected);
            }
            (_, Some(_)) => return Err(immutable()),
        }
        Ok(())
    }
}

/// Whether a resolved target may be written; readOnly is ignored from a body and an error
/// from a path.
fn writable(r: &Resolved, origin: Origin, path: &AttrPath) -> Result<bool, ScimError> {
    let ro = r.attr.mutability == Mutability::ReadOnly
        || r.sub.is_some_and(|s| s.mutability == Mutability::ReadOnly);
    if ro {
        readonly(origin, &path.to_string())?;
        return Ok(false);
    }
    Ok(true)
}

fn readonly(origin: Origin, name: &str) -> Result<(), ScimError> {
    match origin {
        Origin::Body => Ok(()),
        Origin::Path => Err(ScimError::mutability(format!("'{name}' is readOnly"))),
    }
}

fn object_slot<'m>(c: &'m mut Map<String, Value>, name: &str) -> &'m mut Map<String, Value> {
    let slot = c.entry(name).or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut().expect("just made an object")
}

fn array_slot<'m>(c: &'m mut Map<String, Value>, name: &str) -> &'m mut Vec<Value> {
    let slot = c.entry(name).or_insert_with(|| Value::Array(Vec::new()));
    if !slot.is_array() {
        *slot = Value::Array(Vec::new());
    }
    slot.as_array_mut().expect("just made an array")
}

/// RFC 7644 §3.5.2.1 add: multi-valued values are appended (an identical one is not
/// added twice), complex ones merged, simple ones set.
fn add_value(c: &mut Map<String, Value>, def: &AttrDef, v: Value) {
    match v {
        Value::Array(items) if def.multi_valued => {
            let arr = array_slot(c, def.name);
            // Where each element is, by its text: a list of n additions to a list of m elements
            // is n + m lookups, not n × m comparisons (a 1 MiB PATCH of 70,000 emails took 95 s
            // of a runtime thread).
            let mut at: HashMap<String, usize> = HashMap::with_capacity(arr.len());
            for (i, e) in arr.iter().enumerate() {
                // The first of equal elements, as a search from the front finds.
                at.entry(e.to_string()).or_insert(i);
            }
            let mut written = Vec::new();
            for item in items {
                let i = *at.entry(item.to_string()).or_insert_with(|| {
                    arr.push(item);
                    arr.len() - 1
                });
                written.push(i);
            }
            settle_primary(arr, &written);
        }
        Value::Object(o) if def.ty == AttrType::Complex => object_slot(c, def.name).extend(o),
        v => {
            c.insert(def.name.to_owned(), v);
        }
    }
}

/// RFC 7644 §3.5.2.3 replace: lists are replaced whole; a complex value replaces the
/// sub-attributes it names and leaves the others unchanged.
fn replace_value(c: &mut Map<String, Value>, def: &AttrDef, v: Value) {
    match v {
        Value::Object(o) if def.ty == AttrType::Complex && !def.multi_valued => {
            object_slot(c, def.name).extend(o)
        }
        v => {
            c.insert(def.name.to_owned(), v);
        }
    }
}

/// The elements a remove-with-value lists (`same_entry`), looked up by their text: a list of n
/// against m elements is n + m lookups, not n × m comparisons.
struct Listed {
    /// The `value`s of the listed entries that have one.
    values: HashSet<String>,
    /// The listed entries without a `value`, whole.
    whole: HashSet<String>,
}

impl Listed {
    fn new(listed: &[Value]) -> Listed {
        let mut out = Listed {
            values: HashSet::new(),
            whole: HashSet::new(),
        };
        for l in listed {
            match l.get("value") {
                Some(v) => out.values.insert(v.to_string()),
                None => out.whole.insert(l.to_string()),
            };
        }
        out
    }

    /// Whether `element` is the `same_entry` as one listed. An element with a `value` can only
    /// equal a listed entry with the same one; one without, only a listed entry without.
    fn lists(&self, element: &Value) -> bool {
        match element.get("value") {
            Some(v) => self.values.contains(&v.to_string()),
            None => self.whole.contains(&element.to_string()),
        }
    }
}

/// An element listed in a remove-with-value: same `value` when it has one, else equal. The rule
/// `Listed` answers by lookups; kept as the tests' reference.
#[cfg(test)]
fn same_entry(element: &Value, listed: &Value) -> bool {
    match (element.get("value"), listed.get("value")) {
        (Some(a), Some(b)) => a == b,
        _ => element == listed,
    }
}

/// RFC 7644 §3.5.2: a value written with `primary: true` makes every other value of the
/// list non-primary.
fn settle_primary(arr: &mut [Value], written: &[usize]) {
    let is_primary = |v: &Value| v.get("primary") == Some(&Value::Bool(true));
    let newly: Vec<usize> = written
        .iter()
        .copied()
        .filter(|&i| is_primary(&arr[i]))
        .collect();
    if newly.len() != 1 {
        // None written, or several (the final validation refuses two primaries).
        return;
    }
    for (i, e) in arr.iter_mut().enumerate() {
        if i != newly[0] && is_primary(e) {
            e["primary"] = Value::Bool(false);
        }
    }
}

/// The entry a filter of `eq` terms describes: `type eq "work"` → `{"type":"work"}`.
fn eq_template(filter: &Filter, def: &AttrDef) -> Option<Map<String, Value>> {
    let mut out = Map::new();
    let terms: &[Filter] = match filter {
        Filter::And(v) => v,
        single => std::slice::from_ref(single),
    };
    for t in terms {
        let Filter::Compare {
            path,
            op: CompareOp::Eq,
            value,
        } = t
        else {
            return None;
        };
        let sub = def.sub(&path.name)?;
        let v = match value {
            CompValue::Str(s) => Value::String(s.clone()),
            CompValue::Bool(b) => Value::Bool(*b),
            CompValue::Num(n) => Value::Number(n.clone()),
            CompValue::Null => return None,
        };
        out.insert(sub.name.to_owned(), v);
    }
    Some(out)
}

/// The ids of `members[value eq "a" or value eq "b"]`.
fn value_eq_ids(filter: &Filter) -> Option<Vec<String>> {
    let terms: &[Filter] = match filter {
        Filter::Or(v) => v,
        single => std::slice::from_ref(single),
    };
    terms
        .iter()
        .map(|t| match t {
            Filter::Compare {
                path,
                op: CompareOp::Eq,
                value: CompValue::Str(id),
            } if path.urn.is_none()
                && path.sub.is_none()
                && path.name.eq_ignore_ascii_case("value") =>
            {
                Some(id.clone())
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `Listed` finds exactly the elements `same_entry` would, on every pair of a mixed bag:
    /// entries with and without `value`, the same `value` with other sub-attributes, strings,
    /// numbers of either kind.
    #[test]
    fn listed_agrees_with_same_entry() {
        let bag = [
            json!({"value": "a"}),
            json!({"value": "a", "type": "work"}),
            json!({"value": "b", "primary": true}),
            json!({"value": 1}),
            json!({"value": 1.0}),
            json!({"value": "1"}),
            json!({"type": "work"}),
            json!({"type": "home", "display": "x"}),
            json!("a"),
            json!(1),
            json!({}),
        ];
        for n in 0..bag.len() {
            for listed in bag.windows(n + 1) {
                let found = Listed::new(listed);
                for element in &bag {
                    assert_eq!(
                        found.lists(element),
                        listed.iter().any(|l| same_entry(element, l)),
                        "{element} against {listed:?}"
                    );
                }
            }
        }
    }
}
