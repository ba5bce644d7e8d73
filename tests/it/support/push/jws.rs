//! Just enough of JWS compact serialization (RFC 7515) for the test servers to check signatures
//! with their own code, independent of the `jsonwebtoken` crate the clients sign with.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

pub struct CompactJws<'a> {
    pub header: serde_json::Value,
    pub claims: serde_json::Value,
    /// `BASE64URL(header) "." BASE64URL(payload)`, the bytes that were signed.
    pub signing_input: &'a str,
    pub signature: Vec<u8>,
}

pub fn parse(jws: &str) -> Option<CompactJws<'_>> {
    let (signing_input, signature) = jws.rsplit_once('.')?;
    let (header, claims) = signing_input.split_once('.')?;
    let json = |part: &str| -> Option<serde_json::Value> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
    };
    Some(CompactJws {
        header: json(header)?,
        claims: json(claims)?,
        signing_input,
        signature: URL_SAFE_NO_PAD.decode(signature).ok()?,
    })
}
