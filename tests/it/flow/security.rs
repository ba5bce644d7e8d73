//! "A stolen console session is not enough" (issue 12), as an attacker runs it against the real
//! binary: a cookie alone adds no phone and reaches no token; a first phone needs a fresh
//! authentication; adding and removing phones is told and audited; lost phones are reset behind
//! the resetter's own step-up or by the operator; cross-site writes, lock-out by wrong passwords
//! and wrapped JWS times get nowhere. Every legitimate path is exercised beside its attack.

use super::*;

/// A browser that holds someone else's session cookie, from another machine.
fn thief(server: &TestServer, victim: &Browser) -> Browser {
    let mut stolen = Browser::new(server);
    stolen.cookies = victim.cookies.clone();
    stolen
}

#[tokio::test]
async fn a_stolen_session_adds_no_phone_and_reaches_no_token() {
    let server = shared().await;
    let owner = owner_with_phone(server).await;
    let attacker = thief(server, &owner.browser);

    // The cookie works for reading...
    json_body(attacker.get("/v1/console/devices").await, 200).await;
    // ...but adding the attacker's phone is a step-up on the owner's real phone, not a code.
    let resp = attacker.post("/v1/console/devices/enrollments").await;
    let asked = json_body(resp, 202).await;
    assert!(asked.get("code").is_none(), "{asked}");
    let id = id_of(&asked);
    problem(attacker.release(&id).await, &[409]).await;
    let shown = owner.phone.pending(&id).await;
    assert_eq!(shown["action"], "device.enroll", "{shown}");
    assert_eq!(
        shown["context"]["description"], "Add a new phone to your account",
        "{shown}"
    );

    // The owner says "not me": the challenge is denied, further requests are blocked, and the
    // attempt is on record.
    owner.phone.deny(&id, Some("not_me")).await;
    problem(attacker.release(&id).await, &[409]).await;
    problem(
        attacker.post("/v1/console/devices/enrollments").await,
        &[429],
    )
    .await;
    problem(attacker.reveal().await, &[429]).await;
    let attacks = audit_of(&owner.browser, "security.suspected_attack").await;
    assert_eq!(attacks.len(), 1, "{attacks:?}");
    assert_eq!(attacks[0]["detail"]["action"], "device.enroll");

    // Nothing was added: still one phone, and a made-up code enrolls nothing.
    let devices = json_body(owner.browser.get("/v1/console/devices").await, 200).await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1, "{devices}");
    let attacker_phone = Phone::new(server);
    problem(
        attacker_phone
            .enroll_with(&attacker_phone.enrollment_body(&random_id()))
            .await,
        &[404],
    )
    .await;
}

