//! Extension schemas a workspace declares (issue 15 part 2): `GET`/`PUT /v1/console/scim/schemas`
//! (owners write, admins read, members 403, cross-site writes refused, bad definitions 400), their
//! announcement in `/Schemas` and `/ResourceTypes`, and their types, mutability and required
//! enforced on SCIM writes with 400 invalidValue (mutability for an immutable value changed or a
//! required one a PATCH removes).

use reqwest::Method;
use serde_json::{json, Value};

use super::tenant;
use crate::support::scim::{guid, USER_URN};
use crate::support::{json_body, problem, Browser};

const EXT: &str = "urn:ietf:params:scim:schemas:extension:acme:2.0:User";

fn definitions() -> Value {
    json!({"schemas": [{
        "id": EXT,
        "name": "AcmeUser",
        "description": "Acme's HR attributes",
        "attributes": [
            {"name": "costCenter", "type": "string", "required": true},
            {"name": "level", "type": "integer"},
            {"name": "remote", "type": "boolean"},
            {"name": "badgeId", "type": "string", "mutability": "immutable"},
            {"name": "score", "type": "integer", "mutability": "readOnly"},
            {"name": "pin", "type": "string", "mutability": "writeOnly", "returned": "never"}
        ]
    }]})
}

async fn put(browser: &Browser, body: &Value) -> reqwest::Response {
    browser
        .request(Method::PUT, "/v1/console/scim/schemas")
        .json(body)
        .send()
        .await
        .expect("PUT")
}

