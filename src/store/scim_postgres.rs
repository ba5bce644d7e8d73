//! `ScimStore` on Postgres (migrations/postgres/0002_scim.sql, run by `PgStore::open` with the
//! rest), sharing the pool of `PgStore`, with the behaviour of `scim_sqlite.rs`.
//!
//! Several instances write at once here, so each write locks what it reads: an update holds its
//! resource `FOR UPDATE` while it edits it, and a reference it writes holds the referenced row
//! `FOR KEY SHARE` until commit, which a concurrent DELETE of that row waits for. A delete locks
//! the groups listing the resource before the resource itself, in the order a membership change
//! does (group, then member), so the two never deadlock.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgRow, Postgres};
use sqlx::{PgConnection, PgPool, Row};
use time::OffsetDateTime;

use super::scim::*;
use super::{Result, StoreError};
use crate::clock::from_unix;
use crate::scim::schema::ResourceKind;
use crate::scim::sql::{SortColumn, SqlBind, SqlPlan};

pub struct PgScimStore {
    pool: PgPool,
}

impl PgScimStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

type Query<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

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
/// shows them costs no second query (see `parse_refs`); NULL when there are none.
fn refs_column(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::User => {
            "(SELECT json_agg(json_build_array(m.group_id, g.display))::text
              FROM scim_group_members m
              JOIN scim_groups g ON g.workspace_id = m.workspace_id AND g.id = m.group_id
              WHERE m.workspace_id = t.workspace_id AND m.member_id = t.id)"
        }
        ResourceKind::Group => {
            "(SELECT json_agg(json_build_array(m.member_id, m.member_type))::text
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

fn resource(row: &PgRow, kind: ResourceKind, refs: bool) -> Result<StoredResource> {
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

/// `WHERE workspace_id = $1 [AND (plan)]`, and the next free placeholder number.
fn where_clause(filter: Option<&SqlPlan>) -> (String, usize) {
    match filter {
        None => (" WHERE workspace_id = $1".to_owned(), 2),
        Some(p) => (
            format!(" WHERE workspace_id = $1 AND ({})", p.numbered(2)),
            2 + p.binds.len(),
        ),
    }
}

/// The kind of each id that names a resource of the workspace, each locked `FOR KEY SHARE` until
/// commit; Err with the first that does not.
async fn member_types(
    conn: &mut PgConnection,
    workspace_id: i64,
    ids: &[String],
) -> Result<std::result::Result<Vec<(String, ResourceKind)>, String>> {
    let mut found: HashMap<String, ResourceKind> = HashMap::new();
    if !ids.is_empty() {
        for kind in [ResourceKind::User, ResourceKind::Group] {
            let sql = format!(
                "SELECT id FROM {} WHERE workspace_id = $1 AND id = ANY($2) FOR KEY SHARE",
                table(kind)
            );
            let rows = sqlx::query(&sql)
                .bind(workspace_id)
                .bind(ids)
                .fetch_all(&mut *conn)
                .await
                .map_err(unavailable)?;
            for row in rows {
                found.insert(row.get("id"), kind);
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

async fn user_exists(conn: &mut PgConnection, workspace_id: i64, id: &str) -> Result<bool> {
    let row = sqlx::query(
        "SELECT 1 AS one FROM scim_users WHERE workspace_id = $1 AND id = $2 FOR KEY SHARE",
    )
    .bind(workspace_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(unavailable)?;
    Ok(row.is_some())
}

async fn insert_members(
    conn: &mut PgConnection,
    workspace_id: i64,
    group_id: &str,
    members: &[(String, ResourceKind)],
) -> Result<()> {
    if members.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = members.iter().map(|(id, _)| id.as_str()).collect();
    let types: Vec<&str> = members.iter().map(|(_, k)| kind_name(*k)).collect();
    sqlx::query(
        "INSERT INTO scim_group_members (workspace_id, group_id, member_id, member_type)
         SELECT $1, $2, m.id, m.t FROM UNNEST($3::text[], $4::text[]) AS m(id, t)
         ON CONFLICT DO NOTHING",
    )
    .bind(workspace_id)
    .bind(group_id)
    .bind(&ids)
    .bind(&types)
    .execute(&mut *conn)
    .await
    .map_err(unavailable)?;
    Ok(())
}

async fn write_row(
    conn: &mut PgConnection,
    workspace_id: i64,
    kind: ResourceKind,
    id: &str,
    document: &str,
    c: &Columns,
    now: OffsetDateTime,
) -> Result<()> {
    let q = match kind {
        ResourceKind::User => sqlx::query(
            "UPDATE scim_users SET document = $3, user_name_lower = $4, external_id = $5,
               display_name_lower = $6, work_email_lower = $7, email_overflow = $8, active = $9,
               manager_id = $10, version = version + 1, last_modified = $11
             WHERE workspace_id = $1 AND id = $2",
        )
        .bind(workspace_id)
        .bind(id)
        .bind(document)
        .bind(&c.index.user_name_lower)
        .bind(&c.index.external_id)
        .bind(&c.index.display_name_lower)
        .bind(&c.index.work_email_lower)
        .bind(c.index.email_overflow)
        .bind(c.index.active)
        .bind(&c.manager_id),
        ResourceKind::Group => sqlx::query(
            "UPDATE scim_groups SET document = $3, display = $4, display_name_lower = $5,
               external_id = $6, version = version + 1, last_modified = $7
             WHERE workspace_id = $1 AND id = $2",
        )
        .bind(workspace_id)
        .bind(id)
        .bind(document)
        .bind(&c.display)
        .bind(&c.index.display_name_lower)
        .bind(&c.index.external_id),
    };
    q.bind(ts(now))
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
    Ok(())
}

#[async_trait]
impl ScimStore for PgScimStore {
    async fn create(
        &self,
        workspace_id: i64,
        kind: ResourceKind,
        new: NewResource,
        now: OffsetDateTime,
    ) -> Result<Written> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let document = new.document.to_string();
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
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1, $11, $11)",
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
                     VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7)",
                )
                .bind(workspace_id)
                .bind(&new.id)
                .bind(&document)
                .bind(&c.display)
                .bind(&c.index.display_name_lower)
                .bind(&c.index.external_id)
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
        let sql = format!("{} WHERE workspace_id = $1 AND id = $2", select(kind, refs));
        sqlx::query(&sql)
            .bind(workspace_id)
            .bind(id)
            .fetch_optional(&self.pool)
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
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let sql = format!(
            "{} WHERE workspace_id = $1 AND id = $2 FOR UPDATE",
            select(kind, false)
        );
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
            &change.document.to_string(),
            &change.columns,
            now,
        )
        .await?;
        let delta = &change.members;
        if delta.replace_all.is_some() {
            sqlx::query("DELETE FROM scim_group_members WHERE workspace_id = $1 AND group_id = $2")
                .bind(workspace_id)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        if !delta.remove.is_empty() {
            sqlx::query(
                "DELETE FROM scim_group_members
                 WHERE workspace_id = $1 AND group_id = $2 AND member_id = ANY($3)",
            )
            .bind(workspace_id)
            .bind(id)
            .bind(&delta.remove)
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
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // The groups that list it change: lock them first (a membership change locks the group,
        // then the member), and give them a new version.
        sqlx::query(
            "UPDATE scim_groups SET version = version + 1, last_modified = $3
             WHERE workspace_id = $1 AND id IN
               (SELECT group_id FROM scim_group_members WHERE workspace_id = $1 AND member_id = $2)",
        )
        .bind(workspace_id)
        .bind(id)
        .bind(ts(now))
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let sql = format!(
            "SELECT version FROM {} WHERE workspace_id = $1 AND id = $2 FOR UPDATE",
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
            "DELETE FROM {} WHERE workspace_id = $1 AND id = $2",
            table(kind)
        );
        sqlx::query(&sql)
            .bind(workspace_id)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        // Memberships added while this waited for the lock are visible to this statement.
        sqlx::query("DELETE FROM scim_group_members WHERE workspace_id = $1 AND member_id = $2")
            .bind(workspace_id)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        if kind == ResourceKind::User {
            let managed = sqlx::query(
                "SELECT id, document FROM scim_users WHERE workspace_id = $1 AND manager_id = $2
                 FOR UPDATE",
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
                    "UPDATE scim_users SET document = $3, manager_id = NULL, version = version + 1,
                       last_modified = $4 WHERE workspace_id = $1 AND id = $2",
                )
                .bind(workspace_id)
                .bind(row.get::<&str, _>("id"))
                .bind(document.to_string())
                .bind(ts(now))
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
        let (mut where_sql, mut next) = where_clause(filter);
        if after.is_some() {
            where_sql.push_str(&format!(" AND id > ${next}"));
            next += 1;
        }
        let sql = format!(
            "{}{where_sql} ORDER BY id LIMIT ${next}",
            select(kind, refs)
        );
        let mut q = bind_plan(sqlx::query(&sql).bind(workspace_id), filter);
        if let Some(a) = after {
            q = q.bind(a);
        }
        let rows = q
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
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
        let (where_sql, next) = where_clause(filter);
        let resources = if limit == 0 {
            Vec::new()
        } else {
            let sql = format!(
                "{}{where_sql}{} LIMIT ${} OFFSET ${}",
                select(kind, refs),
                order_by(sort),
                next,
                next + 1
            );
            let rows = bind_plan(sqlx::query(&sql).bind(workspace_id), filter)
                .bind(limit.min(i64::MAX as u64) as i64)
                .bind(offset.min(i64::MAX as u64) as i64)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
            rows.iter()
                .map(|row| resource(row, kind, refs))
                .collect::<Result<Vec<_>>>()?
        };
        let total = match total_from_page(offset, limit, resources.len()) {
            Some(t) => t,
            None => {
                let sql = format!("SELECT COUNT(*) AS n FROM {}{where_sql}", table(kind));
                let row = bind_plan(sqlx::query(&sql).bind(workspace_id), filter)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(unavailable)?;
                row.get::<i64, _>("n") as u64
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
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT t.id, {} AS refs FROM {} t WHERE t.workspace_id = $1 AND t.id = ANY($2)",
            refs_column(kind),
            table(kind)
        );
        let rows = sqlx::query(&sql)
            .bind(workspace_id)
            .bind(ids)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        let mut out = Vec::new();
        for row in rows {
            let from: String = row.get("id");
            for to in parse_refs(kind, row.get("refs"))? {
                out.push(Link {
                    from: from.clone(),
                    to,
                });
            }
        }
        Ok(out)
    }

    async fn append_log(&self, records: &[LogRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        // One statement for the whole batch, its columns as arrays.
        let col = |f: &dyn Fn(&LogRecord) -> Option<String>| -> Vec<Option<String>> {
            records.iter().map(f).collect()
        };
        let workspaces: Vec<i64> = records.iter().map(|r| r.workspace_id).collect();
        let ats: Vec<i64> = records.iter().map(|r| ts(r.at)).collect();
        let statuses: Vec<i32> = records.iter().map(|r| i32::from(r.status)).collect();
        let latencies: Vec<i64> = records.iter().map(|r| r.latency_us).collect();
        sqlx::query(
            "INSERT INTO scim_provisioning_log (workspace_id, at, method, path, resource_type,
               resource_id, status, scim_type, latency_us, detail)
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[],
               $6::text[], $7::int[], $8::text[], $9::bigint[], $10::text[])",
        )
        .bind(&workspaces)
        .bind(&ats)
        .bind(col(&|r| Some(r.method.clone())))
        .bind(col(&|r| Some(r.path.clone())))
        .bind(col(&|r| r.resource_type.clone()))
        .bind(col(&|r| r.resource_id.clone()))
        .bind(&statuses)
        .bind(col(&|r| r.scim_type.clone()))
        .bind(&latencies)
        .bind(col(&|r| r.detail.clone()))
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
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
             WHERE workspace_id = $1 AND id < $2 AND status BETWEEN $3 AND $4
             ORDER BY id DESC LIMIT $5",
        )
        .bind(workspace_id)
        .bind(before.unwrap_or(i64::MAX))
        .bind(i32::from(status.from))
        .bind(i32::from(status.to))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
                    status: row.get::<i32, _>("status").clamp(0, 999) as u16,
                    scim_type: row.get("scim_type"),
                    latency_us: row.get("latency_us"),
                    detail: row.get("detail"),
                },
            })
            .collect())
    }

    async fn prune_log(&self, cutoff: OffsetDateTime) -> Result<u64> {
        let mut deleted = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM scim_provisioning_log WHERE id IN
                   (SELECT id FROM scim_provisioning_log WHERE at < $1 LIMIT 5000)",
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
            "SELECT at FROM scim_provisioning_log WHERE workspace_id = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(workspace_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        let errors: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM scim_provisioning_log WHERE workspace_id = $1 AND at >= $2 AND status >= 400")
            .bind(workspace_id)
            .bind(ts(since))
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok((last.map(from_unix), errors))
    }
}
