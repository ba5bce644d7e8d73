//! RFC 7644 §3.5.2 behaviour of [`super::patch`].

use serde_json::{json, Value};

use super::core_schemas::{ENTERPRISE_USER_URN, GROUP_URN, USER_URN};
use super::error::ScimType;
use super::patch::{apply_patch, parse_request, OpKind, PatchResult, PATCH_OP_URN};
use super::resource::normalise;
use super::schema::{ResourceKind, ResourceType};

fn users() -> &'static ResourceType {
    ResourceKind::User.resource_type()
}

fn groups() -> &'static ResourceType {
    ResourceKind::Group.resource_type()
}

fn user() -> Value {
    normalise(
        &json!({
            "schemas": [USER_URN, ENTERPRISE_USER_URN],
            "userName": "bjensen@example.com",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "title": "Tour Guide",
            "active": true,
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home"}
            ],
            "phoneNumbers": [{"value": "555-555-8377", "type": "work"}],
            ENTERPRISE_USER_URN: {"department": "Tours", "manager": {"value": "m1"}}
        }),
        users(),
    )
    .unwrap()
    .document
}

fn patch(
    doc: &Value,
    ops: Value,
    rt: &'static ResourceType,
) -> Result<PatchResult, super::error::ScimError> {
    apply_patch(
        doc,
        &json!({"schemas": [PATCH_OP_URN], "Operations": ops}),
        rt,
    )
}

fn ok(doc: &Value, ops: Value) -> Value {
    patch(doc, ops, users())
        .unwrap_or_else(|e| panic!("{e}"))
        .document
}

fn err(doc: &Value, ops: Value) -> super::error::ScimError {
    patch(doc, ops, users()).unwrap_err()
}

#[test]
fn request_shape_is_checked() {
    let e = apply_patch(
        &user(),
        &json!({"Operations": [{"op": "remove", "path": "title"}]}),
        users(),
    )
    .unwrap_err();
    assert_eq!(e.scim_type(), Some(ScimType::InvalidSyntax));
    for bad in [
        json!({"schemas": [PATCH_OP_URN]}),
        json!({"schemas": [PATCH_OP_URN], "Operations": []}),
        json!({"schemas": [PATCH_OP_URN], "Operations": [{"op": "move", "path": "title"}]}),
        json!({"schemas": [PATCH_OP_URN], "Operations": [{"op": "add", "path": "title"}]}),
        json!({"schemas": [PATCH_OP_URN], "Operations": [1]}),
        json!("not an object"),
    ] {
        let e = apply_patch(&user(), &bad, users()).unwrap_err();
        assert_eq!(e.scim_type(), Some(ScimType::InvalidSyntax), "{bad}");
    }
    let e = apply_patch(
        &user(),
        &json!({"schemas": [PATCH_OP_URN], "Operations": [{"op": "add", "path": 5, "value": 1}]}),
        users(),
    )
    .unwrap_err();
    assert_eq!(e.scim_type(), Some(ScimType::InvalidPath));
    // Keys and op names in any case; an empty path is no path.
    let ops = parse_request(&json!({"SCHEMAS": [PATCH_OP_URN.to_uppercase()], "operations": [{"OP": "RePlAcE", "Path": "", "Value": {"title": "x"}}]})).unwrap();
    assert_eq!(ops[0].op, OpKind::Replace);
    assert_eq!(ops[0].path, None);
}

#[test]
fn errors_name_the_failing_operation() {
    let e = err(
        &user(),
        json!([{"op": "replace", "path": "title", "value": "x"}, {"op": "remove", "path": "nope"}]),
    );
    assert_eq!(e.scim_type(), Some(ScimType::InvalidPath));
    assert_eq!(e.detail(), "operation 2: unknown attribute 'nope'");
}

