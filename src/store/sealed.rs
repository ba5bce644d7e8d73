//! Every value sealed under the master keyring, wherever it is stored, seen from one place: what
//! `assent keys rotate` (`service/keys.rs`) lists and re-encrypts one row at a time. A value added
//! to another table must be added to [`SealedColumn`], or a rotation leaves it behind.

use async_trait::async_trait;
use std::sync::Arc;

use super::Result;
use crate::config::Database;
use crate::domain::crypto::Sealed;

/// A sealed column, with the value its seal is bound to (the AES-GCM associated data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealedColumn {
    /// `scim_tokens`, bound to the workspace's slug (`service/tokens.rs`).
    ScimToken,
    /// `devices.push_*`, bound to the device id (`service/devices.rs`).
    PushToken,
    /// `sso_configs.secret_*`, bound to the workspace's slug (`service/sso.rs`).
    SsoClientSecret,
    /// `sso_pending.pkce_*`, bound to the state hash (`service/sso.rs`); lives 10 minutes.
    SsoPkceVerifier,
}

impl SealedColumn {
    pub const ALL: [SealedColumn; 4] = [
        SealedColumn::ScimToken,
        SealedColumn::PushToken,
        SealedColumn::SsoClientSecret,
        SealedColumn::SsoPkceVerifier,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SealedColumn::ScimToken => "scim_tokens",
            SealedColumn::PushToken => "devices.push_token",
            SealedColumn::SsoClientSecret => "sso_configs.client_secret",
            SealedColumn::SsoPkceVerifier => "sso_pending.pkce_verifier",
        }
    }

    /// Whether the table's primary key is an integer (else text).
    pub(super) fn int_key(self) -> bool {
        matches!(
            self,
            SealedColumn::ScimToken | SealedColumn::SsoClientSecret
        )
    }

    /// Where the column lives; the same names on both backends.
    fn layout(self) -> Layout {
        match self {
            SealedColumn::ScimToken => Layout {
                table: "scim_tokens",
                key: "workspace_id",
                binding: "(SELECT slug FROM workspaces w WHERE w.id = scim_tokens.workspace_id)",
                prefix: "",
            },
            SealedColumn::PushToken => Layout {
                table: "devices",
                key: "id",
                binding: "id",
                prefix: "push_",
            },
            SealedColumn::SsoClientSecret => Layout {
                table: "sso_configs",
                key: "workspace_id",
                binding: "(SELECT slug FROM workspaces w WHERE w.id = sso_configs.workspace_id)",
                prefix: "secret_",
            },
            SealedColumn::SsoPkceVerifier => Layout {
                table: "sso_pending",
                key: "state_hash",
                binding: "state_hash",
                prefix: "pkce_",
            },
        }
    }
}

/// A table's primary key and the `{prefix}key_id`, `{prefix}nonce`, `{prefix}ciphertext` columns.
struct Layout {
    table: &'static str,
    key: &'static str,
    /// An SQL expression of the row: what the seal is bound to.
    binding: &'static str,
    prefix: &'static str,
}

/// The statements of one column, with `?` (SQLite) or `$n` (Postgres) placeholders.
pub(super) struct Statements {
    /// key_id → count
    pub count_under: String,
    pub count_other: String,
    /// key_id, after (a row key), limit → rows of (row_key, binding, key_id, nonce, ciphertext)
    pub select_other: String,
    /// new key_id, new nonce, new ciphertext, row key, old key_id, old nonce
    pub replace: String,
}

