//! The one error type of the SCIM surface (RFC 7644 §3.12).
//!
//! Every variant knows its HTTP status and `scimType`, and renders the SCIM Error
//! schema. Details name attributes, paths, operators and byte positions; they never
//! echo a submitted *value* (a value could be a password, a token or personal data),
//! and internal causes (SQL, I/O) are never carried here at all: the HTTP layer logs
//! them and answers [`ScimError::Internal`].

use serde_json::{json, Value};

/// The schema URN of a SCIM error body (RFC 7644 §3.12).
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// A client-chosen name (attribute, path, schema URN) as shown in an error detail:
/// names are echoed to help the client, but never more than 100 characters of one.
pub fn clip(name: &str) -> &str {
    match name.char_indices().nth(100) {
        Some((i, _)) => &name[..i],
        None => name,
    }
}

/// The `scimType` keywords of RFC 7644 §3.12, Table 9.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimType {
    InvalidFilter,
    TooMany,
    Uniqueness,
    Mutability,
    InvalidSyntax,
    InvalidPath,
    NoTarget,
    InvalidValue,
    InvalidVers,
    Sensitive,
}

impl ScimType {
    pub fn as_str(self) -> &'static str {
        match self {
            ScimType::InvalidFilter => "invalidFilter",
            ScimType::TooMany => "tooMany",
            ScimType::Uniqueness => "uniqueness",
            ScimType::Mutability => "mutability",
            ScimType::InvalidSyntax => "invalidSyntax",
            ScimType::InvalidPath => "invalidPath",
            ScimType::NoTarget => "noTarget",
            ScimType::InvalidValue => "invalidValue",
            ScimType::InvalidVers => "invalidVers",
            ScimType::Sensitive => "sensitive",
        }
    }
}

/// An error answered by the SCIM API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScimError {
    /// 400 with a `scimType` (every request-shaped problem).
    #[error("{}: {detail}", scim_type.as_str())]
    BadRequest { scim_type: ScimType, detail: String },
    /// 401: missing, unknown or rotated bearer token.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// 403: the token is valid but may not do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// 404: no such resource in this workspace (and "not yours" answers the same).
    #[error("not found: {0}")]
    NotFound(String),
    /// 409 `uniqueness`: userName, or a Group's displayName, is taken. Entra relies on
    /// this for a POST it retries after a timeout (issue 3): 409, never a duplicate.
    #[error("uniqueness: {0}")]
    Uniqueness(String),
    /// 412: `If-Match` names a version that is no longer current (RFC 7644 §3.14).
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// 413: the body is larger than the server accepts.
    #[error("payload too large: {0}")]
    PayloadTooLarge(String),
    /// 501: a feature ServiceProviderConfig announces as unsupported (bulk, password change).
    #[error("not implemented: {0}")]
    NotImplemented(String),
    /// 500: the cause is logged by the caller, never sent.
    #[error("internal error")]
    Internal,
    /// 503: storage is unreachable for now; clients retry (Entra ID backs off on 5xx). The
    /// cause is logged by the caller, never sent.
    #[error("service unavailable")]
    Unavailable,
}

