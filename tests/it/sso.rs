//! Single sign-on to the console (CONTRACT.md section 11), against the real binary: end to end with a
//! real OpenID provider (Node's oidc-provider, tests/oidc/), including key rotation at the provider
//! and re-authentication, and every refusal with a small provider of our own that signs the ID
//! tokens no honest provider would. Each refusal must end at `/?sso_error=…`, with no session and an
//! audit entry when it names a workspace; providers inside our network are refused before anything
//! is sent to them, and a flood from one address ends in 429 without filling the audit log.

use crate::support;

use reqwest::Method;
use serde_json::{json, Value};
use support::oidc::{whoami, Forge, MiniProvider, NodeProvider, Signer, UserAgent};
use support::{json_body, problem, unix_now, Browser, ServerOptions, TestServer, Workspace};
use tokio::sync::OnceCell;

const CLIENT_ID: &str = "assent-console";
const CLIENT_SECRET: &str = "sso-client-secret-7Hq2vX9pLw4kRt6N";
/// What `PUT /v1/console/sso` answers for any provider it cannot use (src/service/oidc.rs).
const PROVIDER_REFUSED: &str =
    "the provider could not be reached or its discovery document is not valid";

/// The test providers listen on 127.0.0.1: the servers of these tests allow a loopback provider.
fn loopback_allowed() -> ServerOptions {
    ServerOptions {
        env: vec![("ASSENT_SSO_ALLOW_LOOPBACK".into(), "1".into())],
        ..ServerOptions::default()
    }
}

/// The server most tests of this file share.
async fn shared() -> &'static TestServer {
    static SERVER: OnceCell<TestServer> = OnceCell::const_new();
    SERVER
        .get_or_init(|| TestServer::start(loopback_allowed()))
        .await
}

fn redirect_uri(server: &TestServer) -> String {
    format!("{}/v1/sso/callback", server.public_url)
}

async fn owner(server: &TestServer, ws: &Workspace) -> Browser {
    Browser::logged_in(server, &ws.slug, &ws.owner_email, &ws.owner_password).await
}

async fn put_sso(browser: &Browser, body: &Value) -> reqwest::Response {
    browser
        .request(Method::PUT, "/v1/console/sso")
        .json(body)
        .send()
        .await
        .expect("PUT /v1/console/sso")
}

fn settings(issuer: &str, domains: &[&str], role: &str, enforce: bool) -> Value {
    json!({
        "issuer": issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "allowed_email_domains": domains,
        "default_role": role,
        "enforce": enforce,
    })
}

async fn configure(owner: &Browser, issuer: &str, domains: &[&str], role: &str) -> Value {
    json_body(
        put_sso(owner, &settings(issuer, domains, role, false)).await,
        200,
    )
    .await
}

/// The workspace's audit entries of one kind, newest first.
async fn audit(owner: &Browser, kind: &str) -> Vec<Value> {
    let body = json_body(owner.get("/v1/console/audit?limit=200").await, 200).await;
    body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .cloned()
        .collect()
}

/// Counts refusals in the audit log, so that each one is seen to add exactly one entry.
struct Refusals {
    seen: usize,
}

impl Refusals {
    async fn new(owner: &Browser) -> Self {
        Refusals {
            seen: audit(owner, "sso.login.failed").await.len(),
        }
    }

    /// Asserts the redirect, the absence of a session, and one new audit entry with this reason.
    async fn expect(&mut self, owner: &Browser, outcome: &support::oidc::Outcome, reason: &str) {
        outcome.refused(reason);
        let failures = audit(owner, "sso.login.failed").await;
        assert_eq!(
            failures.len(),
            self.seen + 1,
            "one audit entry per refusal ({reason}): {failures:#?}"
        );
        self.seen += 1;
        assert_eq!(failures[0]["detail"]["reason"], reason, "{:#}", failures[0]);
        assert!(failures[0]["ip"].is_string(), "{:#}", failures[0]);
    }
}

/// One sign-in through the small provider, answered as `forge` says.
async fn through_mini(
    server: &TestServer,
    mini: &MiniProvider,
    slug: &str,
    forge: Forge,
) -> support::oidc::Outcome {
    let mut ua = UserAgent::new();
    mini.forge(forge);
    let authorize = ua.start(server, slug).await;
    let back = mini.authorize(&mut ua, &authorize).await;
    ua.callback(&back).await
}