impl SealedColumn {
    pub(super) fn statements(self, dollar: bool) -> Statements {
        let p = |n: usize| {
            if dollar {
                format!("${n}")
            } else {
                "?".to_owned()
            }
        };
        let Layout {
            table,
            key,
            binding,
            prefix,
        } = self.layout();
        let (key_id, nonce, ciphertext) = (
            format!("{prefix}key_id"),
            format!("{prefix}nonce"),
            format!("{prefix}ciphertext"),
        );
        Statements {
            count_under: format!("SELECT COUNT(*) FROM {table} WHERE {key_id} = {}", p(1)),
            count_other: format!(
                "SELECT COUNT(*) FROM {table} WHERE {key_id} IS NOT NULL AND {key_id} <> {}",
                p(1)
            ),
            select_other: format!(
                "SELECT {key} AS row_key, {binding} AS binding, {key_id} AS key_id, {nonce} AS nonce, \
                 {ciphertext} AS ciphertext FROM {table} \
                 WHERE {key_id} IS NOT NULL AND {key_id} <> {} AND {key} > {} ORDER BY {key} LIMIT {}",
                p(1),
                p(2),
                p(3)
            ),
            // Only the value that was read: a row replaced meanwhile (a rotated token, a new push
            // token) is left alone.
            replace: format!(
                "UPDATE {table} SET {key_id} = {}, {nonce} = {}, {ciphertext} = {} \
                 WHERE {key} = {} AND {key_id} = {} AND {nonce} = {}",
                p(1),
                p(2),
                p(3),
                p(4),
                p(5),
                p(6)
            ),
        }
    }
}

/// A row's primary key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RowKey {
    Id(i64),
    Name(String),
}

impl RowKey {
    /// Below every key of the column: where a walk through it starts.
    pub fn before_all(column: SealedColumn) -> RowKey {
        if column.int_key() {
            RowKey::Id(i64::MIN)
        } else {
            RowKey::Name(String::new())
        }
    }
}

impl std::fmt::Display for RowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RowKey::Id(id) => write!(f, "{id}"),
            RowKey::Name(name) => f.write_str(name),
        }
    }
}

/// One sealed value and what it is bound to.
#[derive(Clone, Debug)]
pub struct SealedRow {
    pub column: SealedColumn,
    pub key: RowKey,
    /// The slug, device id or state hash the seal's associated data is made from.
    pub binding: String,
    pub sealed: Sealed,
}

#[async_trait]
pub trait SealedStore: Send + Sync + 'static {
    /// How many values of the column are sealed under `key_id`, and how many under other keys.
    async fn count(&self, column: SealedColumn, key_id: &str) -> Result<(u64, u64)>;
    /// Up to `limit` values of the column sealed under another key than `key_id`, of the rows
    /// after `after` in key order.
    async fn sealed_under_other_keys(
        &self,
        column: SealedColumn,
        key_id: &str,
        after: &RowKey,
        limit: i64,
    ) -> Result<Vec<SealedRow>>;
    /// Replaces one value in one statement, only if the row still holds `row.sealed`; false when
    /// it changed (or went) meanwhile.
    async fn replace(&self, row: &SealedRow, new: &Sealed) -> Result<bool>;
}

/// Opens the configured database for a rotation (the CLI does not need the rest of the app).
pub async fn open(database: &Database) -> anyhow::Result<Arc<dyn SealedStore>> {
    Ok(open_with_store(database).await?.0)
}

/// The sealed columns and the rest of the same database (for the rotation's audit entry).
pub async fn open_with_store(
    database: &Database,
) -> anyhow::Result<(Arc<dyn SealedStore>, Arc<dyn super::Store>)> {
    let db = super::db::Db::open(database).await?;
    let sealed: Arc<dyn SealedStore> = match &db {
        super::db::Db::Sqlite { write, .. } => {
            Arc::new(super::sealed_sqlite::SqliteSealedStore::new(write.clone()))
        }
        super::db::Db::Postgres(pool) => {
            Arc::new(super::sealed_postgres::PgSealedStore::new(pool.clone()))
        }
    };
    Ok((sealed, Arc::new(db)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_name_the_columns_with_either_placeholder() {
        let s = SealedColumn::PushToken.statements(false);
        assert_eq!(
            s.replace,
            "UPDATE devices SET push_key_id = ?, push_nonce = ?, push_ciphertext = ? \
             WHERE id = ? AND push_key_id = ? AND push_nonce = ?"
        );
        let s = SealedColumn::SsoClientSecret.statements(true);
        assert!(
            s.select_other.contains("secret_key_id <> $1"),
            "{}",
            s.select_other
        );
        assert!(
            s.select_other
                .ends_with("AND workspace_id > $2 ORDER BY workspace_id LIMIT $3"),
            "{}",
            s.select_other
        );
        assert!(
            s.replace.contains("WHERE workspace_id = $4"),
            "{}",
            s.replace
        );
    }
}
