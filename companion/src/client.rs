//! The async core: every call a phone makes to the mobile API (CONTRACT 4). `assent companion`
//! uses it directly; the bindings wrap it in blocking calls (src/ffi.rs).

use std::sync::{Arc, Once};
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{refusal, Call, CompanionError, Result};
use crate::jws::{self, DecisionClaims, DECISION_LIFETIME};
use crate::model::{
    parse_decision, parse_enrolled, parse_pending, Challenge, DecisionStatus, DenyReason,
    DeviceState, EnrollRequest, EnrollmentOffer, PushPlatform,
};
use crate::signer::{CheckedSigner, DeviceKeySigner};

/// Longest answer body the SDK reads (a pending list of 100 challenges fits many times over).
const MAX_BODY: usize = 1024 * 1024;

/// Unix seconds on the phone's clock.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// reqwest's rustls links ring only, as the server's does; rustls wants the provider chosen
/// before the first TLS connection (the server does the same in src/push/mod.rs).
fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Err only means a provider is installed already (the server's, in the same process).
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn http_client() -> Result<reqwest::Client> {
    install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("assent-companion-sdk/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(CompanionError::from)
}

/// Sends and reads the whole answer, bounded; a non-success answer becomes its typed error.
async fn answer(call: Call, request: reqwest::RequestBuilder) -> Result<Vec<u8>> {
    let mut response = request.send().await?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(CompanionError::payload("the answer is too large"));
        }
        body.extend_from_slice(&chunk);
    }
    if (200..300).contains(&status) {
        Ok(body)
    } else {
        Err(refusal(call, status, &body))
    }
}

/// An enrolled phone: its state, its signer, and a connection pool.
#[derive(Clone)]
pub struct Device {
    state: DeviceState,
    signer: CheckedSigner,
    http: reqwest::Client,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// Enrolls the signer's public key with a one-time code (CONTRACT 4); the code is then spent.
    pub async fn enroll(
        offer: &EnrollmentOffer,
        request: &EnrollRequest,
        signer: Arc<dyn DeviceKeySigner>,
    ) -> Result<Device> {
        let signer = CheckedSigner::new(signer)?;
        if request.name.trim().is_empty() {
            return Err(CompanionError::input("the phone needs a name"));
        }
        let mut body = json!({
            "enrollment_code": offer.code,
            "name": request.name,
            "public_key": signer.jwk(),
        });
        match request.platform {
            PushPlatform::Apns { sandbox } => {
                body["platform"] = json!("apns");
                body["apns_environment"] = json!(if sandbox { "sandbox" } else { "production" });
            }
            PushPlatform::Fcm => body["platform"] = json!("fcm"),
        }
        if let Some(token) = request.push_token.as_ref().filter(|t| !t.is_empty()) {
            body["push_token"] = json!(token);
        }
        let http = http_client()?;
        let url = format!("{}/v1/mobile/devices", offer.server);
        let answer = answer(Call::Enroll, http.post(url).json(&body)).await?;
        let state = parse_enrolled(&offer.server, &answer)?;
        Ok(Device {
            state,
            signer,
            http,
        })
    }

    /// A phone enrolled before, with its saved state and the same key.
    pub fn restore(state: DeviceState, signer: Arc<dyn DeviceKeySigner>) -> Result<Device> {
        Ok(Device {
            state,
            signer: CheckedSigner::new(signer)?,
            http: http_client()?,
        })
    }

