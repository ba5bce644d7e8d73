//! APNs, token-based, over HTTP/2: `POST /3/device/{token}` with an ES256 provider JWT.
//!
//! Apple's rules that shape this file (Apple, "Sending notification requests to APNs" and
//! "Establishing a token-based connection to APNs"):
//! - one provider token for all requests, renewed before it is an hour old and not more often
//!   than every 20 minutes (`ExpiredProviderToken`, `TooManyProviderTokenUpdates`);
//! - HTTP/2 only, many concurrent streams on one connection per host;
//! - 410 or `BadDeviceToken` means the device token is dead; 429 and 5xx are worth a retry.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use super::retry::{deliver_with_retries, parse_retry_after, transport_failure, Attempt};
use super::{
    action_title, log_outcome, notice_text, workspace_label, ApnsEnvironment, ConfigError,
    Delivery, Platform, PushKind, PushMessage, PushProvider, PushTarget, RetryPolicy, Secret,
};
use crate::clock::{rfc3339, SharedClock};

const PRODUCTION_ORIGIN: &str = "https://api.push.apple.com";
const SANDBOX_ORIGIN: &str = "https://api.sandbox.push.apple.com";

/// Renew the provider token after this long: Apple refuses one older than an hour.
const TOKEN_RENEW_AFTER: time::Duration = time::Duration::minutes(50);
/// Never sign a new provider token sooner than this after the last: Apple answers
/// `TooManyProviderTokenUpdates` to a provider that renews more often.
const TOKEN_MIN_LIFETIME: time::Duration = time::Duration::minutes(20);

/// Apple's limit on `apns-collapse-id`.
const MAX_COLLAPSE_ID_BYTES: usize = 64;

const APNS_TOPIC: HeaderName = HeaderName::from_static("apns-topic");
const APNS_PUSH_TYPE: HeaderName = HeaderName::from_static("apns-push-type");
const APNS_PRIORITY: HeaderName = HeaderName::from_static("apns-priority");
const APNS_EXPIRATION: HeaderName = HeaderName::from_static("apns-expiration");
const APNS_COLLAPSE_ID: HeaderName = HeaderName::from_static("apns-collapse-id");

/// Where pushes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApnsEndpoint {
    /// Apple's production or sandbox host, picked per device by its environment.
    Apple,
    /// One origin for every device (`ASSENT_APNS_ENDPOINT`): a local APNs server in tests.
    Override(url::Url),
}

