//! Unit tests of [`super`].
use super::super::error::ScimType;
use super::super::schema::ResourceKind;
use super::*;
use serde_json::json;

fn user() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "id": "2819c223-7f76-453a-919d-413861904646",
        "externalId": "Ext-42",
        "userName": "Bjensen@Example.com",
        "name": {"familyName": "Jensen", "givenName": "Barbara"},
        "displayName": "Babs Jensen",
        "title": "Tour Guide",
        "userType": "Employee",
        "active": true,
        "emails": [
            {"value": "bjensen@example.com", "type": "work", "primary": true},
            {"value": "babs@jensen.org", "type": "home"}
        ],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
            "employeeNumber": "701984",
            "manager": {"value": "26118915"}
        },
        "meta": {
            "resourceType": "User",
            "created": "2010-01-23T04:56:22Z",
            "lastModified": "2011-05-13T04:42:34Z"
        }
    })
}

fn rt() -> &'static ResourceType {
    ResourceKind::User.resource_type()
}

fn m(filter: &str) -> bool {
    let f = compile(filter, rt()).unwrap_or_else(|e| panic!("{filter}: {e}"));
    matches(&f, &user(), rt())
}

#[test]
fn user_name_is_case_insensitive_and_id_is_not() {
    assert!(m(r#"userName eq "bjensen@example.com""#));
    assert!(m(r#"USERNAME EQ "BJENSEN@EXAMPLE.COM""#));
    assert!(m(r#"id eq "2819c223-7f76-453a-919d-413861904646""#));
    assert!(!m(r#"id eq "2819C223-7F76-453A-919D-413861904646""#));
    assert!(m(r#"externalId eq "Ext-42""#));
    assert!(!m(r#"externalId eq "ext-42""#));
    assert!(m(r#"displayName eq "babs jensen""#));
}

#[test]
fn substring_operators() {
    assert!(m(r#"userName sw "bjen""#));
    assert!(m(r#"userName ew "EXAMPLE.COM""#));
    assert!(m(r#"name.familyName co "ENS""#));
    assert!(!m(r#"name.familyName co "xyz""#));
}

#[test]
fn multi_valued_any_element_matches() {
    assert!(m(r#"emails.value eq "babs@jensen.org""#));
    assert!(m(r#"emails co "jensen.org""#));
    assert!(m(r#"emails.type eq "home""#));
    assert!(m(r#"emails[type eq "work" and value ew "example.com"]"#));
    assert!(!m(r#"emails[type eq "home" and value ew "example.com"]"#));
    assert!(m(
        r#"emails[type eq "work" and primary eq true].value eq "BJENSEN@example.com""#
    ));
    assert!(m(r#"emails[type eq "home"].value pr"#));
    assert!(m(r#"emails[primary eq "True"]"#));
    assert!(!m(r#"emails[type eq "other"]"#));
}

#[test]
fn ne_is_not_eq() {
    assert!(m(r#"userType ne "Intern""#));
    assert!(!m(r#"userType ne "employee""#));
    // Some email is not "home", but `ne` means no email equals it.
    assert!(!m(r#"emails.type ne "home""#));
    // Absent attribute: nothing equals, so ne matches.
    assert!(m(r#"nickName ne "Babs""#));
    assert!(m(r#"nickName eq null"#));
    assert!(!m(r#"title eq null"#));
    assert!(m(r#"title ne null"#));
}

#[test]
fn present() {
    assert!(m("title pr"));
    assert!(m("name pr"));
    assert!(!m("nickName pr"));
    assert!(m(
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager pr"
    ));
    assert!(!m("phoneNumbers pr"));
}

#[test]
fn schemas_filter_from_rfc7644() {
    assert!(m(
        r#"schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User""#
    ));
    assert!(!m(r#"schemas eq "urn:example:other""#));
}

#[test]
fn booleans() {
    assert!(m("active eq true"));
    assert!(!m("active eq false"));
    assert!(m(r#"active eq "True""#));
    assert!(m("not (active eq false)"));
}

#[test]
fn date_times_compare_as_instants() {
    assert!(m(r#"meta.lastModified gt "2011-05-13T04:42:33Z""#));
    assert!(m(r#"meta.lastModified ge "2011-05-13T04:42:34Z""#));
    assert!(!m(r#"meta.lastModified gt "2011-05-13T04:42:34Z""#));
    // Same instant written with an offset.
    assert!(m(r#"meta.lastModified eq "2011-05-13T06:42:34+02:00""#));
    assert!(m(r#"meta.created lt "2011-05-13T04:42:34Z""#));
    assert!(m(r#"meta.created le "2010-01-23T04:56:22Z""#));
}

#[test]
fn string_ordering_folds_case() {
    assert!(m(r#"userName gt "BJ""#));
    assert!(m(r#"userName lt "c""#));
    assert!(!m(r#"userName lt "B""#));
}

#[test]
fn logic_and_extension_paths() {
    assert!(m(r#"title pr and userType eq "Employee""#));
    assert!(m(r#"title eq "x" or userType eq "Employee""#));
    assert!(!m(
        r#"title eq "x" or userType eq "Intern" and active eq true"#
    ));
    assert!(m(
        r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "701984""#
    ));
    assert!(m(
        r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "26118915""#
    ));
    assert!(m(r#"employeeNumber eq "701984""#));
    assert!(!m(
        r#"userType ne "Employee" or not (emails co "example.com" or emails.value co "example.org")"#
    ));
}

#[test]
fn numbers_compare_numerically() {
    // No numeric attribute in the core schemas; a value path over a synthetic
    // document exercises the comparison directly.
    let d = super::super::schema::attr("n", AttrType::Integer, "");
    let lit = CompValue::Num(10.into());
    assert!(compare(&d, &json!(11), CompareOp::Gt, &lit));
    assert!(compare(&d, &json!(9.5), CompareOp::Lt, &lit));
    assert!(compare(&d, &json!(10.0), CompareOp::Eq, &lit));
    assert!(!compare(&d, &json!("11"), CompareOp::Gt, &lit));
}

#[test]
fn compile_errors() {
    for (f, needle) in [
        ("nope eq 1", "unknown attribute 'nope'"),
        ("active gt true", "boolean"),
        ("active eq 1", "true or false"),
        ("userName eq 1", "string"),
        ("userName gt null", "null"),
        ("name eq \"x\"", "sub-attribute"),
        ("meta.lastModified gt \"yesterday\"", "date-time"),
        ("title[value eq \"x\"]", "not a complex"),
        ("emails[nope eq \"x\"]", "unknown attribute 'nope'"),
        ("emails[value.x eq \"x\"]", "unknown attribute"),
        ("x509Certificates.value gt \"AA\"", "binary"),
        ("password eq \"x\"", "unknown attribute 'password'"),
        ("urn:example:other:User:x eq \"y\"", "unknown attribute"),
    ] {
        let e = compile(f, rt()).unwrap_err();
        assert_eq!(e.scim_type(), Some(ScimType::InvalidFilter), "{f}");
        assert!(e.detail().contains(needle), "{f}: {e}");
    }
}

#[test]
fn groups_members_filter() {
    let grt = ResourceKind::Group.resource_type();
    let g = json!({"displayName": "Admins", "members": [{"value": "u1"}, {"value": "u2"}]});
    let f = compile(r#"displayName eq "admins" and members[value eq "u2"]"#, grt).unwrap();
    assert!(matches(&f, &g, grt));
    let f = compile(r#"members.value eq "u3""#, grt).unwrap();
    assert!(!matches(&f, &g, grt));
    assert!(compile("userName eq \"x\"", grt).is_err());
}

#[test]
fn keys_in_stored_json_match_case_insensitively() {
    let f = compile(r#"userName eq "a""#, rt()).unwrap();
    assert!(matches(&f, &json!({"UserName": "A"}), rt()));
}
