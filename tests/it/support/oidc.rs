//! Single sign-on helpers for tests/it/sso.rs: a browser that keeps its cookies and follows redirects
//! one hop at a time, the real OpenID provider (Node's oidc-provider, tests/oidc/provider.js), and a
//! small provider of our own that signs whatever ID token a test needs, to forge the bad ones.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use reqwest::Url;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::server::TestDb;
use super::{unix_now, TestServer, WAIT};

// ---------------------------------------------------------------------------------------------
// A browser

/// One answer on the way.
#[derive(Clone, Debug)]
pub struct Hop {
    pub url: String,
    pub status: u16,
    /// `Location`, made absolute.
    pub location: Option<String>,
    pub set_cookie: Vec<String>,
    pub body: String,
}

#[derive(Clone, Debug)]
struct Cookie {
    origin: String,
    name: String,
    value: String,
    path: String,
}

/// A browser as far as single sign-on needs one: cookies per origin (with their `Path`), redirects
/// followed by hand so a test sees and can replay every hop.
pub struct UserAgent {
    client: reqwest::Client,
    cookies: Vec<Cookie>,
    /// Its own `User-Agent`, which the audit log records: how a test finds the entries of a
    /// refusal that no workspace can be named for (a forged state).
    pub name: String,
}

impl Default for UserAgent {
    fn default() -> Self {
        Self::new()
    }
}

fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

impl UserAgent {
    pub fn new() -> Self {
        let name = format!("assent-sso-test/{}", super::server::unique(""));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(name.clone())
            .timeout(WAIT)
            .build()
            .unwrap();
        Self {
            client,
            cookies: Vec::new(),
            name,
        }
    }

    /// The value of a cookie this browser holds for the origin of `url`.
    pub fn cookie(&self, url: &str, name: &str) -> Option<String> {
        let o = origin(&Url::parse(url).unwrap());
        self.cookies
            .iter()
            .find(|c| c.origin == o && c.name == name)
            .map(|c| c.value.clone())
    }

    pub fn drop_cookie(&mut self, url: &str, name: &str) {
        let o = origin(&Url::parse(url).unwrap());
        self.cookies.retain(|c| !(c.origin == o && c.name == name));
    }

    fn store(&mut self, url: &Url, set_cookie: &[String]) {
        for line in set_cookie {
            let mut parts = line.split(';').map(str::trim);
            let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            let mut path = "/".to_owned();
            let mut gone = false;
            for attr in parts {
                let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
                match k.to_ascii_lowercase().as_str() {
                    "path" => path = v.to_owned(),
                    "max-age" if v.trim().parse::<i64>().is_ok_and(|s| s <= 0) => gone = true,
                    "expires" if v.contains("1970") => gone = true,
                    _ => {}
                }
            }
            let o = origin(url);
            self.cookies
                .retain(|c| !(c.origin == o && c.name == name && c.path == path));
            if !gone {
                self.cookies.push(Cookie {
                    origin: o,
                    name: name.to_owned(),
                    value: value.to_owned(),
                    path,
                });
            }
        }
    }

