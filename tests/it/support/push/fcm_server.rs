//! A local FCM HTTP v1 plus its OAuth2 token endpoint, on plain HTTP.
//!
//! The token endpoint checks the JWT-bearer grant (RFC 7523) as Google does: RS256 signature
//! against the service account's public key, `iss`, `scope`, `aud` = the token URI, and a lifetime
//! of at most an hour; it issues access tokens with `expires_in`. `messages:send` checks the bearer
//! and the message, then answers as scripted per registration token, with Google's error bodies
//! (google.rpc.Status with an `FcmError` detail).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::{Path, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::signature::Verifier;
use rsa::RsaPrivateKey;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::net::TcpListener;

use super::jws;

const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const DATA_KEYS: [&str; 5] = ["action", "challenge_id", "expires_at", "kind", "workspace"];

/// The answer for one `messages:send` to one registration token.
#[derive(Debug, Clone)]
pub enum FcmReply {
    Ok,
    /// 200 after holding the request this long.
    Delay(Duration),
    /// 404 NOT_FOUND / `UNREGISTERED`: the app instance is gone.
    Unregistered,
    /// 400 INVALID_ARGUMENT naming `message.token`.
    InvalidToken,
    /// 400 INVALID_ARGUMENT about something else in the message.
    InvalidArgument,
    /// 429 RESOURCE_EXHAUSTED / `QUOTA_EXCEEDED` with `Retry-After`.
    QuotaExceeded {
        retry_after_secs: u64,
    },
    /// 503 UNAVAILABLE with `Retry-After`.
    Unavailable {
        retry_after_secs: u64,
    },
    /// 401 UNAUTHENTICATED, and the bearer used is revoked, as when Google invalidates a token.
    Unauthenticated,
    Hang,
}

/// One `messages:send` as the server saw it.
#[derive(Debug, Clone)]
pub struct FcmRequest {
    pub registration_token: Option<String>,
    pub bearer: Option<String>,
    pub body: Value,
    /// The status answered; `None` for a hang.
    pub status: Option<u16>,
    /// Why the server refused the request before any scripted reply, if it did.
    pub refusal: Option<String>,
}

pub struct FcmServer {
    addr: SocketAddr,
    service_account_json: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

struct Script {
    first: VecDeque<FcmReply>,
    then: FcmReply,
}

struct State {
    verifying_key: VerifyingKey<Sha256>,
    project_id: String,
    client_email: String,
    private_key_id: String,
    token_uri: String,
    expires_in: AtomicI64,
    /// Access tokens issued, with their expiry (Unix seconds).
    issued: Mutex<HashMap<String, i64>>,
    grants: AtomicUsize,
    scripts: Mutex<HashMap<String, Script>>,
    received: Mutex<Vec<FcmRequest>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// RSA key generation is slow; one service-account key serves every server of a test binary.
fn service_account_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("RSA key"))
}

