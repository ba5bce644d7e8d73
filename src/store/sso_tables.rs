//! What single sign-on keeps, on either database: `SsoStore` for [`Db`]. Each statement is
//! written once; the one real dialect difference, the allowed e-mail domains (a `TEXT[]` on
//! Postgres, a JSON array in a TEXT column on SQLite), is a branch of two lines.

use async_trait::async_trait;
use sqlx::FromRow;
use time::OffsetDateTime;

use super::db::{db_run, ts, Db, On};
use super::sso::{PendingSignIn, SsoConfig, SsoStore, Taken};
use super::{Result, Role};
use crate::clock::from_unix;
use crate::domain::crypto::Sealed;

#[derive(FromRow)]
struct ConfigRow {
    workspace_id: i64,
    issuer: String,
    client_id: String,
    secret_key_id: String,
    secret_nonce: Vec<u8>,
    secret_ciphertext: Vec<u8>,
    default_role: String,
    enforce: bool,
    updated_at: i64,
    updated_by: String,
}

impl ConfigRow {
    fn with_domains(self, allowed_email_domains: Vec<String>) -> SsoConfig {
        SsoConfig {
            workspace_id: self.workspace_id,
            issuer: self.issuer,
            client_id: self.client_id,
            client_secret: Sealed {
                key_id: self.secret_key_id,
                nonce: self.secret_nonce,
                ciphertext: self.secret_ciphertext,
            },
            allowed_email_domains,
            default_role: Role::parse(&self.default_role).unwrap_or(Role::Member),
            enforce: self.enforce,
            updated_at: from_unix(self.updated_at),
            updated_by: self.updated_by,
        }
    }
}

#[derive(FromRow)]
struct PendingRow {
    state_hash: String,
    workspace_id: i64,
    issuer: String,
    nonce_hash: String,
    binding_hash: String,
    pkce_key_id: String,
    pkce_nonce: Vec<u8>,
    pkce_ciphertext: Vec<u8>,
    reauth_session_hash: Option<String>,
    created_at: i64,
    expires_at: i64,
}

impl From<PendingRow> for PendingSignIn {
    fn from(row: PendingRow) -> PendingSignIn {
        PendingSignIn {
            state_hash: row.state_hash,
            workspace_id: row.workspace_id,
            issuer: row.issuer,
            nonce_hash: row.nonce_hash,
            binding_hash: row.binding_hash,
            pkce_verifier: Sealed {
                key_id: row.pkce_key_id,
                nonce: row.pkce_nonce,
                ciphertext: row.pkce_ciphertext,
            },
            reauth_session_hash: row.reauth_session_hash,
            created_at: from_unix(row.created_at),
            expires_at: from_unix(row.expires_at),
        }
    }
}

const PUT_CONFIG: &str = "INSERT INTO sso_configs (workspace_id, issuer, client_id, secret_key_id,
       secret_nonce, secret_ciphertext, allowed_email_domains, default_role, enforce, updated_at,
       updated_by)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
     ON CONFLICT (workspace_id) DO UPDATE SET issuer = excluded.issuer,
       client_id = excluded.client_id, secret_key_id = excluded.secret_key_id,
       secret_nonce = excluded.secret_nonce, secret_ciphertext = excluded.secret_ciphertext,
       allowed_email_domains = excluded.allowed_email_domains,
       default_role = excluded.default_role, enforce = excluded.enforce,
       updated_at = excluded.updated_at, updated_by = excluded.updated_by";