#[tokio::test]
async fn settings_are_for_owners_checked_against_the_provider_and_never_show_the_secret() {
    let server = shared().await;
    let ws = server.create_workspace();
    let owner = owner(server, &ws).await;
    let (admin_email, admin_password) = server.add_member(&ws, "admin");
    let admin = Browser::logged_in(server, &ws.slug, &admin_email, &admin_password).await;
    let (member_email, member_password) = server.add_member(&ws, "member");
    let member = Browser::logged_in(server, &ws.slug, &member_email, &member_password).await;
    let mini = MiniProvider::start(CLIENT_ID, CLIENT_SECRET, &redirect_uri(server)).await;

    problem(owner.get("/v1/console/sso").await, &[404]).await;
    problem(
        put_sso(&admin, &settings(&mini.issuer, &[], "member", false)).await,
        &[403],
    )
    .await;
    problem(member.get("/v1/console/sso").await, &[403]).await;

    // Refused before saving: not https, unreachable, not an OpenID provider, an issuer that differs
    // from the document's, owner as the default role, no secret on first save.
    let plain_http = problem(
        put_sso(
            &owner,
            &settings("http://idp.example.com", &[], "member", false),
        )
        .await,
        &[400],
    )
    .await;
    assert!(
        plain_http["detail"].as_str().unwrap().contains("https"),
        "{plain_http}"
    );
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let unreachable = problem(
        put_sso(&owner, &settings(&closed, &[], "member", false)).await,
        &[400],
    )
    .await;
    // One answer whatever the cause (closed port, not a provider, another issuer): the form is no
    // port scanner. The cause is in the server's log.
    assert_eq!(unreachable["detail"], PROVIDER_REFUSED, "{unreachable}");
    let closed_port = closed.rsplit(':').next().unwrap();
    assert!(
        !unreachable.to_string().contains(closed_port),
        "{unreachable}"
    );
    let not_a_provider = problem(
        put_sso(&owner, &settings(&server.base, &[], "member", false)).await,
        &[400],
    )
    .await;
    assert_eq!(not_a_provider["detail"], PROVIDER_REFUSED);
    let other_issuer = format!("{}/", mini.issuer);
    let mismatch = problem(
        put_sso(&owner, &settings(&other_issuer, &[], "member", false)).await,
        &[400],
    )
    .await;
    assert_eq!(mismatch["detail"], PROVIDER_REFUSED, "{mismatch}");
    assert!(
        server
            .log()
            .lines()
            .any(|l| l.contains("single sign-on settings refused") && l.contains("issuer")),
        "the cause of a refusal is not in the server's log"
    );
    problem(
        put_sso(&owner, &settings(&mini.issuer, &[], "owner", false)).await,
        &[400],
    )
    .await;
    problem(
        put_sso(
            &owner,
            &settings(&mini.issuer, &["not a domain"], "member", false),
        )
        .await,
        &[400],
    )
    .await;
    let mut no_secret = settings(&mini.issuer, &[], "member", false);
    no_secret.as_object_mut().unwrap().remove("client_secret");
    problem(put_sso(&owner, &no_secret).await, &[400]).await;
    problem(admin.get("/v1/console/sso").await, &[404]).await;

    let saved = json_body(
        put_sso(
            &owner,
            &settings(
                &mini.issuer,
                &["Acme.Example", "@acme.example", "b.example"],
                "admin",
                false,
            ),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(saved["issuer"], mini.issuer.as_str());
    assert_eq!(saved["client_id"], CLIENT_ID);
    assert_eq!(
        saved["allowed_email_domains"],
        json!(["acme.example", "b.example"])
    );
    assert_eq!(saved["default_role"], "admin");
    assert_eq!(saved["enforce"], false);
    assert_eq!(saved["redirect_uri"], redirect_uri(server).as_str());
    assert!(saved.get("client_secret").is_none(), "{saved}");
    support::utc_time(&saved, "updated_at");

    // The secret may be left out to keep it, for the same issuer and client only.
    let kept = json_body(put_sso(&owner, &no_secret).await, 200).await;
    assert_eq!(kept["allowed_email_domains"], json!([]));
    let mut other_client = no_secret.clone();
    other_client["client_id"] = json!("another-client");
    problem(put_sso(&owner, &other_client).await, &[400]).await;

    let shown = admin.get("/v1/console/sso").await;
    let text = shown.text().await.unwrap();
    assert!(
        !text.contains(CLIENT_SECRET) && !text.contains("client_secret"),
        "{text}"
    );
    let shown: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(shown["issuer"], mini.issuer.as_str());

    let configured = audit(&owner, "sso.configured").await;
    assert_eq!(configured.len(), 2, "{configured:#?}");
    assert_eq!(configured[0]["actor"], ws.owner_email.as_str());
    assert!(!configured[0].to_string().contains(CLIENT_SECRET));

    // Sealed at rest and never logged.
    server
        .assert_db_free_of(&[("SSO client secret", CLIENT_SECRET)])
        .await;
    server.assert_log_free_of(&[("SSO client secret", CLIENT_SECRET)]);
}

#[tokio::test]
async fn a_real_provider_signs_members_in_links_them_creates_them_and_survives_key_rotation() {
    let server = shared().await;
    let ws = server.create_workspace();
    let owner = owner(server, &ws).await;
    let domain = format!("{}.example.com", ws.slug);
    let (alice, _) = server.add_member(&ws, "member");
    let newcomer = format!("newcomer@{domain}");

    let provider = NodeProvider::start(CLIENT_ID, CLIENT_SECRET, &redirect_uri(server)).await;
    provider.account("alice-at-idp", &alice, true).await;
    provider.account("newcomer-at-idp", &newcomer, true).await;
    configure(&owner, &provider.issuer, &[&domain], "admin").await;

    // The authorization request: code flow, PKCE S256, state, nonce, the three scopes.
    let mut ua = UserAgent::new();
    let authorize = ua.start(server, &ws.slug).await;
    let url = reqwest::Url::parse(&authorize).unwrap();
    assert!(
        authorize.starts_with(&format!("{}/auth", provider.issuer)),
        "{authorize}"
    );
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["redirect_uri"], redirect_uri(server));
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43);
    assert!(q["state"].len() >= 43 && q["nonce"].len() >= 43, "{q:?}");
    let scopes: Vec<&str> = q["scope"].split(' ').collect();
    for s in ["openid", "email", "profile"] {
        assert!(scopes.contains(&s), "{q:?}");
    }

    // An existing member, by e-mail: linked on first sign-in.
    let back = provider.login(&mut ua, &authorize, "alice-at-idp").await;
    assert!(back.starts_with(&redirect_uri(server)), "{back}");
    let first = ua.callback(&back).await;
    let cookie = first.signed_in();
    let me = whoami(server, &cookie).await;
    assert_eq!(me["email"], alice.as_str());
    assert_eq!(me["role"], "member");
    assert_eq!(me["workspace"], ws.slug.as_str());
    let linked = audit(&owner, "sso.linked").await;
    assert_eq!(linked.len(), 1, "{linked:#?}");
    assert_eq!(linked[0]["detail"]["sub"], "alice-at-idp");
    let succeeded = audit(&owner, "sso.login.succeeded").await;
    assert_eq!(succeeded[0]["actor"], alice.as_str());

    // The same answer again is a replay.
    let mut refusals = Refusals::new(&owner).await;
    let replay = ua.callback(&back).await;
    refusals.expect(&owner, &replay, "invalid_state").await;

    // Key rotation at the provider: Assent holds the old keys and must fetch the new ones.
    let before = provider.kids().await;
    provider.rotate_keys().await;
    let after = provider.kids().await;
    assert!(
        before.iter().all(|k| !after.contains(k)),
        "{before:?} {after:?}"
    );
    let mut ua2 = UserAgent::new();
    let authorize = ua2.start(server, &ws.slug).await;
    let back = provider.login(&mut ua2, &authorize, "alice-at-idp").await;
    let second = ua2.callback(&back).await;
    let cookie = second.signed_in();
    assert_eq!(whoami(server, &cookie).await["email"], alice.as_str());
    let issuer_field = format!("issuer={}", provider.issuer);
    assert!(
        server.log().lines().any(|l| {
            l.contains("fetched the provider's signing keys again") && l.contains(&issuer_field)
        }),
        "the second sign-in did not fetch the rotated keys of {}",
        provider.issuer
    );
    assert_eq!(
        audit(&owner, "sso.linked").await.len(),
        1,
        "linked once, followed after"
    );

    // Someone new from an allowed domain joins with the default role.
    let mut ua3 = UserAgent::new();
    let authorize = ua3.start(server, &ws.slug).await;
    let back = provider
        .login(&mut ua3, &authorize, "newcomer-at-idp")
        .await;
    let cookie = ua3.callback(&back).await.signed_in();
    let me = whoami(server, &cookie).await;
    assert_eq!(me["email"], newcomer.as_str());
    assert_eq!(me["role"], "admin");
    let created = audit(&owner, "sso.member.created").await;
    assert_eq!(created[0]["actor"], newcomer.as_str());
    // An SSO session is a console session like any other: the token still needs the phone.
    let reveal = reqwest::Client::new()
        .post(format!("{}/v1/console/scim-token/reveal", server.base))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    problem(reveal, &[409]).await;

    // "Cancel" at the provider: an error answer.
    let mut ua4 = UserAgent::new();
    let authorize = ua4.start(server, &ws.slug).await;
    let back = provider.cancel(&mut ua4, &authorize).await;
    assert!(back.contains("error=access_denied"), "{back}");
    let cancelled = ua4.callback(&back).await;
    refusals.expect(&owner, &cancelled, "provider_error").await;

    server.assert_log_free_of(&[("SSO client secret", CLIENT_SECRET)]);
}

