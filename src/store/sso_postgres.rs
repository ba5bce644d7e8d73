//! `SsoStore` on Postgres (migrations/postgres/0004_sso.sql, run by `PgStore::open` with the rest),
//! with the behaviour of `sso_sqlite.rs`.

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};
use std::str::FromStr;
use std::time::Duration;
use time::OffsetDateTime;

use super::sso::{PendingSignIn, SsoConfig, SsoStore, Taken};
use super::{Result, Role, StoreError};
use crate::clock::from_unix;
use crate::domain::crypto::Sealed;

pub struct PgSsoStore {
    pool: PgPool,
}

impl PgSsoStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// A small pool of its own, connected on first use: single sign-on is a few queries per
    /// sign-in. (`PgStore` does not hand out its pool; when it does, share that instead.) Errors
    /// never repeat the URL: it may hold a password.
    pub fn open(url: &str) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| anyhow::anyhow!("ASSENT_DATABASE_URL: not a valid postgres:// URL"))?;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(3))
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy_with(options);
        Ok(Self::new(pool))
    }
}

fn unavailable(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() {
            return StoreError::Conflict;
        }
    }
    StoreError::Unavailable(e.to_string())
}

fn config(row: &PgRow) -> SsoConfig {
    SsoConfig {
        workspace_id: row.get("workspace_id"),
        issuer: row.get("issuer"),
        client_id: row.get("client_id"),
        client_secret: Sealed {
            key_id: row.get("secret_key_id"),
            nonce: row.get("secret_nonce"),
            ciphertext: row.get("secret_ciphertext"),
        },
        allowed_email_domains: row.get("allowed_email_domains"),
        default_role: Role::parse(row.get::<&str, _>("default_role")).unwrap_or(Role::Member),
        enforce: row.get("enforce"),
        updated_at: from_unix(row.get("updated_at")),
        updated_by: row.get("updated_by"),
    }
}

fn pending(row: &PgRow) -> PendingSignIn {
    PendingSignIn {
        state_hash: row.get("state_hash"),
        workspace_id: row.get("workspace_id"),
        issuer: row.get("issuer"),
        nonce_hash: row.get("nonce_hash"),
        binding_hash: row.get("binding_hash"),
        pkce_verifier: Sealed {
            key_id: row.get("pkce_key_id"),
            nonce: row.get("pkce_nonce"),
            ciphertext: row.get("pkce_ciphertext"),
        },
        reauth_session_hash: row.get("reauth_session_hash"),
        created_at: from_unix(row.get("created_at")),
        expires_at: from_unix(row.get("expires_at")),
    }
}

#[async_trait]
impl SsoStore for PgSsoStore {
    async fn put_config(&self, c: &SsoConfig) -> Result<()> {
        sqlx::query(
            "INSERT INTO sso_configs (workspace_id, issuer, client_id, secret_key_id, secret_nonce,
               secret_ciphertext, allowed_email_domains, default_role, enforce, updated_at, updated_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (workspace_id) DO UPDATE SET issuer = EXCLUDED.issuer,
               client_id = EXCLUDED.client_id, secret_key_id = EXCLUDED.secret_key_id,
               secret_nonce = EXCLUDED.secret_nonce, secret_ciphertext = EXCLUDED.secret_ciphertext,
               allowed_email_domains = EXCLUDED.allowed_email_domains,
               default_role = EXCLUDED.default_role, enforce = EXCLUDED.enforce,
               updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by",
        )
        .bind(c.workspace_id)
        .bind(&c.issuer)
        .bind(&c.client_id)
        .bind(&c.client_secret.key_id)
        .bind(&c.client_secret.nonce)
        .bind(&c.client_secret.ciphertext)
        .bind(&c.allowed_email_domains)
        .bind(c.default_role.as_str())
        .bind(c.enforce)
        .bind(c.updated_at.unix_timestamp())
        .bind(&c.updated_by)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(unavailable)
    }

    async fn config(&self, workspace_id: i64) -> Result<Option<SsoConfig>> {
        sqlx::query("SELECT * FROM sso_configs WHERE workspace_id = $1")
            .bind(workspace_id)
            .fetch_optional(&self.pool)
            .await
            .map(|row| row.as_ref().map(config))
            .map_err(unavailable)
    }

    async fn create_pending(&self, p: &PendingSignIn) -> Result<()> {
        sqlx::query(
            "INSERT INTO sso_pending (state_hash, workspace_id, issuer, nonce_hash, binding_hash,
               pkce_key_id, pkce_nonce, pkce_ciphertext, reauth_session_hash, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&p.state_hash)
        .bind(p.workspace_id)
        .bind(&p.issuer)
        .bind(&p.nonce_hash)
        .bind(&p.binding_hash)
        .bind(&p.pkce_verifier.key_id)
        .bind(&p.pkce_verifier.nonce)
        .bind(&p.pkce_verifier.ciphertext)
        .bind(&p.reauth_session_hash)
        .bind(p.created_at.unix_timestamp())
        .bind(p.expires_at.unix_timestamp())
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(unavailable)
    }

    async fn take_pending(&self, state_hash: &str, now: OffsetDateTime) -> Result<Taken> {
        let fresh = sqlx::query(
            "UPDATE sso_pending SET used_at = $1 WHERE state_hash = $2 AND used_at IS NULL
             RETURNING *",
        )
        .bind(now.unix_timestamp())
        .bind(state_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        if let Some(row) = fresh {
            return Ok(Taken::Fresh(pending(&row)));
        }
        let used = sqlx::query("SELECT * FROM sso_pending WHERE state_hash = $1")
            .bind(state_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(used.map_or(Taken::Unknown, |row| Taken::Replayed(pending(&row))))
    }

    async fn prune_pending(&self, now: OffsetDateTime) -> Result<()> {
        sqlx::query("DELETE FROM sso_pending WHERE expires_at < $1")
            .bind(now.unix_timestamp())
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn linked_user(&self, workspace_id: i64, issuer: &str, sub: &str) -> Result<Option<i64>> {
        sqlx::query_scalar(
            "SELECT user_id FROM sso_links WHERE workspace_id = $1 AND issuer = $2 AND sub = $3",
        )
        .bind(workspace_id)
        .bind(issuer)
        .bind(sub)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)
    }

    async fn link_of_user(&self, user_id: i64, issuer: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT sub FROM sso_links WHERE user_id = $1 AND issuer = $2")
            .bind(user_id)
            .bind(issuer)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)
    }

    async fn link(
        &self,
        workspace_id: i64,
        issuer: &str,
        sub: &str,
        user_id: i64,
        now: OffsetDateTime,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO sso_links (workspace_id, issuer, sub, user_id, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(workspace_id)
        .bind(issuer)
        .bind(sub)
        .bind(user_id)
        .bind(now.unix_timestamp())
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(unavailable)
    }
}