    fn cookie_header(&self, url: &Url) -> Option<String> {
        let o = origin(url);
        let pairs: Vec<String> = self
            .cookies
            .iter()
            .filter(|c| c.origin == o && url.path().starts_with(&c.path))
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    /// One request, no redirect followed; cookies kept.
    pub async fn send(
        &mut self,
        method: reqwest::Method,
        url: &str,
        form: Option<&[(&str, &str)]>,
    ) -> Hop {
        let parsed = Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        let mut req = self.client.request(method, parsed.clone());
        if let Some(cookie) = self.cookie_header(&parsed) {
            req = req.header(reqwest::header::COOKIE, cookie);
        }
        if let Some(form) = form {
            req = req.form(form);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|l| parsed.join(l).unwrap().to_string());
        let set_cookie: Vec<String> = resp
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        self.store(&parsed, &set_cookie);
        let body = resp.text().await.unwrap_or_default();
        Hop {
            url: url.to_owned(),
            status,
            location,
            set_cookie,
            body,
        }
    }

    pub async fn get(&mut self, url: &str) -> Hop {
        self.send(reqwest::Method::GET, url, None).await
    }

    /// Follows redirects from `url` until an answer that is not one, or until the next location
    /// satisfies `stop` (returned, not requested).
    pub async fn follow(
        &mut self,
        url: &str,
        stop: impl Fn(&str) -> bool,
    ) -> (Vec<Hop>, Option<String>) {
        let mut hops = Vec::new();
        let mut next = url.to_owned();
        for _ in 0..20 {
            let hop = self.get(&next).await;
            let location = hop.location.clone();
            hops.push(hop);
            match location {
                Some(l) if stop(&l) => return (hops, Some(l)),
                Some(l) => next = l,
                None => return (hops, None),
            }
        }
        panic!("more than 20 redirects from {url}");
    }

    /// `GET /v1/sso/{slug}/start`: asserts the 302 and the binding cookie; returns the provider URL.
    pub async fn start(&mut self, server: &TestServer, slug: &str) -> String {
        let hop = self
            .get(&format!("{}/v1/sso/{slug}/start", server.base))
            .await;
        assert_eq!(hop.status, 302, "start: {hop:?}");
        let binding = hop
            .set_cookie
            .iter()
            .find(|c| c.starts_with("assent_sso="))
            .unwrap_or_else(|| panic!("start sets no binding cookie: {hop:?}"));
        for attr in ["HttpOnly", "SameSite=Lax", "Path=/v1/sso/callback"] {
            assert!(
                binding.contains(attr),
                "binding cookie without {attr}: {binding}"
            );
        }
        hop.location.expect("start has a Location")
    }

    /// Requests the callback URL on Assent and reads where it sends the browser.
    pub async fn callback(&mut self, url: &str) -> Outcome {
        let hop = self.get(url).await;
        assert_eq!(hop.status, 302, "callback: {hop:?}");
        let location = hop.location.clone().expect("callback has a Location");
        let session = hop
            .set_cookie
            .iter()
            .find(|c| c.starts_with("assent_session=") && !c.starts_with("assent_session=;"))
            .cloned();
        Outcome {
            location,
            session,
            hop,
        }
    }
}

/// Where the callback sent the browser.
#[derive(Debug)]
pub struct Outcome {
    pub location: String,
    /// The `Set-Cookie` of a new console session, if one was made.
    pub session: Option<String>,
    pub hop: Hop,
}

impl Outcome {
    /// The `sso_error` of the redirect, or None for a redirect to `/` itself.
    pub fn error(&self) -> Option<String> {
        let url = Url::parse(&self.location).unwrap();
        url.query_pairs()
            .find(|(k, _)| k == "sso_error")
            .map(|(_, v)| v.into_owned())
    }

    /// Asserts a sign-in: a redirect to `/` and the console cookie; returns `name=value`.
    pub fn signed_in(&self) -> String {
        let url = Url::parse(&self.location).unwrap();
        assert_eq!(url.path(), "/", "{self:?}");
        assert_eq!(url.query(), None, "{self:?}");
        let cookie = self
            .session
            .clone()
            .unwrap_or_else(|| panic!("no session cookie: {self:?}"));
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(
                cookie.contains(attr),
                "session cookie without {attr}: {cookie}"
            );
        }
        cookie.split(';').next().unwrap().to_owned()
    }

    /// Asserts a refusal with this reason and no session.
    pub fn refused(&self, reason: &str) {
        assert_eq!(self.error().as_deref(), Some(reason), "{self:?}");
        assert!(self.location.contains("/?sso_error="), "{self:?}");
        assert!(
            self.session.is_none(),
            "a refused sign-in set a session: {self:?}"
        );
    }
}

/// `name=value` of a `Set-Cookie`, asking who it belongs to.
pub async fn whoami(server: &TestServer, cookie: &str) -> Value {
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/console/session", server.base))
        .header("Cookie", cookie)
        .timeout(WAIT)
        .send()
        .await
        .unwrap();
    super::json_body(resp, 200).await
}

// ---------------------------------------------------------------------------------------------
// The real provider: Node's oidc-provider

/// tests/oidc/provider.js, running; stopped when dropped (and when the test process ends, as its
/// stdin closes).
pub struct NodeProvider {
    pub issuer: String,
    child: Child,
    lifeline: Option<ChildStdin>,
    pub log_path: PathBuf,
}