#[tokio::test]
async fn forged_or_replayed_state_ends_without_a_session() {
    let server = shared().await;
    let ws = server.create_workspace();
    let owner = owner(server, &ws).await;
    let (member, _) = server.add_member(&ws, "member");
    let mini = MiniProvider::start(CLIENT_ID, CLIENT_SECRET, &redirect_uri(server)).await;
    mini.identity("sub-state", &member);
    configure(&owner, &mini.issuer, &[], "member").await;
    let mut refusals = Refusals::new(&owner).await;

    // A state Assent never issued, in a browser that did start a sign-in.
    let mut ua = UserAgent::new();
    let authorize = ua.start(server, &ws.slug).await;
    let back = mini.authorize(&mut ua, &authorize).await;
    let mut forged = reqwest::Url::parse(&back).unwrap();
    let code: String = forged
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    forged
        .query_pairs_mut()
        .clear()
        .append_pair("code", &code)
        .append_pair("state", "forged-state-0000");
    // No workspace can be named for a state nobody issued: counted in the metrics, never an audit
    // row (anyone can send these, as many as they like).
    let tokens = mini.token_requests();
    let counted = support::oidc::sso_refusals_metric(server, "invalid_state").await;
    ua.callback(forged.as_str()).await.refused("invalid_state");
    let missing = format!("{}?code={code}", redirect_uri(server));
    ua.callback(&missing).await.refused("invalid_state");
    assert_eq!(
        mini.token_requests(),
        tokens,
        "no code is exchanged without a valid state"
    );
    assert!(
        support::oidc::deployment_refusals(server, &ua)
            .await
            .is_empty(),
        "a refusal without a workspace was audited"
    );
    assert!(support::oidc::sso_refusals_metric(server, "invalid_state").await >= counted + 2);
    assert_eq!(audit(&owner, "sso.login.failed").await.len(), refusals.seen);

    // The genuine answer, carried to another browser (login CSRF): refused, and the state is spent.
    let mut other = UserAgent::new();
    refusals
        .expect(&owner, &other.callback(&back).await, "invalid_state")
        .await;
    refusals
        .expect(&owner, &ua.callback(&back).await, "invalid_state")
        .await;

    // A success, then the same answer replayed.
    let mut ua = UserAgent::new();
    let authorize = ua.start(server, &ws.slug).await;
    let back = mini.authorize(&mut ua, &authorize).await;
    ua.callback(&back).await.signed_in();
    refusals
        .expect(&owner, &ua.callback(&back).await, "invalid_state")
        .await;

    // Too slow: the sign-in is older than its 10 minutes.
    let mut ua = UserAgent::new();
    let authorize = ua.start(server, &ws.slug).await;
    let back = mini.authorize(&mut ua, &authorize).await;
    support::oidc::age_sso_pending(server, &ws.slug, 11 * 60).await;
    refusals
        .expect(&owner, &ua.callback(&back).await, "expired")
        .await;

    // Unknown workspace, or one without single sign-on: back to the page, nothing started.
    for slug in ["no-such-workspace", server.create_workspace().slug.as_str()] {
        let hop = UserAgent::new()
            .get(&format!("{}/v1/sso/{slug}/start", server.base))
            .await;
        assert_eq!(hop.status, 302, "{hop:?}");
        assert!(hop
            .location
            .unwrap()
            .ends_with("/?sso_error=not_configured"));
        assert!(hop.set_cookie.is_empty(), "{:?}", hop.set_cookie);
    }
}

