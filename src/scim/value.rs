//! Values against their attribute definitions: coercion of client input to the canonical
//! form (RFC 7643 §2.3), case folding, times, and case-insensitive key access.

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use super::error::{clip, ScimError};
use super::schema::{AttrDef, AttrType, Mutability};

/// The one case folding used for case-insensitive comparison (RFC 7643 §2.3.1), in
/// filters, sorting and the lowered index columns alike, so SQL on a lowered column
/// and the in-memory evaluator agree on every row.
pub fn fold_case(s: &str) -> String {
    s.to_lowercase()
}

/// Parses an RFC 3339 date-time (RFC 7643 §2.3.5).
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// Formats a time as an RFC 3339 UTC string, `2026-11-28T12:00:00Z` (contract §2).
pub fn format_time(t: OffsetDateTime) -> String {
    t.to_offset(UtcOffset::UTC)
        .format(&Rfc3339)
        .expect("every UTC OffsetDateTime within year 0..=9999 formats as RFC 3339")
}

/// The key of `obj` equal to `name` ignoring ASCII case; exact match first.
pub(super) fn key_ci<'m>(obj: &'m Map<String, Value>, name: &str) -> Option<&'m String> {
    if let Some((k, _)) = obj.get_key_value(name) {
        return Some(k);
    }
    obj.keys().find(|k| k.eq_ignore_ascii_case(name))
}

/// `value[name]`, matching the key case-insensitively (RFC 7643 §2.1).
pub(super) fn get_ci<'v>(value: &'v Value, name: &str) -> Option<&'v Value> {
    let obj = value.as_object()?;
    key_ci(obj, name).and_then(|k| obj.get(k))
}

/// Removes `name` (any case) from `obj`; returns the removed value.
pub(super) fn remove_ci(obj: &mut Map<String, Value>, name: &str) -> Option<Value> {
    let key = key_ci(obj, name)?.clone();
    obj.remove(&key)
}

/// Whether a value counts as assigned: RFC 7643 §2.5 treats null, an empty array and
/// (RFC 7644 §3.4.2.2 `pr`) an empty string or object as unassigned.
pub fn is_assigned(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => a.iter().any(is_assigned),
        Value::Object(o) => o.values().any(is_assigned),
        _ => true,
    }
}

/// Coerces client input for `def` to its canonical form.
///
/// `Ok(None)` means unassigned (null, empty array, empty object). Keys are rewritten to
/// their canonical case, readOnly sub-attributes are dropped (RFC 7644 §3.3: ignored on
/// input), unknown sub-attributes are refused with `invalidSyntax`, and type mismatches
/// with `invalidValue`. `path` names the attribute in errors.
pub(super) fn coerce(def: &AttrDef, v: &Value, path: &str) -> Result<Option<Value>, ScimError> {
    if !def.multi_valued {
        return coerce_one(def, v, path);
    }
    let items: Vec<&Value> = match v {
        Value::Null => return Ok(None),
        Value::Array(a) => a.iter().collect(),
        // A single value for a multi-valued attribute is taken as a one-element list.
        other => vec![other],
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if let Some(c) = coerce_one(def, item, path)? {
            out.push(c);
        }
    }
    if out.is_empty() {
        return Ok(None);
    }
    if def.sub("primary").is_some() {
        let primaries = out
            .iter()
            .filter(|e| get_ci(e, "primary") == Some(&Value::Bool(true)))
            .count();
        if primaries > 1 {
            // RFC 7643 §2.4: "primary" true MUST appear no more than once.
            return Err(ScimError::invalid_value(format!(
                "more than one primary value in '{path}'"
            )));
        }
    }
    Ok(Some(Value::Array(out)))
}