#[test]
fn add_replace_remove_simple_attributes() {
    let u = user();
    assert_eq!(
        ok(
            &u,
            json!([{"op": "add", "path": "nickName", "value": "Babs"}])
        )["nickName"],
        "Babs"
    );
    assert_eq!(
        ok(&u, json!([{"op": "add", "path": "title", "value": "Boss"}]))["title"],
        "Boss"
    );
    assert_eq!(
        ok(
            &u,
            json!([{"op": "replace", "path": "title", "value": "Boss"}])
        )["title"],
        "Boss"
    );
    assert!(ok(&u, json!([{"op": "remove", "path": "title"}]))
        .get("title")
        .is_none());
    assert!(ok(
        &u,
        json!([{"op": "replace", "path": "title", "value": null}])
    )
    .get("title")
    .is_none());
    // Removing what is not there is not an error.
    assert_eq!(ok(&u, json!([{"op": "remove", "path": "nickName"}])), u);
}

#[test]
fn remove_without_path_is_no_target() {
    let e = err(&user(), json!([{"op": "remove"}]));
    assert_eq!(e.scim_type(), Some(ScimType::NoTarget));
}

#[test]
fn required_and_read_only() {
    for path in [
        "id",
        "meta.created",
        "groups",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.displayName",
    ] {
        let e = err(
            &user(),
            json!([{"op": "replace", "path": path, "value": "x"}]),
        );
        assert_eq!(e.scim_type(), Some(ScimType::Mutability), "{path}");
    }
    // A path-less value is read like a POST body: readOnly keys are ignored.
    let d = ok(
        &user(),
        json!([{"op": "replace", "value": {"id": "other", "meta": {}, "title": "T"}}]),
    );
    assert_eq!(d["title"], "T");
    assert!(d.get("id").is_none());
}

/// RFC 7644 §3.5.2.2: removing a required attribute, or leaving it unassigned, is
/// `mutability` (a POST or PUT without it stays `invalidValue`, see `resource_tests`).
#[test]
fn removing_a_required_attribute_is_mutability() {
    for ops in [
        json!([{"op": "remove", "path": "userName"}]),
        json!([{"op": "Remove", "path": "UserName"}]),
        json!([{"op": "replace", "path": "userName", "value": null}]),
        json!([{"op": "replace", "value": {"userName": null, "title": "T"}}]),
    ] {
        let e = err(&user(), ops.clone());
        assert_eq!(e.scim_type(), Some(ScimType::Mutability), "{ops}: {e}");
        assert!(e.detail().contains("'userName' is required"), "{ops}: {e}");
    }
    let e = patch(
        &group(),
        json!([{"op": "remove", "path": "displayName"}]),
        groups(),
    )
    .unwrap_err();
    assert_eq!(e.scim_type(), Some(ScimType::Mutability), "{e}");
    assert!(e.detail().contains("'displayName' is required"), "{e}");
    // Unassigned only in between: the PATCH is judged by its result (it is atomic).
    let d = ok(
        &user(),
        json!([{"op": "remove", "path": "userName"}, {"op": "add", "path": "userName", "value": "b@example.com"}]),
    );
    assert_eq!(d["userName"], "b@example.com");
    // A blank name is a value, and an invalid one.
    let e = err(
        &user(),
        json!([{"op": "replace", "path": "userName", "value": " "}]),
    );
    assert_eq!(e.scim_type(), Some(ScimType::InvalidValue));
    // A stored document that never had it: the PATCH removed nothing.
    let mut without = user();
    without.as_object_mut().unwrap().remove("userName");
    let e = err(
        &without,
        json!([{"op": "replace", "path": "title", "value": "T"}]),
    );
    assert_eq!(e.scim_type(), Some(ScimType::InvalidValue));
}

#[test]
fn type_errors_are_invalid_value() {
    let e = err(
        &user(),
        json!([{"op": "replace", "path": "active", "value": "maybe"}]),
    );
    assert_eq!(e.scim_type(), Some(ScimType::InvalidValue));
    let e = err(
        &user(),
        json!([{"op": "replace", "path": "name", "value": 3}]),
    );
    assert_eq!(e.scim_type(), Some(ScimType::InvalidValue));
    let e = err(&user(), json!([{"op": "replace", "value": "x"}]));
    assert_eq!(e.scim_type(), Some(ScimType::InvalidSyntax));
}

