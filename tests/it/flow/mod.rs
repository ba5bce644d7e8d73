//! The step-up "View Token" flow, end to end, against the real binary: a browser on the console API
//! and an independent phone (its own P-256 key) on the mobile API, both over HTTP on 127.0.0.1.
//! Most tests share one server and isolate themselves with a workspace of their own; the tests that
//! need a short TTL, trip the login slowdown or restart the server, start their own.

mod edge;
mod lifecycle;
mod members;
mod resilience;
mod security;

use crate::support;

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};
use support::{
    assert_about, assert_token_shape, json_body,
    phone::{jwk_of, random_id, sign_jws, unsigned_jws, BadAuth},
    problem, scim_status,
    server::shared,
    unix_now, utc_time, Browser, Phone, ServerOptions, TestServer, Workspace, WAIT,
};

/// A console user with a logged-in browser and one enrolled phone.
struct Person {
    ws: Workspace,
    email: String,
    password: String,
    browser: Browser,
    phone: Phone,
}

async fn enrolled_phone(server: &TestServer, browser: &Browser) -> Phone {
    let enrollment = browser.enrollment().await;
    let mut phone = Phone::new(server);
    phone
        .enroll(enrollment["code"].as_str().expect("code"))
        .await;
    phone
}

/// Another phone for someone who has one: added through a `device.enroll` step-up on `phone`.
async fn second_phone(server: &TestServer, browser: &Browser, phone: &Phone) -> Phone {
    let offer = browser.enrollment_approved_by(phone).await;
    let mut second = Phone::new(server);
    second.enroll(offer["code"].as_str().expect("code")).await;
    second
}

async fn owner_with_phone(server: &TestServer) -> Person {
    let ws = server.create_workspace();
    let browser = Browser::logged_in(server, &ws.slug, &ws.owner_email, &ws.owner_password).await;
    let phone = enrolled_phone(server, &browser).await;
    Person {
        email: ws.owner_email.clone(),
        password: ws.owner_password.clone(),
        ws,
        browser,
        phone,
    }
}

async fn user_with_phone(server: &TestServer, ws: &Workspace, role: &str) -> Person {
    let (email, password) = server.add_member(ws, role);
    let browser = Browser::logged_in(server, &ws.slug, &email, &password).await;
    let phone = enrolled_phone(server, &browser).await;
    Person {
        ws: ws.clone(),
        email,
        password,
        browser,
        phone,
    }
}

/// The workspace's audit entries of `kind`, newest first, as its owner or an admin reads them.
pub(super) async fn audit_of(owner: &Browser, kind: &str) -> Vec<Value> {
    let page = json_body(
        owner
            .get(&format!("/v1/console/audit?kind={kind}&limit=200"))
            .await,
        200,
    )
    .await;
    page["entries"].as_array().expect("entries").clone()
}

/// The id of the person with this e-mail, from the members list.
pub(super) async fn member_id(owner: &Browser, email: &str) -> i64 {
    let list = json_body(owner.get("/v1/console/members").await, 200).await;
    list["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["email"] == email)
        .unwrap_or_else(|| panic!("{email} not in {list}"))["id"]
        .as_i64()
        .expect("id")
}

fn id_of(challenge: &Value) -> String {
    challenge["challenge_id"]
        .as_str()
        .expect("challenge_id")
        .to_string()
}

fn number_of(challenge: &Value) -> i64 {
    challenge["number"].as_i64().expect("number")
}

/// Starts `verb` (reveal|rotate) and has the phone approve it; returns (challenge id, number).
async fn approved(p: &Person, verb: &str) -> (String, i64) {
    let ch = p.browser.start(verb).await;
    let (id, number) = (id_of(&ch), number_of(&ch));
    p.phone.approve(&id, number).await;
    (id, number)
}

/// The whole step-up round trip; returns the release answer.
async fn released(p: &Person, verb: &str) -> Value {
    let (id, _) = approved(p, verb).await;
    json_body(p.browser.release(&id).await, 200).await
}

/// A random UUID-shaped id, for "no such challenge / device".
fn random_uuid() -> String {
    let hex: String = (0..32)
        .map(|_| format!("{:x}", rand::random::<u8>() % 16))
        .collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..]
    )
}

fn assert_session_cookie(set_cookie: &[String]) {
    assert!(!set_cookie.is_empty(), "login set no cookie");
    for header in set_cookie {
        let attrs: Vec<String> = header
            .split(';')
            .skip(1)
            .map(|a| a.trim().to_ascii_lowercase())
            .collect();
        assert!(
            attrs.iter().any(|a| a == "httponly"),
            "cookie not HttpOnly: {header}"
        );
        assert!(
            attrs.iter().any(|a| a == "samesite=strict"),
            "cookie not SameSite=Strict: {header}"
        );
        assert!(
            !attrs.iter().any(|a| a == "secure"),
            "cookie is Secure on an http public URL: {header}"
        );
    }
}

/// A problem body without the per-request parts, to compare two answers.
fn problem_shape(body: &Value) -> Value {
    let mut b = body.clone();
    if let Some(o) = b.as_object_mut() {
        o.remove("instance");
        o.remove("request_id");
    }
    b
}

