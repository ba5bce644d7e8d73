//! Durable data behind small traits: `Store`, `ScimStore`, `SsoStore` and `SealedStore`, each
//! implemented once over the seam in `db.rs`, which holds the pools of SQLite (the embedded
//! default) or Postgres (for deployments with several instances); `open` decides which, once.
//! Their statements are written once for both, in files by table group: `accounts.rs`,
//! `devices.rs`, `tokens.rs`, `audit_log.rs`, `scim_write.rs`, `scim_read.rs`, `scim_log.rs`,
//! `sso_tables.rs`, `sealed.rs`.

mod accounts;
mod audit_log;
#[cfg(test)]
mod audit_tests;
mod checkpoint;
mod database;
mod db;
mod devices;
mod group_commit;
#[cfg(test)]
mod lifecycle_tests;
mod members;
mod provisioning;
pub mod provisioning_log;
mod readers;
pub mod scim;
mod scim_log;
mod scim_read;
mod scim_schemas;
mod scim_write;
pub mod sealed;
pub mod sso;
mod sso_tables;
#[cfg(test)]
pub(crate) mod test_db;
mod tokens;
pub mod write_behind;

use serde::Serialize;
use std::sync::Arc;
use time::OffsetDateTime;

pub use self::database::Database;
use crate::domain::audit;
use crate::domain::crypto::Sealed;
pub use crate::domain::people::{
    AuthMethod, Device, Member, NewDevice, Platform, Role, Session, User, Workspace,
};
pub use crate::domain::policy::Policy;
use db::{store_trait, Db};
pub use members::{Invitation, Invitee, MemberChange, NewInvitation};
use scim::ScimStore;
use sealed::SealedStore;
use sso::SsoStore;

#[derive(sqlx::FromRow)]
/// A `workspaces` row, read by the accounts and the tokens statements.
struct WorkspaceRow {
    id: i64,
    slug: String,
    name: String,
    created_at: i64,
}

impl From<WorkspaceRow> for Workspace {
    fn from(row: WorkspaceRow) -> Workspace {
        Workspace {
            id: row.id,
            slug: row.slug,
            name: row.name,
            created_at: crate::clock::from_unix(row.created_at),
        }
    }
}

/// A device JWS id that was used, kept until it could no longer be valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsedJti {
    pub device_id: String,
    pub jti: String,
    pub keep_until: OffsetDateTime,
}

/// Every store of the configured database.
pub struct Stores {
    pub store: Arc<dyn Store>,
    pub scim: Arc<dyn ScimStore>,
    pub sso: Arc<dyn SsoStore>,
    /// Every sealed column, for `assent keys rotate`.
    pub sealed: Arc<dyn SealedStore>,
}

/// Opens the configured database, the one place that decides the backend (`App::open`, `assent
/// keys rotate`), and runs its migrations.
pub async fn open(database: &Database) -> anyhow::Result<Stores> {
    let db = Arc::new(Db::open(database).await?);
    Ok(Stores {
        store: db.clone(),
        scim: db.clone(),
        sso: db.clone(),
        sealed: db,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("already exists")]
    Conflict,
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, PartialEq, Eq)]
pub enum Enrollment {
    Unknown,
    Spent,
    Expired,
    /// A code given for a first phone (no approval) while the person has a phone by now: spent,
    /// and no device added.
    NotFirst,
    /// The code was valid and is now spent; the device is created in the same transaction.
    Enrolled {
        user_id: i64,
    },
}

#[derive(Clone, Debug)]
pub struct StoredToken {
    pub workspace_id: i64,
    pub token_hash: [u8; 32],
    pub sealed: Sealed,
    pub created_at: OffsetDateTime,
    pub created_by: String,
}

#[derive(Clone, Debug, Default)]
pub struct AuditEvent {
    pub workspace_id: Option<i64>,
    pub kind: &'static str,
    pub actor: Option<String>,
    pub ip: Option<String>,
    pub device_id: Option<String>,
    pub detail: serde_json::Value,
}

#[derive(Clone, Debug, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub workspace_id: Option<i64>,
    #[serde(serialize_with = "crate::clock::ser_rfc3339")]
    pub at: OffsetDateTime,
    pub kind: String,
    pub actor: Option<String>,
    pub ip: Option<String>,
    pub device_id: Option<String>,
    pub detail: serde_json::Value,
    /// The entry's place in its chain (`domain/audit.rs`); `None` for entries written before the
    /// chain existed, as are both hashes.
    pub seq: Option<i64>,
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
}

impl AuditEvent {
    /// What the entry's hash covers, as entry `seq` of its chain after `prev_hash`.
    pub fn content<'a>(&'a self, seq: i64, at: i64, prev_hash: &'a str) -> audit::Content<'a> {
        audit::Content {
            chain: audit::chain_key(self.workspace_id),
            seq,
            at,
            kind: self.kind,
            actor: self.actor.as_deref(),
            ip: self.ip.as_deref(),
            device_id: self.device_id.as_deref(),
            detail: &self.detail,
            prev_hash,
        }
    }
}