impl FcmServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let key = service_account_key();
        let project_id = "assent-test".to_owned();
        let client_email = "push@assent-test.iam.gserviceaccount.com".to_owned();
        let private_key_id = format!("{:040x}", rand::random::<u128>());
        let token_uri = format!("http://{addr}/token");
        let service_account_json = json!({
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": private_key_id,
            "private_key": key.to_pkcs8_pem(LineEnding::LF).expect("PEM").to_string(),
            "client_email": client_email,
            "client_id": "1234567890",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
        })
        .to_string();
        let state = Arc::new(State {
            verifying_key: VerifyingKey::new(key.to_public_key()),
            project_id,
            client_email,
            private_key_id,
            token_uri,
            expires_in: AtomicI64::new(3599),
            issued: Mutex::default(),
            grants: AtomicUsize::new(0),
            scripts: Mutex::default(),
            received: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/token", post(token))
            .route("/v1/projects/{project}/messages:send", post(send))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Self {
            addr,
            service_account_json,
            state,
            task,
        }
    }

    /// The origin to configure as `ASSENT_FCM_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The service-account key file's contents; its `token_uri` points at this server.
    pub fn service_account_json(&self) -> &str {
        &self.service_account_json
    }

    pub fn project_id(&self) -> &str {
        &self.state.project_id
    }

    /// The `expires_in` of access tokens issued from now on.
    pub fn set_access_token_lifetime(&self, secs: i64) {
        self.state.expires_in.store(secs, Ordering::SeqCst);
    }

    /// Answers `replies` in turn to the next sends to `registration_token`, then 200.
    pub fn script(&self, registration_token: &str, replies: impl IntoIterator<Item = FcmReply>) {
        self.set_script(
            registration_token,
            replies.into_iter().collect(),
            FcmReply::Ok,
        );
    }

    /// Answers `reply` to every send to `registration_token`.
    pub fn always(&self, registration_token: &str, reply: FcmReply) {
        self.set_script(registration_token, VecDeque::new(), reply);
    }

    fn set_script(&self, token: &str, first: VecDeque<FcmReply>, then: FcmReply) {
        self.state
            .scripts
            .lock()
            .unwrap()
            .insert(token.to_owned(), Script { first, then });
    }

    pub fn received(&self) -> Vec<FcmRequest> {
        self.state.received.lock().unwrap().clone()
    }

    /// Forgets what was received so far, so a test can count what a later step sends.
    pub fn forget_received(&self) {
        self.state.received.lock().unwrap().clear();
    }

    pub fn received_for(&self, registration_token: &str) -> Vec<FcmRequest> {
        self.received()
            .into_iter()
            .filter(|r| r.registration_token.as_deref() == Some(registration_token))
            .collect()
    }

    /// Grants accepted by the token endpoint.
    pub fn grants(&self) -> usize {
        self.state.grants.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for FcmServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn oauth_error(description: &str) -> Response {
    let body = json!({"error": "invalid_grant", "error_description": description});
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

async fn token(
    AxumState(state): AxumState<Arc<State>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if form.get("grant_type").map(String::as_str) != Some(JWT_BEARER_GRANT) {
        let body = json!({"error": "unsupported_grant_type"});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    let Some(assertion) = form.get("assertion").and_then(|a| jws::parse(a)) else {
        return oauth_error("Invalid JWT.");
    };
    if assertion.header["alg"] != "RS256" {
        return oauth_error("Invalid JWT: alg");
    }
    if assertion.header["kid"] != state.private_key_id.as_str() {
        return oauth_error("Invalid JWT Signature.");
    }
    let signature_ok = Signature::try_from(assertion.signature.as_slice())
        .map(|s| {
            state
                .verifying_key
                .verify(assertion.signing_input.as_bytes(), &s)
                .is_ok()
        })
        .unwrap_or(false);
    if !signature_ok {
        return oauth_error("Invalid JWT Signature.");
    }
    let claims = &assertion.claims;
    if claims["iss"] != state.client_email.as_str() {
        return oauth_error("Invalid JWT: iss");
    }
    if claims["aud"] != state.token_uri.as_str() {
        return oauth_error("Invalid JWT: Failed audience check.");
    }
    let scopes = claims["scope"].as_str().unwrap_or_default();
    if !scopes.split(' ').any(|s| s == FCM_SCOPE) {
        return oauth_error("Invalid JWT: scope");
    }
    let (Some(iat), Some(exp)) = (claims["iat"].as_i64(), claims["exp"].as_i64()) else {
        return oauth_error("Invalid JWT: iat/exp");
    };
    let now = unix_now();
    if iat > now + 60 || exp <= now || exp - iat > 3600 {
        return oauth_error("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.");
    }
    let access_token = format!("ya29.test-{:032x}", rand::random::<u128>());
    let expires_in = state.expires_in.load(Ordering::SeqCst);
    state
        .issued
        .lock()
        .unwrap()
        .insert(access_token.clone(), now + expires_in);
    state.grants.fetch_add(1, Ordering::SeqCst);
    Json(json!({
        "access_token": access_token,
        "expires_in": expires_in,
        "token_type": "Bearer",
    }))
    .into_response()
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

/// A Google error body: google.rpc.Status, with FCM's error code when it has one.
fn google_error(status: StatusCode, rpc_status: &str, message: &str, details: Value) -> Response {
    let body = json!({"error": {
        "code": status.as_u16(),
        "message": message,
        "status": rpc_status,
        "details": details,
    }});
    (status, Json(body)).into_response()
}

fn fcm_error(code: &str) -> Value {
    json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code})
}

fn field_violation(field: &str, description: &str) -> Value {
    json!({"@type": "type.googleapis.com/google.rpc.BadRequest",
           "fieldViolations": [{"field": field, "description": description}]})
}

async fn send(
    AxumState(state): AxumState<Arc<State>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let _in_flight = InFlight::enter(&state);
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let registration_token = body["message"]["token"].as_str().map(str::to_owned);

    let (response, refusal) = match check(&state, &project, bearer.as_deref(), &body) {
        Err(Refusal { why, response }) => (Some(*response), Some(why)),
        Ok(token) => match next_reply(&state, &token) {
            FcmReply::Hang => (None, None),
            reply => (Some(scripted(&state, bearer.as_deref(), reply).await), None),
        },
    };
    state.received.lock().unwrap().push(FcmRequest {
        registration_token,
        bearer,
        body,
        status: response.as_ref().map(|r| r.status().as_u16()),
        refusal,
    });
    match response {
        Some(response) => response,
        None => std::future::pending().await,
    }
}

fn next_reply(state: &State, token: &str) -> FcmReply {
    let mut scripts = state.scripts.lock().unwrap();
    match scripts.get_mut(token) {
        None => FcmReply::Ok,
        Some(script) => script
            .first
            .pop_front()
            .unwrap_or_else(|| script.then.clone()),
    }
}

async fn scripted(state: &State, bearer: Option<&str>, reply: FcmReply) -> Response {
    let with_retry_after = |mut response: Response, secs: u64| {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
        response
    };
    match reply {
        FcmReply::Ok => sent(state),
        FcmReply::Hang => std::future::pending().await,
        FcmReply::Delay(delay) => {
            tokio::time::sleep(delay).await;
            sent(state)
        }
        FcmReply::Unregistered => google_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Requested entity was not found.",
            json!([fcm_error("UNREGISTERED")]),
        ),
        FcmReply::InvalidToken => google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "The registration token is not a valid FCM registration token",
            json!([
                fcm_error("INVALID_ARGUMENT"),
                field_violation("message.token", "Invalid registration token")
            ]),
        ),
        FcmReply::InvalidArgument => google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Invalid value at 'message.android.ttl'",
            json!([
                fcm_error("INVALID_ARGUMENT"),
                field_violation("message.android.ttl", "Invalid value")
            ]),
        ),
        FcmReply::QuotaExceeded { retry_after_secs } => with_retry_after(
            google_error(
                StatusCode::TOO_MANY_REQUESTS,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for quota metric 'Send requests'.",
                json!([fcm_error("QUOTA_EXCEEDED")]),
            ),
            retry_after_secs,
        ),
        FcmReply::Unavailable { retry_after_secs } => with_retry_after(
            google_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "The service is currently unavailable.",
                json!([fcm_error("UNAVAILABLE")]),
            ),
            retry_after_secs,
        ),
        FcmReply::Unauthenticated => {
            if let Some(bearer) = bearer {
                state.issued.lock().unwrap().remove(bearer);
            }
            unauthenticated()
        }
    }
}

