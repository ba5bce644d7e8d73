//! Undeclared schema extensions (issue 15): kept as sent, patched, filtered and planned.

use serde_json::{json, Value};

use super::super::core_schemas::{GROUP_URN, USER_URN};
use super::super::eval::{compile, matches};
use super::super::patch::apply_patch;
use super::super::projection::Projection;
use super::super::resource::normalise;
use super::super::schema::{ResourceKind, ResourceType};
use super::super::sql::{plan, SqlBind};
use super::*;

const EXT: &str = "urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User";

fn users() -> &'static ResourceType {
    ResourceKind::User.resource_type()
}

fn user() -> Value {
    normalise(
        &json!({
            "schemas": [USER_URN, EXT],
            "userName": "ann",
            EXT: {
                "costCenterCode": "CC-42",
                "Level": 7,
                "remote": true,
                "tags": ["Blue", "green"],
                "badge": {"Colour": "Red", "number": 3},
                "nothing": null
            }
        }),
        users(),
    )
    .unwrap()
    .document
}

fn patched(doc: &Value, ops: Value) -> Value {
    apply_patch(
        doc,
        &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops}),
        users(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .document
}

#[test]
fn an_extension_object_is_kept_as_sent_and_listed_in_schemas() {
    let doc = user();
    assert_eq!(doc["schemas"], json!([USER_URN, EXT]));
    assert_eq!(doc[EXT]["costCenterCode"], "CC-42");
    assert_eq!(doc[EXT]["tags"], json!(["Blue", "green"]));
    assert!(doc[EXT].get("nothing").is_none());
    // Without its URN in `schemas`, on a Group too.
    let g = normalise(
        &json!({"schemas": [GROUP_URN], "displayName": "g",
                "urn:ietf:params:scim:schemas:extension:acme:2.0:Group": {"site": "Oslo"}}),
        ResourceKind::Group.resource_type(),
    )
    .unwrap();
    assert_eq!(
        g.document["urn:ietf:params:scim:schemas:extension:acme:2.0:Group"]["site"],
        "Oslo"
    );
}

#[test]
fn bad_extension_bodies_are_refused_clearly() {
    for (body, needle) in [
        (
            json!({"schemas": [USER_URN], "userName": "a", EXT: "x"}),
            "must be an object",
        ),
        (
            json!({"schemas": [USER_URN], "userName": "a", EXT: {"a": 1, "A": 2}}),
            "more than once",
        ),
        (
            json!({"schemas": [USER_URN], "userName": "a", EXT: {}, EXT.to_lowercase(): {"a": 1}}),
            "",
        ),
        (
            json!({"schemas": [USER_URN], "userName": "a", "urn:example:other:User": {"a": 1}}),
            "unsupported schema extension",
        ),
    ] {
        match normalise(&body, users()) {
            Err(e) => assert!(e.detail().contains(needle), "{body}: {e}"),
            // An empty object carries nothing: the other spelling is the one kept.
            Ok(n) => assert!(needle.is_empty() && n.document[EXT.to_lowercase()]["a"] == 1),
        }
    }
    let many: serde_json::Map<String, Value> = (0..=MAX_EXTENSION_VALUES)
        .map(|i| (format!("a{i}"), json!(i)))
        .collect();
    let e = normalise(
        &json!({"schemas": [USER_URN], "userName": "a", EXT: many}),
        users(),
    )
    .unwrap_err();
    assert_eq!(e.status(), 400);
    assert!(e.detail().contains("at most"), "{e}");
}

