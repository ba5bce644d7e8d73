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
pub mod sso;
pub mod sso_guard;
pub mod stepup;
pub mod support;
pub mod tokens;
pub mod transition;
pub mod watch;

use crate::store::{AuthMethod, User, Workspace};

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