#[async_trait]
impl SsoStore for Db {
    async fn put_config(&self, c: &SsoConfig) -> Result<()> {
        let domains = &c.allowed_email_domains;
        let secret = &c.client_secret;
        match self.write().await?.on() {
            On::Sqlite(pool) => {
                sqlx::query(PUT_CONFIG)
                    .bind(c.workspace_id)
                    .bind(&c.issuer)
                    .bind(&c.client_id)
                    .bind(&secret.key_id)
                    .bind(&secret.nonce)
                    .bind(&secret.ciphertext)
                    // SQLite: a JSON array in a TEXT column.
                    .bind(serde_json::to_string(domains).expect("strings serialize"))
                    .bind(c.default_role.as_str())
                    .bind(c.enforce)
                    .bind(ts(c.updated_at))
                    .bind(&c.updated_by)
                    .execute(pool)
                    .await?;
            }
            On::Postgres(pool) => {
                sqlx::query(PUT_CONFIG)
                    .bind(c.workspace_id)
                    .bind(&c.issuer)
                    .bind(&c.client_id)
                    .bind(&secret.key_id)
                    .bind(&secret.nonce)
                    .bind(&secret.ciphertext)
                    // Postgres: a TEXT[].
                    .bind(domains)
                    .bind(c.default_role.as_str())
                    .bind(c.enforce)
                    .bind(ts(c.updated_at))
                    .bind(&c.updated_by)
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    async fn config(&self, workspace_id: i64) -> Result<Option<SsoConfig>> {
        const SQL: &str = "SELECT * FROM sso_configs WHERE workspace_id = $1";
        Ok(match self.read() {
            On::Sqlite(pool) => {
                let row = sqlx::query(SQL)
                    .bind(workspace_id)
                    .fetch_optional(pool)
                    .await?;
                row.map(|row| -> Result<SsoConfig> {
                    let text: String = sqlx::Row::try_get(&row, "allowed_email_domains")?;
                    let domains = serde_json::from_str(&text).unwrap_or_default();
                    Ok(ConfigRow::from_row(&row)?.with_domains(domains))
                })
                .transpose()?
            }
            On::Postgres(pool) => {
                let row = sqlx::query(SQL)
                    .bind(workspace_id)
                    .fetch_optional(pool)
                    .await?;
                row.map(|row| -> Result<SsoConfig> {
                    let domains: Vec<String> = sqlx::Row::try_get(&row, "allowed_email_domains")?;
                    Ok(ConfigRow::from_row(&row)?.with_domains(domains))
                })
                .transpose()?
            }
        })
    }

    async fn create_pending(&self, p: &PendingSignIn) -> Result<()> {
        db_run!(self.write().await?.on(), |c| {
            sqlx::query(
                "INSERT INTO sso_pending (state_hash, workspace_id, issuer, nonce_hash,
                   binding_hash, pkce_key_id, pkce_nonce, pkce_ciphertext, reauth_session_hash,
                   created_at, expires_at)
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
            .bind(ts(p.created_at))
            .bind(ts(p.expires_at))
            .execute(c)
            .await?;
        });
        Ok(())
    }

    async fn take_pending(&self, state_hash: &str, now: OffsetDateTime) -> Result<Taken> {
        // The UPDATE is the single winner of racing callbacks; a loser reads the row as taken.
        let fresh: Option<PendingRow> = db_run!(self.write().await?.on(), |c| {
            sqlx::query_as(
                "UPDATE sso_pending SET used_at = $1 WHERE state_hash = $2 AND used_at IS NULL
                 RETURNING *",
            )
            .bind(ts(now))
            .bind(state_hash)
            .fetch_optional(c)
            .await?
        });
        if let Some(row) = fresh {
            return Ok(Taken::Fresh(row.into()));
        }
        let used: Option<PendingRow> = db_run!(self.write().await?.on(), |c| {
            sqlx::query_as("SELECT * FROM sso_pending WHERE state_hash = $1")
                .bind(state_hash)
                .fetch_optional(c)
                .await?
        });
        Ok(used.map_or(Taken::Unknown, |row| Taken::Replayed(row.into())))
    }

    async fn prune_pending(&self, now: OffsetDateTime) -> Result<()> {
        db_run!(self.write().await?.on(), |c| {
            sqlx::query("DELETE FROM sso_pending WHERE expires_at < $1")
                .bind(ts(now))
                .execute(c)
                .await?;
        });
        Ok(())
    }

    async fn linked_user(&self, workspace_id: i64, issuer: &str, sub: &str) -> Result<Option<i64>> {
        Ok(db_run!(self.read(), |c| {
            sqlx::query_scalar(
                "SELECT user_id FROM sso_links WHERE workspace_id = $1 AND issuer = $2 AND sub = $3",
            )
            .bind(workspace_id)
            .bind(issuer)
            .bind(sub)
            .fetch_optional(c)
            .await?
        }))
    }

    async fn link_of_user(&self, user_id: i64, issuer: &str) -> Result<Option<String>> {
        Ok(db_run!(self.read(), |c| {
            sqlx::query_scalar("SELECT sub FROM sso_links WHERE user_id = $1 AND issuer = $2")
                .bind(user_id)
                .bind(issuer)
                .fetch_optional(c)
                .await?
        }))
    }

    async fn link(
        &self,
        workspace_id: i64,
        issuer: &str,
        sub: &str,
        user_id: i64,
        now: OffsetDateTime,
    ) -> Result<()> {
        db_run!(self.write().await?.on(), |c| {
            sqlx::query(
                "INSERT INTO sso_links (workspace_id, issuer, sub, user_id, created_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(workspace_id)
            .bind(issuer)
            .bind(sub)
            .bind(user_id)
            .bind(ts(now))
            .execute(c)
            .await?;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_db::TestDb;
    use crate::store::{StoreError, StoredToken};
    use std::sync::Arc;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-28 12:00 UTC);

    fn sealed(tag: &str) -> Sealed {
        Sealed {
            key_id: "k1".into(),
            nonce: vec![0; 12],
            ciphertext: tag.as_bytes().to_vec(),
        }
    }

    /// The single sign-on store of a fresh database (SQLite, and Postgres when
    /// ASSENT_TEST_POSTGRES_URL names a cluster), with one workspace and two members.
    async fn stores() -> Vec<(TestDb, Arc<dyn SsoStore>, i64, i64, i64)> {
        let mut all = Vec::new();
        for db in TestDb::each().await {
            let app = db.app(&[]).await;
            let token = StoredToken {
                workspace_id: 0,
                token_hash: [7; 32],
                sealed: sealed("token"),
                created_at: NOW,
                created_by: "t".into(),
            };
            let ws = app
                .store
                .create_workspace("acme", "Acme", "o@acme.example", "x", token, NOW)
                .await
                .unwrap();
            let a = app
                .store
                .create_user(ws.id, "a@acme.example", Role::Member, "x", NOW)
                .await
                .unwrap();
            let b = app
                .store
                .create_user(ws.id, "b@acme.example", Role::Member, "x", NOW)
                .await
                .unwrap();
            all.push((db, app.sso.clone(), ws.id, a.id, b.id));
        }
        all
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
        for (_db, sso, ws, _, _) in stores().await {
            let p = PendingSignIn {
                reauth_session_hash: Some("0f".repeat(32)),
                ..pending(ws, "r1", NOW + time::Duration::minutes(10))
            };
            sso.create_pending(&p).await.unwrap();
            assert_eq!(sso.take_pending("r1", NOW).await.unwrap(), Taken::Fresh(p));
        }
    }

    #[tokio::test]
    async fn settings_round_trip_and_are_replaced() {
        for (_db, sso, ws, _, _) in stores().await {
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
    }

    #[tokio::test]
    async fn a_state_is_taken_once_even_by_racing_callbacks() {
        for (_db, sso, ws, _, _) in stores().await {
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
    }

    #[tokio::test]
    async fn expired_sign_ins_are_pruned() {
        for (_db, sso, ws, _, _) in stores().await {
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
    }

    #[tokio::test]
    async fn one_subject_per_member_and_one_member_per_subject() {
        for (_db, sso, ws, a, b) in stores().await {
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
}
