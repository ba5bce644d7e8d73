//! Okta's SCIM 2.0 dialect (issue 15), as Assent's own tests of what Okta sends: the requests and
//! assertions of Okta's published SCIM 2.0 SPEC test (its Runscope suite), and Okta's documented
//! production sequences: create with a password and `groups`, profile updates by GET + full PUT,
//! deactivation and reactivation by a path-less PATCH, an import paging over 250 users while
//! users are created, and group push. The password Okta sends must reach no log, no database
//! column, no answer and no provisioning-log entry.

use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};

use super::{member_ids, provisioning_log, tenant};
use crate::support::scim::{guid, Scim, GROUP_URN, LIST_URN, USER_URN};

/// The body Okta posts to create a user (Okta's SCIM 2.0 reference): a password even when
/// password sync is off, and an empty `groups`.
fn okta_user(user_name: &str, password: &str) -> Value {
    json!({
        "schemas": [USER_URN],
        "userName": user_name,
        "name": {"givenName": "Test", "familyName": "User"},
        "emails": [{"primary": true, "value": user_name, "type": "work"}],
        "displayName": "Test User",
        "locale": "en-US",
        "externalId": format!("00u{}", &guid()[..17]),
        "groups": [],
        "password": password,
        "active": true
    })
}

/// The headers of Okta's SPEC test requests, a body or not.
const OKTA_HEADERS: &[(&str, &str)] = &[
    ("Accept", "application/scim+json"),
    ("Accept-Charset", "utf-8"),
    ("Content-Type", "application/scim+json; charset=utf-8"),
    ("User-Agent", "OKTA SCIM Integration"),
];

async fn okta_get(scim: &Scim, path: &str) -> crate::support::scim::Answer {
    scim.send(Method::GET, path, None, OKTA_HEADERS).await
}

fn assert_list_shape(body: &Value) {
    assert_eq!(body["schemas"], json!([LIST_URN]), "{body}");
    for n in ["itemsPerPage", "startIndex", "totalResults"] {
        assert!(body[n].is_u64(), "{n} is a number: {body}");
    }
}

/// Okta's SPEC test, step by step: its requests, and what its assertions check.
#[tokio::test]
async fn okta_spec_test_passes() {
    let (server, _, scim) = tenant().await;
    // "Test Users endpoint": the suite expects at least one user there already.
    let first = format!("okta.first.{}@example.com", guid());
    scim.post("/Users", &okta_user(&first, "Placeholder1!"))
        .await
        .expect(201);
    let body = okta_get(&scim, "/Users?count=2&startIndex=1")
        .await
        .expect(200);
    assert_list_shape(&body);
    assert!(!body["Resources"].as_array().unwrap().is_empty(), "{body}");
    let body = okta_get(&scim, "/Groups?count=100&startIndex=1")
        .await
        .expect(200);
    assert_list_shape(&body);
    // "Check the Users endpoint for a user that does not exist".
    let random = format!("{}@atko.com", guid());
    let body = okta_get(
        &scim,
        &format!("/Users?filter=userName%20eq%20%22{random}%22&startIndex=1&count=100"),
    )
    .await
    .expect(200);
    assert_list_shape(&body);
    assert_eq!(body["totalResults"], 0);
    assert!(body["Resources"].as_array().is_none_or(Vec::is_empty));
    // "Create Okta user with realistic values".
    let password = format!("Spec-{}", guid());
    let created = scim
        .send(
            Method::POST,
            "/Users",
            Some(&okta_user(&random, &password)),
            OKTA_HEADERS,
        )
        .await
        .expect(201);
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["active"], true);
    assert_eq!(created["userName"], random.as_str());
    assert_eq!(created["name"]["familyName"], "User");
    assert!(created.get("password").is_none(), "{created}");
    // "Verify that user was created".
    let got = okta_get(&scim, &format!("/Users/{id}")).await.expect(200);
    assert_eq!(got["userName"], random.as_str());
    assert_eq!(got["name"]["givenName"], "Test");
    assert_eq!(got["emails"][0]["value"], random.as_str());
    // "Expect failure when recreating user with same values": 409.
    scim.send(
        Method::POST,
        "/Users",
        Some(&okta_user(&random, &password)),
        OKTA_HEADERS,
    )
    .await
    .error(409, Some("uniqueness"));
    // "Username Case Sensitivity Check": the same user, whatever the case.
    let body = okta_get(
        &scim,
        &format!(
            "/Users?filter=userName%20eq%20%22{}%22&startIndex=1&count=100",
            random.to_uppercase()
        ),
    )
    .await
    .expect(200);
    assert_eq!(body["totalResults"], 1, "{body}");
    assert_eq!(body["Resources"][0]["id"], id.as_str());
    // "Required Test: Fetch Users with filter … case sensitivity", then a user that is not there.
    let body = okta_get(&scim, "/Users/010101001010101010")
        .await
        .error(404, None);
    assert!(body["detail"].is_string());
    server.assert_log_free_of(&[("SCIM password", &password)]);
    server
        .assert_db_free_of(&[("SCIM password", &password)])
        .await;
}