/// The problem's shape with `id` blanked out, so answers about two ids compare.
fn without(body: &Value, id: &str) -> Value {
    serde_json::from_str(&problem_shape(body).to_string().replace(id, "{id}")).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The happy path
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn view_token_round_trip_as_browser_and_phone() {
    let server = shared().await;
    let ws = server.create_workspace();

    // Login.
    let mut browser = Browser::new(server);
    let login = browser
        .login_ok(&ws.slug, &ws.owner_email, &ws.owner_password)
        .await;
    assert_eq!(login["email"], ws.owner_email.as_str(), "{login}");
    assert_eq!(login["role"], "owner", "{login}");
    assert_eq!(login["workspace"], ws.slug.as_str(), "{login}");
    assert_session_cookie(&browser.set_cookie);
    let me = json_body(browser.get("/v1/console/session").await, 200).await;
    assert_eq!(me["email"], ws.owner_email.as_str(), "{me}");
    assert_eq!(me["role"], "owner", "{me}");
    assert_eq!(me["workspace"], ws.slug.as_str(), "{me}");
    assert_eq!(me["workspace_name"], ws.name.as_str(), "{me}");
    assert_eq!(
        me["scim_base_url"],
        format!("{}/v1/scim/v2", server.public_url),
        "{me}"
    );

    // Enrollment of the phone.
    let devices = json_body(browser.get("/v1/console/devices").await, 200).await;
    assert_eq!(devices["devices"], json!([]), "{devices}");
    let enrollment = browser.enrollment().await;
    let code = enrollment["code"].as_str().expect("code").to_string();
    let uri = enrollment["uri"].as_str().expect("uri");
    assert!(
        uri.starts_with("assent://enroll?"),
        "enrollment uri {uri:?}"
    );
    assert!(
        uri.contains(&code),
        "enrollment uri {uri:?} does not carry the code"
    );
    assert_about(
        utc_time(&enrollment, "expires_at"),
        600,
        30,
        "enrollment expires_at",
    );
    let mut phone = Phone::new(server);
    let enrolled = phone.enroll(&code).await;
    assert_eq!(
        enrolled["audience"],
        server.public_url.as_str(),
        "audience is ASSENT_PUBLIC_URL: {enrolled}"
    );
    let devices = json_body(browser.get("/v1/console/devices").await, 200).await;
    let list = devices["devices"].as_array().expect("devices");
    assert_eq!(list.len(), 1, "{devices}");
    assert_eq!(list[0]["id"], phone.device_id.as_str(), "{devices}");
    assert_eq!(list[0]["name"], "Pixel 8", "{devices}");
    assert_eq!(list[0]["platform"], "fcm", "{devices}");
    assert_about(utc_time(&list[0], "created_at"), 0, 30, "device created_at");
    assert!(
        list[0]["last_seen_at"].is_null() || list[0]["last_seen_at"].is_string(),
        "{devices}"
    );

    // Nothing waits for the phone yet. Keep this device JWS: it must never reach a log.
    let auth = phone.auth();
    let none = json_body(phone.get_challenges_with(Some(&auth)).await, 200).await;
    assert_eq!(none["challenges"], json!([]), "{none}");

    // View Token.
    let ch = browser.start("reveal").await;
    let id = id_of(&ch);
    let number = number_of(&ch);
    assert_eq!(ch["notified_devices"], 0, "no push configured: {ch}");
    let expires_at = utc_time(&ch, "expires_at");
    assert_about(expires_at, 120, 10, "challenge expires_at");
    let got = browser.challenge(&id).await;
    assert_eq!(got["action"], "scim_token.reveal", "{got}");
    assert_eq!(got["status"], "pending", "{got}");
    assert_eq!(
        utc_time(&got, "expires_at").unix_timestamp(),
        expires_at.unix_timestamp(),
        "{got}"
    );

    // The browser waits on the stream.
    let mut sse = browser.events(&id).await;
    assert_eq!(sse.next_status().await, "pending");

    // The phone polls and finds it.
    let listed = phone.pending(&id).await;
    assert_eq!(listed["action"], "scim_token.reveal", "{listed}");
    assert!(
        listed.get("number").is_none(),
        "the phone is told the answer: {listed}"
    );
    let nonce = listed["nonce"].as_str().expect("nonce");
    assert!(
        nonce.len() >= 32,
        "a 32-byte nonce cannot fit in {} characters",
        nonce.len()
    );
    let choices: Vec<i64> = listed["number_choices"]
        .as_array()
        .expect("number_choices")
        .iter()
        .map(|n| n.as_i64().unwrap())
        .collect();
    assert_eq!(choices.len(), 3, "{listed}");
    assert!(
        choices.contains(&number),
        "the console's number {number} is not among {choices:?}"
    );
    assert!(
        choices[0] != choices[1] && choices[1] != choices[2] && choices[0] != choices[2],
        "{choices:?}"
    );
    assert!(choices.iter().all(|n| (10..=99).contains(n)), "{choices:?}");
    assert_eq!(
        listed["workspace"],
        json!({"slug": ws.slug, "name": ws.name}),
        "{listed}"
    );
    assert_eq!(
        listed["requested_by"]["email"],
        ws.owner_email.as_str(),
        "{listed}"
    );
    assert_eq!(listed["context"]["ip"], "127.0.0.1", "{listed}");
    assert_eq!(
        listed["context"]["user_agent"],
        support::browser::BROWSER_UA,
        "{listed}"
    );
    assert_about(utc_time(&listed, "created_at"), 0, 30, "listed created_at");
    assert_eq!(
        utc_time(&listed, "expires_at").unix_timestamp(),
        expires_at.unix_timestamp(),
        "{listed}"
    );
    assert!(
        !listed.to_string().contains("assent_scim_"),
        "the phone's list holds a token: {listed}"
    );

    // The person picks the matching number and approves.
    let (h, c) = phone.decision_parts(&listed, "approve", number);
    let decision = phone.sign(&h, &c);
    let answer = json_body(phone.send_decision(&id, &decision).await, 200).await;
    assert_eq!(answer, json!({"status": "approved"}));
    assert_eq!(sse.next_status().await, "approved");
    sse.expect_end().await;
    assert_eq!(browser.status(&id).await, "approved");
    assert!(
        phone.find(&id).await.is_none(),
        "an approved challenge is still listed as pending"
    );

    // A second, well-signed decision is too late.
    let (h, c) = phone.decision_parts(&listed, "approve", number);
    problem(phone.send_decision(&id, &phone.sign(&h, &c)).await, &[409]).await;

    // Release: the token, once.
    let release = json_body(browser.release(&id).await, 200).await;
    let token = release["token"].as_str().expect("token").to_string();
    assert_token_shape(&token);
    assert_eq!(release["action"], "scim_token.reveal", "{release}");
    let token_created_at = utc_time(&release, "token_created_at");
    assert!(
        token_created_at.unix_timestamp() <= unix_now() + 1,
        "token_created_at in the future"
    );
    let gone = problem(browser.release(&id).await, &[410]).await;
    assert!(
        !gone.to_string().contains(&token),
        "the 410 echoes the token"
    );
    assert_eq!(browser.status(&id).await, "released");
    let mut sse = browser.events(&id).await;
    assert_eq!(sse.next_status().await, "released");
    sse.expect_end().await;

    // The token is the workspace's SCIM token.
    assert_eq!(scim_status(server, Some(&token)).await, 200);
    assert_eq!(scim_status(server, None).await, 401);
    assert_eq!(
        scim_status(
            server,
            Some("assent_scim_0000000000000000000000000000000000000000000000")
        )
        .await,
        401
    );

    // Viewing again shows the same token (reveal does not rotate).
    let p = Person {
        ws: ws.clone(),
        email: ws.owner_email.clone(),
        password: ws.owner_password.clone(),
        browser,
        phone,
    };
    let again = released(&p, "reveal").await;
    assert_eq!(
        again["token"],
        token.as_str(),
        "a second reveal shows another token"
    );
    assert_eq!(utc_time(&again, "token_created_at"), token_created_at);
    let devices = json_body(p.browser.get("/v1/console/devices").await, 200).await;
    assert_about(
        utc_time(&devices["devices"][0], "last_seen_at"),
        0,
        30,
        "device last_seen_at after use",
    );

    // No secret in the logs, none in clear in the database.
    let cookies = p.browser.cookie_values();
    let mut secrets: Vec<(&str, &str)> = vec![
        ("SCIM token", token.as_str()),
        ("password", ws.owner_password.as_str()),
        ("enrollment code", code.as_str()),
        ("device JWS", auth.trim_start_matches("Device ")),
        ("decision JWS", decision.as_str()),
    ];
    for c in &cookies {
        secrets.push(("session cookie", c.as_str()));
    }
    server.assert_log_free_of(&secrets);
    let mut at_rest: Vec<(&str, &str)> = vec![
        ("SCIM token", token.as_str()),
        ("password", ws.owner_password.as_str()),
    ];
    for c in &cookies {
        at_rest.push(("session cookie", c.as_str()));
    }
    server.assert_db_free_of(&at_rest).await;
}

#[tokio::test]
async fn regenerate_makes_a_new_token_and_the_old_one_dies_on_approval() {
    let server = shared().await;
    let p = owner_with_phone(server).await;
    let first = released(&p, "reveal").await;
    let old = first["token"].as_str().unwrap().to_string();
    assert_eq!(scim_status(server, Some(&old)).await, 200);

    let ch = p.browser.start("rotate").await;
    let id = id_of(&ch);
    let got = p.browser.challenge(&id).await;
    assert_eq!(got["action"], "scim_token.rotate", "{got}");
    assert_eq!(p.phone.pending(&id).await["action"], "scim_token.rotate");
    assert_eq!(
        scim_status(server, Some(&old)).await,
        200,
        "the token changed before the phone approved"
    );

    let mut sse = p.browser.events(&id).await;
    assert_eq!(sse.next_status().await, "pending");
    p.phone.approve(&id, number_of(&ch)).await;
    // "The new token is made when the phone approves, and the old one stops authenticating at once."
    assert_eq!(
        scim_status(server, Some(&old)).await,
        401,
        "the old token still works after the approval"
    );
    assert_eq!(sse.next_status().await, "approved");
    sse.expect_end().await;

    let rotated = json_body(p.browser.release(&id).await, 200).await;
    let new = rotated["token"].as_str().unwrap().to_string();
    assert_token_shape(&new);
    assert_ne!(new, old);
    assert_eq!(rotated["action"], "scim_token.rotate", "{rotated}");
    assert!(utc_time(&rotated, "token_created_at") >= utc_time(&first, "token_created_at"));
    problem(p.browser.release(&id).await, &[410]).await;
    assert_eq!(scim_status(server, Some(&new)).await, 200);
    assert_eq!(scim_status(server, Some(&old)).await, 401);

    // View Token now shows the new one.
    let shown = released(&p, "reveal").await;
    assert_eq!(shown["token"], new.as_str());

    server.assert_log_free_of(&[("old token", &old), ("new token", &new)]);
    server
        .assert_db_free_of(&[("old token", &old), ("new token", &new)])
        .await;
}

// ---------------------------------------------------------------------------------------------
// Sessions and roles
// ---------------------------------------------------------------------------------------------

/// Own server: repeated failures slow the account (and the IP) down, which would disturb the others.
/// Its public URL is https (a TLS proxy in front), so the cookie must be Secure there.
#[tokio::test]
async fn login_answers_one_401_for_any_bad_part_and_slows_repeated_failures() {
    let server = TestServer::start(ServerOptions {
        public_url: Some("https://assent.example.test".into()),
        ..ServerOptions::default()
    })
    .await;
    let ws = server.create_workspace();
    let other = server.create_workspace();

    // The right credentials work (checked first, before any slowdown), with a Secure cookie.
    let mut ok = Browser::new(&server);
    ok.login_ok(&ws.slug, &ws.owner_email, &ws.owner_password)
        .await;
    for header in &ok.set_cookie {
        let attrs: Vec<String> = header
            .split(';')
            .skip(1)
            .map(|a| a.trim().to_ascii_lowercase())
            .collect();
        assert!(
            attrs.iter().any(|a| a == "secure"),
            "https public URL but the cookie is not Secure: {header}"
        );
        assert!(
            attrs.iter().any(|a| a == "httponly") && attrs.iter().any(|a| a == "samesite=strict"),
            "{header}"
        );
    }

    let cases = [
        (
            "wrong password",
            ws.slug.as_str(),
            ws.owner_email.as_str(),
            "not-the-password-123",
        ),
        (
            "unknown workspace",
            "no-such-workspace",
            ws.owner_email.as_str(),
            ws.owner_password.as_str(),
        ),
        (
            "unknown email",
            ws.slug.as_str(),
            "nobody@nowhere.example.com",
            ws.owner_password.as_str(),
        ),
        (
            "another workspace",
            other.slug.as_str(),
            ws.owner_email.as_str(),
            ws.owner_password.as_str(),
        ),
    ];
    let mut shapes = Vec::new();
    for (what, workspace, email, password) in cases {
        let mut b = Browser::new(&server);
        let resp = b.login(workspace, email, password).await;
        assert!(
            resp.headers().get("set-cookie").is_none(),
            "{what}: a failed login set a cookie"
        );
        let body = problem(resp, &[401]).await;
        assert!(
            !body.to_string().contains(password),
            "{what}: the 401 echoes the password"
        );
        shapes.push((what, problem_shape(&body)));
    }
    for (what, shape) in &shapes[1..] {
        assert_eq!(
            shape, &shapes[0].1,
            "{what} answers differently from {}",
            shapes[0].0
        );
    }

    // Keep failing on one account: the server must slow down (429, or a growing delay).
    let mut b = Browser::new(&server);
    let started = Instant::now();
    let resp = b.login(&ws.slug, &ws.owner_email, "wrong-again-000").await;
    let baseline = started.elapsed();
    let first_status = resp.status().as_u16();
    let mut slowed = first_status == 429;
    for attempt in 0..25 {
        if slowed {
            break;
        }
        let started = Instant::now();
        let resp = b
            .login(&ws.slug, &ws.owner_email, &format!("wrong-again-{attempt}"))
            .await;
        let took = started.elapsed();
        match resp.status().as_u16() {
            429 => {
                let retry = resp
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string());
                assert!(retry.is_some(), "a 429 without Retry-After");
                problem(resp, &[429]).await;
                eprintln!(
                    "login slowdown: 429 (Retry-After {retry:?}) after {} failures",
                    attempt + 6
                );
                slowed = true;
            }
            401 => {
                problem(resp, &[401]).await;
                if took > baseline * 2 && took > baseline + Duration::from_millis(400) {
                    eprintln!(
                        "login slowdown: {took:?} against {baseline:?} after {} failures",
                        attempt + 6
                    );
                    slowed = true;
                }
            }
            other => panic!("failed login answered {other}"),
        }
    }
    assert!(
        slowed,
        "27 failed logins in a row were neither refused with 429 nor slowed down"
    );
    server.assert_log_free_of(&[
        ("password", &ws.owner_password),
        ("password", &other.owner_password),
    ]);
}