    pub fn state(&self) -> &DeviceState {
        &self.state
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.state.server.trim_end_matches('/'))
    }

    /// `Authorization: Device <JWS>`, with a fresh `jti`.
    fn authorization(&self) -> Result<String> {
        let jws = jws::request(
            &self.signer,
            &self.state.device_id,
            &self.state.audience,
            unix_now(),
        )?;
        Ok(format!("Device {jws}"))
    }

    /// The pending list as the API sends it (`assent companion pending --json` prints it).
    pub async fn pending_json(&self) -> Result<Value> {
        let body = self.pending_body().await?;
        // Checked through the typed parser first, so both views agree on what is valid.
        parse_pending(&body)?;
        serde_json::from_slice(&body)
            .map_err(|_| CompanionError::payload("the pending list is not JSON"))
    }

    async fn pending_body(&self) -> Result<Vec<u8>> {
        let request = self
            .http
            .get(self.url("/v1/mobile/challenges"))
            .header("authorization", self.authorization()?);
        answer(Call::Other, request).await
    }

    /// The pending challenges of this phone's person: what a push announced, or what a lost
    /// push would have.
    pub async fn pending(&self) -> Result<Vec<Challenge>> {
        parse_pending(&self.pending_body().await?)
    }

    /// Polls the pending list until it holds a challenge (`challenge_id` when given) or
    /// `timeout` passes: the fallback when a push is lost or push is not configured.
    pub async fn wait_for_challenge(
        &self,
        challenge_id: Option<&str>,
        timeout: Duration,
        interval: Duration,
    ) -> Result<Option<Challenge>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let pending = self.pending().await?;
            let found = pending
                .into_iter()
                .find(|c| challenge_id.is_none_or(|id| c.id == id));
            if found.is_some() {
                return Ok(found);
            }
            if tokio::time::Instant::now() + interval > deadline {
                return Ok(None);
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// Approves with the number the person picked. The number is signed and sent as it is, even
    /// one outside the three choices: the server alone judges it (a wrong one denies the
    /// challenge, `WrongNumber`), as CONTRACT.md sections 4 and 9 say.
    pub async fn approve(&self, challenge: &Challenge, number: u8) -> Result<DecisionStatus> {
        self.decide(challenge, "approve", Some(number), None).await
    }

    pub async fn deny(
        &self,
        challenge: &Challenge,
        reason: Option<DenyReason>,
    ) -> Result<DecisionStatus> {
        self.decide(challenge, "deny", None, reason).await
    }

    async fn decide(
        &self,
        challenge: &Challenge,
        decision: &'static str,
        number: Option<u8>,
        reason: Option<DenyReason>,
    ) -> Result<DecisionStatus> {
        let now = unix_now();
        if challenge.expires_at_unix()? <= now {
            return Err(CompanionError::Expired);
        }
        // What the phone showed is what it signs: a support rotation's workspace and ticket too.
        let support = challenge.signs_support_claims();
        let claims = DecisionClaims {
            iss: self.state.device_id.clone(),
            aud: self.state.audience.clone(),
            sub: challenge.id.clone(),
            nonce: challenge.nonce.clone(),
            action: challenge.action.clone(),
            decision,
            number,
            reason: reason.map(DenyReason::as_str),
            workspace: support.then(|| challenge.workspace_slug.clone()),
            ticket: if support {
                challenge.ticket.clone()
            } else {
                None
            },
            iat: now,
            exp: now + DECISION_LIFETIME,
        };
        let signed = jws::decision(&self.signer, &claims)?;
        let path = format!(
            "/v1/mobile/challenges/{}/decision",
            url_segment(&challenge.id)
        );
        let request = self
            .http
            .post(self.url(&path))
            .header("authorization", self.authorization()?)
            .json(&json!({ "decision": signed }));
        parse_decision(&answer(Call::Decide, request).await?)
    }

    /// Sends the phone's new APNs or FCM token.
    pub async fn update_push_token(&self, push_token: &str) -> Result<()> {
        if push_token.is_empty() {
            return Err(CompanionError::input("the push token is empty"));
        }
        let path = format!(
            "/v1/mobile/devices/{}/push-token",
            url_segment(&self.state.device_id)
        );
        let request = self
            .http
            .put(self.url(&path))
            .header("authorization", self.authorization()?)
            .json(&json!({ "push_token": push_token }));
        answer(Call::Other, request).await.map(drop)
    }

    /// Removes this phone from the account. The app then deletes its key and state.
    pub async fn unenroll(&self) -> Result<()> {
        let path = format!("/v1/mobile/devices/{}", url_segment(&self.state.device_id));
        let request = self
            .http
            .delete(self.url(&path))
            .header("authorization", self.authorization()?);
        answer(Call::Other, request).await.map(drop)
    }
}

