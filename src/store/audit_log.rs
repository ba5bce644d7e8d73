//! The audit log, one hash chain per workspace (`domain/audit.rs`): `Store`'s `mod audit_log`.

use sqlx::{FromRow, SqlitePool};
use std::collections::HashMap;
use std::sync::OnceLock;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::db::{db_run, sqlite_begin, ts, Db, JsonText, On, Tx};
use super::{AuditEntry, AuditEvent, AuditFilter, Result, StoreError};
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

/// Appends to a chain: on Postgres in a transaction of its own; on SQLite through the writer's
/// audit queue, which writes whatever appends have queued in one transaction (group commit).
/// Either way it returns only once the entry is committed: a caller that must fail closed
/// (`App::record`) still can.
pub(super) async fn append_audit(db: &Db, e: AuditEvent, now: OffsetDateTime) -> Result<()> {
    match db {
        Db::Sqlite { write, audit, .. } => audit.append(write, e, now).await,
        Db::Postgres(_) => {
            let mut tx = db.begin_immediate().await?;
            append_in(&mut tx, &mut HashMap::new(), &e, now).await?;
            tx.commit().await
        }
    }
}

/// The heads (seq, hash) of the chains a transaction has appended to, so a batch reads each
/// chain's head from the table once.
type Heads = HashMap<i64, (i64, String)>;

/// Appends `e` inside `tx`, which must hold the chain (SQLite: `BEGIN IMMEDIATE`; Postgres: the
/// advisory lock taken here).
async fn append_in(tx: &mut Tx, heads: &mut Heads, e: &AuditEvent, now: OffsetDateTime) -> Result<()> {
    let chain = audit::chain_key(e.workspace_id);
    let last = match heads.get(&chain) {
        Some((seq, hash)) => Some((*seq, hash.clone())),
        None => {
            // Appends to one chain take turns, so no two share a prev_hash. On SQLite, IMMEDIATE
            // takes the write lock before the chain's head is read: the one writing connection
            // orders the appends of this process, the lock (and its busy timeout) those of other
            // processes on the file (the CLI).
            if let On::Postgres(c) = tx.conn() {
                // One append per chain at a time, across instances: the lock is held until the
                // transaction ends. Chains whose keys collide modulo 2^31 merely wait for each other.
                sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
                    .bind(AUDIT_LOCK_CLASS)
                    .bind(chain.rem_euclid(i32::MAX as i64) as i32)
                    .execute(c)
                    .await?;
            }
            let last: Option<(i64, Option<String>)> = db_run!(tx.conn(), |c| {
                sqlx::query_as(
                    "SELECT seq, hash FROM audit_log WHERE COALESCE(workspace_id, 0) = $1 AND seq IS NOT NULL
                     ORDER BY seq DESC LIMIT 1",
                )
                .bind(chain)
                .fetch_optional(c)
                .await
            })?;
            last.map(|(seq, hash)| (seq, hash.unwrap_or_default()))
        }
    };
    let (seq, prev_hash) = audit::next_link(last);
    let hash = e.content(seq, ts(now), &prev_hash).hash();
    db_run!(tx.conn(), |c| {
        sqlx::query(
            "INSERT INTO audit_log (workspace_id, at, kind, actor, ip, device_id, detail, seq,
               prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(e.workspace_id)
        .bind(ts(now))
        .bind(e.kind)
        .bind(&e.actor)
        .bind(&e.ip)
        .bind(&e.device_id)
        .bind(JsonText(audit::canonical_json(&e.detail).to_string()))
        .bind(seq)
        .bind(&prev_hash)
        .bind(&hash)
        .execute(c)
        .await
        .map(|_| ())
    })?;
    heads.insert(chain, (seq, hash));
    Ok(())
}

/// Appends at most this many entries per transaction.
const BATCH: usize = 256;

/// An append waiting for the SQLite writer, and who waits for its outcome.
struct Pending {
    event: AuditEvent,
    now: OffsetDateTime,
    done: oneshot::Sender<Result<()>>,
}

/// SQLite's audit appends (issue 18): callers queue their entry and wait; one task takes what
/// has queued, in order, and writes it in one `BEGIN IMMEDIATE` transaction, each chain's head
/// read once, then tells every caller. Under load the batches grow by themselves (no timer, no
/// delay when idle), so a hundred step-ups appending at once share a few transactions instead
/// of queueing one each on the writer. A batch that fails is rolled back whole and its entries
/// are written again one transaction each, so one bad entry fails only its own caller, and a
/// caller hears Ok only for an entry that is committed.
#[derive(Default)]
pub struct AuditQueue {
    /// Started on first use, inside the runtime.
    sender: OnceLock<mpsc::UnboundedSender<Pending>>,
}

impl AuditQueue {
    async fn append(&self, write: &SqlitePool, event: AuditEvent, now: OffsetDateTime) -> Result<()> {
        let sender = self.sender.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(write_batches(write.clone(), rx));
            tx
        });
        let (done, outcome) = oneshot::channel();
        let gone = || StoreError::Unavailable("the audit writer has stopped".into());
        sender
            .send(Pending { event, now, done })
            .map_err(|_| gone())?;
        outcome.await.map_err(|_| gone())?
    }
}

async fn write_batches(write: SqlitePool, mut queue: mpsc::UnboundedReceiver<Pending>) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        if batch.len() > 1 {
            match append_batch(&write, &batch).await {
                Ok(()) => {
                    for p in batch.drain(..) {
                        let _ = p.done.send(Ok(()));
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, entries = batch.len(), "an audit batch failed; writing its entries one by one")
                }
            }
        }
        for p in batch.drain(..) {
            let outcome = append_batch(&write, std::slice::from_ref(&p)).await;
            let _ = p.done.send(outcome);
        }
    }
}

/// The entries of `batch`, in order, in one transaction.
async fn append_batch(write: &SqlitePool, batch: &[Pending]) -> Result<()> {
    let mut tx = On::Sqlite(sqlite_begin(write, Some("BEGIN IMMEDIATE")).await?);
    let mut heads = Heads::new();
    for p in batch {
        append_in(&mut tx, &mut heads, &p.event, p.now).await?;
    }
    tx.commit().await
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
