//! `ScimStore`'s writes of Users, Groups and memberships.
//!
//! Every write is one transaction that reads what it changes, and nothing changes it meanwhile.
//! On SQLite it is `BEGIN IMMEDIATE` on the one writer: it takes the write lock before it reads
//! anything, so the read-check-write inside (a PATCH on the current document, a member's
//! existence) sees no other writer, even one from another process (the CLI) waiting on the busy
//! timeout. On Postgres several instances write at once, so each write locks what it reads: an
//! update holds its resource `FOR UPDATE` while it edits it, and a reference it writes holds the
//! referenced row `FOR KEY SHARE` until commit, which a concurrent DELETE of that row waits for. A
//! delete locks the groups listing the resource before the resource itself, in the order a
//! membership change does (group, then member), so the two never deadlock. A declared unique
//! value is claimed after the members are checked, with an advisory lock on the value (`taken`),
//! and the users whose groups change are locked last, in id order (`bump_members`).

use std::collections::HashMap;

use sqlx::PgPool;
use time::OffsetDateTime;

use super::db::{placeholders, postgres_rows, ts, Db, Lane, WriteTx};
use super::readers::{args, Arg};
use super::scim::{Change, Columns, Deleted, Edit, NewResource, StoredResource, Written};
use super::scim_read::{kind_of, resource, select, table, ResourceRow, IN_CHUNK};
use super::Result;
use crate::clock::from_unix;
use crate::scim::declared::UniqueValue;
use crate::scim::error::ScimError;
use crate::scim::extension::IndexedValue;
use crate::scim::members::MemberDisplays;
use crate::scim::resource::{index_columns, Reference};
use crate::scim::schema::ResourceKind;

/// The `member_type` stored for a member, and back.
fn kind_name(kind: ResourceKind) -> &'static str {
    kind.resource_type().name
}

/// The kind of each id that names a resource of the workspace; Err with the first that does not.
/// On Postgres each is locked `FOR KEY SHARE` until commit.
async fn member_types(
    tx: &mut WriteTx<'_>,
    workspace_id: i64,
    ids: &[String],
) -> Result<std::result::Result<Vec<(String, ResourceKind)>, String>> {
    let mut found: HashMap<String, ResourceKind> = HashMap::new();
    if ids.is_empty() {
    } else if let Some(c) = tx.postgres() {
        // Both tables in one statement (one round trip), users locked first as before; a
        // locking clause may not stand beside UNION, so each SELECT is a CTE of its own.
        let rows: Vec<(String, String)> = sqlx::query_as(
            "WITH u AS (SELECT id FROM scim_users
                 WHERE workspace_id = $1 AND id = ANY($2) FOR KEY SHARE),
               g AS (SELECT id FROM scim_groups
                 WHERE workspace_id = $1 AND id = ANY($2) FOR KEY SHARE)
             SELECT id, 'User' AS t FROM u UNION ALL SELECT id, 'Group' AS t FROM g",
        )
        .bind(workspace_id)
        .bind(ids)
        .fetch_all(&mut *c)
        .await?;
        for (id, t) in rows {
            found.insert(id, kind_of(&t));
        }
    } else {
        // No arrays: the ids in lists of placeholders, both tables in one statement.
        for chunk in ids.chunks(IN_CHUNK) {
            let list = placeholders(2, chunk.len());
            let sql = format!(
                "SELECT id, 'User' AS t FROM scim_users WHERE workspace_id = $1 AND id IN ({list})
                 UNION ALL
                 SELECT id, 'Group' AS t FROM scim_groups WHERE workspace_id = $1 AND id IN ({list})"
            );
            let mut values = args![workspace_id];
            values.extend(chunk.iter().map(Arg::from));
            let rows: Vec<(String, String)> = tx
                .rows(&sql, values, |r| Ok((r.get(0)?, r.get(1)?)))
                .await?;
            for (id, t) in rows {
                found.insert(id, kind_of(&t));
            }
        }
    }
    Ok(ids
        .iter()
        .map(|id| {
            found
                .get(id)
                .map(|k| (id.clone(), *k))
                .ok_or_else(|| id.clone())
        })
        .collect())
}