#[tokio::test]
async fn id_tokens_that_fail_a_check_end_without_a_session() {
    let server = shared().await;
    let ws = server.create_workspace();
    let owner = owner(server, &ws).await;
    let (member, _) = server.add_member(&ws, "member");
    let mini = MiniProvider::start(CLIENT_ID, CLIENT_SECRET, &redirect_uri(server)).await;
    mini.identity("sub-checks", &member);
    configure(&owner, &mini.issuer, &["allowed.example"], "member").await;
    let mut refusals = Refusals::new(&owner).await;
    let now = unix_now();

    // The honest answer signs in (so each refusal below is the forgery's doing).
    let cookie = through_mini(server, &mini, &ws.slug, Forge::default())
        .await
        .signed_in();
    assert_eq!(whoami(server, &cookie).await["email"], member.as_str());

    let cases: Vec<(&str, Forge)> = vec![
        (
            "wrong_nonce",
            Forge::default().claim("nonce", json!("not-the-nonce-we-sent")),
        ),
        ("wrong_nonce", Forge::default().claim("nonce", Value::Null)),
        ("unknown_key", Forge::default().signer(Signer::Unknown)),
        (
            "invalid_token",
            Forge::default().signer(Signer::ClientSecret),
        ),
        (
            "wrong_audience",
            Forge::default().claim("aud", json!("another-client")),
        ),
        (
            "wrong_audience",
            Forge::default()
                .claim("aud", json!([CLIENT_ID, "another-client"]))
                .claim("azp", json!(CLIENT_ID)),
        ),
        (
            "wrong_audience",
            Forge::default().claim("azp", json!("another-client")),
        ),
        (
            "token_expired",
            Forge::default()
                .claim("exp", json!(now - 600))
                .claim("iat", json!(now - 900)),
        ),
        (
            "token_expired",
            Forge::default()
                .claim("iat", json!(now + 3600))
                .claim("exp", json!(now + 4000)),
        ),
        (
            "token_expired",
            Forge::default().claim("iat", json!(now - 3600)),
        ),
        (
            "wrong_issuer",
            Forge::default().claim("iss", json!("http://127.0.0.1:9/another-issuer")),
        ),
        (
            "email_not_verified",
            Forge::default().claim("email_verified", json!(false)),
        ),
        (
            "email_not_verified",
            Forge::default().claim("email_verified", Value::Null),
        ),
        (
            "email_missing",
            Forge::default().claim("email", Value::Null),
        ),
        (
            "provider_error",
            Forge {
                authorize_error: Some("access_denied".into()),
                ..Forge::default()
            },
        ),
        (
            "token_exchange_failed",
            Forge {
                token_error: Some("invalid_grant".into()),
                ..Forge::default()
            },
        ),
        // No member has this e-mail, and its domain may not join.
        (
            "domain_not_allowed",
            Forge::default()
                .claim("sub", json!("sub-stranger"))
                .claim("email", json!("stranger@elsewhere.example")),
        ),
    ];
    for (reason, forge) in cases {
        let outcome = through_mini(server, &mini, &ws.slug, forge.clone()).await;
        assert_eq!(
            outcome.error().as_deref(),
            Some(reason),
            "{forge:?}: {outcome:?}"
        );
        refusals.expect(&owner, &outcome, reason).await;
    }

    // From an allowed domain, the same stranger would have joined.
    let joined = through_mini(
        server,
        &mini,
        &ws.slug,
        Forge::default()
            .claim("sub", json!("sub-joiner"))
            .claim("email", json!("joiner@Allowed.example")),
    )
    .await;
    let me = whoami(server, &joined.signed_in()).await;
    assert_eq!(me["role"], "member");
}

#[tokio::test]
async fn the_subject_link_beats_a_changed_email() {
    let server = shared().await;
    let ws = server.create_workspace();
    let owner = owner(server, &ws).await;
    let (ann, _) = server.add_member(&ws, "member");
    let (bob, _) = server.add_member(&ws, "admin");
    let mini = MiniProvider::start(CLIENT_ID, CLIENT_SECRET, &redirect_uri(server)).await;
    configure(&owner, &mini.issuer, &[], "member").await;
    let mut refusals = Refusals::new(&owner).await;

    mini.identity("sub-ann", &ann);
    let cookie = through_mini(server, &mini, &ws.slug, Forge::default())
        .await
        .signed_in();
    assert_eq!(whoami(server, &cookie).await["email"], ann.as_str());

    // Ann's e-mail at the provider now reads Bob's: she still signs in as herself.
    mini.identity("sub-ann", &bob);
    let cookie = through_mini(server, &mini, &ws.slug, Forge::default())
        .await
        .signed_in();
    assert_eq!(whoami(server, &cookie).await["email"], ann.as_str());

    // Another subject claiming Ann's e-mail does not get Ann (she is linked to sub-ann).
    mini.identity("sub-impostor", &ann);
    let outcome = through_mini(server, &mini, &ws.slug, Forge::default()).await;
    refusals.expect(&owner, &outcome, "linked_elsewhere").await;

    // Bob, never linked, is linked on his own first sign-in.
    mini.identity("sub-bob", &bob);
    let cookie = through_mini(server, &mini, &ws.slug, Forge::default())
        .await
        .signed_in();
    let me = whoami(server, &cookie).await;
    assert_eq!(
        (me["email"].as_str(), me["role"].as_str()),
        (Some(bob.as_str()), Some("admin"))
    );
}

#[tokio::test]
async fn an_unreachable_provider_ends_without_a_session() {
    let server = shared().await;
    let ws = server.create_workspace();
    let owner = owner(server, &ws).await;
    let (member, _) = server.add_member(&ws, "member");
    let mut mini = MiniProvider::start(CLIENT_ID, CLIENT_SECRET, &redirect_uri(server)).await;
    mini.identity("sub-gone", &member);
    configure(&owner, &mini.issuer, &[], "member").await;
    let mut refusals = Refusals::new(&owner).await;

    let mut ua = UserAgent::new();
    let authorize = ua.start(server, &ws.slug).await;
    let back = mini.authorize(&mut ua, &authorize).await;
    mini.stop().await;
    refusals
        .expect(&owner, &ua.callback(&back).await, "provider_unreachable")
        .await;
}

