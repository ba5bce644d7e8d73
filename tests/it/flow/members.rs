//! The members of a workspace (issue 16, CONTRACT.md section 3a) against the real binary: who may
//! invite, change a role and remove, as an owner, an admin, a member, nobody, another workspace
//! and another site would try; the promotion behind the owner's own phone; the last owner; and
//! what a removal does to the removed person's sessions, phones and password at once; and the
//! provisioning page's figures (`GET /v1/console/provisioning-summary`).

use super::*;

async fn members(b: &Browser) -> Vec<Value> {
    let list = json_body(b.get("/v1/console/members").await, 200).await;
    list["members"].as_array().expect("members").clone()
}

async fn row_of(b: &Browser, email: &str) -> Option<Value> {
    members(b)
        .await
        .into_iter()
        .find(|m| m["email"].as_str() == Some(email))
}

async fn invite(b: &Browser, email: &str, role: &str) -> reqwest::Response {
    b.post_json(
        "/v1/console/members",
        &json!({"email": email, "role": role}),
    )
    .await
}

async fn patch_role(b: &Browser, id: i64, role: &str) -> reqwest::Response {
    b.request(Method::PATCH, &format!("/v1/console/members/{id}"))
        .json(&json!({ "role": role }))
        .send()
        .await
        .expect("PATCH")
}

fn email_in(ws: &Workspace, who: &str) -> String {
    format!("{who}-{}@{}.example.com", random_id(), ws.slug)
}

#[tokio::test]
async fn owners_invite_any_role_admins_invite_members_and_the_invitee_signs_in_once_shown() {
    let server = shared().await;
    let owner = owner_with_phone(server).await;
    let admin = user_with_phone(server, &owner.ws, "admin").await;
    let member = user_with_phone(server, &owner.ws, "member").await;

    // The owner invites an admin: 201, the one-time password once, never cached.
    let email = email_in(&owner.ws, "new-admin");
    let resp = invite(&owner.browser, &email, "admin").await;
    assert_eq!(
        resp.headers().get("cache-control").unwrap(),
        "no-store",
        "a password must not linger in a cache"
    );
    let invited = json_body(resp, 201).await;
    assert_eq!(invited["email"], email.as_str(), "{invited}");
    assert_eq!(invited["role"], "admin", "{invited}");
    let password = invited["password"].as_str().expect("password").to_owned();
    assert!(password.len() >= 16, "{password}");
    let row = row_of(&owner.browser, &email).await.expect("listed");
    assert_eq!(row["id"], invited["id"]);
    assert_eq!(row["role"], "admin");
    assert_eq!(row["devices"], 0);
    assert!(row["last_sign_in_at"].is_null(), "{row}");
    assert!(row["devices_last_seen_at"].is_null(), "{row}");

    // The same e-mail again, in any case: 409; admins invite members only; members nobody.
    problem(
        invite(&owner.browser, &email.to_uppercase(), "member").await,
        &[409],
    )
    .await;
    problem(
        invite(&admin.browser, &email_in(&owner.ws, "x"), "admin").await,
        &[403],
    )
    .await;
    problem(
        invite(&admin.browser, &email_in(&owner.ws, "x"), "owner").await,
        &[403],
    )
    .await;
    problem(
        invite(&member.browser, &email_in(&owner.ws, "x"), "member").await,
        &[403],
    )
    .await;
    problem(
        invite(&Browser::new(server), &email_in(&owner.ws, "x"), "member").await,
        &[401],
    )
    .await;
    problem(
        invite(&owner.browser, "not-an-address", "member").await,
        &[400],
    )
    .await;
    problem(
        invite(&owner.browser, &email_in(&owner.ws, "x"), "emperor").await,
        &[422],
    )
    .await;
    let by_admin = json_body(
        invite(&admin.browser, &email_in(&owner.ws, "by-admin"), "member").await,
        201,
    )
    .await;
    assert_eq!(by_admin["role"], "member");
    // Another site's page cannot invite with the owner's cookie.
    let sneaky = email_in(&owner.ws, "sneaky");
    let resp = owner
        .browser
        .request(Method::POST, "/v1/console/members")
        .header("Origin", "https://evil.example")
        .json(&json!({"email": sneaky, "role": "owner"}))
        .send()
        .await
        .unwrap();
    problem(resp, &[403]).await;
    assert!(row_of(&owner.browser, &sneaky).await.is_none());

    // Every invitation is on record, by whom; the password nowhere but in the answer.
    let entries = audit_of(&owner.browser, "member.invited").await;
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[1]["actor"], owner.email.as_str());
    assert_eq!(entries[1]["detail"]["member"], email.as_str());
    assert_eq!(entries[1]["detail"]["role"], "admin");
    assert_eq!(entries[0]["actor"], admin.email.as_str());
    server.assert_log_free_of(&[("invitee's password", &password)]);
    server
        .assert_db_free_of(&[("invitee's password", &password)])
        .await;

    // The invitee signs in with it, enrolls a first phone, and views the token behind it.
    let invitee = Browser::logged_in(server, &owner.ws.slug, &email, &password).await;
    let phone = enrolled_phone(server, &invitee).await;
    let invitee = Person {
        ws: owner.ws.clone(),
        email: email.clone(),
        password,
        browser: invitee,
        phone,
    };
    let token = released(&invitee, "reveal").await;
    assert_token_shape(token["token"].as_str().unwrap());
    let row = row_of(&owner.browser, &email).await.unwrap();
    assert_eq!(row["devices"], 1, "{row}");
    utc_time(&row, "last_sign_in_at");
    utc_time(&row, "devices_last_seen_at");
}