/// Own server: failures spread over many accounts, none failing twice, still slow the IP down.
#[tokio::test]
async fn login_failures_across_accounts_slow_the_ip_down() {
    let server = TestServer::start(ServerOptions::default()).await;
    let ws = server.create_workspace();
    let mut slowed = None;
    let mut baseline = None;
    for attempt in 0..60 {
        let b = Browser::new(&server);
        let email = format!("guess{attempt}@{}.example.com", ws.slug);
        let started = Instant::now();
        // A client-chosen X-Forwarded-For must not give each guess a fresh address.
        let resp = b
            .request(Method::POST, "/v1/console/session")
            .header("X-Forwarded-For", format!("198.51.100.{}", attempt % 250))
            .json(&json!({"workspace": ws.slug, "email": email, "password": "a-guess-1234"}))
            .send()
            .await
            .unwrap();
        let took = started.elapsed();
        let base = *baseline.get_or_insert(took);
        match resp.status().as_u16() {
            429 => {
                assert!(
                    resp.headers().get("retry-after").is_some(),
                    "429 without Retry-After"
                );
                problem(resp, &[429]).await;
                slowed = Some(attempt + 1);
                break;
            }
            401 => {
                problem(resp, &[401]).await;
                if took > base * 2 && took > base + Duration::from_millis(400) {
                    slowed = Some(attempt + 1);
                    break;
                }
            }
            other => panic!("failed login answered {other}"),
        }
    }
    let after = slowed.expect("60 failed logins from one IP on 60 accounts were never slowed down");
    eprintln!("IP slowdown after {after} failures");
}

#[tokio::test]
async fn logout_ends_only_that_session() {
    let server = shared().await;
    let ws = server.create_workspace();
    let a = Browser::logged_in(server, &ws.slug, &ws.owner_email, &ws.owner_password).await;
    let b = Browser::logged_in(server, &ws.slug, &ws.owner_email, &ws.owner_password).await;
    assert_ne!(
        a.cookie_values(),
        b.cookie_values(),
        "two logins share a session id"
    );

    let out = a.delete("/v1/console/session").await;
    assert!(
        out.status().is_success(),
        "logout answered {}",
        out.status()
    );
    problem(a.get("/v1/console/session").await, &[401]).await;
    problem(a.post("/v1/console/devices/enrollments").await, &[401]).await;
    problem(a.reveal().await, &[401]).await;
    json_body(b.get("/v1/console/session").await, 200).await;
}

#[tokio::test]
async fn console_routes_need_a_valid_session() {
    let server = shared().await;
    let ws = server.create_workspace();
    let real = Browser::logged_in(server, &ws.slug, &ws.owner_email, &ws.owner_password).await;
    let anonymous = Browser::new(server);
    let mut forged = Browser::new(server);
    forged.cookies = real
        .cookies
        .iter()
        .map(|(n, _)| (n.clone(), random_id()))
        .collect();
    let id = random_uuid();
    let routes = [
        (Method::GET, "/v1/console/session".to_string()),
        (Method::POST, "/v1/console/devices/enrollments".to_string()),
        (Method::GET, "/v1/console/devices".to_string()),
        (Method::DELETE, format!("/v1/console/devices/{id}")),
        (Method::POST, "/v1/console/scim-token/reveal".to_string()),
        (Method::POST, "/v1/console/scim-token/rotate".to_string()),
        (Method::GET, format!("/v1/console/challenges/{id}")),
        (Method::GET, format!("/v1/console/challenges/{id}/events")),
        (Method::POST, format!("/v1/console/challenges/{id}/release")),
        (Method::POST, "/v1/console/session/reauth".to_string()),
        (Method::GET, "/v1/console/members".to_string()),
        (Method::DELETE, "/v1/console/members/1/devices".to_string()),
        (Method::POST, "/v1/support/session/reauth".to_string()),
    ];
    for browser in [&anonymous, &forged] {
        for (method, path) in &routes {
            let resp = browser.request(method.clone(), path).send().await.unwrap();
            problem(resp, &[401]).await;
        }
    }
}

#[tokio::test]
async fn member_gets_403_on_reveal_and_rotate_with_or_without_a_device() {
    let server = shared().await;
    let ws = server.create_workspace();
    let (email, password) = server.add_member(&ws, "member");
    let mut browser = Browser::new(server);
    let login = browser.login_ok(&ws.slug, &email, &password).await;
    assert_eq!(login["role"], "member", "{login}");
    problem(browser.reveal().await, &[403]).await;
    problem(browser.rotate().await, &[403]).await;

    // The role is checked first: a device changes nothing.
    let resp = browser.post("/v1/console/devices/enrollments").await;
    if resp.status().as_u16() == 201 {
        let enrollment: Value = resp.json().await.unwrap();
        let mut phone = Phone::new(server);
        phone.enroll(enrollment["code"].as_str().unwrap()).await;
        problem(browser.reveal().await, &[403]).await;
        problem(browser.rotate().await, &[403]).await;
        assert!(phone.challenges().await.is_empty());
    } else {
        problem(resp, &[403]).await;
    }
}

#[tokio::test]
async fn admin_and_owner_without_a_device_get_409() {
    let server = shared().await;
    let ws = server.create_workspace();
    let owner = Browser::logged_in(server, &ws.slug, &ws.owner_email, &ws.owner_password).await;
    problem(owner.reveal().await, &[409]).await;
    problem(owner.rotate().await, &[409]).await;

    let (email, password) = server.add_member(&ws, "admin");
    let mut admin = Browser::new(server);
    assert_eq!(
        admin.login_ok(&ws.slug, &email, &password).await["role"],
        "admin"
    );
    problem(admin.reveal().await, &[409]).await;
    problem(admin.rotate().await, &[409]).await;

    // With a phone the admin may ask (and the owner's lack of a device stays the owner's).
    let _phone = enrolled_phone(server, &admin).await;
    admin.start("reveal").await;
    admin.start("rotate").await;
    problem(owner.reveal().await, &[409]).await;
}

// ---------------------------------------------------------------------------------------------
// Enrollment
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn enrollment_code_is_single_use_and_an_unknown_one_is_404() {
    let server = shared().await;
    let ws = server.create_workspace();
    let browser = Browser::logged_in(server, &ws.slug, &ws.owner_email, &ws.owner_password).await;
    let e1 = browser.enrollment().await;
    let e2 = browser.enrollment().await;
    assert_ne!(e1["code"], e2["code"], "two enrollments gave the same code");
    let code = e1["code"].as_str().unwrap();

    let mut first = Phone::new(server);
    first.enroll(code).await;
    let second = Phone::new(server);
    problem(
        second.enroll_with(&second.enrollment_body(code)).await,
        &[410],
    )
    .await;
    problem(
        second
            .enroll_with(&second.enrollment_body(&random_id()))
            .await,
        &[404],
    )
    .await;

    // The second code was given for a first phone, without any phone's approval: now that a
    // phone is enrolled it adds none (and is spent).
    let late = Phone::new(server);
    problem(
        late.enroll_with(&late.enrollment_body(e2["code"].as_str().unwrap()))
            .await,
        &[410],
    )
    .await;
    let devices = json_body(browser.get("/v1/console/devices").await, 200).await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1, "{devices}");

    // An apns phone enrolls with its environment, through the first phone's approval.
    let e3 = browser.enrollment_approved_by(&first).await;
    let mut apns = Phone::new(server);
    let mut body = apns.enrollment_body(e3["code"].as_str().unwrap());
    body["platform"] = json!("apns");
    body["apns_environment"] = json!("sandbox");
    let answer = json_body(apns.enroll_with(&body).await, 201).await;
    apns.device_id = answer["device_id"].as_str().unwrap().to_string();
    apns.audience = answer["audience"].as_str().unwrap().to_string();
    assert!(apns.challenges().await.is_empty());
    let devices = json_body(browser.get("/v1/console/devices").await, 200).await;
    let platforms: Vec<&str> = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["platform"].as_str().unwrap())
        .collect();
    assert_eq!(platforms.len(), 2, "{devices}");
    assert!(
        platforms.contains(&"apns") && platforms.contains(&"fcm"),
        "{devices}"
    );
    server.assert_log_free_of(&[
        ("enrollment code", code),
        ("enrollment code", e2["code"].as_str().unwrap()),
        ("enrollment code", e3["code"].as_str().unwrap()),
    ]);
}

#[tokio::test]
async fn an_expired_enrollment_code_is_410() {
    let server = shared().await;
    let ws = server.create_workspace();
    let browser = Browser::logged_in(server, &ws.slug, &ws.owner_email, &ws.owner_password).await;
    let code = browser.enrollment().await["code"]
        .as_str()
        .unwrap()
        .to_string();
    server
        .age_enrollment_codes(&ws.slug, &ws.owner_email, 601)
        .await;
    let phone = Phone::new(server);
    problem(
        phone.enroll_with(&phone.enrollment_body(&code)).await,
        &[410],
    )
    .await;
    let devices = json_body(browser.get("/v1/console/devices").await, 200).await;
    assert_eq!(devices["devices"], json!([]));
    // A fresh code still works.
    enrolled_phone(server, &browser).await;
}

#[tokio::test]
async fn enrollment_refuses_keys_off_the_curve_and_bad_fields() {
    let server = shared().await;
    let ws = server.create_workspace();
    let browser = Browser::logged_in(server, &ws.slug, &ws.owner_email, &ws.owner_password).await;
    let phone = Phone::new(server);
    let good = phone.jwk();
    let random32 = || {
        let bytes: [u8; 32] = rand::random();
        support::phone::b64(&bytes)
    };
    type Mutate = Box<dyn Fn(&mut Value)>;
    let bad_bodies: Vec<(&str, Mutate)> = vec![
        (
            "point not on P-256",
            Box::new(move |b: &mut Value| {
                b["public_key"]["x"] = json!(random32());
                b["public_key"]["y"] = json!(random32());
            }),
        ),
        (
            "y of another point",
            Box::new(|b: &mut Value| {
                let other = Phone::new_key_jwk();
                b["public_key"]["y"] = other["y"].clone();
            }),
        ),
        (
            "curve P-384",
            Box::new(|b: &mut Value| b["public_key"]["crv"] = json!("P-384")),
        ),
        (
            "kty RSA",
            Box::new(|b: &mut Value| b["public_key"]["kty"] = json!("RSA")),
        ),
        (
            "short x",
            Box::new(|b: &mut Value| b["public_key"]["x"] = json!(support::phone::b64(&[1u8; 31]))),
        ),
        (
            "no key",
            Box::new(|b: &mut Value| {
                b.as_object_mut().unwrap().remove("public_key");
            }),
        ),
        (
            "unknown platform",
            Box::new(|b: &mut Value| b["platform"] = json!("windows-phone")),
        ),
    ];
    for (what, mutate) in bad_bodies {
        let code = browser.enrollment().await["code"]
            .as_str()
            .unwrap()
            .to_string();
        let mut body = phone.enrollment_body(&code);
        assert_eq!(body["public_key"], good);
        mutate(&mut body);
        let resp = phone.enroll_with(&body).await;
        let status = resp.status().as_u16();
        assert!(status == 400 || status == 422, "{what}: answered {status}");
        problem(resp, &[400, 422]).await;
    }
    let devices = json_body(browser.get("/v1/console/devices").await, 200).await;
    assert_eq!(
        devices["devices"],
        json!([]),
        "a bad enrollment left a device: {devices}"
    );
}

