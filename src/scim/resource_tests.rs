//! Unit tests of [`super`].
use super::super::core_schemas::{GROUP_URN, USER_URN};
use super::super::error::ScimType;
use super::*;

fn users() -> &'static ResourceType {
    ResourceKind::User.resource_type()
}
fn groups() -> &'static ResourceType {
    ResourceKind::Group.resource_type()
}

/// The body Entra ID posts to create a user (Microsoft's SCIM provisioning docs).
fn entra_create_user() -> Value {
    json!({
        "schemas": [USER_URN, ENTERPRISE_USER_URN],
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1@contoso.com",
        "active": true,
        "emails": [{"primary": true, "type": "work", "value": "Test_User_fd0ea19b@contoso.com"}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "givenName familyName", "familyName": "familyName", "givenName": "givenName"},
        "roles": [],
        ENTERPRISE_USER_URN: {"employeeNumber": "701984", "manager": {"value": "26118915-6090-4610-87e4-49d8ca9f808d"}}
    })
}

#[test]
fn entra_create_user_normalises() {
    let n = normalise(&entra_create_user(), users()).unwrap();
    let d = &n.document;
    assert!(d.get("meta").is_none() && d.get("id").is_none() && d.get("roles").is_none());
    assert_eq!(d["schemas"], json!([USER_URN, ENTERPRISE_USER_URN]));
    assert_eq!(
        d[ENTERPRISE_USER_URN]["manager"],
        json!({"value": "26118915-6090-4610-87e4-49d8ca9f808d"})
    );
    assert_eq!(
        n.manager_id.as_deref(),
        Some("26118915-6090-4610-87e4-49d8ca9f808d")
    );
    assert_eq!(
        n.index,
        IndexColumns {
            user_name_lower: Some(
                "test_user_ab6490ee-1e48-479e-a20b-2d77186b5dd1@contoso.com".into()
            ),
            external_id: Some("0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef".into()),
            display_name_lower: None,
            work_email_lower: Some("test_user_fd0ea19b@contoso.com".into()),
            email_overflow: false,
            active: Some(true),
            extension_values: Vec::new(),
        }
    );
}

#[test]
fn capitalised_names_and_string_booleans() {
    let body = json!({
        "schemas": [USER_URN],
        "UserName": "ann@example.com",
        "Active": "False",
        "Name": {"GivenName": "Ann"},
        "Emails": [{"Value": "ann@example.com", "Type": "work", "Primary": "True"}]
    });
    let n = normalise(&body, users()).unwrap();
    assert_eq!(
        n.document,
        json!({
            "schemas": [USER_URN],
            "userName": "ann@example.com",
            "active": false,
            "name": {"givenName": "Ann"},
            "emails": [{"value": "ann@example.com", "type": "work", "primary": true}]
        })
    );
    assert_eq!(n.index.active, Some(false));
}

#[test]
fn read_only_attributes_are_ignored() {
    let body = json!({
        "schemas": [USER_URN],
        "id": "client-chosen",
        "userName": "a",
        "groups": [{"value": "g1"}],
        "meta": {"created": "2020-01-01T00:00:00Z"},
    });
    let n = normalise(&body, users()).unwrap();
    assert_eq!(n.document, json!({"schemas": [USER_URN], "userName": "a"}));
}

#[test]
fn unknown_attributes_and_schemas_are_refused() {
    let cases = [
        (
            json!({"schemas": [USER_URN], "userName": "a", "aéé": 1}),
            "unknown attribute 'aéé'",
        ),
        (
            json!({"schemas": [USER_URN], "userName": "a", "department": "x"}),
            "belongs inside",
        ),
        (
            json!({"schemas": [USER_URN], "userName": "a", "urn:example:ext:User": {"x": 1}}),
            "unsupported schema extension",
        ),
        (
            json!({"schemas": [USER_URN], "userName": "a", ENTERPRISE_USER_URN: {"shoeSize": "9"}}),
            "unknown attribute",
        ),
        (
            json!({"schemas": [USER_URN], "userName": "a", "name": {"nick": "x"}}),
            "name.nick",
        ),
        (json!({"userName": "a"}), "'schemas' is required"),
        (
            json!({"schemas": [ENTERPRISE_USER_URN], "userName": "a"}),
            "must include",
        ),
        (
            json!({"schemas": [GROUP_URN], "userName": "a"}),
            "must include",
        ),
        (
            json!({"schemas": [USER_URN, 7], "userName": "a"}),
            "URN strings",
        ),
        (
            json!({"schemas": [USER_URN], "userName": "a", "UserName": "b"}),
            "more than once",
        ),
        (json!([1]), "JSON object"),
    ];
    for (body, needle) in cases {
        let e = normalise(&body, users()).unwrap_err();
        assert_eq!(e.scim_type(), Some(ScimType::InvalidSyntax), "{body}");
        assert!(e.detail().contains(needle), "{body}: {e}");
        assert!(!e.detail().contains("hunter2"));
    }
}

