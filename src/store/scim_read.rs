//! `ScimStore`'s reads of Users, Groups and memberships (migrations/*/0002_scim.sql), and the row
//! shape and SQL that its writes (`scim_write.rs`) share.

use sqlx::FromRow;

use super::db::{placeholders, Db};
use super::readers::Arg;
use super::scim::{Link, Rows, StoredResource};
use super::{Result, StoreError};
use crate::clock::from_unix;
use crate::scim::resource::Reference;
use crate::scim::schema::ResourceKind;
use crate::scim::sql::{SortColumn, SqlBind, SqlPlan};

/// Ids per `IN (…)` list on SQLite, well under its limit of bound parameters.
pub(super) const IN_CHUNK: usize = 500;

#[derive(FromRow)]
pub(super) struct ResourceRow {
    id: String,
    document: String,
    version: i64,
    created_at: i64,
    last_modified: i64,
    /// Only when the read asked for them (`select`).
    #[sqlx(default)]
    refs: Option<String>,
    manager_found: bool,
}

pub(super) fn resource(row: ResourceRow, kind: ResourceKind, refs: bool) -> Result<StoredResource> {
    let document = serde_json::from_str(&row.document)
        .map_err(|e| StoreError::Unavailable(format!("a stored SCIM document is not JSON: {e}")))?;
    Ok(StoredResource {
        id: row.id,
        document,
        version: row.version,
        created: from_unix(row.created_at),
        last_modified: from_unix(row.last_modified),
        refs: if refs {
            Some(parse_refs(kind, row.refs.as_deref())?)
        } else {
            None
        },
        manager_found: row.manager_found,
    })
}

/// The SQL table of a resource kind.
pub(super) fn table(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::User => "scim_users",
        ResourceKind::Group => "scim_groups",
    }
}

/// A resource's members (Groups) or groups (Users) as one JSON column of its row, so a read that
/// shows them costs no second query: `[[id, display, type], …]` (a group's own `groups` need no
/// type), or NULL (Postgres) when there are none (see `parse_refs`). A member's display is the one
/// sent with it, else the user's or group's `display` column.
fn refs_column(db: &Db, kind: ResourceKind) -> String {
    let (open, close) = match db {
        Db::Sqlite { .. } => ("json_group_array(json_array(", "))"),
        Db::Postgres(_) => ("json_agg(json_build_array(", "))::text"),
    };
    match kind {
        ResourceKind::User => format!(
            "(SELECT {open}m.group_id, g.display{close}
              FROM scim_group_members m
              JOIN scim_groups g ON g.workspace_id = m.workspace_id AND g.id = m.group_id
              WHERE m.workspace_id = t.workspace_id AND m.member_id = t.id)"
        ),
        ResourceKind::Group => format!(
            "(SELECT {open}m.member_id, COALESCE(m.display, mu.display, mg.display), m.member_type{close}
              FROM scim_group_members m
              LEFT JOIN scim_users mu ON m.member_type = 'User'
                AND mu.workspace_id = m.workspace_id AND mu.id = m.member_id
              LEFT JOIN scim_groups mg ON m.member_type = 'Group'
                AND mg.workspace_id = m.workspace_id AND mg.id = m.member_id
              WHERE m.workspace_id = t.workspace_id AND m.group_id = t.id)"
        ),
    }
}

/// `SELECT … FROM <table> t`, with the `refs` column when asked, and whether a User's manager
/// names a User of the workspace (by the unique index, one probe a row).
pub(super) fn select(db: &Db, kind: ResourceKind, refs: bool) -> String {
    let refs = if refs {
        format!(", {} AS refs", refs_column(db, kind))
    } else {
        String::new()
    };
    let manager = match kind {
        ResourceKind::User => {
            "EXISTS (SELECT 1 FROM scim_users mgr
               WHERE mgr.workspace_id = t.workspace_id AND mgr.id = t.manager_id)"
        }
        ResourceKind::Group => "1 = 0",
    };
    format!(
        "SELECT t.id, t.document, t.version, t.created_at, t.last_modified,
           {manager} AS manager_found{refs} FROM {} t",
        table(kind)
    )
}

/// The references of a `refs` column, sorted by id.
fn parse_refs(kind: ResourceKind, text: Option<&str>) -> Result<Vec<Reference>> {
    let rows: Vec<Vec<Option<String>>> = match text {
        None => Vec::new(),
        Some(t) => serde_json::from_str(t)
            .map_err(|e| StoreError::Unavailable(format!("references are not JSON: {e}")))?,
    };
    let mut refs: Vec<Reference> = rows
        .into_iter()
        .filter_map(|row| {
            let mut row = row.into_iter();
            let id = row.next().flatten()?;
            let display = row.next().flatten();
            Some(Reference {
                id,
                kind: match kind {
                    ResourceKind::Group => {
                        kind_of(row.next().flatten().as_deref().unwrap_or("User"))
                    }
                    ResourceKind::User => ResourceKind::Group,
                },
                display,
            })
        })
        .collect();
    refs.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(refs)
}