/// Okta in production: create (password, `groups: []`), update by GET + full PUT, deactivate and
/// reactivate by a path-less PATCH (never a DELETE), a PUT without `active` that keeps it.
#[tokio::test]
async fn okta_user_lifecycle_discards_the_password_and_keeps_active_across_a_put() {
    let (server, t, scim) = tenant().await;
    let user_name = format!("okta.user.{}@example.com", guid());
    let password = format!("OktaPass-{}", guid());
    let created = scim
        .post("/Users", &okta_user(&user_name, &password))
        .await
        .expect(201);
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(created.get("password").is_none());
    assert!(created.get("groups").is_none(), "{created}");

    // Profile update: GET, change, PUT it back whole: readOnly `id`, `meta`, `groups` and a
    // password included.
    let mut full = scim.get(&format!("/Users/{id}")).await.expect(200);
    full["name"]["familyName"] = json!("Renamed");
    full["title"] = json!("Engineer");
    full["password"] = json!(password);
    full["groups"] = json!([]);
    let put = scim.put(&format!("/Users/{id}"), &full).await.expect(200);
    assert_eq!(put["name"]["familyName"], "Renamed");
    assert_eq!(put["title"], "Engineer");
    assert_eq!(put["id"], id.as_str());
    assert!(put.get("password").is_none());

    // Deactivate: Okta's path-less replace. Then a PUT without `active` leaves it false.
    let off = scim
        .patch(
            &format!("/Users/{id}"),
            json!([{"op": "replace", "value": {"active": false}}]),
        )
        .await
        .expect(200);
    assert_eq!(off["active"], false);
    let mut no_active = scim.get(&format!("/Users/{id}")).await.expect(200);
    no_active.as_object_mut().unwrap().remove("active");
    no_active["title"] = json!("Former engineer");
    let put = scim
        .put(&format!("/Users/{id}"), &no_active)
        .await
        .expect(200);
    assert_eq!(put["active"], false, "{put}");
    assert_eq!(put["title"], "Former engineer");
    let inactive = scim.filter("/Users", "active eq false", "").await;
    assert!(inactive.iter().any(|u| u["id"] == id.as_str()));
    // RFC 7644 §3.5.1 otherwise: what the PUT leaves out is cleared.
    assert!(put.get("locale").is_some());
    let mut without_locale = put.clone();
    without_locale.as_object_mut().unwrap().remove("locale");
    let put = scim
        .put(&format!("/Users/{id}"), &without_locale)
        .await
        .expect(200);
    assert!(put.get("locale").is_none(), "{put}");

    // Reactivate, with a password in the same PATCH and by path.
    let on = scim
        .patch(
            &format!("/Users/{id}"),
            json!([
                {"op": "replace", "value": {"active": true, "password": password}},
                {"op": "replace", "path": "password", "value": password}
            ]),
        )
        .await
        .expect(200);
    assert_eq!(on["active"], true);

    // The password is nowhere: server log, database file, provisioning log.
    server.assert_log_free_of(&[("SCIM password", &password)]);
    server
        .assert_db_free_of(&[("SCIM password", &password)])
        .await;
    let log = provisioning_log(&t.owner, "").await;
    assert!(!log.is_empty());
    assert!(!Value::Array(log).to_string().contains(&password));
}

/// Okta's import: pages of `count=100` by `startIndex` over more than 250 users, while users are
/// created and deactivated meanwhile. Every user that existed when the import began is seen
/// exactly once.
#[tokio::test]
async fn okta_import_pages_over_250_users_each_once_while_users_are_created() {
    let (_, _, scim) = tenant().await;
    let mut before: Vec<String> = Vec::new();
    for batch in 0..10 {
        let ids = join_all((0..26).map(|i| {
            let scim = &scim;
            async move {
                let name = format!("import{batch}_{i}_{}@example.com", guid());
                scim.post("/Users", &okta_user(&name, "x")).await.id()
            }
        }))
        .await;
        before.extend(ids);
    }
    assert_eq!(before.len(), 260);
    let mut seen: Vec<String> = Vec::new();
    let mut start = 1;
    loop {
        // Between pages, another admin's changes: new users, and a deactivation.
        let writes = join_all((0..7).map(|i| {
            let scim = &scim;
            async move {
                let name = format!("late{start}_{i}_{}@example.com", guid());
                scim.post("/Users", &okta_user(&name, "x")).await.id()
            }
        }));
        let path = format!("/Users?startIndex={start}&count=100");
        let page = okta_get(&scim, &path);
        let (page, _) = futures_util::join!(page, writes);
        let body = page.expect(200);
        let resources = body["Resources"].as_array().cloned().unwrap_or_default();
        scim.patch(
            &format!("/Users/{}", before[start % before.len()]),
            json!([{"op": "replace", "value": {"active": false}}]),
        )
        .await
        .expect(200);
        seen.extend(
            resources
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_owned()),
        );
        if resources.len() < 100 {
            break;
        }
        start += 100;
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "a user came twice in one import");
    for id in &before {
        assert!(seen.contains(id), "user {id} was missed by the import");
    }
}

