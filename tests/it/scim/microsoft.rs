//! The requests of Microsoft's SCIM reference Postman collection (AzureAD/SCIMReferenceCode),
//! written as Assent's own tests (issue 15), and the lenient edges of the SCIM routes: a trailing
//! slash, endpoint names in any case, any Content-Type on a bodiless request, `Accept:
//! application/json`, a charset parameter anywhere.
//!
//! The collection's requests that RFC 7644 does not back, and what Assent answers (README,
//! "SCIM compatibility"):
//! - `GET /serviceConfiguration`: not an RFC 7644 endpoint (`/ServiceProviderConfig` is): 404.
//! - `?attributes=emails[type eq "work"]`: `attributes` takes attribute names (RFC 7644 §3.9), not
//!   filters: 400 invalidValue... it names no attribute.
//! - filters with unquoted strings and times (`name.FamilyName eq Employee`, `meta.Created gt
//!   2015-10-10T14:38:21.8617979-07:00`): a compValue is a JSON literal (§3.4.2.2): 400
//!   invalidFilter.
//! - members added as bare strings (`"value": "string id 1"`) that name nobody: 400 invalidValue,
//!   the group unchanged (members must resolve).
//! - a body with a misspelt attribute (`"userame"`) or no `userName`: 400, nothing stored.

use reqwest::Method;
use serde_json::{json, Value};

use super::{member_ids, tenant};
use crate::support::scim::{guid, ENTERPRISE_URN, GROUP_URN, USER_URN};

/// "Post User" / "Post EnterpriseUser" of the collection: capitalised `Primary`, `Department`,
/// `Manager` and `Value`, and a manager that is a name, not an id.
fn reference_user(user_name: &str, display: &str) -> Value {
    json!({
        "userName": user_name,
        "active": true,
        "displayName": display,
        "schemas": [ENTERPRISE_URN, USER_URN],
        "externalId": guid(),
        "name": {"formatted": "Adrew Ryan", "familyName": "Ryan", "givenName": "Andrew"},
        "emails": [
            {"Primary": true, "type": "work", "value": format!("w{user_name}@bob2.com")},
            {"Primary": false, "type": "home", "value": format!("h{user_name}@bob3.com")}
        ],
        ENTERPRISE_URN: {"Department": "bob", "Manager": {"Value": "SuzzyQ"}}
    })
}

#[tokio::test]
async fn microsoft_reference_collection_user_tests() {
    let (_, _, scim) = tenant().await;
    let u1 = format!("UserName123{}", &guid()[..8]);
    let u2 = format!("UserName222{}", &guid()[..8]);
    let display = format!("BobIsAmazing{}", &guid()[..8]);
    let first = scim
        .post("/Users", &reference_user(&u1, &display))
        .await
        .expect(201);
    let id1 = first["id"].as_str().unwrap().to_owned();
    // A manager that names no user is kept as sent, without `$ref`.
    assert_eq!(first[ENTERPRISE_URN]["manager"], json!({"value": "SuzzyQ"}));
    assert_eq!(first[ENTERPRISE_URN]["department"], "bob");
    let id2 = scim
        .post("/Users", &reference_user(&u2, "lennay"))
        .await
        .id();
    scim.get(&format!("/Users/{id2}")).await.expect(200);
    let listed = scim
        .get("/Users?attributes=userName,emails")
        .await
        .resources();
    assert!(listed.iter().all(|u| u.get("name").is_none()));
    // The collection's trailing slash, and its capitalised attribute name.
    let found = scim
        .get(&format!("/Users/?filter=DisplayName+eq+%22{display}%22"))
        .await
        .resources();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], id1.as_str());
    let patched = scim
        .patch(
            &format!("/Users/{id1}"),
            json!([{"op": "replace", "path": "userName", "value": format!("ryan3{u1}")}]),
        )
        .await
        .expect(200);
    assert_eq!(patched["userName"], format!("ryan3{u1}").as_str());
    // PUT with `id` in the body.
    let mut put = reference_user(&format!("UserNameReplace2{u2}"), "BobIsAmazing");
    put["id"] = json!(id2);
    put["name"]["formatted"] = json!("NewName");
    let replaced = scim.put(&format!("/Users/{id2}"), &put).await.expect(200);
    assert_eq!(replaced["name"]["formatted"], "NewName");
    // The manager gains its `$ref` once it names a user of the workspace, and keeps its value
    // (without `$ref`) when that user is deleted.
    let managed = scim
        .patch(
            &format!("/Users/{id2}"),
            json!([{"op": "replace", "path": format!("{ENTERPRISE_URN}:manager"), "value": id1}]),
        )
        .await
        .expect(200);
    assert_eq!(
        managed[ENTERPRISE_URN]["manager"]["$ref"],
        format!("{}/Users/{id1}", scim.base).as_str()
    );
    scim.delete(&format!("/Users/{id1}")).await.expect(204);
    let after = scim.get(&format!("/Users/{id2}")).await.expect(200);
    assert_eq!(after[ENTERPRISE_URN]["manager"], json!({"value": id1}));
    scim.delete(&format!("/Users/{id2}")).await.expect(204);
}