#[test]
fn complex_replace_merges_sub_attributes() {
    let d = ok(
        &user(),
        json!([{"op": "replace", "path": "name", "value": {"givenName": "Babs"}}]),
    );
    assert_eq!(
        d["name"],
        json!({"givenName": "Babs", "familyName": "Jensen"})
    );
    let d = ok(
        &user(),
        json!([{"op": "add", "path": "name.middleName", "value": "J"}]),
    );
    assert_eq!(d["name"]["middleName"], "J");
    let d = ok(
        &user(),
        json!([{"op": "remove", "path": "name.givenName"}, {"op": "remove", "path": "name.familyName"}]),
    );
    assert!(
        d.get("name").is_none(),
        "an emptied complex attribute is unassigned"
    );
}

#[test]
fn multi_valued_add_appends_and_replace_replaces() {
    let d = ok(
        &user(),
        json!([{"op": "add", "path": "emails", "value": [{"value": "b@x.org", "type": "other"}]}]),
    );
    assert_eq!(d["emails"].as_array().unwrap().len(), 3);
    // Adding an identical value again changes nothing.
    let same = ok(
        &user(),
        json!([{"op": "add", "path": "emails", "value": [{"value": "babs@jensen.org", "type": "home"}]}]),
    );
    assert_eq!(same, user());
    let d = ok(
        &user(),
        json!([{"op": "replace", "path": "emails", "value": [{"value": "only@x.org"}]}]),
    );
    assert_eq!(d["emails"], json!([{"value": "only@x.org"}]));
}

#[test]
fn a_new_primary_clears_the_old_one() {
    let d = ok(
        &user(),
        json!([{"op": "add", "path": "emails", "value": [{"value": "new@x.org", "type": "work", "primary": true}]}]),
    );
    let primaries: Vec<&Value> = d["emails"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["primary"] == true)
        .collect();
    assert_eq!(
        primaries,
        vec![&json!({"value": "new@x.org", "type": "work", "primary": true})]
    );
    let d = ok(
        &user(),
        json!([{"op": "replace", "path": "emails[type eq \"home\"].primary", "value": true}]),
    );
    assert_eq!(d["emails"][0]["primary"], false);
    assert_eq!(d["emails"][1]["primary"], true);
}

#[test]
fn value_path_filters() {
    let d = ok(
        &user(),
        json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "new@example.com"}]),
    );
    assert_eq!(
        d["emails"][0],
        json!({"value": "new@example.com", "type": "work", "primary": true})
    );
    assert_eq!(d["emails"][1]["value"], "babs@jensen.org");
    let d = ok(
        &user(),
        json!([{"op": "remove", "path": "emails[type eq \"home\"]"}]),
    );
    assert_eq!(d["emails"].as_array().unwrap().len(), 1);
    let d = ok(
        &user(),
        json!([{"op": "remove", "path": "emails[value ew \"example.com\"].primary"}]),
    );
    assert!(d["emails"][0].get("primary").is_none());
    let d = ok(
        &user(),
        json!([{"op": "replace", "path": "emails[type eq \"home\"]", "value": {"value": "h@x.org", "type": "home"}}]),
    );
    assert_eq!(d["emails"][1], json!({"value": "h@x.org", "type": "home"}));
    // Remove with no match is a no-op, not noTarget (Entra retries removals).
    assert_eq!(
        ok(
            &user(),
            json!([{"op": "remove", "path": "emails[type eq \"other\"]"}])
        ),
        user()
    );
}

