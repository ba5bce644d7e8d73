//! A local APNs: HTTP/2 only (ALPN "h2") over TLS with a certificate from a CA made at test
//! time. It checks what Apple checks (provider JWT signature and age, topic, push type, priority,
//! expiration, collapse id, payload size) and the payload shape Assent promises, then answers as
//! scripted per device token. Apple's reasons and statuses are those of "Handling notification
//! responses from APNs".

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use p256::ecdsa::signature::Verifier;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::jws;
use super::tls::TestPki;

/// Apple refuses provider tokens older than an hour.
const PROVIDER_TOKEN_MAX_AGE_SECS: i64 = 3600;
const MAX_PAYLOAD_BYTES: usize = 4096;
/// Apple allows 1000 concurrent streams per connection once it trusts the provider.
const MAX_CONCURRENT_STREAMS: u32 = 1000;

/// The answer for one request to one device token.
#[derive(Debug, Clone)]
pub enum ApnsReply {
    Ok,
    /// 200 after holding the stream this long, to show pushes run side by side.
    Delay(Duration),
    /// 410 `Unregistered`: the app was removed from the device.
    Unregistered,
    /// 400 `BadDeviceToken`.
    BadDeviceToken,
    /// 429 `TooManyRequests`.
    TooManyRequests,
    /// 503 `ServiceUnavailable`.
    ServiceUnavailable,
    /// 403 `ExpiredProviderToken`, whatever the token's age.
    ExpiredProviderToken,
    /// Never answers (the stream stays open until the client gives up).
    Hang,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct ApnsRequest {
    pub device_token: String,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// `iat` of the provider token, when it verified.
    pub provider_token_iat: Option<i64>,
    /// What the server answered: status and Apple reason; `None` for a hang.
    pub answer: Option<(u16, Option<String>)>,
}

impl ApnsRequest {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The provider credentials the client is configured with. The server itself keeps only the
/// public half of the key.
pub struct ApnsCredentials {
    pub key_id: String,
    pub team_id: String,
    pub topic: String,
    pub private_key_pem: String,
}

pub struct ApnsServer {
    addr: SocketAddr,
    ca_pem: String,
    credentials: ApnsCredentials,
    state: Arc<State>,
    accept_task: tokio::task::JoinHandle<()>,
}

struct Script {
    first: VecDeque<ApnsReply>,
    then: ApnsReply,
}

struct State {
    verifying_key: p256::ecdsa::VerifyingKey,
    key_id: String,
    team_id: String,
    topic: String,
    /// Signatures already checked, as Apple does not re-verify a token on every request either.
    verified: Mutex<HashSet<String>>,
    scripts: Mutex<HashMap<String, Script>>,
    received: Mutex<Vec<ApnsRequest>>,
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl ApnsServer {
    pub async fn start() -> Self {
        let pki = TestPki::generate();
        let acceptor = TlsAcceptor::from(pki.server_config(&[b"h2"]));
        let signing_key = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let credentials = ApnsCredentials {
            key_id: "TESTKEY123".to_owned(),
            team_id: "TESTTEAM12".to_owned(),
            topic: "com.example.assent".to_owned(),
            private_key_pem: signing_key
                .to_pkcs8_pem(LineEnding::LF)
                .expect("PKCS#8 PEM")
                .to_string(),
        };
        let state = Arc::new(State {
            verifying_key: p256::ecdsa::VerifyingKey::from(signing_key.public_key()),
            key_id: credentials.key_id.clone(),
            team_id: credentials.team_id.clone(),
            topic: credentials.topic.clone(),
            verified: Mutex::default(),
            scripts: Mutex::default(),
            received: Mutex::default(),
            connections: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let accept_task = tokio::spawn(accept(listener, acceptor, state.clone()));
        Self {
            addr,
            ca_pem: pki.ca_pem,
            credentials,
            state,
            accept_task,
        }
    }

    /// The origin to configure as `ASSENT_APNS_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA certificate to configure as `ASSENT_APNS_CA_FILE`.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn credentials(&self) -> &ApnsCredentials {
        &self.credentials
    }

    /// Answers `replies` in turn to the next requests for `device_token`, then 200.
    pub fn script(&self, device_token: &str, replies: impl IntoIterator<Item = ApnsReply>) {
        self.set_script(device_token, replies.into_iter().collect(), ApnsReply::Ok);
    }

    /// Answers `reply` to every request for `device_token`.
    pub fn always(&self, device_token: &str, reply: ApnsReply) {
        self.set_script(device_token, VecDeque::new(), reply);
    }

    fn set_script(&self, device_token: &str, first: VecDeque<ApnsReply>, then: ApnsReply) {
        self.state
            .scripts
            .lock()
            .unwrap()
            .insert(device_token.to_owned(), Script { first, then });
    }

    pub fn received(&self) -> Vec<ApnsRequest> {
        self.state.received.lock().unwrap().clone()
    }

    /// Forgets what was received so far, so a test can count what a later step sends.
    pub fn forget_received(&self) {
        self.state.received.lock().unwrap().clear();
    }

    pub fn received_for(&self, device_token: &str) -> Vec<ApnsRequest> {
        self.received()
            .into_iter()
            .filter(|r| r.device_token == device_token)
            .collect()
    }

    /// TLS connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// The most requests that were being handled at the same moment.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for ApnsServer {
    fn drop(&mut self) {
        // The accept task owns the connections' JoinSet: aborting it closes them all.
        self.accept_task.abort();
    }
}

async fn accept(listener: TcpListener, acceptor: TlsAcceptor, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        state.connections.fetch_add(1, Ordering::SeqCst);
        let acceptor = acceptor.clone();
        let state = state.clone();
        connections.spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            // APNs speaks HTTP/2 only: a client that did not negotiate h2 gets nothing.
            if tls.get_ref().1.alpn_protocol() != Some(b"h2".as_slice()) {
                return;
            }
            let service = service_fn(move |request| handle(state.clone(), request));
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

/// Counts a request as in flight for as long as it lives (a hang included).
struct InFlight(Arc<State>);

impl InFlight {
    fn enter(state: &Arc<State>) -> Self {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let _in_flight = InFlight::enter(&state);
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return Ok(error(StatusCode::BAD_REQUEST, "BadMessageId")),
    };
    let device_token = parts
        .uri
        .path()
        .strip_prefix("/3/device/")
        .unwrap_or_default()
        .to_owned();
    let now = unix_now();

    let (provider_token_iat, outcome) = match check(
        &state,
        &parts.method,
        parts.uri.path(),
        &parts.headers,
        &body,
        now,
    ) {
        Ok(iat) => (Some(iat), Ok(next_reply(&state, &device_token))),
        Err(refusal) => (None, Err(refusal)),
    };
    let answer = match &outcome {
        Err((status, reason)) => Some((status.as_u16(), Some(reason.clone()))),
        Ok(reply) => reply_status(reply),
    };
    state.received.lock().unwrap().push(ApnsRequest {
        device_token,
        version: parts.version,
        headers: parts.headers,
        body,
        provider_token_iat,
        answer: answer.clone(),
    });

    match outcome {
        Err((status, reason)) => Ok(error(status, &reason)),
        Ok(ApnsReply::Hang) => std::future::pending().await,
        Ok(ApnsReply::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            Ok(ok())
        }
        Ok(ApnsReply::Ok) => Ok(ok()),
        Ok(ApnsReply::Unregistered) => {
            // Apple adds when it learnt the token stopped being valid, in milliseconds.
            let body = json!({"reason": "Unregistered", "timestamp": now * 1000});
            Ok(json_response(StatusCode::GONE, &body))
        }
        Ok(_) => {
            let (status, reason) = answer.expect("only a hang has no answer");
            let status = StatusCode::from_u16(status).expect("status");
            Ok(error(status, reason.as_deref().unwrap_or_default()))
        }
    }
}

fn next_reply(state: &State, device_token: &str) -> ApnsReply {
    let mut scripts = state.scripts.lock().unwrap();
    match scripts.get_mut(device_token) {
        None => ApnsReply::Ok,
        Some(script) => script
            .first
            .pop_front()
            .unwrap_or_else(|| script.then.clone()),
    }
}

/// The status and reason a scripted reply answers with; `None` for a hang.
fn reply_status(reply: &ApnsReply) -> Option<(u16, Option<String>)> {
    let (status, reason) = match reply {
        ApnsReply::Hang => return None,
        ApnsReply::Ok | ApnsReply::Delay(_) => (200, None),
        ApnsReply::Unregistered => (410, Some("Unregistered")),
        ApnsReply::BadDeviceToken => (400, Some("BadDeviceToken")),
        ApnsReply::TooManyRequests => (429, Some("TooManyRequests")),
        ApnsReply::ServiceUnavailable => (503, Some("ServiceUnavailable")),
        ApnsReply::ExpiredProviderToken => (403, Some("ExpiredProviderToken")),
    };
    Some((status, reason.map(str::to_owned)))
}

type Refusal = (StatusCode, String);

fn refuse(status: StatusCode, reason: &str) -> Refusal {
    (status, reason.to_owned())
}

/// Apple's checks, then Assent's promises about the payload. Returns the provider token's `iat`.
fn check(
    state: &State,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<i64, Refusal> {
    if method != Method::POST {
        return Err(refuse(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"));
    }
    let Some(device_token) = path.strip_prefix("/3/device/") else {
        return Err(refuse(StatusCode::NOT_FOUND, "BadPath"));
    };
    if device_token.is_empty() || !device_token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(refuse(StatusCode::BAD_REQUEST, "BadDeviceToken"));
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());

    let iat = verify_provider_token(state, header("authorization"), now)?;

    match header("apns-topic") {
        None => return Err(refuse(StatusCode::BAD_REQUEST, "MissingTopic")),
        Some(topic) if topic != state.topic => {
            return Err(refuse(StatusCode::BAD_REQUEST, "BadTopic"))
        }
        Some(_) => {}
    }
    let push_type = header("apns-push-type").unwrap_or_default();
    let priority = header("apns-priority").unwrap_or("10");
    match (push_type, priority) {
        ("alert", "10") | ("background", "5") => {}
        // Apple: background pushes must use priority 5; Assent sends every alert at 10.
        ("alert" | "background", _) => return Err(refuse(StatusCode::BAD_REQUEST, "BadPriority")),
        _ => return Err(refuse(StatusCode::BAD_REQUEST, "InvalidPushType")),
    }
    let Some(expiration) = header("apns-expiration").and_then(|v| v.parse::<i64>().ok()) else {
        return Err(refuse(StatusCode::BAD_REQUEST, "BadExpirationDate"));
    };
    let collapse_id = header("apns-collapse-id");
    if collapse_id.is_some_and(|id| id.len() > 64) {
        return Err(refuse(StatusCode::BAD_REQUEST, "BadCollapseId"));
    }
    if body.is_empty() {
        return Err(refuse(StatusCode::BAD_REQUEST, "PayloadEmpty"));
    }
    if body.len() > MAX_PAYLOAD_BYTES {
        return Err(refuse(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge"));
    }
    let Ok(payload) = serde_json::from_slice::<Value>(body) else {
        return Err(refuse(StatusCode::BAD_REQUEST, "BadPayload"));
    };
    check_assent_payload(&payload, push_type, expiration, collapse_id, now)
        .map_err(|why| (StatusCode::BAD_REQUEST, format!("AssentBadPayload: {why}")))?;
    Ok(iat)
}

fn verify_provider_token(
    state: &State,
    authorization: Option<&str>,
    now: i64,
) -> Result<i64, Refusal> {
    let invalid = || refuse(StatusCode::FORBIDDEN, "InvalidProviderToken");
    let Some(token) = authorization.and_then(|v| {
        v.strip_prefix("bearer ")
            .or_else(|| v.strip_prefix("Bearer "))
    }) else {
        return Err(refuse(StatusCode::FORBIDDEN, "MissingProviderToken"));
    };
    let jws = jws::parse(token).ok_or_else(invalid)?;
    if jws.header["alg"] != "ES256" || jws.header["kid"] != state.key_id.as_str() {
        return Err(invalid());
    }
    let already_verified = state.verified.lock().unwrap().contains(token);
    if !already_verified {
        let signature =
            p256::ecdsa::Signature::from_slice(&jws.signature).map_err(|_| invalid())?;
        state
            .verifying_key
            .verify(jws.signing_input.as_bytes(), &signature)
            .map_err(|_| invalid())?;
        state.verified.lock().unwrap().insert(token.to_owned());
    }
    if jws.claims["iss"] != state.team_id.as_str() {
        return Err(invalid());
    }
    let iat = jws.claims["iat"].as_i64().ok_or_else(invalid)?;
    if iat > now + 60 {
        return Err(invalid());
    }
    if now - iat > PROVIDER_TOKEN_MAX_AGE_SECS {
        return Err(refuse(StatusCode::FORBIDDEN, "ExpiredProviderToken"));
    }
    Ok(iat)
}

/// What Assent promises in every payload: the challenge data, nothing more.
fn check_assent_payload(
    payload: &Value,
    push_type: &str,
    expiration: i64,
    collapse_id: Option<&str>,
    now: i64,
) -> Result<(), String> {
    let object = payload.as_object().ok_or("not an object")?;
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    if keys
        != [
            "action",
            "aps",
            "challenge_id",
            "expires_at",
            "kind",
            "workspace",
        ]
    {
        return Err(format!("unexpected keys {keys:?}"));
    }
    for key in ["action", "challenge_id", "expires_at", "kind", "workspace"] {
        if payload[key].as_str().is_none_or(str::is_empty) {
            return Err(format!("{key} is not a non-empty string"));
        }
    }
    let expires_at = time::OffsetDateTime::parse(
        payload["expires_at"].as_str().unwrap_or_default(),
        &time::format_description::well_known::Rfc3339,
    )
    .map_err(|_| "expires_at is not RFC 3339")?
    .unix_timestamp();
    // apns-expiration is the challenge's expiry, or 0 once it has passed.
    if expiration != expires_at && !(expiration == 0 && expires_at <= now) {
        return Err(format!(
            "apns-expiration {expiration} != expires_at {expires_at}"
        ));
    }
    if collapse_id != payload["challenge_id"].as_str() {
        return Err("apns-collapse-id is not the challenge id".into());
    }
    let aps = &payload["aps"];
    match (push_type, payload["kind"].as_str()) {
        ("alert", Some("challenge")) => {
            let alert = &aps["alert"];
            let text = |k: &str| alert[k].as_str().is_some_and(|v| !v.is_empty());
            if !(text("title") && text("body")) || aps["mutable-content"] != 1 {
                return Err("an alert needs a title, a body and mutable-content 1".into());
            }
            if aps.get("content-available").is_some() {
                return Err("an alert is not a background push".into());
            }
        }
        ("background", Some("resolved")) => {
            if *aps != json!({"content-available": 1}) {
                return Err("a background push holds only content-available 1".into());
            }
        }
        (push_type, kind) => return Err(format!("push type {push_type} for kind {kind:?}")),
    }
    Ok(())
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn ok() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    let id = format!("{:032X}", rand::random::<u128>());
    let apns_id = format!(
        "{}-{}-{}-{}-{}",
        &id[..8],
        &id[8..12],
        &id[12..16],
        &id[16..20],
        &id[20..]
    );
    response
        .headers_mut()
        .insert("apns-id", apns_id.parse().expect("header value"));
    response
}

fn error(status: StatusCode, reason: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({ "reason": reason }))
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("header value"),
    );
    response
}