fn oidc_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

impl NodeProvider {
    /// Starts the provider with one confidential client.
    pub async fn start(client_id: &str, client_secret: &str, redirect_uri: &str) -> NodeProvider {
        let dir = oidc_dir();
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "run `npm ci` in {} first (scripts/test does)",
            dir.display()
        );
        let log_path = std::env::temp_dir().join(format!(
            "assent-oidc-provider-{}-{}.log",
            std::process::id(),
            super::server::unique("")
        ));
        let log = std::fs::File::create(&log_path).unwrap();
        let client = json!({
            "client_id": client_id,
            "client_secret": client_secret,
            "redirect_uris": [redirect_uri],
        });
        let mut child = Command::new("node")
            .arg("provider.js")
            .current_dir(&dir)
            .env("OIDC_CLIENT", client.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start node (Node 20 or later)");
        let lifeline = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        // The first line says where it listens; the rest (oidc-provider prints notices) is read
        // until the end, or the provider would die writing to a closed pipe.
        let (ready, line) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut first = String::new();
            reader.read_line(&mut first).ok();
            let _ = ready.send(first);
            std::io::copy(&mut reader, &mut std::io::sink()).ok();
        });
        let line = tokio::time::timeout(Duration::from_secs(20), line)
            .await
            .expect("provider.js ready within 20 s")
            .unwrap_or_default();
        let issuer = line
            .trim()
            .strip_prefix("ready ")
            .unwrap_or_else(|| {
                panic!(
                    "provider.js did not start: {line:?}\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                )
            })
            .to_owned();
        NodeProvider {
            issuer,
            child,
            lifeline,
            log_path,
        }
    }

    async fn admin(&self, path: &str, body: Value) {
        let resp = reqwest::Client::new()
            .post(format!("{}{path}", self.issuer))
            .json(&body)
            .timeout(WAIT)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 204, "{path}");
    }

    /// Adds (or replaces) an account; its login is its `sub`.
    pub async fn account(&self, login: &str, email: &str, email_verified: bool) {
        self.admin(
            "/__test/accounts",
            json!({ login: {"email": email, "email_verified": email_verified, "name": login} }),
        )
        .await;
    }

    /// A new signing key with a new `kid`; the old one is no longer published.
    pub async fn rotate_keys(&self) {
        self.admin("/__test/rotate", json!({})).await;
    }

    /// The `kid`s the provider publishes now.
    pub async fn kids(&self) -> Vec<String> {
        let jwks: Value = reqwest::get(format!("{}/jwks", self.issuer))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Follows the authorization request to the provider's login page and posts `action` there
    /// (`login` with the account, or `abort`); returns the URL the provider sends the browser back
    /// to (Assent's callback), not yet requested.
    async fn interact(
        &self,
        ua: &mut UserAgent,
        authorize_url: &str,
        action: &str,
        login: &str,
    ) -> (String, bool) {
        let on_provider = |l: &str| !l.starts_with(&self.issuer);
        let (hops, back) = ua.follow(authorize_url, on_provider).await;
        if let Some(back) = back {
            return (back, false); // the provider remembered the browser: no login page
        }
        let page = hops.last().unwrap();
        assert_eq!(page.status, 200, "the provider's login page: {page:?}");
        let action_path = page
            .body
            .split("action=\"")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap())
            .find(|a| a.ends_with(&format!("/{action}")))
            .unwrap_or_else(|| panic!("no {action} form on the login page: {}", page.body));
        let form_url = Url::parse(&page.url)
            .unwrap()
            .join(action_path)
            .unwrap()
            .to_string();
        let posted = ua
            .send(reqwest::Method::POST, &form_url, Some(&[("login", login)]))
            .await;
        assert_eq!(posted.status, 303, "posting the login form: {posted:?}");
        let next = posted.location.expect("the login form redirects");
        if on_provider(&next) {
            return (next, true);
        }
        let (_, back) = ua.follow(&next, on_provider).await;
        (
            back.expect("the provider sends the browser back to Assent"),
            true,
        )
    }

    pub async fn login(&self, ua: &mut UserAgent, authorize_url: &str, login: &str) -> String {
        self.interact(ua, authorize_url, "login", login).await.0
    }

    /// Like `login`, and says whether the provider showed its login page (false: it remembered
    /// the browser's session and answered at once).
    pub async fn login_prompted(
        &self,
        ua: &mut UserAgent,
        authorize_url: &str,
        login: &str,
    ) -> (String, bool) {
        self.interact(ua, authorize_url, "login", login).await
    }

    /// Presses "Cancel" on the login page: the provider answers `error=access_denied`.
    pub async fn cancel(&self, ua: &mut UserAgent, authorize_url: &str) -> String {
        self.interact(ua, authorize_url, "abort", "").await.0
    }
}

