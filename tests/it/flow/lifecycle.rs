//! Token lifecycle, black-box against the real binary: support staff and their rotation that
//! never shows the token, the two-person rule, and owners alerted after a `not_me`. (The
//! clock-bound rules — hourly limit, grace period — are router tests in `src/http/`.)

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use super::*;
use support::server::unique;

struct Staff {
    email: String,
    password: String,
    /// Carries the support cookie.
    browser: Browser,
    phone: Phone,
}

const SUPPORT_COOKIE: &str = "assent_support_session";

async fn staff_sign_in(server: &TestServer, email: &str, password: &str) -> Browser {
    let mut browser = Browser::new(server);
    let resp = browser
        .post_json(
            "/v1/support/session",
            &json!({"email": email, "password": password}),
        )
        .await;
    let set_cookie: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let body = json_body(resp, 200).await;
    assert_eq!(body, json!({ "email": email }));
    assert_eq!(set_cookie.len(), 1, "{set_cookie:?}");
    let attrs: Vec<String> = set_cookie[0]
        .split(';')
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    for wanted in ["httponly", "samesite=strict", "path=/v1/support"] {
        assert!(attrs.iter().any(|a| a == wanted), "{set_cookie:?}");
    }
    let (name, value) = set_cookie[0]
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap();
    assert_eq!(name, SUPPORT_COOKIE);
    browser.cookies = vec![(name.to_owned(), value.to_owned())];
    browser
}

async fn staff_with_phone(server: &TestServer) -> Staff {
    let email = format!("{}@support.example.com", unique("staff"));
    let out = server.cli(&["staff", "add", "--email", &email]);
    assert_eq!(out["email"], email.as_str(), "{out}");
    let password = out["password"].as_str().expect("password").to_owned();
    let browser = staff_sign_in(server, &email, &password).await;
    let offer = json_body(browser.post("/v1/support/devices/enrollments").await, 201).await;
    assert!(offer["uri"]
        .as_str()
        .unwrap()
        .starts_with("assent://enroll?"));
    let mut phone = Phone::new(server);
    phone.enroll(offer["code"].as_str().unwrap()).await;
    Staff {
        email,
        password,
        browser,
        phone,
    }
}

/// A signed approval of a support rotation as listed to `phone`, with the workspace and ticket
/// claims when `shown` (what the phone displayed).
fn support_decision(
    phone: &Phone,
    listed: &Value,
    number: i64,
    shown: Option<(&str, &str)>,
) -> String {
    let (header, mut claims) = phone.decision_parts(listed, "approve", number);
    if let Some((workspace, ticket)) = shown {
        claims["workspace"] = json!(workspace);
        claims["ticket"] = json!(ticket);
    }
    phone.sign(&header, &claims)
}

/// Approves the pending support rotation `id` on `phone`, signing what it shows.
async fn approve_support(phone: &Phone, id: &str, number: i64, slug: &str, ticket: &str) {
    let listed = phone.pending(id).await;
    let jws = support_decision(phone, &listed, number, Some((slug, ticket)));
    json_body(phone.send_decision(id, &jws).await, 200).await;
}

async fn support_rotate(staff: &Staff, slug: &str, ticket: &str) -> Value {
    json_body(
        staff
            .browser
            .post_json(
                &format!("/v1/support/workspaces/{slug}/scim-token/rotate"),
                &json!({"ticket": ticket, "reason": "customer lost the token"}),
            )
            .await,
        202,
    )
    .await
}

async fn audit_of(p: &Person, kind: &str) -> Vec<Value> {
    let page = json_body(
        p.browser
            .get(&format!("/v1/console/audit?kind={kind}"))
            .await,
        200,
    )
    .await;
    page["entries"].as_array().unwrap().clone()
}

