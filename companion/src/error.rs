//! The one error type of every SDK call, and the mapping from the server's RFC 9457 problem
//! answers (CONTRACT section 2) to it. Swift and Kotlin see it as a thrown enum; nothing panics
//! across the FFI boundary.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum CompanionError {
    /// The server could not be reached, or its answer did not arrive whole. Worth retrying.
    #[error("network: {reason}")]
    Network { reason: String },
    /// The server refused the call: its status and the problem's `type` and `detail`.
    #[error("the server answered {status}: {detail}")]
    Refused {
        status: u16,
        problem_type: String,
        detail: String,
    },
    /// The enrollment code or the challenge has expired (or, for a code, was spent already).
    #[error("expired")]
    Expired,
    /// The challenge was decided already (here or on another phone), or is no longer pending.
    #[error("the challenge was decided already")]
    AlreadyDecided,
    /// The picked number is not the console's: the server denied the challenge.
    #[error("the number does not match the console's; the request was denied")]
    WrongNumber,
    /// The app's signer failed, or gave something that is not an ES256 signature by the enrolled key.
    #[error("the signer failed: {reason}")]
    SignerFailed { reason: String },
    /// A push payload, QR code or server answer that is not what Assent sends.
    #[error("invalid payload: {reason}")]
    InvalidPayload { reason: String },
    /// The app passed something unusable (a number that is not among the choices, an empty token).
    #[error("invalid input: {reason}")]
    InvalidInput { reason: String },
}

pub type Result<T, E = CompanionError> = std::result::Result<T, E>;

impl CompanionError {
    pub(crate) fn payload(message: impl Into<String>) -> Self {
        Self::InvalidPayload {
            reason: message.into(),
        }
    }

    pub(crate) fn input(message: impl Into<String>) -> Self {
        Self::InvalidInput {
            reason: message.into(),
        }
    }

    pub(crate) fn signer(message: impl Into<String>) -> Self {
        Self::SignerFailed {
            reason: message.into(),
        }
    }
}

impl From<reqwest::Error> for CompanionError {
    fn from(e: reqwest::Error) -> Self {
        // reqwest's Display names the URL but never a header, so no Device JWS ends up here.
        Self::Network {
            reason: e.without_url().to_string(),
        }
    }
}

/// Which call an error answer came from: the same status means different things to each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    Enroll,
    Decide,
    Other,
}

/// Maps a non-success answer. `body` is whatever came back; a problem+json gives its type and
/// detail, anything else (a proxy's HTML page) still gives a `Refused` with the status.
pub(crate) fn refusal(call: Call, status: u16, body: &[u8]) -> CompanionError {
    match (call, status) {
        // CONTRACT 4: a spent or expired enrollment code answers 410.
        (Call::Enroll, 410) => return CompanionError::Expired,
        // A well-signed decision for a challenge that is no longer pending.
        (Call::Decide, 409) => return CompanionError::AlreadyDecided,
        (Call::Decide, 410) => return CompanionError::Expired,
        // An approve whose number is not the console's: the challenge is now denied.
        (Call::Decide, 422) => return CompanionError::WrongNumber,
        _ => {}
    }
    let problem: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |key: &str| {
        problem
            .get(key)
            .and_then(Value::as_str)
            .map(|s| s.chars().take(500).collect::<String>())
    };
    CompanionError::Refused {
        status,
        problem_type: text("type").unwrap_or_else(|| "about:blank".to_owned()),
        detail: text("detail")
            .or_else(|| text("title"))
            .unwrap_or_else(|| "no detail".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(status: u16, detail: &str) -> Vec<u8> {
        serde_json::json!({"type": "urn:assent:problem:x", "title": "T", "status": status, "detail": detail})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn statuses_map_to_what_they_mean_for_each_call() {
        assert_eq!(
            refusal(Call::Enroll, 410, &problem(410, "gone")),
            CompanionError::Expired
        );
        assert_eq!(
            refusal(Call::Decide, 409, b""),
            CompanionError::AlreadyDecided
        );
        assert_eq!(
            refusal(Call::Decide, 422, b"{}"),
            CompanionError::WrongNumber
        );
        assert_eq!(refusal(Call::Decide, 410, b"{}"), CompanionError::Expired);
        // 409 outside a decision is no "already decided".
        assert!(matches!(
            refusal(Call::Other, 409, &problem(409, "busy")),
            CompanionError::Refused { status: 409, .. }
        ));
        assert_eq!(
            refusal(Call::Decide, 403, &problem(403, "not yours")),
            CompanionError::Refused {
                status: 403,
                problem_type: "urn:assent:problem:x".into(),
                detail: "not yours".into()
            }
        );
    }

    #[test]
    fn malformed_error_answers_still_give_a_refusal() {
        for body in [
            &b""[..],
            b"<html>Bad gateway</html>",
            b"null",
            b"[1,2]",
            b"{\"detail\": 7, \"type\": []}",
            b"\xff\xfe",
            b"{\"title\": \"Unauthorized\"}",
        ] {
            match refusal(Call::Other, 502, body) {
                CompanionError::Refused {
                    status: 502,
                    detail,
                    problem_type,
                } => {
                    assert!(!detail.is_empty() && !problem_type.is_empty())
                }
                other => panic!("{body:?} gave {other:?}"),
            }
        }
        let long = problem(401, &"x".repeat(10_000));
        match refusal(Call::Other, 401, &long) {
            CompanionError::Refused { detail, .. } => assert_eq!(detail.len(), 500),
            other => panic!("{other:?}"),
        }
    }
}
