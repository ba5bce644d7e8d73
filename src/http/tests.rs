//! Router tests: the whole app in-process (real SQLite file, real stores) driven with `oneshot`,
//! with a manual clock so expiry is tested by moving time, not by sleeping.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use tower::ServiceExt;

use crate::app::{App, Ports};
use crate::bus::memory::MemoryBus;
use crate::challenges::memory::MemoryChallenges;
use crate::clock::{Clock, ManualClock};
use crate::config::Config;
use crate::domain::crypto::{Keyring, MasterKey};
use crate::domain::device::{DecisionClaims, DeviceSigner};

const PUBLIC: &str = "http://assent.test";

#[path = "lifecycle_tests.rs"]
mod lifecycle;

struct Harness {
    app: Arc<App>,
    clock: Arc<ManualClock>,
    router: axum::Router,
    _dir: tempfile::TempDir,
}

struct Phone {
    signer: DeviceSigner,
    id: String,
}

async fn harness() -> Harness {
    harness_with(&[]).await
}

/// A harness whose configuration also has these variables.
async fn harness_with(vars: &[(&str, &str)]) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let config = Config::from_lookup(&|name| match name {
        "ASSENT_PUBLIC_URL" => Some(PUBLIC.into()),
        "ASSENT_DATABASE_URL" => Some(url.clone()),
        other => vars
            .iter()
            .find(|(k, _)| *k == other)
            .map(|(_, v)| v.to_string()),
    })
    .unwrap();
    let clock = Arc::new(ManualClock::new(
        OffsetDateTime::now_utc().replace_nanosecond(0).unwrap(),
    ));
    let crate::store::Stores {
        store, scim, sso, ..
    } = crate::store::open(&config.database).await.unwrap();
    let app = App::new(
        config,
        Ports {
            clock: clock.clone(),
            store: store.clone(),
            sso,
            scim,
            challenges: Arc::new(MemoryChallenges::new(store)),
            bus: Arc::new(MemoryBus::default()),
            push: Vec::new(),
            keyring: Keyring::new(MasterKey::generate(), []),
            metrics: Default::default(),
        },
    );
    let router = super::router(app.clone());
    Harness {
        app,
        clock,
        router,
        _dir: dir,
    }
}

