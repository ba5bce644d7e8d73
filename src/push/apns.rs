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
mod tests {
    use std::collections::HashMap;
    use std::io::Write;

    use jsonwebtoken::{DecodingKey, Validation};
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    use time::macros::datetime;

    use super::*;
    use crate::clock::{Clock, ManualClock};

    struct TestKey {
        private_pem: String,
        public_pem: String,
    }

    fn test_key() -> TestKey {
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        TestKey {
            private_pem: secret.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            public_pem: secret
                .public_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
        }
    }

    fn tokens(key: &TestKey) -> ProviderTokens {
        ProviderTokens {
            key: EncodingKey::from_ec_pem(key.private_pem.as_bytes()).unwrap(),
            key_id: "KEYID12345".into(),
            team_id: "TEAMID1234".into(),
            current: Mutex::new(None),
        }
    }

    #[derive(Deserialize)]
    struct Claims {
        iss: String,
        iat: i64,
    }

    #[test]
    fn provider_token_is_es256_with_kid_iss_and_iat() {
        let key = test_key();
        let now = datetime!(2026-11-28 12:00:00 UTC);
        let token = tokens(&key).current(now).unwrap();
        let header = jsonwebtoken::decode_header(&token.jwt).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some("KEYID12345"));
        let mut validation = Validation::new(Algorithm::ES256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        let decoded = jsonwebtoken::decode::<Claims>(
            &token.jwt,
            &DecodingKey::from_ec_pem(key.public_pem.as_bytes()).unwrap(),
            &validation,
        )
        .unwrap();
        assert_eq!(decoded.claims.iss, "TEAMID1234");
        assert_eq!(decoded.claims.iat, now.unix_timestamp());
    }

    #[test]
    fn provider_token_is_reused_then_renewed_at_fifty_minutes() {
        let clock = ManualClock::new(datetime!(2026-11-28 12:00:00 UTC));
        let tokens = tokens(&test_key());
        let first = tokens.current(clock.now()).unwrap();
        clock.advance(time::Duration::minutes(49));
        assert_eq!(tokens.current(clock.now()).unwrap().jwt, first.jwt);
        clock.advance(time::Duration::minutes(1));
        let second = tokens.current(clock.now()).unwrap();
        assert_ne!(second.jwt, first.jwt);
        assert_eq!(second.issued_at, clock.now());
    }

    #[test]
    fn a_refused_token_is_renewed_only_if_twenty_minutes_old() {
        let clock = ManualClock::new(datetime!(2026-11-28 12:00:00 UTC));
        let tokens = tokens(&test_key());
        let first = tokens.current(clock.now()).unwrap();

        clock.advance(time::Duration::minutes(19));
        assert_eq!(
            tokens.renew_rejected(&first, clock.now()).unwrap(),
            Renewal::TooSoon {
                age: time::Duration::minutes(19)
            }
        );
        assert_eq!(tokens.current(clock.now()).unwrap().jwt, first.jwt);

        clock.advance(time::Duration::minutes(1));
        assert_eq!(
            tokens.renew_rejected(&first, clock.now()).unwrap(),
            Renewal::Renewed
        );
        let second = tokens.current(clock.now()).unwrap();
        assert_ne!(second.jwt, first.jwt);

        // A second push refused with the old token does not renew again.
        assert_eq!(
            tokens.renew_rejected(&first, clock.now()).unwrap(),
            Renewal::AlreadyRenewed
        );
        assert_eq!(tokens.current(clock.now()).unwrap().jwt, second.jwt);
    }

    #[test]
    fn provider_token_debug_hides_the_jwt() {
        let token = tokens(&test_key())
            .current(datetime!(2026-11-28 12:00:00 UTC))
            .unwrap();
        let printed = format!("{token:?}");
        assert!(!printed.contains(&*token.jwt), "{printed}");
    }

    fn message(kind: PushKind) -> PushMessage {
        PushMessage {
            kind,
            challenge_id: "ch_1".into(),
            action: "scim_token.reveal".into(),
            workspace_name: "Acme".into(),
            expires_at: datetime!(2026-11-28 12:02:00 UTC),
        }
    }

    #[test]
    fn challenge_payload_is_a_mutable_alert_with_the_challenge_data() {
        assert_eq!(
            payload(&message(PushKind::Challenge)),
            json!({
                "aps": {
                    "alert": {
                        "title": "Reveal the SCIM token?",
                        "body": "Acme: check the number on the console, then approve or deny.",
                    },
                    "mutable-content": 1,
                },
                "kind": "challenge",
                "challenge_id": "ch_1",
                "action": "scim_token.reveal",
                "workspace": "Acme",
                "expires_at": "2026-11-28T12:02:00Z",
            })
        );
    }