// ---------------------------------------------------------------------------------------------
// Device authentication
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn device_auth_refuses_forged_expired_long_lived_misdirected_and_replayed_jws() {
    let server = shared().await;
    let p = owner_with_phone(server).await;
    let phone = &p.phone;
    json_body(phone.get_challenges_with(Some(&phone.auth())).await, 200).await;

    for kind in [
        BadAuth::AlgNone,
        BadAuth::OtherKey,
        BadAuth::Expired,
        BadAuth::TooLongLived,
        BadAuth::WrongAudience,
        BadAuth::WrongTyp,
        BadAuth::UnknownKid,
        BadAuth::IssNotKid,
        BadAuth::IssuedInTheFuture,
        BadAuth::TamperedClaims,
        BadAuth::EmbeddedJwk,
        BadAuth::Hs256WithPublicKey,
        BadAuth::NoKid,
        BadAuth::NoJti,
        BadAuth::NoExp,
        BadAuth::NoIat,
    ] {
        let resp = phone.get_challenges_with(Some(&phone.bad_auth(kind))).await;
        assert_eq!(resp.status().as_u16(), 401, "{kind:?} was not refused");
        problem(resp, &[401]).await;
    }
    for garbage in [
        None,
        Some("Device"),
        Some("Device not.a.jws"),
        Some("Device a.b.c"),
    ] {
        problem(phone.get_challenges_with(garbage).await, &[401]).await;
    }
    let bearer = phone.auth().replace("Device ", "Bearer ");
    problem(phone.get_challenges_with(Some(&bearer)).await, &[401]).await;

    // Replay: the same JWS twice, then a new JWS that reuses the jti.
    let (h, c) = phone.auth_header_and_claims();
    let auth = format!("Device {}", phone.sign(&h, &c));
    json_body(phone.get_challenges_with(Some(&auth)).await, 200).await;
    problem(phone.get_challenges_with(Some(&auth)).await, &[401]).await;
    let mut c2 = c.clone();
    c2["iat"] = json!(c["iat"].as_i64().unwrap() - 1);
    let same_jti = format!("Device {}", phone.sign(&h, &c2));
    problem(phone.get_challenges_with(Some(&same_jti)).await, &[401]).await;

    // The same refusals hold on the other device routes.
    let resp = phone
        .raw()
        .put(phone.url(&format!(
            "/v1/mobile/devices/{}/push-token",
            phone.device_id
        )))
        .header("Authorization", phone.bad_auth(BadAuth::OtherKey))
        .json(&json!({"push_token": "x"}))
        .send()
        .await
        .unwrap();
    problem(resp, &[401]).await;
    let resp = phone
        .raw()
        .delete(phone.url(&format!("/v1/mobile/devices/{}", phone.device_id)))
        .header("Authorization", phone.bad_auth(BadAuth::AlgNone))
        .send()
        .await
        .unwrap();
    problem(resp, &[401]).await;

    // A phone whose clock runs 45 s ahead is within the 60 s skew allowance.
    let (h, mut c) = phone.auth_header_and_claims();
    c["iat"] = json!(unix_now() + 45);
    c["exp"] = json!(unix_now() + 105);
    let ahead = format!("Device {}", phone.sign(&h, &c));
    json_body(phone.get_challenges_with(Some(&ahead)).await, 200).await;

    // None of that locked the honest phone out.
    assert!(phone.challenges().await.is_empty());
}

/// Own server, restarted: the replay cache and the token live in the database, the key in its file.
#[tokio::test]
async fn a_restart_keeps_the_replay_cache_the_devices_and_the_token() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let p = owner_with_phone(&server).await;
    let token = released(&p, "reveal").await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (h, c) = p.phone.auth_header_and_claims();
    let used = format!("Device {}", p.phone.sign(&h, &c));
    json_body(p.phone.get_challenges_with(Some(&used)).await, 200).await;

    // The generated master key sits beside the database, readable by its owner only.
    let key_files: Vec<_> = std::fs::read_dir(&server.dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|path| path.file_name().unwrap().to_string_lossy().contains("key"))
        .collect();
    assert!(
        !key_files.is_empty(),
        "no generated key file beside the database"
    );
    for path in &key_files {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", path.display());
        let key = std::fs::read_to_string(path).unwrap_or_default();
        if !key.trim().is_empty() {
            server.assert_log_free_of(&[("master key", key.trim())]);
        }
    }

    server.restart().await;
    problem(p.phone.get_challenges_with(Some(&used)).await, &[401]).await;
    assert!(
        p.phone.challenges().await.is_empty(),
        "the device was forgotten"
    );
    assert_eq!(scim_status(&server, Some(&token)).await, 200);
    let again = Person {
        browser: Browser::logged_in(&server, &p.ws.slug, &p.email, &p.password).await,
        ..p
    };
    let shown = released(&again, "reveal").await;
    assert_eq!(
        shown["token"],
        token.as_str(),
        "the token did not survive a restart"
    );
}

/// Starts `assent serve` with one bad variable: it must exit at once, non-zero, with one line on
/// stderr that names the variable (CONTRACT.md section 1).
fn assert_refuses_to_start(var: &str, value: &str) {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(support::server::BIN)
        .arg("serve")
        .env_remove("ASSENT_MASTER_KEY")
        .env_remove("ASSENT_REDIS_URL")
        .env("ASSENT_LISTEN", format!("127.0.0.1:{port}"))
        .env("ASSENT_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env(
            "ASSENT_DATABASE_URL",
            format!("sqlite://{}/assent.db", dir.path().display()),
        )
        .env("ASSENT_LOG", "info")
        .env(var, value)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{var}={value:?}: the server started anyway");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "{var}={value:?}: exit {}",
        out.status
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "{var}={value:?}: not one line: {stderr:?}");
    assert!(lines[0].contains(var), "{var}={value:?}: {stderr:?}");
}

#[test]
fn a_malformed_variable_stops_start_up_with_one_line_naming_it() {
    for (var, value) in [
        ("ASSENT_LISTEN", "not-an-address"),
        ("ASSENT_PUBLIC_URL", "ftp://assent.example.com"),
        ("ASSENT_DATABASE_URL", "mysql://localhost/assent"),
        ("ASSENT_MASTER_KEY", "c2hvcnQ="),
        ("ASSENT_CHALLENGE_TTL_SECS", "soon"),
        ("ASSENT_CHALLENGE_TTL_SECS", "-5"),
    ] {
        assert_refuses_to_start(var, value);
    }
}

#[test]
fn a_malformed_log_filter_stops_start_up_too() {
    // `ASSENT_LOG` is one of the contract's variables like the others; a filter tracing cannot
    // parse must not silently become `info`.
    assert_refuses_to_start("ASSENT_LOG", "assent=loudest");
}

#[tokio::test]
async fn the_cli_fails_cleanly_on_bad_input() {
    let server = shared().await;
    let ws = server.create_workspace();
    let cases: [&[&str]; 7] = [
        &[
            "workspace",
            "create",
            "--slug",
            &ws.slug,
            "--name",
            "Again",
            "--owner-email",
            "x@again.example.com",
        ],
        &[
            "member",
            "add",
            "--workspace",
            "no-such-workspace",
            "--email",
            "a@b.example.com",
            "--role",
            "admin",
        ],
        &[
            "member",
            "add",
            "--workspace",
            &ws.slug,
            "--email",
            "a@b.example.com",
            "--role",
            "superuser",
        ],
        &[
            "member",
            "add",
            "--workspace",
            &ws.slug,
            "--email",
            &ws.owner_email,
            "--role",
            "admin",
        ],
        // The staff realm takes no members: staff are made with `staff add`.
        &[
            "member",
            "add",
            "--workspace",
            "_staff",
            "--email",
            "a@b.example.com",
            "--role",
            "owner",
        ],
        &["staff", "add", "--email", "not-an-address"],
        &[
            "support",
            "rotate",
            "--workspace",
            &ws.slug,
            "--ticket",
            "T-1",
            "--email",
            "x@y.example.com",
            "--server",
            "http://127.0.0.1:9",
        ],
    ];
    for args in cases {
        let (stdout, stderr) = server.cli_fails(args);
        assert!(
            stdout.trim().is_empty(),
            "assent {args:?} failed but printed {stdout:?}"
        );
        assert!(!stderr.trim().is_empty(), "assent {args:?} failed silently");
    }
}

// ---------------------------------------------------------------------------------------------
// Decisions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn decision_from_another_persons_phone_is_refused_and_changes_nothing() {
    let server = shared().await;
    let alice = owner_with_phone(server).await;
    let bob = user_with_phone(server, &alice.ws, "admin").await;
    let carol = owner_with_phone(server).await; // another workspace

    let ch = alice.browser.start("reveal").await;
    let (id, number) = (id_of(&ch), number_of(&ch));
    let listed = alice.phone.pending(&id).await;
    assert!(
        bob.phone.find(&id).await.is_none(),
        "Bob's phone lists Alice's challenge"
    );
    assert!(
        carol.phone.find(&id).await.is_none(),
        "Carol's phone lists Alice's challenge"
    );

    for intruder in [&bob, &carol] {
        // Their own device, all of the challenge's data right.
        let (h, c) = intruder.phone.decision_parts(&listed, "approve", number);
        problem(
            intruder
                .phone
                .send_decision(&id, &intruder.phone.sign(&h, &c))
                .await,
            &[401, 403],
        )
        .await;
        // Claiming Alice's device while signing with their own key.
        let (h, c) = alice.phone.decision_parts(&listed, "approve", number);
        problem(
            intruder
                .phone
                .send_decision(&id, &intruder.phone.sign(&h, &c))
                .await,
            &[401, 403],
        )
        .await;
        // Alice's genuine decision, replayed over their own authenticated call.
        let stolen = alice.phone.sign(&h, &c);
        problem(
            intruder.phone.send_decision(&id, &stolen).await,
            &[401, 403],
        )
        .await;
        assert_eq!(alice.browser.status(&id).await, "pending");
    }
    alice.phone.approve(&id, number).await;
    assert_eq!(alice.browser.status(&id).await, "approved");

    // Each sees only their own devices, and cannot remove the other's.
    let listed = json_body(alice.browser.get("/v1/console/devices").await, 200).await;
    let ids: Vec<&str> = listed["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![alice.phone.device_id.as_str()]);
    let path = format!("/v1/console/devices/{}", alice.phone.device_id);
    problem(bob.browser.delete(&path).await, &[404]).await;
    assert!(alice.phone.challenges().await.is_empty());
}