/// The first of `unique` (declared unique values the resource `id` is to hold) that another
/// resource of the workspace and kind holds, if any. The probe is `scim_ext_values`' primary key;
/// a `caseExact` string's holders of the folded key are read back and compared as stored. On
/// SQLite the write lock keeps the probe true until commit. On Postgres writes run at once, so
/// each value is claimed first with a transaction-scoped advisory lock on its key, in one order
/// (`unique` is sorted): a concurrent write of the same value waits for this one's commit, and
/// its own probe, a statement begun after, then sees the value taken.
async fn taken(
    tx: &mut WriteTx<'_>,
    workspace_id: i64,
    kind: ResourceKind,
    id: &str,
    unique: &[UniqueValue],
) -> Result<Option<UniqueValue>> {
    for value in unique {
        if let Some(c) = tx.postgres() {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(format!(
                    "scim-unique\u{1f}{workspace_id}\u{1f}{}\u{1f}{}\u{1f}{}",
                    kind_name(kind),
                    value.path,
                    value.key
                ))
                .execute(c)
                .await?;
        }
        let holders: Vec<(String,)> = tx
            .rows(
                "SELECT resource_id FROM scim_ext_values
                 WHERE workspace_id = $1 AND resource_type = $2 AND path = $3 AND value = $4
                   AND resource_id <> $5",
                args![workspace_id, kind_name(kind), &value.path, &value.key, id],
                |r| Ok((r.get(0)?,)),
            )
            .await?;
        for (holder,) in holders {
            if value.exact.is_none() {
                return Ok(Some(value.clone()));
            }
            let sql = format!(
                "SELECT document FROM {} WHERE workspace_id = $1 AND id = $2",
                table(kind)
            );
            let document: Option<(String,)> = tx
                .optional(&sql, args![workspace_id, &holder], |r| Ok((r.get(0)?,)))
                .await?;
            let held = document
                .and_then(|(text,)| serde_json::from_str::<serde_json::Value>(&text).ok())
                .is_some_and(|doc| value.held_by(&doc));
            if held {
                return Ok(Some(value.clone()));
            }
        }
    }
    Ok(None)
}

/// Whether the manager id names a User of the workspace, for the `$ref` the answer shows. A
/// manager is data as sent (issue 15): nothing is refused or locked for it.
async fn manager_found(tx: &mut WriteTx<'_>, workspace_id: i64, id: Option<&str>) -> Result<bool> {
    let Some(id) = id else {
        return Ok(false);
    };
    let found: Option<(String,)> = tx
        .optional(
            "SELECT id FROM scim_users WHERE workspace_id = $1 AND id = $2",
            args![workspace_id, id],
            |r| Ok((r.get(0)?,)),
        )
        .await?;
    Ok(found.is_some())
}

/// Adds memberships, each with the `display` sent with it (if any); one already there is kept.
/// The members it added.
async fn insert_members(
    tx: &mut WriteTx<'_>,
    workspace_id: i64,
    group_id: &str,
    members: &[(String, ResourceKind)],
    displays: &MemberDisplays,
) -> Result<Vec<String>> {
    if members.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(c) = tx.postgres() {
        // One statement, the members as arrays.
        let ids: Vec<&str> = members.iter().map(|(id, _)| id.as_str()).collect();
        let types: Vec<&str> = members.iter().map(|(_, k)| kind_name(*k)).collect();
        let shown: Vec<Option<&str>> = members
            .iter()
            .map(|(id, _)| displays.get(id).map(String::as_str))
            .collect();
        let added: Vec<String> = sqlx::query_scalar(
            "INSERT INTO scim_group_members (workspace_id, group_id, member_id, member_type, display)
             SELECT $1, $2, m.id, m.t, m.d
             FROM UNNEST($3::text[], $4::text[], $5::text[]) AS m(id, t, d)
             ON CONFLICT DO NOTHING
             RETURNING member_id",
        )
        .bind(workspace_id)
        .bind(group_id)
        .bind(&ids)
        .bind(&types)
        .bind(&shown)
        .fetch_all(c)
        .await?;
        return Ok(added);
    }
    let mut added = Vec::new();
    for (id, kind) in members {
        let inserted = tx.execute(
            "INSERT INTO scim_group_members (workspace_id, group_id, member_id, member_type, display)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            args![
                workspace_id,
                group_id,
                id,
                kind_name(*kind),
                displays.get(id).map(String::as_str)
            ],
        )
        .await?;
        if inserted > 0 {
            added.push(id.clone());
        }
    }
    Ok(added)
}