impl Drop for NodeProvider {
    fn drop(&mut self) {
        drop(self.lifeline.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("ASSENT_TEST_KEEP").is_none() {
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A small provider of our own, for ID tokens no honest provider signs

/// An RSA key made at test time, with its `kid`.
pub struct TestKey {
    pub kid: String,
    der: Vec<u8>,
    pub jwk: Value,
}

impl TestKey {
    fn generate(kid: &str) -> TestKey {
        let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("RSA key");
        let der = private.to_pkcs1_der().unwrap().as_bytes().to_vec();
        let jwk = json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(private.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(private.e().to_bytes_be()),
        });
        TestKey {
            kid: kid.to_owned(),
            der,
            jwk,
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(
            &header,
            claims,
            &jsonwebtoken::EncodingKey::from_rsa_der(&self.der),
        )
        .unwrap()
    }
}

/// Two keys per test binary (RSA key generation is slow): the published one, and one nobody
/// publishes.
fn keys() -> &'static (TestKey, TestKey) {
    static KEYS: OnceLock<(TestKey, TestKey)> = OnceLock::new();
    KEYS.get_or_init(|| {
        (
            TestKey::generate("published-1"),
            TestKey::generate("unpublished-1"),
        )
    })
}

/// How the next sign-in's answer is made.
#[derive(Clone, Debug, Default)]
pub struct Forge {
    /// Claims set over the honest ones; `null` removes a claim.
    pub claims: Map<String, Value>,
    pub key: Signer,
    /// The authorization request is answered with `error=<this>`.
    pub authorize_error: Option<String>,
    /// The token request is answered 400 with `{"error": <this>}`.
    pub token_error: Option<String>,
    /// Bytes of padding in the token response (past Assent's cap, it is refused).
    pub token_padding: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Signer {
    #[default]
    Published,
    /// A key the provider does not publish.
    Unknown,
    /// HS256 with the client secret as the key.
    ClientSecret,
}

impl Forge {
    pub fn claim(mut self, name: &str, value: Value) -> Self {
        self.claims.insert(name.to_owned(), value);
        self
    }
    pub fn signer(mut self, key: Signer) -> Self {
        self.key = key;
        self
    }
}

struct Issued {
    nonce: Option<String>,
    challenge: String,
    redirect_uri: String,
    /// The request asked for `max_age`: the ID token carries `auth_time`, as OpenID Connect Core
    /// 1.0 section 3.1.2.1 requires (a forge may still remove or change it).
    max_age: bool,
    forge: Forge,
}

struct Mini {
    issuer: String,
    client_id: String,
    client_secret: String,
    redirect_uri: String,
    /// The default identity of the next sign-ins.
    sub: String,
    email: String,
    next: Forge,
    codes: HashMap<String, Issued>,
    /// The query of the last authorization request, as received.
    last_authorize: HashMap<String, String>,
    token_requests: usize,
    /// Fields set over the honest discovery document; `null` removes one.
    discovery: Map<String, Value>,
    /// Bytes of padding in the discovery document and in the key set.
    discovery_padding: usize,
    jwks_padding: usize,
    /// The path of every request received, in order.
    requests: Vec<String>,
}

type Shared = Arc<Mutex<Mini>>;

/// A provider in this process, on 127.0.0.1: discovery, keys, an authorization endpoint that signs
/// in at once, and a token endpoint that checks the client and PKCE, then answers what the test
/// asked for.
pub struct MiniProvider {
    pub issuer: String,
    state: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl MiniProvider {
    pub async fn start(client_id: &str, client_secret: &str, redirect_uri: &str) -> MiniProvider {
        let _ = keys();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let state: Shared = Arc::new(Mutex::new(Mini {
            issuer: issuer.clone(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            sub: "mini-sub-1".into(),
            email: "someone@example.com".into(),
            next: Forge::default(),
            codes: HashMap::new(),
            last_authorize: HashMap::new(),
            token_requests: 0,
            discovery: Map::new(),
            discovery_padding: 0,
            jwks_padding: 0,
            requests: Vec::new(),
        }));
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                record_request,
            ))
            .with_state(state.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        MiniProvider {
            issuer,
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Who the next sign-ins are.
    pub fn identity(&self, sub: &str, email: &str) {
        let mut s = self.state.lock().unwrap();
        s.sub = sub.to_owned();
        s.email = email.to_owned();
    }

    /// How the next sign-in is answered (then back to honest answers).
    pub fn forge(&self, forge: Forge) {
        self.state.lock().unwrap().next = forge;
    }

    pub fn last_authorize(&self) -> HashMap<String, String> {
        self.state.lock().unwrap().last_authorize.clone()
    }

    pub fn token_requests(&self) -> usize {
        self.state.lock().unwrap().token_requests
    }

    /// The paths of every request this provider received, in order.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Sets a field of the discovery document over the honest one (`null` removes it).
    pub fn discovery_field(&self, name: &str, value: Value) {
        self.state
            .lock()
            .unwrap()
            .discovery
            .insert(name.to_owned(), value);
    }

    /// Back to the honest discovery document and key set.
    pub fn honest_documents(&self) {
        let mut s = self.state.lock().unwrap();
        s.discovery.clear();
        s.discovery_padding = 0;
        s.jwks_padding = 0;
    }

    /// Pads the discovery document (an extra member) to at least `bytes`.
    pub fn pad_discovery(&self, bytes: usize) {
        self.state.lock().unwrap().discovery_padding = bytes;
    }

    /// Pads the key set (an extra member) to at least `bytes`.
    pub fn pad_jwks(&self, bytes: usize) {
        self.state.lock().unwrap().jwks_padding = bytes;
    }

    /// The provider answers the authorization request at once (the user is signed in there):
    /// returns the URL it sends the browser back to, not yet requested.
    pub async fn authorize(&self, ua: &mut UserAgent, authorize_url: &str) -> String {
        assert!(authorize_url.starts_with(&self.issuer), "{authorize_url}");
        let hop = ua.get(authorize_url).await;
        assert_eq!(hop.status, 302, "authorize: {hop:?}");
        hop.location.unwrap()
    }

    /// Stops answering: the port refuses connections from now on.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MiniProvider {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn record_request(
    State(s): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    s.lock()
        .unwrap()
        .requests
        .push(request.uri().path().to_owned());
    next.run(request).await
}

/// An unknown member (ignored by readers) holding `bytes` of spaces.
fn pad(document: &mut Value, bytes: usize) {
    if bytes > 0 {
        document["x_padding"] = json!(" ".repeat(bytes));
    }
}

async fn discovery(State(s): State<Shared>) -> Json<Value> {
    let s = s.lock().unwrap();
    let issuer = &s.issuer;
    let mut document = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256"],
    });
    let fields = document.as_object_mut().unwrap();
    for (k, v) in &s.discovery {
        if v.is_null() {
            fields.remove(k);
        } else {
            fields.insert(k.clone(), v.clone());
        }
    }
    pad(&mut document, s.discovery_padding);
    Json(document)
}

async fn jwks(State(s): State<Shared>) -> Json<Value> {
    let mut document = json!({ "keys": [keys().0.jwk] });
    pad(&mut document, s.lock().unwrap().jwks_padding);
    Json(document)
}

fn redirect_to(url: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, url.to_owned())]).into_response()
}

async fn authorize(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut s = s.lock().unwrap();
    s.last_authorize = q.clone();
    let ok = q.get("client_id") == Some(&s.client_id)
        && q.get("redirect_uri") == Some(&s.redirect_uri)
        && q.get("response_type").map(String::as_str) == Some("code")
        && q.get("code_challenge_method").map(String::as_str) == Some("S256")
        && q.contains_key("code_challenge")
        && q.contains_key("state");
    if !ok {
        return (
            StatusCode::BAD_REQUEST,
            format!("bad authorization request: {q:?}"),
        )
            .into_response();
    }
    let forge = std::mem::take(&mut s.next);
    let mut back = Url::parse(&s.redirect_uri).unwrap();
    if let Some(error) = &forge.authorize_error {
        back.query_pairs_mut()
            .append_pair("error", error)
            .append_pair("state", &q["state"]);
        return redirect_to(back.as_str());
    }
    let code = format!("code-{}", super::server::unique(""));
    s.codes.insert(
        code.clone(),
        Issued {
            nonce: q.get("nonce").cloned(),
            challenge: q["code_challenge"].clone(),
            redirect_uri: q["redirect_uri"].clone(),
            max_age: q.contains_key("max_age"),
            forge,
        },
    );
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &q["state"]);
    redirect_to(back.as_str())
}

fn token_error(error: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": error }))).into_response()
}

async fn token(
    State(s): State<Shared>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let mut s = s.lock().unwrap();
    s.token_requests += 1;
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", s.client_id, s.client_secret))
    );
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(expected.as_str())
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let Some(issued) = f.get("code").and_then(|c| s.codes.remove(c)) else {
        return token_error("invalid_grant");
    };
    let verifier = f.get("code_verifier").cloned().unwrap_or_default();
    if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != issued.challenge
        || f.get("redirect_uri") != Some(&issued.redirect_uri)
        || f.get("grant_type").map(String::as_str) != Some("authorization_code")
    {
        return token_error("invalid_grant");
    }
    if let Some(error) = &issued.forge.token_error {
        return token_error(error);
    }
    let now = unix_now();
    let mut claims = json!({
        "iss": s.issuer, "sub": s.sub, "aud": s.client_id, "iat": now, "exp": now + 300,
        "email": s.email, "email_verified": true, "name": "Someone",
    });
    if let Some(nonce) = issued.nonce {
        claims["nonce"] = json!(nonce);
    }
    if issued.max_age {
        // The person "logged in" as the provider answered the authorization request, just now.
        claims["auth_time"] = json!(now);
    }
    let obj = claims.as_object_mut().unwrap();
    for (k, v) in &issued.forge.claims {
        if v.is_null() {
            obj.remove(k);
        } else {
            obj.insert(k.clone(), v.clone());
        }
    }
    let id_token = match issued.forge.key {
        Signer::Published => keys().0.sign(&claims),
        Signer::Unknown => keys().1.sign(&claims),
        Signer::ClientSecret => jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(s.client_secret.as_bytes()),
        )
        .unwrap(),
    };
    let mut answer = json!({
        "access_token": "mini-access-token",
        "token_type": "Bearer",
        "expires_in": 300,
        "id_token": id_token,
    });
    pad(&mut answer, issued.forge.token_padding);
    Json(answer).into_response()
}

