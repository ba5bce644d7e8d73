//! Attribute paths (RFC 7644 §3.10) and PATCH paths (§3.5.2).
//!
//! ```text
//! attrPath  = [URI ":"] ATTRNAME *1subAttr
//! path      = attrPath / valuePath [subAttr]
//! valuePath = attrPath "[" valFilter "]"
//! ```
//!
//! A schema URN holds colons and dots itself (`…:enterprise:2.0:User`), so a URN-prefixed
//! path is split against the URNs the engine knows, longest first; an unknown URN is split
//! at its last colon and then fails lookup like any unknown attribute.

use std::fmt;

use super::error::{clip, ScimError, ScimType};
use super::filter::{Filter, Parser};
use super::schema::known_schema_urns;

/// An attribute reference: optional schema URN, attribute name, optional sub-attribute.
/// Names are kept as written; every lookup is case-insensitive (RFC 7643 §2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    pub urn: Option<String>,
    pub name: String,
    pub sub: Option<String>,
}

impl AttrPath {
    /// A path to a top-level attribute without URN or sub-attribute.
    pub fn simple(name: &str) -> Self {
        AttrPath {
            urn: None,
            name: name.to_owned(),
            sub: None,
        }
    }

    /// Parses one attribute path such as `name.givenName` or
    /// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value`.
    pub fn parse(text: &str) -> Result<Self, ScimError> {
        match parse_head(text).map_err(ScimError::invalid_path)? {
            PathHead::Attr(p) => Ok(p),
            PathHead::Schema(urn) => Err(ScimError::invalid_path(format!(
                "{urn} names a schema, not an attribute"
            ))),
        }
    }
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(urn) = &self.urn {
            write!(f, "{urn}:")?;
        }
        f.write_str(&self.name)?;
        if let Some(sub) = &self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

/// What one path word names: a whole schema extension, or an attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathHead {
    /// The URN of a known schema on its own, e.g. the enterprise extension object.
    Schema(&'static str),
    Attr(AttrPath),
}

/// RFC 7643 §2.1 ATTRNAME (`ALPHA *(nameChar)`), plus `$ref`, which §2.3.7 uses as a
/// sub-attribute name.
fn valid_name(s: &str) -> bool {
    if s.eq_ignore_ascii_case("$ref") {
        return true;
    }
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Splits one lexer word into URN, name and sub-attribute.
pub(super) fn parse_head(text: &str) -> Result<PathHead, String> {
    let mut urn = None;
    let mut rest = text;
    if text
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
    {
        let known = known_schema_urns().iter().find_map(|k| {
            if text.eq_ignore_ascii_case(k) {
                Some((*k, None))
            } else if text.len() > k.len()
                && text.is_char_boundary(k.len())
                && text[..k.len()].eq_ignore_ascii_case(k)
                && text.as_bytes()[k.len()] == b':'
            {
                Some((*k, Some(&text[k.len() + 1..])))
            } else {
                None
            }
        });
        match known {
            Some((k, None)) => return Ok(PathHead::Schema(k)),
            Some((k, Some(r))) => {
                urn = Some(k.to_owned());
                rest = r;
            }
            None => {
                let cut = text.rfind(':').unwrap_or(0);
                urn = Some(text[..cut].to_owned());
                rest = &text[cut + 1..];
            }
        }
    }
    let (name, sub) = match rest.split_once('.') {
        Some((n, s)) => (n, Some(s)),
        None => (rest, None),
    };
    if !valid_name(name) || !sub.is_none_or(valid_name) {
        return Err(format!("invalid attribute path '{}'", clip(text)));
    }
    Ok(PathHead::Attr(AttrPath {
        urn,
        name: name.to_owned(),
        sub: sub.map(str::to_owned),
    }))
}

/// The target of a PATCH operation.
#[derive(Debug, Clone, PartialEq)]
pub enum PatchPath {
    /// A whole extension object, e.g. `urn:…:enterprise:2.0:User`.
    Schema(&'static str),
    /// An attribute or a sub-attribute: `title`, `name.givenName`.
    Attr(AttrPath),
    /// Elements of a multi-valued attribute selected by a filter, optionally narrowed to
    /// one sub-attribute: `emails[type eq "work"].value`, `members[value eq "id"]`.
    Filtered {
        attr: AttrPath,
        filter: Filter,
        sub: Option<String>,
    },
}

impl PatchPath {
    /// Parses a PATCH `path`; every failure is `invalidPath` (RFC 7644 §3.5.2), including
    /// a malformed filter inside the brackets.
    pub fn parse(input: &str) -> Result<Self, ScimError> {
        let mut p = Parser::new(input, ScimType::InvalidPath)?;
        let path = p.patch_path()?;
        p.expect_end()?;
        Ok(path)
    }
}

impl fmt::Display for PatchPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatchPath::Schema(urn) => f.write_str(urn),
            PatchPath::Attr(a) => write!(f, "{a}"),
            PatchPath::Filtered { attr, filter, sub } => {
                write!(f, "{attr}[{filter}]")?;
                if let Some(s) = sub {
                    write!(f, ".{s}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::core_schemas::ENTERPRISE_USER_URN;
    use super::*;

    fn attr(text: &str) -> AttrPath {
        AttrPath::parse(text).unwrap()
    }

    #[test]
    fn simple_and_sub_attribute_paths() {
        assert_eq!(attr("userName"), AttrPath::simple("userName"));
        let p = attr("name.givenName");
        assert_eq!(
            (p.name.as_str(), p.sub.as_deref()),
            ("name", Some("givenName"))
        );
        let p = attr("members.$ref");
        assert_eq!(p.sub.as_deref(), Some("$ref"));
    }

    #[test]
    fn known_urn_prefix_is_split_at_the_right_colon() {
        let p = attr("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value");
        assert_eq!(p.urn.as_deref(), Some(ENTERPRISE_USER_URN));
        assert_eq!(p.name, "manager");
        assert_eq!(p.sub.as_deref(), Some("value"));
        // Case-insensitive URN, canonical URN kept.
        let p = attr("URN:IETF:PARAMS:SCIM:SCHEMAS:EXTENSION:ENTERPRISE:2.0:USER:employeeNumber");
        assert_eq!(p.urn.as_deref(), Some(ENTERPRISE_USER_URN));
        assert_eq!(p.name, "employeeNumber");
        let p = attr("urn:ietf:params:scim:schemas:core:2.0:User:name.familyName");
        assert_eq!(
            p.urn.as_deref(),
            Some("urn:ietf:params:scim:schemas:core:2.0:User")
        );
        assert_eq!(p.name, "name");
    }

    #[test]
    fn bare_schema_urn_is_a_schema_head() {
        assert_eq!(
            parse_head("urn:ietf:params:scim:schemas:extension:enterprise:2.0:user"),
            Ok(PathHead::Schema(ENTERPRISE_USER_URN))
        );
        assert!(AttrPath::parse(ENTERPRISE_USER_URN).is_err());
    }

    #[test]
    fn unknown_urn_splits_at_last_colon() {
        let p = attr("urn:example:custom:1.0:User:favouriteColour");
        assert_eq!(p.urn.as_deref(), Some("urn:example:custom:1.0:User"));
        assert_eq!(p.name, "favouriteColour");
    }

    #[test]
    fn non_ascii_text_is_refused_without_panicking() {
        for bad in ["aé", "aéé", "é", "urné:x", "ürn:a:b"] {
            assert!(parse_head(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_paths_are_invalid_path() {
        for bad in [
            "", "1abc", "name.", ".name", "a.b.c", "na me", "urn:x:", "a$b", "a:b",
        ] {
            let e = AttrPath::parse(bad).unwrap_err();
            assert_eq!(e.scim_type(), Some(ScimType::InvalidPath), "{bad}");
        }
    }

    #[test]
    fn patch_paths() {
        assert_eq!(
            PatchPath::parse("Active").unwrap(),
            PatchPath::Attr(AttrPath::simple("Active"))
        );
        assert_eq!(
            PatchPath::parse(ENTERPRISE_USER_URN).unwrap(),
            PatchPath::Schema(ENTERPRISE_USER_URN)
        );
        match PatchPath::parse(r#"emails[type eq "work"].value"#).unwrap() {
            PatchPath::Filtered { attr, filter, sub } => {
                assert_eq!(attr, AttrPath::simple("emails"));
                assert_eq!(filter.to_string(), r#"type eq "work""#);
                assert_eq!(sub.as_deref(), Some("value"));
            }
            other => panic!("{other:?}"),
        }
        let p = PatchPath::parse(r#"members[value eq "2819c223-7f76-453a-919d-413861904646"]"#)
            .unwrap();
        assert_eq!(
            p.to_string(),
            r#"members[value eq "2819c223-7f76-453a-919d-413861904646"]"#
        );
        let p = PatchPath::parse(r#"addresses[type eq "work" and primary eq true].streetAddress"#)
            .unwrap();
        assert_eq!(
            p.to_string(),
            r#"addresses[type eq "work" and primary eq true].streetAddress"#
        );
    }

    #[test]
    fn malformed_patch_paths_are_invalid_path() {
        for bad in [
            "",
            "emails[",
            "emails[type eq]",
            r#"emails[type eq "work"]]"#,
            r#"emails[type eq "work"].value.x"#,
            r#"emails[type eq "work"] extra"#,
            r#"emails[type eq "work"].1"#,
            r#"emails.value[type eq "work"]"#,
            r#"emails[type[value eq "x"]]"#,
            "title eq",
            "(title)",
        ] {
            let e = PatchPath::parse(bad).unwrap_err();
            assert_eq!(e.scim_type(), Some(ScimType::InvalidPath), "{bad}: {e}");
        }
    }
}