impl ScimError {
    pub fn bad_request(scim_type: ScimType, detail: impl Into<String>) -> Self {
        ScimError::BadRequest {
            scim_type,
            detail: detail.into(),
        }
    }
    pub fn invalid_filter(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::InvalidFilter, detail)
    }
    pub fn invalid_syntax(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::InvalidSyntax, detail)
    }
    pub fn invalid_path(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::InvalidPath, detail)
    }
    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::InvalidValue, detail)
    }
    pub fn no_target(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::NoTarget, detail)
    }
    pub fn mutability(detail: impl Into<String>) -> Self {
        Self::bad_request(ScimType::Mutability, detail)
    }

    /// Prefixes the detail of a 400 with where it happened (e.g. `operation 2`).
    pub fn context(self, ctx: impl std::fmt::Display) -> Self {
        match self {
            ScimError::BadRequest { scim_type, detail } => ScimError::BadRequest {
                scim_type,
                detail: format!("{ctx}: {detail}"),
            },
            other => other,
        }
    }

    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            ScimError::BadRequest { .. } => 400,
            ScimError::Unauthorized(_) => 401,
            ScimError::Forbidden(_) => 403,
            ScimError::NotFound(_) => 404,
            ScimError::Uniqueness(_) => 409,
            ScimError::PreconditionFailed(_) => 412,
            ScimError::PayloadTooLarge(_) => 413,
            ScimError::Internal => 500,
            ScimError::NotImplemented(_) => 501,
            ScimError::Unavailable => 503,
        }
    }

    /// The `scimType`, present only where RFC 7644 Table 9 defines one.
    pub fn scim_type(&self) -> Option<ScimType> {
        match self {
            ScimError::BadRequest { scim_type, .. } => Some(*scim_type),
            ScimError::Uniqueness(_) => Some(ScimType::Uniqueness),
            _ => None,
        }
    }

    /// The human-readable detail sent to the client.
    pub fn detail(&self) -> &str {
        match self {
            ScimError::BadRequest { detail, .. } => detail,
            ScimError::Unauthorized(d)
            | ScimError::Forbidden(d)
            | ScimError::NotFound(d)
            | ScimError::Uniqueness(d)
            | ScimError::PreconditionFailed(d)
            | ScimError::PayloadTooLarge(d)
            | ScimError::NotImplemented(d) => d,
            ScimError::Internal => "internal error",
            ScimError::Unavailable => "the service is unavailable; try again shortly",
        }
    }

    /// The SCIM Error body: `status` is a string (RFC 7644 §3.12).
    pub fn to_body(&self) -> Value {
        let mut body = json!({
            "schemas": [ERROR_SCHEMA],
            "status": self.status().to_string(),
            "detail": self.detail(),
        });
        if let Some(t) = self.scim_type() {
            body["scimType"] = Value::String(t.as_str().to_owned());
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_request_body_has_string_status_and_scim_type() {
        let body = ScimError::invalid_filter("unexpected ')' at byte 3").to_body();
        assert_eq!(
            body,
            json!({
                "schemas": [ERROR_SCHEMA],
                "status": "400",
                "scimType": "invalidFilter",
                "detail": "unexpected ')' at byte 3",
            })
        );
    }

    #[test]
    fn uniqueness_is_409_with_scim_type() {
        let e = ScimError::Uniqueness("userName is already taken".into());
        assert_eq!(e.status(), 409);
        assert_eq!(e.to_body()["scimType"], "uniqueness");
        assert_eq!(e.to_body()["status"], "409");
    }

    #[test]
    fn statuses_without_scim_type_omit_it() {
        for (e, status) in [
            (ScimError::Unauthorized("bearer token required".into()), 401),
            (ScimError::Forbidden("no".into()), 403),
            (ScimError::NotFound("no such User".into()), 404),
            (
                ScimError::PreconditionFailed("version mismatch".into()),
                412,
            ),
            (ScimError::PayloadTooLarge("too big".into()), 413),
            (ScimError::NotImplemented("bulk".into()), 501),
            (ScimError::Internal, 500),
            (ScimError::Unavailable, 503),
        ] {
            assert_eq!(e.status(), status);
            let body = e.to_body();
            assert!(body.get("scimType").is_none(), "{body}");
            assert_eq!(body["status"], status.to_string());
        }
    }

    #[test]
    fn context_prefixes_bad_request_details_only() {
        let e = ScimError::no_target("no match").context("operation 2");
        assert_eq!(e.detail(), "operation 2: no match");
        assert_eq!(e.scim_type(), Some(ScimType::NoTarget));
        assert_eq!(ScimError::Internal.context("x"), ScimError::Internal);
    }

    #[test]
    fn clip_bounds_echoed_names() {
        assert_eq!(clip("userName"), "userName");
        assert_eq!(clip(&"é".repeat(300)).chars().count(), 100);
    }

    #[test]
    fn internal_never_carries_a_cause() {
        assert_eq!(ScimError::Internal.detail(), "internal error");
        assert_eq!(ScimError::Internal.to_string(), "internal error");
    }

    #[test]
    fn every_scim_type_has_its_rfc_keyword() {
        let all = [
            (ScimType::InvalidFilter, "invalidFilter"),
            (ScimType::TooMany, "tooMany"),
            (ScimType::Uniqueness, "uniqueness"),
            (ScimType::Mutability, "mutability"),
            (ScimType::InvalidSyntax, "invalidSyntax"),
            (ScimType::InvalidPath, "invalidPath"),
            (ScimType::NoTarget, "noTarget"),
            (ScimType::InvalidValue, "invalidValue"),
            (ScimType::InvalidVers, "invalidVers"),
            (ScimType::Sensitive, "sensitive"),
        ];
        for (t, s) in all {
            assert_eq!(t.as_str(), s);
        }
    }
}