#[test]
fn value_path_without_match_creates_the_entry() {
    let d = ok(
        &user(),
        json!([{"op": "add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "555-1"}]),
    );
    assert_eq!(
        d["phoneNumbers"][1],
        json!({"type": "mobile", "value": "555-1"})
    );
    let d = ok(
        &user(),
        json!([{"op": "replace", "path": "addresses[type eq \"work\"].streetAddress", "value": "1 Main St"}]),
    );
    assert_eq!(
        d["addresses"],
        json!([{"type": "work", "streetAddress": "1 Main St"}])
    );
    let d = ok(
        &user(),
        json!([{"op": "replace", "path": "roles[primary eq \"True\"].value", "value": "Admin"}]),
    );
    assert_eq!(d["roles"], json!([{"primary": true, "value": "Admin"}]));
    // A filter that does not describe an entry cannot create one.
    let e = err(
        &user(),
        json!([{"op": "replace", "path": "emails[value co \"nobody\"].type", "value": "work"}]),
    );
    assert_eq!(e.scim_type(), Some(ScimType::NoTarget));
}

#[test]
fn value_path_errors() {
    for (path, t) in [
        ("title[value eq \"x\"]", ScimType::InvalidPath),
        ("emails[nope eq \"x\"].value", ScimType::InvalidPath),
        ("emails[type eq \"work\"].nope", ScimType::InvalidPath),
        ("name[givenName eq \"x\"].familyName", ScimType::InvalidPath),
        ("groups[value eq \"x\"]", ScimType::Mutability),
        ("emails[type eq ]", ScimType::InvalidPath),
    ] {
        let e = err(
            &user(),
            json!([{"op": "replace", "path": path, "value": "x"}]),
        );
        assert_eq!(e.scim_type(), Some(t), "{path}: {e}");
    }
}

#[test]
fn multi_valued_sub_attribute_without_filter() {
    let d = ok(
        &user(),
        json!([{"op": "replace", "path": "phoneNumbers.type", "value": "mobile"}]),
    );
    assert_eq!(
        d["phoneNumbers"],
        json!([{"value": "555-555-8377", "type": "mobile"}])
    );
    let d = ok(
        &user(),
        json!([{"op": "add", "path": "ims.value", "value": "babs@xmpp"}]),
    );
    assert_eq!(d["ims"], json!([{"value": "babs@xmpp"}]));
    let d = ok(&user(), json!([{"op": "remove", "path": "emails.type"}]));
    assert!(d["emails"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e.get("type").is_none()));
}

#[test]
fn extension_paths() {
    let d = ok(
        &user(),
        json!([{"op": "add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber", "value": "42"}]),
    );
    assert_eq!(d[ENTERPRISE_USER_URN]["employeeNumber"], "42");
    let d = ok(
        &user(),
        json!([{"op": "add", "path": ENTERPRISE_USER_URN, "value": {"costCenter": "CC1", "Division": "D"}}]),
    );
    assert_eq!(d[ENTERPRISE_USER_URN]["costCenter"], "CC1");
    assert_eq!(d[ENTERPRISE_USER_URN]["division"], "D");
    assert_eq!(d[ENTERPRISE_USER_URN]["department"], "Tours");
    let d = ok(
        &user(),
        json!([{"op": "remove", "path": ENTERPRISE_USER_URN}]),
    );
    assert!(d.get(ENTERPRISE_USER_URN).is_none());
    assert_eq!(d["schemas"], json!([USER_URN]));
    let r = patch(
        &user(),
        json!([{"op": "remove", "path": ENTERPRISE_USER_URN}]),
        users(),
    )
    .unwrap();
    assert_eq!(r.manager_id, None);
    // Unqualified extension attribute names resolve too.
    let d = ok(
        &user(),
        json!([{"op": "replace", "path": "department", "value": "Sales"}]),
    );
    assert_eq!(d[ENTERPRISE_USER_URN]["department"], "Sales");
    // An extension added to a user without one lists its URN.
    let plain = normalise(&json!({"schemas": [USER_URN], "userName": "a"}), users())
        .unwrap()
        .document;
    let d = ok(
        &plain,
        json!([{"op": "add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "X"}]),
    );
    assert_eq!(d["schemas"], json!([USER_URN, ENTERPRISE_USER_URN]));
    let e = err(
        &user(),
        json!([{"op": "add", "path": GROUP_URN, "value": {}}]),
    );
    assert_eq!(e.scim_type(), Some(ScimType::InvalidPath));
}

#[test]
fn manager_changes_are_reported() {
    let r = patch(&user(), json!([{"op": "replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": "m2"}]), users()).unwrap();
    assert_eq!(r.manager_id.as_deref(), Some("m2"));
    assert_eq!(
        r.document[ENTERPRISE_USER_URN]["manager"],
        json!({"value": "m2"})
    );
    let r = patch(&user(), json!([{"op": "remove", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager"}]), users()).unwrap();
    assert_eq!(r.manager_id, None);
    assert!(r.document[ENTERPRISE_USER_URN].get("manager").is_none());
}

#[test]
fn atomic_on_failure() {
    // The first op is valid, the second fails: the caller gets only the error, and the
    // input document is borrowed immutably, so nothing changed.
    let u = user();
    let e = err(
        &u,
        json!([{"op": "replace", "path": "title", "value": "x"}, {"op": "replace", "path": "id", "value": "y"}]),
    );
    assert_eq!(e.scim_type(), Some(ScimType::Mutability));
    assert_eq!(u["title"], "Tour Guide");
}

#[test]
fn noop_detection() {
    let r = patch(
        &user(),
        json!([{"op": "replace", "path": "title", "value": "Tour Guide"}]),
        users(),
    )
    .unwrap();
    assert!(r.is_noop());
    let r = patch(
        &user(),
        json!([{"op": "replace", "path": "title", "value": "Boss"}]),
        users(),
    )
    .unwrap();
    assert!(!r.is_noop());
    assert_eq!(
        r.index.user_name_lower.as_deref(),
        Some("bjensen@example.com")
    );
}

#[test]
fn owned_keys_in_the_given_document_are_ignored() {
    let mut full = user();
    full["id"] = json!("u1");
    full["meta"] = json!({"resourceType": "User"});
    let d = ok(
        &full,
        json!([{"op": "replace", "path": "title", "value": "x"}]),
    );
    assert!(d.get("id").is_none() && d.get("meta").is_none());
}

fn group() -> Value {
    json!({"schemas": [GROUP_URN], "displayName": "Tour Guides"})
}

fn gpatch(ops: Value) -> PatchResult {
    patch(&group(), ops, groups()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn group_member_ops_become_a_delta() {
    let r = gpatch(
        json!([{"op": "add", "path": "members", "value": [{"value": "u1"}, {"value": "u2"}]}]),
    );
    assert_eq!(r.members.add, vec!["u1", "u2"]);
    assert!(!r.document_changed);
    assert!(r.document.get("members").is_none());

    let r =
        gpatch(json!([{"op": "remove", "path": "members[value eq \"u1\" or value eq \"u2\"]"}]));
    assert_eq!(r.members.remove, vec!["u1", "u2"]);

    let r = gpatch(json!([{"op": "replace", "path": "members", "value": [{"value": "u3"}]}]));
    assert_eq!(r.members.replace_all, Some(vec!["u3".to_string()]));

    let r = gpatch(json!([{"op": "remove", "path": "members"}]));
    assert_eq!(r.members.replace_all, Some(vec![]));

    let r = gpatch(
        json!([{"op": "add", "value": {"members": [{"value": "u4"}], "displayName": "Guides"}}]),
    );
    assert_eq!(r.members.add, vec!["u4"]);
    assert_eq!(r.document["displayName"], "Guides");
    assert!(r.document_changed);
}

/// A PATCH with as many members as the 1 MiB body allows: each id kept once, at its
/// first place, in request order.
#[test]
fn large_member_patch_keeps_first_occurrences_in_order() {
    const N: usize = 20_000;
    let id = |i: usize| format!("u{i:05}");
    let mut members: Vec<Value> = (0..N).map(|i| json!({"value": id(i)})).collect();
    // Duplicates of every tenth member, at the end and with another display.
    members.extend(
        (0..N)
            .step_by(10)
            .map(|i| json!({"value": id(i), "display": "dup"})),
    );
    let r = gpatch(json!([{"op": "add", "path": "members", "value": members}]));
    assert_eq!(r.members.add.len(), N);
    assert_eq!(r.members.add[0], "u00000");
    assert_eq!(r.members.add[N - 1], "u19999");
    assert!(r.members.add.iter().enumerate().all(|(i, m)| *m == id(i)));

    // Removes and a re-add in the same request, over a membership replaced whole.
    let r = gpatch(json!([
        {"op": "replace", "path": "members", "value": members},
        {"op": "remove", "path": "members", "value": [{"value": id(0)}, {"value": id(N - 1)}, {"value": id(0)}]},
        {"op": "add", "path": "members", "value": [{"value": id(0)}, {"value": id(5)}]},
    ]));
    let all = r.members.replace_all.clone().expect("replaced whole");
    assert_eq!(all.len(), N - 1);
    assert_eq!(all[0], "u00001");
    assert_eq!(all[N - 3], "u19998");
    assert_eq!(all[N - 2], "u00000");
    assert_eq!(r.members.apply_to(&["z".to_string()]), all);
}

/// One operation per member, as some clients send them (16,000 fit in the 1 MiB body): each
/// add and remove lands as it would in one operation, in order.
#[test]
fn a_member_per_operation_lands_like_one_operation() {
    const N: usize = 6_000;
    let id = |i: usize| format!("u{i:05}");
    let mut ops: Vec<Value> = (0..N)
        .map(|i| json!({"op": "add", "path": "members", "value": [{"value": id(i)}]}))
        .collect();
    ops.extend(
        (0..N)
            .step_by(3)
            .map(|i| json!({"op": "remove", "path": "members", "value": [{"value": id(i)}]})),
    );
    ops.push(json!({"op": "add", "path": "members", "value": [{"value": id(0)}]}));
    ops.push(json!({"op": "remove", "path": "members", "value": [{"value": "gone"}]}));
    let r = gpatch(json!(ops));
    let mut kept: Vec<String> = (0..N).filter(|i| i % 3 != 0).map(id).collect();
    kept.push(id(0));
    assert_eq!(r.members.add, kept);
    let mut removed: Vec<String> = (3..N).step_by(3).map(id).collect();
    removed.push("gone".into());
    assert_eq!(r.members.remove, removed);
}

#[test]
fn group_member_errors() {
    for (op, t) in [
        (
            json!({"op": "remove", "path": "members[type eq \"User\"]"}),
            ScimType::InvalidPath,
        ),
        (
            json!({"op": "replace", "path": "members[value eq \"u1\"]", "value": {"value": "u2"}}),
            ScimType::Mutability,
        ),
        (
            json!({"op": "replace", "path": "members.value", "value": "u2"}),
            ScimType::Mutability,
        ),
        (
            json!({"op": "add", "path": "members", "value": [{"display": "no id"}]}),
            ScimType::InvalidValue,
        ),
        (
            json!({"op": "remove", "path": "displayName"}),
            ScimType::Mutability,
        ),
        (
            json!({"op": "add", "path": "userName", "value": "x"}),
            ScimType::InvalidPath,
        ),
    ] {
        let e = patch(&group(), json!([op]), groups()).unwrap_err();
        assert_eq!(e.scim_type(), Some(t), "{op}: {e}");
    }
}

#[test]
fn extension_value_may_list_its_own_schemas() {
    let doc = ok(
        &user(),
        json!([{"op": "replace", "path": ENTERPRISE_USER_URN,
                "value": {"schemas": [ENTERPRISE_USER_URN], "department": "Sales"}}]),
    );
    assert_eq!(doc[ENTERPRISE_USER_URN]["department"], "Sales");
    assert!(doc[ENTERPRISE_USER_URN].get("schemas").is_none());
}

#[test]
fn okta_forms_password_discarded_and_path_less_replace() {
    let doc = user();
    // Okta deactivates with a path-less replace, and may send a password by path or without.
    let out = ok(
        &doc,
        json!([{"op": "replace", "value": {"active": false, "password": "hunter2"}}]),
    );
    assert_eq!(out["active"], false);
    assert!(!out.to_string().contains("hunter2"));
    let out = ok(
        &doc,
        json!([{"op": "replace", "path": "password", "value": "hunter2"}]),
    );
    assert_eq!(out, doc);
    let r = patch(
        &doc,
        json!([{"op": "replace", "path": "password", "value": "hunter2"}]),
        users(),
    )
    .unwrap();
    assert!(r.is_noop());
    // Okta's group push: a path-less replace carrying the group's id (readOnly: ignored).
    let group = normalise(
        &json!({"schemas": [GROUP_URN], "displayName": "Eng"}),
        groups(),
    )
    .unwrap()
    .document;
    let r = apply_patch(
        &group,
        &json!({"schemas": [PATCH_OP_URN], "Operations": [
            {"op": "replace", "value": {"id": "abc", "displayName": "Engineering"}}
        ]}),
        groups(),
    )
    .unwrap();
    assert_eq!(r.document["displayName"], "Engineering");
    assert!(r.document.get("id").is_none());
}

fn with_emails(n: usize, kind: impl Fn(usize) -> &'static str) -> Value {
    let mut doc = user();
    doc["emails"] = Value::Array(
        (0..n)
            .map(|i| json!({"value": format!("u{i}@example.com"), "type": kind(i)}))
            .collect(),
    );
    doc
}

fn email_values(doc: &Value) -> Vec<&str> {
    doc["emails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["value"].as_str().unwrap())
        .collect()
}

/// An add of many values keeps each once: those already there, and repeats within the list.
#[test]
fn a_long_add_keeps_each_value_once() {
    let doc = with_emails(3, |_| "work");
    let mut items: Vec<Value> = (0..5_000)
        .map(|i| json!({"value": format!("u{i}@example.com"), "type": "work"}))
        .collect();
    items.push(json!({"value": "u7@example.com", "type": "work"}));
    let out = ok(
        &doc,
        json!([{"op": "add", "path": "emails", "value": items}]),
    );
    let values = email_values(&out);
    assert_eq!(values.len(), 5_000);
    let expected: Vec<String> = (0..5_000).map(|i| format!("u{i}@example.com")).collect();
    assert_eq!(values, expected);
}

/// A value filter that matches many elements removes exactly those, the rest kept in order;
/// a remove with a long list of values likewise.
#[test]
fn long_removes_take_exactly_what_they_name() {
    let doc = with_emails(1_000, |i| if i % 3 == 0 { "home" } else { "work" });
    let out = ok(
        &doc,
        json!([{"op": "remove", "path": "emails[type eq \"home\"]"}]),
    );
    let expected: Vec<String> = (0..1_000)
        .filter(|i| i % 3 != 0)
        .map(|i| format!("u{i}@example.com"))
        .collect();
    assert_eq!(email_values(&out), expected);

    let listed: Vec<Value> = (0..1_000)
        .filter(|i| i % 2 == 0)
        .map(|i| json!({"value": format!("u{i}@example.com")}))
        .collect();
    let out = ok(
        &doc,
        json!([{"op": "remove", "path": "emails", "value": listed}]),
    );
    let expected: Vec<String> = (0..1_000)
        .filter(|i| i % 2 == 1)
        .map(|i| format!("u{i}@example.com"))
        .collect();
    assert_eq!(email_values(&out), expected);
}

/// Operations that would walk more than 250,000 values of lists in all are refused whole, 400
/// tooMany, before the server spends minutes on them; fewer pass, and so do 700 adds of one
/// value each to a growing list.
#[test]
fn a_patch_that_walks_too_many_values_is_refused() {
    let doc = with_emails(60_000, |_| "work");
    let remove = |i: usize| json!({"op": "remove", "path": format!("emails[value eq \"u{i}@example.com\"]")});
    let out = ok(&doc, json!([remove(0), remove(1), remove(2), remove(3)]));
    assert_eq!(email_values(&out).len(), 59_996);
    let e = err(
        &doc,
        json!([remove(0), remove(1), remove(2), remove(3), remove(4)]),
    );
    assert_eq!(e.status(), 400);
    assert_eq!(e.scim_type(), Some(ScimType::TooMany));
    assert!(e.detail().contains("250000 values"), "{}", e.detail());
    // Walking the list without a filter counts too.
    let e = err(
        &doc,
        json!([
            {"op": "replace", "path": "emails.type", "value": "home"},
            {"op": "replace", "path": "emails.type", "value": "work"},
            {"op": "replace", "path": "emails.type", "value": "home"},
            {"op": "replace", "path": "emails.type", "value": "work"},
            {"op": "replace", "path": "emails.type", "value": "home"}
        ]),
    );
    assert_eq!(e.scim_type(), Some(ScimType::TooMany));
    let adds: Vec<Value> = (0..700)
        .map(|i| json!({"op": "add", "path": "emails", "value": [{"value": format!("a{i}@example.com")}]}))
        .collect();
    let out = ok(&user(), json!(adds));
    assert_eq!(email_values(&out).len(), 702);
}
