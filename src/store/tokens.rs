//! Each workspace's SCIM token, the token a rotation replaced (its grace period), and the policy
//! that governs rotations: `Store`'s `mod tokens`.

use sqlx::FromRow;
use time::OffsetDateTime;

use super::db::{db_run, ts, Db, On, Tx};
use super::readers::{args, Arg};
use super::WorkspaceRow;
use super::{Policy, Result, StoredToken, Workspace};
use crate::clock::from_unix;
use crate::domain::crypto::Sealed;
use crate::domain::policy::{TokenViewers, MAX_GRACE_MINUTES};

#[derive(FromRow)]
struct TokenRow {
    workspace_id: i64,
    token_hash: Vec<u8>,
    key_id: String,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
    created_at: i64,
    created_by: String,
}

/// A workspace found by a token's hash, with that hash.
#[derive(FromRow)]
struct TokenHolder {
    #[sqlx(flatten)]
    workspace: WorkspaceRow,
    token_hash: Vec<u8>,
}

impl TokenHolder {
    fn into_pair(self) -> (Workspace, [u8; 32]) {
        (
            self.workspace.into(),
            self.token_hash.try_into().unwrap_or([0; 32]),
        )
    }
}

#[derive(FromRow)]
struct PolicyRow {
    two_person_rotation: bool,
    rotation_grace_minutes: i64,
    token_viewers: String,
}

/// Writes the workspace's token over the one it has, if any.
pub(super) async fn upsert_token(tx: &mut Tx, t: &StoredToken) -> Result<()> {
    Ok(db_run!(tx.conn(), |c| {
        sqlx::query(
            "INSERT INTO scim_tokens (workspace_id, token_hash, key_id, nonce, ciphertext,
               created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (workspace_id) DO UPDATE SET token_hash = excluded.token_hash,
               key_id = excluded.key_id, nonce = excluded.nonce, ciphertext = excluded.ciphertext,
               created_at = excluded.created_at, created_by = excluded.created_by",
        )
        .bind(t.workspace_id)
        .bind(t.token_hash.as_slice())
        .bind(&t.sealed.key_id)
        .bind(&t.sealed.nonce)
        .bind(&t.sealed.ciphertext)
        .bind(ts(t.created_at))
        .bind(&t.created_by)
        .execute(c)
        .await
        .map(|_| ())
    })?)
}

pub(super) async fn put_scim_token(
    db: &Db,
    token: StoredToken,
    grace_until: Option<OffsetDateTime>,
) -> Result<()> {
    let mut tx = db.begin().await?;
    if let On::Postgres(c) = tx.conn() {
        // Two rotations of one workspace at once take turns, so the second keeps the first's
        // token in grace (not the same old one twice). SQLite's one writer already orders them.
        sqlx::query("SELECT 1 FROM scim_tokens WHERE workspace_id = $1 FOR UPDATE")
            .bind(token.workspace_id)
            .execute(c)
            .await?;
    }
    db_run!(tx.conn(), |c| {
        sqlx::query("DELETE FROM scim_token_grace WHERE workspace_id = $1")
            .bind(token.workspace_id)
            .execute(c)
            .await
            .map(|_| ())
    })?;
    if let Some(until) = grace_until {
        db_run!(tx.conn(), |c| {
            sqlx::query(
                "INSERT INTO scim_token_grace (token_hash, workspace_id, expires_at)
                 SELECT token_hash, workspace_id, $1 FROM scim_tokens WHERE workspace_id = $2",
            )
            .bind(ts(until))
            .bind(token.workspace_id)
            .execute(c)
            .await
            .map(|_| ())
        })?;
    }
    upsert_token(&mut tx, &token).await?;
    tx.commit().await
}

pub(super) async fn workspace_by_grace_hash(
    db: &Db,
    token_hash: &[u8; 32],
    now: OffsetDateTime,
) -> Result<Option<(Workspace, [u8; 32])>> {
    let row: Option<TokenHolder> = db_run!(db.read(), |c| {
        sqlx::query_as(
            "SELECT w.*, g.token_hash FROM scim_token_grace g JOIN workspaces w ON w.id = g.workspace_id
             WHERE g.token_hash = $1 AND g.expires_at > $2",
        )
        .bind(token_hash.as_slice())
        .bind(ts(now))
        .fetch_optional(c)
        .await
    })?;
    Ok(row.map(TokenHolder::into_pair))
}

