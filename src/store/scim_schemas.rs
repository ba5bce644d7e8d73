//! `ScimStore`'s declared extension schemas (issue 15): one row per workspace holding its RFC 7643
//! §7 definitions as the engine wrote them (`crate::scim::declared::Declared::to_json`).

use time::OffsetDateTime;

use super::db::{db_run, ts, Db};
use super::Result;

pub(super) async fn declared_schemas(db: &Db, workspace_id: i64) -> Result<Option<String>> {
    let found: Option<String> = db_run!(db.read(), |c| {
        sqlx::query_scalar("SELECT definitions FROM scim_schemas WHERE workspace_id = $1")
            .bind(workspace_id)
            .fetch_optional(c)
            .await
    })?;
    Ok(found)
}

pub(super) async fn put_declared_schemas(
    db: &Db,
    workspace_id: i64,
    definitions: &str,
    now: OffsetDateTime,
) -> Result<()> {
    db_run!(db.write().await?.on(), |c| {
        sqlx::query(
            "INSERT INTO scim_schemas (workspace_id, definitions, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (workspace_id) DO UPDATE
               SET definitions = excluded.definitions, updated_at = excluded.updated_at",
        )
        .bind(workspace_id)
        .bind(definitions)
        .bind(ts(now))
        .execute(c)
        .await
        .map(|_| ())
    })?;
    Ok(())
}
