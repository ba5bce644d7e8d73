//! The changes owners and admins make to a workspace's people (CONTRACT.md section 3a):
//! `Store`'s `mod members`. Each change and its audit entry commit in one transaction, so neither
//! exists without the other; and each reads what it checks (the member's role, the owners left)
//! under a lock, so two owners demoting each other cannot leave the workspace without one.

use time::OffsetDateTime;

use super::accounts::{insert_user, UserRow};
use super::audit_log::append_in;
use super::db::{db_run, ts, Db, Tx, WriteTx};
use super::{AuditEvent, Result, Role, User};
use crate::clock::from_unix;

/// A person being invited: where, as what, with which password's hash (one nobody knows when the
/// invitation is a link), and the link if any.
#[derive(Clone, Debug)]
pub struct Invitee {
    pub workspace_id: i64,
    pub email: String,
    pub role: Role,
    pub password_hash: String,
    pub link: Option<NewInvitation>,
}

/// An invitation link being made: its token's hash, and until when it works.
#[derive(Clone, Debug)]
pub struct NewInvitation {
    pub token_hash: String,
    pub expires_at: OffsetDateTime,
}

/// An invitation link as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invitation {
    pub user_id: i64,
    pub expires_at: OffsetDateTime,
    pub used_at: Option<OffsetDateTime>,
}

/// What a change to a member found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// Done, with the audit entry; the member as they were before.
    Done(User),
    /// Nobody with that id in that workspace (never there, or removed meanwhile).
    NoSuchMember,
    /// The member's role is no longer the one the change was decided on.
    RoleMoved,
    /// It would leave the workspace without an owner.
    LastOwner,
}

/// Takes the workspace's member lock for the rest of `tx` and reads the member and how many
/// owners there are. On Postgres the workspace row is the lock (`FOR UPDATE`): member changes of
/// one workspace take turns across instances; on SQLite the IMMEDIATE transaction already holds
/// the database's write lock.
async fn lock_and_read(
    tx: &mut Tx,
    workspace_id: i64,
    user_id: i64,
) -> Result<Option<(User, i64)>> {
    let lock = format!(
        "SELECT id FROM workspaces WHERE id = $1 {}",
        tx.row_lock("FOR UPDATE")
    );
    let _: Option<i64> = db_run!(tx.conn(), |c| {
        sqlx::query_scalar(&lock)
            .bind(workspace_id)
            .fetch_optional(c)
            .await
    })?;
    let row: Option<UserRow> = db_run!(tx.conn(), |c| {
        sqlx::query_as("SELECT * FROM users WHERE id = $1 AND workspace_id = $2")
            .bind(user_id)
            .bind(workspace_id)
            .fetch_optional(c)
            .await
    })?;
    let Some(row) = row else {
        return Ok(None);
    };
    let owners: i64 = db_run!(tx.conn(), |c| {
        sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE workspace_id = $1 AND role = 'owner'")
            .bind(workspace_id)
            .fetch_one(c)
            .await
    })?;
    Ok(Some((User::from(row), owners)))
}