#[tokio::test]
async fn microsoft_reference_collection_group_tests() {
    let (_, _, scim) = tenant().await;
    let tag = &guid()[..8];
    let g1 = scim
        .post(
            "/Groups",
            &json!({"externalId": guid(), "schemas": [GROUP_URN],
                    "displayName": format!("Group1DisplayName{tag}"), "members": []}),
        )
        .await
        .id();
    let id3 = scim
        .post(
            "/Users",
            &reference_user(&format!("UserName333{tag}"), "lennay"),
        )
        .await
        .id();
    let id4 = scim
        .post(
            "/Users",
            &reference_user(&format!("UserName444{tag}"), "four"),
        )
        .await
        .id();
    // A member's `display` is kept as sent ("VP": RFC 7643 §2.4 makes it immutable); a member
    // sent without one shows its own displayName.
    let g2 = scim
        .post(
            "/Groups",
            &json!({"schemas": [GROUP_URN], "externalId": guid(),
                    "displayName": format!("GroupDisplayName2{tag}"),
                    "members": [{"value": id3, "display": "VP"}]}),
        )
        .await
        .expect(201);
    assert_eq!(g2["members"][0]["display"], "VP");
    let g2id = g2["id"].as_str().unwrap().to_owned();
    let plain = scim
        .patch(
            &format!("/Groups/{g2id}"),
            json!([{"op": "add", "path": "members", "value": [{"value": id4}]}]),
        )
        .await
        .expect(200);
    let four = plain["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["value"] == id4.as_str())
        .unwrap();
    assert_eq!(four["display"], "four");
    scim.get("/Groups").await.resources();
    let g3 = scim
        .post(
            "/Groups",
            &json!({"schemas": [GROUP_URN], "externalId": guid(),
                    "displayName": format!("GroupDisplayName3{tag}"), "members": []}),
        )
        .await
        .id();
    let put = scim
        .put(
            &format!("/Groups/{g3}"),
            &json!({"schemas": [GROUP_URN], "id": g3, "displayName": format!("putName{tag}"),
                    "members": [{"value": id3, "display": "VP"}, {"value": id4, "display": "SenorVP"}]}),
        )
        .await
        .expect(200);
    let mut want = vec![id3.clone(), id4.clone()];
    want.sort();
    assert_eq!(member_ids(&put), want);
    scim.get(&format!("/Groups/{g3}")).await.expect(200);
    // "addMember", with the collection's extra `name` key on the operation and `displayName` in
    // the member.
    let add = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"name": "addMember", "op": "add", "path": "members",
                        "value": [{"displayName": "new User", "value": id4}]}]});
    let added = scim
        .send(Method::PATCH, &format!("/Groups/{g1}"), Some(&add), &[])
        .await
        .expect(200);
    assert_eq!(member_ids(&added), vec![id4.clone()]);
    assert_eq!(added["members"][0]["display"], "new User");
    scim.patch(
        &format!("/Groups/{g1}"),
        json!([{"op": "remove", "path": format!("members[value eq \"{id4}\"]")}]),
    )
    .await
    .expect(200);
    scim.send(Method::PATCH, &format!("/Groups/{g1}"), Some(&add), &[])
        .await
        .expect(200);
    let cleared = scim
        .patch(
            &format!("/Groups/{g1}"),
            json!([{"op": "remove", "path": "members"}]),
        )
        .await
        .expect(200);
    assert!(cleared.get("members").is_none());
    let excluded = scim
        .get(&format!("/Groups/{g3}?excludedAttributes=members"))
        .await
        .expect(200);
    assert!(excluded.get("members").is_none());
    for path in [
        format!("/Users/{id3}"),
        format!("/Users/{id4}"),
        format!("/Groups/{g1}"),
        format!("/Groups/{g2id}"),
        format!("/Groups/{g3}"),
    ] {
        scim.delete(&path).await.expect(204);
    }
}