/// Coerces one (non-list) value of `def`.
pub(super) fn coerce_one(def: &AttrDef, v: &Value, path: &str) -> Result<Option<Value>, ScimError> {
    let mismatch =
        || ScimError::invalid_value(format!("'{path}' must be of type {}", def.ty.as_str()));
    if v.is_null() {
        return Ok(None);
    }
    let out = match def.ty {
        AttrType::String | AttrType::Reference => {
            Value::String(v.as_str().ok_or_else(mismatch)?.to_owned())
        }
        AttrType::Binary => {
            let s = v.as_str().ok_or_else(mismatch)?;
            let base64 =
                |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '-' | '_');
            if !s.chars().all(base64) {
                return Err(ScimError::invalid_value(format!("'{path}' must be base64")));
            }
            Value::String(s.to_owned())
        }
        // Entra ID sends booleans as the strings "True"/"False" unless the
        // aadOptscim062020 flag is set.
        AttrType::Boolean => match v {
            Value::Bool(b) => Value::Bool(*b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Value::Bool(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Value::Bool(false),
            _ => return Err(mismatch()),
        },
        AttrType::Integer => match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => v.clone(),
            _ => return Err(mismatch()),
        },
        AttrType::Decimal => match v {
            Value::Number(_) => v.clone(),
            _ => return Err(mismatch()),
        },
        AttrType::DateTime => {
            let t = v.as_str().and_then(parse_time).ok_or_else(mismatch)?;
            Value::String(format_time(t))
        }
        AttrType::Complex => return coerce_complex(def, v, path),
    };
    Ok(Some(out))
}

fn coerce_complex(def: &AttrDef, v: &Value, path: &str) -> Result<Option<Value>, ScimError> {
    let obj = match v {
        Value::Object(o) => o,
        // Entra ID sends the enterprise `manager` as a bare id string; any complex
        // attribute with a `value` sub-attribute takes a bare string as that value.
        Value::String(_) if def.sub("value").is_some() => {
            let mut m = Map::new();
            m.insert("value".into(), v.clone());
            return coerce_complex(def, &Value::Object(m), path);
        }
        _ => {
            return Err(ScimError::invalid_value(format!(
                "'{path}' must be of type complex"
            )))
        }
    };
    let mut out = Map::new();
    for (k, sv) in obj {
        let sub = def.sub(k).ok_or_else(|| {
            ScimError::invalid_syntax(format!("unknown attribute '{path}.{}'", clip(k)))
        })?;
        if sub.mutability == Mutability::ReadOnly {
            continue;
        }
        if let Some(c) = coerce(sub, sv, &format!("{path}.{}", sub.name))? {
            out.insert(sub.name.to_owned(), c);
        }
    }
    if obj.is_empty() {
        return Ok(None);
    }
    // A non-empty entry must carry its required sub-attributes (a member's or manager's
    // id), even when all it had were readOnly ones.
    if let Some(missing) = def
        .sub_attributes
        .iter()
        .find(|s| s.required && !out.contains_key(s.name))
    {
        return Err(ScimError::invalid_value(format!(
            "'{path}.{}' is required",
            missing.name
        )));
    }
    Ok((!out.is_empty()).then_some(Value::Object(out)))
}