pub(super) async fn grace_until(
    db: &Db,
    workspace_id: i64,
    now: OffsetDateTime,
) -> Result<Option<OffsetDateTime>> {
    let until: Option<i64> = db_run!(db.read(), |c| {
        sqlx::query_scalar(
            "SELECT MAX(expires_at) FROM scim_token_grace WHERE workspace_id = $1 AND expires_at > $2",
        )
        .bind(workspace_id)
        .bind(ts(now))
        .fetch_one(c)
        .await
    })?;
    Ok(until.map(from_unix))
}

impl TokenRow {
    /// A row of `scim_token`'s select, read by a SQLite reader (in its column order).
    fn from_reader(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
        Ok(TokenRow {
            workspace_id: r.get(0)?,
            token_hash: r.get(1)?,
            key_id: r.get(2)?,
            nonce: r.get(3)?,
            ciphertext: r.get(4)?,
            created_at: r.get(5)?,
            created_by: r.get(6)?,
        })
    }
}

/// The workspace's token as stored: read by every release of a step-up, through the readers on
/// SQLite (`Db::hot_row`).
pub(super) async fn scim_token(db: &Db, workspace_id: i64) -> Result<Option<StoredToken>> {
    let row = db
        .hot_row(
            "SELECT workspace_id, token_hash, key_id, nonce, ciphertext, created_at, created_by
             FROM scim_tokens WHERE workspace_id = $1"
                .to_owned(),
            args![workspace_id],
            TokenRow::from_reader,
        )
        .await?;
    Ok(row.map(|row| StoredToken {
        workspace_id: row.workspace_id,
        token_hash: row.token_hash.try_into().unwrap_or([0; 32]),
        sealed: Sealed {
            key_id: row.key_id,
            nonce: row.nonce,
            ciphertext: row.ciphertext,
        },
        created_at: from_unix(row.created_at),
        created_by: row.created_by,
    }))
}

pub(super) async fn workspace_by_token_hash(
    db: &Db,
    token_hash: &[u8; 32],
) -> Result<Option<(Workspace, [u8; 32])>> {
    let row: Option<TokenHolder> = db_run!(db.read(), |c| {
        sqlx::query_as(
            "SELECT w.*, t.token_hash FROM scim_tokens t JOIN workspaces w ON w.id = t.workspace_id
             WHERE t.token_hash = $1",
        )
        .bind(token_hash.as_slice())
        .fetch_optional(c)
        .await
    })?;
    Ok(row.map(TokenHolder::into_pair))
}

pub(super) async fn policy(db: &Db, workspace_id: i64) -> Result<Policy> {
    // Read by every reveal and release.
    let row: Option<PolicyRow> = db
        .hot_rows(
            "SELECT two_person_rotation, rotation_grace_minutes, token_viewers
             FROM workspace_policies WHERE workspace_id = $1"
                .to_owned(),
            vec![Arg::Int(workspace_id)],
            |r| {
                Ok(PolicyRow {
                    two_person_rotation: r.get(0)?,
                    rotation_grace_minutes: r.get(1)?,
                    token_viewers: r.get(2)?,
                })
            },
        )
        .await?
        .into_iter()
        .next();
    Ok(match row {
        None => Policy::default(),
        Some(row) => Policy {
            two_person_rotation: row.two_person_rotation,
            rotation_grace_minutes: row
                .rotation_grace_minutes
                .clamp(0, i64::from(MAX_GRACE_MINUTES)) as u32,
            token_viewers: TokenViewers::parse(&row.token_viewers).unwrap_or(TokenViewers::Owners),
        },
    })
}

pub(super) async fn put_policy(
    db: &Db,
    workspace_id: i64,
    policy: &Policy,
    by: &str,
    now: OffsetDateTime,
) -> Result<()> {
    Ok(db_run!(db.write().await?.on(), |c| {
        sqlx::query(
            "INSERT INTO workspace_policies (workspace_id, two_person_rotation,
               rotation_grace_minutes, token_viewers, updated_at, updated_by)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (workspace_id) DO UPDATE SET
               two_person_rotation = excluded.two_person_rotation,
               rotation_grace_minutes = excluded.rotation_grace_minutes,
               token_viewers = excluded.token_viewers, updated_at = excluded.updated_at,
               updated_by = excluded.updated_by",
        )
        .bind(workspace_id)
        .bind(policy.two_person_rotation)
        .bind(i64::from(policy.rotation_grace_minutes))
        .bind(policy.token_viewers.as_str())
        .bind(ts(now))
        .bind(by)
        .execute(c)
        .await
        .map(|_| ())
    })?)
}