/// The collection's requests that RFC 7644 does not back (see the module docs): each answered
/// with a SCIM error, and nothing changed.
#[tokio::test]
async fn microsoft_reference_collection_requests_outside_rfc7644_get_clear_errors() {
    let (_, _, scim) = tenant().await;
    scim.get("/serviceConfiguration").await.error(404, None);
    let filtered =
        url::form_urlencoded::byte_serialize(b"emails[type eq \"work\"]").collect::<String>();
    let refused = scim.get(&format!("/Users?attributes={filtered}")).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    let tag = &guid()[..8];
    let gid = scim
        .post(
            "/Groups",
            &json!({"displayName": format!("Group 1 {tag}"), "externalId": guid(),
                    "schemas": [GROUP_URN]}),
        )
        .await
        .id();
    let garbage = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "id": gid, "Operations": [{"op": "add", "path": "members", "value": "string id 1"}]});
    scim.send(
        Method::PATCH,
        &format!("/Groups/{gid}"),
        Some(&garbage),
        &[],
    )
    .await
    .error(400, Some("invalidValue"));
    assert!(scim
        .get(&format!("/Groups/{gid}"))
        .await
        .expect(200)
        .get("members")
        .is_none());
    let mut typo = reference_user(&format!("OMalley{tag}"), "x");
    let user_name = typo.as_object_mut().unwrap().remove("userName").unwrap();
    typo["userame"] = user_name;
    scim.post("/Users", &typo)
        .await
        .error(400, Some("invalidSyntax"));
    for filter in [
        "name.FamilyName eq Employee and (emails.Value co example.com or emails.Value co example.org)",
        "meta.Created gt 2015-10-10T14:38:21.8617979-07:00",
    ] {
        let encoded: String = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
        scim.get(&format!("/Users?filter={encoded}"))
            .await
            .error(400, Some("invalidFilter"));
    }
    // What the collection meant is answered in RFC form.
    scim.get("/Users?filter=userName+sw+%22O%22")
        .await
        .resources();
    scim.get("/Users?filter=meta.created+gt+%222015-10-10T14:38:21Z%22")
        .await
        .resources();
}

#[tokio::test]
async fn lenient_edges_of_the_scim_routes() {
    let (_, t, scim) = tenant().await;
    let user_name = format!("edge_{}@example.com", guid());
    let id = scim
        .post(
            "/users/",
            &json!({"schemas": [USER_URN], "userName": user_name}),
        )
        .await
        .id();
    for path in [
        format!("/Users/{id}/"),
        format!("/USERS/{id}"),
        format!("/users/{id}?attributes=userName"),
    ] {
        let got = scim.get(&path).await.expect(200);
        assert_eq!(got["id"], id.as_str(), "{path}");
    }
    for path in [
        "/Users/",
        "/users?filter=userName+eq+%22x%22",
        "/groups/",
        "/schemas/",
        "/resourcetypes",
        "/ResourceTypes/User/",
        "/serviceproviderconfig/",
    ] {
        scim.get(path).await.expect(200);
    }
    scim.post("/users/.SEARCH", &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": format!("userName eq \"{user_name}\"")}))
        .await
        .resources();
    // Ids are exact: another case is another (missing) resource.
    scim.get(&format!("/Users/{}", id.to_uppercase()))
        .await
        .error(404, None);
    scim.get("/Userz/").await.error(404, None);
    // Any Content-Type on a bodiless request; Accept application/json; charset parameters.
    for (method, ct) in [
        (Method::GET, "text/plain"),
        (Method::GET, "application/x-www-form-urlencoded"),
    ] {
        scim.send(
            method,
            &format!("/Users/{id}"),
            None,
            &[
                ("Content-Type", ct),
                ("Accept", "application/json; charset=utf-8"),
            ],
        )
        .await
        .expect(200);
    }
    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "title", "value": "t"}]});
    let client = reqwest::Client::new();
    let resp = client
        .patch(format!("{}/Users/{id}", scim.base))
        .bearer_auth(&t.token)
        .header("Content-Type", "application/json;charset=UTF-8")
        .header("Accept", "application/scim+json;charset=utf-8")
        .body(patch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        scim.check(Method::PATCH, "/Users", resp).await.expect(200)["title"],
        "t"
    );
    scim.send(
        Method::DELETE,
        &format!("/users/{id}/"),
        None,
        &[("Content-Type", "text/plain")],
    )
    .await
    .expect(204);
}
