//! Filters against a resource type: [`compile`] checks a parsed filter against the
//! schema (RFC 7644 §3.4.2.2), and [`matches()`] evaluates it on a resource's JSON.
//!
//! Semantics chosen where the RFC leaves room, applied identically by [`super::sql`]:
//! - a multi-valued attribute matches if any value matches; `ne` is "no value equals"
//!   (so an absent attribute is `ne` anything), i.e. exactly `not (… eq …)`;
//! - a complex attribute compared without a sub-attribute compares its `value`
//!   (`emails co "example.com"`, RFC 7644 §3.4.2.2 example);
//! - `eq null` means unassigned and `ne null` means `pr`;
//! - strings of `caseExact: false` attributes compare after [`fold_case`]; dateTimes
//!   compare as instants; numbers numerically.

use std::cmp::Ordering;

use serde_json::Value;

use super::error::{clip, ScimError};
use super::extension;
use super::filter::{CompValue, CompareOp, Filter};
use super::path::AttrPath;
use super::schema::{AttrDef, AttrType, Location, ResourceType};
use super::value::{fold_case, get_ci, is_assigned, parse_time};

/// Where a filter's paths are resolved.
#[derive(Debug, Clone, Copy)]
pub(super) enum Scope {
    /// Top-level paths of a resource.
    Resource(&'static ResourceType),
    /// Sub-attribute names inside a value filter, e.g. `type` in `emails[type eq "work"]`.
    Complex(&'static AttrDef),
}

/// A path resolved against a scope.
#[derive(Debug, Clone, Copy)]
pub(super) struct Resolved {
    pub location: Location,
    pub attr: &'static AttrDef,
    pub sub: Option<&'static AttrDef>,
}

impl Resolved {
    /// The definition of the values the path yields.
    pub fn leaf(&self) -> &'static AttrDef {
        self.sub.unwrap_or(self.attr)
    }

    /// Every value at the path in `container`, arrays flattened.
    pub fn values<'v>(&self, container: &'v Value) -> Vec<&'v Value> {
        let base = match self.location {
            Location::Core => Some(container),
            Location::Extension(s) => get_ci(container, s.id),
        };
        let mut out = Vec::new();
        if let Some(v) = base.and_then(|b| get_ci(b, self.attr.name)) {
            flatten(v, &mut out);
        }
        if let Some(sub) = self.sub {
            let parents = std::mem::take(&mut out);
            for p in parents {
                if let Some(v) = get_ci(p, sub.name) {
                    flatten(v, &mut out);
                }
            }
        }
        out
    }
}

fn flatten<'v>(v: &'v Value, out: &mut Vec<&'v Value>) {
    match v {
        Value::Array(a) => out.extend(a.iter().filter(|x| !x.is_null())),
        Value::Null => {}
        other => out.push(other),
    }
}

pub(super) fn resolve(scope: Scope, path: &AttrPath) -> Option<Resolved> {
    match scope {
        Scope::Resource(rt) => {
            let found = rt.find(path.urn.as_deref(), &path.name)?;
            let sub = match &path.sub {
                Some(s) => Some(found.def.sub(s)?),
                None => None,
            };
            Some(Resolved {
                location: found.location,
                attr: found.def,
                sub,
            })
        }
        Scope::Complex(parent) => {
            if path.urn.is_some() || path.sub.is_some() {
                return None;
            }
            Some(Resolved {
                location: Location::Core,
                attr: parent.sub(&path.name)?,
                sub: None,
            })
        }
    }
}

/// Parses `input` and checks it against `rt`: unknown attributes, operators that do not
/// apply to an attribute's type, and literals of the wrong type are `invalidFilter`.
///
/// The result is normalised for [`matches()`] and [`super::sql::plan`]: boolean literals
/// sent as strings (`primary eq "True"`, as Entra ID writes role filters) become
/// booleans, and a comparison on a complex attribute is rewritten to its `value`.
pub fn compile(input: &str, rt: &'static ResourceType) -> Result<Filter, ScimError> {
    let f = Filter::parse(input)?;
    check(f, Scope::Resource(rt))
}