pub(super) fn kind_of(name: &str) -> ResourceKind {
    if name == "Group" {
        ResourceKind::Group
    } else {
        ResourceKind::User
    }
}

/// `WHERE t.workspace_id = $1 [AND (plan)]`, and the next free placeholder number. The plan is
/// one statement; SQLite's carries a planner hint (`SqlPlan::sqlite_where_sql`).
fn where_clause(db: &Db, filter: Option<&SqlPlan>) -> (String, usize) {
    match filter {
        None => (" WHERE t.workspace_id = $1".to_owned(), 2),
        Some(p) => {
            let plan = match db {
                Db::Sqlite { .. } => p.numbered_sqlite(2),
                Db::Postgres(_) => p.numbered(2),
            };
            (
                format!(" WHERE t.workspace_id = $1 AND ({plan})"),
                2 + p.binds.len(),
            )
        }
    }
}

/// `$1` (the workspace) and the plan's values after it.
fn plan_args(workspace_id: i64, plan: Option<&SqlPlan>) -> Vec<Arg> {
    let mut args = vec![Arg::Int(workspace_id)];
    args.extend(plan.into_iter().flat_map(|p| &p.binds).map(|b| match b {
        SqlBind::Text(s) => Arg::Text(s.clone()),
        SqlBind::Bool(v) => Arg::Bool(*v),
        SqlBind::Workspace => Arg::Int(workspace_id),
    }));
    args
}

impl ResourceRow {
    /// A row of `select`, read by a SQLite reader (the column order is `select`'s).
    pub(super) fn from_reader(r: &rusqlite::Row<'_>) -> rusqlite::Result<ResourceRow> {
        Ok(ResourceRow {
            id: r.get(0)?,
            document: r.get(1)?,
            version: r.get(2)?,
            created_at: r.get(3)?,
            last_modified: r.get(4)?,
            manager_found: r.get(5)?,
            refs: if r.as_ref().column_count() > 6 {
                r.get(6)?
            } else {
                None
            },
        })
    }
}

/// The rows of a `select` statement (`Db::hot_rows`).
async fn resource_rows(db: &Db, sql: String, args: Vec<Arg>) -> Result<Vec<ResourceRow>> {
    db.hot_rows(sql, args, ResourceRow::from_reader).await
}

/// `ORDER BY` for a page: the sort column (nulls last when ascending, as `Sort::compare`), then id.
/// Text columns compare by code point as in Rust: SQLite's default BINARY collation does, and the
/// Postgres tables declare their text columns `COLLATE "C"`.
///
/// Without a sort, the order of creation (`seq`, migrations/*/0008): a resource created while a
/// client pages through a listing comes after the rows it already read (issue 15, Okta's import).
fn order_by(sort: Option<SortColumn>) -> String {
    match sort {
        None => " ORDER BY seq, id".to_owned(),
        Some(SortColumn {
            column,
            descending: false,
        }) => format!(" ORDER BY {column} ASC NULLS LAST, id ASC"),
        Some(SortColumn {
            column,
            descending: true,
        }) => format!(" ORDER BY {column} DESC NULLS FIRST, id DESC"),
    }
}

/// Whether the rows of a page tell the total without counting: a page that is not full and not
/// past the end ends the matches.
fn total_from_page(offset: u64, limit: u64, got: usize) -> Option<u64> {
    let got = got as u64;
    (got < limit && (got > 0 || offset == 0)).then_some(offset + got)
}

pub(super) async fn get(
    db: &Db,
    workspace_id: i64,
    kind: ResourceKind,
    id: &str,
    refs: bool,
) -> Result<Option<StoredResource>> {
    let sql = format!(
        "{} WHERE workspace_id = $1 AND id = $2",
        select(db, kind, refs)
    );
    let args = vec![Arg::Int(workspace_id), Arg::Text(id.to_owned())];
    let row = db.hot_row(sql, args, ResourceRow::from_reader).await?;
    row.map(|row| resource(row, kind, refs)).transpose()
}

pub(super) async fn scan(
    db: &Db,
    workspace_id: i64,
    kind: ResourceKind,
    filter: Option<&SqlPlan>,
    after: Option<&str>,
    limit: u32,
    refs: bool,
) -> Result<Rows> {
    let (mut where_sql, mut next) = where_clause(db, filter);
    if after.is_some() {
        where_sql.push_str(&format!(" AND t.id > ${next}"));
        next += 1;
    }
    let sql = format!(
        "{}{where_sql} ORDER BY t.id LIMIT ${next}",
        select(db, kind, refs)
    );
    let mut args = plan_args(workspace_id, filter);
    args.extend(after.map(|a| Arg::Text(a.to_owned())));
    args.push(Arg::Int(i64::from(limit)));
    let resources = resource_rows(db, sql, args)
        .await?
        .into_iter()
        .map(|row| resource(row, kind, refs))
        .collect::<Result<Vec<_>>>()?;
    Ok(Rows {
        total: resources.len() as u64,
        resources,
    })
}

