//! Schema extensions Assent does not define (issue 15 part 2), against the real server and its
//! database (SQLite, or Postgres in the Postgres pass): kept and returned as sent, changed by
//! Entra ID's custom-extension PATCH forms, and filtered with `eq ne co sw ew pr` on strings,
//! numbers and booleans, names in any case, through the index-backed plan and the evaluator.

use serde_json::{json, Value};

use super::tenant;
use crate::support::scim::{guid, GROUP_URN, USER_URN};

const EXT: &str = "urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User";

#[tokio::test]
async fn entra_custom_extension_on_users_and_groups() {
    let (server, _, scim) = tenant().await;
    let body = json!({
        "schemas": [USER_URN, EXT],
        "userName": format!("ext_{}@contoso.com", guid()),
        "active": true,
        EXT: {"costCenterCode": "CC-1001", "Seniority": 4, "contractor": false,
              "skills": ["Rust", "SQL"], "badge": {"colour": "Red"}}
    });
    let created = scim.post("/Users", &body).await.expect(201);
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created[EXT], body[EXT], "kept as sent: {created}");
    assert_eq!(created["schemas"], json!([USER_URN, EXT]));
    let got = scim.get(&format!("/Users/{id}")).await.expect(200);
    assert_eq!(got[EXT], body[EXT]);

    // Entra's PATCH: the attribute's full path, as Add and as Replace, and a path-less replace.
    let patched = scim
        .patch(
            &format!("/Users/{id}"),
            json!([
                {"op": "Add", "path": format!("{EXT}:costCenterCode"), "value": "CC-2002"},
                {"op": "Replace", "path": format!("{EXT}:contractor"), "value": true},
                {"op": "Replace", "value": {format!("{EXT}:seniority"): 5}}
            ]),
        )
        .await
        .expect(200);
    assert_eq!(patched[EXT]["costCenterCode"], "CC-2002");
    assert_eq!(patched[EXT]["contractor"], true);
    assert_eq!(patched[EXT]["Seniority"], 5);
    assert_eq!(patched["meta"]["version"], "W/\"2\"");
    let found = scim
        .filter(
            "/Users",
            &format!("{EXT}:costCenterCode eq \"cc-2002\""),
            "",
        )
        .await;
    assert_eq!(found.len(), 1);
    assert!(scim
        .filter(
            "/Users",
            &format!("{EXT}:costCenterCode eq \"CC-1001\""),
            ""
        )
        .await
        .is_empty());
    // Removing the whole extension, then a PUT that brings it back.
    let removed = scim
        .patch(
            &format!("/Users/{id}"),
            json!([{"op": "Remove", "path": EXT}]),
        )
        .await
        .expect(200);
    assert!(removed.get(EXT).is_none());
    assert_eq!(removed["schemas"], json!([USER_URN]));
    assert!(scim
        .filter("/Users", &format!("{EXT}:costCenterCode pr"), "")
        .await
        .is_empty());
    let put = scim.put(&format!("/Users/{id}"), &body).await.expect(200);
    assert_eq!(put[EXT], body[EXT]);

    // A Group extension.
    let gext = "urn:ietf:params:scim:schemas:extension:acme:2.0:Group";
    let group = scim
        .post(
            "/Groups",
            &json!({"schemas": [GROUP_URN, gext], "displayName": format!("G {}", guid()),
                    gext: {"site": "Oslo", "floor": 3}}),
        )
        .await
        .expect(201);
    assert_eq!(group[gext], json!({"site": "Oslo", "floor": 3}));
    let by_site = scim
        .filter("/Groups", &format!("{gext}:SITE eq \"oslo\""), "")
        .await;
    assert_eq!(by_site.len(), 1);

    // Bad input: a clear SCIM error, nothing stored.
    scim.post(
        "/Users",
        &json!({"schemas": [USER_URN], "userName": format!("bad_{}", guid()), EXT: "CC"}),
    )
    .await
    .error(400, Some("invalidSyntax"));
    scim.patch(
        &format!("/Users/{id}"),
        json!([{"op": "remove", "path": format!("{EXT}:skills[value eq \"Rust\"]")}]),
    )
    .await
    .error(400, Some("invalidPath"));
    scim.get(&format!(
        "/Users?filter={}",
        url::form_urlencoded::byte_serialize(format!("{EXT}:contractor gt true").as_bytes())
            .collect::<String>()
    ))
    .await
    .error(400, Some("invalidFilter"));
    server.assert_log_free_of(&[("extension value", "CC-2002")]);
}