pub(super) fn check(f: Filter, scope: Scope) -> Result<Filter, ScimError> {
    Ok(match f {
        Filter::And(v) => Filter::And(
            v.into_iter()
                .map(|x| check(x, scope))
                .collect::<Result<_, _>>()?,
        ),
        Filter::Or(v) => Filter::Or(
            v.into_iter()
                .map(|x| check(x, scope))
                .collect::<Result<_, _>>()?,
        ),
        Filter::Not(x) => Filter::Not(Box::new(check(*x, scope)?)),
        Filter::Present(path) => {
            if !is_custom(scope, &path) {
                resolve_or_err(scope, &path)?;
            }
            Filter::Present(path)
        }
        Filter::ValuePath { attr, filter } => {
            if is_custom(scope, &attr) {
                return Err(ScimError::invalid_filter(format!(
                    "'{}' is in an undeclared schema extension: value filters need a declared schema",
                    clip(&attr.to_string())
                )));
            }
            let r = resolve_or_err(scope, &attr)?;
            if r.sub.is_some() || r.attr.ty != AttrType::Complex {
                return Err(ScimError::invalid_filter(format!(
                    "'{attr}' is not a complex attribute and takes no value filter"
                )));
            }
            let inner = check(*filter, Scope::Complex(r.attr))?;
            Filter::ValuePath {
                attr,
                filter: Box::new(inner),
            }
        }
        Filter::Compare { path, op, value } if is_custom(scope, &path) => {
            extension::check_literal(&path, op, &value)?;
            Filter::Compare { path, op, value }
        }
        Filter::Compare {
            mut path,
            op,
            value,
        } => {
            let mut r = resolve_or_err(scope, &path)?;
            if r.leaf().ty == AttrType::Complex {
                // `emails co "x"` compares `emails.value`.
                let value_def = r
                    .leaf()
                    .sub("value")
                    .filter(|_| r.sub.is_none())
                    .ok_or_else(|| {
                        ScimError::invalid_filter(format!(
                            "compare a sub-attribute of '{path}', not the attribute"
                        ))
                    })?;
                r.sub = Some(value_def);
                path.sub = Some(value_def.name.to_owned());
            }
            let value = check_literal(r.leaf(), &path, op, value)?;
            Filter::Compare { path, op, value }
        }
    })
}

/// Whether a path of a resource names an attribute of an undeclared schema extension
/// ([`super::extension`]), read without a definition.
pub(super) fn is_custom(scope: Scope, path: &AttrPath) -> bool {
    matches!(scope, Scope::Resource(rt) if rt.find(path.urn.as_deref(), &path.name).is_none())
        && path.urn.as_deref().is_some_and(extension::is_custom_urn)
}

fn resolve_or_err(scope: Scope, path: &AttrPath) -> Result<Resolved, ScimError> {
    resolve(scope, path).ok_or_else(|| {
        ScimError::invalid_filter(format!("unknown attribute '{}'", clip(&path.to_string())))
    })
}

fn check_literal(
    def: &AttrDef,
    path: &AttrPath,
    op: CompareOp,
    value: CompValue,
) -> Result<CompValue, ScimError> {
    let bad = |why: &str| ScimError::invalid_filter(format!("'{path} {}': {why}", op.as_str()));
    if value == CompValue::Null {
        return match op {
            CompareOp::Eq | CompareOp::Ne => Ok(value),
            _ => Err(bad("only eq and ne compare with null")),
        };
    }
    match def.ty {
        AttrType::Boolean => {
            if op != CompareOp::Eq && op != CompareOp::Ne {
                return Err(bad("a boolean takes only eq, ne and pr"));
            }
            match value {
                CompValue::Bool(_) => Ok(value),
                CompValue::Str(s) if s.eq_ignore_ascii_case("true") => Ok(CompValue::Bool(true)),
                CompValue::Str(s) if s.eq_ignore_ascii_case("false") => Ok(CompValue::Bool(false)),
                _ => Err(bad("expected true or false")),
            }
        }
        AttrType::Binary if op.is_ordering() => Err(bad("binary attributes cannot be ordered")),
        AttrType::String | AttrType::Reference | AttrType::Binary => match value {
            CompValue::Str(_) => Ok(value),
            _ => Err(bad("expected a string")),
        },
        AttrType::Integer | AttrType::Decimal => match value {
            CompValue::Num(_) if !op.is_substring() => Ok(value),
            CompValue::Num(_) => Err(bad("numbers take no substring operator")),
            _ => Err(bad("expected a number")),
        },
        AttrType::DateTime => match &value {
            CompValue::Str(_) if op.is_substring() => Ok(value),
            CompValue::Str(s) if parse_time(s).is_some() => Ok(value),
            _ => Err(bad("expected an RFC 3339 date-time string")),
        },
        AttrType::Complex => Err(bad("compare a sub-attribute")),
    }
}