/// Gives the users whose memberships a write changed a new version. A User's representation
/// lists its groups (RFC 7643 §4.1.2), so its ETag must move when they do (RFC 7644 §3.14), or
/// a GET with `If-None-Match` would answer 304 over a stale `groups`, and an `If-Match` write
/// would pass on a representation its client never saw. (A group's rename is not a membership:
/// like a member's `display` in a group, the `display` of a group in `groups` may lag the tag.)
/// Ids that name groups (nested members) match no user row. On Postgres the users are locked in
/// id order, `FOR NO KEY UPDATE` (which the `FOR KEY SHARE` of `member_types` does not block),
/// after the group: two group writes sharing members never deadlock, and a user's delete locks
/// the groups before the user as well.
async fn bump_members(
    tx: &mut WriteTx<'_>,
    workspace_id: i64,
    ids: &[String],
    now: OffsetDateTime,
) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    if let Some(c) = tx.postgres() {
        sqlx::query(
            "UPDATE scim_users SET version = version + 1, last_modified = $3
             WHERE workspace_id = $1 AND id IN
               (SELECT id FROM scim_users WHERE workspace_id = $1 AND id = ANY($2)
                ORDER BY id FOR NO KEY UPDATE)",
        )
        .bind(workspace_id)
        .bind(ids)
        .bind(ts(now))
        .execute(c)
        .await?;
        return Ok(());
    }
    for chunk in ids.chunks(IN_CHUNK) {
        let sql = format!(
            "UPDATE scim_users SET version = version + 1, last_modified = $2
             WHERE workspace_id = $1 AND id IN ({})",
            placeholders(3, chunk.len())
        );
        let mut values = args![workspace_id, ts(now)];
        values.extend(chunk.iter().map(Arg::from));
        tx.execute(&sql, values).await?;
    }
    Ok(())
}

/// The members whose membership changed, given those a write removed and those it added: a
/// member removed and added again (a PUT's whole list replaced by itself) is in the same groups.
fn moved_members(removed: Vec<String>, added: Vec<String>) -> Vec<String> {
    let removed_set: std::collections::HashSet<&String> = removed.iter().collect();
    let added_set: std::collections::HashSet<&String> = added.iter().collect();
    let mut moved: Vec<String> = removed
        .iter()
        .filter(|id| !added_set.contains(id))
        .chain(added.iter().filter(|id| !removed_set.contains(id)))
        .cloned()
        .collect();
    moved.sort();
    moved.dedup();
    moved
}

/// Replaces the `scim_ext_values` rows of a resource with `values` (the undeclared extensions'
/// values the engine indexed), in the write's transaction.
async fn write_ext_values(
    tx: &mut WriteTx<'_>,
    workspace_id: i64,
    kind: ResourceKind,
    id: &str,
    values: &[IndexedValue],
    fresh: bool,
) -> Result<()> {
    let resource_type = kind_name(kind);
    if !fresh {
        tx.execute(
            "DELETE FROM scim_ext_values
             WHERE workspace_id = $1 AND resource_type = $2 AND resource_id = $3",
            args![workspace_id, resource_type, id],
        )
        .await?;
    }
    if values.is_empty() {
        return Ok(());
    }
    // One statement for all of them (at most `MAX_EXTENSION_VALUES`, 2 placeholders each), the
    // same on both databases: a create with ten extension attributes costs one statement, not ten.
    let sql = insert_ext_values("$2", "$3", 4, values.len());
    let mut args = args![workspace_id, resource_type, id];
    push_ext_args(&mut args, values);
    tx.execute(&sql, args).await?;
    Ok(())
}

