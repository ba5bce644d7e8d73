//! Keys stay in the phone's hardware: the app implements `DeviceKeySigner` over the Secure Enclave
//! (iOS) or the Android Keystore / StrongBox, and the SDK only ever sees the public key and
//! signatures. The SDK builds every JWS, asks the signer for the ES256 signature over its signing
//! input, and checks that signature against the public key before anything is sent, so a broken
//! signer gives `SignerFailed` rather than a server 401. `SoftwareSigner` is the signer of tests
//! and of `assent companion`.

use std::sync::Arc;

use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};

use crate::error::{CompanionError, Result};

/// What the app's signer reports when it cannot sign (the key was removed, the user cancelled
/// biometrics, the keystore is locked).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum SignerError {
    #[error("{reason}")]
    Failed { reason: String },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for SignerError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        Self::Failed { reason: e.reason }
    }
}

/// The phone's device key, implemented by the app (Swift, Kotlin) or by `SoftwareSigner`.
#[uniffi::export(with_foreign)]
pub trait DeviceKeySigner: Send + Sync {
    /// The P-256 public key: the SEC1 uncompressed point (65 bytes, `04 || x || y`, what iOS's
    /// `SecKeyCopyExternalRepresentation` gives) or an X.509 SubjectPublicKeyInfo DER (what
    /// Android's `PublicKey.getEncoded()` gives).
    fn public_key(&self) -> Result<Vec<u8>, SignerError>;
    /// ECDSA P-256 with SHA-256 over `message` (the signer hashes): the raw 64-byte `r || s`, or
    /// the DER form both platforms produce (`ecdsaSignatureMessageX962SHA256`, `SHA256withECDSA`).
    fn sign(&self, message: Vec<u8>) -> Result<Vec<u8>, SignerError>;
}

/// Reads the public key in either form a platform gives.
pub(crate) fn parse_public_key(bytes: &[u8]) -> Result<VerifyingKey> {
    VerifyingKey::from_sec1_bytes(bytes)
        .or_else(|_| VerifyingKey::from_public_key_der(bytes))
        .map_err(|_| {
            CompanionError::signer(
                "the public key is neither a SEC1 P-256 point nor a P-256 SubjectPublicKeyInfo",
            )
        })
}

/// The signer with the public key it reported, checked once.
#[derive(Clone)]
pub(crate) struct CheckedSigner {
    signer: Arc<dyn DeviceKeySigner>,
    key: VerifyingKey,
}

impl CheckedSigner {
    pub(crate) fn new(signer: Arc<dyn DeviceKeySigner>) -> Result<Self> {
        let bytes = signer
            .public_key()
            .map_err(|e| CompanionError::signer(e.to_string()))?;
        let key = parse_public_key(&bytes)?;
        Ok(Self { signer, key })
    }

    /// The public key as the enrollment's JWK (CONTRACT 4).
    pub(crate) fn jwk(&self) -> serde_json::Value {
        let point = self.key.to_encoded_point(false);
        let b64 =
            |b: Option<&p256::FieldBytes>| crate::jws::b64(b.map(|b| &b[..]).unwrap_or_default());
        serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64(point.x()), "y": b64(point.y())})
    }

    /// The raw 64-byte signature over `input`, verified against the public key.
    pub(crate) fn sign(&self, input: &[u8]) -> Result<[u8; 64]> {
        let given = self
            .signer
            .sign(input.to_vec())
            .map_err(|e| CompanionError::signer(e.to_string()))?;
        let signature = match given.len() {
            64 => Signature::from_slice(&given),
            _ => Signature::from_der(&given),
        }
        .map_err(|_| {
            CompanionError::signer(format!(
                "{} bytes that are neither a raw r||s nor a DER ECDSA signature",
                given.len()
            ))
        })?;
        self.key.verify(input, &signature).map_err(|_| {
            CompanionError::signer("the signature does not verify with the device's public key")
        })?;
        Ok(signature.to_bytes().into())
    }
}

/// A P-256 key in memory: for tests and the simulator only. A phone keeps its key in hardware.
pub struct SoftwareSigner {
    key: SigningKey,
}

impl std::fmt::Debug for SoftwareSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SoftwareSigner(***)")
    }
}

impl SoftwareSigner {
    pub fn generate() -> Self {
        Self {
            key: SigningKey::random(&mut rand::rngs::OsRng),
        }
    }

    pub fn from_pkcs8_pem(pem: &str) -> Result<Self> {
        SigningKey::from_pkcs8_pem(pem)
            .map(|key| Self { key })
            .map_err(|_| CompanionError::signer("the software key is damaged"))
    }

