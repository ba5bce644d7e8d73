//! Assent's SCIM 2.0 engine (RFC 7643, RFC 7644): plain Rust, no HTTP, no database.
//! The handlers parse, call into here, and map the result; storage applies what this
//! returns.
//!
//! | module | what |
//! |---|---|
//! | [`schema`], `core_schemas` | attribute characteristics; the User, Enterprise User and Group schemas |
//! | [`discovery`] | `/ServiceProviderConfig`, `/ResourceTypes`, `/Schemas` documents |
//! | [`filter`], [`path`] (`lexer`) | the bounded filter parser (RFC 7644 §3.4.2.2) and PATCH paths |
//! | [`eval`] | filter checking against a schema, and evaluation on a resource |
//! | [`sql`] | a filter planned onto the indexed columns (exact or superset) |
//! | [`resource`] | POST/PUT bodies: normalisation, index columns, references, output |
//! | [`patch`] (`patch_engine`), [`members`] | PATCH, and group membership as a transactional delta |
//! | [`projection`], [`list`], [`meta`] | `attributes`, paging, sorting, ListResponse, `meta`, ETags |
//! | [`declared`] | extension schemas a workspace declares: RFC 7643 §7 definitions, enforced |
//! | [`extension`] | schema extensions Assent does not define: kept, patched, filtered, indexed |
//! | [`error`], [`value`] | the SCIM error type; coercion, case folding, times |
//!
//! Request by request (`rt = ResourceKind::User.resource_type()` or Group's):
//!
//! - **list** (`GET /Users`, `POST /Users/.search`): [`list::ListRequest`] →
//!   [`sql::plan`] (see that module for the exact/superset protocol) → for each row
//!   build the representation with [`resource::attach_references`] and
//!   [`meta::meta_json`], re-check with [`eval::matches`] unless the plan was exact,
//!   feed a [`list::PageWindow`], answer its ListResponse through
//!   [`projection::Projection::apply`].
//! - **create** (`POST`): [`resource::normalise`] → check `manager_id` / `members`
//!   exist in the workspace (else 400 `invalidValue`) → insert with unique indexes on
//!   `user_name_lower` (Users) and `display_name_lower` (Groups) → 409
//!   [`error::ScimError::Uniqueness`] on conflict → 201.
//! - **replace** (`PUT`): [`meta::etag_matches`] on `If-Match` (412 otherwise) →
//!   [`resource::normalise`] → same checks → store; a Group's membership becomes
//!   exactly `members` (in the same transaction).
//! - **update** (`PATCH`): `If-Match` → [`patch::apply_patch`] on the stored document →
//!   check `manager_id` and [`members::GroupMembershipDelta::added_ids`] → one
//!   transaction: store `document` and `index`, apply the delta, bump the version.
//! - **errors**: [`error::ScimError::status`] and [`error::ScimError::to_body`].

pub mod core_schemas;
pub mod declared;
pub mod discovery;
#[cfg(test)]
mod entra_tests;
pub mod error;
pub mod eval;
pub mod extension;
pub mod filter;
mod lexer;
pub mod list;
pub mod members;
pub mod meta;
pub mod patch;
mod patch_engine;
#[cfg(test)]
mod patch_tests;
pub mod path;
pub mod projection;
pub mod resource;
pub mod schema;
pub mod sql;
pub mod value;