#[test]
fn a_users_password_is_discarded_unread_and_readonly_attributes_ignored() {
    // Okta's create body: a password (a placeholder when sync is off) and an empty `groups`.
    for body in [
        json!({"schemas": [USER_URN], "userName": "a", "password": "hunter2", "groups": []}),
        json!({"schemas": [USER_URN], "userName": "a", "Password": {"odd": "shape"}}),
        json!({"schemas": [USER_URN], "userName": "a", "password": "hunter2",
               "id": "not-the-id", "meta": {"resourceType": "User"},
               "groups": [{"value": "g1", "display": "G"}]}),
    ] {
        let n = normalise(&body, users()).unwrap();
        assert_eq!(
            n.document,
            json!({"schemas": [USER_URN], "userName": "a"}),
            "{body}"
        );
        assert!(!n.document.to_string().contains("hunter2"));
    }
    // A Group has no password: that is an unknown attribute there.
    let e = normalise(
        &json!({"schemas": [GROUP_URN], "displayName": "g", "password": "x"}),
        groups(),
    )
    .unwrap_err();
    assert!(e.detail().contains("unknown attribute 'password'"), "{e}");
}

#[test]
fn required_attributes() {
    for body in [
        json!({"schemas": [USER_URN]}),
        json!({"schemas": [USER_URN], "userName": ""}),
        json!({"schemas": [USER_URN], "userName": "  "}),
        json!({"schemas": [USER_URN], "userName": null}),
    ] {
        let e = normalise(&body, users()).unwrap_err();
        assert_eq!(e.scim_type(), Some(ScimType::InvalidValue), "{body}");
        assert_eq!(e.detail(), "'userName' is required");
    }
    let e = normalise(&json!({"schemas": [GROUP_URN]}), groups()).unwrap_err();
    assert_eq!(e.detail(), "'displayName' is required");
}

#[test]
fn extension_without_its_urn_in_schemas_is_accepted_and_listed() {
    let body = json!({"schemas": [USER_URN], "userName": "a", ENTERPRISE_USER_URN.to_uppercase(): {"Department": "R&D"}});
    let n = normalise(&body, users()).unwrap();
    assert_eq!(
        n.document[ENTERPRISE_USER_URN],
        json!({"department": "R&D"})
    );
    assert_eq!(
        n.document["schemas"],
        json!([USER_URN, ENTERPRISE_USER_URN])
    );
    // An empty extension object is dropped, and so is its URN.
    let body = json!({"schemas": [USER_URN, ENTERPRISE_USER_URN], "userName": "a", ENTERPRISE_USER_URN: {}});
    assert_eq!(
        normalise(&body, users()).unwrap().document["schemas"],
        json!([USER_URN])
    );
}

#[test]
fn manager_forms() {
    let with = |m: Value| json!({"schemas": [USER_URN, ENTERPRISE_USER_URN], "userName": "a", ENTERPRISE_USER_URN: {"manager": m}});
    for m in [
        json!("m1"),
        json!({"value": "m1"}),
        json!({"value": "m1", "$ref": "https://x/Users/m1", "displayName": "Boss"}),
    ] {
        let n = normalise(&with(m), users()).unwrap();
        assert_eq!(n.manager_id.as_deref(), Some("m1"));
        assert_eq!(
            n.document[ENTERPRISE_USER_URN]["manager"],
            json!({"value": "m1"})
        );
    }
    let e = normalise(&with(json!({"$ref": "https://x/Users/m1"})), users()).unwrap_err();
    assert_eq!(e.scim_type(), Some(ScimType::InvalidValue));
}

/// A PUT with as many members as the 1 MiB body allows: ids compare exactly (`U1` is not
/// `u1`), each kept once at its first place.
#[test]
fn many_members_are_deduplicated_in_order() {
    let mut members: Vec<_> = (0..20_000)
        .map(|i| json!({"value": format!("u{i}")}))
        .collect();
    members.push(json!({"value": "u0", "display": "again"}));
    members.push(json!({"value": "U0"}));
    let body = json!({"schemas": [GROUP_URN], "displayName": "g", "members": members});
    let n = normalise(&body, groups()).unwrap();
    assert_eq!(n.members.len(), 20_001);
    assert_eq!(n.members[0], "u0");
    assert_eq!(n.members[19_999], "u19999");
    assert_eq!(n.members[20_000], "U0");
}