#[cfg(test)]
mod tests {
    use super::super::schema::ResourceKind;
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    fn def(name: &str) -> &'static AttrDef {
        ResourceKind::User
            .resource_type()
            .find(None, name)
            .unwrap()
            .def
    }

    #[test]
    fn entra_string_booleans_become_booleans() {
        assert_eq!(
            coerce(def("active"), &json!("False"), "active").unwrap(),
            Some(json!(false))
        );
        assert_eq!(
            coerce(def("active"), &json!("TRUE"), "active").unwrap(),
            Some(json!(true))
        );
        assert_eq!(
            coerce(def("active"), &json!(true), "active").unwrap(),
            Some(json!(true))
        );
        let e = coerce(def("active"), &json!("yes"), "active").unwrap_err();
        assert_eq!(e.scim_type().unwrap().as_str(), "invalidValue");
        assert!(e.detail().contains("boolean"));
        assert!(coerce(def("active"), &json!(1), "active").is_err());
    }

    #[test]
    fn nested_booleans_and_canonical_key_case() {
        let v = json!([{"Value": "a@b.c", "TYPE": "work", "primary": "True"}]);
        assert_eq!(
            coerce(def("emails"), &v, "emails").unwrap(),
            Some(json!([{"value": "a@b.c", "type": "work", "primary": true}]))
        );
    }

    #[test]
    fn null_and_empty_are_unassigned() {
        assert_eq!(coerce(def("title"), &json!(null), "title").unwrap(), None);
        assert_eq!(coerce(def("emails"), &json!([]), "emails").unwrap(), None);
        assert_eq!(
            coerce(def("emails"), &json!([null]), "emails").unwrap(),
            None
        );
        assert_eq!(coerce(def("name"), &json!({}), "name").unwrap(), None);
        assert_eq!(
            coerce(def("name"), &json!({"givenName": null}), "name").unwrap(),
            None
        );
    }

    #[test]
    fn single_value_for_multi_valued_is_wrapped() {
        assert_eq!(
            coerce(def("emails"), &json!({"value": "a@b.c"}), "emails").unwrap(),
            Some(json!([{"value": "a@b.c"}]))
        );
    }

    #[test]
    fn bare_string_for_complex_with_value_is_its_value() {
        let mgr = ResourceKind::User
            .resource_type()
            .find(None, "manager")
            .unwrap()
            .def;
        assert_eq!(
            coerce(
                mgr,
                &json!("26118915-6090-4610-87e4-49d8ca9f808d"),
                "manager"
            )
            .unwrap(),
            Some(json!({"value": "26118915-6090-4610-87e4-49d8ca9f808d"}))
        );
        // readOnly displayName is dropped, $ref kept.
        assert_eq!(
            coerce(
                mgr,
                &json!({"value": "m", "displayName": "Boss", "$ref": "../Users/m"}),
                "manager"
            )
            .unwrap(),
            Some(json!({"value": "m", "$ref": "../Users/m"}))
        );
        assert!(coerce(def("name"), &json!("Ann"), "name").is_err());
    }

    #[test]
    fn unknown_sub_attribute_is_invalid_syntax() {
        let e = coerce(def("name"), &json!({"nickname": "x"}), "name").unwrap_err();
        assert_eq!(e.scim_type().unwrap().as_str(), "invalidSyntax");
        assert!(e.detail().contains("name.nickname"));
    }

    #[test]
    fn type_mismatches_are_invalid_value_and_do_not_echo() {
        let e = coerce(def("title"), &json!(42), "title").unwrap_err();
        assert_eq!(e.detail(), "'title' must be of type string");
        let e = coerce(def("title"), &json!(["secret-ish"]), "title").unwrap_err();
        assert!(!e.detail().contains("secret"));
        let certs = def("x509Certificates");
        assert!(coerce(certs, &json!([{"value": "MIIB+/=="}]), "x")
            .unwrap()
            .is_some());
        assert!(coerce(certs, &json!([{"value": "not base64!"}]), "x").is_err());
    }

    #[test]
    fn two_primaries_are_refused() {
        let v = json!([{"value": "a", "primary": true}, {"value": "b", "primary": "True"}]);
        let e = coerce(def("emails"), &v, "emails").unwrap_err();
        assert!(e.detail().contains("primary"));
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(
            format_time(datetime!(2026-11-28 13:00:00 +01:00)),
            "2026-11-28T12:00:00Z"
        );
        assert_eq!(
            parse_time("2026-11-28T12:00:00Z"),
            Some(datetime!(2026-11-28 12:00:00 UTC))
        );
        assert_eq!(parse_time("28/11/2026"), None);
    }

    #[test]
    fn assigned_values() {
        assert!(!is_assigned(&json!(null)));
        assert!(!is_assigned(&json!("")));
        assert!(!is_assigned(&json!([])));
        assert!(!is_assigned(&json!({"a": null})));
        assert!(is_assigned(&json!(false)));
        assert!(is_assigned(&json!(0)));
        assert!(is_assigned(&json!([{"value": "x"}])));
    }

    #[test]
    fn key_lookup_is_case_insensitive() {
        let v = json!({"userName": "a", "Active": true});
        assert_eq!(get_ci(&v, "USERNAME"), Some(&json!("a")));
        assert_eq!(get_ci(&v, "active"), Some(&json!(true)));
        assert_eq!(get_ci(&v, "title"), None);
        let mut m = v.as_object().unwrap().clone();
        assert_eq!(remove_ci(&mut m, "ACTIVE"), Some(json!(true)));
        assert!(m.get("Active").is_none());
    }

    #[test]
    fn folding_is_unicode_aware() {
        assert_eq!(fold_case("ÅSA@Example.COM"), "åsa@example.com");
    }
}
