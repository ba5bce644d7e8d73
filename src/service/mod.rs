//! Use cases, as methods on `App`: they call the domain and the ports; handlers only parse and map.

pub mod accounts;
pub mod audit;
pub mod devices;
pub mod keys;
pub mod members;
pub mod policy;
pub mod provisioning;
pub mod rotation;
pub mod scim;
pub mod scim_schemas;
pub mod sso;
pub mod sso_guard;
pub mod stepup;
pub mod support;
pub mod tokens;
pub mod transition;
pub mod watch;

use time::OffsetDateTime;

use crate::domain::challenge::{Subject, SupportContext};
use crate::domain::crypto::Secret;
use crate::store::{AuthMethod, Device, User, Workspace};

/// A signed-in console user, as the session cookie resolved.
#[derive(Clone, Debug)]
pub struct ConsoleSession {
    /// SHA-256 of the session id (the id itself is only ever in the browser's cookie).
    pub id_hash: String,
    pub user: User,
    pub workspace: Workspace,
    /// When the person last proved who they are in this session (sign-in or re-authentication).
    pub authenticated_at: time::OffsetDateTime,
    /// How they did: it says how they re-authenticate.
    pub method: AuthMethod,
}

/// A signed-in support staff member (CONTRACT.md section 8). Inside, a session like the
/// console's, whose user belongs to the staff realm (`domain::policy::STAFF_REALM`).
#[derive(Clone, Debug)]
pub struct StaffSession(pub ConsoleSession);

/// Where a request came from, for the audit log and the phone's prompt.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    pub ip: String,
    pub user_agent: String,
}

/// How long the push services keep trying to deliver a notice.
pub(crate) const NOTICE_LIFETIME: time::Duration = time::Duration::minutes(30);

/// A one-time enrollment code for a new phone, and the `uri` its QR code encodes.
pub struct EnrollmentOffer {
    pub code: Secret,
    pub uri: Secret,
    pub expires_at: OffsetDateTime,
}

/// A device whose request signature checked out.
#[derive(Clone, Debug)]
pub struct AuthedDevice {
    pub device: Device,
    pub user: User,
}

/// What a challenge is about beyond its action: a support rotation's ticket, or the member whose
/// phones are reset.
#[derive(Default)]
pub struct About {
    pub support: Option<SupportContext>,
    pub subject: Option<Subject>,
}

// Where a port's failure becomes what a caller is told: the use cases' side of the ports, so that
// `error` (used by every layer) depends on none of them.

impl From<crate::store::StoreError> for crate::error::ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Conflict => {
                crate::error::ApiError::Conflict("it already exists".into())
            }
            crate::store::StoreError::Unavailable(cause) => {
                tracing::error!(%cause, "database error");
                crate::error::ApiError::Unavailable(
                    "the database is unavailable; try again shortly".into(),
                )
            }
        }
    }
}

impl From<crate::challenges::LiveError> for crate::error::ApiError {
    fn from(e: crate::challenges::LiveError) -> Self {
        tracing::error!(cause = %e, "challenge store error");
        crate::error::ApiError::Unavailable(
            "the challenge store is unavailable; try again shortly".into(),
        )
    }
}

impl From<crate::bus::BusError> for crate::error::ApiError {
    fn from(e: crate::bus::BusError) -> Self {
        tracing::error!(cause = %e, "bus error");
        crate::error::ApiError::Unavailable(
            "the decision bus is unavailable; try again shortly".into(),
        )
    }
}