#[tokio::test]
async fn a_second_phone_is_added_only_with_the_first_ones_approval() {
    let server = shared().await;
    let p = owner_with_phone(server).await;
    let offer = p.browser.enrollment_approved_by(&p.phone).await;
    assert!(offer["uri"]
        .as_str()
        .unwrap()
        .starts_with("assent://enroll?"));
    // The code comes once: a second release is 410.
    let enroll_events = audit_of(&p.browser, "enrollment.started").await;
    let challenge = enroll_events[0]["detail"]["challenge"]
        .as_str()
        .expect("the approving challenge is on record")
        .to_owned();
    problem(p.browser.release(&challenge).await, &[410]).await;

    let mut tablet = Phone::new(server);
    tablet.enroll(offer["code"].as_str().unwrap()).await;
    // Who and from where.
    let enrolled = audit_of(&p.browser, "device.enrolled").await;
    let entry = enrolled
        .iter()
        .find(|e| e["device_id"] == tablet.device_id.as_str())
        .expect("the new phone's entry");
    assert_eq!(entry["actor"], p.email.as_str());
    assert_eq!(entry["ip"], "127.0.0.1");
    // The new phone decides like the first.
    let ch = p.browser.start("reveal").await;
    tablet.approve(&id_of(&ch), number_of(&ch)).await;
    let released = json_body(p.browser.release(&id_of(&ch)).await, 200).await;
    assert_token_shape(released["token"].as_str().unwrap());

    // A wrong number on the enrollment prompt denies it, and no code comes.
    let resp = p.browser.post("/v1/console/devices/enrollments").await;
    let asked = json_body(resp, 202).await;
    let id = id_of(&asked);
    let listed = p.phone.pending(&id).await;
    let wrong = listed["number_choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_i64().unwrap())
        .find(|n| *n != number_of(&asked))
        .unwrap();
    let (h, c) = p.phone.decision_parts(&listed, "approve", wrong);
    problem(
        p.phone.send_decision(&id, &p.phone.sign(&h, &c)).await,
        &[422],
    )
    .await;
    problem(p.browser.release(&id).await, &[409]).await;

    // Removing a phone is on record too.
    let resp = p
        .browser
        .delete(&format!("/v1/console/devices/{}", tablet.device_id))
        .await;
    assert_eq!(resp.status().as_u16(), 204);
    let removed = audit_of(&p.browser, "device.removed").await;
    assert_eq!(removed[0]["device_id"], tablet.device_id.as_str());
    assert_eq!(removed[0]["actor"], p.email.as_str());
    assert_eq!(removed[0]["ip"], "127.0.0.1");
}

#[tokio::test]
async fn a_first_phone_needs_a_fresh_authentication() {
    let server = shared().await;
    let ws = server.create_workspace();
    let browser = Browser::logged_in(server, &ws.slug, &ws.owner_email, &ws.owner_password).await;
    // The reauth window (600 s) has passed since the sign-in.
    server
        .age_session_authentication(&ws.slug, &ws.owner_email, 601)
        .await;
    let body = problem(
        browser.post("/v1/console/devices/enrollments").await,
        &[403],
    )
    .await;
    assert_eq!(body["reauth_required"], true, "{body}");
    assert_eq!(body["reauth"], "password", "{body}");
    // A stolen cookie cannot re-open the window without the password.
    let attacker = thief(server, &browser);
    let resp = attacker
        .post_json(
            "/v1/console/session/reauth",
            &json!({"password": "not-the-password"}),
        )
        .await;
    problem(resp, &[401]).await;
    problem(
        attacker.post("/v1/console/devices/enrollments").await,
        &[403],
    )
    .await;
    // Bad bodies are problems, not crashes.
    problem(
        browser
            .request(Method::POST, "/v1/console/session/reauth")
            .header("content-type", "application/json")
            .body("{\"password\":")
            .send()
            .await
            .unwrap(),
        &[400],
    )
    .await;

    // The person types the password: the window opens, the code comes.
    let resp = browser
        .post_json(
            "/v1/console/session/reauth",
            &json!({"password": ws.owner_password}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 204);
    let offer = browser.enrollment().await;
    let mut phone = Phone::new(server);
    phone.enroll(offer["code"].as_str().unwrap()).await;
    let reauths = audit_of(&browser, "session.reauthenticated").await;
    assert_eq!(reauths.len(), 1, "{reauths:?}");
    let failed = audit_of(&browser, "reauth.failed").await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    server.assert_log_free_of(&[("password", ws.owner_password.as_str())]);
}

#[tokio::test]
async fn reauthentication_is_throttled_like_sign_in() {
    let server = shared().await;
    let ws = server.create_workspace();
    let browser = Browser::logged_in(server, &ws.slug, &ws.owner_email, &ws.owner_password).await;
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let resp = browser
            .post_json("/v1/console/session/reauth", &json!({"password": "wrong"}))
            .await;
        statuses.push(resp.status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let resp = browser
        .post_json("/v1/console/session/reauth", &json!({"password": "wrong"}))
        .await;
    assert_eq!(resp.status().as_u16(), 429);
    assert!(resp.headers().get("retry-after").is_some());
}

#[tokio::test]
async fn an_admin_resets_a_members_lost_phones_behind_their_own_step_up() {
    let server = shared().await;
    let owner = owner_with_phone(server).await;
    let admin = user_with_phone(server, &owner.ws, "admin").await;
    let member = user_with_phone(server, &owner.ws, "member").await;
    let member_id = member_id(&admin.browser, &member.email).await;
    let owner_id = member_id_of(&owner).await;

    // Who may not: a member, an admin for an owner, anyone for another workspace's person.
    problem(
        member
            .browser
            .delete(&format!("/v1/console/members/{member_id}/devices"))
            .await,
        &[403],
    )
    .await;
    problem(
        admin
            .browser
            .delete(&format!("/v1/console/members/{owner_id}/devices"))
            .await,
        &[403],
    )
    .await;
    let stranger = owner_with_phone(server).await;
    problem(
        stranger
            .browser
            .delete(&format!("/v1/console/members/{member_id}/devices"))
            .await,
        &[404],
    )
    .await;
    problem(
        admin
            .browser
            .delete("/v1/console/members/not-a-number/devices")
            .await,
        &[404],
    )
    .await;
    problem(member.browser.get("/v1/console/members").await, &[403]).await;

    // The admin asks; the admin's own phone approves (and sees whose phones).
    let resp = admin
        .browser
        .delete(&format!("/v1/console/members/{member_id}/devices"))
        .await;
    let asked = json_body(resp, 202).await;
    let id = id_of(&asked);
    let shown = admin.phone.pending(&id).await;
    assert_eq!(shown["action"], "member.devices_reset", "{shown}");
    assert_eq!(shown["context"]["member"]["email"], member.email.as_str());
    problem(admin.browser.release(&id).await, &[409]).await;
    admin.phone.approve(&id, number_of(&asked)).await;
    let done = json_body(admin.browser.release(&id).await, 200).await;
    assert_eq!(done["action"], "member.devices_reset", "{done}");
    assert_eq!(done["devices_removed"], 1, "{done}");

    // The member's phone is gone; the member enrolls again under the reauth rule.
    problem(
        member
            .phone
            .get_challenges_with(Some(&member.phone.auth()))
            .await,
        &[401],
    )
    .await;
    let offer = member.browser.enrollment().await;
    let mut new_phone = Phone::new(server);
    new_phone.enroll(offer["code"].as_str().unwrap()).await;
    let resets = audit_of(&owner.browser, "member.devices_reset").await;
    assert_eq!(resets.len(), 1, "{resets:?}");
    assert_eq!(resets[0]["actor"], admin.email.as_str());
    assert_eq!(resets[0]["detail"]["member"], member.email.as_str());
    let list = json_body(owner.browser.get("/v1/console/members").await, 200).await;
    let row = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == member.email.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["devices"], 1, "{row}");
    assert_eq!(row["role"], "member", "{row}");
    assert_eq!(row["sso_linked"], false, "{row}");
    utc_time(&row, "last_sign_in_at");
}

async fn member_id_of(p: &Person) -> i64 {
    member_id(&p.browser, &p.email).await
}

#[tokio::test]
async fn the_operator_resets_an_owner_who_lost_every_phone() {
    let server = shared().await;
    let owner = owner_with_phone(server).await;
    let out = server.cli(&[
        "devices",
        "reset",
        "--workspace",
        &owner.ws.slug,
        "--email",
        &owner.email,
    ]);
    assert_eq!(out["devices_removed"], 1, "{out}");
    assert_eq!(out["email"], owner.email.as_str(), "{out}");
    problem(
        owner
            .phone
            .get_challenges_with(Some(&owner.phone.auth()))
            .await,
        &[401],
    )
    .await;
    let resets = audit_of(&owner.browser, "member.devices_reset").await;
    assert_eq!(resets[0]["actor"], "operator", "{resets:?}");
    // The owner enrolls again after a fresh sign-in.
    let mut again = Browser::new(server);
    again
        .login_ok(&owner.ws.slug, &owner.email, &owner.password)
        .await;
    let offer = again.enrollment().await;
    Phone::new(server)
        .enroll(offer["code"].as_str().unwrap())
        .await;
    // Unknown people are a one-line error.
    let (_, stderr) = server.cli_fails(&[
        "devices",
        "reset",
        "--workspace",
        &owner.ws.slug,
        "--email",
        "nobody@example.com",
    ]);
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(last.contains("no person nobody@example.com"), "{stderr}");
}

#[tokio::test]
async fn cross_site_writes_are_refused_and_change_nothing() {
    let server = shared().await;
    let p = owner_with_phone(server).await;
    let evil = |method: Method, path: &str| {
        p.browser
            .request(method, path)
            .header("Origin", "https://evil.example")
    };
    let resp = evil(Method::POST, "/v1/console/session")
        .json(&json!({"workspace": p.ws.slug, "email": p.email, "password": p.password}))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("set-cookie").is_none());
    problem(resp, &[403]).await;
    let resp = evil(
        Method::DELETE,
        &format!("/v1/console/devices/{}", p.phone.device_id),
    )
    .send()
    .await
    .unwrap();
    problem(resp, &[403]).await;
    let resp = p
        .browser
        .request(Method::POST, "/v1/console/scim-token/reveal")
        .header("Sec-Fetch-Site", "cross-site")
        .send()
        .await
        .unwrap();
    problem(resp, &[403]).await;
    let resp = evil(Method::POST, "/v1/support/session")
        .json(&json!({"email": "x@example.com", "password": "y"}))
        .send()
        .await
        .unwrap();
    problem(resp, &[403]).await;
    // Nothing changed: the phone is there, no challenge was made.
    let devices = json_body(p.browser.get("/v1/console/devices").await, 200).await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1);
    assert!(p.phone.challenges().await.is_empty());
    // A read with a foreign origin is still a read; the page's own origin writes.
    json_body(
        evil(Method::GET, "/v1/console/devices")
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    p.browser.start("reveal").await;
}

#[tokio::test]
async fn a_decision_with_times_at_the_ends_of_i64_is_refused() {
    let server = shared().await;
    let p = owner_with_phone(server).await;
    let ch = p.browser.start("reveal").await;
    let id = id_of(&ch);
    let listed = p.phone.pending(&id).await;
    let (h, mut c) = p.phone.decision_parts(&listed, "approve", number_of(&ch));
    c["iat"] = json!(i64::MIN);
    c["exp"] = json!(i64::MAX);
    problem(
        p.phone.send_decision(&id, &p.phone.sign(&h, &c)).await,
        &[401, 403],
    )
    .await;
    assert_eq!(p.browser.status(&id).await, "pending");
    // The request JWS too.
    let (rh, mut rc) = p.phone.auth_header_and_claims();
    rc["iat"] = json!(i64::MIN);
    rc["exp"] = json!(i64::MAX);
    let forged = format!("Device {}", p.phone.sign(&rh, &rc));
    problem(p.phone.get_challenges_with(Some(&forged)).await, &[401]).await;
    p.phone.approve(&id, number_of(&ch)).await;
}

#[tokio::test]
async fn wrong_passwords_from_elsewhere_do_not_lock_the_owner_out() {
    let server = TestServer::start(ServerOptions {
        env: vec![("ASSENT_TRUSTED_PROXIES".into(), "127.0.0.1/32".into())],
        ..ServerOptions::default()
    })
    .await;
    let ws = server.create_workspace();
    // Signed in before the attack, to read the activity log after it.
    let owner = Browser::logged_in(&server, &ws.slug, &ws.owner_email, &ws.owner_password).await;
    let from = |ip: &str, password: &str| {
        Browser::new(&server)
            .request(Method::POST, "/v1/console/session")
            .header("X-Forwarded-For", ip)
            .json(&json!({"workspace": ws.slug, "email": ws.owner_email, "password": password}))
    };
    // The attacker's address slows down...
    let mut attacker = Vec::new();
    for _ in 0..8 {
        attacker.push(
            from("203.0.113.7", "guess")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert!(attacker.contains(&429), "{attacker:?}");
    // ...and the owner, from her own, still signs in.
    let resp = from("198.51.100.20", &ws.owner_password)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    // A distributed attack reaches the account's ceiling: then everyone waits, and it is on record.
    let mut limited = false;
    for i in 0..110u32 {
        let ip = format!("198.18.{}.{}", i / 200, i % 200 + 1);
        let status = from(&ip, "guess").send().await.unwrap().status().as_u16();
        if status == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "the account's ceiling was never reached");
    let resp = from("198.51.100.20", &ws.owner_password)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert!(resp.headers().get("retry-after").is_some());
    let ceiling = audit_of(&owner, "security.login_ceiling").await;
    assert_eq!(ceiling.len(), 1, "{ceiling:?}");
}

#[tokio::test]
async fn the_companion_simulator_approves_a_new_phone() {
    let server = shared().await;
    let ws = server.create_workspace();
    let browser = Browser::logged_in(server, &ws.slug, &ws.owner_email, &ws.owner_password).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("companion.json");
    let companion = |args: &[&str]| {
        let out = std::process::Command::new(support::server::BIN)
            .arg("companion")
            .arg("--state")
            .arg(&state)
            .args(args)
            .output()
            .expect("run assent companion");
        assert!(
            out.status.success(),
            "assent companion {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let code = browser.enrollment().await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    companion(&["enroll", "--server", &server.base, "--code", &code]);

    let asked = json_body(browser.post("/v1/console/devices/enrollments").await, 202).await;
    let listed = companion(&["pending"]);
    assert!(
        listed.contains("device.enroll") && listed.contains("Add a new phone to your account"),
        "{listed}"
    );
    let number = number_of(&asked).to_string();
    companion(&["approve", "--number", &number]);
    let offer = json_body(browser.release(&id_of(&asked)).await, 200).await;
    let mut second = Phone::new(server);
    second.enroll(offer["code"].as_str().unwrap()).await;
    let devices = json_body(browser.get("/v1/console/devices").await, 200).await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 2, "{devices}");
}

/// A fresh stolen cookie (inside the reauth window) could remove the person's only phone and
/// then take the first-phone path for a phone of its own. Removing the last phone makes every
/// session of the person prove who they are again: the thief gets 403, the person types the
/// password and goes on.
#[tokio::test]
async fn a_stolen_fresh_cookie_cannot_swap_the_only_phone() {
    let server = shared().await;
    let p = owner_with_phone(server).await;
    let attacker = thief(server, &p.browser);
    let resp = attacker
        .delete(&format!("/v1/console/devices/{}", p.phone.device_id))
        .await;
    assert_eq!(resp.status().as_u16(), 204);
    let body = problem(
        attacker.post("/v1/console/devices/enrollments").await,
        &[403],
    )
    .await;
    assert_eq!(body["reauth_required"], true, "{body}");
    // The person's own session is asked the same, and the password opens it again.
    problem(
        p.browser.post("/v1/console/devices/enrollments").await,
        &[403],
    )
    .await;
    let resp = p
        .browser
        .post_json(
            "/v1/console/session/reauth",
            &json!({"password": p.password}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 204);
    let offer = p.browser.enrollment().await;
    let mut phone = Phone::new(server);
    phone.enroll(offer["code"].as_str().unwrap()).await;
    // The thief's copy of the cookie is the same session: re-authenticated by its person.
    let ch = p.browser.start("reveal").await;
    phone.approve(&id_of(&ch), number_of(&ch)).await;
    json_body(p.browser.release(&id_of(&ch)).await, 200).await;

    // Removing one of two phones leaves the other to approve a new one: nothing to re-open.
    let q = owner_with_phone(server).await;
    let tablet = second_phone(server, &q.browser, &q.phone).await;
    let resp = q
        .browser
        .delete(&format!("/v1/console/devices/{}", tablet.device_id))
        .await;
    assert_eq!(resp.status().as_u16(), 204);
    json_body(q.browser.post("/v1/console/devices/enrollments").await, 202).await;
}
