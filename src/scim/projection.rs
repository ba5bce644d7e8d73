//! `attributes` and `excludedAttributes` (RFC 7644 §3.4.2.5, §3.9) under each attribute's
//! `returned` characteristic (RFC 7643 §7):
//! - `always` (`id`) is returned whatever is asked, and so is `schemas`;
//! - `never` is never returned;
//! - `default` is returned unless `attributes` is given without it, or it is excluded;
//! - `request` only when `attributes` names it.
//!
//! A name that is not an attribute of the resource type selects nothing (no error), so a
//! client asking for an attribute Assent lacks gets the rest of the resource.

use serde_json::{Map, Value};

use super::error::ScimError;
use super::extension::is_custom_urn;
use super::path::{parse_head, AttrPath, PathHead};
use super::schema::{AttrDef, Found, Location, ResourceType, Returned};

#[derive(Debug, Clone, PartialEq)]
enum Selector {
    /// A whole schema, e.g. `urn:…:enterprise:2.0:User`.
    Schema(&'static str),
    Attr(AttrPath),
}

/// The parsed `attributes` / `excludedAttributes` of a request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Projection {
    attributes: Vec<Selector>,
    excluded: Vec<Selector>,
}

impl Projection {
    /// Parses the comma-separated query parameters. A malformed name is 400 `invalidValue`.
    pub fn parse(attributes: Option<&str>, excluded: Option<&str>) -> Result<Self, ScimError> {
        let split = |s: Option<&str>| -> Vec<String> {
            s.into_iter()
                .flat_map(|s| s.split(','))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        Self::from_lists(&split(attributes), &split(excluded))
    }

    /// From the string lists of a `/.search` body.
    pub fn from_lists(attributes: &[String], excluded: &[String]) -> Result<Self, ScimError> {
        let parse = |list: &[String]| -> Result<Vec<Selector>, ScimError> {
            list.iter()
                .map(|s| match parse_head(s.trim()) {
                    Ok(PathHead::Schema(urn)) => Ok(Selector::Schema(urn)),
                    Ok(PathHead::Attr(a)) => Ok(Selector::Attr(a)),
                    Err(m) => Err(ScimError::invalid_value(m)),
                })
                .collect()
        };
        Ok(Projection {
            attributes: parse(attributes)?,
            excluded: parse(excluded)?,
        })
    }

    /// Whether the top-level attribute `name` (e.g. `members`, `groups`) will be in the
    /// answer: when it will not, the storage need not load it.
    pub fn wants(&self, rt: &'static ResourceType, name: &str) -> bool {
        match rt.find(None, name) {
            Some(f) => self.decide(rt, f).is_some(),
            None => false,
        }
    }

    /// The projected representation of a full resource.
    pub fn apply(&self, resource: Value, rt: &'static ResourceType) -> Value {
        let Value::Object(obj) = resource else {
            return resource;
        };
        let mut out = Map::new();
        for (key, value) in obj {
            if key == "schemas" {
                out.insert(key, value);
                continue;
            }
            if is_custom_urn(&key) {
                if let Some(v) = self.custom(&key, &value) {
                    out.insert(key, v);
                }
                continue;
            }
            if let Some(ext) = rt.extension_by_urn(&key) {
                let mut ext_out = Map::new();
                if let Value::Object(fields) = value {
                    for (k, v) in fields {
                        let Some(def) = ext.attr(&k) else { continue };
                        let found = Found {
                            def,
                            location: Location::Extension(ext),
                        };
                        if let Some(v) = self.project(rt, found, v) {
                            ext_out.insert(k, v);
                        }
                    }
                }
                if !ext_out.is_empty() {
                    out.insert(key, Value::Object(ext_out));
                }
                continue;
            }
            let Some(found) = rt.find(None, &key).filter(|f| f.location == Location::Core) else {
                continue;
            };
            if let Some(v) = self.project(rt, found, value) {
                out.insert(key, v);
            }
        }
        Value::Object(out)
    }

    /// An undeclared extension object ([`super::extension`]): its attributes are all `returned:
    /// default`; `attributes` and `excludedAttributes` select the whole object by its URN, or
    /// attributes of it by `<urn>:<name>`.
    fn custom(&self, urn: &str, value: &Value) -> Option<Value> {
        let obj = value.as_object()?;
        let names = |list: &[Selector]| -> (bool, Vec<String>) {
            let mut whole = false;
            let mut names = Vec::new();
            for sel in list {
                let Selector::Attr(a) = sel else { continue };
                let Some(u) = a.urn.as_deref() else { continue };
                if a.sub.is_none() && format!("{u}:{}", a.name).eq_ignore_ascii_case(urn) {
                    whole = true;
                } else if u.eq_ignore_ascii_case(urn) {
                    names.push(a.name.to_ascii_lowercase());
                }
            }
            (whole, names)
        };
        let (all, wanted) = names(&self.attributes);
        let (none, dropped) = names(&self.excluded);
        if none {
            return None;
        }
        let out: Map<String, Value> = obj
            .iter()
            .filter(|(k, _)| {
                let k = k.to_ascii_lowercase();
                (self.attributes.is_empty() || all || wanted.contains(&k)) && !dropped.contains(&k)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (!out.is_empty()).then_some(Value::Object(out))
    }

    /// What of `value` (attribute `f`) to return; moved whole when all of it is.
    fn project(&self, rt: &'static ResourceType, f: Found, value: Value) -> Option<Value> {
        let keep = self.decide(rt, f)?;
        Some(match keep {
            Keep::Whole => value,
            Keep::Subs { only, drop } => filter_subs(f.def, &value, only.as_deref(), &drop),
        })
    }

    /// What of attribute `f` to return, before looking at its value.
    fn decide(&self, rt: &'static ResourceType, f: Found) -> Option<Keep> {
        match f.def.returned {
            Returned::Never => return None,
            Returned::Always => return Some(Keep::Whole),
            _ => {}
        }
        let mut keep = if self.attributes.is_empty() {
            if f.def.returned == Returned::Request {
                return None;
            }
            Keep::Whole
        } else {
            let (whole, subs) = selected(&self.attributes, rt, f);
            if whole {
                Keep::Whole
            } else if !subs.is_empty() {
                Keep::Subs {
                    only: Some(subs),
                    drop: Vec::new(),
                }
            } else {
                return None;
            }
        };
        let (whole, subs) = selected(&self.excluded, rt, f);
        if whole {
            return None;
        }
        if !subs.is_empty() {
            keep = match keep {
                Keep::Whole => Keep::Subs {
                    only: None,
                    drop: subs,
                },
                Keep::Subs { only, .. } => Keep::Subs { only, drop: subs },
            };
        }
        Some(keep)
    }
}

enum Keep {
    Whole,
    /// Keep the sub-attributes in `only` (all if None), minus those in `drop`;
    /// `returned: always` sub-attributes stay regardless.
    Subs {
        only: Option<Vec<&'static str>>,
        drop: Vec<&'static str>,
    },
}

/// Whether `list` names attribute `f` whole, and which of its sub-attributes it names.
fn selected(list: &[Selector], rt: &'static ResourceType, f: Found) -> (bool, Vec<&'static str>) {
    let mut subs = Vec::new();
    for sel in list {
        match sel {
            Selector::Schema(urn) => {
                let covers = match f.location {
                    Location::Extension(s) => s.id == *urn,
                    Location::Core => rt.schema.id == *urn,
                };
                if covers {
                    return (true, Vec::new());
                }
            }
            Selector::Attr(p) => {
                let Some(hit) = rt.find(p.urn.as_deref(), &p.name) else {
                    continue;
                };
                if !std::ptr::eq(hit.def, f.def) || hit.location != f.location {
                    continue;
                }
                match p.sub.as_deref().and_then(|s| f.def.sub(s)) {
                    Some(sub) => subs.push(sub.name),
                    None if p.sub.is_none() => return (true, Vec::new()),
                    None => {}
                }
            }
        }
    }
    (false, subs)
}

fn filter_subs(def: &AttrDef, value: &Value, only: Option<&[&str]>, drop: &[&str]) -> Value {
    let one = |v: &Value| -> Value {
        let Some(o) = v.as_object() else {
            return v.clone();
        };
        let kept: Map<String, Value> = o
            .iter()
            .filter(|(k, _)| {
                let always = def.sub(k).is_some_and(|s| s.returned == Returned::Always);
                always
                    || (only.is_none_or(|o| o.contains(&k.as_str())) && !drop.contains(&k.as_str()))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Value::Object(kept)
    };
    match value {
        Value::Array(a) => Value::Array(
            a.iter()
                .map(one)
                .filter(|v| v.as_object().is_none_or(|o| !o.is_empty()))
                .collect(),
        ),
        v => one(v),
    }
}

#[cfg(test)]
mod tests {
    use super::super::core_schemas::{ENTERPRISE_USER_URN, USER_URN};
    use super::super::schema::ResourceKind;
    use super::*;
    use serde_json::json;

    fn rt() -> &'static ResourceType {
        ResourceKind::User.resource_type()
    }

    fn user() -> Value {
        json!({
            "schemas": [USER_URN, ENTERPRISE_USER_URN],
            "id": "u1",
            "meta": {"resourceType": "User"},
            "userName": "bjensen",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "emails": [{"value": "b@x.org", "type": "work", "primary": true}],
            "groups": [{"value": "g1", "display": "Admins"}],
            ENTERPRISE_USER_URN: {"department": "Tours", "employeeNumber": "42"}
        })
    }

    fn apply(attrs: Option<&str>, excluded: Option<&str>) -> Value {
        Projection::parse(attrs, excluded)
            .unwrap()
            .apply(user(), rt())
    }

    #[test]
    fn default_returns_everything_returnable() {
        assert_eq!(apply(None, None), user());
    }

    #[test]
    fn attributes_keep_listed_plus_always() {
        assert_eq!(
            apply(Some("userName"), None),
            json!({"schemas": [USER_URN, ENTERPRISE_USER_URN], "id": "u1", "userName": "bjensen"})
        );
        assert_eq!(
            apply(Some("USERNAME,name.givenName, emails.value"), None),
            json!({
                "schemas": [USER_URN, ENTERPRISE_USER_URN], "id": "u1", "userName": "bjensen",
                "name": {"givenName": "Barbara"}, "emails": [{"value": "b@x.org"}]
            })
        );
        let v = apply(
            Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"),
            None,
        );
        assert_eq!(v[ENTERPRISE_USER_URN], json!({"department": "Tours"}));
        let v = apply(Some(ENTERPRISE_USER_URN), None);
        assert_eq!(v[ENTERPRISE_USER_URN], user()[ENTERPRISE_USER_URN]);
        assert!(v.get("userName").is_none());
        let v = apply(Some("department"), None);
        assert_eq!(v[ENTERPRISE_USER_URN], json!({"department": "Tours"}));
    }

    #[test]
    fn excluded_attributes() {
        let v = apply(None, Some("groups,name.familyName,meta"));
        assert!(v.get("groups").is_none() && v.get("meta").is_none());
        assert_eq!(v["name"], json!({"givenName": "Barbara"}));
        // `id` is returned always, whatever is excluded.
        let v = apply(None, Some("id,schemas"));
        assert_eq!(v["id"], "u1");
        assert!(v.get("schemas").is_some());
        let v = apply(None, Some(ENTERPRISE_USER_URN));
        assert!(v.get(ENTERPRISE_USER_URN).is_none());
    }

    #[test]
    fn unknown_names_select_nothing_and_bad_syntax_is_invalid_value() {
        let v = apply(Some("shoeSize"), None);
        assert_eq!(
            v,
            json!({"schemas": [USER_URN, ENTERPRISE_USER_URN], "id": "u1"})
        );
        let e = Projection::parse(Some("name..x"), None).unwrap_err();
        assert_eq!(e.scim_type().unwrap().as_str(), "invalidValue");
        // Query text is arbitrary UTF-8.
        assert!(Projection::parse(Some("aé,ürn:x"), None).is_err());
    }

    #[test]
    fn wants_lets_the_storage_skip_members() {
        let g = ResourceKind::Group.resource_type();
        assert!(Projection::parse(None, None).unwrap().wants(g, "members"));
        assert!(!Projection::parse(None, Some("members"))
            .unwrap()
            .wants(g, "members"));
        assert!(!Projection::parse(Some("displayName"), None)
            .unwrap()
            .wants(g, "members"));
        assert!(Projection::parse(Some("members.value"), None)
            .unwrap()
            .wants(g, "members"));
        assert!(Projection::parse(Some("displayName"), None)
            .unwrap()
            .wants(g, "id"));
        assert!(!Projection::parse(None, None).unwrap().wants(g, "nope"));
    }
}
