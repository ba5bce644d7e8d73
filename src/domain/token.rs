//! The SCIM token: `assent_scim_` + base62(32 random bytes) + base62(CRC32), so secret scanners can
//! recognise it and a typo is rejected before any database lookup (CONTRACT.md section 6).

use super::crypto::{random_bytes, sha256, Secret};

pub const PREFIX: &str = "assent_scim_";
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// base62 of 32 bytes never needs more than 43 digits; fixed width keeps the format parseable.
const BODY_LEN: usize = 43;
/// base62 of a u32 never needs more than 6 digits.
const CHECK_LEN: usize = 6;

/// Fixed-width base62 of a big-endian number (repeated division; inputs are at most 32 bytes).
fn base62(bytes: &[u8], width: usize) -> String {
    let mut digits = Vec::with_capacity(width);
    let mut num = bytes.to_vec();
    while digits.len() < width {
        let mut rem = 0u32;
        for byte in num.iter_mut() {
            let acc = (rem << 8) | u32::from(*byte);
            *byte = (acc / 62) as u8;
            rem = acc % 62;
        }
        digits.push(ALPHABET[rem as usize]);
    }
    debug_assert!(num.iter().all(|b| *b == 0), "width too small for input");
    digits.reverse();
    String::from_utf8(digits).expect("alphabet is ASCII")
}

fn checksum(body: &str) -> String {
    base62(&crc32fast::hash(body.as_bytes()).to_be_bytes(), CHECK_LEN)
}

/// A freshly generated token. Debug never shows it.
pub fn generate() -> Secret {
    let body = base62(&random_bytes::<32>(), BODY_LEN);
    let check = checksum(&body);
    Secret::new(format!("{PREFIX}{body}{check}"))
}

/// True when `candidate` has the token's shape and its checksum matches.
pub fn is_well_formed(candidate: &str) -> bool {
    let Some(rest) = candidate.strip_prefix(PREFIX) else {
        return false;
    };
    if rest.len() != BODY_LEN + CHECK_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (body, check) = rest.split_at(BODY_LEN);
    checksum(body) == check
}

/// What the database keeps to authenticate a token (never the token itself).
pub fn lookup_hash(token: &str) -> [u8; 32] {
    sha256(token.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_well_formed_and_unique() {
        let a = generate();
        let b = generate();
        assert!(a.expose().starts_with(PREFIX));
        assert_eq!(a.expose().len(), PREFIX.len() + BODY_LEN + CHECK_LEN);
        assert!(is_well_formed(a.expose()));
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn a_changed_character_breaks_the_checksum() {
        let token = generate();
        let mut chars: Vec<char> = token.expose().chars().collect();
        let i = PREFIX.len() + 5;
        chars[i] = if chars[i] == 'a' { 'b' } else { 'a' };
        assert!(!is_well_formed(&chars.into_iter().collect::<String>()));
        assert!(!is_well_formed("assent_scim_short"));
        assert!(!is_well_formed("ghp_0000"));
    }

    #[test]
    fn base62_is_positional() {
        assert_eq!(base62(&[0], 2), "00");
        assert_eq!(base62(&[61], 1), "z");
        assert_eq!(base62(&[62], 2), "10");
        assert_eq!(base62(&[0xff, 0xff, 0xff, 0xff], 6), "4gfFC3");
    }
}
