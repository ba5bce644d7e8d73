//! FCM HTTP v1: `POST /v1/projects/{project}/messages:send` with an OAuth2 access token obtained
//! by the service account's RS256 JWT-bearer grant (RFC 7523, Google's "Using OAuth 2.0 for
//! Server to Server Applications"). The legacy `/fcm/send` API with a server key is gone.

use std::fmt;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{HeaderValue, AUTHORIZATION, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use super::retry::{deliver_with_retries, parse_retry_after, transport_failure, Attempt};
use super::{
    log_outcome, workspace_label, ConfigError, Delivery, Platform, PushKind, PushMessage,
    PushProvider, PushTarget, RetryPolicy, Secret,
};
use crate::clock::{rfc3339, SharedClock};

const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Google accepts grant assertions valid for at most an hour.
const ASSERTION_LIFETIME: time::Duration = time::Duration::hours(1);
/// Fetch a new access token this long before the current one expires, so that no push leaves
/// with a token that dies in flight.
const ACCESS_TOKEN_MARGIN: time::Duration = time::Duration::seconds(60);

/// The fields of a Google service-account key file that the grant needs.
#[derive(Clone)]
pub struct ServiceAccount {
    pub project_id: String,
    pub client_email: String,
    pub private_key_id: Option<String>,
    private_key: Secret,
    pub token_uri: url::Url,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("private_key", &self.private_key)
            .field("token_uri", &self.token_uri.as_str())
            .finish()
    }
}

#[derive(Deserialize)]
struct ServiceAccountFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    project_id: String,
    client_email: String,
    private_key_id: Option<String>,
    private_key: String,
    token_uri: Option<String>,
}

impl ServiceAccount {
    /// Parses the JSON key file downloaded from the Firebase console. The error never quotes the
    /// file, which holds the private key.
    pub fn from_json(json: &str) -> Result<Self, String> {
        let file: ServiceAccountFile = serde_json::from_str(json).map_err(|e| {
            format!(
                "not a service-account key file ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            )
        })?;
        if file.kind.as_deref().is_some_and(|k| k != "service_account") {
            return Err("its \"type\" is not \"service_account\"".into());
        }
        // It goes into the request path; Firebase project ids are lowercase, digits and dashes.
        let project_id_ok = !file.project_id.is_empty()
            && file
                .project_id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !project_id_ok {
            return Err("its project_id is not a Firebase project id".into());
        }
        if file.client_email.is_empty() {
            return Err("its client_email is empty".into());
        }
        EncodingKey::from_rsa_pem(file.private_key.as_bytes())
            .map_err(|_| "its private_key is not an RSA private key in PEM".to_owned())?;
        let token_uri = file.token_uri.as_deref().unwrap_or(GOOGLE_TOKEN_URI);
        let token_uri = url::Url::parse(token_uri)
            .ok()
            .filter(|u| matches!(u.scheme(), "https" | "http"))
            .ok_or("its token_uri is not an http(s) URL")?;
        Ok(Self {
            project_id: file.project_id,
            client_email: file.client_email,
            private_key_id: file.private_key_id.filter(|id| !id.is_empty()),
            private_key: Secret::new(file.private_key),
            token_uri,
        })
    }
}

#[derive(Debug, Clone)]
pub struct FcmConfig {
    pub service_account: ServiceAccount,
    /// Google's origin unless `ASSENT_FCM_ENDPOINT` overrides it.
    pub endpoint: url::Url,
    pub retry: RetryPolicy,
}

/// An FCM provider: one HTTP client (HTTP/2 by ALPN with Google) and one cached access token.
pub struct FcmClient {
    http: reqwest::Client,
    account: ServiceAccount,
    key: EncodingKey,
    send_url: String,
    /// Held across the grant request, so a fan-out that finds no token makes one grant, not one
    /// per device.
    access_token: tokio::sync::Mutex<Option<AccessToken>>,
    retry: RetryPolicy,
    clock: SharedClock,
}

impl fmt::Debug for FcmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FcmClient")
            .field("project_id", &self.account.project_id)
            .field("send_url", &self.send_url)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct AccessToken {
    /// `Bearer <access token>`.
    authorization: HeaderValue,
    /// When to fetch the next one: shortly before Google's `expires_in` runs out.
    refresh_at: OffsetDateTime,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("authorization", &"***")
            .field("refresh_at", &self.refresh_at)
            .finish()
    }
}