/// The INSERT of `n` `scim_ext_values` rows of one resource, the workspace `$1`, the resource's
/// type and id as given (a placeholder or a literal), the path and value of the i-th at
/// `$(first + 2i)` and the next.
fn insert_ext_values(resource_type: &str, id: &str, first: usize, n: usize) -> String {
    let rows: Vec<String> = (0..n)
        .map(|i| {
            let at = first + 2 * i;
            format!("($1, {resource_type}, {id}, ${at}, ${})", at + 1)
        })
        .collect();
    format!(
        "INSERT INTO scim_ext_values (workspace_id, resource_type, resource_id, path, value)
         VALUES {} ON CONFLICT DO NOTHING",
        rows.join(", ")
    )
}

/// Binds the path and value of each of `values`, in order, after `args` (`insert_ext_values`).
fn push_ext_args(args: &mut Vec<Arg>, values: &[IndexedValue]) {
    for (path, key) in values {
        args.extend([Arg::from(path), Arg::from(key)]);
    }
}

/// A User's INSERT, bound to `row_args`. `seq`: after every row of the workspace
/// (migrations/*/0008), so a listing being paged meanwhile does not shift.
const INSERT_USER: &str = "INSERT INTO scim_users (workspace_id, id, document, user_name_lower,
       external_id, display_name_lower, work_email_lower, email_overflow, active,
       manager_id, display, version, created_at, last_modified, seq)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1, $12, $12,
       (SELECT COALESCE(MAX(seq), 0) + 1 FROM scim_users WHERE workspace_id = $1))";

/// A User's UPDATE to a new version, bound to `row_args`.
const UPDATE_USER: &str = "UPDATE scim_users SET document = $3, user_name_lower = $4,
       external_id = $5, display_name_lower = $6, work_email_lower = $7, email_overflow = $8,
       active = $9, manager_id = $10, display = $11, version = version + 1, last_modified = $12
     WHERE workspace_id = $1 AND id = $2";

/// Whether the manager `$10` is a User of the workspace `$1`, or the user `$2` itself, in a
/// statement that writes the user (which it does not see yet).
const MANAGER_FOUND: &str = "$10::text IS NOT NULL AND ($10 = $2
       OR EXISTS (SELECT 1 FROM scim_users WHERE workspace_id = $1 AND id = $10))";

/// `$1` … of a row's statements, the same for its INSERT and its UPDATE: the workspace, the id,
/// the document, the kind's columns, and the time last.
fn row_args(
    kind: ResourceKind,
    workspace_id: i64,
    id: &str,
    document: String,
    c: &Columns,
    now: OffsetDateTime,
) -> Vec<Arg> {
    let mut values = args![workspace_id, id, document];
    match kind {
        ResourceKind::User => values.extend(args![
            &c.index.user_name_lower,
            &c.index.external_id,
            &c.index.display_name_lower,
            &c.index.work_email_lower,
            c.index.email_overflow,
            c.index.active,
            &c.manager_id,
            &c.display,
            ts(now)
        ]),
        ResourceKind::Group => values.extend(args![
            &c.display,
            &c.index.display_name_lower,
            &c.index.external_id,
            ts(now)
        ]),
    }
    values
}

/// Writes the document and columns of an existing row, with a new version.
async fn write_row(
    tx: &mut WriteTx<'_>,
    workspace_id: i64,
    kind: ResourceKind,
    id: &str,
    document: String,
    c: &Columns,
    now: OffsetDateTime,
) -> Result<()> {
    let sql = match kind {
        ResourceKind::User => UPDATE_USER,
        ResourceKind::Group => {
            "UPDATE scim_groups SET document = $3, display = $4, display_name_lower = $5,
               external_id = $6, version = version + 1, last_modified = $7
             WHERE workspace_id = $1 AND id = $2"
        }
    };
    tx.execute(sql, row_args(kind, workspace_id, id, document, c, now))
        .await?;
    Ok(())
}