#[tokio::test]
async fn enforced_sso_refuses_passwords_except_for_owners() {
    let server = shared().await;
    let ws = server.create_workspace();
    let owner_browser = owner(server, &ws).await;
    let (admin, admin_password) = server.add_member(&ws, "admin");
    let (member, member_password) = server.add_member(&ws, "member");
    let mini = MiniProvider::start(CLIENT_ID, CLIENT_SECRET, &redirect_uri(server)).await;
    // A password session opened before enforcing ends with it; the owner's does not.
    let early = Browser::logged_in(server, &ws.slug, &admin, &admin_password).await;
    json_body(
        put_sso(&owner_browser, &settings(&mini.issuer, &[], "member", true)).await,
        200,
    )
    .await;
    problem(early.get("/v1/console/session").await, &[401]).await;
    json_body(owner_browser.get("/v1/console/session").await, 200).await;
    let configured = audit(&owner_browser, "sso.configured").await;
    assert_eq!(
        configured[0]["detail"]["sessions_ended"], 1,
        "{configured:#?}"
    );

    for (email, password) in [(&admin, &admin_password), (&member, &member_password)] {
        let mut b = Browser::new(server);
        let refused = problem(b.login(&ws.slug, email, password).await, &[403]).await;
        assert!(
            refused["detail"]
                .as_str()
                .unwrap()
                .contains("single sign-on"),
            "{refused}"
        );
        // A wrong password is still the plain 401: the refusal tells nothing to a guesser.
        problem(
            b.login(&ws.slug, email, "wrong-password-1234").await,
            &[401],
        )
        .await;
    }
    let refused = audit(&owner_browser, "login.refused").await;
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert_eq!(refused[0]["detail"]["reason"], "sso_enforced");

    // Owners keep their password (break-glass), and members still sign in through the provider.
    Browser::logged_in(server, &ws.slug, &ws.owner_email, &ws.owner_password).await;
    mini.identity("sub-member", &member);
    let cookie = through_mini(server, &mini, &ws.slug, Forge::default())
        .await
        .signed_in();
    assert_eq!(whoami(server, &cookie).await["email"], member.as_str());
}