#[derive(Serialize)]
struct GrantClaims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: i64,
}

#[derive(Deserialize, Default)]
struct OAuthError {
    #[serde(default)]
    error: String,
}

/// Google's error body (google.rpc.Status) with FCM's details.
#[derive(Deserialize, Default)]
struct GoogleError {
    #[serde(default)]
    error: GoogleStatus,
}

#[derive(Deserialize, Default)]
struct GoogleStatus {
    #[serde(default)]
    status: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    details: Vec<serde_json::Value>,
}

impl GoogleStatus {
    /// `FcmError.errorCode` when present (UNREGISTERED, QUOTA_EXCEEDED, …), else the RPC status.
    fn code(&self) -> Option<&str> {
        self.details
            .iter()
            .find(|d| d["@type"] == "type.googleapis.com/google.firebase.fcm.v1.FcmError")
            .and_then(|d| d["errorCode"].as_str())
            .or((!self.status.is_empty()).then_some(self.status.as_str()))
    }

    /// Whether an INVALID_ARGUMENT is about the registration token rather than the message: FCM
    /// says so with a `BadRequest` field violation on `message.token`, or in its message.
    fn blames_the_token(&self) -> bool {
        let violation = self
            .details
            .iter()
            .filter(|d| d["@type"] == "type.googleapis.com/google.rpc.BadRequest")
            .filter_map(|d| d["fieldViolations"].as_array())
            .flatten()
            .any(|v| v["field"] == "message.token");
        violation || self.message.contains("registration token")
    }
}