/// Ids go into a path: percent-encode anything that is not unreserved (RFC 3986 2.3).
fn url_segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::SoftwareSigner;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers every request with `status` and `body`, whatever was asked.
    async fn answering(status: &str, body: String) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                read_request(&mut stream).await;
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        base
    }

    /// Reads one whole request (headers, then content-length bytes), so that closing the
    /// connection after the answer resets nothing the client still sends.
    async fn read_request(stream: &mut tokio::net::TcpStream) {
        let mut seen = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if seen.len() >= end + 4 + length {
                    return;
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn offer(server: String) -> EnrollmentOffer {
        EnrollmentOffer {
            server,
            code: "CODE".into(),
        }
    }

    fn fcm() -> EnrollRequest {
        EnrollRequest {
            name: "test".into(),
            platform: PushPlatform::Fcm,
            push_token: None,
        }
    }

    async fn enroll_answered(status: &str, body: &str) -> Result<Device> {
        let server = answering(status, body.to_owned()).await;
        Device::enroll(&offer(server), &fcm(), Arc::new(SoftwareSigner::generate())).await
    }

    fn device_at(server: String) -> Device {
        let state = DeviceState {
            server: server.clone(),
            device_id: "dev1".into(),
            audience: server,
        };
        Device::restore(state, Arc::new(SoftwareSigner::generate())).unwrap()
    }

    fn challenge() -> Challenge {
        let body = serde_json::json!({"challenges": [{"id": "c1", "action": "scim_token.reveal", "nonce": "n",
            "number_choices": [1, 2, 3], "workspace": {"slug": "a", "name": "A"},
            "requested_by": {"email": "o@a.example"}, "context": {"ip": "127.0.0.1", "user_agent": "x"},
            "created_at": "2026-11-28T12:00:00Z", "expires_at": "2999-01-01T00:00:00Z"}]});
        parse_pending(body.to_string().as_bytes())
            .unwrap()
            .remove(0)
    }

    #[tokio::test]
    async fn enrollment_answers_map_to_typed_errors() {
        assert_eq!(
            enroll_answered("410 Gone", "{}").await.unwrap_err(),
            CompanionError::Expired
        );
        assert!(matches!(
            enroll_answered("404 Not Found", r#"{"type":"urn:assent:problem:not_found","detail":"no such resource"}"#).await,
            Err(CompanionError::Refused { status: 404, ref detail, .. }) if detail == "no such resource"
        ));
        for body in [
            "{}",
            "<html>hello</html>",
            r#"{"device_id": 5, "audience": "a"}"#,
            "",
        ] {
            assert!(
                matches!(
                    enroll_answered("201 Created", body).await,
                    Err(CompanionError::InvalidPayload { .. })
                ),
                "{body} was accepted"
            );
        }
        let enrolled =
            enroll_answered("201 Created", r#"{"device_id":"d1","audience":"http://a"}"#)
                .await
                .unwrap();
        assert_eq!(enrolled.state().device_id, "d1");
        // Nothing listens on a port just freed.
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", listener.local_addr().unwrap())
        };
        let err = Device::enroll(&offer(closed), &fcm(), Arc::new(SoftwareSigner::generate()))
            .await
            .unwrap_err();
        assert!(matches!(err, CompanionError::Network { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn decision_answers_map_to_typed_errors() {
        for (status, body, expected) in [
            ("409 Conflict", "{}", CompanionError::AlreadyDecided),
            (
                "422 Unprocessable Entity",
                "{}",
                CompanionError::WrongNumber,
            ),
            ("410 Gone", "{}", CompanionError::Expired),
        ] {
            let device = device_at(answering(status, body.to_owned()).await);
            assert_eq!(
                device.approve(&challenge(), 2).await.unwrap_err(),
                expected,
                "{status}"
            );
        }
        for body in ["", "{}", r#"{"status":"pending"}"#, "[]"] {
            let device = device_at(answering("200 OK", body.to_owned()).await);
            assert!(matches!(
                device.deny(&challenge(), None).await,
                Err(CompanionError::InvalidPayload { .. })
            ));
        }
        let device = device_at(answering("200 OK", r#"{"status":"denied"}"#.to_owned()).await);
        assert_eq!(
            device
                .deny(&challenge(), Some(DenyReason::NotMe))
                .await
                .unwrap(),
            DecisionStatus::Denied
        );
        // A number off the list is the server's to judge: signed and sent (this server denied).
        assert_eq!(
            device.approve(&challenge(), 9).await.unwrap(),
            DecisionStatus::Denied
        );
        // Refused locally, before any request: an expired challenge.
        let mut old = challenge();
        old.expires_at = "2020-01-01T00:00:00Z".into();
        assert_eq!(
            device.approve(&old, 2).await.unwrap_err(),
            CompanionError::Expired
        );
    }

    #[tokio::test]
    async fn pending_and_device_answers_are_checked() {
        for body in ["", "{}", r#"{"challenges":[{}]}"#, "<html>"] {
            let device = device_at(answering("200 OK", body.to_owned()).await);
            assert!(
                matches!(
                    device.pending().await,
                    Err(CompanionError::InvalidPayload { .. })
                ),
                "{body}"
            );
            assert!(
                matches!(
                    device.pending_json().await,
                    Err(CompanionError::InvalidPayload { .. })
                ),
                "{body}"
            );
        }
        let huge = format!(r#"{{"challenges":[], "pad": "{}"}}"#, "x".repeat(MAX_BODY));
        let device = device_at(answering("200 OK", huge).await);
        assert!(matches!(
            device.pending().await,
            Err(CompanionError::InvalidPayload { .. })
        ));
        let device = device_at(
            answering("401 Unauthorized", r#"{"title":"Unauthorized"}"#.to_owned()).await,
        );
        assert!(matches!(
            device.pending().await,
            Err(CompanionError::Refused { status: 401, .. })
        ));
        assert!(matches!(
            device.unenroll().await,
            Err(CompanionError::Refused { status: 401, .. })
        ));
        assert!(matches!(
            device.update_push_token("t").await,
            Err(CompanionError::Refused { status: 401, .. })
        ));
        let device = device_at(answering("204 No Content", String::new()).await);
        device.update_push_token("t").await.unwrap();
        device.unenroll().await.unwrap();
        let device = device_at(answering("200 OK", r#"{"challenges":[]}"#.to_owned()).await);
        let waited = device
            .wait_for_challenge(None, Duration::from_millis(300), Duration::from_millis(100))
            .await
            .unwrap();
        assert_eq!(waited, None);
    }

    #[test]
    fn ids_cannot_leave_their_path_segment() {
        assert_eq!(url_segment("abc-123_x"), "abc-123_x");
        assert_eq!(url_segment("../admin?x=1"), "..%2Fadmin%3Fx%3D1");
    }
}