#[test]
fn entra_and_okta_patch_forms() {
    let doc = user();
    // Entra: the attribute's full path, `Add` and `Replace`.
    let out = patched(
        &doc,
        json!([{"op": "Add", "path": format!("{EXT}:costCenterCode"), "value": "CC-7"}]),
    );
    assert_eq!(out[EXT]["costCenterCode"], "CC-7");
    let out = patched(
        &doc,
        json!([{"op": "Replace", "path": format!("{}:COSTCENTERCODE", EXT.to_lowercase()), "value": "CC-8"}]),
    );
    assert_eq!(out[EXT]["costCenterCode"], "CC-8", "{out}");
    // Path-less: keys that are paths, or the extension object itself.
    let out = patched(
        &doc,
        json!([{"op": "replace", "value": {
            format!("{EXT}:division"): "North",
            EXT: {"level": 8}
        }}]),
    );
    assert_eq!(out[EXT]["division"], "North");
    assert_eq!(out[EXT]["Level"], 8);
    // Add to a multi-valued attribute appends; sub-attributes; remove.
    let out = patched(
        &doc,
        json!([
            {"op": "add", "path": format!("{EXT}:tags"), "value": ["red"]},
            {"op": "replace", "path": format!("{EXT}:badge.colour"), "value": "Gold"},
            {"op": "remove", "path": format!("{EXT}:remote")}
        ]),
    );
    assert_eq!(out[EXT]["tags"], json!(["Blue", "green", "red"]));
    assert_eq!(out[EXT]["badge"]["Colour"], "Gold");
    assert!(out[EXT].get("remote").is_none());
    // A new extension by path, then the whole of it removed.
    let other = "urn:ietf:params:scim:schemas:extension:okta:1.0:User";
    let out = patched(
        &doc,
        json!([{"op": "add", "path": format!("{other}:nickname"), "value": "Nan"}]),
    );
    assert_eq!(out[other]["nickname"], "Nan");
    assert_eq!(out["schemas"], json!([USER_URN, EXT, other]));
    let out = patched(&out, json!([{"op": "remove", "path": other}]));
    assert!(out.get(other).is_none());
    assert_eq!(out["schemas"], json!([USER_URN, EXT]));
    // Value filters need a declared schema.
    let e = apply_patch(
        &doc,
        &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [
            {"op": "remove", "path": format!("{EXT}:tags[value eq \"x\"]")}]}),
        users(),
    )
    .unwrap_err();
    assert_eq!(e.status(), 400);
}

#[test]
fn filters_read_values_by_their_json_type() {
    let doc = user();
    let full = {
        let mut d = doc.clone();
        d["id"] = json!("u1");
        d
    };
    let yes = |f: &str| {
        let c = compile(f, users()).unwrap_or_else(|e| panic!("{f}: {e}"));
        matches(&c, &full, users())
    };
    assert!(yes(&format!("{EXT}:costCenterCode eq \"cc-42\"")));
    assert!(yes(&format!(
        "{}:COSTCENTERCODE eq \"CC-42\"",
        EXT.to_uppercase()
    )));
    assert!(yes(&format!("{EXT}:costCenterCode ne \"x\"")));
    assert!(!yes(&format!("{EXT}:costCenterCode ne \"cc-42\"")));
    assert!(yes(&format!("{EXT}:costCenterCode co \"c-4\"")));
    assert!(yes(&format!("{EXT}:costCenterCode sw \"CC\"")));
    assert!(yes(&format!("{EXT}:costCenterCode ew \"42\"")));
    assert!(yes(&format!("{EXT}:costCenterCode pr")));
    assert!(!yes(&format!("{EXT}:missing pr")));
    assert!(yes(&format!("{EXT}:missing ne \"x\"")));
    assert!(yes(&format!("{EXT}:level eq 7")));
    assert!(yes(&format!("{EXT}:level eq 7.0")));
    assert!(yes(&format!("{EXT}:level gt 6 and {EXT}:level le 7")));
    assert!(!yes(&format!("{EXT}:level eq \"7\"")));
    assert!(yes(&format!("{EXT}:remote eq true")));
    assert!(!yes(&format!("{EXT}:remote eq false")));
    assert!(yes(&format!("{EXT}:tags eq \"GREEN\"")));
    assert!(yes(&format!("{EXT}:badge.colour eq \"red\"")));
    assert!(yes(&format!("{EXT}:badge.number eq 3")));
    for bad in [
        format!("{EXT}:remote gt true"),
        format!("{EXT}:level co 7"),
        format!("{EXT}:tags[value eq \"x\"]"),
        format!("{EXT}:level gt null"),
    ] {
        let e = compile(&bad, users()).unwrap_err();
        assert_eq!(
            e.scim_type().map(|t| t.as_str()),
            Some("invalidFilter"),
            "{bad}"
        );
    }
}

