//! Microsoft Entra ID's provisioning requests, as its documentation shows them, without
//! and with the `aadOptscim062020` flag, run through the whole engine: list query, SQL
//! plan, evaluation, normalisation, PATCH, membership deltas and projection.

use serde_json::{json, Value};

use super::core_schemas::{ENTERPRISE_USER_URN, GROUP_URN, USER_URN};
use super::eval::matches;
use super::list::{ListRequest, PageWindow};
use super::members::GroupMembershipDelta;
use super::patch::{apply_patch, PatchResult, PATCH_OP_URN};
use super::resource::{normalise, Normalised};
use super::schema::{ResourceKind, ResourceType};
use super::sql::{plan, SqlBind};

fn users() -> &'static ResourceType {
    ResourceKind::User.resource_type()
}

fn groups() -> &'static ResourceType {
    ResourceKind::Group.resource_type()
}

fn ops(rt: &'static ResourceType, doc: &Value, operations: Value) -> PatchResult {
    apply_patch(
        doc,
        &json!({"schemas": [PATCH_OP_URN], "Operations": operations}),
        rt,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn create_user() -> Normalised {
    normalise(
        &json!({
            "schemas": [USER_URN, ENTERPRISE_USER_URN],
            "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
            "userName": "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1@contoso.com",
            "active": true,
            "emails": [{"primary": true, "type": "work", "value": "Test_User_fd0ea19b@contoso.com"}],
            "meta": {"resourceType": "User"},
            "name": {"formatted": "givenName familyName", "familyName": "familyName", "givenName": "givenName"},
            "roles": []
        }),
        users(),
    )
    .unwrap()
}

#[test]
fn test_connection_finds_nothing_with_an_exact_indexed_query() {
    // GET /Users?filter=userName+eq+%22<guid>%22 (form-decoded by the HTTP layer).
    let q = ListRequest::from_query(
        [(
            "filter",
            r#"userName eq "1c2e5d1f-0c8a-4b4e-9d2a-7e1f3c5b6a7d""#,
        )],
        users(),
    )
    .unwrap();
    let f = q.filter.as_ref().unwrap();
    let plan = plan(f, ResourceKind::User).unwrap();
    assert_eq!(plan.where_sql, "user_name_lower = ?");
    assert_eq!(
        plan.binds,
        vec![SqlBind::Text("1c2e5d1f-0c8a-4b4e-9d2a-7e1f3c5b6a7d".into())]
    );
    assert!(plan.exact);
    let body = PageWindow::new(q.page, q.sort.as_ref()).into_list_response(|v| v.clone());
    assert_eq!(body["totalResults"], 0);
    assert_eq!(body["Resources"], json!([]));
    // It may probe Groups the same way.
    let q = ListRequest::from_query([("filter", r#"displayName eq "probe""#)], groups()).unwrap();
    assert!(plan_of(&q, ResourceKind::Group).exact);
}

fn plan_of(q: &ListRequest, kind: ResourceKind) -> super::sql::SqlPlan {
    plan(q.filter.as_ref().unwrap(), kind).unwrap()
}

#[test]
fn entra_matches_users_by_user_name_and_external_id() {
    let mut user = create_user().document;
    user["id"] = json!("u1");
    for filter in [
        r#"userName eq "test_user_AB6490EE-1e48-479e-a20b-2d77186b5dd1@CONTOSO.com""#,
        r#"externalId eq "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef""#,
    ] {
        let q = ListRequest::from_query([("filter", filter)], users()).unwrap();
        assert!(
            matches(q.filter.as_ref().unwrap(), &user, users()),
            "{filter}"
        );
        assert!(plan_of(&q, ResourceKind::User).exact);
    }
}

#[test]
fn a_retried_post_collides_on_the_lowered_user_name() {
    // Entra re-POSTs after a timeout, possibly with different case: the unique index on
    // user_name_lower answers 409 instead of a duplicate.
    let mut again = json!({"schemas": [USER_URN], "userName": "TEST_USER_AB6490EE-1E48-479E-A20B-2D77186B5DD1@contoso.com"});
    let a = create_user().index.user_name_lower;
    let b = normalise(&again, users()).unwrap().index.user_name_lower;
    assert_eq!(a, b);
    again["userName"] = json!("someone-else");
    assert_ne!(a, normalise(&again, users()).unwrap().index.user_name_lower);
}

#[test]
fn user_updates_without_flag() {
    let user = create_user().document;
    let r = ops(
        users(),
        &user,
        json!([
            {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "updatedEmail@microsoft.com"},
            {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"}
        ]),
    );
    assert_eq!(
        r.document["emails"],
        json!([{"primary": true, "type": "work", "value": "updatedEmail@microsoft.com"}])
    );
    assert_eq!(r.document["name"]["familyName"], "updatedFamilyName");
    assert_eq!(
        r.index.work_email_lower.as_deref(),
        Some("updatedemail@microsoft.com")
    );

    let r = ops(
        users(),
        &user,
        json!([{"op": "Replace", "path": "userName", "value": "5b50642d@testuser.com"}]),
    );
    assert_eq!(
        r.index.user_name_lower.as_deref(),
        Some("5b50642d@testuser.com")
    );

    let r = ops(
        users(),
        &user,
        json!([{"op": "Add", "path": "nickName", "value": "Babs"}]),
    );
    assert_eq!(r.document["nickName"], "Babs");

    let r = ops(
        users(),
        &user,
        json!([{"op": "Add", "path": "roles", "value": [
            {"primary": "True", "type": "WindowsAzureActiveDirectoryRole", "display": "Admin", "value": "Admin"}
        ]}]),
    );
    assert_eq!(r.document["roles"][0]["primary"], true);
}

#[test]
fn disable_and_reactivate_without_flag() {
    let user = create_user().document;
    for op in ["Replace", "Add"] {
        let r = ops(
            users(),
            &user,
            json!([{"op": op, "path": "active", "value": "False"}]),
        );
        assert_eq!(r.document["active"], false, "{op}");
        assert_eq!(r.index.active, Some(false));
        let back = ops(
            users(),
            &r.document,
            json!([{"op": op, "path": "active", "value": "True"}]),
        );
        assert_eq!(back.document["active"], true);
    }
    // Soft-deleted users stay listed: `active eq false` finds them.
    let off = ops(
        users(),
        &user,
        json!([{"op": "Replace", "path": "Active", "value": "False"}]),
    )
    .document;
    let q = ListRequest::from_query([("filter", "active eq false")], users()).unwrap();
    assert!(matches(q.filter.as_ref().unwrap(), &off, users()));
}

#[test]
fn capitalised_attribute_names() {
    let user = create_user().document;
    let r = ops(
        users(),
        &user,
        json!([
            {"op": "Replace", "path": "UserName", "value": "renamed@contoso.com"},
            {"op": "Replace", "path": "Active", "value": "False"},
            {"op": "Replace", "path": "Name.GivenName", "value": "Ann"},
            {"op": "Add", "path": "URN:IETF:PARAMS:SCIM:SCHEMAS:EXTENSION:ENTERPRISE:2.0:USER:Department", "value": "Sales"}
        ]),
    );
    assert_eq!(r.document["userName"], "renamed@contoso.com");
    assert_eq!(r.document["active"], false);
    assert_eq!(r.document["name"]["givenName"], "Ann");
    assert_eq!(r.document[ENTERPRISE_USER_URN]["department"], "Sales");
}

#[test]
fn manager_forms_with_and_without_flag() {
    let user = create_user().document;
    let path = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager";
    for (op, value) in [("Add", json!("m-1")), ("replace", json!({"value": "m-1"}))] {
        let r = ops(
            users(),
            &user,
            json!([{"op": op, "path": path, "value": value}]),
        );
        assert_eq!(r.manager_id.as_deref(), Some("m-1"));
        assert_eq!(
            r.document[ENTERPRISE_USER_URN]["manager"],
            json!({"value": "m-1"})
        );
    }
    let r = ops(users(), &user, json!([{"op": "Remove", "path": path}]));
    assert_eq!(r.manager_id, None);
}

#[test]
fn work_email_value_path_creates_the_entry_when_missing() {
    let bare = normalise(&json!({"schemas": [USER_URN], "userName": "a"}), users())
        .unwrap()
        .document;
    for op in ["Add", "Replace", "replace"] {
        let r = ops(
            users(),
            &bare,
            json!([{"op": op, "path": "emails[type eq \"work\"].value", "value": "a@contoso.com"}]),
        );
        assert_eq!(
            r.document["emails"],
            json!([{"type": "work", "value": "a@contoso.com"}]),
            "{op}"
        );
        assert_eq!(r.index.work_email_lower.as_deref(), Some("a@contoso.com"));
        assert!(!r.index.email_overflow);
    }
}

#[test]
fn user_updates_with_flag() {
    let user = create_user().document;
    let r = ops(
        users(),
        &user,
        json!([{"op": "replace", "path": "active", "value": false}]),
    );
    assert_eq!(r.document["active"], false);
    let r = ops(
        users(),
        &user,
        json!([{"op": "add", "value": {"nickName": "Babs"}}]),
    );
    assert_eq!(r.document["nickName"], "Babs");
    let r = ops(
        users(),
        &user,
        json!([{"op": "replace", "value": {
            "displayName": "Pvl",
            "name.givenName": "Pavel",
            "name.familyName": "Okhrimenko",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "701984",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager": {"value": "m-2"},
            "emails[type eq \"work\"].value": "pavel@contoso.com",
            "active": false
        }}]),
    );
    let d = &r.document;
    assert_eq!(d["displayName"], "Pvl");
    assert_eq!(
        d["name"],
        json!({"formatted": "givenName familyName", "givenName": "Pavel", "familyName": "Okhrimenko"})
    );
    assert_eq!(d[ENTERPRISE_USER_URN]["employeeNumber"], "701984");
    assert_eq!(r.manager_id.as_deref(), Some("m-2"));
    assert_eq!(d["emails"][0]["value"], "pavel@contoso.com");
    assert_eq!(d["active"], false);
    assert_eq!(r.index.display_name_lower.as_deref(), Some("pvl"));
}

fn create_group() -> Normalised {
    // Entra lists a Microsoft schema URN beside the core one on every group it creates.
    normalise(
        &json!({
            "schemas": [GROUP_URN, "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/Group"],
            "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
            "displayName": "displayName",
            "meta": {"resourceType": "Group"}
        }),
        groups(),
    )
    .unwrap()
}

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn group_create_and_lookup() {
    let g = create_group();
    assert!(g.members.is_empty(), "Entra creates groups empty");
    assert_eq!(g.document["schemas"], json!([GROUP_URN]));
    assert_eq!(g.index.display_name_lower.as_deref(), Some("displayname"));
    // GET /Groups?excludedAttributes=members&filter=displayName eq "displayName"
    let q = ListRequest::from_query(
        [
            ("excludedAttributes", "members"),
            ("filter", r#"displayName eq "displayName""#),
        ],
        groups(),
    )
    .unwrap();
    assert!(
        !q.projection.wants(groups(), "members"),
        "the storage need not load members"
    );
    let p = plan_of(&q, ResourceKind::Group);
    assert_eq!(p.where_sql, "display_name_lower = ?");
    let mut full = g.document.clone();
    full["id"] = json!("g1");
    full["members"] = json!([{"value": "u1"}]);
    let shown = q.projection.apply(full.clone(), groups());
    assert!(shown.get("members").is_none());
    assert_eq!(shown["displayName"], "displayName");
}

#[test]
fn group_members_without_flag() {
    let g = create_group().document;
    let r = ops(
        groups(),
        &g,
        json!([{"op": "Add", "path": "members", "value": [
            {"$ref": null, "value": "f648f8d5ea4e4cd38e9c"}
        ]}]),
    );
    assert_eq!(r.members.add, ids(&["f648f8d5ea4e4cd38e9c"]));
    // Remove only the listed members.
    let r = ops(
        groups(),
        &g,
        json!([{"op": "Remove", "path": "members", "value": [
            {"$ref": null, "value": "a2bc4b6e5ed34a0ca3a9"}
        ]}]),
    );
    assert_eq!(
        r.members,
        GroupMembershipDelta {
            remove: ids(&["a2bc4b6e5ed34a0ca3a9"]),
            ..Default::default()
        }
    );
    assert_eq!(
        r.members
            .apply_to(&ids(&["a2bc4b6e5ed34a0ca3a9", "keep-me"])),
        ids(&["keep-me"])
    );
    // Several membership changes in one PATCH, and a rename.
    let r = ops(
        groups(),
        &g,
        json!([
            {"op": "Add", "path": "members", "value": [{"$ref": null, "value": "u1"}, {"$ref": null, "value": "u2"}]},
            {"op": "Remove", "path": "members", "value": [{"$ref": null, "value": "u3"}]},
            {"op": "Replace", "path": "displayName", "value": "1879db59updatedDisplayName"}
        ]),
    );
    assert_eq!(r.members.add, ids(&["u1", "u2"]));
    assert_eq!(r.members.remove, ids(&["u3"]));
    assert_eq!(r.document["displayName"], "1879db59updatedDisplayName");
    assert_eq!(
        r.index.display_name_lower.as_deref(),
        Some("1879db59updateddisplayname")
    );
    assert!(r.document.get("members").is_none());
}

#[test]
fn group_members_with_flag() {
    let g = create_group().document;
    let r = ops(
        groups(),
        &g,
        json!([{"op": "add", "path": "members", "value": [{"value": "f648f8d5-ea3e-4ec0-8dd8-6e2e0d1a2b2f"}]}]),
    );
    assert_eq!(
        r.members.add,
        ids(&["f648f8d5-ea3e-4ec0-8dd8-6e2e0d1a2b2f"])
    );
    let r = ops(
        groups(),
        &g,
        json!([{"op": "remove", "path": "members[value eq \"f648f8d5-ea3e-4ec0-8dd8-6e2e0d1a2b2f\"]"}]),
    );
    assert_eq!(
        r.members.remove,
        ids(&["f648f8d5-ea3e-4ec0-8dd8-6e2e0d1a2b2f"])
    );
    assert!(!r.document_changed);
    let r = ops(
        groups(),
        &g,
        json!([{"op": "replace", "path": "displayName", "value": "renamed"}]),
    );
    assert!(r.members.is_empty());
    assert_eq!(r.document["displayName"], "renamed");
}

#[test]
fn membership_check_filter() {
    // Entra may check one membership with a filter on id and members.
    let q = ListRequest::from_query(
        [
            ("filter", r#"id eq "g1" and members[value eq "u2"]"#),
            ("excludedAttributes", "members"),
        ],
        groups(),
    )
    .unwrap();
    let f = q.filter.as_ref().unwrap();
    assert!(
        f.mentions("members"),
        "the storage must attach members before evaluating"
    );
    let p = plan(f, ResourceKind::Group).unwrap();
    assert!(!p.exact);
    let g = json!({"id": "g1", "displayName": "x", "members": [{"value": "u1"}, {"value": "u2"}]});
    assert!(matches(f, &g, groups()));
}
