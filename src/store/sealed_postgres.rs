//! `SealedStore` on the shared Postgres database (`postgres.rs`).

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use super::sealed::{RowKey, SealedColumn, SealedRow, SealedStore};
use super::{Result, StoreError};
use crate::domain::crypto::Sealed;

pub struct PgSealedStore {
    pool: PgPool,
}

impl PgSealedStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn sealed_row(column: SealedColumn, row: &PgRow) -> SealedRow {
    SealedRow {
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
    }
}

fn bind_key<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    key: &'q RowKey,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    match key {
        RowKey::Id(id) => query.bind(*id),
        RowKey::Name(name) => query.bind(name.as_str()),
    }
}

#[async_trait]
impl SealedStore for PgSealedStore {
    async fn count(&self, column: SealedColumn, key_id: &str) -> Result<(u64, u64)> {
        let sql = column.statements(true);
        let mut counts = [0u64; 2];
        for (n, query) in counts.iter_mut().zip([&sql.count_under, &sql.count_other]) {
            let count: i64 = sqlx::query_scalar(query)
                .bind(key_id)
                .fetch_one(&self.pool)
                .await
                .map_err(unavailable)?;
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
        let sql = column.statements(true);
        let rows = bind_key(sqlx::query(&sql.select_other).bind(key_id), after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(rows.iter().map(|row| sealed_row(column, row)).collect())
    }

    async fn replace(&self, row: &SealedRow, new: &Sealed) -> Result<bool> {
        let sql = row.column.statements(true);
        let query = sqlx::query(&sql.replace)
            .bind(&new.key_id)
            .bind(&new.nonce)
            .bind(&new.ciphertext);
        let done = bind_key(query, &row.key)
            .bind(&row.sealed.key_id)
            .bind(&row.sealed.nonce)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }
}
