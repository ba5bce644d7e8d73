//! `ScimStore` on the embedded SQLite database (migrations/sqlite/0002_scim.sql), sharing the two
//! pools of `SqliteStore`: writes queue on its single writing connection, reads run on its
//! read-only ones.
//!
//! Every write is one `BEGIN IMMEDIATE` transaction: it takes SQLite's write lock before it reads
//! anything, so the read-check-write inside (a PATCH on the current document, a member's existence)
//! sees no other writer, even one from another process (the CLI) waiting on the busy timeout.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::sqlite::{Sqlite, SqliteArguments, SqliteRow};
use sqlx::{Row, SqliteConnection, SqlitePool};
use time::OffsetDateTime;

use super::scim::*;
use super::{Result, StoreError};
use crate::clock::from_unix;
use crate::scim::schema::ResourceKind;
use crate::scim::sql::{SortColumn, SqlBind, SqlPlan};

pub struct SqliteScimStore {
    /// `SqliteStore::pool`: the writing connection.
    pool: SqlitePool,
    /// `SqliteStore::read_pool`.
    read: SqlitePool,
}

impl SqliteScimStore {
    pub fn new(pool: SqlitePool, read: SqlitePool) -> Self {
        Self { pool, read }
    }
}

type Query<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>;

fn unavailable(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() {
            return StoreError::Conflict;
        }
    }
    StoreError::Unavailable(e.to_string())
}

fn ts(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

/// A resource's members (Groups) or groups (Users) as one JSON column of its row, so a read that
/// shows them costs no second query (see `parse_refs`).
fn refs_column(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::User => {
            "(SELECT json_group_array(json_array(m.group_id, g.display))
              FROM scim_group_members m
              JOIN scim_groups g ON g.workspace_id = m.workspace_id AND g.id = m.group_id
              WHERE m.workspace_id = t.workspace_id AND m.member_id = t.id)"
        }
        ResourceKind::Group => {
            "(SELECT json_group_array(json_array(m.member_id, m.member_type))
              FROM scim_group_members m
              WHERE m.workspace_id = t.workspace_id AND m.group_id = t.id)"
        }
    }
}

/// `SELECT … FROM <table> t`, with the `refs` column when asked.
fn select(kind: ResourceKind, refs: bool) -> String {
    let refs = if refs {
        format!(", {} AS refs", refs_column(kind))
    } else {
        String::new()
    };
    format!(
        "SELECT t.id, t.document, t.version, t.created_at, t.last_modified{refs} FROM {} t",
        table(kind)
    )
}

fn resource(row: &SqliteRow, kind: ResourceKind, refs: bool) -> Result<StoredResource> {
    let document = serde_json::from_str(row.get::<&str, _>("document"))
        .map_err(|e| StoreError::Unavailable(format!("a stored SCIM document is not JSON: {e}")))?;
    Ok(StoredResource {
        id: row.get("id"),
        document,
        version: row.get("version"),
        created: from_unix(row.get("created_at")),
        last_modified: from_unix(row.get("last_modified")),
        refs: if refs {
            Some(parse_refs(kind, row.get("refs"))?)
        } else {
            None
        },
    })
}

