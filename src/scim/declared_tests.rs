//! Declared extension schemas: RFC 7643 §7 definitions checked, and enforced on writes.

use serde_json::{json, Value};

use super::*;

const EXT: &str = "urn:ietf:params:scim:schemas:extension:acme:2.0:User";

fn declared() -> Declared {
    parse_definitions(&json!({"schemas": [{
        "id": EXT,
        "name": "AcmeUser",
        "attributes": [
            {"name": "costCenter", "type": "string", "required": true},
            {"name": "level", "type": "integer"},
            {"name": "ratio", "type": "decimal"},
            {"name": "remote", "type": "boolean"},
            {"name": "hired", "type": "dateTime"},
            {"name": "badgeId", "type": "string", "mutability": "immutable"},
            {"name": "score", "type": "integer", "mutability": "readOnly"},
            {"name": "tier", "type": "string", "canonicalValues": ["gold", "silver"]},
            {"name": "skills", "type": "string", "multiValued": true},
            {"name": "desk", "type": "complex", "subAttributes": [
                {"name": "floor", "type": "integer", "required": true},
                {"name": "room", "type": "string"}
            ]}
        ]
    }]}))
    .unwrap()
}

/// A PUT's check of `ext` over `previous` (a POST's when None); Err with the detail of a 400
/// `invalidValue`.
fn enforce(ext: Value, previous: Option<Value>) -> Result<Value, String> {
    enforce_as(ext, previous, false).map_err(|(scim_type, detail)| {
        assert_eq!(scim_type, "invalidValue", "{detail}");
        detail
    })
}

/// The check of `ext` by a PUT (or a POST, when `previous` is None) or a PATCH; Err with the
/// `scimType` and detail of the 400.
fn enforce_as(
    ext: Value,
    previous: Option<Value>,
    patch: bool,
) -> Result<Value, (&'static str, String)> {
    let mut doc = json!({"userName": "a", EXT: ext});
    let prev = previous.map(|p| json!({EXT: p}));
    let prior = match (&prev, patch) {
        (None, _) => Prior::Nothing,
        (Some(p), false) => Prior::Replaced(p),
        (Some(p), true) => Prior::Patched(p),
    };
    declared()
        .enforce(ResourceKind::User, &mut doc, prior)
        .map(|()| doc[EXT].clone())
        .map_err(|e| {
            assert_eq!(e.status(), 400);
            (
                e.scim_type().map(|t| t.as_str()).unwrap_or("none"),
                e.detail().to_owned(),
            )
        })
}

#[test]
fn definitions_are_read_with_rfc7643_defaults_and_round_trip() {
    let d = declared();
    assert_eq!(d.0.len(), 1);
    let s = &d.0[0];
    assert_eq!(s.kind, ResourceKind::User);
    assert_eq!(s.attributes[0].mutability, Mutability::ReadWrite);
    assert_eq!(s.attributes[0].returned, Returned::Default);
    assert!(!s.attributes[0].case_exact && !s.attributes[1].multi_valued);
    let again = parse_definitions(&d.to_json()).unwrap();
    assert_eq!(again, d);
    let json = s.to_json();
    assert_eq!(json["attributes"][9]["subAttributes"][0]["type"], "integer");
}

#[test]
fn bad_definitions_are_refused_with_the_place_named() {
    let one = |schema: Value| parse_definitions(&json!({"schemas": [schema]})).unwrap_err();
    let attr = |a: Value| one(json!({"id": EXT, "attributes": [a]}));
    assert!(parse_definitions(&json!([]))
        .unwrap_err()
        .contains("section 7"));
    assert!(one(json!({"attributes": []})).contains("'id' is required"));
    assert!(one(json!({"id": "urn:example:x:User", "attributes": []})).contains("extension URN"));
    assert!(one(json!({
        "id": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User", "attributes": []
    }))
    .contains("extension URN"));
    // It would read as an attribute of the enterprise extension in a PATCH path.
    assert!(one(json!({
        "id": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:more", "attributes": []
    }))
    .contains("extension URN"));
    assert!(one(
        json!({"id": "urn:ietf:params:scim:schemas:extension:acme:2.0:Thing",
                      "attributes": []})
    )
    .contains("resourceType"));
    assert!(one(json!({"id": EXT})).contains("'attributes'"));
    let e = attr(json!({"name": "x", "type": "text"}));
    assert!(
        e.contains("attribute 1 'x'") && e.contains("'type' must be one of"),
        "{e}"
    );
    assert!(attr(json!({"name": "1x", "type": "string"})).contains("attribute name"));
    assert!(attr(json!({"type": "string"})).contains("'name' is required"));
    assert!(attr(json!({"name": "x"})).contains("'type' is required"));
    assert!(
        attr(json!({"name": "x", "type": "string", "mutability": "sometimes"}))
            .contains("mutability")
    );
    assert!(
        attr(json!({"name": "x", "type": "string", "required": "yes"})).contains("true or false")
    );
    assert!(attr(json!({"name": "x", "type": "complex"})).contains("subAttributes"));
    assert!(
        attr(json!({"name": "x", "type": "complex", "subAttributes": [
        {"name": "y", "type": "complex", "subAttributes": [{"name": "z", "type": "string"}]}]}))
        .contains("cannot be complex")
    );
    let e = one(json!({"id": EXT, "attributes": [
        {"name": "x", "type": "string"}, {"name": "X", "type": "string"}]}));
    assert!(e.contains("defined twice"), "{e}");
    let e = parse_definitions(&json!({"schemas": [
        {"id": EXT, "attributes": []}, {"id": EXT.to_lowercase(), "attributes": []}]}))
    .unwrap_err();
    assert!(e.contains("declared twice"), "{e}");
}