impl FcmClient {
    pub fn new(config: FcmConfig, clock: SharedClock) -> Result<Self, ConfigError> {
        let key = EncodingKey::from_rsa_pem(config.service_account.private_key.expose().as_bytes())
            .map_err(|_| ConfigError::Invalid {
                var: FcmConfig::SERVICE_ACCOUNT_FILE,
                reason: "its private_key is not an RSA private key in PEM".into(),
            })?;
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| ConfigError::Invalid {
                var: FcmConfig::ENDPOINT,
                reason: format!("cannot build the HTTP client: {e}"),
            })?;
        let send_url = format!(
            "{}/v1/projects/{}/messages:send",
            config.endpoint.as_str().trim_end_matches('/'),
            config.service_account.project_id
        );
        Ok(Self {
            http,
            account: config.service_account,
            key,
            send_url,
            access_token: tokio::sync::Mutex::new(None),
            retry: config.retry,
            clock,
        })
    }

    async fn current_access_token(&self) -> Result<AccessToken, Attempt> {
        let mut slot = self.access_token.lock().await;
        let now = self.clock.now();
        if let Some(token) = slot.as_ref().filter(|t| now < t.refresh_at) {
            return Ok(token.clone());
        }
        let token = self.grant(now).await?;
        *slot = Some(token.clone());
        Ok(token)
    }

    /// After a 401 with `rejected`: forget it unless another delivery already replaced it.
    async fn forget_access_token(&self, rejected: &AccessToken) {
        let mut slot = self.access_token.lock().await;
        if slot
            .as_ref()
            .is_some_and(|t| t.authorization == rejected.authorization)
        {
            *slot = None;
        }
    }

    async fn grant(&self, now: OffsetDateTime) -> Result<AccessToken, Attempt> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.account.private_key_id.clone();
        let claims = GrantClaims {
            iss: &self.account.client_email,
            scope: FCM_SCOPE,
            aud: self.account.token_uri.as_str(),
            iat: now.unix_timestamp(),
            exp: (now + ASSERTION_LIFETIME).unix_timestamp(),
        };
        let assertion = jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| {
            tracing::error!(error = %e, "cannot sign the FCM grant assertion");
            Attempt::Done(Delivery::Failed {
                reason: "signing".into(),
            })
        })?;
        let response = self
            .http
            .post(self.account.token_uri.clone())
            .form(&[("grant_type", JWT_BEARER_GRANT), ("assertion", &assertion)])
            .send()
            .await
            .map_err(transport_failure)?;
        let status = response.status();
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(Attempt::Transient {
                reason: "oauth_unavailable".into(),
                retry_after: self.retry_after(response.headers()),
            });
        }
        if !status.is_success() {
            // invalid_grant and friends: a wrong key, a deleted account, a clock far off. Retrying
            // cannot help; the error code is safe to log, the assertion is not.
            let error = response.json::<OAuthError>().await.unwrap_or_default();
            tracing::error!(status = status.as_u16(), error = %error.error, "FCM token grant refused");
            return Err(Attempt::Done(Delivery::Failed {
                reason: "oauth_refused".into(),
            }));
        }
        let body: TokenResponse = response.json().await.map_err(|e| {
            tracing::error!(error = %e.without_url(), "unreadable FCM token response");
            Attempt::Done(Delivery::Failed {
                reason: "oauth_refused".into(),
            })
        })?;
        let Ok(mut authorization) = HeaderValue::try_from(format!("Bearer {}", body.access_token))
        else {
            tracing::error!("the FCM access token is not a valid header value");
            return Err(Attempt::Done(Delivery::Failed {
                reason: "oauth_refused".into(),
            }));
        };
        authorization.set_sensitive(true);
        let lifetime = time::Duration::seconds(body.expires_in.max(0));
        Ok(AccessToken {
            authorization,
            refresh_at: now + (lifetime - ACCESS_TOKEN_MARGIN).max(time::Duration::ZERO),
        })
    }

    fn retry_after(&self, headers: &reqwest::header::HeaderMap) -> Option<Duration> {
        headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, self.clock.now()))
    }

    async fn attempt(&self, device_token: &str, msg: &PushMessage, may_renew: bool) -> Attempt {
        let token = match self.current_access_token().await {
            Ok(token) => token,
            Err(attempt) => return attempt,
        };
        // Built per attempt so that a retry's ttl is the time left then.
        let body = message(device_token, msg, self.clock.now());
        let response = match self
            .http
            .post(&self.send_url)
            .header(AUTHORIZATION, token.authorization.clone())
            .json(&body)
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) => return transport_failure(e),
        };
        let status = response.status();
        if status.is_success() {
            return Attempt::Done(Delivery::Delivered);
        }
        let retry_after = self.retry_after(response.headers());
        let error = response
            .json::<GoogleError>()
            .await
            .unwrap_or_default()
            .error;
        let code = error
            .code()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
        match status.as_u16() {
            404 if code == "UNREGISTERED" => Attempt::Done(Delivery::InvalidToken { reason: code }),
            400 if error.blames_the_token() => Attempt::Done(Delivery::InvalidToken {
                reason: "INVALID_ARGUMENT".into(),
            }),
            401 if may_renew => {
                self.forget_access_token(&token).await;
                Attempt::RetryWithFreshCredential { reason: code }
            }
            429 | 500..=599 => Attempt::Transient {
                reason: code,
                retry_after,
            },
            _ => Attempt::Done(Delivery::Failed { reason: code }),
        }
    }
}

#[async_trait::async_trait]
impl PushProvider for FcmClient {
    async fn deliver(&self, target: &PushTarget, msg: &PushMessage) -> Delivery {
        let delivery = if target.platform != Platform::Fcm {
            Delivery::Failed {
                reason: "wrong_platform".into(),
            }
        } else if target.token.is_empty() {
            Delivery::InvalidToken {
                reason: "INVALID_ARGUMENT".into(),
            }
        } else {
            deliver_with_retries(&self.retry, &*self.clock, msg, |may_renew| {
                self.attempt(&target.token, msg, may_renew)
            })
            .await
        };
        log_outcome(target, &delivery);
        delivery
    }