fn bind_plan<'q>(mut q: Query<'q>, plan: Option<&'q SqlPlan>) -> Query<'q> {
    for b in plan.into_iter().flat_map(|p| &p.binds) {
        q = match b {
            SqlBind::Text(s) => q.bind(s.as_str()),
            SqlBind::Bool(v) => q.bind(*v),
        };
    }
    q
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// The kind of each id that names a resource of the workspace; Err with the first that does not.
async fn member_types(
    conn: &mut SqliteConnection,
    workspace_id: i64,
    ids: &[String],
) -> Result<std::result::Result<Vec<(String, ResourceKind)>, String>> {
    let mut found: HashMap<String, ResourceKind> = HashMap::new();
    for chunk in ids.chunks(IN_CHUNK) {
        let list = placeholders(chunk.len());
        let sql = format!(
            "SELECT id, 'User' AS t FROM scim_users WHERE workspace_id = ? AND id IN ({list})
             UNION ALL SELECT id, 'Group' AS t FROM scim_groups WHERE workspace_id = ? AND id IN ({list})"
        );
        let mut q = sqlx::query(&sql).bind(workspace_id);
        for id in chunk {
            q = q.bind(id);
        }
        q = q.bind(workspace_id);
        for id in chunk {
            q = q.bind(id);
        }
        for row in q.fetch_all(&mut *conn).await.map_err(unavailable)? {
            found.insert(row.get("id"), kind_of(row.get::<&str, _>("t")));
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

async fn user_exists(conn: &mut SqliteConnection, workspace_id: i64, id: &str) -> Result<bool> {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM scim_users WHERE workspace_id = ? AND id = ?")
            .bind(workspace_id)
            .bind(id)
            .fetch_one(&mut *conn)
            .await
            .map_err(unavailable)?;
    Ok(n > 0)
}

async fn insert_members(
    conn: &mut SqliteConnection,
    workspace_id: i64,
    group_id: &str,
    members: &[(String, ResourceKind)],
) -> Result<()> {
    for (id, kind) in members {
        sqlx::query(
            "INSERT INTO scim_group_members (workspace_id, group_id, member_id, member_type)
             VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(workspace_id)
        .bind(group_id)
        .bind(id)
        .bind(kind_name(*kind))
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
    }
    Ok(())
}

/// Writes the document and columns of an existing row, with a new version.
async fn write_row(
    conn: &mut SqliteConnection,
    workspace_id: i64,
    kind: ResourceKind,
    id: &str,
    document: &str,
    c: &Columns,
    now: OffsetDateTime,
) -> Result<()> {
    let q = match kind {
        ResourceKind::User => sqlx::query(
            "UPDATE scim_users SET document = ?, user_name_lower = ?, external_id = ?,
               display_name_lower = ?, work_email_lower = ?, email_overflow = ?, active = ?,
               manager_id = ?, version = version + 1, last_modified = ?
             WHERE workspace_id = ? AND id = ?",
        )
        .bind(document)
        .bind(&c.index.user_name_lower)
        .bind(&c.index.external_id)
        .bind(&c.index.display_name_lower)
        .bind(&c.index.work_email_lower)
        .bind(c.index.email_overflow)
        .bind(c.index.active)
        .bind(&c.manager_id),
        ResourceKind::Group => sqlx::query(
            "UPDATE scim_groups SET document = ?, display = ?, display_name_lower = ?,
               external_id = ?, version = version + 1, last_modified = ?
             WHERE workspace_id = ? AND id = ?",
        )
        .bind(document)
        .bind(&c.display)
        .bind(&c.index.display_name_lower)
        .bind(&c.index.external_id),
    };
    q.bind(ts(now))
        .bind(workspace_id)
        .bind(id)
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
    Ok(())
}

fn to_json(document: &serde_json::Value) -> String {
    document.to_string()
}

#[async_trait]
impl ScimStore for SqliteScimStore {
    async fn create(
        &self,
        workspace_id: i64,
        kind: ResourceKind,
        new: NewResource,
        now: OffsetDateTime,
    ) -> Result<Written> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)?;
        let document = to_json(&new.document);
        let c = &new.columns;
        let refs = match kind {
            ResourceKind::User => {
                if let Some(manager) = &c.manager_id {
                    if !user_exists(&mut tx, workspace_id, manager).await? {
                        return Ok(Written::MissingReference(manager.clone()));
                    }
                }
                sqlx::query(
                    "INSERT INTO scim_users (workspace_id, id, document, user_name_lower,
                       external_id, display_name_lower, work_email_lower, email_overflow, active,
                       manager_id, version, created_at, last_modified)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
                )
                .bind(workspace_id)
                .bind(&new.id)
                .bind(&document)
                .bind(&c.index.user_name_lower)
                .bind(&c.index.external_id)
                .bind(&c.index.display_name_lower)
                .bind(&c.index.work_email_lower)
                .bind(c.index.email_overflow)
                .bind(c.index.active)
                .bind(&c.manager_id)
                .bind(ts(now))
                .bind(ts(now))
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
                // A new user is in no group yet.
                Vec::new()
            }
            ResourceKind::Group => {
                let members = match member_types(&mut tx, workspace_id, &new.members).await? {
                    Ok(m) => m,
                    Err(missing) => return Ok(Written::MissingReference(missing)),
                };
                sqlx::query(
                    "INSERT INTO scim_groups (workspace_id, id, document, display,
                       display_name_lower, external_id, version, created_at, last_modified)
                     VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)",
                )
                .bind(workspace_id)
                .bind(&new.id)
                .bind(&document)
                .bind(&c.display)
                .bind(&c.index.display_name_lower)
                .bind(&c.index.external_id)
                .bind(ts(now))
                .bind(ts(now))
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
                insert_members(&mut tx, workspace_id, &new.id, &members).await?;
                members_as_refs(members)
            }
        };
        tx.commit().await.map_err(unavailable)?;
        Ok(Written::Done(StoredResource {
            id: new.id,
            document: new.document,
            version: 1,
            created: from_unix(ts(now)),
            last_modified: from_unix(ts(now)),
            refs: Some(refs),
        }))
    }

    async fn get(
        &self,
        workspace_id: i64,
        kind: ResourceKind,
        id: &str,
        refs: bool,
    ) -> Result<Option<StoredResource>> {
        let sql = format!("{} WHERE workspace_id = ? AND id = ?", select(kind, refs));
        sqlx::query(&sql)
            .bind(workspace_id)
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .map_err(unavailable)?
            .map(|row| resource(&row, kind, refs))
            .transpose()
    }

    async fn update(
        &self,
        workspace_id: i64,
        kind: ResourceKind,
        id: &str,
        edit: Edit,
        now: OffsetDateTime,
    ) -> Result<Written> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)?;
        let sql = format!("{} WHERE workspace_id = ? AND id = ?", select(kind, false));
        let Some(row) = sqlx::query(&sql)
            .bind(workspace_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
        else {
            return Ok(Written::NotFound);
        };
        let current = resource(&row, kind, false)?;
        let change = match edit(&current) {
            Ok(c) => c,
            Err(e) => return Ok(Written::Refused(e)),
        };
        if change.document == current.document && change.members.is_empty() {
            return Ok(Written::Done(current));
        }
        if let Some(manager) = &change.columns.manager_id {
            if !user_exists(&mut tx, workspace_id, manager).await? {
                return Ok(Written::MissingReference(manager.clone()));
            }
        }
        let added: Vec<String> = change.members.added_ids().map(str::to_owned).collect();
        let added = match member_types(&mut tx, workspace_id, &added).await? {
            Ok(m) => m,
            Err(missing) => return Ok(Written::MissingReference(missing)),
        };
        write_row(
            &mut tx,
            workspace_id,
            kind,
            id,
            &to_json(&change.document),
            &change.columns,
            now,
        )
        .await?;
        let delta = &change.members;
        if delta.replace_all.is_some() {
            sqlx::query("DELETE FROM scim_group_members WHERE workspace_id = ? AND group_id = ?")
                .bind(workspace_id)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        for member in &delta.remove {
            sqlx::query(
                "DELETE FROM scim_group_members WHERE workspace_id = ? AND group_id = ? AND member_id = ?",
            )
            .bind(workspace_id)
            .bind(id)
            .bind(member)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        insert_members(&mut tx, workspace_id, id, &added).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Written::Done(StoredResource {
            id: current.id,
            document: change.document,
            version: current.version + 1,
            created: current.created,
            last_modified: from_unix(ts(now)),
            refs: None,
        }))
    }

    async fn delete(
        &self,
        workspace_id: i64,
        kind: ResourceKind,
        id: &str,
        expected_version: Option<i64>,
        now: OffsetDateTime,
    ) -> Result<Deleted> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)?;
        let sql = format!(
            "SELECT version FROM {} WHERE workspace_id = ? AND id = ?",
            table(kind)
        );
        let version: Option<i64> = sqlx::query_scalar(&sql)
            .bind(workspace_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
        let Some(version) = version else {
            return Ok(Deleted::NotFound);
        };
        if expected_version.is_some_and(|v| v != version) {
            return Ok(Deleted::VersionMismatch);
        }
        let sql = format!(
            "DELETE FROM {} WHERE workspace_id = ? AND id = ?",
            table(kind)
        );
        sqlx::query(&sql)
            .bind(workspace_id)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        // Its memberships: the groups that listed it change, so they get a new version.
        sqlx::query(
            "UPDATE scim_groups SET version = version + 1, last_modified = ?
             WHERE workspace_id = ? AND id IN
               (SELECT group_id FROM scim_group_members WHERE workspace_id = ? AND member_id = ?)",
        )
        .bind(ts(now))
        .bind(workspace_id)
        .bind(workspace_id)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        sqlx::query("DELETE FROM scim_group_members WHERE workspace_id = ? AND member_id = ?")
            .bind(workspace_id)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        if kind == ResourceKind::User {
            let managed = sqlx::query(
                "SELECT id, document FROM scim_users WHERE workspace_id = ? AND manager_id = ?",
            )
            .bind(workspace_id)
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
            for row in managed {
                let doc: serde_json::Value =
                    serde_json::from_str(row.get::<&str, _>("document")).unwrap_or_default();
                let document = without_manager(&doc).unwrap_or(doc);
                sqlx::query(
                    "UPDATE scim_users SET document = ?, manager_id = NULL, version = version + 1,
                       last_modified = ? WHERE workspace_id = ? AND id = ?",
                )
                .bind(to_json(&document))
                .bind(ts(now))
                .bind(workspace_id)
                .bind(row.get::<&str, _>("id"))
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            }
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(Deleted::Done)
    }

    async fn scan(
        &self,
        workspace_id: i64,
        kind: ResourceKind,
        filter: Option<&SqlPlan>,
        after: Option<&str>,
        limit: u32,
        refs: bool,
    ) -> Result<Rows> {
        let mut sql = format!("{} WHERE workspace_id = ?", select(kind, refs));
        if let Some(p) = filter {
            sql.push_str(&format!(" AND ({})", p.where_sql));
        }
        if after.is_some() {
            sql.push_str(" AND id > ?");
        }
        sql.push_str(" ORDER BY id LIMIT ?");
        let mut q = bind_plan(sqlx::query(&sql).bind(workspace_id), filter);
        if let Some(a) = after {
            q = q.bind(a);
        }
        let rows = q
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await
            .map_err(unavailable)?;
        let resources = rows
            .iter()
            .map(|row| resource(row, kind, refs))
            .collect::<Result<Vec<_>>>()?;
        Ok(Rows {
            total: resources.len() as u64,
            resources,
        })
    }

    async fn page(
        &self,
        workspace_id: i64,
        kind: ResourceKind,
        filter: Option<&SqlPlan>,
        sort: Option<SortColumn>,
        offset: u64,
        limit: u64,
        refs: bool,
    ) -> Result<Rows> {
        let mut where_sql = " WHERE workspace_id = ?".to_owned();
        if let Some(p) = filter {
            where_sql.push_str(&format!(" AND ({})", p.where_sql));
        }
        let resources = if limit == 0 {
            Vec::new()
        } else {
            let sql = format!(
                "{}{where_sql}{} LIMIT ? OFFSET ?",
                select(kind, refs),
                order_by(sort)
            );
            let rows = bind_plan(sqlx::query(&sql).bind(workspace_id), filter)
                .bind(limit.min(i64::MAX as u64) as i64)
                .bind(offset.min(i64::MAX as u64) as i64)
                .fetch_all(&self.read)
                .await
                .map_err(unavailable)?;
            rows.iter()
                .map(|row| resource(row, kind, refs))
                .collect::<Result<Vec<_>>>()?
        };
        let total = match total_from_page(offset, limit, resources.len()) {
            Some(t) => t,
            None => {
                let sql = format!("SELECT COUNT(*) FROM {}{where_sql}", table(kind));
                let mut q = sqlx::query_scalar::<_, i64>(&sql).bind(workspace_id);
                for b in filter.into_iter().flat_map(|p| &p.binds) {
                    q = match b {
                        SqlBind::Text(s) => q.bind(s.as_str()),
                        SqlBind::Bool(v) => q.bind(*v),
                    };
                }
                q.fetch_one(&self.read).await.map_err(unavailable)? as u64
            }
        };
        Ok(Rows { resources, total })
    }

    async fn refs_of(
        &self,
        workspace_id: i64,
        kind: ResourceKind,
        ids: &[String],
    ) -> Result<Vec<Link>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT t.id, {} AS refs FROM {} t WHERE t.workspace_id = ? AND t.id IN ({})",
                refs_column(kind),
                table(kind),
                placeholders(chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(workspace_id);
            for id in chunk {
                q = q.bind(id);
            }
            for row in q.fetch_all(&self.read).await.map_err(unavailable)? {
                let from: String = row.get("id");
                for to in parse_refs(kind, row.get("refs"))? {
                    out.push(Link {
                        from: from.clone(),
                        to,
                    });
                }
            }
        }
        Ok(out)
    }

    async fn append_log(&self, records: &[LogRecord]) -> Result<()> {
        // Many rows per statement: a statement is a round trip to the connection's thread.
        const ROWS: usize = 100;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)?;
        for chunk in records.chunks(ROWS) {
            let sql = format!(
                "INSERT INTO scim_provisioning_log (workspace_id, at, method, path, resource_type,
                   resource_id, status, scim_type, latency_us, detail) VALUES {}",
                vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ")
            );
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q
                    .bind(r.workspace_id)
                    .bind(ts(r.at))
                    .bind(&r.method)
                    .bind(&r.path)
                    .bind(&r.resource_type)
                    .bind(&r.resource_id)
                    .bind(i64::from(r.status))
                    .bind(&r.scim_type)
                    .bind(r.latency_us)
                    .bind(&r.detail);
            }
            q.execute(&mut *tx).await.map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn log_page(
        &self,
        workspace_id: i64,
        before: Option<i64>,
        status: StatusRange,
        limit: u32,
    ) -> Result<Vec<LogEntry>> {
        let rows = sqlx::query(
            "SELECT id, workspace_id, at, method, path, resource_type, resource_id, status,
               scim_type, latency_us, detail
             FROM scim_provisioning_log
             WHERE workspace_id = ? AND id < ? AND status BETWEEN ? AND ?
             ORDER BY id DESC LIMIT ?",
        )
        .bind(workspace_id)
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(status.from))
        .bind(i64::from(status.to))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await
        .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|row| LogEntry {
                id: row.get("id"),
                record: LogRecord {
                    workspace_id: row.get("workspace_id"),
                    at: from_unix(row.get("at")),
                    method: row.get("method"),
                    path: row.get("path"),
                    resource_type: row.get("resource_type"),
                    resource_id: row.get("resource_id"),
                    status: row.get::<i64, _>("status").clamp(0, 999) as u16,
                    scim_type: row.get("scim_type"),
                    latency_us: row.get("latency_us"),
                    detail: row.get("detail"),
                },
            })
            .collect())
    }

    async fn prune_log(&self, cutoff: OffsetDateTime) -> Result<u64> {
        // In slices, so a large backlog never holds the write lock for long.
        let mut deleted = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM scim_provisioning_log WHERE id IN
                   (SELECT id FROM scim_provisioning_log WHERE at < ? LIMIT 5000)",
            )
            .bind(ts(cutoff))
            .execute(&self.pool)
            .await
            .map_err(unavailable)?
            .rows_affected();
            deleted += done;
            if done < 5000 {
                return Ok(deleted);
            }
        }
    }

    async fn log_summary(
        &self,
        workspace_id: i64,
        since: OffsetDateTime,
    ) -> Result<(Option<OffsetDateTime>, i64)> {
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT at FROM scim_provisioning_log WHERE workspace_id = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(workspace_id)
        .fetch_optional(&self.read)
        .await
        .map_err(unavailable)?;
        let errors: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM scim_provisioning_log WHERE workspace_id = ? AND at >= ? AND status >= 400")
            .bind(workspace_id)
            .bind(ts(since))
            .fetch_one(&self.read)
            .await
            .map_err(unavailable)?;
        Ok((last.map(from_unix), errors))
    }
}