#[test]
fn values_are_checked_and_coerced_to_their_types() {
    let out = enforce(
        json!({"COSTCENTER": "CC", "level": "7", "ratio": "0.5", "remote": "True",
               "hired": "2026-01-02T03:04:05Z", "score": 99, "tier": "GOLD",
               "skills": "rust", "desk": {"FLOOR": 3}}),
        None,
    )
    .unwrap();
    assert_eq!(
        out,
        json!({"costCenter": "CC", "level": 7, "ratio": 0.5, "remote": true,
               "hired": "2026-01-02T03:04:05Z", "tier": "GOLD", "skills": ["rust"],
               "desk": {"floor": 3}})
    );
    for (ext, needle) in [
        (json!({"costCenter": 5}), "must be a string"),
        (
            json!({"costCenter": "c", "level": 1.5}),
            "must be an integer",
        ),
        (
            json!({"costCenter": "c", "level": "x"}),
            "must be an integer",
        ),
        (
            json!({"costCenter": "c", "remote": "yes"}),
            "must be a boolean",
        ),
        (
            json!({"costCenter": "c", "hired": "yesterday"}),
            "must be a dateTime",
        ),
        (
            json!({"costCenter": "c", "tier": "bronze"}),
            "one of gold, silver",
        ),
        (json!({"costCenter": "c", "level": [1]}), "single-valued"),
        (
            json!({"costCenter": "c", "shoe": 9}),
            "not an attribute of the declared schema",
        ),
        (
            json!({"costCenter": "c", "desk": {"room": "1"}}),
            "desk.floor' is required",
        ),
        (json!({"level": 1}), "costCenter' is required"),
    ] {
        let e = enforce(ext.clone(), None).unwrap_err();
        assert!(e.contains(needle), "{ext}: {e}");
        assert!(e.contains(EXT) || e.contains("shoe"), "{e}");
    }
}

/// A required attribute a PATCH removes is `mutability` (RFC 7644 §3.5.2.2); missing from a
/// PUT, or from a PATCH of a resource that never had it, `invalidValue` ("a required value was
/// missing").
#[test]
fn a_required_attribute_removed_by_patch_is_mutability() {
    let had = Some(json!({"costCenter": "c", "level": 1}));
    let (scim_type, e) = enforce_as(json!({"level": 1}), had.clone(), true).unwrap_err();
    assert_eq!(scim_type, "mutability");
    assert!(e.contains("costCenter' is required"), "{e}");
    let (scim_type, _) = enforce_as(json!({"level": 1}), had, false).unwrap_err();
    assert_eq!(scim_type, "invalidValue");
    let (scim_type, _) =
        enforce_as(json!({"level": 1}), Some(json!({"level": 1})), true).unwrap_err();
    assert_eq!(scim_type, "invalidValue");
    let (scim_type, _) = enforce_as(json!({"level": 1}), None, false).unwrap_err();
    assert_eq!(scim_type, "invalidValue");
}

#[test]
fn immutable_keeps_its_first_value_and_other_types_are_untouched() {
    assert!(enforce(json!({"costCenter": "c", "badgeId": "B1"}), None).is_ok());
    assert!(enforce(
        json!({"costCenter": "c", "badgeId": "B1"}),
        Some(json!({"badgeId": "B1"}))
    )
    .is_ok());
    // Another value for an immutable attribute is `mutability` (RFC 7644 §3.5.1), by PUT or
    // PATCH.
    for patch in [false, true] {
        let (scim_type, e) = enforce_as(
            json!({"costCenter": "c", "badgeId": "B2"}),
            Some(json!({"badgeId": "B1"})),
            patch,
        )
        .unwrap_err();
        assert_eq!(scim_type, "mutability", "{e}");
        assert!(e.contains("immutable"), "{e}");
    }
    // A Group, or a user without the extension, is not checked against a User schema.
    let mut group = json!({"displayName": "g", EXT: {"anything": 1}});
    declared()
        .enforce(ResourceKind::Group, &mut group, Prior::Nothing)
        .unwrap();
    let mut plain = json!({"userName": "a"});
    declared()
        .enforce(ResourceKind::User, &mut plain, Prior::Nothing)
        .unwrap();
}