#[tokio::test]
async fn the_console_page_offers_single_sign_on() {
    let server = shared().await;
    let page = reqwest::get(format!("{}/", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(r#"id="login-sso""#),
        "no SSO button on the sign-in form"
    );
    let script = reqwest::get(format!("{}/assets/app.js", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        script.contains("/v1/sso/") && script.contains("sso_error"),
        "app.js does not start SSO"
    );
}

#[tokio::test]
async fn one_address_may_start_only_so_many_sign_ins_to_a_workspace() {
    let server = shared().await;
    let ws = server.create_workspace();
    let first_owner = owner(server, &ws).await;
    let mini = MiniProvider::start(CLIENT_ID, CLIENT_SECRET, &redirect_uri(server)).await;
    configure(&first_owner, &mini.issuer, &[], "member").await;
    let start = format!("{}/v1/sso/{}/start", server.base, ws.slug);
    for i in 0..60 {
        let hop = UserAgent::new().get(&start).await;
        let location = hop.location.unwrap_or_default();
        assert!(location.starts_with(&mini.issuer), "start {i}: {location}");
    }
    let hop = UserAgent::new().get(&start).await;
    assert_eq!(hop.status, 302);
    assert!(
        hop.location.unwrap().ends_with("/?sso_error=rate_limited"),
        "the 61st start within the window"
    );
    assert!(hop.set_cookie.is_empty(), "{:?}", hop.set_cookie);
    // More refusals are counted, but only the first of the window is in the audit log.
    for _ in 0..5 {
        let hop = UserAgent::new().get(&start).await;
        assert!(hop.location.unwrap().ends_with("/?sso_error=rate_limited"));
    }
    let failed = audit(&first_owner, "sso.login.failed").await;
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0]["detail"]["reason"], "rate_limited", "{failed:#?}");

    // Another workspace's sign-in is not held up by this one.
    let other = server.create_workspace();
    let other_owner = owner(server, &other).await;
    configure(&other_owner, &mini.issuer, &[], "member").await;
    let hop = UserAgent::new()
        .get(&format!("{}/v1/sso/{}/start", server.base, other.slug))
        .await;
    assert!(hop.location.unwrap().starts_with(&mini.issuer));
}

/// A port on 127.0.0.1 that counts the connections made to it: the proof that a refused provider
/// was sent nothing at all.
struct Listener {
    port: u16,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Listener {
    async fn start() -> Listener {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = connections.clone();
        tokio::spawn(async move {
            while let Ok(_accepted) = l.accept().await {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        Listener { port, connections }
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Asserts the generic 400 and that nothing was saved.
async fn refused_settings(owner: &Browser, body: &Value) {
    let refused = problem(put_sso(owner, body).await, &[400]).await;
    assert_eq!(refused["detail"], PROVIDER_REFUSED, "{body}: {refused}");
    problem(owner.get("/v1/console/sso").await, &[404]).await;
}

#[tokio::test]
async fn a_provider_on_loopback_is_refused_unless_allowed_and_sent_nothing() {
    // The deployment default: no ASSENT_SSO_ALLOW_LOOPBACK.
    let server = TestServer::start(ServerOptions::default()).await;
    let ws = server.create_workspace();
    let owner = owner(&server, &ws).await;
    let mini = MiniProvider::start(CLIENT_ID, CLIENT_SECRET, &redirect_uri(&server)).await;
    let listener = Listener::start().await;
    let port = listener.port;

    // The real provider (http://127.0.0.1:…), and the same port named every other way: https, by
    // name (refused by the resolver), IPv4 inside IPv6, the numeric forms a URL parser folds.
    refused_settings(&owner, &settings(&mini.issuer, &[], "member", false)).await;
    for issuer in [
        format!("http://127.0.0.1:{port}"),
        format!("https://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
        format!("https://localhost:{port}"),
        format!("https://[::1]:{port}"),
        format!("https://[::ffff:127.0.0.1]:{port}"),
        format!("https://0x7f.1:{port}"),
        format!("https://2130706433:{port}"),
        // Never connected to (the rules refuse them first): cloud metadata and a private address.
        "https://169.254.169.254".to_owned(),
        "https://metadata.google.internal".to_owned(),
        "https://[fd00:ec2::254]".to_owned(),
        "https://10.0.0.1".to_owned(),
    ] {
        let body = settings(&issuer, &[], "member", false);
        let refused = problem(put_sso(&owner, &body).await, &[400]).await;
        assert_eq!(refused["detail"], PROVIDER_REFUSED, "{issuer}: {refused}");
        assert!(
            !refused.to_string().contains(&port.to_string()),
            "{refused}"
        );
    }
    assert_eq!(
        mini.requests(),
        Vec::<String>::new(),
        "the provider was asked"
    );
    assert_eq!(listener.connections(), 0, "something connected to the port");
    problem(owner.get("/v1/console/sso").await, &[404]).await;
    // The owner is told nothing; the operator reads why.
    assert!(
        server.log().contains("loopback address"),
        "the server's log does not say why"
    );
}

#[tokio::test]
async fn discovery_that_points_inside_our_network_or_is_too_large_is_refused() {
    let server = shared().await;
    let ws = server.create_workspace();
    let owner = owner(server, &ws).await;
    let mini = MiniProvider::start(CLIENT_ID, CLIENT_SECRET, &redirect_uri(server)).await;
    let body = settings(&mini.issuer, &[], "member", false);

    // Loopback is allowed on this server, plain http only to loopback, and never a private,
    // link-local or metadata address, whichever endpoint names it. None of these is contacted: the
    // rules refuse them before any connection (no traffic leaves this machine).
    for (field, url) in [
        ("jwks_uri", "http://login.example.com/jwks"),
        ("jwks_uri", "https://10.0.0.1/jwks"),
        ("jwks_uri", "https://169.254.169.254/latest/meta-data/"),
        ("jwks_uri", "https://[fd00:ec2::254]/jwks"),
        ("jwks_uri", "https://metadata.google.internal/jwks"),
        ("token_endpoint", "http://login.example.com/token"),
        ("token_endpoint", "https://10.0.0.1/token"),
        ("token_endpoint", "https://169.254.169.254/token"),
        ("token_endpoint", "https://[fe80::1]/token"),
        ("token_endpoint", "https://100.64.0.1/token"),
        (
            "authorization_endpoint",
            "http://login.example.com/authorize",
        ),
        ("authorization_endpoint", "https://192.168.1.1/authorize"),
        (
            "authorization_endpoint",
            "https://[::ffff:10.0.0.1]/authorize",
        ),
        ("authorization_endpoint", "https://172.16.0.1/authorize"),
    ] {
        mini.honest_documents();
        mini.discovery_field(field, json!(url));
        let before = mini.requests().len();
        refused_settings(&owner, &body).await;
        let asked = mini.requests()[before..].to_vec();
        assert!(
            asked
                .iter()
                .all(|p| p == "/.well-known/openid-configuration" || p == "/jwks"),
            "{field} {url}: {asked:?}"
        );
    }

    // Documents past 256 KiB are not read to the end, whichever of the two; below it they are fine
    // (so it is their size that was refused).
    mini.honest_documents();
    mini.pad_discovery(300 * 1024);
    refused_settings(&owner, &body).await;
    mini.honest_documents();
    mini.pad_jwks(300 * 1024);
    refused_settings(&owner, &body).await;
    mini.honest_documents();
    mini.pad_discovery(100 * 1024);
    mini.pad_jwks(100 * 1024);
    json_body(put_sso(&owner, &body).await, 200).await;

    // So is a token response past the cap, during a sign-in.
    mini.honest_documents();
    let (member, _) = server.add_member(&ws, "member");
    mini.identity("sub-big", &member);
    let mut refusals = Refusals::new(&owner).await;
    let outcome = through_mini(
        server,
        &mini,
        &ws.slug,
        Forge {
            token_padding: 300 * 1024,
            ..Forge::default()
        },
    )
    .await;
    refusals
        .expect(&owner, &outcome, "provider_unreachable")
        .await;
    let failed = audit(&owner, "sso.login.failed").await;
    assert_eq!(
        failed[0]["detail"]["cause"], PROVIDER_REFUSED,
        "{:#}",
        failed[0]
    );
    through_mini(server, &mini, &ws.slug, Forge::default())
        .await
        .signed_in();
}

#[tokio::test]
async fn entra_xms_edov_vouches_for_the_email_only_without_email_verified() {
    let server = shared().await;
    let ws = server.create_workspace();
    let owner = owner(server, &ws).await;
    let (member, _) = server.add_member(&ws, "member");
    let mini = MiniProvider::start(CLIENT_ID, CLIENT_SECRET, &redirect_uri(server)).await;
    mini.identity("sub-entra", &member);
    configure(&owner, &mini.issuer, &[], "member").await;
    let mut refusals = Refusals::new(&owner).await;

    // Entra ID: no email_verified, the optional claim xms_edov instead.
    let entra = Forge::default()
        .claim("email_verified", Value::Null)
        .claim("xms_edov", json!(true));
    let cookie = through_mini(server, &mini, &ws.slug, entra)
        .await
        .signed_in();
    assert_eq!(whoami(server, &cookie).await["email"], member.as_str());

    for forge in [
        // email_verified: false is the provider's word, whatever else it says.
        Forge::default()
            .claim("email_verified", json!(false))
            .claim("xms_edov", json!(true)),
        Forge::default()
            .claim("email_verified", Value::Null)
            .claim("xms_edov", json!(false)),
        Forge::default()
            .claim("email_verified", Value::Null)
            .claim("xms_edov", json!("true")),
    ] {
        let outcome = through_mini(server, &mini, &ws.slug, forge).await;
        refusals
            .expect(&owner, &outcome, "email_not_verified")
            .await;
    }
}

/// `GET /v1/sso/{slug}/start?reauth=1` in this browser, answered by the small provider as `forge`
/// says.
async fn reauth_through_mini(
    server: &TestServer,
    mini: &MiniProvider,
    ua: &mut UserAgent,
    slug: &str,
    forge: Forge,
) -> support::oidc::Outcome {
    mini.forge(forge);
    let hop = ua
        .get(&format!("{}/v1/sso/{slug}/start?reauth=1", server.base))
        .await;
    assert_eq!(hop.status, 302, "{hop:?}");
    let location = hop.location.unwrap();
    assert!(location.starts_with(&mini.issuer), "{location}");
    let back = mini.authorize(ua, &location).await;
    ua.callback(&back).await
}

/// `POST /v1/console/devices/enrollments` with this console cookie.
async fn enroll(server: &TestServer, cookie: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/console/devices/enrollments", server.base))
        .header("Cookie", cookie)
        .send()
        .await
        .unwrap()
}

/// The enrollment of a first phone is refused for want of a fresh sign-in, as an SSO session's.
async fn needs_reauth(server: &TestServer, cookie: &str, slug: &str) {
    let refused = problem(enroll(server, cookie).await, &[403]).await;
    assert_eq!(refused["reauth_required"], true, "{refused}");
    assert_eq!(refused["reauth"], "sso", "{refused}");
    assert_eq!(
        refused["reauth_url"],
        format!("/v1/sso/{slug}/start?reauth=1").as_str(),
        "{refused}"
    );
}

/// Asserts a re-authentication: back to the page with `?reauth=ok`, and no new session.
fn reauthenticated(outcome: &support::oidc::Outcome) {
    let url = reqwest::Url::parse(&outcome.location).unwrap();
    assert_eq!(url.path(), "/", "{outcome:?}");
    assert_eq!(url.query(), Some("reauth=ok"), "{outcome:?}");
    assert!(
        outcome.session.is_none(),
        "a re-authentication made a session: {outcome:?}"
    );
}

#[tokio::test]
async fn a_real_provider_re_authenticates_an_sso_session_with_a_fresh_login() {
    let server = shared().await;
    let ws = server.create_workspace();
    let owner = owner(server, &ws).await;
    let (alice, _) = server.add_member(&ws, "member");
    let provider = NodeProvider::start(CLIENT_ID, CLIENT_SECRET, &redirect_uri(server)).await;
    provider.account("alice-reauth", &alice, true).await;
    configure(&owner, &provider.issuer, &[], "member").await;

    let mut ua = UserAgent::new();
    let authorize = ua.start(server, &ws.slug).await;
    let (back, prompted) = provider
        .login_prompted(&mut ua, &authorize, "alice-reauth")
        .await;
    assert!(prompted, "a first sign-in shows the provider's login page");
    ua.callback(&back).await.signed_in();
    // Signing in again, the provider remembers the browser and asks nothing.
    let authorize = ua.start(server, &ws.slug).await;
    let (back, prompted) = provider
        .login_prompted(&mut ua, &authorize, "alice-reauth")
        .await;
    assert!(!prompted, "the provider did not remember its session");
    let cookie = ua.callback(&back).await.signed_in();

    // Alice has no phone, and her sign-in is older than the reauth window.
    support::oidc::age_authentication(server, &ws.slug, &alice, 3600).await;
    needs_reauth(server, &cookie, &ws.slug).await;

    // Re-authentication: the provider is asked for a fresh login, and shows its page although it
    // remembers the browser.
    let hop = ua
        .get(&format!(
            "{}/v1/sso/{}/start?reauth=1",
            server.base, ws.slug
        ))
        .await;
    assert_eq!(hop.status, 302, "{hop:?}");
    let authorize = hop.location.unwrap();
    let q: std::collections::HashMap<_, _> = reqwest::Url::parse(&authorize)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(q["prompt"], "login", "{q:?}");
    assert_eq!(q["max_age"], "0", "{q:?}");
    let (back, prompted) = provider
        .login_prompted(&mut ua, &authorize, "alice-reauth")
        .await;
    assert!(prompted, "prompt=login did not make the provider ask again");
    reauthenticated(&ua.callback(&back).await);

    // The same session, its window open again: the first phone may be enrolled.
    assert_eq!(whoami(server, &cookie).await["email"], alice.as_str());
    let code = json_body(enroll(server, &cookie).await, 201).await;
    assert!(code["code"].is_string(), "{code}");
    let reauths = audit(&owner, "session.reauthenticated").await;
    assert_eq!(reauths.len(), 1, "{reauths:#?}");
    assert_eq!(reauths[0]["actor"], alice.as_str());
    assert_eq!(reauths[0]["detail"]["method"], "sso");
    server.assert_log_free_of(&[("SSO client secret", CLIENT_SECRET)]);
}

#[tokio::test]
async fn a_reauthentication_needs_the_sessions_own_person_logging_in_anew() {
    let server = shared().await;
    let ws = server.create_workspace();
    let owner_browser = owner(server, &ws).await;
    let (ann, _) = server.add_member(&ws, "member");
    let (bob, _) = server.add_member(&ws, "admin");
    let mini = MiniProvider::start(CLIENT_ID, CLIENT_SECRET, &redirect_uri(server)).await;
    let domain = format!("{}.example.com", ws.slug);
    configure(&owner_browser, &mini.issuer, &[&domain], "member").await;
    let mut refusals = Refusals::new(&owner_browser).await;

    // Bob signs in once (linked), then Ann, whose session is re-authenticated below.
    mini.identity("sub-bob", &bob);
    through_mini(server, &mini, &ws.slug, Forge::default())
        .await
        .signed_in();
    mini.identity("sub-ann", &ann);
    let mut ua = UserAgent::new();
    let authorize = ua.start(server, &ws.slug).await;
    let back = mini.authorize(&mut ua, &authorize).await;
    let cookie = ua.callback(&back).await.signed_in();
    support::oidc::age_authentication(server, &ws.slug, &ann, 3600).await;
    needs_reauth(server, &cookie, &ws.slug).await;

    // Without a console session of this workspace, nothing starts: no cookie, another
    // workspace's session, a cookie that is no session.
    let other = server.create_workspace();
    let other_owner = Browser::logged_in(
        server,
        &other.slug,
        &other.owner_email,
        &other.owner_password,
    )
    .await;
    let other_cookie = other_owner
        .cookies
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for cookie in ["", other_cookie.as_str(), "assent_session=forged-0000"] {
        let mut request = client.get(format!("{}/v1/sso/{}/start?reauth=1", server.base, ws.slug));
        if !cookie.is_empty() {
            request = request.header("Cookie", cookie);
        }
        let resp = request.send().await.unwrap();
        assert_eq!(resp.status(), 302, "{cookie:?}");
        assert!(resp.headers().get("set-cookie").is_none(), "{cookie:?}");
        let location = resp.headers()["location"].to_str().unwrap();
        assert!(location.ends_with("/?sso_error=no_session"), "{location}");
    }
    let failed = audit(&owner_browser, "sso.login.failed").await;
    assert_eq!(failed[0]["detail"]["reason"], "no_session", "{failed:#?}");
    assert_eq!(failed[0]["detail"]["reauth"], true, "{failed:#?}");
    refusals.seen = failed.len();

    // The provider's answer must prove a login made for this re-authentication.
    let now = unix_now();
    for forge in [
        Forge::default().claim("auth_time", Value::Null),
        Forge::default().claim("auth_time", json!(now - 3600)),
        Forge::default().claim("auth_time", json!(now + 3600)),
    ] {
        let outcome = reauth_through_mini(server, &mini, &mut ua, &ws.slug, forge.clone()).await;
        refusals
            .expect(&owner_browser, &outcome, "login_not_fresh")
            .await;
        let q = mini.last_authorize();
        assert_eq!(
            (q["prompt"].as_str(), q["max_age"].as_str()),
            ("login", "0"),
            "{q:?}"
        );
    }

    // Someone else logging in at the provider re-authenticates nobody: another member (linked or
    // not yet), a subject claiming Ann's e-mail, a stranger who could have joined.
    for (sub, email) in [
        ("sub-bob", bob.clone()),
        ("sub-carol", format!("carol@{domain}")),
        ("sub-impostor", ann.clone()),
    ] {
        mini.identity(sub, &email);
        let outcome = reauth_through_mini(server, &mini, &mut ua, &ws.slug, Forge::default()).await;
        refusals
            .expect(&owner_browser, &outcome, "wrong_person")
            .await;
    }
    // The refusals left the session as it was (still signed in, still outside its window), and
    // made nobody.
    assert_eq!(whoami(server, &cookie).await["email"], ann.as_str());
    needs_reauth(server, &cookie, &ws.slug).await;
    assert!(audit(&owner_browser, "sso.member.created").await.is_empty());
    assert!(audit(&owner_browser, "session.reauthenticated")
        .await
        .is_empty());

    // Ann herself, logging in anew: her session, re-authenticated.
    mini.identity("sub-ann", &ann);
    let outcome = reauth_through_mini(server, &mini, &mut ua, &ws.slug, Forge::default()).await;
    reauthenticated(&outcome);
    json_body(enroll(server, &cookie).await, 201).await;
}

#[tokio::test]
async fn a_flood_from_one_address_ends_in_429_without_filling_the_audit_log() {
    // A server of its own: the flood uses up this address's allowance.
    let server = TestServer::start(loopback_allowed()).await;
    let ws = server.create_workspace();
    let owner = owner(&server, &ws).await;
    let (member, _) = server.add_member(&ws, "member");
    let mini = MiniProvider::start(CLIENT_ID, CLIENT_SECRET, &redirect_uri(&server)).await;
    mini.identity("sub-flood", &member);
    configure(&owner, &mini.issuer, &[], "member").await;
    const PER_ADDRESS: usize = 300; // src/service/sso_guard.rs
    const AUDITED: usize = 30;

    // A used state replayed over and over names its workspace: audited, a bounded number of times.
    let mut ua = UserAgent::new();
    let authorize = ua.start(&server, &ws.slug).await;
    let back = mini.authorize(&mut ua, &authorize).await;
    ua.callback(&back).await.signed_in();
    let mut callbacks = 1;
    for _ in 0..AUDITED + 10 {
        ua.callback(&back).await.refused("invalid_state");
        callbacks += 1;
    }
    let failed = audit(&owner, "sso.login.failed").await;
    assert_eq!(failed.len(), AUDITED + 1, "{failed:#?}");
    assert!(failed[0]["detail"]["further_refusals_not_logged_for_minutes"].is_number());

    // Forged states and unknown workspaces name none: counted, never audited, until the address
    // has had its allowance; then 429.
    let before = support::oidc::audit_rows(&server, "sso.login.failed").await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let callback = format!("{}/v1/sso/callback?state=x", server.base);
    let start = format!("{}/v1/sso/no-such-workspace/start", server.base);
    for (url, sent, reason) in [
        (&callback, callbacks, "invalid_state"),
        (&start, 1, "not_configured"),
    ] {
        for i in sent..PER_ADDRESS {
            let resp = client.get(url).send().await.unwrap();
            assert_eq!(resp.status(), 302, "{url} request {i}");
            let location = resp.headers()["location"].to_str().unwrap().to_owned();
            assert!(
                location.ends_with(&format!("?sso_error={reason}")),
                "{location}"
            );
        }
        let flood = client.get(url).send().await.unwrap();
        let retry_after: u64 = flood.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=900).contains(&retry_after), "{retry_after}");
        problem(flood, &[429]).await;
    }
    assert_eq!(
        support::oidc::audit_rows(&server, "sso.login.failed").await,
        before,
        "the flood wrote audit rows"
    );
    assert!(support::oidc::sso_refusals_metric(&server, "invalid_state").await >= 250);
    assert!(support::oidc::sso_refusals_metric(&server, "too_many_requests").await >= 2);
    // The known workspace's start is refused the same way from this address now.
    let hop = client
        .get(format!("{}/v1/sso/{}/start", server.base, ws.slug))
        .send()
        .await
        .unwrap();
    problem(hop, &[429]).await;
}

/// Changing the provider lets another identity provider sign people in, as admins with
/// `default_role`: like inviting an admin, it needs a sign-in or re-authentication within the
/// reauth window, so a stolen owner cookie alone cannot do it (issue 16).
#[tokio::test]
async fn changing_the_provider_needs_a_recent_sign_in() {
    let server = shared().await;
    let ws = server.create_workspace();
    let owner = owner(server, &ws).await;
    let provider = NodeProvider::start(CLIENT_ID, CLIENT_SECRET, &redirect_uri(server)).await;
    server
        .age_session_authentication(&ws.slug, &ws.owner_email, 601)
        .await;
    let refused = problem(
        put_sso(&owner, &settings(&provider.issuer, &[], "admin", false)).await,
        &[403],
    )
    .await;
    assert_eq!(refused["reauth_required"], true, "{refused}");
    problem(owner.get("/v1/console/sso").await, &[404]).await;
    let resp = owner
        .post_json(
            "/v1/console/session/reauth",
            &json!({ "password": ws.owner_password }),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 204);
    configure(&owner, &provider.issuer, &[], "admin").await;
}
