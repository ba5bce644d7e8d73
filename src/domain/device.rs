//! Device keys and the two signed formats of CONTRACT.md section 4: the per-call
//! `Authorization: Device <JWS>` and the decision JWS. The companion simulator signs with the same
//! code the server verifies with, so the two never drift.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use p256::ecdsa::SigningKey;
use p256::elliptic_curve::JwkEcKey;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::crypto::{random_b64url, Secret};

pub const REQUEST_TYP: &str = "JWT";
pub const DECISION_TYP: &str = "assent-decision+jwt";
/// Longest a device-signed request JWS may live (`exp - iat`).
pub const MAX_REQUEST_LIFETIME: i64 = 300;
/// Longest a decision JWS may live.
pub const MAX_DECISION_LIFETIME: i64 = 120;
/// Clock skew tolerated between phone and server.
pub const CLOCK_SKEW: i64 = 60;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("public_key must be a JWK with kty EC, crv P-256 and x, y")]
    Malformed,
    #[error("public_key is not a point on P-256")]
    NotOnCurve,
}

/// A device's public key, validated to be a point on P-256.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceKey {
    x: String,
    y: String,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceKey(P-256 x={}…)", &self.x[..self.x.len().min(8)])
    }
}

impl DeviceKey {
    pub fn from_jwk(value: &serde_json::Value) -> Result<Self, KeyError> {
        let obj = value.as_object().ok_or(KeyError::Malformed)?;
        let field = |name: &str| obj.get(name).and_then(|v| v.as_str());
        if field("kty") != Some("EC") || field("crv") != Some("P-256") {
            return Err(KeyError::Malformed);
        }
        if obj.contains_key("d") {
            // A private key was sent: refuse rather than store it.
            return Err(KeyError::Malformed);
        }
        let jwk: JwkEcKey =
            serde_json::from_value(value.clone()).map_err(|_| KeyError::Malformed)?;
        // from_jwk decodes the coordinates and checks that the point lies on the curve.
        let key = p256::PublicKey::from_jwk(&jwk).map_err(|_| KeyError::NotOnCurve)?;
        Ok(Self::from_public(&key))
    }

    fn from_public(key: &p256::PublicKey) -> Self {
        let jwk = key.to_jwk();
        let value = serde_json::to_value(&jwk).expect("JWK serialises");
        let get = |name: &str| value[name].as_str().unwrap_or_default().to_owned();
        Self {
            x: get("x"),
            y: get("y"),
        }
    }

    pub fn to_jwk(&self) -> serde_json::Value {
        serde_json::json!({"kty": "EC", "crv": "P-256", "x": self.x, "y": self.y})
    }

    fn decoding_key(&self) -> DecodingKey {
        DecodingKey::from_ec_components(&self.x, &self.y).expect("validated coordinates")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwsError {
    #[error("not a compact JWS")]
    Malformed,
    #[error("unexpected alg or typ")]
    WrongHeader,
    #[error("kid missing")]
    NoKid,
    #[error("signature, audience or issuer did not verify")]
    Invalid,
    #[error("expired or not yet valid")]
    Expired,
    #[error("lives longer than allowed")]
    TooLongLived,
}

/// Reads the `kid` of a compact JWS without trusting anything else in it yet.
pub fn peek_kid(jws: &str, expected_typ: &str) -> Result<String, JwsError> {
    let header = jsonwebtoken::decode_header(jws).map_err(|_| JwsError::Malformed)?;
    if header.alg != Algorithm::ES256 || header.typ.as_deref() != Some(expected_typ) {
        return Err(JwsError::WrongHeader);
    }
    header.kid.filter(|k| !k.is_empty()).ok_or(JwsError::NoKid)
}

/// Claims of the `Authorization: Device` JWS.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RequestClaims {
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

/// Claims of a decision JWS.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DecisionClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub nonce: String,
    pub action: String,
    pub decision: String,
    pub number: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `scim_token.support_rotate`: the workspace slug and the ticket the phone showed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    pub iat: i64,
    pub exp: i64,
}

fn verify<T: serde::de::DeserializeOwned>(
    jws: &str,
    typ: &str,
    key: &DeviceKey,
    device_id: &str,
    audience: &str,
) -> Result<T, JwsError> {
    let kid = peek_kid(jws, typ)?;
    if kid != device_id {
        return Err(JwsError::Invalid);
    }
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[device_id]);
    validation.set_required_spec_claims(&["exp", "aud", "iss"]);
    // Expiry is checked below against Assent's own clock, so tests control it.
    validation.validate_exp = false;
    jsonwebtoken::decode::<T>(jws, &key.decoding_key(), &validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::Json(_) => JwsError::Malformed,
            _ => JwsError::Invalid,
        })
}

