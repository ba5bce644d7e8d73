//! The two signed formats of CONTRACT section 4, built here and signed by the app's key:
//! `Authorization: Device <JWS>` (a fresh `jti` on every call) and the decision JWS.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use rand::RngCore;
use serde::Serialize;
use serde_json::json;

use crate::error::Result;
use crate::signer::CheckedSigner;

pub(crate) const REQUEST_TYP: &str = "JWT";
pub(crate) const DECISION_TYP: &str = "assent-decision+jwt";
/// How long a request JWS lives (the server allows up to 300 s).
pub(crate) const REQUEST_LIFETIME: i64 = 60;
/// How long a decision JWS lives (the server allows up to 120 s).
pub(crate) const DECISION_LIFETIME: i64 = 60;

pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// 16 random bytes: a `jti` the server has never seen from this device.
pub(crate) fn fresh_jti() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    b64(&bytes)
}

#[derive(Serialize)]
struct RequestClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
    jti: String,
}

/// The claims a decision signs: what the phone showed.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub(crate) struct DecisionClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub nonce: String,
    pub action: String,
    pub decision: &'static str,
    pub number: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// A support rotation's workspace slug and ticket (CONTRACT 8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    pub iat: i64,
    pub exp: i64,
}

fn sign<T: Serialize>(signer: &CheckedSigner, typ: &str, kid: &str, claims: &T) -> Result<String> {
    let header = json!({"alg": "ES256", "typ": typ, "kid": kid});
    let claims = serde_json::to_vec(claims)
        .map_err(|e| crate::error::CompanionError::input(e.to_string()))?;
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(&claims));
    let signature = signer.sign(input.as_bytes())?;
    Ok(format!("{input}.{}", b64(&signature)))
}

/// A fresh `Authorization: Device` JWS issued at `now` (unix seconds).
pub(crate) fn request(
    signer: &CheckedSigner,
    device_id: &str,
    audience: &str,
    now: i64,
) -> Result<String> {
    let claims = RequestClaims {
        iss: device_id,
        aud: audience,
        iat: now,
        exp: now + REQUEST_LIFETIME,
        jti: fresh_jti(),
    };
    sign(signer, REQUEST_TYP, device_id, &claims)
}

pub(crate) fn decision(signer: &CheckedSigner, claims: &DecisionClaims) -> Result<String> {
    sign(signer, DECISION_TYP, &claims.iss, claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::SoftwareSigner;
    use std::sync::Arc;

    fn parts(jws: &str) -> (serde_json::Value, serde_json::Value, Vec<u8>) {
        let mut it = jws.split('.');
        let mut next = || URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap();
        let header = serde_json::from_slice(&next()).unwrap();
        let claims = serde_json::from_slice(&next()).unwrap();
        (header, claims, next())
    }

    #[test]
    fn request_jws_has_the_contract_header_and_a_fresh_jti() {
        let signer = CheckedSigner::new(Arc::new(SoftwareSigner::generate())).unwrap();
        let a = request(&signer, "dev1", "http://aud", 1_000).unwrap();
        let b = request(&signer, "dev1", "http://aud", 1_000).unwrap();
        let (header, claims, signature) = parts(&a);
        assert_eq!(header, json!({"alg": "ES256", "typ": "JWT", "kid": "dev1"}));
        assert_eq!(claims["iss"], "dev1");
        assert_eq!(claims["aud"], "http://aud");
        assert_eq!(claims["iat"], 1_000);
        assert_eq!(claims["exp"], 1_060);
        assert_eq!(signature.len(), 64);
        assert_ne!(claims["jti"], parts(&b).1["jti"], "a jti was reused");
    }

    #[test]
    fn decision_jws_signs_support_claims_only_when_given() {
        let signer = CheckedSigner::new(Arc::new(SoftwareSigner::generate())).unwrap();
        let mut claims = DecisionClaims {
            iss: "dev1".into(),
            aud: "http://aud".into(),
            sub: "c1".into(),
            nonce: "n".into(),
            action: "scim_token.reveal".into(),
            decision: "approve",
            number: Some(42),
            reason: None,
            workspace: None,
            ticket: None,
            iat: 1_000,
            exp: 1_060,
        };
        let (header, signed, _) = parts(&decision(&signer, &claims).unwrap());
        assert_eq!(header["typ"], "assent-decision+jwt");
        assert_eq!(header["kid"], "dev1");
        assert!(signed.get("workspace").is_none() && signed.get("ticket").is_none());
        assert_eq!(signed["number"], 42);
        claims.workspace = Some("acme".into());
        claims.ticket = Some("T-1".into());
        let (_, signed, _) = parts(&decision(&signer, &claims).unwrap());
        assert_eq!(
            (signed["workspace"].as_str(), signed["ticket"].as_str()),
            (Some("acme"), Some("T-1"))
        );
    }
}