#[test]
fn discovery_announces_declared_schemas_for_their_resource_type() {
    use super::super::discovery::{resource_type, schema, schemas};
    let base = "https://assent.example/v1/scim/v2";
    let d = declared();
    let all = schemas(base, &d);
    assert_eq!(all["totalResults"], 4);
    let doc = schema(&EXT.to_lowercase(), base, &d).unwrap();
    assert_eq!(doc["id"], EXT);
    assert_eq!(
        doc["schemas"],
        json!(["urn:ietf:params:scim:schemas:core:2.0:Schema"])
    );
    assert!(doc.get("resourceType").is_none());
    let user = resource_type("User", base, &d).unwrap();
    assert_eq!(
        user["schemaExtensions"][1],
        json!({"schema": EXT, "required": false})
    );
    let group = resource_type("Group", base, &d).unwrap();
    assert_eq!(group["schemaExtensions"], json!([]));
}

#[test]
fn write_only_and_never_returned_attributes_are_checked_then_not_kept() {
    let d = parse_definitions(&json!({"schemas": [{"id": EXT, "attributes": [
        {"name": "pin", "type": "integer", "mutability": "writeOnly", "returned": "never"},
        {"name": "secretish", "type": "string", "returned": "never"},
        {"name": "shown", "type": "string"}
    ]}]}))
    .unwrap();
    let mut doc = json!({"userName": "a", EXT: {"pin": "1234", "secretish": "x", "shown": "y"}});
    d.enforce(ResourceKind::User, &mut doc, Prior::Nothing)
        .unwrap();
    assert_eq!(doc[EXT], json!({"shown": "y"}));
    let mut only_hidden = json!({"userName": "a", EXT: {"pin": 1}});
    d.enforce(ResourceKind::User, &mut only_hidden, Prior::Nothing)
        .unwrap();
    assert!(only_hidden.get(EXT).is_none());
    let mut bad = json!({"userName": "a", EXT: {"pin": "x"}});
    assert!(d
        .enforce(ResourceKind::User, &mut bad, Prior::Nothing)
        .is_err());
}

/// The values a write must find no other resource holding: those of single-valued attributes
/// declared unique, and only those the resource did not hold already.
#[test]
fn unique_values_are_the_new_values_of_unique_attributes() {
    let d = parse_definitions(&json!({"schemas": [{
        "id": EXT, "name": "AcmeUser",
        "attributes": [
            {"name": "badgeId", "type": "string", "uniqueness": "server"},
            {"name": "code", "type": "string", "uniqueness": "global", "caseExact": true},
            {"name": "tags", "type": "string", "multiValued": true, "uniqueness": "server"},
            {"name": "level", "type": "integer"}
        ]
    }]}))
    .unwrap();
    let doc = json!({"userName": "a",
                     EXT: {"badgeId": "B-1", "code": "Ab", "tags": ["x"], "level": 3}});
    let all = d.unique_values(ResourceKind::User, &doc, None);
    let names: Vec<String> = all.iter().map(UniqueValue::name).collect();
    assert_eq!(names, [format!("{EXT}:badgeId"), format!("{EXT}:code")]);
    let badge = &all[0];
    assert_eq!(badge.path, format!("{}:badgeid", EXT.to_lowercase()));
    assert_eq!(badge.key, "s:b-1");
    assert_eq!(badge.exact, None);
    assert!(badge.held_by(&json!({EXT: {"badgeId": "whatever"}})));
    let code = &all[1];
    assert_eq!(code.exact.as_deref(), Some("Ab"));
    assert!(code.held_by(&json!({EXT: {"code": "Ab"}})));
    assert!(!code.held_by(&json!({EXT: {"code": "ab"}})));
    // A PUT or PATCH that keeps the badge checks only the code it changes.
    let before = json!({EXT: {"badgeId": "B-1", "code": "Zz"}});
    let changed = d.unique_values(ResourceKind::User, &doc, Some(&before));
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].attribute, "code");
    // Nothing for a Group, or a user without the extension.
    assert!(d.unique_values(ResourceKind::Group, &doc, None).is_empty());
    assert!(d
        .unique_values(ResourceKind::User, &json!({"userName": "a"}), None)
        .is_empty());
}