#[tokio::test]
async fn a_demotion_is_at_once_and_a_promotion_waits_for_the_owners_phone() {
    let server = shared().await;
    let owner = owner_with_phone(server).await;
    let admin = user_with_phone(server, &owner.ws, "admin").await;
    let member = user_with_phone(server, &owner.ws, "member").await;
    let admin_id = member_id(&owner.browser, &admin.email).await;
    let member_id = member_id(&owner.browser, &member.email).await;
    let owner_id = super::member_id(&owner.browser, &owner.email).await;

    // Only owners change roles; another workspace's owner finds nobody; ids are integers.
    problem(
        patch_role(&admin.browser, member_id, "member").await,
        &[403],
    )
    .await;
    problem(
        patch_role(&member.browser, admin_id, "member").await,
        &[403],
    )
    .await;
    problem(
        patch_role(&Browser::new(server), admin_id, "member").await,
        &[401],
    )
    .await;
    let stranger = owner_with_phone(server).await;
    problem(
        patch_role(&stranger.browser, admin_id, "member").await,
        &[404],
    )
    .await;
    let resp = owner
        .browser
        .request(Method::PATCH, "/v1/console/members/x1")
        .json(&json!({"role": "member"}))
        .send()
        .await
        .unwrap();
    problem(resp, &[404]).await;
    let resp = owner
        .browser
        .request(Method::PATCH, &format!("/v1/console/members/{admin_id}"))
        .header("Origin", "https://evil.example")
        .json(&json!({"role": "member"}))
        .send()
        .await
        .unwrap();
    problem(resp, &[403]).await;
    assert_eq!(
        row_of(&owner.browser, &admin.email).await.unwrap()["role"],
        "admin"
    );

    // A demotion answers 200 and holds at once: the demoted admin can no longer list members.
    let done = json_body(patch_role(&owner.browser, admin_id, "member").await, 200).await;
    assert_eq!(
        done,
        json!({"id": admin_id, "email": admin.email, "role": "member"})
    );
    problem(admin.browser.get("/v1/console/members").await, &[403]).await;

    // The only owner cannot demote themself.
    problem(patch_role(&owner.browser, owner_id, "admin").await, &[409]).await;

    // A promotion is a member.promote challenge on the owner's own phones.
    let asked = json_body(patch_role(&owner.browser, member_id, "admin").await, 202).await;
    let id = id_of(&asked);
    let shown = owner.phone.pending(&id).await;
    assert_eq!(shown["action"], "member.promote", "{shown}");
    assert_eq!(shown["context"]["member"]["email"], member.email.as_str());
    assert_eq!(shown["context"]["member"]["role"], "admin");
    assert!(
        member.phone.challenges().await.is_empty(),
        "not the member's phones"
    );
    assert_eq!(
        row_of(&owner.browser, &member.email).await.unwrap()["role"],
        "member"
    );
    problem(owner.browser.release(&id).await, &[409]).await;
    // Another session of the same owner cannot release it.
    let other = Browser::logged_in(server, &owner.ws.slug, &owner.email, &owner.password).await;
    problem(other.release(&id).await, &[404]).await;
    owner.phone.approve(&id, number_of(&asked)).await;
    let done = json_body(owner.browser.release(&id).await, 200).await;
    assert_eq!(
        done,
        json!({"action": "member.promote", "id": member_id, "role": "admin"})
    );
    problem(owner.browser.release(&id).await, &[410]).await;
    assert_eq!(
        row_of(&owner.browser, &member.email).await.unwrap()["role"],
        "admin"
    );
    json_body(member.browser.get("/v1/console/members").await, 200).await;

    // A denied promotion promotes nobody.
    let asked = json_body(patch_role(&owner.browser, member_id, "owner").await, 202).await;
    owner.phone.deny(&id_of(&asked), Some("mistake")).await;
    problem(owner.browser.release(&id_of(&asked)).await, &[409]).await;
    assert_eq!(
        row_of(&owner.browser, &member.email).await.unwrap()["role"],
        "admin"
    );

    let changes = audit_of(&owner.browser, "member.role_changed").await;
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[0]["detail"]["from"], "member");
    assert_eq!(changes[0]["detail"]["to"], "admin");
    assert_eq!(changes[0]["detail"]["challenge"], id.as_str());
    assert_eq!(changes[0]["device_id"], owner.phone.device_id.as_str());
    assert_eq!(changes[1]["detail"]["from"], "admin");
    assert_eq!(changes[1]["detail"]["to"], "member");
    assert_eq!(changes[1]["actor"], owner.email.as_str());
}