pub(super) async fn create(
    db: &Db,
    workspace_id: i64,
    kind: ResourceKind,
    new: NewResource,
    now: OffsetDateTime,
) -> Result<Written> {
    if let (Db::Postgres(pool), ResourceKind::User) = (db, kind) {
        // A declared unique value is checked and claimed inside a transaction (`taken`).
        if new.unique.is_empty() {
            return create_user_postgres(pool, workspace_id, new, now).await;
        }
    }
    db.grouped_write(
        Lane::Bulk,
        Box::new(move |tx: WriteTx<'_>| Box::pin(create_in(tx, workspace_id, kind, new, now))),
    )
    .await
}

/// A User's create on Postgres as one statement, in no transaction of ours, so one round trip
/// (issue 18): its extension values in a CTE beside the INSERT (a taken `userName` fails them
/// both), whether its manager is a User of the workspace in RETURNING (which sees the table as
/// before the statement: a user who is their own manager is found by the id).
async fn create_user_postgres(
    pool: &PgPool,
    workspace_id: i64,
    new: NewResource,
    now: OffsetDateTime,
) -> Result<Written> {
    let c = &new.columns;
    let values = &c.index.extension_values;
    let with = if values.is_empty() {
        String::new()
    } else {
        format!(
            "WITH ext AS ({}) ",
            insert_ext_values("'User'", "$2", 13, values.len())
        )
    };
    let sql = format!("{with}{INSERT_USER} RETURNING {MANAGER_FOUND}");
    let mut args = row_args(
        ResourceKind::User,
        workspace_id,
        &new.id,
        new.document.to_string(),
        c,
        now,
    );
    push_ext_args(&mut args, values);
    let found: Vec<(bool,)> = postgres_rows(pool, &sql, args).await?;
    let manager = found.first().is_some_and(|(found,)| *found);
    // A new user is in no group yet.
    Ok(created(new, now, Some(Vec::new()), manager))
}

/// The resource a create stored, as the answer shows it.
fn created(
    new: NewResource,
    now: OffsetDateTime,
    refs: Option<Vec<Reference>>,
    manager_found: bool,
) -> Written {
    Written::Done(StoredResource {
        id: new.id,
        document: new.document,
        version: 1,
        created: from_unix(ts(now)),
        last_modified: from_unix(ts(now)),
        refs,
        manager_found,
    })
}

async fn create_in(
    mut tx: WriteTx<'_>,
    workspace_id: i64,
    kind: ResourceKind,
    new: NewResource,
    now: OffsetDateTime,
) -> Result<Written> {
    let tx = &mut tx;
    // A group's members are locked before any unique value is claimed: a membership change
    // locks the group, then its members, then its values (see the top of this file).
    let members = match kind {
        ResourceKind::User => Vec::new(),
        ResourceKind::Group => match member_types(tx, workspace_id, &new.members).await? {
            Ok(m) => m,
            Err(missing) => return Ok(Written::MissingReference(missing)),
        },
    };
    if let Some(value) = taken(tx, workspace_id, kind, &new.id, &new.unique).await? {
        return Ok(Written::Taken(value));
    }
    let document = new.document.to_string();
    let c = &new.columns;
    write_ext_values(
        tx,
        workspace_id,
        kind,
        &new.id,
        &c.index.extension_values,
        true,
    )
    .await?;
    let (refs, manager) = match kind {
        ResourceKind::User => {
            tx.execute(
                INSERT_USER,
                row_args(kind, workspace_id, &new.id, document, c, now),
            )
            .await?;
            // A new user is in no group yet.
            let manager = manager_found(tx, workspace_id, c.manager_id.as_deref()).await?;
            (Some(Vec::new()), manager)
        }
        ResourceKind::Group => {
            tx.execute(
                "INSERT INTO scim_groups (workspace_id, id, document, display,
                   display_name_lower, external_id, version, created_at, last_modified, seq)
                 VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7,
                   (SELECT COALESCE(MAX(seq), 0) + 1 FROM scim_groups WHERE workspace_id = $1))",
                row_args(kind, workspace_id, &new.id, document, c, now),
            )
            .await?;
            let added =
                insert_members(tx, workspace_id, &new.id, &members, &new.member_displays).await?;
            bump_members(tx, workspace_id, &added, now).await?;
            // Read back with their `display` when the answer shows them.
            (None, false)
        }
    };
    Ok(created(new, now, refs, manager))
}