/// Okta's group push: create, add members, remove one with `members[value eq "…"]`, rename with a
/// path-less replace that carries `id`; members come back with `display`.
#[tokio::test]
async fn okta_group_push() {
    let (_, _, scim) = tenant().await;
    let mut users = Vec::new();
    for i in 0..3 {
        let name = format!("push{i}_{}@example.com", guid());
        let mut body = okta_user(&name, "x");
        if i == 2 {
            body.as_object_mut().unwrap().remove("displayName");
        }
        users.push((scim.post("/Users", &body).await.id(), name));
    }
    let name = format!("Okta Push {}", guid());
    let group = scim
        .post(
            "/Groups",
            &json!({"schemas": [GROUP_URN], "displayName": name, "members": []}),
        )
        .await
        .expect(201);
    let gid = group["id"].as_str().unwrap().to_owned();
    // Okta sends each member's display; Assent keeps it as sent (RFC 7643 §2.4), and shows a
    // member sent without one by its displayName, else its userName.
    let members = json!([
        {"value": users[0].0, "display": "Okta's name"},
        {"value": users[1].0},
        {"value": users[2].0}
    ]);
    let added = scim
        .patch(
            &format!("/Groups/{gid}"),
            json!([{"op": "add", "path": "members", "value": members}]),
        )
        .await
        .expect(200);
    assert_eq!(member_ids(&added).len(), 3);
    // `display`: the member's displayName, else its userName.
    for m in added["members"].as_array().unwrap() {
        let want = if m["value"] == users[0].0.as_str() {
            "Okta's name"
        } else if m["value"] == users[1].0.as_str() {
            "Test User"
        } else {
            users[2].1.as_str()
        };
        assert_eq!(m["display"], want, "{m}");
        assert_eq!(m["type"], "User");
    }
    scim.patch(
        &format!("/Groups/{gid}"),
        json!([{"op": "remove", "path": format!("members[value eq \"{}\"]", users[0].0)}]),
    )
    .await
    .expect(200);
    let renamed = format!("{name} renamed");
    let after = scim
        .patch(
            &format!("/Groups/{gid}"),
            json!([{"op": "replace", "value": {"id": gid, "displayName": renamed}}]),
        )
        .await
        .expect(200);
    assert_eq!(after["displayName"], renamed.as_str());
    assert_eq!(after["id"], gid.as_str());
    let mut want = vec![users[1].0.clone(), users[2].0.clone()];
    want.sort();
    assert_eq!(member_ids(&after), want);
    let listed = scim
        .filter("/Groups", &format!("displayName eq \"{renamed}\""), "")
        .await;
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0]["members"][0]["display"].is_string(),
        "{}",
        listed[0]
    );
}

/// Okta re-pushes a group's members with an `add` of members already there, and may `remove`
/// members who are already gone: nothing changes, so neither the version (the ETag) nor
/// `meta.lastModified` moves (RFC 7644 §3.5.2.1); a real change still moves both.
#[tokio::test]
async fn a_repeated_member_add_or_remove_changes_no_version() {
    let (_, _, scim) = tenant().await;
    let mut ids = Vec::new();
    for who in ["a", "b"] {
        let user = okta_user(&format!("re.{who}.{}@example.com", guid()), "Pw1!");
        let created = scim.post("/Users", &user).await;
        assert_eq!(created.status, 201, "{}", created.body);
        ids.push(created.id());
    }
    let (alice, bob) = (&ids[0], &ids[1]);
    let group = scim
        .post(
            "/Groups",
            &json!({"schemas": [GROUP_URN], "displayName": format!("Re-push {}", guid()),
                    "members": [{"value": alice}]}),
        )
        .await
        .expect(201);
    let path = format!("/Groups/{}", group["id"].as_str().unwrap());
    let before = scim.get(&path).await.expect(200)["meta"].clone();

    let again = scim
        .patch(
            &path,
            json!([{"op": "add", "path": "members", "value": [{"value": alice}]}]),
        )
        .await
        .expect(200);
    assert_eq!(again["meta"], before, "an add of a member already there");
    let gone = scim
        .patch(
            &path,
            json!([{"op": "remove", "path": format!("members[value eq \"{bob}\"]")}]),
        )
        .await
        .expect(200);
    assert_eq!(
        gone["meta"], before,
        "a remove of a member who is not there"
    );
    assert_eq!(scim.get(&path).await.expect(200)["meta"], before);

    let added = scim
        .patch(
            &path,
            json!([{"op": "add", "path": "members", "value": [{"value": bob}]}]),
        )
        .await
        .expect(200);
    assert_ne!(added["meta"]["version"], before["version"], "{added}");
    assert_eq!(member_ids(&added).len(), 2, "{added}");
}