/// Every operator on every type, each answer checked against the values the test itself holds,
/// with the pages and counts of a ListResponse.
#[tokio::test]
async fn extension_filters_on_strings_numbers_and_booleans() {
    let (_, _, scim) = tenant().await;
    let tag = guid();
    let rows: Vec<(&str, Value)> = vec![
        (
            "a",
            json!({"dept": "Sales-North", "level": 3, "remote": true, "tags": ["x", "Y"]}),
        ),
        (
            "b",
            json!({"Dept": "sales-south", "level": 7, "remote": false}),
        ),
        (
            "c",
            json!({"dept": "Engineering", "level": 7.0, "remote": true, "tags": ["y"]}),
        ),
        ("d", json!({"dept": "", "level": "7"})),
        ("e", json!({})),
    ];
    let mut ids = std::collections::HashMap::new();
    for (name, ext) in &rows {
        let mut body = json!({"schemas": [USER_URN], "userName": format!("{name}_{tag}"),
                              "title": tag});
        if ext.as_object().is_some_and(|o| !o.is_empty()) {
            body[EXT] = ext.clone();
        }
        ids.insert(scim.post("/Users", &body).await.id(), *name);
    }
    let lower = EXT.to_lowercase();
    let cases: Vec<(String, &[&str])> = vec![
        (format!("{EXT}:dept eq \"SALES-NORTH\""), &["a"]),
        (format!("{lower}:DEPT eq \"sales-south\""), &["b"]),
        (
            format!("{EXT}:dept ne \"sales-north\""),
            &["b", "c", "d", "e"],
        ),
        (format!("{EXT}:dept co \"SALES\""), &["a", "b"]),
        (format!("{EXT}:dept sw \"eng\""), &["c"]),
        (format!("{EXT}:dept ew \"SOUTH\""), &["b"]),
        (format!("{EXT}:dept pr"), &["a", "b", "c"]),
        (format!("not ({EXT}:dept pr)"), &["d", "e"]),
        (format!("{EXT}:level eq 7"), &["b", "c"]),
        (format!("{EXT}:level eq \"7\""), &["d"]),
        (format!("{EXT}:level ne 7"), &["a", "d", "e"]),
        (format!("{EXT}:level gt 3"), &["b", "c"]),
        (format!("{EXT}:level pr"), &["a", "b", "c", "d"]),
        (format!("{EXT}:remote eq true"), &["a", "c"]),
        (format!("{EXT}:remote eq false"), &["b"]),
        (format!("{EXT}:remote ne true"), &["b", "d", "e"]),
        (format!("{EXT}:remote pr"), &["a", "b", "c"]),
        (format!("{EXT}:tags eq \"y\""), &["a", "c"]),
        (format!("{EXT}:remote eq true and {EXT}:level eq 3"), &["a"]),
        (
            format!("{EXT}:remote eq true or {EXT}:dept sw \"sales\""),
            &["a", "b", "c"],
        ),
    ];
    for (filter, want) in cases {
        let full = format!("title eq \"{tag}\" and ({filter})");
        let got = scim.filter("/Users", &full, "&count=100").await;
        let mut names: Vec<&str> = got.iter().map(|u| ids[u["id"].as_str().unwrap()]).collect();
        names.sort();
        assert_eq!(names, want, "{filter}");
        // Paged by one, with the same total.
        let page = scim
            .get(&format!(
                "/Users?filter={}&startIndex=1&count=1",
                url::form_urlencoded::byte_serialize(full.as_bytes()).collect::<String>()
            ))
            .await
            .expect(200);
        assert_eq!(page["totalResults"], want.len(), "{filter}: {page}");
    }
    // The plan alone (no other term): eq over the whole workspace.
    let alone = scim
        .filter("/Users", &format!("{EXT}:Dept eq \"engineering\""), "")
        .await;
    assert_eq!(alone.len(), 1);
    assert_eq!(ids[alone[0]["id"].as_str().unwrap()], "c");
    // Projection by URN and by attribute.
    let one = scim
        .get(&format!(
            "/Users/{}?attributes={EXT}:dept",
            alone[0]["id"].as_str().unwrap()
        ))
        .await
        .expect(200);
    assert_eq!(one[EXT], json!({"dept": "Engineering"}));
    assert!(one.get("userName").is_none());
}

/// Twenty PATCHes to one user at once, each setting an extension attribute of its own: none is
/// lost, from the document or from the values its filters use, and the version counts them all.
/// On Postgres a user's update reads without a lock and writes only the version it read, so most
/// of these race, read again, and some end up taking the row lock.
#[tokio::test]
async fn twenty_concurrent_patches_to_one_user_lose_nothing() {
    let (_, _, scim) = tenant().await;
    let tag = guid();
    let body = json!({"schemas": [USER_URN, EXT], "userName": format!("busy_{tag}"),
                      EXT: {"kept": tag}});
    let id = scim.post("/Users", &body).await.id();
    let path = format!("/Users/{id}");
    let answers = futures_util::future::join_all((0..20).map(|i| {
        scim.patch(
            &path,
            json!([{"op": "Add", "path": format!("{EXT}:k{i}"), "value": format!("v{i}-{tag}")}]),
        )
    }))
    .await;
    for a in answers {
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let user = scim.get(&path).await.expect(200);
    assert_eq!(user["meta"]["version"], "W/\"21\"", "{user}");
    assert_eq!(user[EXT]["kept"], tag.as_str());
    for i in 0..20 {
        assert_eq!(user[EXT][format!("k{i}")], format!("v{i}-{tag}"), "{user}");
        let found = scim
            .filter("/Users", &format!("{EXT}:k{i} eq \"v{i}-{tag}\""), "")
            .await;
        assert_eq!(found.len(), 1, "k{i}");
        assert_eq!(found[0]["id"], id.as_str());
    }
    let kept = scim
        .filter("/Users", &format!("{EXT}:kept eq \"{tag}\""), "")
        .await;
    assert_eq!(kept.len(), 1);
}