pub(super) async fn update(
    db: &Db,
    workspace_id: i64,
    kind: ResourceKind,
    id: &str,
    edit: Edit,
    now: OffsetDateTime,
) -> Result<Written> {
    if let (Db::Postgres(pool), ResourceKind::User) = (db, kind) {
        let select = select(db, kind, true);
        let tried = update_user_postgres(pool, &select, workspace_id, id, &edit, now).await?;
        if let Some(written) = tried {
            return Ok(written);
        }
    }
    let select = select(db, kind, false);
    let id = id.to_owned();
    db.grouped_write(
        Lane::Bulk,
        Box::new(move |tx: WriteTx<'_>| {
            Box::pin(update_in(tx, select, workspace_id, kind, id, edit, now))
        }),
    )
    .await
}

/// How many times a User's update on Postgres reads and writes without a lock before it takes
/// one (`update_user_postgres`).
const OPTIMISTIC_TRIES: usize = 3;

/// A User's update on Postgres in two round trips and no transaction of ours (issue 18): the
/// user read without a lock, the edit applied, then one statement that writes the row only if
/// its version is still the one read (with its extension values, in CTEs that run only if it
/// did) and answers whether its manager is a User of the workspace. A concurrent write in
/// between makes it read again; after `OPTIMISTIC_TRIES` such races, None: the caller takes the
/// row lock instead (`update_in`). A user has no references to lock: a manager is data as sent.
/// `select` is `scim_read::select` for Users, with references: the answer shows the user's
/// groups as read (a membership change gives the user a new version too, so groups that moved
/// in between make the write race and read again), where the locked path reads them after its
/// commit, a third round trip.
async fn update_user_postgres(
    pool: &PgPool,
    select: &str,
    workspace_id: i64,
    id: &str,
    edit: &Edit,
    now: OffsetDateTime,
) -> Result<Option<Written>> {
    let read = format!("{select} WHERE workspace_id = $1 AND id = $2");
    for _ in 0..OPTIMISTIC_TRIES {
        let row: Option<ResourceRow> = postgres_rows(pool, &read, args![workspace_id, id])
            .await?
            .into_iter()
            .next();
        let Some(row) = row else {
            return Ok(Some(Written::NotFound));
        };
        let current = resource(row, ResourceKind::User, true)?;
        let change = match edited(edit, &current) {
            Ok(Some(change)) => change,
            Ok(None) => return Ok(Some(Written::Done(current))),
            Err(e) => return Ok(Some(Written::Refused(e))),
        };
        if !change.members.is_empty() || !change.unique.is_empty() {
            // Not a user's change: the general path refuses it as it does for any kind. A new
            // declared unique value is checked and claimed inside a transaction (`taken`).
            return Ok(None);
        }
        let values = &change.columns.index.extension_values;
        let changed = ext_values_changed(ResourceKind::User, &current, &change);
        let ext = if changed {
            replace_ext_values_if_written(values.len())
        } else {
            String::new()
        };
        let sql = format!(
            "WITH upd AS ({UPDATE_USER} AND version = $13 RETURNING 1){ext}
             SELECT EXISTS (SELECT 1 FROM upd), {MANAGER_FOUND}"
        );
        let document = change.document.to_string();
        let mut args = row_args(
            ResourceKind::User,
            workspace_id,
            id,
            document,
            &change.columns,
            now,
        );
        args.push(Arg::Int(current.version));
        if changed {
            push_ext_args(&mut args, values);
        }
        let answer: Vec<(bool, bool)> = postgres_rows(pool, &sql, args).await?;
        let Some(&(true, manager_found)) = answer.first() else {
            continue;
        };
        return Ok(Some(updated(current, change.document, now, manager_found)));
    }
    Ok(None)
}