/// Moves the unfinished sign-ins of one workspace `secs` into the past, in the database.
///
/// White-box like `TestServer::age_enrollment_codes`: a started sign-in lives a fixed 10 minutes
/// and the server's clock cannot be moved from outside. Tied to `sso_pending`.
pub async fn age_sso_pending(server: &TestServer, slug: &str, secs: i64) {
    use sqlx::Connection;
    const SQL: &str =
        "UPDATE sso_pending SET created_at = created_at - $1, expires_at = expires_at - $1 \
         WHERE used_at IS NULL AND workspace_id = (SELECT id FROM workspaces WHERE slug = $2)";
    let aged = match &server.db {
        TestDb::Sqlite { .. } => {
            let mut conn = sqlx::SqliteConnection::connect(&server.db_url)
                .await
                .unwrap();
            let done = sqlx::query(SQL)
                .bind(secs)
                .bind(slug)
                .execute(&mut conn)
                .await;
            done.expect("age sign-ins").rows_affected()
        }
        TestDb::Postgres { database, .. } => {
            let mut conn = sqlx::PgConnection::connect(&database.url).await.unwrap();
            let done = sqlx::query(SQL)
                .bind(secs)
                .bind(slug)
                .execute(&mut conn)
                .await;
            done.expect("age sign-ins").rows_affected()
        }
    };
    assert!(aged >= 1, "no sign-in to age in {slug}");
}