#[test]
fn the_index_holds_what_eq_reads_and_the_plan_uses_it() {
    let v = index_values(&user()).unwrap();
    let p = |s: &str| format!("{}:{s}", EXT.to_ascii_lowercase());
    for row in [
        (p("costcentercode"), "s:cc-42".to_owned()),
        (p("level"), "n:7".to_owned()),
        (p("remote"), "b:true".to_owned()),
        (p("tags"), "s:blue".to_owned()),
        (p("tags"), "s:green".to_owned()),
        (p("badge.colour"), "s:red".to_owned()),
        (p("badge.number"), "n:3".to_owned()),
    ] {
        assert!(v.contains(&row), "{row:?} in {v:?}");
    }
    assert_eq!(v.len(), 7);
    // A long text is keyed by its hash: the same for the literal.
    let long = "x".repeat(300);
    let doc = json!({EXT: {"note": long.to_uppercase()}});
    let key = &index_values(&doc).unwrap()[0].1;
    assert!(key.starts_with("h:"));
    assert_eq!(Some(key.clone()), literal_key(&CompValue::Str(long)));

    let plan_of = |f: &str| plan(&compile(f, users()).unwrap(), ResourceKind::User);
    let eq = plan_of(&format!("{EXT}:CostCenterCode eq \"CC-42\"")).unwrap();
    assert!(eq.exact);
    assert!(eq.where_sql.contains("scim_ext_values"), "{}", eq.where_sql);
    assert_eq!(
        eq.binds,
        vec![
            SqlBind::Workspace,
            SqlBind::Text("User".into()),
            SqlBind::Text(p("costcentercode")),
            SqlBind::Text("s:cc-42".into())
        ]
    );
    let ne = plan_of(&format!("{EXT}:remote ne true")).unwrap();
    assert!(
        ne.exact && ne.where_sql.starts_with("NOT "),
        "{}",
        ne.where_sql
    );
    assert!(!plan_of(&format!("{EXT}:level eq 7")).unwrap().exact);
    let both = plan_of(&format!("userName eq \"ann\" and {EXT}:remote eq true")).unwrap();
    assert!(both.exact);
    assert!(plan_of(&format!("{EXT}:costCenterCode co \"4\"")).is_none());
}

#[test]
fn projection_selects_by_urn_and_attribute() {
    let mut full = user();
    full["id"] = json!("u1");
    let apply = |a: Option<&str>, x: Option<&str>| {
        Projection::parse(a, x)
            .unwrap()
            .apply(full.clone(), users())
    };
    assert_eq!(apply(None, None)[EXT], full[EXT]);
    assert!(apply(Some("userName"), None).get(EXT).is_none());
    assert_eq!(apply(Some(EXT), None)[EXT], full[EXT]);
    let one = apply(Some(&format!("{EXT}:costcentercode")), None);
    assert_eq!(one[EXT], json!({"costCenterCode": "CC-42"}));
    assert!(apply(None, Some(EXT)).get(EXT).is_none());
    let less = apply(None, Some(&format!("{EXT}:tags")));
    assert!(less[EXT].get("tags").is_none() && less[EXT].get("Level").is_some());
}

#[test]
fn a_body_mentions_a_custom_extension_only_when_it_names_one() {
    let enterprise = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    // Entra ID's PATCH of a department and a manager: the enterprise extension only.
    assert!(!mentions_custom(&json!({"Operations": [
        {"op": "Replace", "path": format!("{enterprise}:department"), "value": "Sales"},
        {"op": "Add", "path": format!("{}:MANAGER", enterprise.to_uppercase()), "value": "x"},
        {"op": "Replace", "value": {enterprise: {"employeeNumber": "7"}}}
    ]})));
    assert!(!mentions_custom(&json!({"Operations": [
        {"op": "Replace", "path": "displayName", "value": "urn:ietf:params:scim:schemas:core:2.0:User"}
    ]})));
    // A custom one as a path, as a key of a path-less value, in any case.
    assert!(mentions_custom(&json!({"Operations": [
        {"op": "Add", "path": format!("{EXT}:costCenter"), "value": "CC-1"}
    ]})));
    assert!(mentions_custom(&json!({"Operations": [
        {"op": "Replace", "value": {EXT.to_uppercase(): {"costCenter": "CC-1"}}}
    ]})));
    assert!(mentions_custom(&json!({"Operations": [
        {"op": "Replace", "value": {format!("{EXT}:costCenter"): "CC-1"}}
    ]})));
    // A longer URN that begins like the enterprise one is not the enterprise one.
    assert!(mentions_custom(&json!({"Operations": [
        {"op": "Add", "path": format!("{enterprise}X:costCenter"), "value": "CC-1"}
    ]})));
    assert!(extends_known_urn(&format!("{enterprise}:more")));
    assert!(!extends_known_urn(enterprise));
    assert!(!extends_known_urn(EXT));
}
