//! `ScimStore`'s provisioning log: every SCIM request a workspace's token opened.

use sqlx::FromRow;
use time::OffsetDateTime;

use super::db::{db_run, ts, value_rows, Db, On};
use super::scim::{LogEntry, LogRecord, StatusRange};
use super::Result;
use crate::clock::from_unix;

/// The columns of a record, in the order of `$1` to `$10`.
const COLUMNS: &str = "workspace_id, at, method, path, resource_type, resource_id, status, \
                       scim_type, latency_us, detail";

#[derive(FromRow)]
struct LogRow {
    id: i64,
    workspace_id: i64,
    at: i64,
    method: String,
    path: String,
    resource_type: Option<String>,
    resource_id: Option<String>,
    /// INTEGER on both (an i32 on Postgres).
    status: i32,
    scim_type: Option<String>,
    latency_us: i64,
    detail: Option<String>,
}

pub(super) async fn append_log(db: &Db, records: &[LogRecord]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    match db.write().await?.on() {
        // One statement for the whole batch, its columns as arrays.
        On::Postgres(pool) => {
            let text = |f: &dyn Fn(&LogRecord) -> Option<String>| -> Vec<Option<String>> {
                records.iter().map(f).collect()
            };
            let workspaces: Vec<i64> = records.iter().map(|r| r.workspace_id).collect();
            let ats: Vec<i64> = records.iter().map(|r| ts(r.at)).collect();
            let statuses: Vec<i32> = records.iter().map(|r| i32::from(r.status)).collect();
            let latencies: Vec<i64> = records.iter().map(|r| r.latency_us).collect();
            sqlx::query(&format!(
                "INSERT INTO scim_provisioning_log ({COLUMNS})
                 SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[],
                   $5::text[], $6::text[], $7::int[], $8::text[], $9::bigint[], $10::text[])"
            ))
            .bind(&workspaces)
            .bind(&ats)
            .bind(text(&|r| Some(r.method.clone())))
            .bind(text(&|r| Some(r.path.clone())))
            .bind(text(&|r| r.resource_type.clone()))
            .bind(text(&|r| r.resource_id.clone()))
            .bind(&statuses)
            .bind(text(&|r| r.scim_type.clone()))
            .bind(&latencies)
            .bind(text(&|r| r.detail.clone()))
            .execute(pool)
            .await?;
        }
        // No arrays: many rows per statement (a statement is a round trip to the connection's
        // thread), in one transaction that takes the write lock at once (`Db::begin_immediate`).
        On::Sqlite(writer) => {
            const ROWS: usize = 100;
            let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
            for chunk in records.chunks(ROWS) {
                let sql = format!(
                    "INSERT INTO scim_provisioning_log ({COLUMNS}) VALUES {}",
                    value_rows(db, 10, chunk.len())
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
                        .bind(i32::from(r.status))
                        .bind(&r.scim_type)
                        .bind(r.latency_us)
                        .bind(&r.detail);
                }
                q.execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

pub(super) async fn log_page(
    db: &Db,
    workspace_id: i64,
    before: Option<i64>,
    status: StatusRange,
    limit: u32,
) -> Result<Vec<LogEntry>> {
    let rows: Vec<LogRow> = db_run!(db.read(), |c| {
        sqlx::query_as(&format!(
            "SELECT id, {COLUMNS} FROM scim_provisioning_log
             WHERE workspace_id = $1 AND id < $2 AND status BETWEEN $3 AND $4
             ORDER BY id DESC LIMIT $5"
        ))
        .bind(workspace_id)
        .bind(before.unwrap_or(i64::MAX))
        .bind(i32::from(status.from))
        .bind(i32::from(status.to))
        .bind(i64::from(limit))
        .fetch_all(c)
        .await
    })?;
    Ok(rows
        .into_iter()
        .map(|row| LogEntry {
            id: row.id,
            record: LogRecord {
                workspace_id: row.workspace_id,
                at: from_unix(row.at),
                method: row.method,
                path: row.path,
                resource_type: row.resource_type,
                resource_id: row.resource_id,
                status: row.status.clamp(0, 999) as u16,
                scim_type: row.scim_type,
                latency_us: row.latency_us,
                detail: row.detail,
            },
        })
        .collect())
}

pub(super) async fn prune_log(db: &Db, cutoff: OffsetDateTime) -> Result<u64> {
    // In slices, so a large backlog never holds SQLite's write lock for long.
    let mut deleted = 0;
    loop {
        let done = db_run!(db.write().await?.on(), |c| {
            sqlx::query(
                "DELETE FROM scim_provisioning_log WHERE id IN
                   (SELECT id FROM scim_provisioning_log WHERE at < $1 LIMIT 5000)",
            )
            .bind(ts(cutoff))
            .execute(c)
            .await
            .map(|done| done.rows_affected())
        })?;
        deleted += done;
        if done < 5000 {
            return Ok(deleted);
        }
    }
}

pub(super) async fn log_summary(
    db: &Db,
    workspace_id: i64,
    since: OffsetDateTime,
) -> Result<(Option<OffsetDateTime>, i64)> {
    let last: Option<i64> = db_run!(db.read(), |c| {
        sqlx::query_scalar(
            "SELECT at FROM scim_provisioning_log WHERE workspace_id = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(workspace_id)
        .fetch_optional(c)
        .await
    })?;
    let errors: i64 = db_run!(db.read(), |c| {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM scim_provisioning_log
             WHERE workspace_id = $1 AND at >= $2 AND status >= 400",
        )
        .bind(workspace_id)
        .bind(ts(since))
        .fetch_one(c)
        .await
    })?;
    Ok((last.map(from_unix), errors))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::db::{log_file_of, open_sqlite};
    use crate::store::ScimStore;
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::Connection;
    use std::str::FromStr;

    fn record(path: &str, at: i64) -> LogRecord {
        LogRecord {
            workspace_id: 1,
            at: from_unix(at),
            method: "GET".into(),
            path: path.into(),
            resource_type: Some("User".into()),
            resource_id: None,
            status: 200,
            scim_type: None,
            latency_us: 120,
            detail: None,
        }
    }

    /// A file written before the log had a file of its own (migrations up to 0009, one entry in
    /// the main file) opens with that entry moved to `<database>.provisioning-log`; new entries go
    /// there too, and the main file no longer has the table (issue 18).
    #[tokio::test]
    async fn the_log_lives_in_its_own_file_and_old_entries_move_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("assent.db");
        let url = format!("sqlite://{}", path.display());
        {
            let mut before = sqlx::migrate!("migrations/sqlite");
            before.migrations = before
                .migrations
                .iter()
                .filter(|m| m.version < 10)
                .cloned()
                .collect::<Vec<_>>()
                .into();
            let options = SqliteConnectOptions::from_str(&url)
                .unwrap()
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
            let mut conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .unwrap();
            before.run(&mut conn).await.unwrap();
            sqlx::query(&format!(
                "INSERT INTO scim_provisioning_log ({COLUMNS})
                 VALUES (1, 1000, 'GET', '/v1/scim/v2/Users', 'User', NULL, 200, NULL, 90, NULL)"
            ))
            .execute(&mut conn)
            .await
            .unwrap();
            conn.close().await.unwrap();
        }

        let db = open_sqlite(&url).await.unwrap();
        db.append_log(&[record("/v1/scim/v2/Groups", 2000)])
            .await
            .unwrap();
        let entries = db.log_page(1, None, StatusRange::ALL, 10).await.unwrap();
        let paths: Vec<&str> = entries.iter().map(|e| e.record.path.as_str()).collect();
        assert_eq!(paths, ["/v1/scim/v2/Groups", "/v1/scim/v2/Users"]);

        let tables = |file: &std::path::Path| -> Vec<String> {
            let conn = rusqlite::Connection::open(file).unwrap();
            let mut statement = conn
                .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                .unwrap();
            let names = statement
                .query_map([], |r| r.get::<_, String>(0))
                .unwrap()
                .collect::<rusqlite::Result<Vec<_>>>()
                .unwrap();
            names
        };
        assert!(!tables(&path).contains(&"scim_provisioning_log".to_owned()));
        let log = log_file_of(&path);
        assert!(tables(&log).contains(&"scim_provisioning_log".to_owned()));
        let conn = rusqlite::Connection::open(&log).unwrap();
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM scim_provisioning_log", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(rows, 2);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
}