#[tokio::test]
async fn decision_with_wrong_nonce_action_audience_or_signature_is_refused_and_changes_nothing() {
    let server = shared().await;
    let p = owner_with_phone(server).await;
    let ch = p.browser.start("reveal").await;
    let (id, number) = (id_of(&ch), number_of(&ch));
    let listed = p.phone.pending(&id).await;
    let mut sse = p.browser.events(&id).await;
    assert_eq!(sse.next_status().await, "pending");
    let other_key = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let attacker = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);

    type Forge = Box<dyn Fn(&mut Value, &mut Value) -> Option<String>>;
    // The refusals the contract names: 401 or 403.
    let named: Vec<(&str, Forge)> = vec![
        (
            "no nonce",
            Box::new(|_, c| {
                c.as_object_mut().unwrap().remove("nonce");
                None
            }),
        ),
        (
            "no action",
            Box::new(|_, c| {
                c.as_object_mut().unwrap().remove("action");
                None
            }),
        ),
        (
            "no sub",
            Box::new(|_, c| {
                c.as_object_mut().unwrap().remove("sub");
                None
            }),
        ),
        (
            "wrong nonce",
            Box::new(|_, c| {
                c["nonce"] = json!(random_id());
                None
            }),
        ),
        (
            "wrong action",
            Box::new(|_, c| {
                c["action"] = json!("scim_token.rotate");
                None
            }),
        ),
        (
            "wrong audience",
            Box::new(|_, c| {
                c["aud"] = json!("https://assent.attacker.example");
                None
            }),
        ),
        (
            "wrong iss",
            Box::new(|_, c| {
                c["iss"] = json!(random_id());
                None
            }),
        ),
        (
            "wrong kid",
            Box::new(|h, _| {
                h["kid"] = json!(random_id());
                None
            }),
        ),
        (
            "another challenge (sub)",
            Box::new(|_, c| {
                c["sub"] = json!(random_uuid());
                None
            }),
        ),
        (
            "signed by another key",
            Box::new(move |h, c| Some(sign_jws(&other_key, h, c))),
        ),
        (
            "signed by a key the header carries",
            Box::new(move |h, c| {
                h["jwk"] = jwk_of(&attacker);
                Some(sign_jws(&attacker, h, c))
            }),
        ),
        (
            "unsigned, alg none",
            Box::new(|h, c| {
                h["alg"] = json!("none");
                Some(unsigned_jws(h, c))
            }),
        ),
    ];
    // Not named by the contract, but a forged or stale decision must not move the challenge either.
    let other: Vec<(&str, Forge)> = vec![
        (
            "typ of a device-auth JWT",
            Box::new(|h, _| {
                h["typ"] = json!("JWT");
                None
            }),
        ),
        (
            "expired",
            Box::new(|_, c| {
                c["iat"] = json!(unix_now() - 300);
                c["exp"] = json!(unix_now() - 180);
                None
            }),
        ),
        (
            "lives longer than 120 s",
            Box::new(|_, c| {
                c["exp"] = json!(c["iat"].as_i64().unwrap() + 121);
                None
            }),
        ),
        (
            "no exp",
            Box::new(|_, c| {
                c.as_object_mut().unwrap().remove("exp");
                None
            }),
        ),
        (
            "no iat",
            Box::new(|_, c| {
                c.as_object_mut().unwrap().remove("iat");
                None
            }),
        ),
        (
            "decision neither approve nor deny",
            Box::new(|_, c| {
                c["decision"] = json!("maybe");
                None
            }),
        ),
    ];
    for (list, allowed) in [
        (named, &[401u16, 403][..]),
        (other, &[400, 401, 403, 422][..]),
    ] {
        for (what, forge) in list {
            let (mut h, mut c) = p.phone.decision_parts(&listed, "approve", number);
            let jws = forge(&mut h, &mut c).unwrap_or_else(|| p.phone.sign(&h, &c));
            let resp = p.phone.send_decision(&id, &jws).await;
            let status = resp.status().as_u16();
            assert!(
                allowed.contains(&status),
                "{what}: answered {status}, expected one of {allowed:?}"
            );
            problem(resp, allowed).await;
            assert_eq!(
                p.browser.status(&id).await,
                "pending",
                "{what} changed the challenge"
            );
        }
    }
    // The stream saw nothing; the honest decision still goes through.
    p.phone.approve(&id, number).await;
    assert_eq!(sse.next_status().await, "approved");
    sse.expect_end().await;
}

#[tokio::test]
async fn wrong_number_denies_the_challenge_with_422() {
    let server = shared().await;
    let p = owner_with_phone(server).await;
    let ch = p.browser.start("reveal").await;
    let (id, number) = (id_of(&ch), number_of(&ch));
    let mut sse = p.browser.events(&id).await;
    assert_eq!(sse.next_status().await, "pending");
    let listed = p.phone.pending(&id).await;
    let decoy = listed["number_choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_i64().unwrap())
        .find(|n| *n != number);
    let (h, c) = p
        .phone
        .decision_parts(&listed, "approve", decoy.expect("a decoy"));
    problem(
        p.phone.send_decision(&id, &p.phone.sign(&h, &c)).await,
        &[422],
    )
    .await;
    assert_eq!(sse.next_status().await, "denied");
    sse.expect_end().await;
    assert_eq!(p.browser.status(&id).await, "denied");
    assert!(p.phone.find(&id).await.is_none());

    // Nothing revives it.
    let (h, c) = p.phone.decision_parts(&listed, "approve", number);
    problem(
        p.phone.send_decision(&id, &p.phone.sign(&h, &c)).await,
        &[409],
    )
    .await;
    problem(p.browser.release(&id).await, &[409]).await;
    assert_eq!(p.browser.status(&id).await, "denied");
}

#[tokio::test]
async fn deny_not_me_blocks_new_challenges_with_429_and_mistake_does_not() {
    let server = shared().await;
    let p = owner_with_phone(server).await;
    let ch = p.browser.start("reveal").await;
    let id = id_of(&ch);
    let mut sse = p.browser.events(&id).await;
    assert_eq!(sse.next_status().await, "pending");
    p.phone.deny(&id, Some("not_me")).await;
    assert_eq!(sse.next_status().await, "denied");
    sse.expect_end().await;
    assert_eq!(p.browser.status(&id).await, "denied");
    problem(p.browser.release(&id).await, &[409]).await;

    for verb in ["reveal", "rotate"] {
        let resp = p
            .browser
            .post(&format!("/v1/console/scim-token/{verb}"))
            .await;
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        problem(resp, &[429]).await;
        let secs: u64 = retry
            .unwrap_or_else(|| panic!("{verb}: 429 without Retry-After"))
            .parse()
            .expect("Retry-After in seconds");
        assert!(
            (1..=900).contains(&secs),
            "{verb}: Retry-After {secs}s, the block is 15 minutes"
        );
    }
    assert!(p.phone.challenges().await.is_empty());

    // "mistake" is an honest slip: no block.
    let q = owner_with_phone(server).await;
    let id = id_of(&q.browser.start("reveal").await);
    q.phone.deny(&id, Some("mistake")).await;
    assert_eq!(q.browser.status(&id).await, "denied");
    q.browser.start("reveal").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_decisions_exactly_one_wins() {
    let server = shared().await;
    let p = owner_with_phone(server).await;
    let ch = p.browser.start("reveal").await;
    let (id, number) = (id_of(&ch), number_of(&ch));
    let listed = p.phone.pending(&id).await;
    let decisions: Vec<String> = (0..8)
        .map(|i| {
            let (h, c) = p.phone.decision_parts(
                &listed,
                if i % 2 == 0 { "approve" } else { "deny" },
                number,
            );
            p.phone.sign(&h, &c)
        })
        .collect();
    let answers = join_all(decisions.iter().map(|d| async {
        let resp = p.phone.send_decision(&id, d).await;
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }))
    .await;
    let winners: Vec<&(u16, String)> = answers.iter().filter(|(s, _)| *s == 200).collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    assert!(
        answers.iter().all(|(s, _)| *s == 200 || *s == 409),
        "{answers:?}"
    );
    let won: Value = serde_json::from_str(&winners[0].1).unwrap();
    assert_eq!(
        won["status"].as_str().unwrap(),
        p.browser.status(&id).await,
        "the winner's answer is not the state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_releases_exactly_one_wins() {
    let server = shared().await;
    let p = owner_with_phone(server).await;
    let (id, _) = approved(&p, "reveal").await;
    let answers = join_all((0..8).map(|_| async {
        let resp = p.browser.release(&id).await;
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }))
    .await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 410),
        "{statuses:?}"
    );
    let token = answers
        .iter()
        .find(|(s, _)| *s == 200)
        .map(|(_, b)| serde_json::from_str::<Value>(b).unwrap())
        .unwrap();
    let token = token["token"].as_str().unwrap();
    for (_, body) in answers.iter().filter(|(s, _)| *s != 200) {
        assert!(!body.contains(token), "a losing release holds the token");
    }
    assert_eq!(p.browser.status(&id).await, "released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_enrollments_with_one_code_exactly_one_wins() {
    let server = shared().await;
    let ws = server.create_workspace();
    let browser = Browser::logged_in(server, &ws.slug, &ws.owner_email, &ws.owner_password).await;
    let code = browser.enrollment().await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let phones: Vec<Phone> = (0..6).map(|_| Phone::new(server)).collect();
    let statuses = join_all(phones.iter().map(|phone| async {
        phone
            .enroll_with(&phone.enrollment_body(&code))
            .await
            .status()
            .as_u16()
    }))
    .await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 410),
        "{statuses:?}"
    );
    let devices = json_body(browser.get("/v1/console/devices").await, 200).await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1, "{devices}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_jws_replayed_concurrently_is_accepted_once() {
    let server = shared().await;
    let p = owner_with_phone(server).await;
    let auth = p.phone.auth();
    let statuses = join_all((0..8).map(|_| async {
        p.phone
            .get_challenges_with(Some(&auth))
            .await
            .status()
            .as_u16()
    }))
    .await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 401),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn an_approve_without_a_valid_number_never_approves() {
    let server = shared().await;
    let p = owner_with_phone(server).await;
    let id = id_of(&p.browser.start("reveal").await);
    let listed = p.phone.pending(&id).await;
    for number in [None, Some(json!(null)), Some(json!("forty-two"))] {
        let (h, mut c) = p.phone.decision_parts(&listed, "approve", 0);
        match &number {
            None => {
                c.as_object_mut().unwrap().remove("number");
            }
            Some(n) => c["number"] = n.clone(),
        }
        let resp = p.phone.send_decision(&id, &p.phone.sign(&h, &c)).await;
        problem(resp, &[400, 401, 403, 409, 422]).await;
        assert_ne!(p.browser.status(&id).await, "approved", "number {number:?}");
    }
}

