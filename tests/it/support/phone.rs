//! An independent companion app: its own P-256 key (p256 directly, no server code), enrollment,
//! `Authorization: Device <JWS>` on every call, and signed decisions, written from the contract.
//! It can also forge the bad tokens the server must refuse.

use std::time::Duration;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use p256::ecdsa::{signature::Signer, Signature, SigningKey};
use rand::{rngs::OsRng, RngCore};
use reqwest::{Client, Response};
use serde_json::{json, Value};

use super::{json_body, unix_now, TestServer};

pub const PHONE_UA: &str = "Assent/1.0 (Android 14; Pixel 8) assent-flow-test";

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    b64(&bytes)
}

/// A compact JWS over `b64url(header).b64url(claims)`, ES256 = raw 64-byte r||s.
pub fn sign_jws(key: &SigningKey, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig: Signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64(&sig.to_bytes()))
}

/// An "unsigned" JWS: the signature part is empty.
pub fn unsigned_jws(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

pub fn jwk_of(key: &SigningKey) -> Value {
    let point = key.verifying_key().to_encoded_point(false);
    json!({"kty": "EC", "crv": "P-256", "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())})
}

/// The ways a device-auth JWS can be wrong.
#[derive(Debug, Clone, Copy)]
pub enum BadAuth {
    AlgNone,
    OtherKey,
    Expired,
    TooLongLived,
    WrongAudience,
    WrongTyp,
    UnknownKid,
    IssNotKid,
    IssuedInTheFuture,
    TamperedClaims,
    /// Signed by an attacker's key that the header carries as `jwk`.
    EmbeddedJwk,
    /// HS256 keyed with the device's public key (algorithm confusion).
    Hs256WithPublicKey,
    NoKid,
    NoJti,
    NoExp,
    NoIat,
}

/// HMAC-SHA256 (RFC 2104), written out so the tests need no extra crate.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let outer: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner_hash = Sha256::new()
        .chain_update(&inner)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(&outer)
        .chain_update(inner_hash)
        .finalize()
        .into()
}

pub struct Phone {
    client: Client,
    base: String,
    pub key: SigningKey,
    pub device_id: String,
    pub audience: String,
    pub push_token: String,
}

impl Phone {
    pub fn new(server: &TestServer) -> Self {
        let client = Client::builder()
            .user_agent(PHONE_UA)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Phone {
            client,
            base: server.base.clone(),
            key: SigningKey::random(&mut OsRng),
            device_id: String::new(),
            audience: String::new(),
            push_token: format!("fcm-{}", random_id()),
        }
    }

    /// The JWK of a key no device holds.
    pub fn new_key_jwk() -> Value {
        jwk_of(&SigningKey::random(&mut OsRng))
    }

    pub fn jwk(&self) -> Value {
        jwk_of(&self.key)
    }

    pub fn enrollment_body(&self, code: &str) -> Value {
        json!({
            "enrollment_code": code,
            "name": "Pixel 8",
            "platform": "fcm",
            "push_token": self.push_token,
            "public_key": self.jwk(),
        })
    }

    pub async fn enroll_with(&self, body: &Value) -> Response {
        self.client
            .post(format!("{}/v1/mobile/devices", self.base))
            .json(body)
            .send()
            .await
            .expect("enroll")
    }

    /// Enrolls with the code; asserts 201 and remembers `device_id` and `audience`.
    pub async fn enroll(&mut self, code: &str) -> Value {
        let body = json_body(self.enroll_with(&self.enrollment_body(code)).await, 201).await;
        self.device_id = body["device_id"].as_str().expect("device_id").to_string();
        self.audience = body["audience"].as_str().expect("audience").to_string();
        body
    }

    pub fn auth_header_and_claims(&self) -> (Value, Value) {
        let now = unix_now();
        (
            json!({"alg": "ES256", "typ": "JWT", "kid": self.device_id}),
            json!({"iss": self.device_id, "aud": self.audience, "iat": now, "exp": now + 60, "jti": random_id()}),
        )
    }

    /// A fresh, valid `Authorization` value.
    pub fn auth(&self) -> String {
        let (h, c) = self.auth_header_and_claims();
        format!("Device {}", sign_jws(&self.key, &h, &c))
    }

    /// An `Authorization` value the server must refuse.
    pub fn bad_auth(&self, kind: BadAuth) -> String {
        let (mut h, mut c) = self.auth_header_and_claims();
        let now = unix_now();
        let jws = match kind {
            BadAuth::AlgNone => {
                h["alg"] = json!("none");
                unsigned_jws(&h, &c)
            }
            BadAuth::OtherKey => sign_jws(&SigningKey::random(&mut OsRng), &h, &c),
            BadAuth::Expired => {
                c["iat"] = json!(now - 400);
                c["exp"] = json!(now - 200);
                sign_jws(&self.key, &h, &c)
            }
            BadAuth::TooLongLived => {
                c["exp"] = json!(now + 301);
                sign_jws(&self.key, &h, &c)
            }
            BadAuth::WrongAudience => {
                c["aud"] = json!("https://assent.attacker.example");
                sign_jws(&self.key, &h, &c)
            }
            BadAuth::WrongTyp => {
                h["typ"] = json!("assent-decision+jwt");
                sign_jws(&self.key, &h, &c)
            }
            BadAuth::UnknownKid => {
                let other = random_id();
                h["kid"] = json!(other);
                c["iss"] = json!(other);
                sign_jws(&self.key, &h, &c)
            }
            BadAuth::IssNotKid => {
                c["iss"] = json!(random_id());
                sign_jws(&self.key, &h, &c)
            }
            BadAuth::IssuedInTheFuture => {
                // Beyond the 60 s clock-skew allowance.
                c["iat"] = json!(now + 120);
                c["exp"] = json!(now + 180);
                sign_jws(&self.key, &h, &c)
            }
            BadAuth::TamperedClaims => {
                let good = sign_jws(&self.key, &h, &c);
                let sig = good.rsplit('.').next().unwrap().to_string();
                c["exp"] = json!(now + 61);
                format!(
                    "{}.{}.{sig}",
                    b64(h.to_string().as_bytes()),
                    b64(c.to_string().as_bytes())
                )
            }
            BadAuth::EmbeddedJwk => {
                let attacker = SigningKey::random(&mut OsRng);
                h["jwk"] = jwk_of(&attacker);
                sign_jws(&attacker, &h, &c)
            }
            BadAuth::Hs256WithPublicKey => {
                h["alg"] = json!("HS256");
                let input = format!(
                    "{}.{}",
                    b64(h.to_string().as_bytes()),
                    b64(c.to_string().as_bytes())
                );
                let point = self.key.verifying_key().to_encoded_point(false);
                let mac = hmac_sha256(point.as_bytes(), input.as_bytes());
                format!("{input}.{}", b64(&mac))
            }
            BadAuth::NoKid => {
                h.as_object_mut().unwrap().remove("kid");
                sign_jws(&self.key, &h, &c)
            }
            BadAuth::NoJti => {
                c.as_object_mut().unwrap().remove("jti");
                sign_jws(&self.key, &h, &c)
            }
            BadAuth::NoExp => {
                c.as_object_mut().unwrap().remove("exp");
                sign_jws(&self.key, &h, &c)
            }
            BadAuth::NoIat => {
                c.as_object_mut().unwrap().remove("iat");
                sign_jws(&self.key, &h, &c)
            }
        };
        format!("Device {jws}")
    }

    pub async fn get_challenges_with(&self, authorization: Option<&str>) -> Response {
        let mut req = self
            .client
            .get(format!("{}/v1/mobile/challenges", self.base));
        if let Some(a) = authorization {
            req = req.header("Authorization", a);
        }
        req.send().await.expect("GET challenges")
    }

    /// `GET /v1/mobile/challenges` → the list.
    pub async fn challenges(&self) -> Vec<Value> {
        let body = json_body(self.get_challenges_with(Some(&self.auth())).await, 200).await;
        body["challenges"]
            .as_array()
            .unwrap_or_else(|| panic!("no `challenges` array: {body}"))
            .clone()
    }

    pub async fn find(&self, id: &str) -> Option<Value> {
        self.challenges().await.into_iter().find(|c| c["id"] == id)
    }

    /// The pending challenge as the phone sees it; panics when it is not listed.
    pub async fn pending(&self, id: &str) -> Value {
        self.find(id)
            .await
            .unwrap_or_else(|| panic!("challenge {id} not in the phone's pending list"))
    }

    /// Header and claims of a correct decision for `challenge` (as listed to the phone).
    pub fn decision_parts(&self, challenge: &Value, decision: &str, number: i64) -> (Value, Value) {
        let now = unix_now();
        (
            json!({"alg": "ES256", "typ": "assent-decision+jwt", "kid": self.device_id}),
            json!({
                "iss": self.device_id,
                "aud": self.audience,
                "sub": challenge["id"],
                "nonce": challenge["nonce"],
                "action": challenge["action"],
                "decision": decision,
                "number": number,
                "iat": now,
                "exp": now + 60,
            }),
        )
    }

    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        sign_jws(&self.key, header, claims)
    }

    /// `POST /v1/mobile/challenges/{id}/decision` with this phone's device auth.
    pub async fn send_decision(&self, id: &str, decision_jws: &str) -> Response {
        self.send_decision_with(id, &json!({"decision": decision_jws}))
            .await
    }

    pub async fn send_decision_with(&self, id: &str, body: &Value) -> Response {
        self.client
            .post(format!("{}/v1/mobile/challenges/{id}/decision", self.base))
            .header("Authorization", self.auth())
            .json(body)
            .send()
            .await
            .expect("POST decision")
    }

    /// Finds the challenge, signs `approve` with `number`, and asserts 200 `approved`.
    pub async fn approve(&self, id: &str, number: i64) {
        let ch = self.pending(id).await;
        let (h, c) = self.decision_parts(&ch, "approve", number);
        let body = json_body(self.send_decision(id, &self.sign(&h, &c)).await, 200).await;
        assert_eq!(body["status"], "approved", "{body}");
    }

    /// Finds the challenge, signs `deny` (with an optional reason), and asserts 200 `denied`.
    pub async fn deny(&self, id: &str, reason: Option<&str>) {
        let ch = self.pending(id).await;
        // The contract's claims always carry a `number`; on a deny it is whatever the screen held.
        let shown = ch["number_choices"][0].as_i64().expect("number_choices");
        let (h, mut c) = self.decision_parts(&ch, "deny", shown);
        if let Some(reason) = reason {
            c["reason"] = json!(reason);
        }
        let body = json_body(self.send_decision(id, &self.sign(&h, &c)).await, 200).await;
        assert_eq!(body["status"], "denied", "{body}");
    }

    pub async fn put_push_token(&self, device_id: &str, body: &Value) -> Response {
        self.client
            .put(format!(
                "{}/v1/mobile/devices/{device_id}/push-token",
                self.base
            ))
            .header("Authorization", self.auth())
            .json(body)
            .send()
            .await
            .expect("PUT push-token")
    }

    pub async fn unenroll(&self, device_id: &str) -> Response {
        self.client
            .delete(format!("{}/v1/mobile/devices/{device_id}", self.base))
            .header("Authorization", self.auth())
            .send()
            .await
            .expect("DELETE device")
    }

    /// A raw request with the caller's own `Authorization` (for the refusal tests).
    pub fn raw(&self) -> &Client {
        &self.client
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}