#[tokio::test]
async fn a_removal_ends_sessions_phones_and_password_at_once_and_the_last_owner_stays() {
    let server = shared().await;
    let owner = owner_with_phone(server).await;
    let admin = user_with_phone(server, &owner.ws, "admin").await;
    let admin_id = member_id(&owner.browser, &admin.email).await;
    let owner_id = member_id(&owner.browser, &owner.email).await;
    let path = format!("/v1/console/members/{admin_id}");

    problem(
        admin
            .browser
            .delete(&format!("/v1/console/members/{owner_id}"))
            .await,
        &[403],
    )
    .await;
    problem(Browser::new(server).delete(&path).await, &[401]).await;
    let stranger = owner_with_phone(server).await;
    problem(stranger.browser.delete(&path).await, &[404]).await;
    let resp = owner
        .browser
        .request(Method::DELETE, &path)
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    problem(resp, &[403]).await;
    json_body(admin.browser.get("/v1/console/members").await, 200).await;

    // The last owner can be removed by nobody, themself included.
    problem(
        owner
            .browser
            .delete(&format!("/v1/console/members/{owner_id}"))
            .await,
        &[409],
    )
    .await;

    let resp = owner.browser.delete(&path).await;
    assert_eq!(resp.status().as_u16(), 204);
    // Their session, their phone and their password stop at once.
    problem(admin.browser.get("/v1/console/devices").await, &[401]).await;
    problem(
        admin
            .phone
            .get_challenges_with(Some(&admin.phone.auth()))
            .await,
        &[401],
    )
    .await;
    problem(
        Browser::new(server)
            .login(&owner.ws.slug, &admin.email, &admin.password)
            .await,
        &[401],
    )
    .await;
    assert!(row_of(&owner.browser, &admin.email).await.is_none());
    problem(owner.browser.delete(&path).await, &[404]).await;
    let removed = audit_of(&owner.browser, "member.removed").await;
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(removed[0]["actor"], owner.email.as_str());
    assert_eq!(removed[0]["detail"]["member"], admin.email.as_str());
    assert_eq!(
        removed[0]["detail"]["devices"],
        json!([admin.phone.device_id]),
        "the phones that went with them are on record"
    );
    // The same e-mail may be invited again, as somebody new.
    json_body(invite(&owner.browser, &admin.email, "member").await, 201).await;
}