#[test]
fn group_members_are_extracted_not_stored() {
    let body = json!({
        "schemas": [GROUP_URN],
        "displayName": "Tour Guides",
        "externalId": "8aa1a0c0",
        "members": [
            {"value": "u1", "$ref": "https://x/Users/u1", "display": "Babs", "type": "User"},
            {"value": "u2"},
            {"value": "u1"}
        ]
    });
    let n = normalise(&body, groups()).unwrap();
    assert_eq!(n.members, vec!["u1", "u2"]);
    assert_eq!(
        n.document,
        json!({"schemas": [GROUP_URN], "displayName": "Tour Guides", "externalId": "8aa1a0c0"})
    );
    assert_eq!(n.index.display_name_lower.as_deref(), Some("tour guides"));
    assert_eq!(n.index.user_name_lower, None);
    let bad =
        json!({"schemas": [GROUP_URN], "displayName": "g", "members": [{"display": "no id"}]});
    assert_eq!(
        normalise(&bad, groups()).unwrap_err().scim_type(),
        Some(ScimType::InvalidValue)
    );
    // Entra creates groups empty.
    let n = normalise(
        &json!({"schemas": [GROUP_URN], "displayName": "g", "members": []}),
        groups(),
    )
    .unwrap();
    assert!(n.members.is_empty());
}

#[test]
fn work_email_and_overflow() {
    let cols = |emails: Value| {
        let body = json!({"schemas": [USER_URN], "userName": "a", "emails": emails});
        let n = normalise(&body, users()).unwrap();
        (n.index.work_email_lower, n.index.email_overflow)
    };
    assert_eq!(
        cols(json!([{"value": "A@x.com", "type": "work"}])),
        (Some("a@x.com".into()), false)
    );
    assert_eq!(
        cols(json!([{"value": "h@x.com", "type": "home"}, {"value": "W@x.com", "type": "Work"}])),
        (Some("w@x.com".into()), true)
    );
    assert_eq!(
        cols(
            json!([{"value": "w1@x.com", "type": "work"}, {"value": "w2@x.com", "type": "work", "primary": true}])
        ),
        (Some("w2@x.com".into()), true)
    );
    assert_eq!(cols(json!([{"value": "h@x.com"}])), (None, true));
    // The same address listed twice is not overflow.
    assert_eq!(
        cols(json!([{"value": "a@x.com", "type": "work"}, {"value": "A@X.com", "type": "other"}])),
        (Some("a@x.com".into()), false)
    );
}

#[test]
fn representation_has_id_meta_and_references() {
    let n = normalise(&entra_create_user(), users()).unwrap();
    let mgr = Reference {
        id: "26118915-6090-4610-87e4-49d8ca9f808d".into(),
        kind: ResourceKind::User,
        display: Some("Boss".into()),
    };
    let g = [Reference {
        id: "g1".into(),
        kind: ResourceKind::Group,
        display: Some("Admins".into()),
    }];
    let refs = References {
        manager: Some(&mgr),
        groups: Some(&g),
        members: None,
    };
    let out = attach_references(
        n.document.clone(),
        "u1",
        json!({"resourceType": "User"}),
        &refs,
        "https://a.example/v1/scim/v2",
    );
    assert_eq!(out["id"], "u1");
    assert_eq!(out["meta"]["resourceType"], "User");
    assert_eq!(
        out[ENTERPRISE_USER_URN]["manager"],
        json!({"value": "26118915-6090-4610-87e4-49d8ca9f808d",
               "$ref": "https://a.example/v1/scim/v2/Users/26118915-6090-4610-87e4-49d8ca9f808d",
               "displayName": "Boss"})
    );
    assert_eq!(
        out["groups"],
        json!([{"value": "g1", "$ref": "https://a.example/v1/scim/v2/Groups/g1", "display": "Admins", "type": "direct"}])
    );
    let members = [Reference {
        id: "u1".into(),
        kind: ResourceKind::User,
        display: None,
    }];
    let gdoc = json!({"schemas": [GROUP_URN], "displayName": "Admins"});
    let out = attach_references(
        gdoc,
        "g1",
        json!({}),
        &References {
            members: Some(&members),
            ..Default::default()
        },
        "https://a",
    );
    assert_eq!(
        out["members"],
        json!([{"value": "u1", "$ref": "https://a/Users/u1", "type": "User"}])
    );
}

#[test]
fn schemas_inside_an_extension_object_carry_no_data() {
    let mut body = entra_create_user();
    body[ENTERPRISE_USER_URN]["schemas"] = json!([ENTERPRISE_USER_URN]);
    let n = normalise(&body, users()).unwrap();
    assert!(n.document[ENTERPRISE_USER_URN].get("schemas").is_none());
    assert_eq!(n.document[ENTERPRISE_USER_URN]["employeeNumber"], "701984");
}
