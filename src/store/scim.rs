//! What the SCIM service provider keeps (issue 3): each workspace's Users and Groups, group
//! memberships, and the provisioning log. A trait of its own beside `Store`, so the SCIM tables read
//! in one place; its statements are in `scim_write.rs`, `scim_read.rs`
//! and `scim_log.rs`.
//!
//! The store holds documents and index columns the engine (`crate::scim`) computed; it never
//! interprets SCIM itself, with two exceptions that must happen inside its transactions: a group
//! member must name a resource of the same workspace when it is written, and deleting a resource
//! removes every membership of it. So no dangling member is ever stored. A user's manager is data
//! as sent (issue 15): it shows a `$ref` while it names a User of the workspace.

use serde_json::Value;
use time::OffsetDateTime;

use super::db::store_trait;
use super::{scim_log, scim_read, scim_schemas, scim_write, Result};
use crate::scim::declared::UniqueValue;
use crate::scim::error::ScimError;
use crate::scim::members::{GroupMembershipDelta, MemberDisplays};
use crate::scim::resource::{IndexColumns, Reference};
use crate::scim::schema::ResourceKind;
use crate::scim::sql::{SortColumn, SqlPlan};

/// A resource as stored: its document (without `id`, `meta`, members) and what `meta` needs.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredResource {
    pub id: String,
    pub document: Value,
    /// Bumped on every write, membership changes included: a Group's when its members change,
    /// a User's when its groups do. The ETag is `W/"<version>"`.
    pub version: i64,
    pub created: OffsetDateTime,
    pub last_modified: OffsetDateTime,
    /// A Group's members or a User's groups, when the read asked for them (in the same query)
    /// or the write knew them; sorted by id.
    pub refs: Option<Vec<Reference>>,
    /// Users: whether the enterprise `manager` names a User of the workspace now, and so shows a
    /// `$ref`. A manager that names nobody is kept as sent (Okta sends its own id, Microsoft's
    /// reference collection a name).
    pub manager_found: bool,
}

/// The columns a write sets besides the document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Columns {
    pub index: IndexColumns,
    /// `displayName` as given (a User without one: its `userName`): what a reference to it
    /// shows as `display` (a member's, a group's in `groups`).
    pub display: Option<String>,
    /// Users: the manager's `value`, whether or not it names a User of the workspace.
    pub manager_id: Option<String>,
}

/// A resource to create. `members` (Groups) must each name a User or Group of the workspace.
#[derive(Clone, Debug)]
pub struct NewResource {
    pub id: String,
    pub document: Value,
    pub columns: Columns,
    pub members: Vec<String>,
    /// The `display` sent with members, kept as sent.
    pub member_displays: MemberDisplays,
    /// Values its declared unique attributes hold, which no other resource may.
    pub unique: Vec<UniqueValue>,
}

/// What an update writes: the new document and columns, and the membership change (Groups).
#[derive(Clone, Debug)]
pub struct Change {
    pub document: Value,
    pub columns: Columns,
    pub members: GroupMembershipDelta,
    /// Values its declared unique attributes take on, which no other resource may hold.
    pub unique: Vec<UniqueValue>,
}

/// An update computed from the current resource, so a PATCH never works on a stale copy and
/// `If-Match` is checked against the version it replaces: computed while the store holds the
/// resource locked, or (a User on Postgres) again on the newer version when another write came
/// between the read and the write. An error refuses the update and leaves the resource unchanged.
pub type Edit =
    Box<dyn Fn(&StoredResource) -> std::result::Result<Change, ScimError> + Send + Sync>;

/// How a create or an update ended, when the database itself did not fail. A taken `userName`
/// (Users) or `displayName` (Groups) is `StoreError::Conflict`.
#[derive(Debug)]
pub enum Written {
    /// Stored (or, for an update that changed nothing, left as it was): the resource now.
    Done(StoredResource),
    NotFound,
    /// This member id names no resource of the workspace.
    MissingReference(String),
    /// The edit refused the update (a bad PATCH, a failed `If-Match`).
    Refused(ScimError),
    /// Another resource of the workspace holds this value of a declared unique attribute.
    Taken(UniqueValue),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Deleted {
    Done,
    NotFound,
    /// `expected_version` was given and the resource has another one.
    VersionMismatch,
}

/// One page of a listing, or one batch of a scan.
#[derive(Debug, Default)]
pub struct Rows {
    pub resources: Vec<StoredResource>,
    /// For `page`: how many rows match in all.
    pub total: u64,
}

/// A reference from `from` (a group, or a member) to another resource, with what it shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub from: String,
    pub to: Reference,
}

