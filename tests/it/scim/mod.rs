//! The SCIM 2.0 service provider against the real binary, as Microsoft Entra ID drives it (issue 3):
//! Test Connection, the user and group provisioning sequences in both the classic and the
//! `aadOptscim062020` forms, the retried POST, workspace isolation, ETags, references, concurrent
//! membership changes, the provisioning log, and the public compliance tester (scim2-cli).
//!
//! Every test makes its own workspace and gets its token the real way (View Token approved on a
//! phone), on one shared server.

use crate::support;

use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};
use support::scim::{
    entra_group, entra_user, guid, Answer, Scim, ScimTenant, ENTERPRISE_URN, GROUP_URN, USER_URN,
};
use support::server::shared;
use support::{json_body, problem, Browser, TestServer};

mod declared;
mod extensions;
mod microsoft;
mod okta;

async fn tenant() -> (&'static TestServer, ScimTenant, Scim) {
    let server = shared().await;
    let t = ScimTenant::new(server).await;
    let scim = t.client(server);
    (server, t, scim)
}

fn member_ids(group: &Value) -> Vec<String> {
    let mut ids: Vec<String> = group["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|x| x["value"].as_str().expect("member value").to_owned())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

async fn create_user(scim: &Scim, user_name: &str) -> String {
    scim.post("/Users", &entra_user(user_name, &guid()))
        .await
        .id()
}

/// The console's provisioning log as the owner reads it.
async fn provisioning_log(owner: &Browser, query: &str) -> Vec<Value> {
    let body = json_body(
        owner
            .get(&format!("/v1/console/provisioning-log{query}"))
            .await,
        200,
    )
    .await;
    body["entries"].as_array().expect("entries").clone()
}

#[tokio::test]
async fn test_connection_gets_an_empty_list_response_for_an_unknown_user_name() {
    let (_, _, scim) = tenant().await;
    // Entra ID's Test Connection, byte for byte: a form-encoded filter on a random userName.
    let resp = scim
        .get(&format!("/Users?filter=userName+eq+%22{}%22", guid()))
        .await;
    let body = resp.expect(200);
    assert_eq!(
        body,
        json!({"schemas": [support::scim::LIST_URN], "totalResults": 0, "startIndex": 1,
               "itemsPerPage": 0, "Resources": []})
    );
    // It may probe Groups too, and a Tenant URL may carry the feature flag.
    let groups = scim
        .get(&format!(
            "/Groups?aadOptscim062020&excludedAttributes=members&filter=displayName+eq+%22{}%22",
            guid()
        ))
        .await
        .resources();
    assert!(groups.is_empty());
    let spc = scim.get("/ServiceProviderConfig").await.expect(200);
    assert_eq!(spc["patch"]["supported"], true);
    assert_eq!(spc["filter"]["supported"], true);
    assert_eq!(spc["filter"]["maxResults"], 200);
    assert_eq!(spc["bulk"]["supported"], false);
    assert_eq!(spc["etag"]["supported"], true);
}

#[tokio::test]
async fn entra_user_lifecycle_in_the_classic_form() {
    let (_, _, scim) = tenant().await;
    let user_name = format!("Test_User_{}@contoso.com", guid());
    let external = guid();

    // Entra looks the user up first, by userName then by externalId, and creates it.
    assert!(scim
        .filter("/Users", &format!("userName eq \"{user_name}\""), "")
        .await
        .is_empty());
    let created = scim
        .post("/Users", &entra_user(&user_name, &external))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.id();
    assert_eq!(
        created.header("location"),
        Some(format!("{}/Users/{id}", scim.base).as_str())
    );
    assert_eq!(created.header("etag"), Some("W/\"1\""));
    let body = &created.body;
    assert_eq!(body["userName"], user_name.as_str());
    assert_eq!(body["meta"]["resourceType"], "User");
    assert_eq!(body["meta"]["version"], "W/\"1\"");
    assert!(
        body.get("roles").is_none(),
        "an empty roles list is not stored: {body}"
    );
    assert_eq!(body[ENTERPRISE_URN]["employeeNumber"], "701984");

    // userName matches case-insensitively; externalId exactly.
    let found = scim
        .filter(
            "/Users",
            &format!("userName eq \"{}\"", user_name.to_uppercase()),
            "",
        )
        .await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], id.as_str());
    let found = scim
        .filter("/Users", &format!("externalId eq \"{external}\""), "")
        .await;
    assert_eq!(found.len(), 1);

    // Update: capitalised ops, a value path on the work email, a sub-attribute.
    let updated = scim
        .patch(
            &format!("/Users/{id}"),
            json!([
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "updated@contoso.com"},
                {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"},
                {"op": "Add", "path": "title", "value": "Tour Guide"},
                {"op": "Replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "Sales"}
            ]),
        )
        .await
        .expect(200);
    assert_eq!(updated["emails"][0]["value"], "updated@contoso.com");
    assert_eq!(updated["name"]["familyName"], "updatedFamilyName");
    assert_eq!(updated["title"], "Tour Guide");
    assert_eq!(updated[ENTERPRISE_URN]["department"], "Sales");
    assert_eq!(updated["meta"]["version"], "W/\"2\"");
    let by_email = scim
        .filter(
            "/Users",
            "emails[type eq \"work\"].value eq \"UPDATED@contoso.com\"",
            "",
        )
        .await;
    assert_eq!(by_email.len(), 1, "work email filters are case-insensitive");

    // Disable: `Add` on active with the string "False"; the user stays listed.
    let disabled = scim
        .patch(
            &format!("/Users/{id}"),
            json!([{"op": "Add", "path": "active", "value": "False"}]),
        )
        .await
        .expect(200);
    assert_eq!(disabled["active"], false);
    let listed = scim
        .filter("/Users", &format!("userName eq \"{user_name}\""), "")
        .await;
    assert_eq!(listed.len(), 1, "an inactive user stays listed");
    assert_eq!(listed[0]["active"], false);
    assert_eq!(
        scim.filter(
            "/Users",
            &format!("active eq false and externalId eq \"{external}\""),
            ""
        )
        .await
        .len(),
        1
    );

    // Reactivate with "True", capitalised attribute name.
    let active = scim
        .patch(
            &format!("/Users/{id}"),
            json!([{"op": "Replace", "path": "Active", "value": "True"}]),
        )
        .await
        .expect(200);
    assert_eq!(active["active"], true);

    // Hard delete.
    scim.delete(&format!("/Users/{id}")).await.expect(204);
    scim.get(&format!("/Users/{id}")).await.error(404, None);
    scim.delete(&format!("/Users/{id}")).await.error(404, None);
    assert!(scim
        .filter("/Users", &format!("userName eq \"{user_name}\""), "")
        .await
        .is_empty());
}

#[tokio::test]
async fn entra_user_lifecycle_with_the_aadoptscim062020_flag() {
    let (_, _, scim) = tenant().await;
    let user_name = format!("flagged_{}@contoso.com", guid());
    let id = create_user(&scim, &user_name).await;
    let path = format!("/Users/{id}?aadOptscim062020");

    // Path-less replace whose keys are paths, with real booleans and lowercase ops.
    let updated = scim
        .patch(
            &path,
            json!([{"op": "replace", "value": {
                "displayName": "Ann Smith",
                "name.givenName": "Ann",
                "name.familyName": "Smith",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "42",
                "emails[type eq \"work\"].value": "ann.smith@contoso.com"
            }}]),
        )
        .await
        .expect(200);
    assert_eq!(updated["displayName"], "Ann Smith");
    assert_eq!(updated["name"]["givenName"], "Ann");
    assert_eq!(updated["name"]["familyName"], "Smith");
    assert_eq!(updated[ENTERPRISE_URN]["employeeNumber"], "42");
    assert_eq!(
        updated[ENTERPRISE_URN]["department"], "Tours",
        "other extension attributes stay"
    );
    assert_eq!(updated["emails"][0]["value"], "ann.smith@contoso.com");

    let disabled = scim
        .patch(
            &path,
            json!([{"op": "replace", "value": {"active": false}}]),
        )
        .await
        .expect(200);
    assert_eq!(disabled["active"], false);
    let listed = scim
        .filter(
            "/Users",
            &format!("userName eq \"{user_name}\""),
            "&aadOptscim062020",
        )
        .await;
    assert_eq!(listed[0]["active"], false);
    let active = scim
        .patch(
            &path,
            json!([{"op": "replace", "path": "active", "value": true}]),
        )
        .await
        .expect(200);
    assert_eq!(active["active"], true);

    // A value-path replace on a user without a matching entry creates it.
    let with_mobile = scim
        .patch(
            &path,
            json!([{"op": "replace", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+1 555 0100"}]),
        )
        .await
        .expect(200);
    assert_eq!(
        with_mobile["phoneNumbers"],
        json!([{"type": "mobile", "value": "+1 555 0100"}])
    );

    scim.delete(&path).await.expect(204);
    scim.get(&path).await.error(404, None);
}

#[tokio::test]
async fn entra_group_lifecycle_in_both_forms() {
    let (_, _, scim) = tenant().await;
    let users: Vec<String> = join_all((0..4).map(|i| {
        let scim = &scim;
        async move { create_user(scim, &format!("member{i}_{}@contoso.com", guid())).await }
    }))
    .await;
    let name = format!("Group {}", guid());

    assert!(scim
        .filter(
            "/Groups",
            &format!("displayName eq \"{name}\""),
            "&excludedAttributes=members"
        )
        .await
        .is_empty());
    let created = scim.post("/Groups", &entra_group(&name, &guid())).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let gid = created.id();
    assert!(
        created.body.get("members").is_none(),
        "created empty: {}",
        created.body
    );
    assert_eq!(created.body["schemas"], json!([GROUP_URN]));
    let group = format!("/Groups/{gid}");

    // Classic form: several members added in one PATCH, as `value` arrays with a null `$ref`.
    let added = scim
        .patch(
            &group,
            json!([
                {"op": "Add", "path": "members", "value": [{"$ref": null, "value": users[0]}, {"$ref": null, "value": users[1]}]},
                {"op": "Add", "path": "members", "value": [{"$ref": null, "value": users[2]}]}
            ]),
        )
        .await
        .expect(200);
    let mut want = users[..3].to_vec();
    want.sort();
    assert_eq!(member_ids(&added), want);
    let member = &added["members"][0];
    assert_eq!(member["type"], "User");
    assert_eq!(
        member["$ref"],
        format!("{}/Users/{}", scim.base, member["value"].as_str().unwrap()).as_str()
    );

    // A group may be a member: its type and `$ref` say so.
    let child = scim
        .post(
            "/Groups",
            &entra_group(&format!("Child {}", guid()), &guid()),
        )
        .await
        .id();
    let nested = scim
        .patch(
            &group,
            json!([{"op": "Add", "path": "members", "value": [{"value": child}]}]),
        )
        .await
        .expect(200);
    let listed = nested["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["value"] == child.as_str())
        .unwrap_or_else(|| panic!("the child group is not listed: {nested}"));
    assert_eq!(listed["type"], "Group");
    assert_eq!(
        listed["$ref"],
        format!("{}/Groups/{child}", scim.base).as_str()
    );
    scim.patch(
        &group,
        json!([{"op": "Remove", "path": "members", "value": [{"value": child}]}]),
    )
    .await
    .expect(200);

    // Entra checks a membership with a filter on the group id and a member.
    let check = format!("id eq \"{gid}\" and members[value eq \"{}\"]", users[1]);
    assert_eq!(
        scim.filter("/Groups", &check, "&excludedAttributes=members")
            .await
            .len(),
        1
    );
    // A user lists its groups.
    let u = scim.get(&format!("/Users/{}", users[0])).await.expect(200);
    assert_eq!(u["groups"][0]["value"], gid.as_str());
    assert_eq!(u["groups"][0]["display"], name.as_str());
    // And the answer to a PATCH of that user lists them too.
    let renamed = scim
        .patch(
            &format!("/Users/{}", users[0]),
            json!([{"op": "Replace", "path": "displayName", "value": "Renamed"}]),
        )
        .await
        .expect(200);
    assert_eq!(renamed["displayName"], "Renamed");
    assert_eq!(renamed["groups"], u["groups"], "{renamed}");

    // Remove only the listed ones.
    let removed = scim
        .patch(
            &group,
            json!([{"op": "Remove", "path": "members", "value": [{"$ref": null, "value": users[1]}]}]),
        )
        .await
        .expect(200);
    let mut want = vec![users[0].clone(), users[2].clone()];
    want.sort();
    assert_eq!(member_ids(&removed), want);
    assert!(scim.filter("/Groups", &check, "").await.is_empty());

    // Flagged form: add with lowercase op, remove by a value filter, in one PATCH.
    let flagged = scim
        .patch(
            &format!("{group}?aadOptscim062020"),
            json!([
                {"op": "add", "path": "members", "value": [{"value": users[3]}]},
                {"op": "remove", "path": format!("members[value eq \"{}\"]", users[0])}
            ]),
        )
        .await
        .expect(200);
    let mut want = vec![users[2].clone(), users[3].clone()];
    want.sort();
    assert_eq!(member_ids(&flagged), want);

    // Rename.
    let renamed_to = format!("{name} renamed");
    let renamed = scim
        .patch(
            &group,
            json!([{"op": "Replace", "path": "displayName", "value": renamed_to}]),
        )
        .await
        .expect(200);
    assert_eq!(renamed["displayName"], renamed_to.as_str());
    assert_eq!(
        scim.filter(
            "/Groups",
            &format!("displayName eq \"{renamed_to}\""),
            "&excludedAttributes=members"
        )
        .await
        .len(),
        1
    );
    let listed = scim
        .get(&format!("/Groups/{gid}?excludedAttributes=members"))
        .await
        .expect(200);
    assert!(listed.get("members").is_none(), "{listed}");

    // Deleting a member takes it out of the group.
    scim.delete(&format!("/Users/{}", users[2]))
        .await
        .expect(204);
    let after = scim.get(&group).await.expect(200);
    assert_eq!(member_ids(&after), vec![users[3].clone()]);

    scim.delete(&group).await.expect(204);
    scim.get(&group).await.error(404, None);
    let u = scim.get(&format!("/Users/{}", users[3])).await.expect(200);
    assert!(u.get("groups").is_none(), "{u}");
}

#[tokio::test]
async fn a_retried_post_is_409_never_a_duplicate() {
    let (_, _, scim) = tenant().await;
    let user_name = format!("retry_{}@contoso.com", guid());
    let body = entra_user(&user_name, &guid());
    scim.post("/Users", &body).await.expect(201);
    scim.post("/Users", &body)
        .await
        .error(409, Some("uniqueness"));
    let mut shouting = body.clone();
    shouting["userName"] = json!(user_name.to_uppercase());
    scim.post("/Users", &shouting)
        .await
        .error(409, Some("uniqueness"));
    assert_eq!(
        scim.filter("/Users", &format!("userName eq \"{user_name}\""), "")
            .await
            .len(),
        1
    );

    let group = entra_group(&format!("Team {}", guid()), &guid());
    scim.post("/Groups", &group).await.expect(201);
    scim.post("/Groups", &group)
        .await
        .error(409, Some("uniqueness"));

    // A rename onto a taken name is refused the same way.
    let other = scim
        .post(
            "/Users",
            &entra_user(&format!("other_{}@x.org", guid()), &guid()),
        )
        .await
        .id();
    scim.patch(
        &format!("/Users/{other}"),
        json!([{"op": "Replace", "path": "userName", "value": user_name}]),
    )
    .await
    .error(409, Some("uniqueness"));
}

#[tokio::test]
async fn two_workspaces_never_see_each_other() {
    let (_, _, a) = tenant().await;
    let (_, _, b) = tenant().await;
    let user_name = format!("shared_name_{}@contoso.com", guid());
    let in_a = create_user(&a, &user_name).await;
    let group_b = b
        .post("/Groups", &entra_group(&format!("B {}", guid()), &guid()))
        .await
        .id();

    b.get(&format!("/Users/{in_a}")).await.error(404, None);
    assert!(b
        .filter("/Users", &format!("userName eq \"{user_name}\""), "")
        .await
        .is_empty());
    assert!(b.get("/Users").await.resources().is_empty());
    b.patch(
        &format!("/Users/{in_a}"),
        json!([{"op": "Replace", "path": "active", "value": false}]),
    )
    .await
    .error(404, None);
    b.delete(&format!("/Users/{in_a}")).await.error(404, None);
    // A's user is no member B can add.
    b.patch(
        &format!("/Groups/{group_b}"),
        json!([{"op": "Add", "path": "members", "value": [{"value": in_a}]}]),
    )
    .await
    .error(400, Some("invalidValue"));
    // The same userName may exist in both.
    create_user(&b, &user_name).await;
    assert_eq!(
        a.get(&format!("/Users/{in_a}")).await.expect(200)["active"],
        true
    );
    a.get(&format!("/Groups/{group_b}")).await.error(404, None);
}

#[tokio::test]
async fn if_match_guards_writes_with_412() {
    let (_, _, scim) = tenant().await;
    let id = create_user(&scim, &format!("etag_{}@contoso.com", guid())).await;
    let path = format!("/Users/{id}");
    let current = scim.get(&path).await;
    let etag = current.header("etag").expect("ETag").to_owned();
    assert_eq!(etag, "W/\"1\"");
    assert_eq!(current.body["meta"]["version"], etag.as_str());

    let ops = json!({"schemas": [support::scim::PATCH_URN],
                     "Operations": [{"op": "replace", "path": "title", "value": "CTO"}]});
    let stale = scim
        .send(Method::PATCH, &path, Some(&ops), &[("If-Match", "W/\"7\"")])
        .await;
    stale.error(412, None);
    assert!(scim.get(&path).await.expect(200).get("title").is_none());
    let ok = scim
        .send(Method::PATCH, &path, Some(&ops), &[("If-Match", &etag)])
        .await;
    assert_eq!(ok.header("etag"), Some("W/\"2\""));
    ok.expect(200);

    // The old version is stale for PUT and DELETE too.
    let put = entra_user(&format!("etag2_{}@contoso.com", guid()), &guid());
    scim.send(Method::PUT, &path, Some(&put), &[("If-Match", &etag)])
        .await
        .error(412, None);
    scim.send(Method::DELETE, &path, None, &[("If-Match", &etag)])
        .await
        .error(412, None);
    // If-None-Match with the current version: 304, no body.
    let not_modified = scim
        .send(Method::GET, &path, None, &[("If-None-Match", "W/\"2\"")])
        .await;
    assert_eq!(not_modified.status, 304);
    scim.send(Method::DELETE, &path, None, &[("If-Match", "W/\"2\"")])
        .await
        .expect(204);
}

/// A User's representation lists its groups, so its ETag moves when a group gains or loses it:
/// a GET with the old tag is answered whole, with the new `groups`, and a write with the old
/// tag is refused. A member add that adds nothing moves nothing, nor does a PUT that gives a
/// group the members it had.
#[tokio::test]
async fn a_users_etag_moves_with_its_groups() {
    let (_, _, scim) = tenant().await;
    let alice = create_user(&scim, &format!("g.alice_{}@contoso.com", guid())).await;
    let bob = create_user(&scim, &format!("g.bob_{}@contoso.com", guid())).await;
    let (alice_path, bob_path) = (format!("/Users/{alice}"), format!("/Users/{bob}"));
    let etag_of = |a: &Answer| a.header("etag").expect("ETag").to_owned();
    let first = etag_of(&scim.get(&alice_path).await);
    let bob_first = etag_of(&scim.get(&bob_path).await);

    // A group created with Alice as a member.
    let mut body = entra_group(&format!("ETag {}", guid()), &guid());
    body["members"] = json!([{"value": alice}]);
    let gid = scim.post("/Groups", &body).await.id();
    let group_path = format!("/Groups/{gid}");
    let fresh = scim
        .send(Method::GET, &alice_path, None, &[("If-None-Match", &first)])
        .await;
    assert_eq!(fresh.status, 200, "the old tag must not answer 304");
    let joined = etag_of(&fresh);
    assert_ne!(joined, first);
    let fresh = fresh.expect(200);
    assert_eq!(fresh["groups"][0]["value"], gid.as_str(), "{fresh}");
    assert_eq!(fresh["meta"]["version"], joined.as_str());
    // A write with the tag from before the membership is stale.
    let title = json!({"schemas": [support::scim::PATCH_URN],
                       "Operations": [{"op": "replace", "path": "title", "value": "CFO"}]});
    scim.send(
        Method::PATCH,
        &alice_path,
        Some(&title),
        &[("If-Match", &first)],
    )
    .await
    .error(412, None);
    let not_modified = scim
        .send(
            Method::GET,
            &alice_path,
            None,
            &[("If-None-Match", &joined)],
        )
        .await;
    assert_eq!(not_modified.status, 304);
    // Bob, in no group yet, keeps his.
    assert_eq!(etag_of(&scim.get(&bob_path).await), bob_first);

    // Added again: nothing changes.
    let add = |who: &str| json!([{"op": "add", "path": "members", "value": [{"value": who}]}]);
    scim.patch(&group_path, add(&alice)).await.expect(200);
    assert_eq!(etag_of(&scim.get(&alice_path).await), joined);

    // Bob joins: his tag moves, Alice's does not.
    scim.patch(&group_path, add(&bob)).await.expect(200);
    let bob_joined = etag_of(&scim.get(&bob_path).await);
    assert_ne!(bob_joined, bob_first);
    assert_eq!(etag_of(&scim.get(&alice_path).await), joined);

    // Alice leaves by a remove.
    scim.patch(
        &group_path,
        json!([{"op": "remove", "path": format!("members[value eq \"{alice}\"]")}]),
    )
    .await
    .expect(200);
    let left = scim.get(&alice_path).await;
    let left_tag = etag_of(&left);
    assert_ne!(left_tag, joined);
    assert!(left
        .expect(200)
        .get("groups")
        .is_none_or(|g| g == &json!([])));

    // A PUT with the members the group has (Bob) moves nobody; one that swaps Bob for Alice
    // moves both.
    let mut put = entra_group(&format!("ETag {}", guid()), &guid());
    put["members"] = json!([{"value": bob}]);
    scim.put(&group_path, &put).await.expect(200);
    assert_eq!(etag_of(&scim.get(&bob_path).await), bob_joined);
    assert_eq!(etag_of(&scim.get(&alice_path).await), left_tag);
    put["members"] = json!([{"value": alice}]);
    scim.put(&group_path, &put).await.expect(200);
    let bob_left = etag_of(&scim.get(&bob_path).await);
    assert_ne!(bob_left, bob_joined);
    let rejoined = etag_of(&scim.get(&alice_path).await);
    assert_ne!(rejoined, left_tag);

    // The group's deletion takes Alice out of it.
    scim.delete(&group_path).await.expect(204);
    let after = scim.get(&alice_path).await;
    assert_ne!(etag_of(&after), rejoined);
    assert!(after
        .expect(200)
        .get("groups")
        .is_none_or(|g| g == &json!([])));
    assert_eq!(etag_of(&scim.get(&bob_path).await), bob_left);
}

/// Group writes that share members at the same moment all land: each member's version counts
/// every group it joined (on Postgres they lock the members in one order, so none deadlocks).
#[tokio::test]
async fn concurrent_group_writes_sharing_members_all_count() {
    let (_, _, scim) = tenant().await;
    let mut users = Vec::new();
    for i in 0..12 {
        users.push(create_user(&scim, &format!("shared{i}_{}@contoso.com", guid())).await);
    }
    let version_of = |a: Answer| a.expect(200)["meta"]["version"].clone();
    let mut before = Vec::new();
    for u in &users {
        before.push(version_of(scim.get(&format!("/Users/{u}")).await));
    }
    assert!(before.iter().all(|v| v == "W/\"1\""), "{before:?}");
    let mut groups = Vec::new();
    for _ in 0..6 {
        groups.push(
            scim.post(
                "/Groups",
                &entra_group(&format!("Shared {}", guid()), &guid()),
            )
            .await
            .id(),
        );
    }
    // Each group adds every user, in an order of its own.
    let writes = groups.iter().enumerate().map(|(n, gid)| {
        let mut order = users.clone();
        order.rotate_left(n * 5 % users.len());
        if n % 2 == 1 {
            order.reverse();
        }
        let value: Vec<Value> = order.iter().map(|u| json!({"value": u})).collect();
        let scim = &scim;
        async move {
            scim.patch(
                &format!("/Groups/{gid}"),
                json!([{"op": "add", "path": "members", "value": value}]),
            )
            .await
        }
    });
    for answer in join_all(writes).await {
        answer.expect(200);
    }
    for u in &users {
        let user = scim.get(&format!("/Users/{u}")).await.expect(200);
        assert_eq!(user["meta"]["version"], "W/\"7\"", "{user}");
        assert_eq!(user["groups"].as_array().map(Vec::len), Some(6), "{user}");
    }
}

#[tokio::test]
async fn a_dangling_member_is_400_invalid_value_and_a_manager_is_kept_as_sent() {
    let (_, _, scim) = tenant().await;
    let missing = guid();
    // A manager that names nobody is kept as sent, without `$ref` (issue 15).
    let mut body = entra_user(&format!("m_{}@contoso.com", guid()), &guid());
    body[ENTERPRISE_URN]["manager"] = json!({"value": missing});
    let kept = scim.post("/Users", &body).await.expect(201);
    assert_eq!(kept[ENTERPRISE_URN]["manager"], json!({"value": missing}));

    let mut group = entra_group(&format!("G {}", guid()), &guid());
    group["members"] = json!([{"value": missing}]);
    scim.post("/Groups", &group)
        .await
        .error(400, Some("invalidValue"));
    group.as_object_mut().unwrap().remove("members");
    let gid = scim.post("/Groups", &group).await.id();
    scim.patch(
        &format!("/Groups/{gid}"),
        json!([{"op": "Add", "path": "members", "value": [{"value": missing}]}]),
    )
    .await
    .error(400, Some("invalidValue"));
    let mut put = group.clone();
    put["members"] = json!([{"value": missing}]);
    scim.put(&format!("/Groups/{gid}"), &put)
        .await
        .error(400, Some("invalidValue"));
    assert!(scim
        .get(&format!("/Groups/{gid}"))
        .await
        .expect(200)
        .get("members")
        .is_none());

    // A real manager, as Entra sets it (a bare id), then deleted: the value stays, the `$ref` goes.
    let boss = create_user(&scim, &format!("boss_{}@contoso.com", guid())).await;
    let report = create_user(&scim, &format!("report_{}@contoso.com", guid())).await;
    let patched = scim
        .patch(
            &format!("/Users/{report}"),
            json!([{"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": boss}]),
        )
        .await
        .expect(200);
    assert_eq!(patched[ENTERPRISE_URN]["manager"]["value"], boss.as_str());
    assert_eq!(
        patched[ENTERPRISE_URN]["manager"]["$ref"],
        format!("{}/Users/{boss}", scim.base).as_str()
    );
    // Created with a manager who exists: the answer carries the `$ref` at once.
    let mut body = entra_user(&format!("r2_{}@contoso.com", guid()), &guid());
    body[ENTERPRISE_URN]["manager"] = json!({"value": boss});
    let second = scim.post("/Users", &body).await.expect(201);
    assert_eq!(
        second[ENTERPRISE_URN]["manager"]["$ref"],
        format!("{}/Users/{boss}", scim.base).as_str()
    );
    scim.delete(&format!("/Users/{boss}")).await.expect(204);
    let after = scim.get(&format!("/Users/{report}")).await.expect(200);
    assert_eq!(
        after[ENTERPRISE_URN]["manager"],
        json!({"value": boss}),
        "{after}"
    );
    let listed = scim
        .filter("/Users", &format!("id eq \"{report}\""), "")
        .await;
    assert_eq!(listed[0][ENTERPRISE_URN]["manager"], json!({"value": boss}));
    assert_eq!(after[ENTERPRISE_URN]["employeeNumber"], "701984");
}

#[tokio::test]
async fn twenty_concurrent_patches_to_one_group_lose_no_member() {
    let (_, _, scim) = tenant().await;
    let users: Vec<String> = join_all((0..20).map(|i| {
        let scim = &scim;
        async move { create_user(scim, &format!("c{i}_{}@contoso.com", guid())).await }
    }))
    .await;
    let gid = scim
        .post(
            "/Groups",
            &entra_group(&format!("Busy {}", guid()), &guid()),
        )
        .await
        .id();
    let path = format!("/Groups/{gid}");
    let answers = join_all(users.iter().map(|u| {
        scim.patch(
            &path,
            json!([{"op": "Add", "path": "members", "value": [{"$ref": null, "value": u}]}]),
        )
    }))
    .await;
    for a in answers {
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let group = scim.get(&path).await.expect(200);
    let mut want = users.clone();
    want.sort();
    assert_eq!(member_ids(&group), want);
    assert_eq!(group["meta"]["version"], "W/\"21\"");

    // And concurrent removals of different members, each leaving the others.
    join_all(users[..10].iter().map(|u| {
        scim.patch(
            &path,
            json!([{"op": "Remove", "path": "members", "value": [{"value": u}]}]),
        )
    }))
    .await;
    let mut want = users[10..].to_vec();
    want.sort();
    assert_eq!(member_ids(&scim.get(&path).await.expect(200)), want);
}

#[tokio::test]
async fn protocol_errors_are_scim_errors() {
    let (server, t, scim) = tenant().await;
    let client = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", scim.base);

    // Malformed JSON, with either accepted content type.
    for ct in ["application/scim+json", "application/json; charset=utf-8"] {
        let resp = client
            .post(url("/Users"))
            .bearer_auth(&t.token)
            .header("Content-Type", ct)
            .body("{\"userName\": ")
            .send()
            .await
            .unwrap();
        scim.check(Method::POST, "/Users", resp)
            .await
            .error(400, Some("invalidSyntax"));
    }
    // application/json is accepted for a well-formed body.
    let resp = client
        .post(url("/Users"))
        .bearer_auth(&t.token)
        .header("Content-Type", "application/json")
        .body(entra_user(&format!("json_{}@x.org", guid()), &guid()).to_string())
        .send()
        .await
        .unwrap();
    scim.check(Method::POST, "/Users", resp).await.expect(201);
    let resp = client
        .post(url("/Users"))
        .bearer_auth(&t.token)
        .header("Content-Type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    scim.check(Method::POST, "/Users", resp)
        .await
        .error(415, None);

    scim.get("/Users?filter=userName+eq")
        .await
        .error(400, Some("invalidFilter"));
    scim.get("/Users?filter=nosuchattr+eq+%22x%22")
        .await
        .error(400, Some("invalidFilter"));
    scim.post("/Users", &json!({"schemas": [USER_URN]}))
        .await
        .error(400, Some("invalidValue"));
    scim.post(
        "/Groups",
        &json!({"schemas": [GROUP_URN], "displayName": "x", "password": "hunter2"}),
    )
    .await
    .error(400, Some("invalidSyntax"));
    scim.patch(
        &format!("/Users/{}", guid()),
        json!([{"op": "replace", "path": "title", "value": "x"}]),
    )
    .await
    .error(404, None);
    scim.get("/Nothing").await.error(404, None);
    scim.get("/Users/a/b").await.error(404, None);
    scim.send(Method::PUT, "/ServiceProviderConfig", None, &[])
        .await
        .error(405, None);
    scim.post("/Bulk", &json!({})).await.error(501, None);

    // Bodies up to 1 MiB are read; larger ones are 413 in the SCIM schema.
    let big =
        json!({"schemas": [USER_URN], "userName": "big", "title": "x".repeat(2 * 1024 * 1024)});
    // The server answers before reading the whole body and closes that connection: say so, or
    // the client's pool may hand the dying connection to the next request.
    scim.send(
        Method::POST,
        "/Users",
        Some(&big),
        &[("Connection", "close")],
    )
    .await
    .error(413, None);

    // An unknown or missing token: 401 in the SCIM schema, with a Bearer challenge.
    let resp = client
        .get(url("/Users"))
        .bearer_auth("assent_scim_notarealtokenatallnotarealtokenatall0000")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    scim.check(Method::GET, "/Users", resp)
        .await
        .error(401, None);
    let resp = client.get(url("/Users")).send().await.unwrap();
    scim.check(Method::GET, "/Users", resp)
        .await
        .error(401, None);

    // Discovery.
    let types = scim.get("/ResourceTypes").await.resources();
    assert_eq!(types.len(), 2);
    scim.get("/ResourceTypes/User").await.expect(200);
    let schemas = scim.get("/Schemas").await.resources();
    assert_eq!(schemas.len(), 3);
    scim.get(&format!("/Schemas/{ENTERPRISE_URN}"))
        .await
        .expect(200);
    scim.get("/Schemas/urn:nope").await.error(404, None);
    server.assert_log_free_of(&[("SCIM token", &t.token)]);
}

#[tokio::test]
async fn lists_page_sort_project_and_search() {
    let (_, _, scim) = tenant().await;
    for i in 0..5 {
        let mut u = entra_user(&format!("page{i}_{}@contoso.com", guid()), &guid());
        u["displayName"] = json!(format!("Person {}", 4 - i));
        if i == 2 {
            u["emails"] = json!([{"type": "home", "value": "home@example.org"}]);
        }
        scim.post("/Users", &u).await.expect(201);
    }
    let page = scim.get("/Users?startIndex=2&count=2").await.expect(200);
    assert_eq!(page["totalResults"], 5);
    assert_eq!(page["startIndex"], 2);
    assert_eq!(page["itemsPerPage"], 2);
    let sorted = scim
        .get("/Users?sortBy=displayName&sortOrder=descending&attributes=displayName")
        .await
        .resources();
    let names: Vec<&str> = sorted
        .iter()
        .map(|u| u["displayName"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["Person 4", "Person 3", "Person 2", "Person 1", "Person 0"]
    );
    assert!(sorted[0].get("userName").is_none() && sorted[0]["id"].is_string());
    // A filter the columns cannot answer streams through the evaluator.
    let home = scim
        .filter("/Users", "emails[type eq \"home\"].value co \"home@\"", "")
        .await;
    assert_eq!(home.len(), 1);
    let not_home = scim
        .filter(
            "/Users",
            "not (emails.type eq \"home\") and name.givenName sw \"given\"",
            "",
        )
        .await;
    assert_eq!(not_home.len(), 4);
    // POST /Users/.search and the root /.search.
    let search = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                        "filter": "displayName sw \"Person\"", "count": 3, "excludedAttributes": ["emails"]});
    let found = scim.post("/Users/.search", &search).await.expect(200);
    assert_eq!(found["totalResults"], 5);
    assert_eq!(found["Resources"].as_array().unwrap().len(), 3);
    assert!(found["Resources"][0].get("emails").is_none());
    scim.post("/Groups", &entra_group("Person group", &guid()))
        .await
        .expect(201);
    let all = scim.post("/.search", &search).await.expect(200);
    assert_eq!(all["totalResults"], 6, "{all}");
}

#[tokio::test]
async fn the_provisioning_log_shows_successes_and_failures_to_admins_only() {
    let (server, t, scim) = tenant().await;
    let user_name = format!("logged_{}@contoso.com", guid());
    let body = entra_user(&user_name, &guid());
    let id = scim.post("/Users", &body).await.id();
    scim.post("/Users", &body)
        .await
        .error(409, Some("uniqueness"));
    scim.get(&format!("/Users/{}", guid()))
        .await
        .error(404, None);
    scim.get("/Users?filter=bad+filter")
        .await
        .error(400, Some("invalidFilter"));

    let entries = provisioning_log(&t.owner, "").await;
    assert!(entries.len() >= 4, "{entries:?}");
    let created = entries
        .iter()
        .find(|e| e["status"] == 201)
        .unwrap_or_else(|| panic!("no 201 in {entries:?}"));
    assert_eq!(created["method"], "POST");
    assert_eq!(created["path"], "/v1/scim/v2/Users");
    assert_eq!(created["resource_type"], "User");
    assert_eq!(created["resource_id"], id.as_str());
    assert!(
        created["detail"].as_str().unwrap().contains(&user_name),
        "{created}"
    );
    assert!(created["latency_ms"].as_f64().unwrap() >= 0.0);
    support::utc_time(created, "at");
    let conflict = entries
        .iter()
        .find(|e| e["status"] == 409)
        .expect("409 logged");
    assert_eq!(conflict["scim_type"], "uniqueness");
    assert!(
        conflict["detail"].as_str().unwrap().contains(&user_name),
        "{conflict}"
    );
    let bad_filter = entries
        .iter()
        .find(|e| e["status"] == 400)
        .expect("400 logged");
    assert_eq!(bad_filter["scim_type"], "invalidFilter");
    // Newest first; the query string (a filter is personal data) is not kept.
    let ids: Vec<i64> = entries.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    assert!(entries
        .iter()
        .all(|e| !e["path"].as_str().unwrap().contains('?')));

    let failures = provisioning_log(&t.owner, "?status=failure").await;
    assert_eq!(failures.len(), 3, "{failures:?}");
    assert!(failures
        .iter()
        .all(|e| e["status"].as_u64().unwrap() >= 400));
    assert_eq!(provisioning_log(&t.owner, "?status=201").await.len(), 1);
    let first = provisioning_log(&t.owner, "?limit=2").await;
    assert_eq!(first.len(), 2);
    let next = provisioning_log(&t.owner, &format!("?limit=2&before={}", first[1]["id"])).await;
    assert!(next[0]["id"].as_i64() < first[1]["id"].as_i64());
    problem(
        t.owner
            .get("/v1/console/provisioning-log?status=weird")
            .await,
        &[400],
    )
    .await;

    // Another workspace's log holds none of it.
    let other = ScimTenant::new(server).await;
    assert!(provisioning_log(&other.owner, "").await.is_empty());

    // Members may not read it; without a session it is 401.
    let (email, password) = server.add_member(&t.ws, "member");
    let member = Browser::logged_in(server, &t.ws.slug, &email, &password).await;
    problem(member.get("/v1/console/provisioning-log").await, &[403]).await;
    problem(
        Browser::new(server)
            .get("/v1/console/provisioning-log")
            .await,
        &[401],
    )
    .await;
    let (admin_email, admin_password) = server.add_member(&t.ws, "admin");
    let admin = Browser::logged_in(server, &t.ws.slug, &admin_email, &admin_password).await;
    assert!(!provisioning_log(&admin, "").await.is_empty());
    server.assert_log_free_of(&[("SCIM token", &t.token)]);
}

/// scim2-tester's compliance check (`scim … test`, from PyPI's scim2-cli) against this server
/// must report no failure. scripts/test installs the tool into `target/scim2-venv`; when it is
/// missing this test installs it there; without python3 it is skipped.
#[tokio::test]
async fn the_scim2_cli_compliance_tester_reports_no_failure() {
    let Some(scim_cli) = scim2_cli() else {
        eprintln!("SKIPPED: python3 is not installed, so scim2-cli cannot run");
        return;
    };
    let (_, t, scim) = tenant().await;
    let out = tokio::process::Command::new(&scim_cli)
        .arg("--url")
        .arg(&scim.base)
        .arg("test")
        // The token travels in the environment, not on a command line other users can read.
        .env(
            "SCIM_CLI_HEADERS",
            format!("Authorization: Bearer {}", t.token),
        )
        .output()
        .await
        .expect("run scim2-cli");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let failures: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("ERROR") || l.starts_with("CRITICAL"))
        .collect();
    assert!(
        out.status.success() && failures.is_empty() && stdout.contains("SUCCESS"),
        "scim2-cli test failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

/// `target/scim2-venv/bin/scim`, installed there when missing; None without python3.
fn scim2_cli() -> Option<std::path::PathBuf> {
    use std::process::Command;
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/scim2-venv");
    let bin = venv.join("bin/scim");
    if bin.exists() {
        return Some(bin);
    }
    Command::new("python3").arg("--version").output().ok()?;
    let made = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .status()
        .expect("python3 -m venv");
    assert!(made.success(), "python3 -m venv {}", venv.display());
    let installed = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "scim2-cli"])
        .status()
        .expect("pip install scim2-cli");
    assert!(installed.success(), "pip install scim2-cli failed");
    Some(bin)
}