fn sent(state: &State) -> Response {
    let name = format!(
        "projects/{}/messages/0:{}",
        state.project_id,
        rand::random::<u64>()
    );
    Json(json!({ "name": name })).into_response()
}

fn unauthenticated() -> Response {
    google_error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        json!([]),
    )
}

/// Why a request was refused before any scripted reply, and the answer.
struct Refusal {
    why: String,
    response: Box<Response>,
}

fn refusal(why: &str, response: Response) -> Refusal {
    Refusal {
        why: why.to_owned(),
        response: Box::new(response),
    }
}

fn invalid_argument(why: &str, field: &str) -> Refusal {
    let response = google_error(
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        &format!("Invalid value at '{field}'"),
        json!([fcm_error("INVALID_ARGUMENT"), field_violation(field, why)]),
    );
    refusal(why, response)
}

/// Google's checks, then the shape Assent promises. Returns the registration token; a refusal
/// carries why, and the response.
fn check(
    state: &State,
    project: &str,
    bearer: Option<&str>,
    body: &Value,
) -> Result<String, Refusal> {
    let now = unix_now();
    let bearer_ok = bearer.is_some_and(|b| {
        state
            .issued
            .lock()
            .unwrap()
            .get(b)
            .is_some_and(|&expiry| expiry > now)
    });
    if !bearer_ok {
        return Err(refusal("no valid bearer", unauthenticated()));
    }
    if project != state.project_id {
        let response = google_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Permission denied on resource project.",
            json!([]),
        );
        return Err(refusal("another project", response));
    }
    let message = &body["message"];
    let targets = ["token", "topic", "condition"]
        .iter()
        .filter(|t| message.get(**t).is_some())
        .count();
    let token = match message["token"].as_str() {
        Some(token) if targets == 1 && !token.is_empty() => token.to_owned(),
        _ => {
            return Err(invalid_argument(
                "exactly one target, a token",
                "message.token",
            ))
        }
    };
    let Some(data) = message["data"].as_object() else {
        return Err(invalid_argument("data is an object", "message.data"));
    };
    // FCM data values are strings only.
    if !data.values().all(Value::is_string) {
        return Err(invalid_argument("data values are strings", "message.data"));
    }
    let android = &message["android"];
    let priority = android["priority"].as_str().unwrap_or("normal");
    if !matches!(priority, "high" | "normal" | "HIGH" | "NORMAL") {
        return Err(invalid_argument(
            "unknown priority",
            "message.android.priority",
        ));
    }
    // FCM keeps a message at most four weeks.
    let ttl_ok = android["ttl"]
        .as_str()
        .and_then(parse_duration_secs)
        .is_some_and(|ttl| ttl <= 2_419_200.0);
    if !ttl_ok {
        return Err(invalid_argument(
            "ttl is a duration like \"120s\"",
            "message.android.ttl",
        ));
    }

    // Assent's promises: a data-only message with the challenge data and nothing more.
    let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
    keys.sort_unstable();
    if keys != DATA_KEYS || message.get("notification").is_some() {
        return Err(invalid_argument(
            "Assent sends exactly its five data keys",
            "message.data",
        ));
    }
    let expires_at_ok = data["expires_at"].as_str().is_some_and(|v| {
        time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339).is_ok()
    });
    if !expires_at_ok {
        return Err(invalid_argument("expires_at is RFC 3339", "message.data"));
    }
    match (data["kind"].as_str(), priority) {
        (Some("challenge"), "high") | (Some("resolved"), "normal") => Ok(token),
        _ => Err(invalid_argument(
            "a challenge goes at high priority, a resolved message at normal",
            "message.android.priority",
        )),
    }
}

/// A protobuf Duration in JSON: seconds with up to nine fractional digits and an `s`.
fn parse_duration_secs(value: &str) -> Option<f64> {
    let number = value.strip_suffix('s')?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 9 {
        return None;
    }
    number.parse().ok()
}