/// The CTEs of `update_user_postgres`'s statement that replace the user's extension values with
/// `n` new ones (their paths and values bound from `$14`), only if `upd` wrote: the rows no
/// longer there go, the new ones come, and the kept ones are left as they are (the DELETE spares
/// them and the INSERT meets them).
fn replace_ext_values_if_written(n: usize) -> String {
    let gone = "DELETE FROM scim_ext_values
       WHERE workspace_id = $1 AND resource_type = 'User' AND resource_id = $2
         AND EXISTS (SELECT 1 FROM upd)";
    if n == 0 {
        return format!(", gone AS ({gone})");
    }
    let list: Vec<String> = (0..n)
        .map(|i| format!("(${}, ${})", 14 + 2 * i, 15 + 2 * i))
        .collect();
    let list = list.join(", ");
    format!(
        ", gone AS ({gone} AND (path, value) NOT IN ({list})),
         ext AS (INSERT INTO scim_ext_values (workspace_id, resource_type, resource_id, path, value)
           SELECT $1, 'User', $2, v.path, v.value FROM (VALUES {list}) AS v(path, value)
           WHERE EXISTS (SELECT 1 FROM upd) ON CONFLICT DO NOTHING)"
    )
}

/// The edit applied to the resource as read: the change to write, None when it changes nothing.
fn edited(edit: &Edit, current: &StoredResource) -> std::result::Result<Option<Change>, ScimError> {
    let change = edit(current)?;
    let unchanged = change.document == current.document && change.members.is_empty();
    Ok((!unchanged).then_some(change))
}

/// Whether the change alters the resource's undeclared extension values (`scim_ext_values`).
fn ext_values_changed(kind: ResourceKind, current: &StoredResource, change: &Change) -> bool {
    change.columns.index.extension_values
        != index_columns(&current.document, kind.resource_type()).extension_values
}

/// The resource an update stored, as the answer shows it: the next version of `current`, with
/// the references it was read with.
fn updated(
    current: StoredResource,
    document: serde_json::Value,
    now: OffsetDateTime,
    manager_found: bool,
) -> Written {
    Written::Done(StoredResource {
        id: current.id,
        document,
        version: current.version + 1,
        created: current.created,
        last_modified: from_unix(ts(now)),
        refs: current.refs,
        manager_found,
    })
}

/// `update`'s statements; `select` is `scim_read::select` for the kind, without references.
async fn update_in(
    mut tx: WriteTx<'_>,
    select: String,
    workspace_id: i64,
    kind: ResourceKind,
    id: String,
    edit: Edit,
    now: OffsetDateTime,
) -> Result<Written> {
    let tx = &mut tx;
    let id = id.as_str();
    let sql = format!(
        "{select} WHERE workspace_id = $1 AND id = $2{}",
        tx.row_lock(" FOR UPDATE")
    );
    let row: Option<ResourceRow> = tx
        .optional(&sql, args![workspace_id, id], ResourceRow::from_reader)
        .await?;
    let Some(row) = row else {
        return Ok(Written::NotFound);
    };
    let current = resource(row, kind, false)?;
    let change = match edited(&edit, &current) {
        Ok(Some(change)) => change,
        Ok(None) => return Ok(Written::Done(current)),
        Err(e) => return Ok(Written::Refused(e)),
    };
    let added: Vec<String> = change.members.added_ids().map(str::to_owned).collect();
    let added = match member_types(tx, workspace_id, &added).await? {
        Ok(m) => m,
        Err(missing) => return Ok(Written::MissingReference(missing)),
    };
    if let Some(value) = taken(tx, workspace_id, kind, id, &change.unique).await? {
        return Ok(Written::Taken(value));
    }
    // The membership first: an `add` of members already there, or a `remove` of members who
    // are not, changes nothing and makes no new version (RFC 7644 §3.5.2.1: such an add "SHALL
    // NOT change the modify timestamp"; Okta re-pushes a group's members that way).
    let delta = &change.members;
    let mut removed: Vec<String> = Vec::new();
    if delta.replace_all.is_some() {
        let gone: Vec<(String,)> = tx
            .rows(
                "DELETE FROM scim_group_members WHERE workspace_id = $1 AND group_id = $2
                 RETURNING member_id",
                args![workspace_id, id],
                |r| Ok((r.get(0)?,)),
            )
            .await?;
        removed.extend(gone.into_iter().map(|(member,)| member));
    }
    if delta.remove.is_empty() {
    } else if let Some(c) = tx.postgres() {
        let gone: Vec<String> = sqlx::query_scalar(
            "DELETE FROM scim_group_members
             WHERE workspace_id = $1 AND group_id = $2 AND member_id = ANY($3)
             RETURNING member_id",
        )
        .bind(workspace_id)
        .bind(id)
        .bind(&delta.remove)
        .fetch_all(c)
        .await?;
        removed.extend(gone);
    } else {
        for member in &delta.remove {
            let gone = tx
                .execute(
                    "DELETE FROM scim_group_members
                     WHERE workspace_id = $1 AND group_id = $2 AND member_id = $3",
                    args![workspace_id, id, member],
                )
                .await?;
            if gone > 0 {
                removed.push(member.clone());
            }
        }
    }
    let inserted = insert_members(tx, workspace_id, id, &added, &delta.displays).await?;
    if removed.is_empty() && inserted.is_empty() && change.document == current.document {
        return Ok(Written::Done(current));
    }
    let document = change.document.to_string();
    write_row(tx, workspace_id, kind, id, document, &change.columns, now).await?;
    bump_members(tx, workspace_id, &moved_members(removed, inserted), now).await?;
    if ext_values_changed(kind, &current, &change) {
        write_ext_values(
            tx,
            workspace_id,
            kind,
            id,
            &change.columns.index.extension_values,
            false,
        )
        .await?;
    }
    let manager = manager_found(tx, workspace_id, change.columns.manager_id.as_deref()).await?;
    // Read without references: the service reads them after the commit.
    Ok(updated(current, change.document, now, manager))
}

