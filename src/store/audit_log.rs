//! The audit log, one hash chain per workspace (`domain/audit.rs`): `Store`'s `mod audit_log`.

use sqlx::FromRow;
use time::OffsetDateTime;

use super::db::{db_run, ts, Db, JsonText, Lane, WriteTx};
use super::readers::{args, Arg};
use super::{AuditEntry, AuditEvent, AuditFilter, Result};
use crate::clock::from_unix;
use crate::domain::audit;

/// The first key of the Postgres advisory locks that serialize appends to one chain ("AUDT").
const AUDIT_LOCK_CLASS: i32 = 0x4155_4454;

#[derive(FromRow)]
struct AuditRow {
    id: i64,
    workspace_id: Option<i64>,
    at: i64,
    kind: String,
    actor: Option<String>,
    ip: Option<String>,
    device_id: Option<String>,
    detail: JsonText,
    seq: Option<i64>,
    prev_hash: Option<String>,
    hash: Option<String>,
}

impl From<AuditRow> for AuditEntry {
    fn from(row: AuditRow) -> AuditEntry {
        AuditEntry {
            id: row.id,
            workspace_id: row.workspace_id,
            at: from_unix(row.at),
            kind: row.kind,
            actor: row.actor,
            ip: row.ip,
            device_id: row.device_id,
            detail: serde_json::from_str(&row.detail.0).unwrap_or_default(),
            seq: row.seq,
            prev_hash: row.prev_hash,
            hash: row.hash,
        }
    }
}

pub(super) async fn append_audit(db: &Db, e: AuditEvent, now: OffsetDateTime) -> Result<()> {
    // Appends to one chain take turns, so no two share a prev_hash. On SQLite the shared
    // transaction of `grouped_write` is IMMEDIATE: it takes the write lock before the chain's
    // head is read; the process's write lock orders the appends of this process (appends in
    // one batch see each other's rows), the file's lock (and its busy timeout) those of other
    // processes on the file (the CLI). Answered after the commit: the fail-closed rule holds.
    db.grouped_write(
        Lane::Prompt,
        Box::new(move |tx: WriteTx<'_>| Box::pin(append_in(tx, e, now))),
    )
    .await
}

/// Appends `e` inside `tx`: a grouped write's, or a transaction begun with `begin_immediate`,
/// where a change and its entry then commit together or not at all (the members' changes,
/// `members.rs`).
pub(super) async fn append_in(
    mut tx: WriteTx<'_>,
    e: AuditEvent,
    now: OffsetDateTime,
) -> Result<()> {
    let chain = audit::chain_key(e.workspace_id);
    if let Some(c) = tx.postgres() {
        // One append per chain at a time, across instances: the lock is held until the
        // transaction ends. Chains whose keys collide modulo 2^31 merely wait for each other.
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(AUDIT_LOCK_CLASS)
            .bind(chain.rem_euclid(i32::MAX as i64) as i32)
            .execute(c)
            .await?;
    }
    let last: Option<(i64, Option<String>)> = tx
        .optional(
            "SELECT seq, hash FROM audit_log WHERE COALESCE(workspace_id, 0) = $1 AND seq IS NOT NULL
             ORDER BY seq DESC LIMIT 1",
            args![chain],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .await?;
    let (seq, prev_hash) =
        audit::next_link(last.map(|(seq, hash)| (seq, hash.unwrap_or_default())));
    let hash = e.content(seq, ts(now), &prev_hash).hash();
    let detail = Arg::Json(audit::canonical_json(&e.detail).to_string());
    let mut values = args![
        e.workspace_id,
        ts(now),
        e.kind,
        &e.actor,
        &e.ip,
        &e.device_id
    ];
    values.extend([detail, Arg::Int(seq), Arg::Text(prev_hash), Arg::Text(hash)]);
    tx.execute(
        "INSERT INTO audit_log (workspace_id, at, kind, actor, ip, device_id, detail, seq,
           prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        values,
    )
    .await?;
    Ok(())
}

pub(super) async fn audit_page(
    db: &Db,
    workspace_id: i64,
    f: &AuditFilter,
) -> Result<Vec<AuditEntry>> {
    let rows: Vec<AuditRow> = db_run!(db.read(), |c| {
        sqlx::query_as(
            "SELECT * FROM audit_log WHERE workspace_id = $1 AND id < $2 AND ($3 IS NULL OR kind = $3)
               AND at >= $4 AND at < $5
             ORDER BY id DESC LIMIT $6",
        )
        .bind(workspace_id)
        .bind(f.before_id.unwrap_or(i64::MAX))
        .bind(&f.kind)
        .bind(f.since.map_or(i64::MIN, ts))
        .bind(f.until.map_or(i64::MAX, ts))
        .bind(f.limit)
        .fetch_all(c)
        .await
    })?;
    Ok(rows.into_iter().map(AuditEntry::from).collect())
}

pub(super) async fn audit_chain(
    db: &Db,
    workspace_id: Option<i64>,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<AuditEntry>> {
    let rows: Vec<AuditRow> = db_run!(db.read(), |c| {
        sqlx::query_as(
            "SELECT * FROM audit_log WHERE COALESCE(workspace_id, 0) = $1 AND seq > $2
             ORDER BY seq LIMIT $3",
        )
        .bind(audit::chain_key(workspace_id))
        .bind(after_seq)
        .bind(limit)
        .fetch_all(c)
        .await
    })?;
    Ok(rows.into_iter().map(AuditEntry::from).collect())
}

pub(super) async fn audit_unchained(
    db: &Db,
    workspace_id: Option<i64>,
    after_id: i64,
    limit: i64,
) -> Result<Vec<AuditEntry>> {
    let rows: Vec<AuditRow> = db_run!(db.read(), |c| {
        sqlx::query_as(
            "SELECT * FROM audit_log WHERE COALESCE(workspace_id, 0) = $1 AND seq IS NULL AND id > $2
             ORDER BY id LIMIT $3",
        )
        .bind(audit::chain_key(workspace_id))
        .bind(after_id)
        .bind(limit)
        .fetch_all(c)
        .await
    })?;
    Ok(rows.into_iter().map(AuditEntry::from).collect())
}