impl ApnsEndpoint {
    fn origin(&self, environment: ApnsEnvironment) -> url::Url {
        match (self, environment) {
            (ApnsEndpoint::Override(url), _) => url.clone(),
            (ApnsEndpoint::Apple, ApnsEnvironment::Production) => {
                url::Url::parse(PRODUCTION_ORIGIN).expect("a valid URL")
            }
            (ApnsEndpoint::Apple, ApnsEnvironment::Sandbox) => {
                url::Url::parse(SANDBOX_ORIGIN).expect("a valid URL")
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApnsConfig {
    /// The `.p8` key's PKCS#8 PEM, checked to be a P-256 key.
    pub(crate) signing_key: Secret,
    pub key_id: String,
    pub team_id: String,
    /// The app's bundle id, sent as `apns-topic`.
    pub topic: String,
    pub endpoint: ApnsEndpoint,
    /// Roots trusted besides the built-in web PKI ones (`ASSENT_APNS_CA_FILE`).
    pub extra_roots: Vec<reqwest::Certificate>,
    pub retry: RetryPolicy,
}

/// An APNs provider: one HTTP/2 client shared by every delivery.
pub struct ApnsClient {
    http: reqwest::Client,
    tokens: ProviderTokens,
    topic: HeaderValue,
    production: url::Url,
    sandbox: url::Url,
    retry: RetryPolicy,
    clock: SharedClock,
}

impl fmt::Debug for ApnsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApnsClient")
            .field("topic", &self.topic)
            .field("production", &self.production.as_str())
            .field("sandbox", &self.sandbox.as_str())
            .finish_non_exhaustive()
    }
}

impl ApnsClient {
    pub fn new(config: ApnsConfig, clock: SharedClock) -> Result<Self, ConfigError> {
        let key =
            EncodingKey::from_ec_pem(config.signing_key.expose().as_bytes()).map_err(|_| {
                ConfigError::Invalid {
                    var: ApnsConfig::KEY_FILE,
                    reason: "not a PKCS#8 P-256 private key".into(),
                }
            })?;
        // Prior knowledge makes the pool treat the host as HTTP/2 from the start, so concurrent
        // first pushes share one connection instead of each opening its own; over TLS it also
        // offers only "h2" by ALPN, as APNs speaks nothing else.
        let mut builder = reqwest::Client::builder()
            .http2_prior_knowledge()
            .http2_keep_alive_interval(Duration::from_secs(60))
            .http2_keep_alive_timeout(Duration::from_secs(20))
            .http2_keep_alive_while_idle(true);
        for root in config.extra_roots {
            builder = builder.add_root_certificate(root);
        }
        let http = builder.build().map_err(|e| ConfigError::Invalid {
            var: ApnsConfig::CA_FILE,
            reason: format!("cannot build the HTTP client: {e}"),
        })?;
        let topic = HeaderValue::try_from(&config.topic).map_err(|_| ConfigError::Invalid {
            var: ApnsConfig::TOPIC,
            reason: "not a valid header value".into(),
        })?;
        Ok(Self {
            http,
            tokens: ProviderTokens {
                key,
                key_id: config.key_id,
                team_id: config.team_id,
                current: Mutex::new(None),
            },
            topic,
            production: config.endpoint.origin(ApnsEnvironment::Production),
            sandbox: config.endpoint.origin(ApnsEnvironment::Sandbox),
            retry: config.retry,
            clock,
        })
    }

    async fn attempt(
        &self,
        url: &url::Url,
        body: &Bytes,
        msg: &PushMessage,
        may_renew: bool,
    ) -> Attempt {
        let now = self.clock.now();
        let token = match self.tokens.current(now) {
            Ok(token) => token,
            Err(e) => {
                tracing::error!(error = %e, "cannot sign the APNs provider token");
                return Attempt::Done(Delivery::Failed {
                    reason: "signing".into(),
                });
            }
        };
        let (push_type, priority) = match msg.kind {
            PushKind::Challenge | PushKind::Notice => (
                HeaderValue::from_static("alert"),
                HeaderValue::from_static("10"),
            ),
            // Apple refuses priority 10 for background pushes, and throttles them anyway.
            PushKind::Resolved => (
                HeaderValue::from_static("background"),
                HeaderValue::from_static("5"),
            ),
        };
        // Apple stores an undelivered push until apns-expiration; 0 means "now or never", the
        // only sensible choice once the challenge is over.
        let expiration = if msg.expires_at > now {
            msg.expires_at.unix_timestamp()
        } else {
            0
        };
        let mut request = self
            .http
            .post(url.clone())
            .header(AUTHORIZATION, token.authorization.clone())
            .header(APNS_TOPIC, self.topic.clone())
            .header(APNS_PUSH_TYPE, push_type)
            .header(APNS_PRIORITY, priority)
            .header(APNS_EXPIRATION, HeaderValue::from(expiration))
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body.clone());
        // A longer id would make Apple refuse the push (BadCollapseId); collapsing is only a nicety.
        if msg.challenge_id.len() <= MAX_COLLAPSE_ID_BYTES {
            request = request.header(APNS_COLLAPSE_ID, &msg.challenge_id);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return transport_failure(e),
        };
        let status = response.status();
        if status.is_success() {
            return Attempt::Done(Delivery::Delivered);
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, self.clock.now()));
        let reason = match response.json::<ApnsErrorBody>().await {
            Ok(body) => body.reason,
            Err(_) => format!("HTTP {}", status.as_u16()),
        };
        self.classify(status, reason, retry_after, &token, may_renew)
    }

    fn classify(
        &self,
        status: StatusCode,
        reason: String,
        retry_after: Option<Duration>,
        token: &ProviderToken,
        may_renew: bool,
    ) -> Attempt {
        match status.as_u16() {
            // 410: Unregistered or ExpiredToken, the device token is gone for good.
            410 => Attempt::Done(Delivery::InvalidToken { reason }),
            400 if reason == "BadDeviceToken" => Attempt::Done(Delivery::InvalidToken { reason }),
            403 if reason == "ExpiredProviderToken" && may_renew => {
                match self.tokens.renew_rejected(token, self.clock.now()) {
                    Ok(Renewal::Renewed | Renewal::AlreadyRenewed) => {
                        Attempt::RetryWithFreshCredential { reason }
                    }
                    Ok(Renewal::TooSoon { age }) => {
                        tracing::warn!(
                            token_age_secs = age.whole_seconds(),
                            "APNs says the provider token expired although it is young: \
                             check this server's clock"
                        );
                        Attempt::Done(Delivery::Failed { reason })
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot sign the APNs provider token");
                        Attempt::Done(Delivery::Failed { reason })
                    }
                }
            }
            429 | 500..=599 => Attempt::Transient {
                reason,
                retry_after,
            },
            _ => Attempt::Done(Delivery::Failed { reason }),
        }
    }
}