pub(super) async fn delete(
    db: &Db,
    workspace_id: i64,
    kind: ResourceKind,
    id: &str,
    expected_version: Option<i64>,
    now: OffsetDateTime,
) -> Result<Deleted> {
    let id = id.to_owned();
    db.grouped_write(
        Lane::Bulk,
        Box::new(move |tx: WriteTx<'_>| {
            Box::pin(delete_in(tx, workspace_id, kind, id, expected_version, now))
        }),
    )
    .await
}

async fn delete_in(
    mut tx: WriteTx<'_>,
    workspace_id: i64,
    kind: ResourceKind,
    id: String,
    expected_version: Option<i64>,
    now: OffsetDateTime,
) -> Result<Deleted> {
    let id = id.as_str();
    // The groups that list it change: lock them first (a membership change locks the group,
    // then the member), and give them a new version.
    tx.execute(
        "UPDATE scim_groups SET version = version + 1, last_modified = $3
         WHERE workspace_id = $1 AND id IN
           (SELECT group_id FROM scim_group_members WHERE workspace_id = $1 AND member_id = $2)",
        args![workspace_id, id, ts(now)],
    )
    .await?;
    let sql = format!(
        "SELECT version FROM {} WHERE workspace_id = $1 AND id = $2{}",
        table(kind),
        tx.row_lock(" FOR UPDATE")
    );
    let version: Option<(i64,)> = tx
        .optional(&sql, args![workspace_id, id], |r| Ok((r.get(0)?,)))
        .await?;
    // Returning ends the write without `Done`: rolled back, the groups keep their versions.
    let Some((version,)) = version else {
        return Ok(Deleted::NotFound);
    };
    if expected_version.is_some_and(|v| v != version) {
        return Ok(Deleted::VersionMismatch);
    }
    if kind == ResourceKind::Group {
        // Its members leave it (the memberships go with the row, ON DELETE CASCADE).
        let members: Vec<(String,)> = tx
            .rows(
                "SELECT member_id FROM scim_group_members WHERE workspace_id = $1 AND group_id = $2",
                args![workspace_id, id],
                |r| Ok((r.get(0)?,)),
            )
            .await?;
        let members: Vec<String> = members.into_iter().map(|(m,)| m).collect();
        bump_members(&mut tx, workspace_id, &members, now).await?;
    }
    let sql = format!(
        "DELETE FROM {} WHERE workspace_id = $1 AND id = $2",
        table(kind)
    );
    tx.execute(&sql, args![workspace_id, id]).await?;
    write_ext_values(&mut tx, workspace_id, kind, id, &[], false).await?;
    // (On Postgres, memberships added while this waited for the lock are visible here.)
    tx.execute(
        "DELETE FROM scim_group_members WHERE workspace_id = $1 AND member_id = $2",
        args![workspace_id, id],
    )
    .await?;
    Ok(Deleted::Done)
}
