//! Argon2id password hashing, run on the blocking pool behind a concurrency cap so a burst of
//! logins can neither stall the async runtime nor exhaust memory (each hash takes ~19 MiB).

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use rand::Rng;
use std::sync::{Arc, OnceLock};
use tokio::sync::Semaphore;

use super::crypto::Secret;

#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
}

impl Default for Hasher {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Self {
            permits: Arc::new(Semaphore::new(cores)),
        }
    }
}

/// A hash to verify against when the account does not exist, so the answer takes as long as a
/// real check and timing does not tell which part of a login was wrong.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_blocking(&Secret::new(generate())))
}

fn hash_blocking(password: &Secret) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .expect("Argon2id with default parameters")
        .to_string()
}

fn verify_blocking(password: &Secret, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.expose().as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

impl Hasher {
    pub async fn hash(&self, password: Secret) -> String {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("semaphore never closes");
        tokio::task::spawn_blocking(move || hash_blocking(&password))
            .await
            .expect("hashing does not panic")
    }

    /// Verifies `password` against `phc`, or against a decoy when there is no account. A caller
    /// whose client leaves while waiting for its turn gives the turn up (false): hashes are the
    /// scarcest thing the server has, and none is spent for nobody.
    pub async fn verify(&self, password: Secret, phc: Option<String>) -> bool {
        let _permit = tokio::select! {
            permit = self.permits.acquire() => permit.expect("semaphore never closes"),
            _ = crate::cancel::left() => return false,
        };
        tokio::task::spawn_blocking(move || match phc {
            Some(phc) => verify_blocking(&password, &phc),
            None => {
                verify_blocking(&password, decoy_hash());
                false
            }
        })
        .await
        .expect("verification does not panic")
    }
}

/// A generated one-time password: 20 characters from an alphabet without look-alikes (~115 bits).
pub fn generate() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rngs::OsRng;
    (0..20)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_wrong_passwords_fail() {
        let hasher = Hasher::default();
        let phc = hasher.hash(Secret::new("correct horse".into())).await;
        assert!(phc.starts_with("$argon2id$"));
        assert!(!phc.contains("correct horse"));
        assert!(
            hasher
                .verify(Secret::new("correct horse".into()), Some(phc.clone()))
                .await
        );
        assert!(!hasher.verify(Secret::new("wrong".into()), Some(phc)).await);
        assert!(!hasher.verify(Secret::new("anything".into()), None).await);
    }

    #[test]
    fn generated_passwords_are_long_and_distinct() {
        let (a, b) = (generate(), generate());
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
    }
}