impl AuditEntry {
    /// What the entry's hash covers; `None` for an entry outside the chain (no seq).
    pub fn content(&self) -> Option<audit::Content<'_>> {
        Some(audit::Content {
            chain: audit::chain_key(self.workspace_id),
            seq: self.seq?,
            at: self.at.unix_timestamp(),
            kind: &self.kind,
            actor: self.actor.as_deref(),
            ip: self.ip.as_deref(),
            device_id: self.device_id.as_deref(),
            detail: &self.detail,
            prev_hash: self.prev_hash.as_deref().unwrap_or_default(),
        })
    }
}

/// Which entries of a workspace `audit_page` returns, newest first.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Only entries with a smaller id (the next page).
    pub before_id: Option<i64>,
    pub kind: Option<String>,
    /// `since <= at < until`.
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    pub limit: i64,
}

store_trait! {
    /// The console's workspaces and people, their devices, SCIM tokens and audit log.
    pub trait Store {
        mod db {
            async fn ping(&self) -> Result<()>;
            /// Deletes what has expired: replay-cache entries, sessions, old enrollment codes.
            async fn prune(&self, now: OffsetDateTime) -> Result<()>;
        }

        mod accounts {
            async fn count_workspaces(&self) -> Result<i64>;
            /// Creates a workspace with its owner and first SCIM token, all or nothing.
            async fn create_workspace(
                &self,
                slug: &str,
                name: &str,
                owner_email: &str,
                owner_password_hash: &str,
                token: StoredToken,
                now: OffsetDateTime,
            ) -> Result<Workspace>;
            async fn workspace_by_slug(&self, slug: &str) -> Result<Option<Workspace>>;
            async fn workspace_by_id(&self, id: i64) -> Result<Option<Workspace>>;

            async fn create_user(
                &self,
                workspace_id: i64,
                email: &str,
                role: Role,
                password_hash: &str,
                now: OffsetDateTime,
            ) -> Result<User>;
            async fn user_by_email(&self, workspace_id: i64, email: &str) -> Result<Option<User>>;
            async fn user_by_id(&self, id: i64) -> Result<Option<User>>;
            /// The workspace's people for the members list, by e-mail.
            async fn members(&self, workspace_id: i64) -> Result<Vec<Member>>;
            /// Deletes the user with their sessions, devices and enrollment codes; false when none.
            async fn delete_user(&self, id: i64) -> Result<bool>;
            /// The workspace's users with at least `role`.
            async fn users_with_role(&self, workspace_id: i64, role: Role) -> Result<Vec<User>>;

            async fn create_session(&self, session: &Session) -> Result<()>;
            /// The live session with this hash, with its person and their workspace (one read),
            /// its idle clock slid forward to `now` (written at most every 30 s) unless it has
            /// passed `idle_cutoff` or its absolute expiry, in which case it is deleted and None
            /// returned. None too when its person is gone.
            async fn touch_session(
                &self,
                id_hash: &str,
                now: OffsetDateTime,
                idle_cutoff: OffsetDateTime,
            ) -> Result<Option<(Session, User, Workspace)>>;
            async fn delete_session(&self, id_hash: &str) -> Result<()>;
            /// Records that the session's person proved who they are at `now`; false when no such
            /// session.
            async fn reauthenticate_session(&self, id_hash: &str, now: OffsetDateTime) -> Result<bool>;
            /// Makes every session of the person prove again who they are before anything the
            /// reauth window guards (their first phone); returns how many.
            async fn unauthenticate_sessions(&self, user_id: i64) -> Result<u64>;
            /// Ends the sessions of the workspace's users other than its owners (single sign-on
            /// enforced); returns how many.
            async fn end_sessions_but_owners(&self, workspace_id: i64) -> Result<u64>;
        }

        mod members {
            /// Adds a member with a one-time password (or, with `link`, an invitation link and a
            /// password nobody knows) and its audit entry, in one transaction; `Conflict` when the
            /// e-mail is already in the workspace.
            async fn invite_member(
                &self,
                invitee: &Invitee,
                now: OffsetDateTime,
                audit: AuditEvent,
            ) -> Result<User>;
            /// The invitation link with this token hash, used or not.
            async fn invitation(&self, token_hash: &str) -> Result<Option<Invitation>>;
            /// Spends the invitation (unused, unexpired at `now`) and sets its person's password,
            /// with the audit entry, in one transaction; false when it was no longer usable.
            async fn accept_invitation(
                &self,
                token_hash: &str,
                user_id: i64,
                password_hash: &str,
                now: OffsetDateTime,
                audit: AuditEvent,
            ) -> Result<bool>;
            /// Sets the member's role from `from` to `to` with its audit entry, unless the role
            /// moved meanwhile or the workspace would be left without an owner.
            async fn set_member_role(
                &self,
                workspace_id: i64,
                user_id: i64,
                from: Role,
                to: Role,
                now: OffsetDateTime,
                audit: AuditEvent,
            ) -> Result<MemberChange>;
            /// Deletes the member (sessions, phones, password and links with them) with its audit
            /// entry, unless they are the last owner.
            async fn remove_member(
                &self,
                workspace_id: i64,
                user_id: i64,
                now: OffsetDateTime,
                audit: AuditEvent,
            ) -> Result<MemberChange>;
        }

        mod provisioning {
            /// How many SCIM requests of the workspace were logged since `since`.
            async fn provisioning_requests(
                &self,
                workspace_id: i64,
                since: OffsetDateTime,
            ) -> Result<i64>;
        }

        mod devices {
            async fn create_enrollment(
                &self,
                code_hash: &str,
                user_id: i64,
                now: OffsetDateTime,
                expires_at: OffsetDateTime,
                first_device: bool,
            ) -> Result<()>;
            /// Spends the code and creates the device, atomically; a code works once.
            async fn enroll_device(
                &self,
                code_hash: &str,
                device: NewDevice,
                now: OffsetDateTime,
            ) -> Result<Enrollment>;

            async fn device(&self, id: &str) -> Result<Option<Device>>;
            async fn devices_of_user(&self, user_id: i64) -> Result<Vec<Device>>;
            async fn count_devices_of_user(&self, user_id: i64) -> Result<i64>;
            /// Deletes the device if it belongs to `user_id`; false when there was none.
            async fn delete_device(&self, user_id: i64, id: &str) -> Result<bool>;
            /// Deletes every device of the user (a reset); how many there were.
            async fn delete_devices_of_user(&self, user_id: i64) -> Result<u64>;
            async fn set_push_token(&self, id: &str, token: Option<Sealed>) -> Result<()>;
            async fn mark_push_token_invalid(&self, id: &str) -> Result<()>;
            async fn touch_device(&self, id: &str, now: OffsetDateTime) -> Result<()>;

            /// Records device JWS ids already checked unused elsewhere (the embedded challenge
            /// store's own map), in as few statements as the backend allows; an id already there
            /// is left as it is.
            async fn record_jtis(&self, used: &[UsedJti]) -> Result<()>;

            /// Every recorded id (`prune` removes those past their time).
            async fn used_jtis(&self) -> Result<Vec<UsedJti>>;
        }

        mod tokens {
            /// Replaces the workspace's token, in one transaction. With `grace_until` the replaced
            /// token keeps authenticating until then (`workspace_by_grace_hash`); without it, it
            /// stops at once. Either way a token replaced earlier and still in its grace stops now.
            async fn put_scim_token(
                &self,
                token: StoredToken,
                grace_until: Option<OffsetDateTime>,
            ) -> Result<()>;
            /// The workspace whose replaced token has this hash and is still in its grace period.
            async fn workspace_by_grace_hash(
                &self,
                token_hash: &[u8; 32],
                now: OffsetDateTime,
            ) -> Result<Option<(Workspace, [u8; 32])>>;
            /// Until when the workspace's replaced token still works, if it does.
            async fn grace_until(
                &self,
                workspace_id: i64,
                now: OffsetDateTime,
            ) -> Result<Option<OffsetDateTime>>;
            async fn scim_token(&self, workspace_id: i64) -> Result<Option<StoredToken>>;
            async fn workspace_by_token_hash(
                &self,
                token_hash: &[u8; 32],
            ) -> Result<Option<(Workspace, [u8; 32])>>;

            /// The workspace's policy (the defaults when its owners never set one).
            async fn policy(&self, workspace_id: i64) -> Result<Policy>;
            async fn put_policy(
                &self,
                workspace_id: i64,
                policy: &Policy,
                by: &str,
                now: OffsetDateTime,
            ) -> Result<()>;
        }

        mod audit_log {
            /// Appends to the event's chain (`domain/audit.rs`): the next seq, the previous entry's
            /// hash and the entry's own, serialized per chain so that two appends never share a
            /// `prev_hash`.
            async fn append_audit(&self, event: AuditEvent, now: OffsetDateTime) -> Result<()>;
            async fn audit_page(
                &self,
                workspace_id: i64,
                filter: &AuditFilter,
            ) -> Result<Vec<AuditEntry>>;
            /// The chained entries of a workspace (`None`: the entries without one) with a seq
            /// above `after_seq`, in seq order.
            async fn audit_chain(
                &self,
                workspace_id: Option<i64>,
                after_seq: i64,
                limit: i64,
            ) -> Result<Vec<AuditEntry>>;
            /// The entries of a workspace (`None`: without one) that carry no seq, with an id above
            /// `after_id`, in id order.
            async fn audit_unchained(
                &self,
                workspace_id: Option<i64>,
                after_id: i64,
                limit: i64,
            ) -> Result<Vec<AuditEntry>>;
        }
    }
}