#[tokio::test]
async fn any_of_the_persons_phones_may_decide() {
    let server = shared().await;
    let p = owner_with_phone(server).await;
    let tablet = second_phone(server, &p.browser, &p.phone).await;
    let ch = p.browser.start("reveal").await;
    let id = id_of(&ch);
    let listed = p.phone.pending(&id).await;
    // The tablet's genuine decision, relayed by the phone's own call, is not the phone's.
    let (h, c) = tablet.decision_parts(&listed, "approve", number_of(&ch));
    let relayed = tablet.sign(&h, &c);
    let resp = p.phone.send_decision(&id, &relayed).await;
    problem(resp, &[401, 403]).await;
    assert_eq!(p.browser.status(&id).await, "pending");

    tablet.approve(&id, number_of(&ch)).await;
    assert_eq!(p.browser.status(&id).await, "approved");
    // The other phone's decision now comes too late.
    let (h, c) = p.phone.decision_parts(&listed, "approve", number_of(&ch));
    let resp = p.phone.send_decision(&id, &p.phone.sign(&h, &c)).await;
    problem(resp, &[409]).await;
}

// ---------------------------------------------------------------------------------------------
// Challenges and their sessions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_challenge_is_only_visible_to_the_session_that_made_it() {
    let server = shared().await;
    let p = owner_with_phone(server).await;
    let same_person = Browser::logged_in(server, &p.ws.slug, &p.email, &p.password).await;
    let stranger = owner_with_phone(server).await;

    let ch = p.browser.start("reveal").await;
    let (id, number) = (id_of(&ch), number_of(&ch));
    let unknown_id = random_uuid();
    let unknown = problem(p.browser.challenge_response(&unknown_id).await, &[404]).await;
    let unknown = without(&unknown, &unknown_id);
    problem(p.browser.events_response(&random_uuid()).await, &[404]).await;
    problem(p.browser.release(&random_uuid()).await, &[404]).await;
    problem(p.browser.release(&id).await, &[409]).await; // before approval

    for other in [&same_person, &stranger.browser] {
        let not_yours = problem(other.challenge_response(&id).await, &[404]).await;
        assert_eq!(
            without(&not_yours, &id),
            unknown,
            "'not yours' must read as 'no such challenge'"
        );
        problem(other.events_response(&id).await, &[404]).await;
        problem(other.release(&id).await, &[404]).await;
    }
    p.phone.approve(&id, number).await;
    for other in [&same_person, &stranger.browser] {
        problem(other.release(&id).await, &[404]).await;
        problem(other.challenge_response(&id).await, &[404]).await;
    }
    let release = json_body(p.browser.release(&id).await, 200).await;
    assert_token_shape(release["token"].as_str().unwrap());
}

#[tokio::test]
async fn a_new_challenge_supersedes_a_pending_one_for_the_same_action() {
    let server = shared().await;
    let p = owner_with_phone(server).await;
    let first = p.browser.start("reveal").await;
    let first_id = id_of(&first);
    let first_listed = p.phone.pending(&first_id).await;
    let mut sse = p.browser.events(&first_id).await;
    assert_eq!(sse.next_status().await, "pending");

    let second = p.browser.start("reveal").await;
    let second_id = id_of(&second);
    assert_ne!(first_id, second_id);
    let ended = sse.next_status().await;
    assert!(
        ended == "expired" || ended == "denied",
        "superseded challenge became {ended:?}"
    );
    sse.expect_end().await;
    assert_eq!(p.browser.status(&first_id).await, ended);
    let (h, c) = p
        .phone
        .decision_parts(&first_listed, "approve", number_of(&first));
    problem(
        p.phone
            .send_decision(&first_id, &p.phone.sign(&h, &c))
            .await,
        &[409],
    )
    .await;

    // Another action does not supersede.
    let rotate = p.browser.start("rotate").await;
    // The same person from another session does.
    let elsewhere = Browser::logged_in(server, &p.ws.slug, &p.email, &p.password).await;
    let mut sse = p.browser.events(&id_of(&rotate)).await;
    assert_eq!(sse.next_status().await, "pending");
    let rotate = elsewhere.start("rotate").await;
    let ended = sse.next_status().await;
    assert!(
        ended == "expired" || ended == "denied",
        "superseded challenge became {ended:?}"
    );
    sse.expect_end().await;
    let ids: Vec<String> = p
        .phone
        .challenges()
        .await
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(
        ids.contains(&second_id) && ids.contains(&id_of(&rotate)),
        "{ids:?}"
    );
    assert_eq!(p.browser.status(&second_id).await, "pending");
    assert_eq!(elsewhere.status(&id_of(&rotate)).await, "pending");
    p.phone.approve(&second_id, number_of(&second)).await;
}

#[tokio::test]
async fn the_number_and_its_place_among_the_choices_are_random() {
    let server = shared().await;
    let p = owner_with_phone(server).await;
    let mut places = std::collections::HashSet::new();
    let mut numbers = std::collections::HashSet::new();
    // 12 challenges (each supersedes the last): the right number always in the same place would
    // happen by chance with probability 3 * 3^-12.
    for _ in 0..12 {
        let ch = p.browser.start("reveal").await;
        let number = number_of(&ch);
        let listed = p.phone.pending(&id_of(&ch)).await;
        let choices = listed["number_choices"].as_array().unwrap();
        let place = choices.iter().position(|n| n.as_i64() == Some(number));
        places.insert(place.expect("the number is among the choices"));
        numbers.insert(number);
    }
    assert!(
        places.len() >= 2,
        "the right number is always at {places:?}"
    );
    assert!(numbers.len() >= 2, "the number is always {numbers:?}");
}