/// The reasons of the refusals logged for the whole deployment (no workspace could be named) for
/// requests from this browser, oldest first. White-box: tied to `audit_log`.
pub async fn deployment_refusals(server: &TestServer, ua: &UserAgent) -> Vec<String> {
    use sqlx::Connection;
    match &server.db {
        TestDb::Sqlite { .. } => {
            let mut conn = sqlx::SqliteConnection::connect(&server.db_url)
                .await
                .unwrap();
            sqlx::query_scalar(
                "SELECT json_extract(detail, '$.reason') FROM audit_log WHERE workspace_id IS NULL \
                 AND kind = 'sso.login.failed' AND json_extract(detail, '$.user_agent') = ? ORDER BY id",
            )
            .bind(&ua.name)
            .fetch_all(&mut conn)
            .await
            .expect("read the audit log")
        }
        TestDb::Postgres { database, .. } => {
            let mut conn = sqlx::PgConnection::connect(&database.url).await.unwrap();
            sqlx::query_scalar(
                "SELECT detail->>'reason' FROM audit_log WHERE workspace_id IS NULL \
                 AND kind = 'sso.login.failed' AND detail->>'user_agent' = $1 ORDER BY id",
            )
            .bind(&ua.name)
            .fetch_all(&mut conn)
            .await
            .expect("read the audit log")
        }
    }
}