/// `iat` and `exp` each within reach of the server's clock, and the lifetime between them short.
/// Checked arithmetic throughout: `exp - iat` of `i64::MAX` and `i64::MIN` wraps in a release
/// build, which once let such a token through.
fn check_times(iat: i64, exp: i64, max_lifetime: i64, now: OffsetDateTime) -> Result<(), JwsError> {
    let now = now.unix_timestamp();
    let lifetime = exp.checked_sub(iat).ok_or(JwsError::TooLongLived)?;
    if lifetime <= 0 || lifetime > max_lifetime {
        return Err(JwsError::TooLongLived);
    }
    // Both ends near now: issued no later than the skew allows and no earlier than the longest
    // lifetime ago; expiring no earlier than the skew allows and no later than a lifetime ahead.
    let reach = max_lifetime + CLOCK_SKEW;
    if iat > now + CLOCK_SKEW || iat < now - reach || exp < now - CLOCK_SKEW || exp > now + reach {
        return Err(JwsError::Expired);
    }
    Ok(())
}

/// Verifies an `Authorization: Device` JWS. The caller must still refuse a replayed `jti`.
pub fn verify_request(
    jws: &str,
    key: &DeviceKey,
    device_id: &str,
    audience: &str,
    now: OffsetDateTime,
) -> Result<RequestClaims, JwsError> {
    let claims: RequestClaims = verify(jws, REQUEST_TYP, key, device_id, audience)?;
    check_times(claims.iat, claims.exp, MAX_REQUEST_LIFETIME, now)?;
    if claims.jti.is_empty() || claims.jti.len() > 128 {
        return Err(JwsError::Malformed);
    }
    Ok(claims)
}

/// Verifies a decision JWS's signature, issuer, audience and lifetime. Whether it matches the
/// challenge (sub, nonce, action, number) is the challenge's business.
pub fn verify_decision(
    jws: &str,
    key: &DeviceKey,
    device_id: &str,
    audience: &str,
    now: OffsetDateTime,
) -> Result<DecisionClaims, JwsError> {
    let claims: DecisionClaims = verify(jws, DECISION_TYP, key, device_id, audience)?;
    check_times(claims.iat, claims.exp, MAX_DECISION_LIFETIME, now)?;
    Ok(claims)
}

/// The phone's half: a P-256 key that signs requests and decisions (the tests' and benches'
/// phone; a real phone signs with the companion SDK). The key is parsed for signing once: the
/// step-up bench runs its 100 phones on the server's machine, and parsing a PKCS#8 key checks
/// its public point, one more scalar multiplication per JWS.
pub struct DeviceSigner {
    key: SigningKey,
    pair: ring::signature::EcdsaKeyPair,
}

impl std::fmt::Debug for DeviceSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceSigner(***)")
    }
}

impl DeviceSigner {
    pub fn generate() -> Self {
        Self::from_key(SigningKey::random(&mut rand::rngs::OsRng))
    }