/// Own server with a 2 s TTL; the expiry is observed on the stream, not slept out.
#[tokio::test]
async fn challenges_expire_after_the_ttl_and_the_stream_says_so() {
    let server = TestServer::start(ServerOptions {
        challenge_ttl_secs: 2,
        ..ServerOptions::default()
    })
    .await;
    let p = owner_with_phone(&server).await;

    let ch = p.browser.start("reveal").await;
    let (id, number) = (id_of(&ch), number_of(&ch));
    assert_about(
        utc_time(&ch, "expires_at"),
        2,
        2,
        "expires_at with a 2 s TTL",
    );
    let listed = p.phone.pending(&id).await;
    let mut sse = p.browser.events(&id).await;
    assert_eq!(sse.next_status().await, "pending");
    assert_eq!(sse.next_status().await, "expired");
    sse.expect_end().await;
    assert_eq!(p.browser.status(&id).await, "expired");
    assert!(
        p.phone.find(&id).await.is_none(),
        "an expired challenge is still listed"
    );
    let (h, c) = p.phone.decision_parts(&listed, "approve", number);
    problem(
        p.phone.send_decision(&id, &p.phone.sign(&h, &c)).await,
        &[409],
    )
    .await;
    problem(p.browser.release(&id).await, &[409]).await;
    let mut sse = p.browser.events(&id).await;
    assert_eq!(sse.next_status().await, "expired");
    sse.expect_end().await;

    // Approved but never released: it expires too, and the token stays put.
    let old = released(&p, "reveal").await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (id, _) = approved(&p, "reveal").await;
    wait_until_expired(&p.browser, &id).await;
    problem(p.browser.release(&id).await, &[409]).await;
    assert_eq!(scim_status(&server, Some(&old)).await, 200);

    // A rotation approved but never released has rotated all the same (the token is made on
    // approval): the old one is dead and View Token shows the new one.
    let (id, _) = approved(&p, "rotate").await;
    assert_eq!(scim_status(&server, Some(&old)).await, 401);
    wait_until_expired(&p.browser, &id).await;
    problem(p.browser.release(&id).await, &[409]).await;
    let new = released(&p, "reveal").await["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new, old);
    assert_eq!(scim_status(&server, Some(&new)).await, 200);
}

/// Waits (bounded) for an approved challenge to turn `expired`: the stream has closed at
/// `approved`, so the console asks, as the page would.
async fn wait_until_expired(browser: &Browser, id: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = browser.status(id).await;
        if status == "expired" {
            return;
        }
        assert_eq!(status, "approved");
        assert!(
            Instant::now() < deadline,
            "an approved challenge did not expire"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Devices
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unenrolled_devices_can_no_longer_authenticate() {
    let server = shared().await;
    let p = owner_with_phone(server).await;
    let tablet = second_phone(server, &p.browser, &p.phone).await;
    let stranger = owner_with_phone(server).await;
    let devices = json_body(p.browser.get("/v1/console/devices").await, 200).await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 2, "{devices}");

    // Nobody removes someone else's device.
    let resp = stranger.phone.unenroll(&tablet.device_id).await;
    problem(resp, &[401, 403, 404]).await;
    problem(
        stranger
            .browser
            .delete(&format!("/v1/console/devices/{}", tablet.device_id))
            .await,
        &[404],
    )
    .await;
    assert!(tablet.challenges().await.is_empty());

    // The phone unenrolls itself.
    let resp = p.phone.unenroll(&p.phone.device_id).await;
    assert_eq!(resp.status().as_u16(), 204);
    problem(
        p.phone.get_challenges_with(Some(&p.phone.auth())).await,
        &[401],
    )
    .await;
    let devices = json_body(p.browser.get("/v1/console/devices").await, 200).await;
    let ids: Vec<&str> = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![tablet.device_id.as_str()]);

    // The console removes the other.
    let resp = p
        .browser
        .delete(&format!("/v1/console/devices/{}", tablet.device_id))
        .await;
    assert_eq!(resp.status().as_u16(), 204);
    problem(
        tablet.get_challenges_with(Some(&tablet.auth())).await,
        &[401],
    )
    .await;
    let devices = json_body(p.browser.get("/v1/console/devices").await, 200).await;
    assert_eq!(devices["devices"], json!([]));
    problem(p.browser.reveal().await, &[409]).await;
}

#[tokio::test]
async fn push_token_refresh_answers_204() {
    let server = shared().await;
    let p = owner_with_phone(server).await;
    let stranger = owner_with_phone(server).await;
    let resp = p
        .phone
        .put_push_token(
            &p.phone.device_id,
            &json!({"push_token": format!("fcm-{}", random_id())}),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 204);
    problem(
        p.phone
            .put_push_token(&p.phone.device_id, &json!({"push_token": 7}))
            .await,
        &[400, 422],
    )
    .await;
    problem(
        stranger
            .phone
            .put_push_token(&p.phone.device_id, &json!({"push_token": "stolen"}))
            .await,
        &[401, 403, 404],
    )
    .await;
    let devices = json_body(p.browser.get("/v1/console/devices").await, 200).await;
    let state = devices["devices"][0]["push_token_state"]
        .as_str()
        .unwrap_or("");
    assert!(
        ["ok", "invalid", "none"].contains(&state),
        "push_token_state {state:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Bad requests, health, metrics
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_json_and_wrong_types_are_problems() {
    let server = shared().await;
    let p = owner_with_phone(server).await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: &'static str| {
        client
            .post(format!("{}{path}", server.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    problem(
        post("/v1/console/session", "{\"workspace\": ")
            .await
            .unwrap(),
        &[400],
    )
    .await;
    problem(
        post(
            "/v1/console/session",
            r#"{"workspace":1,"email":true,"password":[]}"#,
        )
        .await
        .unwrap(),
        &[400, 422],
    )
    .await;
    problem(
        post("/v1/console/session", "{}").await.unwrap(),
        &[400, 422],
    )
    .await;
    let resp = client
        .post(format!("{}/v1/console/session", server.base))
        .header("content-type", "text/plain")
        .body(r#"{"workspace":"w","email":"e@x.example.com","password":"p"}"#)
        .send()
        .await
        .unwrap();
    problem(resp, &[400, 415]).await;
    problem(
        post("/v1/mobile/devices", "not json at all").await.unwrap(),
        &[400],
    )
    .await;
    problem(
        post(
            "/v1/mobile/devices",
            r#"{"enrollment_code":5,"name":[],"platform":1}"#,
        )
        .await
        .unwrap(),
        &[400, 422],
    )
    .await;

    let ch = p.browser.start("reveal").await;
    let id = id_of(&ch);
    problem(
        p.phone
            .send_decision_with(&id, &json!({"decision": 42}))
            .await,
        &[400, 422],
    )
    .await;
    problem(
        p.phone.send_decision_with(&id, &json!({})).await,
        &[400, 422],
    )
    .await;
    problem(
        p.phone
            .send_decision_with(&id, &json!({"decision": "not-a-jws"}))
            .await,
        &[400, 401, 403, 422],
    )
    .await;
    assert_eq!(p.browser.status(&id).await, "pending");
}

#[tokio::test]
async fn unknown_routes_are_404_and_oversized_bodies_413() {
    let server = shared().await;
    let client = reqwest::Client::new();
    for path in [
        "/v1/console/no-such-route",
        "/v1/mobile/nothing-here",
        "/v1/nope",
    ] {
        let resp = client
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .unwrap();
        problem(resp, &[404]).await;
    }

    let padded = |size: usize| {
        json!({"workspace": "x".repeat(size), "email": "a@b.c", "password": "p"}).to_string()
    };
    for path in ["/v1/console/session", "/v1/mobile/devices"] {
        let resp = client
            .post(format!("{}{path}", server.base))
            .header("content-type", "application/json")
            .body(padded(70 * 1024))
            .send()
            .await
            .unwrap();
        problem(resp, &[413]).await;
    }
    // Just under the limit is read (and refused for what it says, not for its size).
    let resp = client
        .post(format!("{}/v1/console/session", server.base))
        .header("content-type", "application/json")
        .body(padded(60 * 1024))
        .send()
        .await
        .unwrap();
    assert_ne!(
        resp.status().as_u16(),
        413,
        "a 60 KiB body is within the 64 KiB limit"
    );
}

#[tokio::test]
async fn a_wrong_method_is_a_405_problem() {
    let server = shared().await;
    let ws = server.create_workspace();
    let browser = Browser::logged_in(server, &ws.slug, &ws.owner_email, &ws.owner_password).await;
    for (method, path) in [
        (Method::GET, "/v1/console/scim-token/reveal"),
        (Method::PUT, "/v1/console/session"),
        (Method::GET, "/v1/mobile/devices"),
    ] {
        let resp = browser.request(method.clone(), path).send().await.unwrap();
        let status = resp.status().as_u16();
        assert_eq!(status, 405, "{method} {path}");
        problem(resp, &[405]).await;
    }
}

#[tokio::test]
async fn health_and_readiness_answer_200() {
    let server = shared().await;
    let client = reqwest::Client::new();
    for path in ["/healthz", "/readyz"] {
        let resp = client
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
    }
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_challenge_counters() {
    let server = shared().await;
    let p = owner_with_phone(server).await;
    released(&p, "reveal").await;
    let ch = p.browser.start("reveal").await;
    let _sse = p.browser.events(&id_of(&ch)).await; // one stream open while scraping

    let resp = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        ct.starts_with("text/plain") || ct.starts_with("application/openmetrics-text"),
        "metrics content-type {ct:?}"
    );
    let text = resp.text().await.unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("# TYPE ")),
        "no # TYPE lines:\n{text}"
    );
    let samples: Vec<(&str, f64)> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series, value.parse::<f64>().ok()?))
        })
        .collect();
    let approved = samples
        .iter()
        .filter(|(s, _)| {
            s.split('{').next().unwrap().contains("challenge") && s.contains("approved")
        })
        .map(|(_, v)| *v)
        .sum::<f64>();
    assert!(
        approved >= 1.0,
        "no challenge counter with an `approved` outcome:\n{text}"
    );
    let decided = samples
        .iter()
        .filter(|(s, _)| {
            let name = s.split('{').next().unwrap();
            name.ends_with("_count") && (name.contains("decision") || name.contains("challenge"))
        })
        .map(|(_, v)| *v)
        .sum::<f64>();
    assert!(
        decided >= 1.0,
        "no histogram of the time from challenge to decision:\n{text}"
    );
    assert!(
        samples
            .iter()
            .any(|(s, _)| s.split('{').next().unwrap().contains("sse")),
        "no SSE streams metric:\n{text}"
    );
    assert!(
        samples.iter().any(|(s, _)| {
            let name = s.split('{').next().unwrap();
            name.contains("http") && name.contains("request")
        }),
        "no HTTP request metric:\n{text}"
    );
    assert!(!text.contains("assent_scim_"), "metrics hold a token");
}

// ---------------------------------------------------------------------------------------------
// Postgres backend only
// ---------------------------------------------------------------------------------------------

/// Postgres only (`ASSENT_TEST_POSTGRES_URL` set): the database restarts under a running server.
/// While it is down, requests that need it answer 503 problem+json quickly (no hang), `/readyz`
/// says 503 and the process lives on; once it is back, the same session, phone and token work
/// again without restarting Assent. The cluster is a private one of this test's own, so stopping
/// it disturbs no other test's server.
#[tokio::test]
async fn postgres_restarted_under_a_running_server_503_then_recovers() {
    if support::postgres::selected_cluster().is_none() {
        eprintln!("skipped: runs with the Postgres backend (ASSENT_TEST_POSTGRES_URL)");
        return;
    }
    let cluster = support::postgres::PrivateCluster::start();
    let server = TestServer::start(ServerOptions {
        postgres_cluster: Some(cluster.url.clone()),
        ..ServerOptions::default()
    })
    .await;
    let p = owner_with_phone(&server).await;
    let token = released(&p, "reveal").await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let client = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    let get = |path: &str| client.get(format!("{}{path}", server.base)).send();

    cluster.stop();
    let down = Instant::now();
    let phone_auth = p.phone.auth();
    let (console, mobile, scim, ready) = tokio::join!(
        p.browser.get("/v1/console/devices"),
        p.phone.get_challenges_with(Some(&phone_auth)),
        scim_status(&server, Some(&token)),
        get("/readyz"),
    );
    // Each waits at most the pool's acquire timeout (3 s), /readyz its 1 s ping timeout.
    assert!(
        down.elapsed() < Duration::from_secs(6),
        "requests hung while Postgres was down: {:?}",
        down.elapsed()
    );
    problem(console, &[503]).await;
    problem(mobile, &[503]).await;
    assert_eq!(scim, 503);
    let ready = ready.expect("/readyz while Postgres is down");
    assert_eq!(ready.status().as_u16(), 503);
    assert_eq!(
        ready.json::<Value>().await.unwrap()["database"],
        "unavailable"
    );
    assert_eq!(get("/healthz").await.unwrap().status().as_u16(), 200);

    cluster.restart();
    let deadline = Instant::now() + WAIT;
    loop {
        let status = get("/readyz").await.expect("/readyz").status().as_u16();
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {status} {WAIT:?} after Postgres came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    json_body(p.browser.get("/v1/console/devices").await, 200).await;
    assert_eq!(scim_status(&server, Some(&token)).await, 200);
    let shown = released(&p, "reveal").await;
    assert_eq!(
        shown["token"],
        token.as_str(),
        "the token changed across the restart"
    );
    assert!(
        !server.log().contains("panicked"),
        "the server panicked:\n{}",
        server.log()
    );
}

// ---------------------------------------------------------------------------------------------
// The tamper-evident audit log and master-key rotation (issue 7)
// ---------------------------------------------------------------------------------------------

/// Runs one SQL statement with one integer parameter on the server's database, behind its back.
async fn tamper(server: &TestServer, sqlite: &str, postgres: &str, id: i64) {
    use sqlx::Connection;
    match &server.db {
        support::server::TestDb::Sqlite { .. } => {
            let mut conn = sqlx::SqliteConnection::connect(&server.db_url)
                .await
                .unwrap();
            sqlx::query(sqlite)
                .bind(id)
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.ok();
        }
        support::server::TestDb::Postgres { database, .. } => {
            let mut conn = sqlx::PgConnection::connect(&database.url).await.unwrap();
            sqlx::query(postgres)
                .bind(id)
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.ok();
        }
    }
}

#[tokio::test]
async fn the_audit_chain_verifies_exports_and_names_an_edited_entry() {
    let server = shared().await;
    let p = owner_with_phone(server).await;
    released(&p, "reveal").await;
    let slug = p.ws.slug.as_str();

    let verified = server.cli(&["audit", "verify", "--workspace", slug]);
    let entries = verified["entries"].as_i64().unwrap();
    assert!(entries >= 4, "{verified}");
    assert_eq!(verified["workspace"], slug);
    assert_eq!(verified["ok"], true);

    // The export: one JSON line per entry, linked by their hashes, with RFC 3339 times.
    let lines = server.cli_lines(&["audit", "export", "--workspace", slug]);
    assert_eq!(lines.len() as i64, entries);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["seq"], i as i64 + 1, "{line}");
        assert_eq!(line["workspace"], slug);
        assert_about(utc_time(line, "at"), 0, 120, "an audit entry's time");
        assert_eq!(line["hash"].as_str().unwrap().len(), 64, "{line}");
        if i > 0 {
            assert_eq!(line["prev_hash"], lines[i - 1]["hash"], "{line}");
        }
    }
    assert_eq!(verified["last_hash"], lines.last().unwrap()["hash"]);

    // The console's page: filtered by kind and time, with each entry's place in the chain.
    let page = json_body(
        p.browser
            .get("/v1/console/audit?kind=login.succeeded&limit=5")
            .await,
        200,
    )
    .await;
    let shown = page["entries"].as_array().unwrap();
    assert!(!shown.is_empty(), "{page}");
    for e in shown {
        assert_eq!(e["kind"], "login.succeeded");
        assert!(e["seq"].is_i64() && e["hash"].is_string(), "{e}");
    }
    let later = json_body(
        p.browser
            .get("/v1/console/audit?since=2999-01-01T00:00:00Z")
            .await,
        200,
    )
    .await;
    assert_eq!(later["entries"], json!([]));
    let earlier = json_body(
        p.browser
            .get("/v1/console/audit?until=2000-01-01T00:00:00Z")
            .await,
        200,
    )
    .await;
    assert_eq!(earlier["entries"], json!([]));
    problem(
        p.browser.get("/v1/console/audit?since=yesterday").await,
        &[400],
    )
    .await;

    // Someone with access to the database rewrites what an entry says.
    let edited = lines[1]["id"].as_i64().unwrap();
    tamper(
        server,
        r#"UPDATE audit_log SET detail = '{"nothing":"happened"}' WHERE id = ?"#,
        r#"UPDATE audit_log SET detail = '{"nothing":"happened"}'::jsonb WHERE id = $1"#,
        edited,
    )
    .await;
    let (stdout, stderr) = server.cli_fails(&["audit", "verify", "--workspace", slug]);
    assert!(stdout.trim().is_empty(), "{stdout}");
    // One line for the operator (the rest of stderr is the log, as verbose as ASSENT_LOG says).
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("assent: "))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(&format!("entry {edited} was edited")),
        "{stderr}"
    );
    // Other workspaces' chains are their own.
    let other = server.create_workspace();
    server.cli(&["audit", "verify", "--workspace", &other.slug]);
}