pub(super) async fn invite_member(
    db: &Db,
    invitee: &Invitee,
    now: OffsetDateTime,
    audit: AuditEvent,
) -> Result<User> {
    let Invitee {
        workspace_id,
        email,
        role,
        password_hash,
        link,
    } = invitee;
    let (workspace_id, role) = (*workspace_id, *role);
    let mut tx = db.begin_immediate().await?;
    let id = insert_user(&mut tx, workspace_id, email, role, password_hash, now).await?;
    if let Some(link) = link {
        db_run!(tx.conn(), |c| {
            sqlx::query(
                "INSERT INTO invitations (token_hash, user_id, created_at, expires_at)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(&link.token_hash)
            .bind(id)
            .bind(ts(now))
            .bind(ts(link.expires_at))
            .execute(c)
            .await
            .map(|_| ())
        })?;
    }
    append_in(WriteTx::Sqlx(&mut tx), audit, now).await?;
    tx.commit().await?;
    Ok(User {
        id,
        workspace_id,
        email: email.clone(),
        role,
        password_hash: password_hash.clone(),
    })
}

pub(super) async fn set_member_role(
    db: &Db,
    workspace_id: i64,
    user_id: i64,
    from: Role,
    to: Role,
    now: OffsetDateTime,
    audit: AuditEvent,
) -> Result<MemberChange> {
    let mut tx = db.begin_immediate().await?;
    let Some((member, owners)) = lock_and_read(&mut tx, workspace_id, user_id).await? else {
        return Ok(MemberChange::NoSuchMember);
    };
    if member.role != from {
        return Ok(MemberChange::RoleMoved);
    }
    if from == Role::Owner && to != Role::Owner && owners <= 1 {
        return Ok(MemberChange::LastOwner);
    }
    db_run!(tx.conn(), |c| {
        sqlx::query("UPDATE users SET role = $1 WHERE id = $2")
            .bind(to.as_str())
            .bind(user_id)
            .execute(c)
            .await
            .map(|_| ())
    })?;
    append_in(WriteTx::Sqlx(&mut tx), audit, now).await?;
    tx.commit().await?;
    Ok(MemberChange::Done(member))
}

pub(super) async fn remove_member(
    db: &Db,
    workspace_id: i64,
    user_id: i64,
    now: OffsetDateTime,
    audit: AuditEvent,
) -> Result<MemberChange> {
    let mut tx = db.begin_immediate().await?;
    let Some((member, owners)) = lock_and_read(&mut tx, workspace_id, user_id).await? else {
        return Ok(MemberChange::NoSuchMember);
    };
    if member.role == Role::Owner && owners <= 1 {
        return Ok(MemberChange::LastOwner);
    }
    // Sessions, phones, enrollment codes and single sign-on links go with the row (ON DELETE
    // CASCADE), and the password with it: all at once, in this transaction.
    db_run!(tx.conn(), |c| {
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(user_id)
            .execute(c)
            .await
            .map(|_| ())
    })?;
    append_in(WriteTx::Sqlx(&mut tx), audit, now).await?;
    tx.commit().await?;
    Ok(MemberChange::Done(member))
}

pub(super) async fn invitation(db: &Db, token_hash: &str) -> Result<Option<Invitation>> {
    let row: Option<(i64, i64, Option<i64>)> = db_run!(db.read(), |c| {
        sqlx::query_as("SELECT user_id, expires_at, used_at FROM invitations WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(c)
            .await
    })?;
    Ok(row.map(|(user_id, expires_at, used_at)| Invitation {
        user_id,
        expires_at: from_unix(expires_at),
        used_at: used_at.map(from_unix),
    }))
}

pub(super) async fn accept_invitation(
    db: &Db,
    token_hash: &str,
    user_id: i64,
    password_hash: &str,
    now: OffsetDateTime,
    audit: AuditEvent,
) -> Result<bool> {
    let mut tx = db.begin_immediate().await?;
    // Spent here, once: of two acceptances racing, one finds it unused.
    let spent = db_run!(tx.conn(), |c| {
        sqlx::query(
            "UPDATE invitations SET used_at = $1
             WHERE token_hash = $2 AND user_id = $3 AND used_at IS NULL AND expires_at > $1",
        )
        .bind(ts(now))
        .bind(token_hash)
        .bind(user_id)
        .execute(c)
        .await
        .map(|done| done.rows_affected())
    })?;
    if spent == 0 {
        return Ok(false);
    }
    db_run!(tx.conn(), |c| {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(user_id)
            .execute(c)
            .await
            .map(|_| ())
    })?;
    append_in(WriteTx::Sqlx(&mut tx), audit, now).await?;
    tx.commit().await?;
    Ok(true)
}