#[tokio::test]
async fn owners_declare_admins_read_members_are_refused() {
    let (server, t, scim) = tenant().await;
    let (admin_email, admin_password) = server.add_member(&t.ws, "admin");
    let (member_email, member_password) = server.add_member(&t.ws, "member");
    let admin = Browser::logged_in(server, &t.ws.slug, &admin_email, &admin_password).await;
    let member = Browser::logged_in(server, &t.ws.slug, &member_email, &member_password).await;

    let empty = json_body(t.owner.get("/v1/console/scim/schemas").await, 200).await;
    assert_eq!(empty, json!({"schemas": []}));
    problem(put(&admin, &definitions()).await, &[403]).await;
    problem(put(&member, &definitions()).await, &[403]).await;
    problem(member.get("/v1/console/scim/schemas").await, &[403]).await;
    // A cross-site write changes nothing.
    let resp = t
        .owner
        .request(Method::PUT, "/v1/console/scim/schemas")
        .header("Origin", "https://evil.example")
        .json(&definitions())
        .send()
        .await
        .unwrap();
    problem(resp, &[403]).await;
    let still = json_body(admin.get("/v1/console/scim/schemas").await, 200).await;
    assert_eq!(still, json!({"schemas": []}));
    // Bad definitions: 400 naming what is wrong, nothing stored.
    for (body, needle) in [
        (
            json!({"schemas": [{"id": "urn:example:x", "attributes": []}]}),
            "extension URN",
        ),
        (
            json!({"schemas": [{"id": EXT, "attributes": [{"name": "x", "type": "text"}]}]}),
            "'type' must be one of",
        ),
        (json!({"nope": 1}), "RFC 7643 section 7"),
    ] {
        let p = problem(put(&t.owner, &body).await, &[400]).await;
        assert!(p["detail"].as_str().unwrap().contains(needle), "{p}");
    }
    assert_eq!(
        json_body(admin.get("/v1/console/scim/schemas").await, 200).await,
        json!({"schemas": []})
    );

    let stored = json_body(put(&t.owner, &definitions()).await, 200).await;
    assert_eq!(stored["schemas"][0]["id"], EXT);
    assert_eq!(stored["schemas"][0]["resourceType"], "User");
    assert_eq!(
        stored["schemas"][0]["attributes"][1]["mutability"],
        "readWrite"
    );
    let read = json_body(admin.get("/v1/console/scim/schemas").await, 200).await;
    assert_eq!(read, stored);
    // On the workspace's audit log, once: the refused and invalid attempts changed nothing.
    let audit = json_body(
        t.owner
            .get("/v1/console/audit?kind=scim.schemas_declared&limit=10")
            .await,
        200,
    )
    .await;
    let entries = audit["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["actor"], t.ws.owner_email.as_str());
    assert_eq!(entries[0]["detail"]["schemas"], json!([EXT]));

    // Announced to SCIM clients.
    let schemas = scim.get("/Schemas").await.resources();
    let doc = schemas
        .iter()
        .find(|s| s["id"] == EXT)
        .expect("declared schema listed");
    assert_eq!(doc["attributes"][0]["required"], true);
    assert_eq!(
        doc["meta"]["location"],
        format!("{}/Schemas/{EXT}", scim.base).as_str()
    );
    scim.get(&format!("/Schemas/{EXT}")).await.expect(200);
    let user_type = scim.get("/ResourceTypes/User").await.expect(200);
    assert!(user_type["schemaExtensions"]
        .as_array()
        .unwrap()
        .contains(&json!({"schema": EXT, "required": false})));
    let group_type = scim.get("/ResourceTypes/Group").await.expect(200);
    assert!(!group_type.to_string().contains(EXT));
    // Another workspace sees none of it.
    let (_, _, other) = tenant().await;
    assert!(other
        .get("/Schemas")
        .await
        .resources()
        .iter()
        .all(|s| s["id"] != EXT));
}

#[tokio::test]
async fn declared_types_mutability_and_required_are_enforced() {
    let (server, t, scim) = tenant().await;
    let pin = format!("pin-{}", guid());
    json_body(put(&t.owner, &definitions()).await, 200).await;
    let user = |ext: Value| json!({"schemas": [USER_URN, EXT], "userName": format!("d_{}@x.org", guid()), EXT: ext});
    // Entra's string booleans and numbers are read as their declared types; readOnly ignored;
    // writeOnly checked, then not kept.
    let created = scim
        .post(
            "/Users",
            &user(json!({"costcenter": "CC-9", "level": "3", "remote": "True",
                         "badgeId": "B-1", "score": 99, "pin": pin})),
        )
        .await
        .expect(201);
    assert_eq!(
        created[EXT],
        json!({"costCenter": "CC-9", "level": 3, "remote": true, "badgeId": "B-1"})
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let found = scim
        .filter("/Users", &format!("{EXT}:remote eq true"), "")
        .await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0][EXT], created[EXT]);
    let got = scim.get(&format!("/Users/{id}")).await.expect(200);
    assert!(got[EXT].get("pin").is_none(), "{got}");
    server
        .assert_db_free_of(&[("writeOnly value", pin.as_str())])
        .await;

    for (ext, needle) in [
        (json!({"level": 1}), "costCenter' is required"),
        (json!({"costCenter": 7}), "must be a string"),
        (
            json!({"costCenter": "c", "level": "high"}),
            "must be an integer",
        ),
        (
            json!({"costCenter": "c", "remote": "perhaps"}),
            "must be a boolean",
        ),
        (
            json!({"costCenter": "c", "shoeSize": 9}),
            "not an attribute of the declared schema",
        ),
    ] {
        let e = scim
            .post("/Users", &user(ext.clone()))
            .await
            .error(400, Some("invalidValue"));
        assert!(e["detail"].as_str().unwrap().contains(needle), "{ext}: {e}");
    }
    // PATCH: a type error (400 invalidValue), a required attribute removed and an immutable one
    // changed (400 mutability, RFC 7644 §3.5.2.2 and §3.5.1); the user is unchanged.
    for (op, scim_type) in [
        (
            json!({"op": "replace", "path": format!("{EXT}:level"), "value": "x"}),
            "invalidValue",
        ),
        (
            json!({"op": "remove", "path": format!("{EXT}:costCenter")}),
            "mutability",
        ),
        (
            json!({"op": "replace", "path": format!("{EXT}:badgeId"), "value": "B-2"}),
            "mutability",
        ),
    ] {
        scim.patch(&format!("/Users/{id}"), json!([op]))
            .await
            .error(400, Some(scim_type));
    }
    // A PUT that gives the immutable attribute another value is refused the same way.
    let mut put = got.clone();
    put[EXT]["badgeId"] = json!("B-3");
    scim.put(&format!("/Users/{id}"), &put)
        .await
        .error(400, Some("mutability"));
    let same = scim.get(&format!("/Users/{id}")).await.expect(200);
    assert_eq!(same[EXT], created[EXT]);
    assert_eq!(same["meta"]["version"], "W/\"1\"");
    // What the schema allows goes through.
    let ok = scim
        .patch(
            &format!("/Users/{id}"),
            json!([{"op": "Replace", "path": format!("{EXT}:level"), "value": 4},
                   {"op": "Replace", "path": format!("{EXT}:badgeId"), "value": "B-1"}]),
        )
        .await
        .expect(200);
    assert_eq!(ok[EXT]["level"], 4);
    // A user without the extension is not held to it.
    scim.post(
        "/Users",
        &json!({"schemas": [USER_URN], "userName": format!("plain_{}@x.org", guid())}),
    )
    .await
    .expect(201);
}