#[tokio::test]
async fn two_owners_demoting_each_other_at_once_leave_one_owner() {
    let server = shared().await;
    let a = owner_with_phone(server).await;
    let b = user_with_phone(server, &a.ws, "owner").await;
    let a_id = member_id(&a.browser, &a.email).await;
    let b_id = member_id(&a.browser, &b.email).await;
    for _ in 0..3 {
        let (one, two) = tokio::join!(
            patch_role(&a.browser, b_id, "admin"),
            patch_role(&b.browser, a_id, "admin")
        );
        let mut statuses = vec![one.status().as_u16(), two.status().as_u16()];
        statuses.sort();
        // Both may be refused (the winner's demotion took the loser's rights first: 403), never
        // both done.
        assert!(
            statuses == [200, 409] || statuses == [200, 403],
            "{statuses:?}"
        );
        let owners: Vec<Value> = members(if one.status() == 200 {
            &a.browser
        } else {
            &b.browser
        })
        .await
        .into_iter()
        .filter(|m| m["role"] == "owner")
        .collect();
        assert_eq!(owners.len(), 1, "{owners:?}");
        // Back to two owners for the next round, through the remaining owner's phone.
        let (winner, loser_id) = if one.status() == 200 {
            (&a, b_id)
        } else {
            (&b, a_id)
        };
        let asked = json_body(patch_role(&winner.browser, loser_id, "owner").await, 202).await;
        winner
            .phone
            .approve(&id_of(&asked), number_of(&asked))
            .await;
        json_body(winner.browser.release(&id_of(&asked)).await, 200).await;
    }
    // And the same for removals: one of the two stays.
    let (a_path, b_path) = (
        format!("/v1/console/members/{a_id}"),
        format!("/v1/console/members/{b_id}"),
    );
    let (one, two) = tokio::join!(a.browser.delete(&b_path), b.browser.delete(&a_path));
    let mut statuses = vec![one.status().as_u16(), two.status().as_u16()];
    statuses.sort();
    assert!(
        statuses == [204, 409] || statuses == [204, 401],
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_promotion_racing_a_removal_promotes_nobody_and_brings_nobody_back() {
    let server = shared().await;
    let owner = owner_with_phone(server).await;
    let member = user_with_phone(server, &owner.ws, "member").await;
    let member_id = member_id(&owner.browser, &member.email).await;

    // Approved, then the member is removed before the release: the release finds nobody.
    let asked = json_body(patch_role(&owner.browser, member_id, "owner").await, 202).await;
    owner.phone.approve(&id_of(&asked), number_of(&asked)).await;
    assert_eq!(
        owner
            .browser
            .delete(&format!("/v1/console/members/{member_id}"))
            .await
            .status()
            .as_u16(),
        204
    );
    problem(owner.browser.release(&id_of(&asked)).await, &[404]).await;
    assert!(row_of(&owner.browser, &member.email).await.is_none());
    problem(
        Browser::new(server)
            .login(&owner.ws.slug, &member.email, &member.password)
            .await,
        &[401],
    )
    .await;
    assert!(audit_of(&owner.browser, "member.role_changed")
        .await
        .is_empty());

    // The release and the removal at the same moment: whichever wins, the person ends removed
    // (a promotion never recreates a row) or promoted and then removed; never half of either.
    let (email, _) = server.add_member(&owner.ws, "member");
    let id = super::member_id(&owner.browser, &email).await;
    let asked = json_body(patch_role(&owner.browser, id, "admin").await, 202).await;
    owner.phone.approve(&id_of(&asked), number_of(&asked)).await;
    let path = format!("/v1/console/members/{id}");
    let challenge = id_of(&asked);
    let (release, removal) = tokio::join!(
        owner.browser.release(&challenge),
        owner.browser.delete(&path)
    );
    assert_eq!(removal.status().as_u16(), 204);
    let released = release.status().as_u16();
    assert!([200, 404].contains(&released), "{released}");
    assert!(row_of(&owner.browser, &email).await.is_none());
    let changes = audit_of(&owner.browser, "member.role_changed").await.len();
    assert_eq!(changes, usize::from(released == 200));
}

/// The provisioning page's figures (issue 16): the day's requests and failures of this workspace's
/// token only, and when it last called; owners and admins only.
#[tokio::test]
async fn the_provisioning_summary_counts_the_days_requests_of_this_workspace() {
    use support::scim::{ScimTenant, USER_URN};
    let server = shared().await;
    let tenant = ScimTenant::new(server).await;
    let scim = tenant.client(server);
    let user = json!({"schemas": [USER_URN], "userName": "kim@example.com", "active": true});
    assert_eq!(
        scim.send(Method::POST, "/Users", Some(&user), &[])
            .await
            .status,
        201
    );
    assert_eq!(
        scim.send(Method::POST, "/Users", Some(&user), &[])
            .await
            .status,
        409
    );
    // A request with no valid token belongs to no workspace's log.
    assert_eq!(
        scim_status(server, Some("assent_scim_not-a-token")).await,
        401
    );

    let summary = json_body(
        tenant.owner.get("/v1/console/provisioning-summary").await,
        200,
    )
    .await;
    assert_eq!(summary["requests_24h"], 2, "{summary}");
    assert_eq!(summary["failures_24h"], 1, "{summary}");
    assert_about(
        utc_time(&summary, "last_request_at"),
        0,
        30,
        "the last call",
    );
    assert_about(utc_time(&summary, "since"), -86_400, 30, "a day ago");

    let (admin_email, admin_password) = server.add_member(&tenant.ws, "admin");
    let admin = Browser::logged_in(server, &tenant.ws.slug, &admin_email, &admin_password).await;
    json_body(admin.get("/v1/console/provisioning-summary").await, 200).await;
    let (member_email, member_password) = server.add_member(&tenant.ws, "member");
    let member = Browser::logged_in(server, &tenant.ws.slug, &member_email, &member_password).await;
    problem(member.get("/v1/console/provisioning-summary").await, &[403]).await;
    problem(
        Browser::new(server)
            .get("/v1/console/provisioning-summary")
            .await,
        &[401],
    )
    .await;
    // Another workspace sees its own (nothing), never this one's.
    let stranger = owner_with_phone(server).await;
    let theirs = json_body(
        stranger
            .browser
            .get("/v1/console/provisioning-summary")
            .await,
        200,
    )
    .await;
    assert_eq!(theirs["requests_24h"], 0, "{theirs}");
    assert!(theirs["last_request_at"].is_null(), "{theirs}");
}

/// Fail closed (issue 13's rule, for issue 16's changes): while the audit log cannot be written, no
/// invitation, role change or removal happens, and each answers 503.
#[tokio::test]
async fn no_member_changes_while_the_audit_log_cannot_be_written() {
    use super::resilience::{break_audit, mend_audit};
    let server = TestServer::start(ServerOptions::default()).await;
    let ws = server.create_workspace();
    let owner = Browser::logged_in(&server, &ws.slug, &ws.owner_email, &ws.owner_password).await;
    let (admin, _) = server.add_member(&ws, "admin");
    let (member, member_password) = server.add_member(&ws, "member");
    let admin_id = member_id(&owner, &admin).await;
    let member_id = member_id(&owner, &member).await;
    let newcomer = email_in(&ws, "newcomer");

    break_audit(&server).await;
    problem(invite(&owner, &newcomer, "member").await, &[503]).await;
    problem(patch_role(&owner, admin_id, "member").await, &[503]).await;
    problem(
        owner
            .delete(&format!("/v1/console/members/{member_id}"))
            .await,
        &[503],
    )
    .await;
    assert!(row_of(&owner, &newcomer).await.is_none());
    assert_eq!(row_of(&owner, &admin).await.unwrap()["role"], "admin");
    assert!(row_of(&owner, &member).await.is_some());
    mend_audit(&server).await;

    // The member was not removed: they still sign in; and now each change goes through.
    Browser::logged_in(&server, &ws.slug, &member, &member_password).await;
    json_body(invite(&owner, &newcomer, "member").await, 201).await;
    json_body(patch_role(&owner, admin_id, "member").await, 200).await;
    let resp = owner
        .delete(&format!("/v1/console/members/{member_id}"))
        .await;
    assert_eq!(resp.status().as_u16(), 204);
    for kind in ["member.invited", "member.role_changed", "member.removed"] {
        assert_eq!(audit_of(&owner, kind).await.len(), 1, "{kind}");
    }
    // Written inside the changes' own transactions, the entries still chain.
    let verified = server.cli(&["audit", "verify", "--workspace", &ws.slug]);
    assert_eq!(verified["ok"], true, "{verified}");
}

/// A client that hangs up at any moment of an invitation or a removal leaves it whole or absent:
/// the person and their audit entry both, or neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_changes_cut_by_a_hang_up_are_whole_or_absent() {
    use super::resilience::{cookie_header, raw, send_and_reset};
    use std::net::SocketAddr;
    let server = shared().await;
    let addr: SocketAddr = server
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("the server's address");
    let owner = owner_with_phone(server).await;
    let headers = [
        ("Origin", server.public_url.clone()),
        ("Cookie", cookie_header(&owner.browser)),
    ];
    let mut invited = Vec::new();
    let mut removed = Vec::new();
    for round in 0..16u64 {
        let email = email_in(&owner.ws, "hang-up");
        let body = json!({"email": email, "role": "member"}).to_string();
        let after = Duration::from_micros(round * 250);
        send_and_reset(
            addr,
            &raw("POST", "/v1/console/members", &headers, &body),
            after,
        )
        .await;
        invited.push(email);
        let (doomed, _) = server.add_member(&owner.ws, "member");
        let id = member_id(&owner.browser, &doomed).await;
        let path = format!("/v1/console/members/{id}");
        send_and_reset(addr, &raw("DELETE", &path, &headers, ""), after).await;
        removed.push(doomed);
    }
    // Work that began finishes on its own (the handlers run detached): let it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let entries = audit_of(&owner.browser, "member.invited").await;
    for email in &invited {
        let listed = row_of(&owner.browser, email).await.is_some();
        let recorded = entries
            .iter()
            .filter(|e| e["detail"]["member"] == email.as_str())
            .count();
        assert_eq!(
            usize::from(listed),
            recorded,
            "{email}: listed {listed}, {recorded} entries"
        );
    }
    let entries = audit_of(&owner.browser, "member.removed").await;
    for email in &removed {
        let gone = row_of(&owner.browser, email).await.is_none();
        let recorded = entries
            .iter()
            .filter(|e| e["detail"]["member"] == email.as_str())
            .count();
        assert_eq!(
            usize::from(gone),
            recorded,
            "{email}: removed {gone}, {recorded} entries"
        );
    }
}

/// An invitation link (issue 16) as the people around it would use it: the invitee chooses their
/// own password (the inviter never learns one), the link works once even when two tabs race, its
/// token is stored and logged nowhere, and only those who may invite make one.
#[tokio::test]
async fn an_invitation_link_lets_the_invitee_choose_a_password_once() {
    let server = shared().await;
    let owner = owner_with_phone(server).await;
    let admin = user_with_phone(server, &owner.ws, "admin").await;
    let link_invite = |b: &Browser, email: &str, role: &str| {
        let body = json!({"email": email, "role": role, "delivery": "link"});
        let req = b.request(Method::POST, "/v1/console/members").json(&body);
        async move { req.send().await.expect("POST") }
    };
    problem(
        link_invite(&admin.browser, &email_in(&owner.ws, "x"), "admin").await,
        &[403],
    )
    .await;
    let email = email_in(&owner.ws, "linked");
    let invited = json_body(link_invite(&admin.browser, &email, "member").await, 201).await;
    assert!(invited.get("password").is_none(), "{invited}");
    assert_about(
        utc_time(&invited, "expires_at"),
        86_400,
        30,
        "a day from now",
    );
    let url = invited["invitation_url"].as_str().expect("invitation_url");
    let token = url
        .strip_prefix(&format!("{}/#invitation=", server.public_url))
        .unwrap_or_else(|| panic!("{url}"))
        .to_owned();
    // Another site cannot spend it for the invitee.
    let resp = Browser::new(server)
        .request(Method::POST, "/v1/console/invitations/accept")
        .header("Origin", "https://evil.example")
        .json(&json!({"token": token, "password": "chosen by the evil site"}))
        .send()
        .await
        .unwrap();
    problem(resp, &[403]).await;

    // Two tabs accept at once: one is signed in, the other told the link is spent.
    let password = "a passphrase the inviter never saw";
    let accept = |password: &str| {
        let body = json!({"token": token, "password": password});
        let req = Browser::new(server)
            .request(Method::POST, "/v1/console/invitations/accept")
            .json(&body);
        async move { req.send().await.expect("POST") }
    };
    let (one, two) = tokio::join!(accept(password), accept("the other tab's passphrase"));
    let mut statuses = [one.status().as_u16(), two.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 410]);
    let chosen = if one.status() == 200 {
        password
    } else {
        "the other tab's passphrase"
    };
    let invitee = Browser::logged_in(server, &owner.ws.slug, &email, chosen).await;
    json_body(invitee.get("/v1/console/devices").await, 200).await;
    problem(accept(password).await, &[410]).await;
    let resp = Browser::new(server)
        .post_json(
            "/v1/console/invitations/accept",
            &json!({"token": "not-a-link-at-all", "password": password}),
        )
        .await;
    problem(resp, &[404]).await;

    let accepted = audit_of(&owner.browser, "member.invitation_accepted").await;
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert_eq!(accepted[0]["actor"], email.as_str());
    let invitations = audit_of(&owner.browser, "member.invited").await;
    assert_eq!(
        invitations[0]["detail"]["delivery"], "link",
        "{invitations:?}"
    );
    server.assert_log_free_of(&[("invitation token", &token), ("chosen password", chosen)]);
    server
        .assert_db_free_of(&[("invitation token", &token), ("chosen password", chosen)])
        .await;
}