/// The operator's steps for a new master key (README): restart with the new key and the old one,
/// rotate (here stopped after one batch and resumed), restart with the new key alone.
#[tokio::test]
async fn a_master_key_rotation_interrupted_and_resumed_loses_no_token() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let p = owner_with_phone(&server).await;
    let others = [server.create_workspace(), server.create_workspace()];
    let token = released(&p, "reveal").await["token"]
        .as_str()
        .unwrap()
        .to_string();

    let old_key_file = match &server.db {
        support::server::TestDb::Sqlite { path } => {
            let mut file = path.clone().into_os_string();
            file.push(".key");
            std::path::PathBuf::from(file)
        }
        support::server::TestDb::Postgres { key_file, .. } => key_file.clone(),
    };
    let old_key = std::fs::read_to_string(&old_key_file).unwrap();
    let new_key_file = server.dir.join("new.key");
    support::server::write_new_master_key(&new_key_file);
    let new_key_env = (
        "ASSENT_MASTER_KEY_FILE".to_string(),
        new_key_file.display().to_string(),
    );
    server.options.env = vec![
        new_key_env.clone(),
        ("ASSENT_OLD_MASTER_KEYS".into(), old_key.trim().to_string()),
    ];
    server.restart().await;

    let first = server.cli(&["keys", "rotate", "--batch-size", "1", "--max-batches", "1"]);
    assert_eq!(first["rotated"], 1, "{first}");
    assert_eq!(first["already_current"], 0, "{first}");
    // The demo workspace's, ours and the two others' tokens, and the phone's push token.
    let remaining = first["remaining"].as_u64().unwrap();
    assert!(remaining >= 4, "{first}");
    // Half-way, the server opens tokens under either key.
    let again = Person {
        browser: Browser::logged_in(&server, &p.ws.slug, &p.email, &p.password).await,
        ..p
    };
    assert_eq!(released(&again, "reveal").await["token"], token.as_str());

    let rest = server.cli(&["keys", "rotate", "--batch-size", "1"]);
    assert_eq!(rest["rotated"].as_u64(), Some(remaining), "{rest}");
    assert_eq!(rest["already_current"], 1, "{rest}");
    assert_eq!(rest["remaining"], 0, "{rest}");
    assert_eq!(rest["key_id"], first["key_id"]);

    // The old key is gone: everything opens under the new one alone.
    server.options.env = vec![new_key_env];
    server.restart().await;
    let done = server.cli(&["keys", "rotate"]);
    assert_eq!(done["rotated"], 0, "{done}");
    assert_eq!(done["remaining"], 0, "{done}");
    assert_eq!(
        done["already_current"].as_u64(),
        Some(remaining + 1),
        "{done}"
    );
    let after = Person {
        browser: Browser::logged_in(&server, &again.ws.slug, &again.email, &again.password).await,
        ..again
    };
    assert_eq!(released(&after, "reveal").await["token"], token.as_str());
    assert_eq!(scim_status(&server, Some(&token)).await, 200);
    for ws in &others {
        let owner =
            Browser::logged_in(&server, &ws.slug, &ws.owner_email, &ws.owner_password).await;
        let phone = enrolled_phone(&server, &owner).await;
        let other = Person {
            ws: ws.clone(),
            email: ws.owner_email.clone(),
            password: ws.owner_password.clone(),
            browser: owner,
            phone,
        };
        assert_token_shape(released(&other, "reveal").await["token"].as_str().unwrap());
    }
    server.assert_log_free_of(&[("old master key", old_key.trim())]);
}

/// The embedded default's key file: the new key waits in `<db>.key.new` while the rows move (a
/// server started in between opens both), then becomes `<db>.key`, the old one kept as `.old`.
#[tokio::test]
async fn the_generated_key_file_is_rotated_with_the_server_stopped() {
    let mut server = TestServer::start(ServerOptions::default()).await;
    let support::server::TestDb::Sqlite { path } = server.db.clone() else {
        eprintln!("skipped: the generated key file is the SQLite default's");
        return;
    };
    let key_file = |suffix: &str| {
        let mut file = path.clone().into_os_string();
        file.push(suffix);
        std::path::PathBuf::from(file)
    };
    let (current, new, old) = (key_file(".key"), key_file(".key.new"), key_file(".key.old"));
    let p = owner_with_phone(&server).await;
    let token = released(&p, "reveal").await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let old_key = std::fs::read_to_string(&current).unwrap();

    let first = server
        .restart_after(|s| s.cli(&["keys", "rotate", "--batch-size", "1", "--max-batches", "1"]))
        .await;
    assert_eq!(first["rotated"], 1, "{first}");
    assert!(first["remaining"].as_u64().unwrap() >= 1, "{first}");
    assert_eq!(std::fs::read_to_string(&current).unwrap(), old_key);
    assert!(new.exists() && !old.exists());
    // Interrupted: the server started now opens rows under either key.
    let p = Person {
        browser: Browser::logged_in(&server, &p.ws.slug, &p.email, &p.password).await,
        ..p
    };
    assert_eq!(released(&p, "reveal").await["token"], token.as_str());

    let rest = server.restart_after(|s| s.cli(&["keys", "rotate"])).await;
    assert_eq!(rest["remaining"], 0, "{rest}");
    assert_eq!(rest["key_id"], first["key_id"]);
    assert!(!new.exists());
    assert_eq!(std::fs::read_to_string(&old).unwrap(), old_key);
    assert_ne!(std::fs::read_to_string(&current).unwrap(), old_key);

    // The operator deletes the old key once satisfied; nothing needs it any more.
    std::fs::remove_file(&old).unwrap();
    server.restart().await;
    let p = Person {
        browser: Browser::logged_in(&server, &p.ws.slug, &p.email, &p.password).await,
        ..p
    };
    assert_eq!(released(&p, "reveal").await["token"], token.as_str());
    assert_eq!(scim_status(&server, Some(&token)).await, 200);
    server.assert_log_free_of(&[("old master key", old_key.trim())]);
}

/// Behind a load balancer named in `ASSENT_TRUSTED_PROXIES`, the caller's address is the
/// right-most `X-Forwarded-For` hop the balancer added, not anything the client wrote before it.
#[tokio::test]
async fn a_trusted_balancer_s_forwarded_for_names_the_caller() {
    let server = TestServer::start(ServerOptions {
        env: vec![("ASSENT_TRUSTED_PROXIES".into(), "127.0.0.0/8".into())],
        ..Default::default()
    })
    .await;
    let ws = server.create_workspace();
    let mut b = Browser::new(&server);
    // The client claims 6.6.6.6; the balancer (here: the test, on loopback) appends the real peer.
    let resp = b
        .request(Method::POST, "/v1/console/session")
        .header("X-Forwarded-For", "6.6.6.6, 203.0.113.9")
        .json(
            &json!({"workspace": ws.slug, "email": ws.owner_email, "password": ws.owner_password}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    b.login_ok(&ws.slug, &ws.owner_email, &ws.owner_password)
        .await;
    let page = json_body(b.get("/v1/console/audit?kind=login.succeeded").await, 200).await;
    let ips: Vec<&str> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ip"].as_str().unwrap())
        .collect();
    assert!(ips.contains(&"203.0.113.9"), "{ips:?}");
    assert!(
        !ips.contains(&"6.6.6.6"),
        "a client-written hop is never taken: {ips:?}"
    );
    assert!(
        ips.contains(&"127.0.0.1"),
        "without the header, the balancer's own address: {ips:?}"
    );
}