    #[test]
    fn resolved_payload_is_silent() {
        let payload = payload(&message(PushKind::Resolved));
        assert_eq!(payload["aps"], json!({ "content-available": 1 }));
        assert_eq!(payload["kind"], "resolved");
        assert_eq!(payload["challenge_id"], "ch_1");
    }

    #[test]
    fn apple_hosts_are_picked_per_environment_unless_overridden() {
        assert_eq!(
            ApnsEndpoint::Apple
                .origin(ApnsEnvironment::Production)
                .as_str(),
            "https://api.push.apple.com/"
        );
        assert_eq!(
            ApnsEndpoint::Apple
                .origin(ApnsEnvironment::Sandbox)
                .as_str(),
            "https://api.sandbox.push.apple.com/"
        );
        let local = ApnsEndpoint::Override("https://127.0.0.1:8443".parse().unwrap());
        assert_eq!(
            local.origin(ApnsEnvironment::Sandbox).as_str(),
            "https://127.0.0.1:8443/"
        );
    }

    #[test]
    fn device_tokens_must_be_hex() {
        assert!(is_device_token(&"ab12".repeat(16)));
        for bad in ["", "zz", "ab/../x", "ab?x=1", &"a".repeat(201)] {
            assert!(!is_device_token(bad), "{bad}");
        }
    }

    struct Vars(HashMap<&'static str, String>);

    impl Vars {
        fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
            |var| self.0.get(var).cloned()
        }
    }

    fn write_temp(contents: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(contents.as_bytes()).unwrap();
        file
    }

    fn full_vars(key_file: &tempfile::NamedTempFile) -> Vars {
        Vars(HashMap::from([
            (ApnsConfig::KEY_FILE, key_file.path().display().to_string()),
            (ApnsConfig::KEY_ID, "KEYID12345".to_owned()),
            (ApnsConfig::TEAM_ID, "TEAMID1234".to_owned()),
            (ApnsConfig::TOPIC, "com.example.assent".to_owned()),
        ]))
    }

    #[test]
    fn unconfigured_apns_is_none() {
        assert!(ApnsConfig::from_lookup(|_| None).unwrap().is_none());
    }

    #[test]
    fn a_complete_configuration_uses_apple_hosts_by_default() {
        let key_file = write_temp(&test_key().private_pem);
        let config = ApnsConfig::from_lookup(full_vars(&key_file).lookup())
            .unwrap()
            .unwrap();
        assert_eq!(config.endpoint, ApnsEndpoint::Apple);
        assert!(config.extra_roots.is_empty());
        assert!(!format!("{config:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn each_missing_variable_is_named() {
        let key_file = write_temp(&test_key().private_pem);
        for var in [
            ApnsConfig::KEY_FILE,
            ApnsConfig::KEY_ID,
            ApnsConfig::TEAM_ID,
            ApnsConfig::TOPIC,
        ] {
            let mut vars = full_vars(&key_file);
            vars.0.remove(var);
            let err = ApnsConfig::from_lookup(vars.lookup()).unwrap_err();
            assert_eq!(err.var(), var);
            assert!(err.to_string().starts_with(var), "{err}");
        }
        // An endpoint alone is a half-made configuration, not "APNs off".
        let only_endpoint =
            |var: &str| (var == ApnsConfig::ENDPOINT).then(|| "https://127.0.0.1:1".to_owned());
        assert_eq!(
            ApnsConfig::from_lookup(only_endpoint).unwrap_err().var(),
            ApnsConfig::KEY_FILE
        );
    }

    #[test]
    fn malformed_values_are_named() {
        let key_file = write_temp(&test_key().private_pem);
        let not_a_key =
            write_temp("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
        let not_a_cert = write_temp("hello");
        let cases = [
            (ApnsConfig::KEY_FILE, not_a_key.path().display().to_string()),
            (ApnsConfig::KEY_FILE, "/nonexistent/AuthKey.p8".to_owned()),
            (ApnsConfig::KEY_ID, "KEY ID".to_owned()),
            (ApnsConfig::TOPIC, "com.example/app".to_owned()),
            (ApnsConfig::ENDPOINT, "http://127.0.0.1:8443".to_owned()),
            (
                ApnsConfig::ENDPOINT,
                "https://127.0.0.1:8443/3/device".to_owned(),
            ),
            (ApnsConfig::CA_FILE, not_a_cert.path().display().to_string()),
        ];
        for (var, value) in cases {
            let mut vars = full_vars(&key_file);
            vars.0.insert(var, value.clone());
            let err = ApnsConfig::from_lookup(vars.lookup()).unwrap_err();
            assert_eq!(err.var(), var, "{value}: {err}");
        }
    }
}
