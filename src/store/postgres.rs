//! The shared store for several instances: Postgres, with the same behaviour as `sqlite.rs` (the
//! reference). Times are Unix seconds in BIGINT columns, blobs BYTEA, JSON in JSONB (read back as
//! text, so sqlx needs no JSON feature).

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Connection, PgPool, Row};
use std::str::FromStr;
use std::time::Duration;
use time::OffsetDateTime;

use super::*;
use crate::clock::from_unix;
use crate::domain::audit;
use crate::domain::policy::TokenViewers;

/// How stale a session's `last_seen_at` may get before a request writes it again.
const SESSION_TOUCH_EVERY: time::Duration = time::Duration::seconds(30);

/// How long a request waits for a connection before it answers 503: when Postgres is down, the
/// pool keeps trying to connect for this long, then gives up, so requests fail fast, not hang.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long `/readyz` waits for the database.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

pub struct PgStore {
    pool: PgPool,
}

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

/// The columns of `devices`, JSON read back as text.
const DEVICE_COLUMNS: &str =
    "id, user_id, name, platform, apns_environment, public_key::text AS public_key, \
     push_key_id, push_nonce, push_ciphertext, push_token_invalid, created_at, last_seen_at";

impl PgStore {
    /// Connects to the database at `url` and runs the migrations (under Postgres' advisory lock,
    /// so instances starting together migrate once). Errors never repeat the URL: it may hold a
    /// password.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| anyhow::anyhow!("ASSENT_DATABASE_URL: not a valid postgres:// URL"))?;
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A connection that died with the server (a Postgres restart) is noticed before use
            // (test_before_acquire, on by default) and replaced; idle ones are recycled anyway.
            .idle_timeout(Duration::from_secs(300))
            // A connection must never come back inside a transaction (issue 13): sqlx rolls back
            // a dropped `Transaction`, and this discards anything that still slipped through.
            .after_release(|conn, _| Box::pin(async move { Ok(!conn.is_in_transaction()) }))
            .connect_with(options)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to the Postgres database: {e}"))?;
        sqlx::migrate!("migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| anyhow::anyhow!("Postgres migrations failed: {e}"))?;
        Ok(Self { pool })
    }

    /// The pool, for the stores of other concerns on the same database (`sso_postgres.rs`).
    pub fn pool(&self) -> PgPool {
        self.pool.clone()
    }

    fn workspace(row: &PgRow) -> Workspace {
        Workspace {
            id: row.get("id"),
            slug: row.get("slug"),
            name: row.get("name"),
            created_at: from_unix(row.get("created_at")),
        }
    }

    fn user(row: &PgRow) -> User {
        User {
            id: row.get("id"),
            workspace_id: row.get("workspace_id"),
            email: row.get("email"),
            role: Role::parse(row.get::<&str, _>("role")).unwrap_or(Role::Member),
            password_hash: row.get("password_hash"),
        }
    }

    fn device(row: &PgRow) -> Device {
        let push_token = match (
            row.get::<Option<String>, _>("push_key_id"),
            row.get::<Option<Vec<u8>>, _>("push_nonce"),
            row.get::<Option<Vec<u8>>, _>("push_ciphertext"),
        ) {
            (Some(key_id), Some(nonce), Some(ciphertext)) => Some(Sealed {
                key_id,
                nonce,
                ciphertext,
            }),
            _ => None,
        };
        Device {
            id: row.get("id"),
            user_id: row.get("user_id"),
            name: row.get("name"),
            platform: Platform::parse(row.get::<&str, _>("platform")).unwrap_or(Platform::Fcm),
            apns_environment: row.get("apns_environment"),
            public_key: serde_json::from_str(row.get::<&str, _>("public_key")).unwrap_or_default(),
            push_token,
            push_token_invalid: row.get("push_token_invalid"),
            created_at: from_unix(row.get("created_at")),
            last_seen_at: row.get::<Option<i64>, _>("last_seen_at").map(from_unix),
        }
    }

    fn token(row: &PgRow) -> StoredToken {
        let hash: Vec<u8> = row.get("token_hash");
        StoredToken {
            workspace_id: row.get("workspace_id"),
            token_hash: hash.try_into().unwrap_or([0; 32]),
            sealed: Sealed {
                key_id: row.get("key_id"),
                nonce: row.get("nonce"),
                ciphertext: row.get("ciphertext"),
            },
            created_at: from_unix(row.get("created_at")),
            created_by: row.get("created_by"),
        }
    }
}