#[tokio::test]
async fn support_rotates_the_token_without_ever_seeing_it_and_admins_are_told() {
    let server = shared().await;
    let owner = owner_with_phone(server).await;
    let slug = owner.ws.slug.clone();
    let old = released(&owner, "reveal").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let staff = staff_with_phone(server).await;

    // Sessions stay on their side: a console cookie is no support session and the other way
    // round, whatever name it is sent under.
    let support_value = &staff.browser.cookies[0].1;
    let console_value = &owner.browser.cookies[0].1;
    let mut swapped = Browser::new(server);
    swapped.cookies = vec![("assent_session".into(), support_value.clone())];
    problem(swapped.get("/v1/console/devices").await, &[401]).await;
    problem(swapped.get("/v1/console/session").await, &[401]).await;
    swapped.cookies = vec![(SUPPORT_COOKIE.into(), console_value.clone())];
    problem(
        swapped.get(&format!("/v1/support/workspaces/{slug}")).await,
        &[401],
    )
    .await;
    problem(
        owner
            .browser
            .get(&format!("/v1/support/workspaces/{slug}"))
            .await,
        &[401],
    )
    .await;
    problem(
        owner.browser.post("/v1/support/devices/enrollments").await,
        &[401],
    )
    .await;
    // Staff cannot sign in to the console (not even naming the staff realm), owners not to support.
    let mut b = Browser::new(server);
    problem(
        b.login("_staff", &staff.email, &staff.password).await,
        &[401],
    )
    .await;
    problem(
        b.post_json(
            "/v1/support/session",
            &json!({"email": owner.email, "password": owner.password}),
        )
        .await,
        &[401],
    )
    .await;

    // What support sees: nothing secret. One failed SCIM request shows in the error count.
    assert_eq!(
        scim_status(server, Some(&old)).await,
        200,
        "the token works before the rotation"
    );
    let missing = reqwest::Client::new()
        .get(format!(
            "{}/v1/scim/v2/Users/{}",
            server.base,
            random_uuid()
        ))
        .bearer_auth(&old)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    let summary = json_body(
        staff
            .browser
            .get(&format!("/v1/support/workspaces/{slug}"))
            .await,
        200,
    )
    .await;
    let mut keys: Vec<&str> = summary
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "last_scim_request_at",
            "name",
            "scim_errors_24h",
            "slug",
            "token_created_at",
            "token_rotated_by"
        ]
    );
    assert_eq!(summary["slug"], slug.as_str());
    assert_eq!(summary["token_rotated_by"], owner.email.as_str());
    assert_eq!(summary["scim_errors_24h"], 1, "{summary}");
    assert_about(
        utc_time(&summary, "last_scim_request_at"),
        0,
        30,
        "last SCIM request",
    );
    utc_time(&summary, "token_created_at");
    assert!(!summary.to_string().contains("assent_scim_"));
    problem(
        staff
            .browser
            .get("/v1/support/workspaces/no-such-workspace")
            .await,
        &[404],
    )
    .await;
    problem(
        staff.browser.get("/v1/support/workspaces/_staff").await,
        &[404],
    )
    .await;

    // Bad requests change nothing.
    let path = format!("/v1/support/workspaces/{slug}/scim-token/rotate");
    problem(
        staff
            .browser
            .post_json(&path, &json!({"reason": "x"}))
            .await,
        &[422],
    )
    .await;
    problem(
        staff
            .browser
            .post_json(&path, &json!({"ticket": " ", "reason": "x"}))
            .await,
        &[422],
    )
    .await;
    problem(
        staff
            .browser
            .post_json(
                "/v1/support/workspaces/no-such-workspace/scim-token/rotate",
                &json!({"ticket": "T-1", "reason": "x"}),
            )
            .await,
        &[404],
    )
    .await;

    let ticket = unique("TICKET");
    let started = support_rotate(&staff, &slug, &ticket).await;
    for key in ["challenge_id", "number", "expires_at", "notified_devices"] {
        assert!(started.get(key).is_some(), "{key} missing: {started}");
    }
    let id = id_of(&started);
    let number = number_of(&started);

    // The staff member's phone shows what it approves; the workspace's phones do not see it.
    let listed = staff.phone.pending(&id).await;
    assert_eq!(listed["action"], "scim_token.support_rotate");
    assert_eq!(listed["workspace"]["slug"], slug.as_str());
    assert_eq!(listed["requested_by"]["email"], staff.email.as_str());
    assert_eq!(listed["context"]["ticket"], ticket.as_str());
    assert_eq!(listed["context"]["reason"], "customer lost the token");
    assert!(owner.phone.find(&id).await.is_none());
    // The owner's console cannot follow or release it.
    problem(owner.browser.challenge_response(&id).await, &[404]).await;
    problem(owner.browser.release(&id).await, &[404]).await;
    assert_eq!(
        json_body(
            staff
                .browser
                .get(&format!("/v1/support/challenges/{id}"))
                .await,
            200
        )
        .await["status"],
        "pending"
    );

    // A decision that does not sign the workspace and ticket it showed is refused.
    for shown in [
        None,
        Some((slug.as_str(), "OTHER-TICKET")),
        Some(("other-ws", ticket.as_str())),
    ] {
        let jws = support_decision(&staff.phone, &listed, number, shown);
        problem(staff.phone.send_decision(&id, &jws).await, &[401, 403]).await;
    }
    // Nor may a phone of the workspace decide it.
    let jws = support_decision(&owner.phone, &listed, number, Some((&slug, &ticket)));
    problem(owner.phone.send_decision(&id, &jws).await, &[401, 403]).await;
    assert_eq!(
        scim_status(server, Some(&old)).await,
        200,
        "nothing rotated yet"
    );

    let events = staff
        .browser
        .request(
            reqwest::Method::GET,
            &format!("/v1/support/challenges/{id}/events"),
        )
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(events.status().as_u16(), 200);
    let mut sse = support::browser::Sse::new(events);
    assert_eq!(sse.next_status().await, "pending");
    let jws = support_decision(&staff.phone, &listed, number, Some((&slug, &ticket)));
    let answer = json_body(staff.phone.send_decision(&id, &jws).await, 200).await;
    assert_eq!(answer["status"], "approved");
    assert_eq!(sse.next_status().await, "approved");

    // The old token stopped at the approval; support learns when, never what.
    assert_eq!(scim_status(server, Some(&old)).await, 401);
    let release = staff
        .browser
        .post(&format!("/v1/support/challenges/{id}/release"))
        .await;
    let text = release.text().await.unwrap();
    let confirmed: Value = serde_json::from_str(&text).unwrap();
    let mut keys: Vec<&str> = confirmed
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(keys, ["action", "rotated_at"], "{text}");
    assert_eq!(confirmed["action"], "scim_token.support_rotate");
    assert!(!text.contains("assent_scim_"), "{text}");
    assert_about(utc_time(&confirmed, "rotated_at"), 0, 30, "rotated_at");
    problem(
        staff
            .browser
            .post(&format!("/v1/support/challenges/{id}/release"))
            .await,
        &[410],
    )
    .await;

    // The workspace's admins are told, and fetch the new token with View Token.
    let told = audit_of(&owner, "token.support_rotated").await;
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0]["actor"], staff.email.as_str());
    assert_eq!(told[0]["detail"]["ticket"], ticket.as_str());
    assert_eq!(told[0]["detail"]["reason"], "customer lost the token");
    assert!(told[0]["detail"]["admins_told"]
        .as_array()
        .unwrap()
        .contains(&json!(owner.email)));
    let created = audit_of(&owner, "challenge.created").await;
    assert!(
        created
            .iter()
            .any(|e| e["detail"]["ticket"] == ticket.as_str()),
        "{created:?}"
    );
    let viewed = audit_of(&owner, "support.viewed").await;
    assert_eq!(viewed[0]["actor"], staff.email.as_str());
    let fresh = released(&owner, "reveal").await;
    let new = fresh["token"].as_str().unwrap();
    assert_ne!(new, old);
    assert_eq!(fresh["token_created_at"], confirmed["rotated_at"]);
    assert_eq!(scim_status(server, Some(new)).await, 200);
    let summary = json_body(
        staff
            .browser
            .get(&format!("/v1/support/workspaces/{slug}"))
            .await,
        200,
    )
    .await;
    assert_eq!(summary["token_rotated_by"], staff.email.as_str());
    assert!(!summary.to_string().contains(new));
    server.assert_log_free_of(&[
        ("the rotated token", new),
        ("the support session", support_value),
    ]);

    // Signing out ends the support session.
    assert_eq!(
        staff
            .browser
            .delete("/v1/support/session")
            .await
            .status()
            .as_u16(),
        204
    );
    problem(
        staff
            .browser
            .get(&format!("/v1/support/workspaces/{slug}"))
            .await,
        &[401],
    )
    .await;
}