    fn from_key(key: SigningKey) -> Self {
        let der = key.to_pkcs8_der().expect("P-256 key encodes");
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der.as_bytes(),
            &ring::rand::SystemRandom::new(),
        )
        .expect("a P-256 key in PKCS#8 parses");
        Self { key, pair }
    }

    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        SigningKey::from_pkcs8_pem(pem)
            .map(Self::from_key)
            .map_err(|_| KeyError::Malformed)
    }

    pub fn to_pkcs8_pem(&self) -> Secret {
        let pem = self
            .key
            .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
            .expect("P-256 key encodes");
        Secret::new(pem.to_string())
    }

    pub fn public_key(&self) -> DeviceKey {
        DeviceKey::from_public(&p256::PublicKey::from(self.key.verifying_key()))
    }

    /// A compact ES256 JWS (RFC 7515): the signature is R || S, as JWA requires.
    fn sign<T: Serialize>(&self, typ: &str, kid: &str, claims: &T) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some(typ.to_owned());
        header.kid = Some(kid.to_owned());
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let input = format!(
            "{}.{}",
            b64(&serde_json::to_vec(&header).expect("a header serializes")),
            b64(&serde_json::to_vec(claims).expect("claims serialize"))
        );
        let signature = self
            .pair
            .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
            .expect("ES256 signing");
        format!("{input}.{}", b64(signature.as_ref()))
    }

    /// A fresh `Authorization: Device` JWS, valid for 60 s.
    pub fn sign_request(&self, device_id: &str, audience: &str, now: OffsetDateTime) -> String {
        let iat = now.unix_timestamp();
        let claims = RequestClaims {
            iss: device_id.to_owned(),
            aud: audience.to_owned(),
            iat,
            exp: iat + 60,
            jti: random_b64url::<16>(),
        };
        self.sign(REQUEST_TYP, device_id, &claims)
    }

    pub fn sign_decision(&self, device_id: &str, claims: &DecisionClaims) -> String {
        self.sign(DECISION_TYP, device_id, claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const AUD: &str = "http://127.0.0.1:8080";
    const NOW: OffsetDateTime = datetime!(2026-11-28 12:00 UTC);

    #[test]
    fn jwk_must_be_a_p256_point() {
        let signer = DeviceSigner::generate();
        let jwk = signer.public_key().to_jwk();
        assert_eq!(DeviceKey::from_jwk(&jwk).unwrap(), signer.public_key());

        let mut off_curve = jwk.clone();
        // y of another key does not match this x: the point is off the curve.
        off_curve["y"] = DeviceSigner::generate().public_key().to_jwk()["y"].clone();
        assert_eq!(DeviceKey::from_jwk(&off_curve), Err(KeyError::NotOnCurve));

        let mut wrong_curve = jwk.clone();
        wrong_curve["crv"] = "P-384".into();
        assert_eq!(DeviceKey::from_jwk(&wrong_curve), Err(KeyError::Malformed));
        assert_eq!(
            DeviceKey::from_jwk(&serde_json::json!("x")),
            Err(KeyError::Malformed)
        );
    }

    #[test]
    fn request_jws_round_trip_and_refusals() {
        let signer = DeviceSigner::generate();
        let key = signer.public_key();
        let jws = signer.sign_request("dev1", AUD, NOW);
        let claims = verify_request(&jws, &key, "dev1", AUD, NOW).unwrap();
        assert_eq!(claims.iss, "dev1");

        assert_eq!(
            verify_request(&jws, &key, "dev2", AUD, NOW).unwrap_err(),
            JwsError::Invalid
        );
        assert_eq!(
            verify_request(&jws, &key, "dev1", "http://other", NOW).unwrap_err(),
            JwsError::Invalid
        );
        let other = DeviceSigner::generate().public_key();
        assert_eq!(
            verify_request(&jws, &other, "dev1", AUD, NOW).unwrap_err(),
            JwsError::Invalid
        );
        let later = NOW + time::Duration::seconds(60 + CLOCK_SKEW + 1);
        assert_eq!(
            verify_request(&jws, &key, "dev1", AUD, later).unwrap_err(),
            JwsError::Expired
        );
    }

    #[test]
    fn times_at_the_ends_of_i64_are_refused_not_wrapped() {
        let now = NOW.unix_timestamp();
        for (iat, exp) in [
            (i64::MIN, i64::MAX),
            (i64::MAX, i64::MIN),
            (i64::MIN, now + 60),
            (now, i64::MAX),
            (i64::MIN, i64::MIN + 60),
            (i64::MAX - 60, i64::MAX),
            (now - 10_000, now - 9_990),
            (now + 10_000, now + 10_010),
        ] {
            assert!(
                check_times(iat, exp, MAX_REQUEST_LIFETIME, NOW).is_err(),
                "iat {iat}, exp {exp} must be refused"
            );
        }
        assert!(check_times(now, now + 60, MAX_REQUEST_LIFETIME, NOW).is_ok());
        assert!(check_times(now - 30, now + 30, MAX_REQUEST_LIFETIME, NOW).is_ok());
    }

    #[test]
    fn long_lived_and_unsigned_tokens_are_refused() {
        let signer = DeviceSigner::generate();
        let key = signer.public_key();
        let iat = NOW.unix_timestamp();
        let claims = RequestClaims {
            iss: "dev1".into(),
            aud: AUD.into(),
            iat,
            exp: iat + MAX_REQUEST_LIFETIME + 1,
            jti: "j".into(),
        };
        let jws = signer.sign(REQUEST_TYP, "dev1", &claims);
        assert_eq!(
            verify_request(&jws, &key, "dev1", AUD, NOW).unwrap_err(),
            JwsError::TooLongLived
        );

        use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT","kid":"dev1"}"#);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        let unsigned = format!("{header}.{body}.");
        assert!(verify_request(&unsigned, &key, "dev1", AUD, NOW).is_err());
    }

    #[test]
    fn decision_jws_needs_its_own_typ() {
        let signer = DeviceSigner::generate();
        let key = signer.public_key();
        let iat = NOW.unix_timestamp();
        let claims = DecisionClaims {
            iss: "dev1".into(),
            aud: AUD.into(),
            sub: "c1".into(),
            nonce: "n".into(),
            action: "scim_token.reveal".into(),
            decision: "approve".into(),
            number: Some(42),
            reason: None,
            workspace: None,
            ticket: None,
            iat,
            exp: iat + 60,
        };
        let jws = signer.sign_decision("dev1", &claims);
        assert_eq!(
            verify_decision(&jws, &key, "dev1", AUD, NOW)
                .unwrap()
                .number,
            Some(42)
        );
        // A request JWS is not a decision and vice versa.
        let request = signer.sign_request("dev1", AUD, NOW);
        assert_eq!(
            verify_decision(&request, &key, "dev1", AUD, NOW).unwrap_err(),
            JwsError::WrongHeader
        );
        assert_eq!(
            verify_request(&jws, &key, "dev1", AUD, NOW).unwrap_err(),
            JwsError::WrongHeader
        );
    }

    #[test]
    fn private_key_survives_pem_round_trip() {
        let signer = DeviceSigner::generate();
        let again = DeviceSigner::from_pkcs8_pem(signer.to_pkcs8_pem().expose()).unwrap();
        assert_eq!(signer.public_key(), again.public_key());
    }
}
