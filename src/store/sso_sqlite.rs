//! `SsoStore` on the embedded SQLite database (migrations/sqlite/0004_sso.sql), sharing the pool of
//! `SqliteStore`.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};
use time::OffsetDateTime;

use super::sso::{PendingSignIn, SsoConfig, SsoStore, Taken};
use super::{Result, Role, StoreError};
use crate::clock::from_unix;
use crate::domain::crypto::Sealed;

pub struct SqliteSsoStore {
    pool: SqlitePool,
}

impl SqliteSsoStore {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
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

fn config(row: &SqliteRow) -> SsoConfig {
    SsoConfig {
        workspace_id: row.get("workspace_id"),
        issuer: row.get("issuer"),
        client_id: row.get("client_id"),
        client_secret: Sealed {
            key_id: row.get("secret_key_id"),
            nonce: row.get("secret_nonce"),
            ciphertext: row.get("secret_ciphertext"),
        },
        allowed_email_domains: serde_json::from_str(row.get::<&str, _>("allowed_email_domains"))
            .unwrap_or_default(),
        default_role: Role::parse(row.get::<&str, _>("default_role")).unwrap_or(Role::Member),
        enforce: row.get::<i64, _>("enforce") != 0,
        updated_at: from_unix(row.get("updated_at")),
        updated_by: row.get("updated_by"),
    }
}

fn pending(row: &SqliteRow) -> PendingSignIn {
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
impl SsoStore for SqliteSsoStore {
    async fn put_config(&self, c: &SsoConfig) -> Result<()> {
        let domains =
            serde_json::to_string(&c.allowed_email_domains).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "INSERT INTO sso_configs (workspace_id, issuer, client_id, secret_key_id, secret_nonce,
               secret_ciphertext, allowed_email_domains, default_role, enforce, updated_at, updated_by)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (workspace_id) DO UPDATE SET issuer = excluded.issuer,
               client_id = excluded.client_id, secret_key_id = excluded.secret_key_id,
               secret_nonce = excluded.secret_nonce, secret_ciphertext = excluded.secret_ciphertext,
               allowed_email_domains = excluded.allowed_email_domains,
               default_role = excluded.default_role, enforce = excluded.enforce,
               updated_at = excluded.updated_at, updated_by = excluded.updated_by",
        )
        .bind(c.workspace_id)
        .bind(&c.issuer)
        .bind(&c.client_id)
        .bind(&c.client_secret.key_id)
        .bind(&c.client_secret.nonce)
        .bind(&c.client_secret.ciphertext)
        .bind(domains)
        .bind(c.default_role.as_str())
        .bind(c.enforce as i64)
        .bind(c.updated_at.unix_timestamp())
        .bind(&c.updated_by)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(unavailable)
    }