async fn call(
    router: &axum::Router,
    method: &str,
    uri: &str,
    cookie: Option<&str>,
    auth: Option<String>,
    body: Option<Value>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

impl Harness {
    /// Creates a workspace and signs its owner in; returns the cookie header value.
    async fn owner(&self, slug: &str) -> String {
        let email = format!("owner@{slug}.test");
        let (_, password) = self.app.create_workspace(slug, slug, &email).await.unwrap();
        self.sign_in(slug, &email, password.expose()).await
    }

    async fn sign_in(&self, slug: &str, email: &str, password: &str) -> String {
        let (status, headers, _) = call(
            &self.router,
            "POST",
            "/v1/console/session",
            None,
            None,
            Some(json!({"workspace": slug, "email": email, "password": password})),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let cookie = headers[header::SET_COOKIE].to_str().unwrap();
        cookie.split(';').next().unwrap().to_owned()
    }

    async fn phone(&self, cookie: &str) -> Phone {
        let (status, _, offer) = call(
            &self.router,
            "POST",
            "/v1/console/devices/enrollments",
            Some(cookie),
            None,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        let signer = DeviceSigner::generate();
        let (status, _, enrolled) = call(
            &self.router,
            "POST",
            "/v1/mobile/devices",
            None,
            None,
            Some(json!({"enrollment_code": offer["code"], "name": "Pixel", "platform": "fcm", "push_token": "fcm-token",
                        "public_key": signer.public_key().to_jwk()})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{enrolled}");
        assert_eq!(enrolled["audience"], PUBLIC);
        Phone {
            signer,
            id: enrolled["device_id"].as_str().unwrap().to_owned(),
        }
    }

    fn device_auth(&self, phone: &Phone) -> Option<String> {
        Some(format!(
            "Device {}",
            phone
                .signer
                .sign_request(&phone.id, PUBLIC, self.clock.now())
        ))
    }

    async fn pending(&self, phone: &Phone) -> Vec<Value> {
        let (status, _, body) = call(
            &self.router,
            "GET",
            "/v1/mobile/challenges",
            None,
            self.device_auth(phone),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        body["challenges"].as_array().unwrap().clone()
    }

    fn decision(&self, phone: &Phone, challenge: &Value, approve: bool, number: u8) -> Value {
        let shown = |v: &Value| v.as_str().map(str::to_owned);
        let support = challenge["action"] == "scim_token.support_rotate";
        let iat = self.clock.now().unix_timestamp();
        let claims = DecisionClaims {
            iss: phone.id.clone(),
            aud: PUBLIC.into(),
            sub: challenge["id"].as_str().unwrap().into(),
            nonce: challenge["nonce"].as_str().unwrap().into(),
            action: challenge["action"].as_str().unwrap().into(),
            decision: if approve { "approve" } else { "deny" }.into(),
            number: Some(number),
            reason: None,
            workspace: support
                .then(|| shown(&challenge["workspace"]["slug"]))
                .flatten(),
            ticket: support
                .then(|| shown(&challenge["context"]["ticket"]))
                .flatten(),
            iat,
            exp: iat + 60,
        };
        json!({"decision": phone.signer.sign_decision(&phone.id, &claims)})
    }
}

/// A route that reads its body by hand, past every extractor's limit, still stops at the largest
/// size any route accepts: the router's `cap_body` layer bounds the body itself.
#[tokio::test]
async fn a_body_read_by_hand_stops_at_the_largest_route_limit() {
    use axum::routing::post;
    let limit = super::scim::SCIM_BODY_LIMIT;
    let router = axum::Router::new()
        .route(
            "/raw",
            post(|body: Body| async move {
                match axum::body::to_bytes(body, usize::MAX).await {
                    Ok(bytes) => (StatusCode::OK, bytes.len().to_string()),
                    Err(_) => (StatusCode::PAYLOAD_TOO_LARGE, String::new()),
                }
            }),
        )
        .layer(axum::middleware::from_fn(super::cap_body));
    for (size, status) in [
        (limit, StatusCode::OK),
        (limit + 1, StatusCode::PAYLOAD_TOO_LARGE),
    ] {
        // Streamed, without a Content-Length: only the bytes themselves can be counted.
        let chunks = vec![Ok::<_, std::io::Error>(vec![b'x'; size])];
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        let req = Request::post("/raw").body(body).unwrap();
        let res = router.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), status, "{size} bytes");
    }
}

#[tokio::test]
async fn expiry_is_seen_by_the_waiting_stream_when_the_clock_moves() {
    let h = harness().await;
    let cookie = h.owner("acme").await;
    let phone = h.phone(&cookie).await;
    let (status, _, created) = call(
        &h.router,
        "POST",
        "/v1/console/scim-token/reveal",
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = created["challenge_id"].as_str().unwrap().to_owned();
    let seen_by_phone = h.pending(&phone).await.remove(0);
    assert_eq!(seen_by_phone["id"], id.as_str());

    let req = Request::get(format!("/v1/console/challenges/{id}/events"))
        .header(header::COOKIE, &cookie)
        .body(Body::empty())
        .unwrap();
    let res = h.router.clone().oneshot(req).await.unwrap();
    assert_eq!(res.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = res.into_body().into_data_stream();
    let first = String::from_utf8(body.next().await.unwrap().unwrap().to_vec()).unwrap();
    assert!(
        first.contains("event: status") && first.contains(r#"{"status":"pending"}"#),
        "{first}"
    );

    h.clock.advance(Duration::seconds(120));
    assert_eq!(h.app.sweep_challenges().await.unwrap(), 1);
    let next = String::from_utf8(body.next().await.unwrap().unwrap().to_vec()).unwrap();
    assert!(next.contains(r#"{"status":"expired"}"#), "{next}");
    assert!(
        body.next().await.is_none(),
        "the stream closes after a final status"
    );

    // The phone no longer sees it, a late (well-signed) approval is refused, nothing is released.
    assert!(h.pending(&phone).await.is_empty());
    let number = created["number"].as_u64().unwrap() as u8;
    let (status, _, _) = call(
        &h.router,
        "POST",
        &format!("/v1/mobile/challenges/{id}/decision"),
        None,
        h.device_auth(&phone),
        Some(h.decision(&phone, &seen_by_phone, true, number)),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _, _) = call(
        &h.router,
        "POST",
        &format!("/v1/console/challenges/{id}/release"),
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn an_approved_but_unreleased_challenge_expires_too() {
    let h = harness().await;
    let cookie = h.owner("acme").await;
    let phone = h.phone(&cookie).await;
    let (_, _, created) = call(
        &h.router,
        "POST",
        "/v1/console/scim-token/reveal",
        Some(&cookie),
        None,
        None,
    )
    .await;
    let challenge = h.pending(&phone).await.remove(0);
    let number = created["number"].as_u64().unwrap() as u8;
    let id = challenge["id"].as_str().unwrap();
    let (status, _, body) = call(
        &h.router,
        "POST",
        &format!("/v1/mobile/challenges/{id}/decision"),
        None,
        h.device_auth(&phone),
        Some(h.decision(&phone, &challenge, true, number)),
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("approved"))
    );
    h.clock.advance(Duration::seconds(121));
    let (_, _, view) = call(
        &h.router,
        "GET",
        &format!("/v1/console/challenges/{id}"),
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert_eq!(view["status"], "expired");
    let (status, _, _) = call(
        &h.router,
        "POST",
        &format!("/v1/console/challenges/{id}/release"),
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn racing_decisions_and_releases_have_exactly_one_winner() {
    let h = harness().await;
    let cookie = h.owner("acme").await;
    let phone = h.phone(&cookie).await;
    let (_, _, created) = call(
        &h.router,
        "POST",
        "/v1/console/scim-token/reveal",
        Some(&cookie),
        None,
        None,
    )
    .await;
    let number = created["number"].as_u64().unwrap() as u8;
    let challenge = h.pending(&phone).await.remove(0);
    let id = challenge["id"].as_str().unwrap().to_owned();

    let decisions = (0..16).map(|i| {
        let uri = format!("/v1/mobile/challenges/{id}/decision");
        let body = h.decision(&phone, &challenge, i < 12, number);
        let auth = h.device_auth(&phone);
        let router = h.router.clone();
        async move { call(&router, "POST", &uri, None, auth, Some(body)).await.0 }
    });
    let statuses = futures_util::future::join_all(decisions).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    assert!(statuses
        .iter()
        .all(|s| *s == StatusCode::OK || *s == StatusCode::CONFLICT));

    let (_, _, view) = call(
        &h.router,
        "GET",
        &format!("/v1/console/challenges/{id}"),
        Some(&cookie),
        None,
        None,
    )
    .await;
    if view["status"] == "approved" {
        let releases = (0..16).map(|_| {
            let router = h.router.clone();
            let uri = format!("/v1/console/challenges/{id}/release");
            let cookie = cookie.clone();
            async move {
                call(&router, "POST", &uri, Some(&cookie), None, None)
                    .await
                    .0
            }
        });
        let statuses = futures_util::future::join_all(releases).await;
        assert_eq!(
            statuses.iter().filter(|s| **s == StatusCode::OK).count(),
            1,
            "{statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|s| **s == StatusCode::GONE).count(),
            15
        );
    } else {
        assert_eq!(view["status"], "denied");
    }
}

#[tokio::test]
async fn not_me_pauses_new_challenges_for_fifteen_minutes_of_clock_time() {
    let h = harness().await;
    let cookie = h.owner("acme").await;
    let phone = h.phone(&cookie).await;
    call(
        &h.router,
        "POST",
        "/v1/console/scim-token/reveal",
        Some(&cookie),
        None,
        None,
    )
    .await;
    let challenge = h.pending(&phone).await.remove(0);
    let mut body = h.decision(&phone, &challenge, false, 0);
    // Re-sign with a reason.
    let iat = h.clock.now().unix_timestamp();
    let claims = DecisionClaims {
        iss: phone.id.clone(),
        aud: PUBLIC.into(),
        sub: challenge["id"].as_str().unwrap().into(),
        nonce: challenge["nonce"].as_str().unwrap().into(),
        action: "scim_token.reveal".into(),
        decision: "deny".into(),
        number: None,
        reason: Some("not_me".into()),
        workspace: None,
        ticket: None,
        iat,
        exp: iat + 60,
    };
    body["decision"] = json!(phone.signer.sign_decision(&phone.id, &claims));
    let (status, _, answer) = call(
        &h.router,
        "POST",
        &format!(
            "/v1/mobile/challenges/{}/decision",
            challenge["id"].as_str().unwrap()
        ),
        None,
        h.device_auth(&phone),
        Some(body),
    )
    .await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (StatusCode::OK, Some("denied"))
    );

    let (status, headers, _) = call(
        &h.router,
        "POST",
        "/v1/console/scim-token/reveal",
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers[header::RETRY_AFTER], "900");
    h.clock.advance(Duration::minutes(15));
    let (status, _, _) = call(
        &h.router,
        "POST",
        "/v1/console/scim-token/reveal",
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let (_, _, audit) = call(
        &h.router,
        "GET",
        "/v1/console/audit",
        Some(&cookie),
        None,
        None,
    )
    .await;
    let kinds: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"security.suspected_attack"), "{kinds:?}");
}

#[tokio::test]
async fn sessions_expire_when_idle_and_at_their_absolute_limit() {
    let h = harness().await;
    let cookie = h.owner("acme").await;
    let whoami = |c: String| {
        let router = h.router.clone();
        async move {
            call(&router, "GET", "/v1/console/session", Some(&c), None, None)
                .await
                .0
        }
    };
    h.clock.advance(Duration::minutes(29));
    assert_eq!(whoami(cookie.clone()).await, StatusCode::OK);
    h.clock.advance(Duration::minutes(31));
    assert_eq!(
        whoami(cookie.clone()).await,
        StatusCode::UNAUTHORIZED,
        "idle for 31 minutes"
    );

    // Kept busy, a session still ends at its absolute limit (12 h by default).
    let (_, password) = h
        .app
        .add_member("acme", "admin@acme.test", crate::store::Role::Admin)
        .await
        .unwrap();
    let cookie = h
        .sign_in("acme", "admin@acme.test", password.expose())
        .await;
    for _ in 0..35 {
        h.clock.advance(Duration::minutes(20));
        assert_eq!(whoami(cookie.clone()).await, StatusCode::OK);
    }
    h.clock.advance(Duration::minutes(20));
    assert_eq!(
        whoami(cookie.clone()).await,
        StatusCode::UNAUTHORIZED,
        "past 12 hours"
    );
}

#[tokio::test]
async fn device_jws_replay_and_expiry_follow_the_clock() {
    let h = harness().await;
    let cookie = h.owner("acme").await;
    let phone = h.phone(&cookie).await;
    let auth = h.device_auth(&phone);
    let (status, _, _) = call(
        &h.router,
        "GET",
        "/v1/mobile/challenges",
        None,
        auth.clone(),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = call(&h.router, "GET", "/v1/mobile/challenges", None, auth, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "replayed jti");
    assert_eq!(body["status"], 401);

    let old = h.device_auth(&phone);
    h.clock.advance(Duration::seconds(60 + 61));
    let (status, _, _) = call(&h.router, "GET", "/v1/mobile/challenges", None, old, None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "expired beyond the allowed skew"
    );
}

/// A promotion (CONTRACT.md section 3a) changes nothing until its release, and an approval left
/// unreleased past the challenge's lifetime promotes nobody: the clock moves, nothing sleeps.
#[tokio::test]
async fn a_promotion_takes_effect_only_at_a_release_within_its_lifetime() {
    let h = harness().await;
    let cookie = h.owner("acme").await;
    let phone = h.phone(&cookie).await;
    let (status, headers, invited) = call(
        &h.router,
        "POST",
        "/v1/console/members",
        Some(&cookie),
        None,
        Some(json!({"email": "Bob@acme.test", "role": "member"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{invited}");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(invited["role"], "member");
    assert_eq!(invited["password"].as_str().unwrap().len(), 20);
    let id = invited["id"].as_i64().unwrap();
    let role_of = |members: &Value| {
        members["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .map(|m| m["role"].clone())
            .unwrap()
    };
    let member_path = format!("/v1/console/members/{id}");
    let promote = || {
        call(
            &h.router,
            "PATCH",
            &member_path,
            Some(&cookie),
            None,
            Some(json!({"role": "admin"})),
        )
    };
    let release = |challenge: String| {
        let cookie = cookie.clone();
        let router = h.router.clone();
        async move {
            call(
                &router,
                "POST",
                &format!("/v1/console/challenges/{challenge}/release"),
                Some(&cookie),
                None,
                None,
            )
            .await
        }
    };

    let (status, _, asked) = promote().await;
    assert_eq!(status, StatusCode::ACCEPTED, "{asked}");
    let shown = h.pending(&phone).await.remove(0);
    assert_eq!(shown["action"], "member.promote");
    assert_eq!(shown["context"]["member"]["email"], "Bob@acme.test");
    assert_eq!(shown["context"]["member"]["role"], "admin");
    let number = asked["number"].as_u64().unwrap() as u8;
    let (status, _, _) = call(
        &h.router,
        "POST",
        &format!(
            "/v1/mobile/challenges/{}/decision",
            shown["id"].as_str().unwrap()
        ),
        None,
        h.device_auth(&phone),
        Some(h.decision(&phone, &shown, true, number)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, members) = call(
        &h.router,
        "GET",
        "/v1/console/members",
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert_eq!(role_of(&members), "member", "approved is not yet in effect");

    // Approved, then left past its lifetime: expired, nobody promoted.
    h.clock.advance(Duration::seconds(121));
    let (status, _, _) = release(asked["challenge_id"].as_str().unwrap().to_owned()).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, _, members) = call(
        &h.router,
        "GET",
        "/v1/console/members",
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert_eq!(role_of(&members), "member");

    // Asked again and released in time: in effect at the release, once.
    let (status, _, asked) = promote().await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let shown = h.pending(&phone).await.remove(0);
    let number = asked["number"].as_u64().unwrap() as u8;
    call(
        &h.router,
        "POST",
        &format!(
            "/v1/mobile/challenges/{}/decision",
            shown["id"].as_str().unwrap()
        ),
        None,
        h.device_auth(&phone),
        Some(h.decision(&phone, &shown, true, number)),
    )
    .await;
    h.clock.advance(Duration::seconds(119));
    let challenge = asked["challenge_id"].as_str().unwrap().to_owned();
    let (status, _, done) = release(challenge.clone()).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(
        done,
        json!({"action": "member.promote", "id": id, "role": "admin"})
    );
    let (status, _, _) = release(challenge).await;
    assert_eq!(status, StatusCode::GONE);
    let (_, _, members) = call(
        &h.router,
        "GET",
        "/v1/console/members",
        Some(&cookie),
        None,
        None,
    )
    .await;
    assert_eq!(role_of(&members), "admin");
}

/// An invitation link (issue 16) works once, for 24 hours of clock time: the invitee chooses a
/// password and is signed in; a second use, and any use after the day, is 410; an unknown link 404.
#[tokio::test]
async fn an_invitation_link_works_once_within_a_day() {
    let h = harness().await;
    let cookie = h.owner("acme").await;
    let invite = |email: &'static str| {
        call(
            &h.router,
            "POST",
            "/v1/console/members",
            Some(&cookie),
            None,
            Some(json!({"email": email, "role": "member", "delivery": "link"})),
        )
    };
    let accept = |token: String, password: &'static str| {
        let router = h.router.clone();
        async move {
            call(
                &router,
                "POST",
                "/v1/console/invitations/accept",
                None,
                None,
                Some(json!({"token": token, "password": password})),
            )
            .await
        }
    };
    let token_of = |answer: &Value| {
        let url = answer["invitation_url"].as_str().unwrap();
        assert!(url.starts_with(&format!("{PUBLIC}/#invitation=")), "{url}");
        url.rsplit_once('=').unwrap().1.to_owned()
    };

    let (status, headers, first) = invite("kim@acme.test").await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert!(first.get("password").is_none(), "{first}");
    let expires = OffsetDateTime::parse(
        first["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(expires, h.clock.now() + Duration::hours(24));
    let (status, _, second) = invite("lee@acme.test").await;
    assert_eq!(status, StatusCode::CREATED, "{second}");

    // A short password is refused and spends nothing; an unknown link is 404.
    let (status, _, _) = accept(token_of(&first), "short").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _, _) = accept("not-a-link".into(), "a long enough password").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Within the day: signed in, with the password chosen; then the link is spent.
    h.clock.advance(Duration::hours(23));
    let (status, headers, me) = accept(token_of(&first), "kim's own passphrase").await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["email"], "kim@acme.test");
    assert_eq!(me["role"], "member");
    assert!(headers.contains_key(header::SET_COOKIE));
    let (status, _, _) = accept(token_of(&first), "another passphrase").await;
    assert_eq!(status, StatusCode::GONE);
    h.sign_in("acme", "kim@acme.test", "kim's own passphrase")
        .await;

    // After the day: 410, and nobody can sign in as the second invitee.
    h.clock.advance(Duration::hours(1));
    let (status, _, _) = accept(token_of(&second), "lee's own passphrase").await;
    assert_eq!(status, StatusCode::GONE);
    let (status, _, _) = call(
        &h.router,
        "POST",
        "/v1/console/session",
        None,
        None,
        Some(json!({"workspace": "acme", "email": "lee@acme.test", "password": "lee's own passphrase"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