    fn platform(&self) -> Platform {
        Platform::Fcm
    }
}

/// The request body. FCM addresses the device by `message.token` in the body (there is no other
/// way in HTTP v1); the data the app sees holds no token and no secret.
fn message(token: &str, msg: &PushMessage, now: OffsetDateTime) -> serde_json::Value {
    let priority = match msg.kind {
        PushKind::Challenge | PushKind::Notice => "high",
        // Android demotes apps whose high-priority messages show nothing, so the silent
        // "resolved" message goes at normal priority.
        PushKind::Resolved => "normal",
    };
    let left = msg.expires_at - now;
    json!({
        "message": {
            "token": token,
            "data": {
                "kind": msg.kind.as_str(),
                "challenge_id": msg.challenge_id,
                "action": msg.action,
                "workspace": workspace_label(&msg.workspace_name),
                "expires_at": rfc3339(msg.expires_at),
            },
            "android": {
                "priority": priority,
                // "0s" once expired: FCM then tries once and never stores it.
                "ttl": format!("{}s", left.whole_seconds().max(0)),
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Write;

    use time::macros::datetime;

    use super::*;

    // A throwaway 1024-bit RSA key is plenty for parsing tests; the integration tests use 2048.
    fn rsa_pem() -> String {
        use rsa::pkcs8::{EncodePrivateKey, LineEnding};
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024).unwrap();
        key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string()
    }

    fn account_json(private_key: &str) -> serde_json::Value {
        json!({
            "type": "service_account",
            "project_id": "assent-test",
            "private_key_id": "kid-1",
            "private_key": private_key,
            "client_email": "push@assent-test.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token",
        })
    }

    fn write_temp(contents: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(contents.as_bytes()).unwrap();
        file
    }

    #[test]
    fn a_service_account_file_configures_google_by_default() {
        let pem = rsa_pem();
        let file = write_temp(&account_json(&pem).to_string());
        let path = file.path().display().to_string();
        let config = FcmConfig::from_lookup(|var| {
            (var == FcmConfig::SERVICE_ACCOUNT_FILE).then(|| path.clone())
        })
        .unwrap()
        .unwrap();
        assert_eq!(config.endpoint.as_str(), "https://fcm.googleapis.com/");
        assert_eq!(config.service_account.project_id, "assent-test");
        assert_eq!(
            config.service_account.private_key_id.as_deref(),
            Some("kid-1")
        );
        let printed = format!("{config:?}");
        assert!(!printed.contains("PRIVATE KEY"), "{printed}");
    }

    #[test]
    fn unconfigured_fcm_is_none_and_a_lone_endpoint_is_an_error() {
        assert!(FcmConfig::from_lookup(|_| None).unwrap().is_none());
        let err = FcmConfig::from_lookup(|var| {
            (var == FcmConfig::ENDPOINT).then(|| "http://127.0.0.1:9".to_owned())
        })
        .unwrap_err();
        assert_eq!(err.var(), FcmConfig::SERVICE_ACCOUNT_FILE);
    }

    #[test]
    fn malformed_service_accounts_are_named_without_quoting_the_key() {
        let pem = rsa_pem();
        let mut wrong_type = account_json(&pem);
        wrong_type["type"] = json!("authorized_user");
        let mut bad_project = account_json(&pem);
        bad_project["project_id"] = json!("../other");
        let mut not_rsa = account_json(&pem);
        not_rsa["private_key"] =
            json!("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
        let mut no_email = account_json(&pem);
        no_email.as_object_mut().unwrap().remove("client_email");
        for bad in [
            "{not json".to_owned(),
            wrong_type.to_string(),
            bad_project.to_string(),
            not_rsa.to_string(),
            no_email.to_string(),
        ] {
            let file = write_temp(&bad);
            let path = file.path().display().to_string();
            let err = FcmConfig::from_lookup(|var| {
                (var == FcmConfig::SERVICE_ACCOUNT_FILE).then(|| path.clone())
            })
            .unwrap_err();
            assert_eq!(err.var(), FcmConfig::SERVICE_ACCOUNT_FILE);
            assert!(!err.to_string().contains("BEGIN"), "{err}");
        }
        let good = write_temp(&account_json(&pem).to_string());
        let vars = HashMap::from([
            (
                FcmConfig::SERVICE_ACCOUNT_FILE,
                good.path().display().to_string(),
            ),
            (FcmConfig::ENDPOINT, "fcm.example".to_owned()),
        ]);
        let err = FcmConfig::from_lookup(|var| vars.get(var).cloned()).unwrap_err();
        assert_eq!(err.var(), FcmConfig::ENDPOINT);
    }

    #[test]
    fn challenge_message_is_high_priority_data_with_the_time_left_as_ttl() {
        let now = datetime!(2026-11-28 12:00:00 UTC);
        let msg = PushMessage {
            kind: PushKind::Challenge,
            challenge_id: "ch_1".into(),
            action: "scim_token.rotate".into(),
            workspace_name: "Acme".into(),
            expires_at: now + time::Duration::seconds(118),
        };
        assert_eq!(
            message("tok", &msg, now),
            json!({"message": {
                "token": "tok",
                "data": {
                    "kind": "challenge",
                    "challenge_id": "ch_1",
                    "action": "scim_token.rotate",
                    "workspace": "Acme",
                    "expires_at": "2026-11-28T12:01:58Z",
                },
                "android": {"priority": "high", "ttl": "118s"},
            }})
        );
    }

    #[test]
    fn resolved_message_after_expiry_is_normal_priority_with_zero_ttl() {
        let now = datetime!(2026-11-28 12:00:00 UTC);
        let msg = PushMessage {
            kind: PushKind::Resolved,
            challenge_id: "ch_1".into(),
            action: "scim_token.reveal".into(),
            workspace_name: "Acme".into(),
            expires_at: now - time::Duration::seconds(5),
        };
        let body = message("tok", &msg, now);
        assert_eq!(
            body["message"]["android"],
            json!({"priority": "normal", "ttl": "0s"})
        );
        assert_eq!(body["message"]["data"]["kind"], "resolved");
    }

    #[test]
    fn invalid_argument_blames_the_token_only_when_fcm_says_so() {
        let about_token: GoogleError = serde_json::from_value(json!({"error": {
            "code": 400, "status": "INVALID_ARGUMENT", "message": "Invalid value",
            "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                         "fieldViolations": [{"field": "message.token", "description": "Invalid registration token"}]}]
        }}))
        .unwrap();
        assert!(about_token.error.blames_the_token());
        let about_payload: GoogleError = serde_json::from_value(json!({"error": {
            "code": 400, "status": "INVALID_ARGUMENT", "message": "Invalid value at 'message.data[0].value'",
            "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                         "fieldViolations": [{"field": "message.data[0].value"}]}]
        }}))
        .unwrap();
        assert!(!about_payload.error.blames_the_token());
        assert_eq!(about_payload.error.code(), Some("INVALID_ARGUMENT"));
    }

    #[test]
    fn fcm_error_code_wins_over_the_rpc_status() {
        let unregistered: GoogleError = serde_json::from_value(json!({"error": {
            "code": 404, "status": "NOT_FOUND", "message": "Requested entity was not found.",
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]
        }}))
        .unwrap();
        assert_eq!(unregistered.error.code(), Some("UNREGISTERED"));
    }

    #[test]
    fn access_token_debug_hides_the_value() {
        let token = AccessToken {
            authorization: HeaderValue::from_static("Bearer ya29.secret"),
            refresh_at: datetime!(2026-11-28 12:00:00 UTC),
        };
        assert!(!format!("{token:?}").contains("ya29"));
    }
}
