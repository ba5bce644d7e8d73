//! Every value sealed under the master keyring, wherever it is stored, seen from one place: what
//! `assent keys rotate` (`service/keys.rs`) lists and re-encrypts one row at a time. A value added
//! to another table must be added to [`SealedColumn`], or a rotation leaves it behind.

use async_trait::async_trait;
use sqlx::Row;

use super::db::{db_run, Db};
use super::Result;
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
    fn int_key(self) -> bool {
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

/// The statements of one column.
struct Statements {
    /// key_id → count
    count_under: String,
    count_other: String,
    /// key_id, after (a row key), limit → rows of (row_key, binding, key_id, nonce, ciphertext)
    select_other: String,
    /// new key_id, new nonce, new ciphertext, row key, old key_id, old nonce
    replace: String,
}

impl SealedColumn {
    fn statements(self) -> Statements {
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
            count_under: format!("SELECT COUNT(*) FROM {table} WHERE {key_id} = $1"),
            count_other: format!(
                "SELECT COUNT(*) FROM {table} WHERE {key_id} IS NOT NULL AND {key_id} <> $1"
            ),
            select_other: format!(
                "SELECT {key} AS row_key, {binding} AS binding, {key_id} AS key_id, {nonce} AS nonce, \
                 {ciphertext} AS ciphertext FROM {table} \
                 WHERE {key_id} IS NOT NULL AND {key_id} <> $1 AND {key} > $2 ORDER BY {key} LIMIT $3"
            ),
            // Only the value that was read: a row replaced meanwhile (a rotated token, a new push
            // token) is left alone.
            replace: format!(
                "UPDATE {table} SET {key_id} = $1, {nonce} = $2, {ciphertext} = $3 \
                 WHERE {key} = $4 AND {key_id} = $5 AND {nonce} = $6"
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

/// The sealed columns, all on the writer: a rotation is a walk of writes, and on SQLite its reads
/// then queue with them.
#[async_trait]
impl SealedStore for Db {
    async fn count(&self, column: SealedColumn, key_id: &str) -> Result<(u64, u64)> {
        let sql = column.statements();
        let mut counts = [0u64; 2];
        for (n, query) in counts.iter_mut().zip([&sql.count_under, &sql.count_other]) {
            let count: i64 = db_run!(self.write().await?.on(), |c| {
                sqlx::query_scalar(query).bind(key_id).fetch_one(c).await
            })?;
            *n = count as u64;
        }
        Ok((counts[0], counts[1]))
    }

    async fn sealed_under_other_keys(
        &self,
        column: SealedColumn,
        key_id: &str,
        after: &RowKey,
        limit: i64,
    ) -> Result<Vec<SealedRow>> {
        let sql = column.statements();
        Ok(db_run!(self.write().await?.on(), |c| {
            let query = sqlx::query(&sql.select_other).bind(key_id);
            let query = match after {
                RowKey::Id(id) => query.bind(*id),
                RowKey::Name(name) => query.bind(name.as_str()),
            };
            let rows = query.bind(limit).fetch_all(c).await;
            rows.map(|rows| {
                rows.iter()
                    .map(|row| SealedRow {
                        column,
                        key: if column.int_key() {
                            RowKey::Id(row.get("row_key"))
                        } else {
                            RowKey::Name(row.get("row_key"))
                        },
                        binding: row.get::<Option<String>, _>("binding").unwrap_or_default(),
                        sealed: Sealed {
                            key_id: row.get("key_id"),
                            nonce: row.get("nonce"),
                            ciphertext: row.get("ciphertext"),
                        },
                    })
                    .collect()
            })
        })?)
    }

    async fn replace(&self, row: &SealedRow, new: &Sealed) -> Result<bool> {
        let sql = row.column.statements();
        let replaced = db_run!(self.write().await?.on(), |c| {
            let query = sqlx::query(&sql.replace)
                .bind(&new.key_id)
                .bind(&new.nonce)
                .bind(&new.ciphertext);
            let query = match &row.key {
                RowKey::Id(id) => query.bind(*id),
                RowKey::Name(name) => query.bind(name.as_str()),
            };
            query
                .bind(&row.sealed.key_id)
                .bind(&row.sealed.nonce)
                .execute(c)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(replaced == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_name_the_columns() {
        let s = SealedColumn::PushToken.statements();
        assert_eq!(
            s.replace,
            "UPDATE devices SET push_key_id = $1, push_nonce = $2, push_ciphertext = $3 \
             WHERE id = $4 AND push_key_id = $5 AND push_nonce = $6"
        );
        let s = SealedColumn::SsoClientSecret.statements();
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
