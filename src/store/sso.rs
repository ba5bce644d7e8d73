//! What single sign-on keeps (CONTRACT.md section 11): each workspace's provider, the sign-ins
//! started and not yet finished, and the link from a provider's `sub` to a member. A trait of its
//! own beside `Store`, so the SSO tables and their two backends read in one place.

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{Result, Role};
use crate::domain::crypto::Sealed;

/// A workspace's OpenID provider, as the owner set it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SsoConfig {
    pub workspace_id: i64,
    pub issuer: String,
    pub client_id: String,
    /// Sealed under the master keyring, bound to the workspace (see `service/sso.rs`).
    pub client_secret: Sealed,
    /// Lower-case domains whose verified e-mails may join on first sign-in.
    pub allowed_email_domains: Vec<String>,
    /// The role of a member created on first sign-in (`member` or `admin`, never `owner`).
    pub default_role: Role,
    /// Password sign-in refused for everyone but owners.
    pub enforce: bool,
    pub updated_at: OffsetDateTime,
    pub updated_by: String,
}

/// A sign-in between `/v1/sso/{workspace}/start` and `/v1/sso/callback`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingSignIn {
    /// SHA-256 (hex) of the `state` sent to the provider.
    pub state_hash: String,
    pub workspace_id: i64,
    /// The issuer at start: a provider changed in between does not finish it.
    pub issuer: String,
    /// SHA-256 (hex) of the `nonce` the ID token must carry.
    pub nonce_hash: String,
    /// SHA-256 (hex) of the browser binding cookie set at start.
    pub binding_hash: String,
    /// The PKCE code verifier, sealed: the token endpoint needs it in plain.
    pub pkce_verifier: Sealed,
    /// For a re-authentication (`?reauth=1`), the `id_hash` of the console session it is for;
    /// `None` for a sign-in.
    pub reauth_session_hash: Option<String>,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// What taking a state finds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Taken {
    /// First use: the sign-in, now marked used.
    Fresh(PendingSignIn),
    /// A replay of a state already taken (still known, so the refusal is logged in its workspace).
    Replayed(PendingSignIn),
    Unknown,
}

#[async_trait]
pub trait SsoStore: Send + Sync + 'static {
    /// Creates or replaces the workspace's provider.
    async fn put_config(&self, config: &SsoConfig) -> Result<()>;
    async fn config(&self, workspace_id: i64) -> Result<Option<SsoConfig>>;

    async fn create_pending(&self, pending: &PendingSignIn) -> Result<()>;
    /// Marks the sign-in used and returns it, in one statement: of two callbacks with the same
    /// state, exactly one gets `Fresh`. Expiry is the caller's check.
    async fn take_pending(&self, state_hash: &str, now: OffsetDateTime) -> Result<Taken>;
    /// Deletes sign-ins that expired before `cutoff`.
    async fn prune_pending(&self, cutoff: OffsetDateTime) -> Result<()>;

    /// The member this provider subject is linked to, in the workspace.
    async fn linked_user(&self, workspace_id: i64, issuer: &str, sub: &str) -> Result<Option<i64>>;
    /// The subject a member is linked to at this issuer, if any.
    async fn link_of_user(&self, user_id: i64, issuer: &str) -> Result<Option<String>>;
    /// Links a subject to a member; `Conflict` when either side is already linked.
    async fn link(
        &self,
        workspace_id: i64,
        issuer: &str,
        sub: &str,
        user_id: i64,
        now: OffsetDateTime,
    ) -> Result<()>;
}