#[async_trait::async_trait]
impl PushProvider for ApnsClient {
    async fn deliver(&self, target: &PushTarget, msg: &PushMessage) -> Delivery {
        let delivery = if target.platform != Platform::Apns {
            Delivery::Failed {
                reason: "wrong_platform".into(),
            }
        } else if !is_device_token(&target.token) {
            // The token goes into the URL path: never send one that could change the path.
            Delivery::InvalidToken {
                reason: "BadDeviceToken".into(),
            }
        } else {
            let environment = target
                .apns_environment
                .unwrap_or(ApnsEnvironment::Production);
            let mut url = match environment {
                ApnsEnvironment::Production => self.production.clone(),
                ApnsEnvironment::Sandbox => self.sandbox.clone(),
            };
            url.path_segments_mut()
                .expect("an http(s) origin has a path")
                .clear()
                .extend(["3", "device", &target.token]);
            let body = Bytes::from(payload(msg).to_string());
            deliver_with_retries(&self.retry, &*self.clock, msg, |may_renew| {
                self.attempt(&url, &body, msg, may_renew)
            })
            .await
        };
        log_outcome(target, &delivery);
        delivery
    }

    fn platform(&self) -> Platform {
        Platform::Apns
    }
}

/// APNs device tokens are hex (64 digits today; Apple says the length may grow).
fn is_device_token(token: &str) -> bool {
    (1..=200).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_hexdigit())
}

#[derive(Deserialize)]
struct ApnsErrorBody {
    reason: String,
}

/// The JSON body: `aps` for the system, the rest for the app. Holds no secret: the phone fetches
/// the challenge (and its numbers) from the server.
fn payload(msg: &PushMessage) -> serde_json::Value {
    let workspace = workspace_label(&msg.workspace_name);
    let aps = match msg.kind {
        PushKind::Challenge => json!({
            "alert": {
                "title": action_title(&msg.action),
                "body": format!(
                    "{workspace}: check the number on the console, then approve or deny."
                ),
            },
            // Lets the app's notification service extension add the number choices it fetches.
            "mutable-content": 1,
        }),
        PushKind::Resolved => json!({ "content-available": 1 }),
        PushKind::Notice => {
            let (title, body) = notice_text(&msg.action, &workspace);
            json!({ "alert": { "title": title, "body": body } })
        }
    };
    json!({
        "aps": aps,
        "kind": msg.kind.as_str(),
        "challenge_id": msg.challenge_id,
        "action": msg.action,
        "workspace": workspace,
        "expires_at": rfc3339(msg.expires_at),
    })
}

/// The provider token cache. Signing is cheap but Apple limits how often it may change.
struct ProviderTokens {
    key: EncodingKey,
    key_id: String,
    team_id: String,
    current: Mutex<Option<ProviderToken>>,
}

#[derive(Clone)]
struct ProviderToken {
    jwt: Arc<str>,
    /// `bearer <jwt>`, made once per token rather than once per push.
    authorization: HeaderValue,
    issued_at: OffsetDateTime,
}

impl fmt::Debug for ProviderToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderToken")
            .field("jwt", &"***")
            .field("issued_at", &self.issued_at)
            .finish()
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Renewal {
    Renewed,
    /// Another delivery renewed it since the refused one was taken: use the current one.
    AlreadyRenewed,
    /// The refused token is younger than Apple lets us replace.
    TooSoon {
        age: time::Duration,
    },
}

#[derive(Serialize)]
struct ProviderClaims<'a> {
    iss: &'a str,
    iat: i64,
}

impl ProviderTokens {
    fn current(&self, now: OffsetDateTime) -> jsonwebtoken::errors::Result<ProviderToken> {
        let mut current = self.current.lock().expect("provider token lock");
        match current.as_ref() {
            Some(token) if now - token.issued_at < TOKEN_RENEW_AFTER => Ok(token.clone()),
            _ => {
                let token = self.sign(now)?;
                *current = Some(token.clone());
                Ok(token)
            }
        }
    }

    /// After `ExpiredProviderToken` for `rejected`: many in-flight pushes see that answer for the
    /// same token, and only the first may sign a new one.
    fn renew_rejected(
        &self,
        rejected: &ProviderToken,
        now: OffsetDateTime,
    ) -> jsonwebtoken::errors::Result<Renewal> {
        let mut current = self.current.lock().expect("provider token lock");
        match current.as_ref() {
            Some(token) if token.jwt != rejected.jwt => return Ok(Renewal::AlreadyRenewed),
            Some(token) if now - token.issued_at < TOKEN_MIN_LIFETIME => {
                return Ok(Renewal::TooSoon {
                    age: now - token.issued_at,
                })
            }
            _ => {}
        }
        *current = Some(self.sign(now)?);
        Ok(Renewal::Renewed)
    }

    fn sign(&self, now: OffsetDateTime) -> jsonwebtoken::errors::Result<ProviderToken> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let claims = ProviderClaims {
            iss: &self.team_id,
            iat: now.unix_timestamp(),
        };
        let jwt = jsonwebtoken::encode(&header, &claims, &self.key)?;
        let mut authorization =
            HeaderValue::try_from(format!("bearer {jwt}")).expect("a JWT is base64url and dots");
        authorization.set_sensitive(true);
        Ok(ProviderToken {
            jwt: jwt.into(),
            authorization,
            issued_at: now,
        })
    }
}

#[cfg(test)]
#[path = "apns_tests.rs"]
mod tests;
