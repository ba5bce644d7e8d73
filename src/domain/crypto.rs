//! Secret handling: random values, constant-time comparison, SHA-256, AES-256-GCM with a key id per row.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The one constant-time comparison every secret goes through (codes, token hashes, session ids).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&sha256(data))
}

pub fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut out);
    out
}

/// URL-safe random identifier of `N` bytes (ids, nonces, session ids).
pub fn random_b64url<const N: usize>() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<N>())
}

/// A secret string whose Debug output never shows it, and whose memory is wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(s: String) -> Self {
        Self(Zeroizing::new(s))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("must be the base64 of exactly 32 bytes")]
    BadKey,
    #[error("no master key with id {0} is loaded")]
    UnknownKeyId(String),
    #[error("decryption failed (wrong key or tampered data)")]
    Decrypt,
}

/// One AES-256-GCM master key. Its id is derived from the key itself, so rows name the key that
/// sealed them and a new master key can be rolled in while old rows still open.
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({}, ***)", self.id)
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let id = hex(&sha256(&[b"assent-key-id:".as_slice(), &bytes].concat())[..6]);
        Self {
            id,
            key: Zeroizing::new(bytes),
        }
    }

    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let raw = Zeroizing::new(STANDARD.decode(text.trim()).map_err(|_| KeyError::BadKey)?);
        let bytes: [u8; 32] = raw.as_slice().try_into().map_err(|_| KeyError::BadKey)?;
        Ok(Self::from_bytes(bytes))
    }

    pub fn generate() -> Self {
        Self::from_bytes(random_bytes::<32>())
    }

    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(*self.key))
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// What is stored for an encrypted secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Sealed(key {}, {} bytes)",
            self.key_id,
            self.ciphertext.len()
        )
    }
}

/// The current master key (used to seal) and any older ones (still able to open).
#[derive(Clone, Debug)]
pub struct Keyring {
    current: MasterKey,
    all: HashMap<String, MasterKey>,
}

impl Keyring {
    pub fn new(current: MasterKey, older: impl IntoIterator<Item = MasterKey>) -> Self {
        let mut all: HashMap<_, _> = older.into_iter().map(|k| (k.id.clone(), k)).collect();
        all.insert(current.id.clone(), current.clone());
        Self { current, all }
    }

    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// `context` is bound as associated data (e.g. the workspace id), so a sealed value moved to
    /// another row does not open.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Sealed {
        let cipher = Aes256Gcm::new_from_slice(self.current.key.as_slice()).expect("32-byte key");
        let nonce = random_bytes::<12>();
        let ciphertext = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            .expect("AES-GCM encryption of a small message cannot fail");
        Sealed {
            key_id: self.current.id.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    pub fn open(&self, sealed: &Sealed, context: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let key = self
            .all
            .get(&sealed.key_id)
            .ok_or_else(|| KeyError::UnknownKeyId(sealed.key_id.clone()))?;
        let nonce: [u8; 12] = sealed
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::Decrypt)?;
        let cipher = Aes256Gcm::new_from_slice(key.key.as_slice()).expect("32-byte key");
        cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: context,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| KeyError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip_bound_to_context() {
        let ring = Keyring::new(MasterKey::generate(), []);
        let sealed = ring.seal(b"secret", b"ws:1");
        assert_ne!(sealed.ciphertext, b"secret");
        assert_eq!(ring.open(&sealed, b"ws:1").unwrap().as_slice(), b"secret");
        assert!(matches!(
            ring.open(&sealed, b"ws:2"),
            Err(KeyError::Decrypt)
        ));
    }

    #[test]
    fn older_keys_still_open_after_a_new_current_key() {
        let old = MasterKey::generate();
        let sealed = Keyring::new(old.clone(), []).seal(b"x", b"");
        let ring = Keyring::new(MasterKey::generate(), [old]);
        assert_ne!(ring.current_id(), sealed.key_id);
        assert_eq!(ring.open(&sealed, b"").unwrap().as_slice(), b"x");
        let other = Keyring::new(MasterKey::generate(), []);
        assert!(matches!(
            other.open(&sealed, b""),
            Err(KeyError::UnknownKeyId(_))
        ));
    }

    #[test]
    fn master_key_parsing_and_debug() {
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
        let key = MasterKey::generate();
        let again = MasterKey::from_base64(&key.to_base64()).unwrap();
        assert_eq!(key.id(), again.id());
        assert!(!format!("{key:?}").contains(key.to_base64().as_str()));
        assert_eq!(format!("{:?}", Secret::new("hunter2".into())), "***");
    }

    /// Stored hashes (tokens, sessions, the audit chain) are this text: lowercase, two digits a
    /// byte. FIPS 180-2's example for "abc".
    #[test]
    fn hashes_are_lowercase_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex(&[0, 9, 0xab]), "0009ab");
    }

    #[test]
    fn ct_eq_compares_length_and_content() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
