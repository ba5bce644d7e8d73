//! The error of the console, mobile and support APIs. Rendered once, as RFC 9457 problem+json, in
//! `http/error.rs`. Details are written for the caller: never a secret, SQL or a stack trace;
//! internal causes are logged where they happen.

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unprocessable(String),
    /// The same answer whatever was wrong, so it tells an attacker nothing.
    #[error("authentication required or failed")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    /// A first phone needs a fresh authentication (CONTRACT.md section 3): 403 with
    /// `"reauth_required": true`, and how to re-authenticate (`password`, or `sso` with the URL).
    #[error("prove who you are again before adding your first phone")]
    ReauthRequired { sso_url: Option<String> },
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Gone(String),
    #[error("{detail}")]
    TooManyRequests {
        detail: String,
        retry_after_secs: u64,
    },
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal,
    /// The client went away before the work began (`cancel::client_left`): nobody reads this.
    #[error("the client went away")]
    ClientLeft,
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized => 401,
            ApiError::Forbidden(_) | ApiError::ReauthRequired { .. } => 403,
            ApiError::NotFound => 404,
            ApiError::Conflict(_) => 409,
            ApiError::Gone(_) => 410,
            ApiError::Unprocessable(_) => 422,
            ApiError::TooManyRequests { .. } => 429,
            ApiError::Internal => 500,
            // nginx's "client closed request": never seen, but honest in a log.
            ApiError::ClientLeft => 499,
            ApiError::Unavailable(_) => 503,
        }
    }

    /// A stable machine-readable name, the last part of the problem `type`.
    pub fn slug(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad-request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::ReauthRequired { .. } => "reauth-required",
            ApiError::NotFound => "not-found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Gone(_) => "gone",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::TooManyRequests { .. } => "too-many-requests",
            ApiError::Internal => "internal",
            ApiError::ClientLeft => "client-left",
            ApiError::Unavailable(_) => "unavailable",
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Gives up before the first write (or expensive step) of a use case when its client has gone.
pub fn unless_client_left() -> ApiResult<()> {
    if crate::cancel::client_left() {
        return Err(ApiError::ClientLeft);
    }
    Ok(())
}