    /// The private key, for the simulator's state file (mode 0600). Zeroized when dropped.
    pub fn to_pkcs8_pem(&self) -> zeroize::Zeroizing<String> {
        match self.key.to_pkcs8_pem(p256::pkcs8::LineEnding::LF) {
            Ok(pem) => zeroize::Zeroizing::new(pem.to_string()),
            Err(_) => zeroize::Zeroizing::new(String::new()),
        }
    }
}

impl DeviceKeySigner for SoftwareSigner {
    fn public_key(&self) -> Result<Vec<u8>, SignerError> {
        Ok(self
            .key
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec())
    }

    fn sign(&self, message: Vec<u8>) -> Result<Vec<u8>, SignerError> {
        let signature: Signature = self.key.sign(&message);
        Ok(signature.to_bytes().to_vec())
    }
}

/// A software signer with a fresh key, for tests and simulators in Swift, Kotlin and Python.
#[uniffi::export]
pub fn software_signer() -> Arc<dyn DeviceKeySigner> {
    Arc::new(SoftwareSigner::generate())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A signer whose answers are set by the test.
    struct Scripted {
        public_key: Vec<u8>,
        signature: std::result::Result<Vec<u8>, SignerError>,
    }

    impl DeviceKeySigner for Scripted {
        fn public_key(&self) -> Result<Vec<u8>, SignerError> {
            Ok(self.public_key.clone())
        }
        fn sign(&self, _: Vec<u8>) -> Result<Vec<u8>, SignerError> {
            self.signature.clone()
        }
    }

    #[test]
    fn both_public_key_forms_and_both_signature_forms_are_accepted() {
        let soft = SoftwareSigner::generate();
        let sec1 = soft.public_key().unwrap();
        assert_eq!(sec1.len(), 65);
        let spki = {
            use p256::pkcs8::EncodePublicKey;
            soft.key
                .verifying_key()
                .to_public_key_der()
                .unwrap()
                .as_bytes()
                .to_vec()
        };
        let input = b"header.claims";
        let raw: Signature = soft.key.sign(input);
        for public_key in [sec1, spki] {
            for signature in [raw.to_bytes().to_vec(), raw.to_der().as_bytes().to_vec()] {
                let signer = CheckedSigner::new(Arc::new(Scripted {
                    public_key: public_key.clone(),
                    signature: Ok(signature),
                }))
                .unwrap();
                assert_eq!(
                    signer.sign(input).unwrap().to_vec(),
                    raw.to_bytes().to_vec()
                );
            }
        }
    }

    #[test]
    fn broken_signers_fail_as_signer_failed() {
        let soft = SoftwareSigner::generate();
        let public_key = soft.public_key().unwrap();
        let other: Signature = SigningKey::random(&mut rand::rngs::OsRng).sign(b"x");
        let bad = [
            Err(SignerError::Failed {
                reason: "user cancelled".into(),
            }),
            Ok(vec![]),
            Ok(vec![0; 63]),
            Ok(vec![0; 64]),
            Ok(vec![0xff; 72]),
            // A valid signature by another key, over the same input.
            Ok({
                let by_other: Signature = SigningKey::random(&mut rand::rngs::OsRng).sign(b"x");
                by_other.to_bytes().to_vec()
            }),
            // This key, other input.
            Ok({
                let other_input: Signature = soft.key.sign(b"other input");
                other_input.to_bytes().to_vec()
            }),
            Ok(other.to_der().as_bytes().to_vec()),
        ];
        for signature in bad {
            let signer = CheckedSigner::new(Arc::new(Scripted {
                public_key: public_key.clone(),
                signature: signature.clone(),
            }))
            .unwrap();
            assert!(
                matches!(signer.sign(b"x"), Err(CompanionError::SignerFailed { .. })),
                "{signature:?} was accepted"
            );
        }
        for public_key in [
            vec![],
            vec![4; 65],
            vec![0x30, 0x03, 1, 2, 3],
            b"-----BEGIN".to_vec(),
        ] {
            let made = CheckedSigner::new(Arc::new(Scripted {
                public_key: public_key.clone(),
                signature: Ok(vec![]),
            }));
            assert!(
                matches!(made, Err(CompanionError::SignerFailed { .. })),
                "public key {public_key:?} was accepted"
            );
        }
    }

    #[test]
    fn software_key_survives_pem_round_trip() {
        let soft = SoftwareSigner::generate();
        let again = SoftwareSigner::from_pkcs8_pem(&soft.to_pkcs8_pem()).unwrap();
        assert_eq!(soft.public_key().unwrap(), again.public_key().unwrap());
        assert!(SoftwareSigner::from_pkcs8_pem("not a key").is_err());
        assert_eq!(format!("{soft:?}"), "SoftwareSigner(***)");
    }
}
