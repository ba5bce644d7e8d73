//! Workspaces, their people and the console's sessions: `Store`'s `mod accounts`.

use sqlx::FromRow;
use time::OffsetDateTime;

use super::db::{db_run, ts, Db, Tx};
use super::readers::Arg;
use super::tokens::upsert_token;
use super::{
    AuthMethod, Member, Result, Role, Session, StoredToken, User, Workspace, WorkspaceRow,
};
use crate::clock::from_unix;

/// How stale a session's `last_seen_at` may get before a request writes it again.
const SESSION_TOUCH_EVERY: time::Duration = time::Duration::seconds(30);

#[derive(FromRow)]
pub(super) struct UserRow {
    id: i64,
    workspace_id: i64,
    email: String,
    role: String,
    password_hash: String,
}

/// `UserRow`'s columns, in the order `UserRow::read_at` reads them.
const USER_COLUMNS: &str = "id, workspace_id, email, role, password_hash";

impl UserRow {
    /// The `USER_COLUMNS` of a row read by a SQLite reader, from column `first` on.
    fn read_at(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<UserRow> {
        Ok(UserRow {
            id: r.get(first)?,
            workspace_id: r.get(first + 1)?,
            email: r.get(first + 2)?,
            role: r.get(first + 3)?,
            password_hash: r.get(first + 4)?,
        })
    }
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> User {
        User {
            id: row.id,
            workspace_id: row.workspace_id,
            email: row.email,
            role: Role::parse(&row.role).unwrap_or(Role::Member),
            password_hash: row.password_hash,
        }
    }
}

#[derive(FromRow)]
struct MemberRow {
    #[sqlx(flatten)]
    user: UserRow,
    devices: i64,
    devices_last_seen_at: Option<i64>,
    last_sign_in_at: Option<i64>,
    sso_linked: bool,
}

#[derive(FromRow)]
struct SessionRow {
    id_hash: String,
    user_id: i64,
    created_at: i64,
    last_seen_at: i64,
    expires_at: i64,
    authenticated_at: i64,
    method: String,
}

/// Adds a person to a workspace inside `tx`; returns their id. `Conflict` when the e-mail (in any
/// case) is already there. Workspace creation, `assent member add` and invitations all add people
/// here.
pub(super) async fn insert_user(
    tx: &mut Tx,
    workspace_id: i64,
    email: &str,
    role: Role,
    password_hash: &str,
    now: OffsetDateTime,
) -> Result<i64> {
    Ok(db_run!(tx.conn(), |c| {
        sqlx::query_scalar(
            "INSERT INTO users (workspace_id, email, email_lower, role, password_hash, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(workspace_id)
        .bind(email)
        .bind(email.to_lowercase())
        .bind(role.as_str())
        .bind(password_hash)
        .bind(ts(now))
        .fetch_one(c)
        .await
    })?)
}

pub(super) async fn count_workspaces(db: &Db) -> Result<i64> {
    Ok(db_run!(db.read(), |c| {
        sqlx::query_scalar("SELECT COUNT(*) FROM workspaces WHERE slug <> '_staff'")
            .fetch_one(c)
            .await
    })?)
}

pub(super) async fn create_workspace(
    db: &Db,
    slug: &str,
    name: &str,
    owner_email: &str,
    owner_password_hash: &str,
    mut token: StoredToken,
    now: OffsetDateTime,
) -> Result<Workspace> {
    let mut tx = db.begin().await?;
    let id: i64 = db_run!(tx.conn(), |c| {
        sqlx::query_scalar(
            "INSERT INTO workspaces (slug, name, created_at) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(slug)
        .bind(name)
        .bind(ts(now))
        .fetch_one(c)
        .await
    })?;
    insert_user(
        &mut tx,
        id,
        owner_email,
        Role::Owner,
        owner_password_hash,
        now,
    )
    .await?;
    token.workspace_id = id;
    upsert_token(&mut tx, &token).await?;
    tx.commit().await?;
    Ok(Workspace {
        id,
        slug: slug.to_owned(),
        name: name.to_owned(),
        created_at: from_unix(ts(now)),
    })
}

pub(super) async fn workspace_by_slug(db: &Db, slug: &str) -> Result<Option<Workspace>> {
    let row: Option<WorkspaceRow> = db_run!(db.read(), |c| {
        sqlx::query_as("SELECT * FROM workspaces WHERE slug = $1")
            .bind(slug)
            .fetch_optional(c)
            .await
    })?;
    Ok(row.map(Workspace::from))
}

pub(super) async fn workspace_by_id(db: &Db, id: i64) -> Result<Option<Workspace>> {
    let row: Option<WorkspaceRow> = db_run!(db.read(), |c| {
        sqlx::query_as("SELECT * FROM workspaces WHERE id = $1")
            .bind(id)
            .fetch_optional(c)
            .await
    })?;
    Ok(row.map(Workspace::from))
}

pub(super) async fn create_user(
    db: &Db,
    workspace_id: i64,
    email: &str,
    role: Role,
    password_hash: &str,
    now: OffsetDateTime,
) -> Result<User> {
    let mut tx = db.begin().await?;
    let id = insert_user(&mut tx, workspace_id, email, role, password_hash, now).await?;
    tx.commit().await?;
    Ok(User {
        id,
        workspace_id,
        email: email.to_owned(),
        role,
        password_hash: password_hash.to_owned(),
    })
}

pub(super) async fn user_by_email(db: &Db, workspace_id: i64, email: &str) -> Result<Option<User>> {
    let row: Option<UserRow> = db_run!(db.read(), |c| {
        sqlx::query_as("SELECT * FROM users WHERE workspace_id = $1 AND email_lower = $2")
            .bind(workspace_id)
            .bind(email.to_lowercase())
            .fetch_optional(c)
            .await
    })?;
    Ok(row.map(User::from))
}

/// Read by every call a phone makes.
pub(super) async fn user_by_id(db: &Db, id: i64) -> Result<Option<User>> {
    let row = db
        .hot_row(
            format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"),
            vec![Arg::Int(id)],
            |r| UserRow::read_at(r, 0),
        )
        .await?;
    Ok(row.map(User::from))
}

pub(super) async fn members(db: &Db, workspace_id: i64) -> Result<Vec<Member>> {
    let rows: Vec<MemberRow> = db_run!(db.read(), |c| {
        sqlx::query_as(
            "SELECT u.*, (SELECT COUNT(*) FROM devices d WHERE d.user_id = u.id) AS devices,
                    (SELECT MAX(d.last_seen_at) FROM devices d WHERE d.user_id = u.id)
                      AS devices_last_seen_at,
                    EXISTS (SELECT 1 FROM sso_links l WHERE l.user_id = u.id) AS sso_linked
             FROM users u WHERE u.workspace_id = $1 ORDER BY u.email_lower",
        )
        .bind(workspace_id)
        .fetch_all(c)
        .await
    })?;
    Ok(rows
        .into_iter()
        .map(|row| Member {
            user: row.user.into(),
            devices: row.devices,
            devices_last_seen_at: row.devices_last_seen_at.map(from_unix),
            last_sign_in_at: row.last_sign_in_at.map(from_unix),
            sso_linked: row.sso_linked,
        })
        .collect())
}

pub(super) async fn delete_user(db: &Db, id: i64) -> Result<bool> {
    // Sessions, devices and enrollment codes go with it (ON DELETE CASCADE).
    let deleted = db_run!(db.write().await?.on(), |c| {
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(c)
            .await
            .map(|done| done.rows_affected())
    })?;
    Ok(deleted > 0)
}

pub(super) async fn users_with_role(db: &Db, workspace_id: i64, role: Role) -> Result<Vec<User>> {
    let roles: &[&str] = match role {
        Role::Owner => &["owner"],
        Role::Admin => &["owner", "admin"],
        Role::Member => &["owner", "admin", "member"],
    };
    let rows: Vec<UserRow> = db_run!(db.read(), |c| {
        sqlx::query_as(
            "SELECT * FROM users WHERE workspace_id = $1 AND role IN ($2, $3, $4) ORDER BY id",
        )
        .bind(workspace_id)
        .bind(roles[0])
        .bind(roles.get(1).copied().unwrap_or(roles[0]))
        .bind(roles.get(2).copied().unwrap_or(roles[0]))
        .fetch_all(c)
        .await
    })?;
    Ok(rows.into_iter().map(User::from).collect())
}

pub(super) async fn create_session(db: &Db, s: &Session) -> Result<()> {
    let mut tx = db.begin().await?;
    db_run!(tx.conn(), |c| {
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, created_at, last_seen_at, expires_at,
               authenticated_at, method) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&s.id_hash)
        .bind(s.user_id)
        .bind(ts(s.created_at))
        .bind(ts(s.last_seen_at))
        .bind(ts(s.expires_at))
        .bind(ts(s.authenticated_at))
        .bind(s.method.as_str())
        .execute(c)
        .await
        .map(|_| ())
    })?;
    db_run!(tx.conn(), |c| {
        sqlx::query("UPDATE users SET last_sign_in_at = $1 WHERE id = $2")
            .bind(ts(s.created_at))
            .bind(s.user_id)
            .execute(c)
            .await
            .map(|_| ())
    })?;
    tx.commit().await
}

/// A session with its person and their workspace: one row of `SESSION_OWNER`.
#[derive(FromRow)]
struct SessionOwnerRow {
    #[sqlx(flatten)]
    session: SessionRow,
    #[sqlx(flatten)]
    user: UserRow,
    ws_slug: String,
    ws_name: String,
    ws_created_at: i64,
}

/// Every request of the console reads its session, its person and their workspace: one
/// statement, not three (each a round trip to a connection on SQLite's sqlx driver, issue 18).
/// The column order is `SessionOwnerRow::from_reader`'s.
const SESSION_OWNER: &str = "SELECT s.id_hash, s.user_id, s.created_at, s.last_seen_at,
       s.expires_at, s.authenticated_at, s.method,
       u.id, u.workspace_id, u.email, u.role, u.password_hash,
       w.slug AS ws_slug, w.name AS ws_name, w.created_at AS ws_created_at
     FROM sessions s
     JOIN users u ON u.id = s.user_id
     JOIN workspaces w ON w.id = u.workspace_id
     WHERE s.id_hash = $1";

impl SessionOwnerRow {
    fn from_reader(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionOwnerRow> {
        Ok(SessionOwnerRow {
            session: SessionRow {
                id_hash: r.get(0)?,
                user_id: r.get(1)?,
                created_at: r.get(2)?,
                last_seen_at: r.get(3)?,
                expires_at: r.get(4)?,
                authenticated_at: r.get(5)?,
                method: r.get(6)?,
            },
            user: UserRow::read_at(r, 7)?,
            ws_slug: r.get(12)?,
            ws_name: r.get(13)?,
            ws_created_at: r.get(14)?,
        })
    }
}

pub(super) async fn touch_session(
    db: &Db,
    id_hash: &str,
    now: OffsetDateTime,
    idle_cutoff: OffsetDateTime,
) -> Result<Option<(Session, User, Workspace)>> {
    let row = db
        .hot_row(
            SESSION_OWNER.to_owned(),
            vec![Arg::Text(id_hash.to_owned())],
            SessionOwnerRow::from_reader,
        )
        .await?;
    let Some(SessionOwnerRow {
        session: row,
        user,
        ws_slug,
        ws_name,
        ws_created_at,
    }) = row
    else {
        return Ok(None);
    };
    let user = User::from(user);
    let workspace = Workspace {
        id: user.workspace_id,
        slug: ws_slug,
        name: ws_name,
        created_at: from_unix(ws_created_at),
    };
    let mut session = Session {
        id_hash: row.id_hash,
        user_id: row.user_id,
        created_at: from_unix(row.created_at),
        last_seen_at: from_unix(row.last_seen_at),
        expires_at: from_unix(row.expires_at),
        authenticated_at: from_unix(row.authenticated_at),
        method: AuthMethod::parse(&row.method),
    };
    if session.last_seen_at <= idle_cutoff || session.expires_at <= now {
        delete_session(db, id_hash).await?;
        return Ok(None);
    }
    // Slide the idle expiry, but write at most every SESSION_TOUCH_EVERY: a read-mostly hot path
    // keeps SQLite's one write lock free, and Postgres' row versions (and WAL) down.
    if now - session.last_seen_at >= SESSION_TOUCH_EVERY {
        db_run!(db.write().await?.on(), |c| {
            sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id_hash = $2")
                .bind(ts(now))
                .bind(id_hash)
                .execute(c)
                .await
                .map(|_| ())
        })?;
        session.last_seen_at = now;
    }
    Ok(Some((session, user, workspace)))
}

pub(super) async fn delete_session(db: &Db, id_hash: &str) -> Result<()> {
    Ok(db_run!(db.write().await?.on(), |c| {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(c)
            .await
            .map(|_| ())
    })?)
}

pub(super) async fn reauthenticate_session(
    db: &Db,
    id_hash: &str,
    now: OffsetDateTime,
) -> Result<bool> {
    let updated = db_run!(db.write().await?.on(), |c| {
        sqlx::query("UPDATE sessions SET authenticated_at = $1 WHERE id_hash = $2")
            .bind(ts(now))
            .bind(id_hash)
            .execute(c)
            .await
            .map(|done| done.rows_affected())
    })?;
    Ok(updated > 0)
}

pub(super) async fn unauthenticate_sessions(db: &Db, user_id: i64) -> Result<u64> {
    Ok(db_run!(db.write().await?.on(), |c| {
        sqlx::query("UPDATE sessions SET authenticated_at = 0 WHERE user_id = $1")
            .bind(user_id)
            .execute(c)
            .await
            .map(|done| done.rows_affected())
    })?)
}

pub(super) async fn end_sessions_but_owners(db: &Db, workspace_id: i64) -> Result<u64> {
    Ok(db_run!(db.write().await?.on(), |c| {
        sqlx::query(
            "DELETE FROM sessions WHERE user_id IN
               (SELECT id FROM users WHERE workspace_id = $1 AND role <> 'owner')",
        )
        .bind(workspace_id)
        .execute(c)
        .await
        .map(|done| done.rows_affected())
    })?)
}