const UPSERT_TOKEN: &str = "INSERT INTO scim_tokens (workspace_id, token_hash, key_id, nonce, ciphertext, created_at, created_by)
     VALUES ($1, $2, $3, $4, $5, $6, $7)
     ON CONFLICT (workspace_id) DO UPDATE SET token_hash = EXCLUDED.token_hash, key_id = EXCLUDED.key_id,
       nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext, created_at = EXCLUDED.created_at,
       created_by = EXCLUDED.created_by";

fn bind_token<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    t: &'q StoredToken,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q.bind(t.workspace_id)
        .bind(t.token_hash.as_slice())
        .bind(&t.sealed.key_id)
        .bind(&t.sealed.nonce)
        .bind(&t.sealed.ciphertext)
        .bind(ts(t.created_at))
        .bind(&t.created_by)
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<()> {
        // `/readyz` answers within a health checker's timeout even while the pool waits out
        // ACQUIRE_TIMEOUT for a database that is down.
        match tokio::time::timeout(PING_TIMEOUT, sqlx::query("SELECT 1").execute(&self.pool)).await
        {
            Ok(done) => done.map(|_| ()).map_err(unavailable),
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer within {PING_TIMEOUT:?}"
            ))),
        }
    }

    async fn count_workspaces(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM workspaces WHERE slug <> '_staff'")
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)
    }

    async fn create_workspace(
        &self,
        slug: &str,
        name: &str,
        owner_email: &str,
        owner_password_hash: &str,
        mut token: StoredToken,
        now: OffsetDateTime,
    ) -> Result<Workspace> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO workspaces (slug, name, created_at) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(slug)
        .bind(name)
        .bind(ts(now))
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?;
        sqlx::query(
            "INSERT INTO users (workspace_id, email, email_lower, role, password_hash, created_at) VALUES ($1, $2, $3, 'owner', $4, $5)",
        )
        .bind(id)
        .bind(owner_email)
        .bind(owner_email.to_lowercase())
        .bind(owner_password_hash)
        .bind(ts(now))
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        token.workspace_id = id;
        bind_token(sqlx::query(UPSERT_TOKEN), &token)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Workspace {
            id,
            slug: slug.to_owned(),
            name: name.to_owned(),
            created_at: from_unix(ts(now)),
        })
    }

    async fn workspace_by_slug(&self, slug: &str) -> Result<Option<Workspace>> {
        let row = sqlx::query("SELECT * FROM workspaces WHERE slug = $1")
            .bind(slug)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(row.as_ref().map(Self::workspace))
    }

    async fn workspace_by_id(&self, id: i64) -> Result<Option<Workspace>> {
        let row = sqlx::query("SELECT * FROM workspaces WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(row.as_ref().map(Self::workspace))
    }

    async fn create_user(
        &self,
        workspace_id: i64,
        email: &str,
        role: Role,
        password_hash: &str,
        now: OffsetDateTime,
    ) -> Result<User> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO users (workspace_id, email, email_lower, role, password_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(workspace_id)
        .bind(email)
        .bind(email.to_lowercase())
        .bind(role.as_str())
        .bind(password_hash)
        .bind(ts(now))
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(User {
            id,
            workspace_id,
            email: email.to_owned(),
            role,
            password_hash: password_hash.to_owned(),
        })
    }

    async fn user_by_email(&self, workspace_id: i64, email: &str) -> Result<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE workspace_id = $1 AND email_lower = $2")
            .bind(workspace_id)
            .bind(email.to_lowercase())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(row.as_ref().map(Self::user))
    }

    async fn members(&self, workspace_id: i64) -> Result<Vec<Member>> {
        let rows = sqlx::query(
            "SELECT u.*, (SELECT COUNT(*) FROM devices d WHERE d.user_id = u.id) AS devices,
                    EXISTS (SELECT 1 FROM sso_links l WHERE l.user_id = u.id) AS sso_linked
             FROM users u WHERE u.workspace_id = $1 ORDER BY u.email_lower",
        )
        .bind(workspace_id)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|row| Member {
                user: Self::user(row),
                devices: row.get("devices"),
                last_sign_in_at: row.get::<Option<i64>, _>("last_sign_in_at").map(from_unix),
                sso_linked: row.get("sso_linked"),
            })
            .collect())
    }

    async fn user_by_id(&self, id: i64) -> Result<Option<User>> {
        let row = sqlx::query("SELECT * FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(row.as_ref().map(Self::user))
    }

    async fn delete_user(&self, id: i64) -> Result<bool> {
        // Sessions, devices and enrollment codes go with it (ON DELETE CASCADE).
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|done| done.rows_affected() > 0)
            .map_err(unavailable)
    }

    async fn create_session(&self, s: &Session) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        sqlx::query("INSERT INTO sessions (id_hash, user_id, created_at, last_seen_at, expires_at, authenticated_at, method) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&s.id_hash)
            .bind(s.user_id)
            .bind(ts(s.created_at))
            .bind(ts(s.last_seen_at))
            .bind(ts(s.expires_at))
            .bind(ts(s.authenticated_at))
            .bind(s.method.as_str())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        sqlx::query("UPDATE users SET last_sign_in_at = $1 WHERE id = $2")
            .bind(ts(s.created_at))
            .bind(s.user_id)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    async fn touch_session(
        &self,
        id_hash: &str,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> Result<Option<Session>> {
        let row = sqlx::query("SELECT * FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut session = Session {
            id_hash: row.get("id_hash"),
            user_id: row.get("user_id"),
            created_at: from_unix(row.get("created_at")),
            last_seen_at: from_unix(row.get("last_seen_at")),
            expires_at: from_unix(row.get("expires_at")),
            authenticated_at: from_unix(row.get("authenticated_at")),
            method: AuthMethod::parse(row.get::<&str, _>("method")),
        };
        if session.last_seen_at <= idle_cutoff || session.expires_at <= now {
            self.delete_session(id_hash).await?;
            return Ok(None);
        }
        // Slide the idle expiry, but write at most every SESSION_TOUCH_EVERY: a read-mostly hot
        // path keeps row versions (and WAL) down.
        if now - session.last_seen_at >= SESSION_TOUCH_EVERY {
            sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id_hash = $2")
                .bind(ts(now))
                .bind(id_hash)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
            session.last_seen_at = now;
        }
        Ok(Some(session))
    }

    async fn end_sessions_but_owners(&self, workspace_id: i64) -> Result<u64> {
        sqlx::query(
            "DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE workspace_id = $1 AND role <> 'owner')",
        )
        .bind(workspace_id)
        .execute(&self.pool)
        .await
        .map(|done| done.rows_affected())
        .map_err(unavailable)
    }

    async fn reauthenticate_session(&self, id_hash: &str, now: OffsetDateTime) -> Result<bool> {
        sqlx::query("UPDATE sessions SET authenticated_at = $1 WHERE id_hash = $2")
            .bind(ts(now))
            .bind(id_hash)
            .execute(&self.pool)
            .await
            .map(|done| done.rows_affected() > 0)
            .map_err(unavailable)
    }

    async fn delete_session(&self, id_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn create_enrollment(
        &self,
        code_hash: &str,
        user_id: i64,
        now: OffsetDateTime,
        expires_at: OffsetDateTime,
        first_device: bool,
    ) -> Result<()> {
        sqlx::query("INSERT INTO enrollment_codes (code_hash, user_id, created_at, expires_at, first_device) VALUES ($1, $2, $3, $4, $5)")
            .bind(code_hash)
            .bind(user_id)
            .bind(ts(now))
            .bind(ts(expires_at))
            .bind(first_device)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn enroll_device(
        &self,
        code_hash: &str,
        d: NewDevice,
        now: OffsetDateTime,
    ) -> Result<Enrollment> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // Spend the code only if it is unspent and unexpired: the UPDATE is the single winner. A
        // concurrent UPDATE of the same row waits for this transaction and then re-checks
        // `used_at IS NULL` (READ COMMITTED), so it finds nothing to spend.
        let spent: Option<(i64, bool)> = sqlx::query_as(
            "UPDATE enrollment_codes SET used_at = $1 WHERE code_hash = $2 AND used_at IS NULL AND expires_at > $1 RETURNING user_id, first_device",
        )
        .bind(ts(now))
        .bind(code_hash)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let Some((user_id, first_device)) = spent else {
            let row = sqlx::query("SELECT used_at FROM enrollment_codes WHERE code_hash = $1")
                .bind(code_hash)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
            return Ok(match row {
                None => Enrollment::Unknown,
                Some(row) if row.get::<Option<i64>, _>("used_at").is_some() => Enrollment::Spent,
                Some(_) => Enrollment::Expired,
            });
        };
        if first_device {
            // Two first-phone codes of one person redeemed at once: the second waits here and
            // then sees the first one's phone.
            sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
                .bind(user_id)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            let has_one: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM devices WHERE user_id = $1)")
                    .bind(user_id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(unavailable)?;
            if has_one {
                // A code given without any phone's approval adds only a first phone.
                tx.commit().await.map_err(unavailable)?;
                return Ok(Enrollment::NotFirst);
            }
        }
        let (key_id, nonce, ciphertext) = match &d.push_token {
            Some(s) => (
                Some(s.key_id.clone()),
                Some(s.nonce.clone()),
                Some(s.ciphertext.clone()),
            ),
            None => (None, None, None),
        };
        sqlx::query(
            "INSERT INTO devices (id, user_id, name, platform, apns_environment, public_key, push_key_id, push_nonce, push_ciphertext, created_at)
             VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10)",
        )
        .bind(&d.id)
        .bind(user_id)
        .bind(&d.name)
        .bind(d.platform.as_str())
        .bind(&d.apns_environment)
        .bind(d.public_key.to_string())
        .bind(key_id)
        .bind(nonce)
        .bind(ciphertext)
        .bind(ts(now))
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Enrollment::Enrolled { user_id })
    }

    async fn device(&self, id: &str) -> Result<Option<Device>> {
        let row = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(row.as_ref().map(Self::device))
    }

    async fn devices_of_user(&self, user_id: i64) -> Result<Vec<Device>> {
        let rows = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id = $1 ORDER BY created_at, id"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(rows.iter().map(Self::device).collect())
    }

    async fn count_devices_of_user(&self, user_id: i64) -> Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)
    }

    async fn delete_device(&self, user_id: i64, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM devices WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_devices_of_user(&self, user_id: i64) -> Result<u64> {
        sqlx::query("DELETE FROM devices WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map(|done| done.rows_affected())
            .map_err(unavailable)
    }

    async fn set_push_token(&self, id: &str, token: Option<Sealed>) -> Result<()> {
        let (key_id, nonce, ciphertext) = match token {
            Some(s) => (Some(s.key_id), Some(s.nonce), Some(s.ciphertext)),
            None => (None, None, None),
        };
        sqlx::query(
            "UPDATE devices SET push_key_id = $1, push_nonce = $2, push_ciphertext = $3, push_token_invalid = FALSE WHERE id = $4",
        )
        .bind(key_id)
        .bind(nonce)
        .bind(ciphertext)
        .bind(id)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(unavailable)
    }

    async fn mark_push_token_invalid(&self, id: &str) -> Result<()> {
        sqlx::query("UPDATE devices SET push_token_invalid = TRUE WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn touch_device(&self, id: &str, now: OffsetDateTime) -> Result<()> {
        sqlx::query("UPDATE devices SET last_seen_at = $1 WHERE id = $2")
            .bind(ts(now))
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn remember_jti(
        &self,
        device_id: &str,
        jti: &str,
        keep_until: OffsetDateTime,
    ) -> Result<bool> {
        // A concurrent insert of the same id waits for the first and then does nothing: one
        // winner across instances.
        let inserted = sqlx::query(
            "INSERT INTO used_jtis (device_id, jti, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(device_id)
        .bind(jti)
        .bind(ts(keep_until))
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn prune(&self, now: OffsetDateTime) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        for sql in [
            "DELETE FROM used_jtis WHERE expires_at < $1",
            "DELETE FROM sessions WHERE expires_at < $1",
            "DELETE FROM enrollment_codes WHERE expires_at < $1 - 86400",
            "DELETE FROM scim_token_grace WHERE expires_at <= $1",
        ] {
            sqlx::query(sql)
                .bind(ts(now))
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn put_scim_token(
        &self,
        token: StoredToken,
        grace_until: Option<OffsetDateTime>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // Two rotations of one workspace at once take turns, so the second keeps the first's
        // token in grace (not the same old one twice).
        sqlx::query("SELECT 1 FROM scim_tokens WHERE workspace_id = $1 FOR UPDATE")
            .bind(token.workspace_id)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        sqlx::query("DELETE FROM scim_token_grace WHERE workspace_id = $1")
            .bind(token.workspace_id)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        if let Some(until) = grace_until {
            sqlx::query(
                "INSERT INTO scim_token_grace (token_hash, workspace_id, expires_at) SELECT token_hash, workspace_id, $1 FROM scim_tokens WHERE workspace_id = $2",
            )
            .bind(ts(until))
            .bind(token.workspace_id)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        bind_token(sqlx::query(UPSERT_TOKEN), &token)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    async fn workspace_by_grace_hash(
        &self,
        token_hash: &[u8; 32],
        now: OffsetDateTime,
    ) -> Result<Option<(Workspace, [u8; 32])>> {
        let row = sqlx::query(
            "SELECT w.*, g.token_hash FROM scim_token_grace g JOIN workspaces w ON w.id = g.workspace_id WHERE g.token_hash = $1 AND g.expires_at > $2",
        )
        .bind(token_hash.as_slice())
        .bind(ts(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(row.map(|row| {
            let hash: Vec<u8> = row.get("token_hash");
            (Self::workspace(&row), hash.try_into().unwrap_or([0; 32]))
        }))
    }

    async fn grace_until(
        &self,
        workspace_id: i64,
        now: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>> {
        let until: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(expires_at) FROM scim_token_grace WHERE workspace_id = $1 AND expires_at > $2",
        )
        .bind(workspace_id)
        .bind(ts(now))
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(until.map(from_unix))
    }

    async fn policy(&self, workspace_id: i64) -> Result<Policy> {
        let row = sqlx::query(
            "SELECT two_person_rotation, rotation_grace_minutes, token_viewers FROM workspace_policies WHERE workspace_id = $1",
        )
        .bind(workspace_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(match row {
            None => Policy::default(),
            Some(row) => Policy {
                two_person_rotation: row.get("two_person_rotation"),
                rotation_grace_minutes: row
                    .get::<i64, _>("rotation_grace_minutes")
                    .clamp(0, i64::from(crate::domain::policy::MAX_GRACE_MINUTES))
                    as u32,
                token_viewers: TokenViewers::parse(row.get("token_viewers"))
                    .unwrap_or(TokenViewers::Owners),
            },
        })
    }

    async fn put_policy(
        &self,
        workspace_id: i64,
        policy: &Policy,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO workspace_policies (workspace_id, two_person_rotation, rotation_grace_minutes, token_viewers, updated_at, updated_by) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (workspace_id) DO UPDATE SET two_person_rotation = excluded.two_person_rotation, rotation_grace_minutes = excluded.rotation_grace_minutes, token_viewers = excluded.token_viewers, updated_at = excluded.updated_at, updated_by = excluded.updated_by",
        )
        .bind(workspace_id)
        .bind(policy.two_person_rotation)
        .bind(i64::from(policy.rotation_grace_minutes))
        .bind(policy.token_viewers.as_str())
        .bind(ts(now))
        .bind(by)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(unavailable)
    }

    async fn users_with_role(&self, workspace_id: i64, role: Role) -> Result<Vec<User>> {
        let roles: &[&str] = match role {
            Role::Owner => &["owner"],
            Role::Admin => &["owner", "admin"],
            Role::Member => &["owner", "admin", "member"],
        };
        let rows = sqlx::query(
            "SELECT * FROM users WHERE workspace_id = $1 AND role IN ($2, $3, $4) ORDER BY id",
        )
        .bind(workspace_id)
        .bind(roles[0])
        .bind(roles.get(1).copied().unwrap_or(roles[0]))
        .bind(roles.get(2).copied().unwrap_or(roles[0]))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(rows.iter().map(Self::user).collect())
    }

    async fn scim_token(&self, workspace_id: i64) -> Result<Option<StoredToken>> {
        let row = sqlx::query("SELECT * FROM scim_tokens WHERE workspace_id = $1")
            .bind(workspace_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(row.as_ref().map(Self::token))
    }

    async fn workspace_by_token_hash(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<(Workspace, [u8; 32])>> {
        let row = sqlx::query(
            "SELECT w.*, t.token_hash FROM scim_tokens t JOIN workspaces w ON w.id = t.workspace_id WHERE t.token_hash = $1",
        )
        .bind(token_hash.as_slice())
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(row.map(|row| {
            let hash: Vec<u8> = row.get("token_hash");
            (Self::workspace(&row), hash.try_into().unwrap_or([0; 32]))
        }))
    }

    async fn append_audit(&self, e: AuditEvent, now: OffsetDateTime) -> Result<()> {
        let chain = audit::chain_key(e.workspace_id);
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // One append per chain at a time, across instances: the lock is held until the
        // transaction ends. Chains whose keys collide modulo 2^31 merely wait for each other.
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(AUDIT_LOCK_CLASS)
            .bind(chain.rem_euclid(i32::MAX as i64) as i32)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        let last: Option<(i64, Option<String>)> = sqlx::query_as(
            "SELECT seq, hash FROM audit_log WHERE COALESCE(workspace_id, 0) = $1 AND seq IS NOT NULL
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(chain)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let (seq, prev_hash) =
            audit::next_link(last.map(|(seq, hash)| (seq, hash.unwrap_or_default())));
        let hash = e.content(seq, ts(now), &prev_hash).hash();
        sqlx::query(
            "INSERT INTO audit_log (workspace_id, at, kind, actor, ip, device_id, detail, seq, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10)",
        )
        .bind(e.workspace_id)
        .bind(ts(now))
        .bind(e.kind)
        .bind(&e.actor)
        .bind(&e.ip)
        .bind(&e.device_id)
        .bind(audit::canonical_json(&e.detail).to_string())
        .bind(seq)
        .bind(&prev_hash)
        .bind(&hash)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    async fn audit_page(&self, workspace_id: i64, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log
             WHERE workspace_id = $1 AND id < $2 AND ($3::text IS NULL OR kind = $3)
               AND at >= $4 AND at < $5
             ORDER BY id DESC LIMIT $6"
        ))
        .bind(workspace_id)
        .bind(f.before_id.unwrap_or(i64::MAX))
        .bind(&f.kind)
        .bind(f.since.map_or(i64::MIN, ts))
        .bind(f.until.map_or(i64::MAX, ts))
        .bind(f.limit)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(rows.iter().map(audit_entry).collect())
    }

    async fn audit_chain(
        &self,
        workspace_id: Option<i64>,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE COALESCE(workspace_id, 0) = $1 AND seq > $2
             ORDER BY seq LIMIT $3"
        ))
        .bind(audit::chain_key(workspace_id))
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(rows.iter().map(audit_entry).collect())
    }

    async fn audit_unchained(
        &self,
        workspace_id: Option<i64>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE COALESCE(workspace_id, 0) = $1 AND seq IS NULL
               AND id > $2
             ORDER BY id LIMIT $3"
        ))
        .bind(audit::chain_key(workspace_id))
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(rows.iter().map(audit_entry).collect())
    }
}

/// The first key of the advisory locks that serialize appends to one audit chain ("AUDT").
const AUDIT_LOCK_CLASS: i32 = 0x4155_4454;

/// The columns of `audit_log`, JSON read back as text.
const AUDIT_COLUMNS: &str =
    "id, workspace_id, at, kind, actor, ip, device_id, detail::text AS detail, \
     seq, prev_hash, hash";

fn audit_entry(row: &PgRow) -> AuditEntry {
    AuditEntry {
        id: row.get("id"),
        workspace_id: row.get("workspace_id"),
        at: from_unix(row.get("at")),
        kind: row.get("kind"),
        actor: row.get("actor"),
        ip: row.get("ip"),
        device_id: row.get("device_id"),
        detail: serde_json::from_str(row.get::<&str, _>("detail")).unwrap_or_default(),
        seq: row.get("seq"),
        prev_hash: row.get("prev_hash"),
        hash: row.get("hash"),
    }
}