/// Whether `resource` matches a [`compile`]d filter.
///
/// `resource` is the full representation: `id` and `meta` included, and for a filter
/// that [`Filter::mentions`] `members` or `groups`, those too.
pub fn matches(filter: &Filter, resource: &Value, rt: &'static ResourceType) -> bool {
    eval(filter, resource, Scope::Resource(rt))
}

pub(super) fn eval(f: &Filter, v: &Value, scope: Scope) -> bool {
    match f {
        Filter::And(items) => items.iter().all(|x| eval(x, v, scope)),
        Filter::Or(items) => items.iter().any(|x| eval(x, v, scope)),
        Filter::Not(x) => !eval(x, v, scope),
        Filter::Present(path) if is_custom(scope, path) => extension::present(v, path),
        Filter::Present(path) => {
            resolve(scope, path).is_some_and(|r| r.values(v).into_iter().any(is_assigned))
        }
        Filter::ValuePath { attr, filter } => resolve(scope, attr).is_some_and(|r| {
            r.values(v)
                .into_iter()
                .any(|elem| eval(filter, elem, Scope::Complex(r.attr)))
        }),
        Filter::Compare { path, op, value } if is_custom(scope, path) => {
            extension::matches(v, path, *op, value)
        }
        Filter::Compare { path, op, value } => {
            let Some(r) = resolve(scope, path) else {
                return false;
            };
            let values = r.values(v);
            match (op, value) {
                (CompareOp::Eq, CompValue::Null) => !values.into_iter().any(is_assigned),
                (CompareOp::Ne, CompValue::Null) => values.into_iter().any(is_assigned),
                (CompareOp::Ne, _) => !values
                    .into_iter()
                    .any(|x| compare(r.leaf(), x, CompareOp::Eq, value)),
                _ => values.into_iter().any(|x| compare(r.leaf(), x, *op, value)),
            }
        }
    }
}

/// One attribute value against one literal.
fn compare(def: &AttrDef, x: &Value, op: CompareOp, lit: &CompValue) -> bool {
    match (def.ty, lit) {
        (AttrType::Boolean, CompValue::Bool(b)) => {
            let x = match x {
                Value::Bool(x) => *x,
                Value::String(s) if s.eq_ignore_ascii_case("true") => true,
                Value::String(s) if s.eq_ignore_ascii_case("false") => false,
                _ => return false,
            };
            op == CompareOp::Eq && x == *b
        }
        (AttrType::Integer | AttrType::Decimal, CompValue::Num(n)) => {
            let Value::Number(x) = x else { return false };
            let ord = match (x.as_i64(), n.as_i64()) {
                (Some(a), Some(b)) => Some(a.cmp(&b)),
                _ => x
                    .as_f64()
                    .zip(n.as_f64())
                    .and_then(|(a, b)| a.partial_cmp(&b)),
            };
            ord.is_some_and(|o| ordering_matches(op, o))
        }
        (AttrType::DateTime, CompValue::Str(s)) if !op.is_substring() => {
            match (x.as_str().and_then(parse_time), parse_time(s)) {
                (Some(a), Some(b)) => ordering_matches(op, a.cmp(&b)),
                _ => false,
            }
        }
        (_, CompValue::Str(s)) => {
            let Some(x) = x.as_str() else { return false };
            if def.is_case_insensitive_string() {
                compare_str(&fold_case(x), op, &fold_case(s))
            } else {
                compare_str(x, op, s)
            }
        }
        _ => false,
    }
}

fn compare_str(x: &str, op: CompareOp, lit: &str) -> bool {
    match op {
        CompareOp::Co => x.contains(lit),
        CompareOp::Sw => x.starts_with(lit),
        CompareOp::Ew => x.ends_with(lit),
        _ => ordering_matches(op, x.cmp(lit)),
    }
}

fn ordering_matches(op: CompareOp, o: Ordering) -> bool {
    match op {
        CompareOp::Eq => o == Ordering::Equal,
        CompareOp::Ne => o != Ordering::Equal,
        CompareOp::Gt => o == Ordering::Greater,
        CompareOp::Ge => o != Ordering::Less,
        CompareOp::Lt => o == Ordering::Less,
        CompareOp::Le => o != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

#[cfg(test)]
#[path = "eval_tests.rs"]
mod tests;