/// A stolen session cookie cannot make an admin or owner (who could then enroll a first phone of
/// the thief's and view the token): inviting one needs a sign-in or re-authentication within the
/// reauth window, as a first phone does. Members may still be invited.
#[tokio::test]
async fn inviting_an_admin_or_owner_needs_a_recent_sign_in() {
    let server = shared().await;
    let owner = owner_with_phone(server).await;
    server
        .age_session_authentication(&owner.ws.slug, &owner.email, 601)
        .await;
    let mut thief = Browser::new(server);
    thief.cookies = owner.browser.cookies.clone();
    for role in ["admin", "owner"] {
        let email = email_in(&owner.ws, role);
        let refused = problem(invite(&thief, &email, role).await, &[403]).await;
        assert_eq!(refused["reauth_required"], true, "{refused}");
        assert!(row_of(&owner.browser, &email).await.is_none());
    }
    json_body(
        invite(&thief, &email_in(&owner.ws, "member"), "member").await,
        201,
    )
    .await;
    // The owner, who knows the password, re-authenticates and invites an admin.
    let resp = owner
        .browser
        .post_json(
            "/v1/console/session/reauth",
            &json!({ "password": owner.password }),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 204);
    json_body(
        invite(&owner.browser, &email_in(&owner.ws, "admin"), "admin").await,
        201,
    )
    .await;
}