    async fn config(&self, workspace_id: i64) -> Result<Option<SsoConfig>> {
        sqlx::query("SELECT * FROM sso_configs WHERE workspace_id = ?")
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
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            "UPDATE sso_pending SET used_at = ? WHERE state_hash = ? AND used_at IS NULL
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
        let used = sqlx::query("SELECT * FROM sso_pending WHERE state_hash = ?")
            .bind(state_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(used.map_or(Taken::Unknown, |row| Taken::Replayed(pending(&row))))
    }

    async fn prune_pending(&self, now: OffsetDateTime) -> Result<()> {
        sqlx::query("DELETE FROM sso_pending WHERE expires_at < ?")
            .bind(now.unix_timestamp())
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn linked_user(&self, workspace_id: i64, issuer: &str, sub: &str) -> Result<Option<i64>> {
        sqlx::query_scalar(
            "SELECT user_id FROM sso_links WHERE workspace_id = ? AND issuer = ? AND sub = ?",
        )
        .bind(workspace_id)
        .bind(issuer)
        .bind(sub)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)
    }

    async fn link_of_user(&self, user_id: i64, issuer: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT sub FROM sso_links WHERE user_id = ? AND issuer = ?")
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
             VALUES (?, ?, ?, ?, ?)",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{Store, StoredToken};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-28 12:00 UTC);

    fn sealed(tag: &str) -> Sealed {
        Sealed {
            key_id: "k1".into(),
            nonce: vec![0; 12],
            ciphertext: tag.as_bytes().to_vec(),
        }
    }

    /// A store on a fresh file, with one workspace and two members.
    async fn store() -> (tempfile::TempDir, SqliteSsoStore, i64, i64, i64) {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = SqliteStore::open(&format!("sqlite://{}/t.db", dir.path().display()))
            .await
            .unwrap();
        let token = StoredToken {
            workspace_id: 0,
            token_hash: [7; 32],
            sealed: sealed("token"),
            created_at: NOW,
            created_by: "t".into(),
        };
        let ws = sqlite
            .create_workspace("acme", "Acme", "o@acme.example", "x", token, NOW)
            .await
            .unwrap();
        let a = sqlite
            .create_user(ws.id, "a@acme.example", Role::Member, "x", NOW)
            .await
            .unwrap();
        let b = sqlite
            .create_user(ws.id, "b@acme.example", Role::Member, "x", NOW)
            .await
            .unwrap();
        (dir, SqliteSsoStore::new(sqlite.pool()), ws.id, a.id, b.id)
    }

    fn pending(workspace_id: i64, state_hash: &str, expires_at: OffsetDateTime) -> PendingSignIn {
        PendingSignIn {
            state_hash: state_hash.into(),
            workspace_id,
            issuer: "https://idp.example".into(),
            nonce_hash: "n".into(),
            binding_hash: "b".into(),
            pkce_verifier: sealed("verifier"),
            reauth_session_hash: None,
            created_at: NOW,
            expires_at,
        }
    }

    #[tokio::test]
    async fn a_reauthentication_keeps_the_session_it_is_for() {
        let (_dir, sso, ws, _, _) = store().await;
        let p = PendingSignIn {
            reauth_session_hash: Some("0f".repeat(32)),
            ..pending(ws, "r1", NOW + time::Duration::minutes(10))
        };
        sso.create_pending(&p).await.unwrap();
        assert_eq!(sso.take_pending("r1", NOW).await.unwrap(), Taken::Fresh(p));
    }

    #[tokio::test]
    async fn settings_round_trip_and_are_replaced() {
        let (_dir, sso, ws, _, _) = store().await;
        assert_eq!(sso.config(ws).await.unwrap(), None);
        let mut config = SsoConfig {
            workspace_id: ws,
            issuer: "https://idp.example".into(),
            client_id: "c".into(),
            client_secret: sealed("secret"),
            allowed_email_domains: vec!["acme.example".into()],
            default_role: Role::Admin,
            enforce: true,
            updated_at: NOW,
            updated_by: "o@acme.example".into(),
        };
        sso.put_config(&config).await.unwrap();
        assert_eq!(sso.config(ws).await.unwrap().as_ref(), Some(&config));
        config.allowed_email_domains.clear();
        config.enforce = false;
        sso.put_config(&config).await.unwrap();
        assert_eq!(sso.config(ws).await.unwrap(), Some(config));
    }

    #[tokio::test]
    async fn a_state_is_taken_once_even_by_racing_callbacks() {
        let (_dir, sso, ws, _, _) = store().await;
        let p = pending(ws, "s1", NOW + time::Duration::minutes(10));
        sso.create_pending(&p).await.unwrap();
        let (first, second) =
            tokio::join!(sso.take_pending("s1", NOW), sso.take_pending("s1", NOW));
        let taken = [first.unwrap(), second.unwrap()];
        assert_eq!(
            taken
                .iter()
                .filter(|t| **t == Taken::Fresh(p.clone()))
                .count(),
            1,
            "{taken:?}"
        );
        assert_eq!(
            taken
                .iter()
                .filter(|t| **t == Taken::Replayed(p.clone()))
                .count(),
            1,
            "{taken:?}"
        );
        assert_eq!(
            sso.take_pending("s1", NOW).await.unwrap(),
            Taken::Replayed(p)
        );
        assert_eq!(sso.take_pending("nope", NOW).await.unwrap(), Taken::Unknown);
    }

    #[tokio::test]
    async fn expired_sign_ins_are_pruned() {
        let (_dir, sso, ws, _, _) = store().await;
        sso.create_pending(&pending(ws, "old", NOW - time::Duration::seconds(1)))
            .await
            .unwrap();
        sso.create_pending(&pending(ws, "new", NOW + time::Duration::minutes(10)))
            .await
            .unwrap();
        sso.prune_pending(NOW).await.unwrap();
        assert_eq!(sso.take_pending("old", NOW).await.unwrap(), Taken::Unknown);
        assert!(matches!(
            sso.take_pending("new", NOW).await.unwrap(),
            Taken::Fresh(_)
        ));
    }

    #[tokio::test]
    async fn one_subject_per_member_and_one_member_per_subject() {
        let (_dir, sso, ws, a, b) = store().await;
        let idp = "https://idp.example";
        sso.link(ws, idp, "sub-a", a, NOW).await.unwrap();
        assert_eq!(sso.linked_user(ws, idp, "sub-a").await.unwrap(), Some(a));
        assert_eq!(
            sso.link_of_user(a, idp).await.unwrap().as_deref(),
            Some("sub-a")
        );
        assert_eq!(
            sso.linked_user(ws, "https://other.example", "sub-a")
                .await
                .unwrap(),
            None
        );
        // The subject is taken; so is the member at this issuer.
        assert!(matches!(
            sso.link(ws, idp, "sub-a", b, NOW).await,
            Err(StoreError::Conflict)
        ));
        assert!(matches!(
            sso.link(ws, idp, "sub-a2", a, NOW).await,
            Err(StoreError::Conflict)
        ));
        // Another issuer is another namespace of subjects.
        sso.link(ws, "https://other.example", "sub-a", b, NOW)
            .await
            .unwrap();
        assert_eq!(sso.link_of_user(b, idp).await.unwrap(), None);
    }
}