/// One SCIM request, as the provisioning log records it. Never the token, never a body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    pub workspace_id: i64,
    pub at: OffsetDateTime,
    pub method: String,
    pub path: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub status: u16,
    pub scim_type: Option<String>,
    pub latency_us: i64,
    pub detail: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub id: i64,
    pub record: LogRecord,
}

/// Which statuses a page of the log holds (inclusive range).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusRange {
    pub from: u16,
    pub to: u16,
}

impl StatusRange {
    pub const ALL: StatusRange = StatusRange { from: 0, to: 999 };
}

store_trait! {
    pub trait ScimStore {
        mod scim_write {
            /// Inserts the resource (and a Group's members) in one transaction.
            async fn create(
                &self,
                workspace_id: i64,
                kind: ResourceKind,
                new: NewResource,
                now: OffsetDateTime,
            ) -> Result<Written>;

            /// Locks the resource, runs `edit` on it and writes the change in the same
            /// transaction: the document and columns, then the membership delta (replace all,
            /// remove, add), then the version and `lastModified`. An edit that changes neither
            /// document nor members writes nothing and keeps the version.
            async fn update(
                &self,
                workspace_id: i64,
                kind: ResourceKind,
                id: &str,
                edit: Edit,
                now: OffsetDateTime,
            ) -> Result<Written>;

            /// Deletes the resource and, in the same transaction, its group memberships (those
            /// groups get a new version). Users it managed keep their `manager` as sent, without
            /// `$ref` from then on.
            async fn delete(
                &self,
                workspace_id: i64,
                kind: ResourceKind,
                id: &str,
                expected_version: Option<i64>,
                now: OffsetDateTime,
            ) -> Result<Deleted>;
        }

        mod scim_read {
            /// With `refs`, the resource's members (Group) or groups (User) come with it.
            async fn get(
                &self,
                workspace_id: i64,
                kind: ResourceKind,
                id: &str,
                refs: bool,
            ) -> Result<Option<StoredResource>>;

            /// Rows with `id > after` in id order, at most `limit`, narrowed by `filter` when given
            /// (the caller re-checks rows of an inexact plan).
            async fn scan(
                &self,
                workspace_id: i64,
                kind: ResourceKind,
                filter: Option<&SqlPlan>,
                after: Option<&str>,
                limit: u32,
                refs: bool,
            ) -> Result<Rows>;

            /// The page `[offset, offset + limit)` of the rows an exact `filter` selects (all when
            /// None), in `sort` order then id order, and how many match in all.
            #[allow(clippy::too_many_arguments)]
            async fn page(
                &self,
                workspace_id: i64,
                kind: ResourceKind,
                filter: Option<&SqlPlan>,
                sort: Option<SortColumn>,
                offset: u64,
                limit: u64,
                refs: bool,
            ) -> Result<Rows>;

            /// The members (Groups: their `value`, `type` and `display`) or the groups (Users:
            /// with the group's `displayName` as `display`) of these resources.
            async fn refs_of(
                &self,
                workspace_id: i64,
                kind: ResourceKind,
                ids: &[String],
            ) -> Result<Vec<Link>>;
        }

        mod scim_schemas {
            /// The workspace's declared extension schemas (the engine's JSON), if any.
            async fn declared_schemas(&self, workspace_id: i64) -> Result<Option<String>>;
            /// Replaces them.
            async fn put_declared_schemas(
                &self,
                workspace_id: i64,
                definitions: &str,
                now: OffsetDateTime,
            ) -> Result<()>;
        }

        mod scim_log {
            async fn append_log(&self, records: &[LogRecord]) -> Result<()>;
            /// The workspace's newest entries with `id < before`, newest first.
            async fn log_page(
                &self,
                workspace_id: i64,
                before: Option<i64>,
                status: StatusRange,
                limit: u32,
            ) -> Result<Vec<LogEntry>>;
            /// Deletes entries older than `cutoff`; returns how many.
            async fn prune_log(&self, cutoff: OffsetDateTime) -> Result<u64>;
            /// When the workspace's newest logged SCIM request came, and how many requests since
            /// `since` failed (status 400 and above).
            async fn log_summary(
                &self,
                workspace_id: i64,
                since: OffsetDateTime,
            ) -> Result<(Option<OffsetDateTime>, i64)>;
        }
    }
}