/// Moves the last authentication of every console session of one person `secs` into the past, in
/// the database: the reauth window (ASSENT_REAUTH_WINDOW_SECS) closes without waiting for it.
/// White-box like `age_sso_pending`. Tied to `sessions`.
pub async fn age_authentication(server: &TestServer, slug: &str, email: &str, secs: i64) {
    use sqlx::Connection;
    const SQL: &str = "UPDATE sessions SET authenticated_at = authenticated_at - $1 \
         WHERE user_id = (SELECT u.id FROM users u JOIN workspaces w ON w.id = u.workspace_id \
         WHERE w.slug = $2 AND u.email_lower = lower($3))";
    let aged = match &server.db {
        TestDb::Sqlite { .. } => {
            let mut conn = sqlx::SqliteConnection::connect(&server.db_url)
                .await
                .unwrap();
            let done = sqlx::query(SQL)
                .bind(secs)
                .bind(slug)
                .bind(email)
                .execute(&mut conn)
                .await;
            done.expect("age sessions").rows_affected()
        }
        TestDb::Postgres { database, .. } => {
            let mut conn = sqlx::PgConnection::connect(&database.url).await.unwrap();
            let done = sqlx::query(SQL)
                .bind(secs)
                .bind(slug)
                .bind(email)
                .execute(&mut conn)
                .await;
            done.expect("age sessions").rows_affected()
        }
    };
    assert!(aged >= 1, "no session of {email} in {slug} to age");
}

/// How many audit entries of this kind the whole deployment holds, whatever their workspace.
/// White-box: tied to `audit_log`.
pub async fn audit_rows(server: &TestServer, kind: &str) -> i64 {
    use sqlx::Connection;
    const SQL: &str = "SELECT COUNT(*) FROM audit_log WHERE kind = $1";
    match &server.db {
        TestDb::Sqlite { .. } => {
            let mut conn = sqlx::SqliteConnection::connect(&server.db_url)
                .await
                .unwrap();
            sqlx::query_scalar(SQL)
                .bind(kind)
                .fetch_one(&mut conn)
                .await
                .expect("count audit rows")
        }
        TestDb::Postgres { database, .. } => {
            let mut conn = sqlx::PgConnection::connect(&database.url).await.unwrap();
            sqlx::query_scalar(SQL)
                .bind(kind)
                .fetch_one(&mut conn)
                .await
                .expect("count audit rows")
        }
    }
}

/// The value of `assent_sso_refusals_total{reason="…"}` on the server's `/metrics`.
pub async fn sso_refusals_metric(server: &TestServer, reason: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!("assent_sso_refusals_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
        .trim()
        .parse()
        .unwrap()
}