/// The statement of one page: `$1` the workspace, the plan's binds, then LIMIT and OFFSET.
fn page_statement(
    db: &Db,
    kind: ResourceKind,
    filter: Option<&SqlPlan>,
    sort: Option<SortColumn>,
    refs: bool,
) -> String {
    let (where_sql, next) = where_clause(db, filter);
    format!(
        "{}{where_sql}{} LIMIT ${} OFFSET ${}",
        select(db, kind, refs),
        order_by(sort),
        next,
        next + 1
    )
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn page(
    db: &Db,
    workspace_id: i64,
    kind: ResourceKind,
    filter: Option<&SqlPlan>,
    sort: Option<SortColumn>,
    offset: u64,
    limit: u64,
    refs: bool,
) -> Result<Rows> {
    let (where_sql, _) = where_clause(db, filter);
    let resources = if limit == 0 {
        Vec::new()
    } else {
        let sql = page_statement(db, kind, filter, sort, refs);
        let mut args = plan_args(workspace_id, filter);
        args.push(Arg::Int(limit.min(i64::MAX as u64) as i64));
        args.push(Arg::Int(offset.min(i64::MAX as u64) as i64));
        resource_rows(db, sql, args)
            .await?
            .into_iter()
            .map(|row| resource(row, kind, refs))
            .collect::<Result<Vec<_>>>()?
    };
    let total = match total_from_page(offset, limit, resources.len()) {
        Some(t) => t,
        None => {
            let sql = format!("SELECT COUNT(*) FROM {} t{where_sql}", table(kind));
            let args = plan_args(workspace_id, filter);
            let counted: Vec<(i64,)> = db.hot_rows(sql, args, |r| Ok((r.get(0)?,))).await?;
            counted.first().map_or(0, |(n,)| *n) as u64
        }
    };
    Ok(Rows { resources, total })
}

pub(super) async fn refs_of(
    db: &Db,
    workspace_id: i64,
    kind: ResourceKind,
    ids: &[String],
) -> Result<Vec<Link>> {
    let column = refs_column(db, kind);
    let mut rows: Vec<(String, Option<String>)> = Vec::new();
    match db {
        Db::Postgres(_) if ids.is_empty() => {}
        Db::Postgres(c) => {
            let sql = format!(
                "SELECT t.id, {column} AS refs FROM {} t WHERE t.workspace_id = $1 AND t.id = ANY($2)",
                table(kind)
            );
            rows = sqlx::query_as(&sql)
                .bind(workspace_id)
                .bind(ids)
                .fetch_all(c)
                .await?;
        }
        // No arrays: the ids in lists of placeholders.
        Db::Sqlite { readers, .. } => {
            for chunk in ids.chunks(IN_CHUNK) {
                let sql = format!(
                    "SELECT t.id, {column} AS refs FROM {} t WHERE t.workspace_id = $1 AND t.id IN ({})",
                    table(kind),
                    placeholders(2, chunk.len())
                );
                let mut args = vec![Arg::Int(workspace_id)];
                args.extend(chunk.iter().map(|id| Arg::Text(id.clone())));
                rows.extend(
                    readers
                        .rows(sql, args, |r| Ok((r.get(0)?, r.get(1)?)))
                        .await?,
                );
            }
        }
    }
    let mut out = Vec::new();
    for (from, refs) in rows {
        for to in parse_refs(kind, refs.as_deref())? {
            out.push(Link {
                from: from.clone(),
                to,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;
    use crate::scim::eval::compile;
    use crate::scim::sql::plan;
    use crate::store::test_db::TestDb;

    /// What SQLite does with a page filtered on an undeclared extension's attribute: the
    /// subquery by the side table's key, then each row by `(workspace_id, id)`; never a walk of
    /// the workspace. (Postgres turns the `IN` into a semi-join by its statistics.)
    #[tokio::test]
    async fn an_extension_eq_is_answered_by_indexes_on_sqlite() {
        let test = TestDb::sqlite().await;
        let db = Db::open(&test.config(&[]).database).await.unwrap();
        let f = compile(
            "urn:ietf:params:scim:schemas:extension:acme:2.0:User:cost eq \"CC-1\"",
            ResourceKind::User.resource_type(),
        )
        .unwrap();
        let p = plan(&f, ResourceKind::User).unwrap();
        assert!(p.exact);
        let sql = page_statement(&db, ResourceKind::User, Some(&p), None, false);
        let mut conn = sqlx::SqliteConnection::connect(&test.url).await.unwrap();
        let rows: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                .fetch_all(&mut conn)
                .await
                .unwrap();
        let plan: Vec<&str> = rows.iter().map(|r| r.3.as_str()).collect();
        assert!(
            plan.iter().any(
                |l| l.starts_with("SEARCH t USING") && l.ends_with("(workspace_id=? AND id=?)")
            ),
            "{plan:?}"
        );
        assert!(
            plan.iter()
                .any(|l| l.starts_with("SEARCH e USING PRIMARY KEY")),
            "{plan:?}"
        );
    }
}