/// Runs `assent support rotate` and hands back the number it shows on standard error, then its
/// exit status and standard output.
fn run_support_cli(
    server: &TestServer,
    staff: &Staff,
    slug: &str,
    ticket: &str,
) -> (
    tokio::sync::oneshot::Receiver<i64>,
    tokio::task::JoinHandle<(std::process::ExitStatus, String, String)>,
) {
    let mut cmd = server.cli_command(&[
        "support",
        "rotate",
        "--workspace",
        slug,
        "--ticket",
        ticket,
        "--server",
        &server.base,
    ]);
    cmd.env("ASSENT_SUPPORT_EMAIL", &staff.email)
        .env("ASSENT_SUPPORT_PASSWORD", &staff.password)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run assent support rotate");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let done = tokio::task::spawn_blocking(move || {
        let stderr = child.stderr.take().unwrap();
        let mut tx = Some(tx);
        let mut err = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if let Some(rest) = line.split("pick ").nth(1) {
                let n: i64 = rest.split_whitespace().next().unwrap().parse().unwrap();
                if let Some(tx) = tx.take() {
                    let _ = tx.send(n);
                }
            }
            err.push_str(&line);
            err.push('\n');
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            err,
        )
    });
    (rx, done)
}

#[tokio::test]
async fn assent_support_rotate_drives_the_same_api_from_a_terminal() {
    let server = shared().await;
    let owner = owner_with_phone(server).await;
    let old = released(&owner, "reveal").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let staff = staff_with_phone(server).await;

    let ticket = unique("CLI");
    let (number, done) = run_support_cli(server, &staff, &owner.ws.slug, &ticket);
    let number = tokio::time::timeout(WAIT, number)
        .await
        .expect("the CLI shows a number")
        .unwrap();
    let listed = staff.phone.challenges().await.remove(0);
    assert_eq!(listed["context"]["ticket"], ticket.as_str());
    let jws = support_decision(
        &staff.phone,
        &listed,
        number,
        Some((&owner.ws.slug, &ticket)),
    );
    json_body(
        staff
            .phone
            .send_decision(listed["id"].as_str().unwrap(), &jws)
            .await,
        200,
    )
    .await;
    let (status, stdout, stderr) = done.await.unwrap();
    assert!(status.success(), "{stderr}");
    let out: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(out["workspace"], owner.ws.slug.as_str());
    assert_eq!(out["ticket"], ticket.as_str());
    assert_eq!(out["action"], "scim_token.support_rotate");
    utc_time(&out, "rotated_at");
    assert!(!stdout.contains("assent_scim_") && !stderr.contains("assent_scim_"));
    assert!(!stderr.contains(&staff.password));
    assert_eq!(scim_status(server, Some(&old)).await, 401);

    // Denied on the phone: the command fails with one line, and nothing rotates.
    let current = released(&owner, "reveal").await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (number, done) = run_support_cli(server, &staff, &owner.ws.slug, &ticket);
    tokio::time::timeout(WAIT, number).await.unwrap().unwrap();
    let listed = staff.phone.challenges().await.remove(0);
    let (h, mut c) = staff.phone.decision_parts(&listed, "deny", 0);
    c["workspace"] = json!(owner.ws.slug);
    c["ticket"] = json!(ticket);
    json_body(
        staff
            .phone
            .send_decision(listed["id"].as_str().unwrap(), &staff.phone.sign(&h, &c))
            .await,
        200,
    )
    .await;
    let (status, stdout, stderr) = done.await.unwrap();
    assert!(!status.success());
    assert!(stdout.trim().is_empty(), "{stdout}");
    assert!(
        stderr.trim_end().lines().last().unwrap().contains("denied"),
        "{stderr}"
    );
    assert_eq!(scim_status(server, Some(&current)).await, 200);
}