/// A declared attribute with `uniqueness: server` holds each value once per workspace: a POST,
/// PUT or PATCH that gives another user a value one holds is 409 `uniqueness` and changes
/// nothing. Strings compare as filters do (case-insensitively) unless `caseExact`. A user keeps
/// the value it has; a value freed by a change or a delete can be taken; another workspace is
/// not concerned; and of concurrent creates with one value, exactly one lands.
#[tokio::test]
async fn declared_unique_attributes_hold_each_value_once() {
    let (_, t, scim) = tenant().await;
    let (_, other_t, other) = tenant().await;
    let unique = json!({"schemas": [{
        "id": EXT, "name": "AcmeUser",
        "attributes": [
            {"name": "badgeId", "type": "string", "uniqueness": "server"},
            {"name": "employeeCode", "type": "string", "uniqueness": "global", "caseExact": true},
            {"name": "level", "type": "integer"}
        ]
    }]});
    json_body(put(&t.owner, &unique).await, 200).await;
    json_body(put(&other_t.owner, &unique).await, 200).await;
    let user = |ext: Value| json!({"schemas": [USER_URN, EXT], "userName": format!("u_{}@x.org", guid()), EXT: ext});

    let alice = scim
        .post(
            "/Users",
            &user(json!({"badgeId": "B-1", "employeeCode": "Ab"})),
        )
        .await
        .expect(201);
    let alice_id = alice["id"].as_str().unwrap().to_owned();
    let e = scim
        .post("/Users", &user(json!({"badgeId": "b-1"})))
        .await
        .error(409, Some("uniqueness"));
    assert!(e["detail"].as_str().unwrap().contains("badgeId"), "{e}");
    scim.post(
        "/Users",
        &user(json!({"badgeId": "B-9", "employeeCode": "Ab"})),
    )
    .await
    .error(409, Some("uniqueness"));
    // Another case of a caseExact value is another value; another workspace is not concerned.
    let bob = scim
        .post(
            "/Users",
            &user(json!({"badgeId": "B-2", "employeeCode": "ab"})),
        )
        .await
        .expect(201);
    let bob_path = format!("/Users/{}", bob["id"].as_str().unwrap());
    other
        .post(
            "/Users",
            &user(json!({"badgeId": "B-1", "employeeCode": "Ab"})),
        )
        .await
        .expect(201);

    // Bob may not take Alice's badge by PATCH or PUT; his user is unchanged.
    scim.patch(
        &bob_path,
        json!([{"op": "replace", "path": format!("{EXT}:badgeId"), "value": "B-1"}]),
    )
    .await
    .error(409, Some("uniqueness"));
    let mut put_body = bob.clone();
    put_body[EXT]["badgeId"] = json!("B-1");
    scim.put(&bob_path, &put_body)
        .await
        .error(409, Some("uniqueness"));
    let same = scim.get(&bob_path).await.expect(200);
    assert_eq!(same[EXT]["badgeId"], "B-2");
    assert_eq!(same["meta"]["version"], "W/\"1\"");
    // Alice keeps hers through a PUT and a PATCH of something else.
    let mut alice_put = alice.clone();
    alice_put[EXT]["level"] = json!(2);
    scim.put(&format!("/Users/{alice_id}"), &alice_put)
        .await
        .expect(200);
    scim.patch(
        &format!("/Users/{alice_id}"),
        json!([{"op": "replace", "path": format!("{EXT}:level"), "value": 3}]),
    )
    .await
    .expect(200);
    // Once she gives it up, Bob can take it; once she is gone, her code is free.
    scim.patch(
        &format!("/Users/{alice_id}"),
        json!([{"op": "replace", "path": format!("{EXT}:badgeId"), "value": "B-3"}]),
    )
    .await
    .expect(200);
    scim.patch(
        &bob_path,
        json!([{"op": "replace", "path": format!("{EXT}:badgeId"), "value": "B-1"}]),
    )
    .await
    .expect(200);
    scim.delete(&format!("/Users/{alice_id}")).await.expect(204);
    scim.post(
        "/Users",
        &user(json!({"badgeId": "B-4", "employeeCode": "Ab"})),
    )
    .await
    .expect(201);

    // Rounds of eight creates of one badge at once: in each, one lands and seven are refused.
    for round in 0..10 {
        let racing = (0..8).map(|_| {
            let body = user(json!({"badgeId": format!("RACE-{round}")}));
            let scim = &scim;
            async move { scim.post("/Users", &body).await.status }
        });
        let statuses: Vec<u16> = futures_util::future::join_all(racing).await;
        let landed = statuses.iter().filter(|s| **s == 201).count();
        let refused = statuses.iter().filter(|s| **s == 409).count();
        assert_eq!((landed, refused), (1, 7), "round {round}: {statuses:?}");
    }
}