/// Roles may change while a phone decides: an admin demoted to member approves nothing of an
/// admin's (a denial is still taken), and a reset asked for by an admin is not released once
/// they are a member.
#[tokio::test]
async fn a_role_lost_while_the_phone_decides_approves_nothing() {
    let server = shared().await;
    let owner = owner_with_phone(server).await;
    let admin = user_with_phone(server, &owner.ws, "admin").await;
    let admin_id = member_id(&owner.browser, &admin.email).await;
    let token = released(&owner, "reveal").await["token"]
        .as_str()
        .expect("token")
        .to_owned();

    let rotation = admin.browser.start("rotate").await;
    let reveal = admin.browser.start("reveal").await;
    assert_eq!(
        patch_role(&owner.browser, admin_id, "member")
            .await
            .status()
            .as_u16(),
        200
    );
    for ch in [&rotation, &reveal] {
        let id = id_of(ch);
        let listed = admin.phone.pending(&id).await;
        let (h, c) = admin
            .phone
            .decision_parts(&listed, "approve", number_of(ch));
        let body = problem(
            admin
                .phone
                .send_decision(&id, &admin.phone.sign(&h, &c))
                .await,
            &[403],
        )
        .await;
        assert!(
            body["detail"].as_str().unwrap_or_default().contains("role"),
            "{body}"
        );
        problem(admin.browser.release(&id).await, &[403, 409]).await;
    }
    assert_eq!(
        scim_status(server, Some(&token)).await,
        200,
        "a member's phone rotated the token"
    );
    // Denying is still theirs to do.
    admin.phone.deny(&id_of(&reveal), Some("mistake")).await;

    // A reset approved by an admin who is demoted before its release removes no phone.
    let second = user_with_phone(server, &owner.ws, "admin").await;
    let second_id = member_id(&owner.browser, &second.email).await;
    let member = user_with_phone(server, &owner.ws, "member").await;
    let target = member_id(&owner.browser, &member.email).await;
    let resp = second
        .browser
        .delete(&format!("/v1/console/members/{target}/devices"))
        .await;
    let reset = json_body(resp, 202).await;
    second
        .phone
        .approve(&id_of(&reset), number_of(&reset))
        .await;
    assert_eq!(
        patch_role(&owner.browser, second_id, "member")
            .await
            .status()
            .as_u16(),
        200
    );
    problem(second.browser.release(&id_of(&reset)).await, &[403]).await;
    assert_eq!(
        member.phone.challenges().await.len(),
        0,
        "the member's phone still answers"
    );
    let row = row_of(&owner.browser, &member.email).await.expect("member");
    assert_eq!(row["devices"], 1, "{row}");
}