#[tokio::test]
async fn the_two_person_rule_sends_a_rotation_to_a_second_admin_after_the_first_approves() {
    let server = shared().await;
    let owner = owner_with_phone(server).await;
    let admin = user_with_phone(server, &owner.ws, "admin").await;
    let old = released(&owner, "reveal").await["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let policy = json!({"two_person_rotation": true, "rotation_grace_minutes": 0, "token_viewers": "admins"});
    let resp = admin
        .browser
        .request(reqwest::Method::PUT, "/v1/console/policy")
        .json(&policy)
        .send()
        .await
        .unwrap();
    problem(resp, &[403]).await;
    let resp = owner
        .browser
        .request(reqwest::Method::PUT, "/v1/console/policy")
        .json(&policy)
        .send()
        .await
        .unwrap();
    assert_eq!(json_body(resp, 200).await["two_person_rotation"], true);

    // Viewing needs no second person.
    released(&admin, "reveal").await;

    let ch = admin.browser.start("rotate").await;
    let (id, number) = (id_of(&ch), number_of(&ch));
    let mut sse = admin.browser.events(&id).await;
    assert!(sse.next(WAIT).await.unwrap().data.contains("pending"));
    // The owner's phone does not see it before the requester approved.
    assert!(owner.phone.find(&id).await.is_none());
    let first = admin.phone.pending(&id).await;
    let (h, c) = admin.phone.decision_parts(&first, "approve", number);
    let answer = json_body(
        admin
            .phone
            .send_decision(&id, &admin.phone.sign(&h, &c))
            .await,
        200,
    )
    .await;
    assert_eq!(
        answer,
        json!({"status": "approved", "awaiting": "second_approval"})
    );
    let event = sse
        .next(WAIT)
        .await
        .expect("an event for the first approval");
    let data: Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(
        data,
        json!({"status": "pending", "awaiting": "second_approval"})
    );
    let view = admin.browser.challenge(&id).await;
    assert_eq!(
        (view["status"].as_str(), view["awaiting"].as_str()),
        (Some("pending"), Some("second_approval"))
    );
    problem(admin.browser.release(&id).await, &[409]).await;
    assert_eq!(
        scim_status(server, Some(&old)).await,
        200,
        "nothing rotated yet"
    );

    // Now it waits on the other admin's phone, with a fresh nonce; the requester cannot approve
    // twice, nor replay the first approval.
    assert!(admin.phone.find(&id).await.is_none());
    problem(
        admin
            .phone
            .send_decision(&id, &admin.phone.sign(&h, &c))
            .await,
        &[401, 403],
    )
    .await;
    let second = owner.phone.pending(&id).await;
    assert_eq!(second["context"]["second_approval"], true);
    assert_eq!(second["requested_by"]["email"], admin.email.as_str());
    assert_ne!(second["nonce"], first["nonce"]);
    owner.phone.approve(&id, number).await;
    assert_eq!(sse.next_status().await, "approved");
    let rotated = json_body(admin.browser.release(&id).await, 200).await;
    let new = rotated["token"].as_str().unwrap();
    assert_eq!(scim_status(server, Some(&old)).await, 401);
    assert_eq!(scim_status(server, Some(new)).await, 200);
    let entries = audit_of(&owner, "token.rotated").await;
    assert_eq!(
        entries[0]["detail"]["second_approver"],
        owner.email.as_str()
    );
    assert_eq!(
        audit_of(&owner, "challenge.first_approved").await[0]["actor"],
        admin.email.as_str()
    );

    // A support rotation needs a workspace admin's second approval too.
    let staff = staff_with_phone(server).await;
    let ticket = unique("T2P");
    let started = support_rotate(&staff, &owner.ws.slug, &ticket).await;
    let id = id_of(&started);
    let number = number_of(&started);
    approve_support(&staff.phone, &id, number, &owner.ws.slug, &ticket).await;
    problem(
        staff
            .browser
            .post(&format!("/v1/support/challenges/{id}/release"))
            .await,
        &[409],
    )
    .await;
    approve_support(&admin.phone, &id, number, &owner.ws.slug, &ticket).await;
    json_body(
        staff
            .browser
            .post(&format!("/v1/support/challenges/{id}/release"))
            .await,
        200,
    )
    .await;
    assert_eq!(scim_status(server, Some(new)).await, 401);

    // Alone in a workspace, the rule cannot be met: a clear 409, no challenge.
    let lone = owner_with_phone(server).await;
    let resp = lone
        .browser
        .request(reqwest::Method::PUT, "/v1/console/policy")
        .json(&policy)
        .send()
        .await
        .unwrap();
    json_body(resp, 200).await;
    let refused = problem(lone.browser.rotate().await, &[409]).await;
    assert!(
        refused["detail"].as_str().unwrap().contains("two-person"),
        "{refused}"
    );
    assert!(lone.phone.challenges().await.is_empty());
}

#[tokio::test]
async fn a_not_me_denial_alerts_the_workspace_owners() {
    let server = shared().await;
    let owner = owner_with_phone(server).await;
    let admin = user_with_phone(server, &owner.ws, "admin").await;
    let id = id_of(&admin.browser.start("reveal").await);
    admin.phone.deny(&id, Some("not_me")).await;
    problem(admin.browser.reveal().await, &[429]).await;
    let alerts = audit_of(&owner, "security.suspected_attack").await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let detail = &alerts[0]["detail"];
    assert_eq!(alerts[0]["actor"], admin.email.as_str());
    assert_eq!(detail["challenge"], id.as_str());
    assert_eq!(detail["owners_alerted"], json!([owner.email]));
    assert_eq!(detail["reported_by"], admin.email.as_str());
    utc_time(detail, "blocked_until");
    // The owner is not blocked by someone else's report.
    owner.browser.start("reveal").await;
}

#[tokio::test]
async fn a_removed_staff_member_is_out_at_once() {
    let server = shared().await;
    let owner = owner_with_phone(server).await;
    let staff = staff_with_phone(server).await;
    let listed = server.cli(&["staff", "list"]);
    assert!(
        listed["staff"]
            .as_array()
            .unwrap()
            .contains(&json!({"email": staff.email})),
        "{listed}"
    );
    let ticket = unique("GONE");
    let started = support_rotate(&staff, &owner.ws.slug, &ticket).await;
    let id = id_of(&started);

    let removed = server.cli(&["staff", "remove", "--email", &staff.email]);
    assert_eq!(removed["removed"], true);
    // The session, the phone and the password are all gone with the account.
    problem(
        staff
            .browser
            .get(&format!("/v1/support/workspaces/{}", owner.ws.slug))
            .await,
        &[401],
    )
    .await;
    problem(
        staff
            .phone
            .get_challenges_with(Some(&staff.phone.auth()))
            .await,
        &[401],
    )
    .await;
    let jws = support_decision(
        &staff.phone,
        &json!({"id": id, "nonce": "x", "action": "scim_token.support_rotate"}),
        number_of(&started),
        Some((&owner.ws.slug, &ticket)),
    );
    problem(staff.phone.send_decision(&id, &jws).await, &[401]).await;
    let b = Browser::new(server);
    problem(
        b.post_json(
            "/v1/support/session",
            &json!({"email": staff.email, "password": staff.password}),
        )
        .await,
        &[401],
    )
    .await;
    let listed = server.cli(&["staff", "list"]);
    assert!(!listed.to_string().contains(&staff.email), "{listed}");
    let (stdout, stderr) = server.cli_fails(&["staff", "remove", "--email", &staff.email]);
    assert!(
        stdout.trim().is_empty() && stderr.contains("no staff member"),
        "{stderr}"
    );
}

#[tokio::test]
async fn staff_add_a_second_phone_only_through_the_first_and_reauthenticate_for_a_first() {
    let server = shared().await;
    let staff = staff_with_phone(server).await;
    // A stolen support cookie gets a prompt on the staff member's phone, not a code.
    let offer = staff
        .browser
        .enrollment_approved_at("/v1/support", &staff.phone)
        .await;
    let mut second = Phone::new(server);
    second.enroll(offer["code"].as_str().unwrap()).await;

    // Without phones and past the reauth window, the password opens it again.
    let other = format!("{}@support.example.com", unique("staff"));
    let out = server.cli(&["staff", "add", "--email", &other]);
    let password = out["password"].as_str().unwrap().to_owned();
    let browser = staff_sign_in(server, &other, &password).await;
    server
        .age_session_authentication("_staff", &other, 601)
        .await;
    let body = problem(
        browser.post("/v1/support/devices/enrollments").await,
        &[403],
    )
    .await;
    assert_eq!(body["reauth_required"], true, "{body}");
    let resp = browser
        .post_json("/v1/support/session/reauth", &json!({"password": password}))
        .await;
    assert_eq!(resp.status().as_u16(), 204);
    json_body(browser.post("/v1/support/devices/enrollments").await, 201).await;
}

/// What the support page reads (issue 16): who is signed in, and their own phones; nobody else's,
/// and never with a console cookie.
#[tokio::test]
async fn the_support_page_reads_who_is_signed_in_and_their_own_phones() {
    let server = shared().await;
    let staff = staff_with_phone(server).await;
    let me = json_body(staff.browser.get("/v1/support/session").await, 200).await;
    assert_eq!(me, json!({ "email": staff.email }));
    let devices = json_body(staff.browser.get("/v1/support/devices").await, 200).await;
    let devices = devices["devices"].as_array().expect("devices").clone();
    assert_eq!(devices.len(), 1, "{devices:?}");
    assert_eq!(devices[0]["id"], staff.phone.device_id.as_str());

    let nobody = Browser::new(server);
    problem(nobody.get("/v1/support/session").await, &[401]).await;
    problem(nobody.get("/v1/support/devices").await, &[401]).await;
    // A console session is nobody here, and a support session nobody in the console.
    let owner = owner_with_phone(server).await;
    problem(owner.browser.get("/v1/support/session").await, &[401]).await;
    problem(owner.browser.get("/v1/support/devices").await, &[401]).await;
    problem(staff.browser.get("/v1/console/devices").await, &[401]).await;
    // Signed out, the cookie reads nothing.
    assert_eq!(
        staff
            .browser
            .delete("/v1/support/session")
            .await
            .status()
            .as_u16(),
        204
    );
    problem(staff.browser.get("/v1/support/session").await, &[401]).await;
}
