//! Re-sealing every sealed secret under a new master key (`assent keys rotate`). Where the keys
//! come from is `config/keys.rs`.
//!
//! `reseal_all` re-encrypts every value of `store/sealed.rs`
//! that is not under the current key, in batches; a value is replaced in one statement and only
//! if it is still the one that was read, so an interrupted rotation is resumed by running it
//! again. The README's "Rotating the master key" gives the operator's steps.

use crate::domain::crypto::Keyring;
use crate::store::sealed::{RowKey, SealedColumn, SealedRow, SealedStore};

#[cfg(test)]
pub(crate) use crate::config::keys::*;

/// What a rotation did: `rotated` values re-encrypted now, `already_current` found under the
/// current key, `remaining` still under other keys (above 0 only when stopped early).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Rotation {
    pub rotated: u64,
    pub already_current: u64,
    pub remaining: u64,
    pub key_id: String,
}

/// Associated data of a sealed value: the same as where it was sealed.
fn context(row: &SealedRow) -> Vec<u8> {
    match row.column {
        SealedColumn::ScimToken => super::tokens::token_context(&row.binding),
        SealedColumn::PushToken => row.binding.as_bytes().to_vec(),
        SealedColumn::SsoClientSecret => super::sso::secret_context(&row.binding),
        SealedColumn::SsoPkceVerifier => super::sso::pkce_context(&row.binding),
    }
}

/// Re-encrypts, under the keyring's current key, every sealed value that is under another key,
/// `batch_size` rows at a time; stops after `max_batches` batches when given.
pub async fn reseal_all(
    store: &dyn SealedStore,
    keyring: &Keyring,
    batch_size: i64,
    max_batches: Option<u64>,
) -> anyhow::Result<Rotation> {
    let key_id = keyring.current_id().to_owned();
    let mut already_current = 0;
    for column in SealedColumn::ALL {
        already_current += store.count(column, &key_id).await?.0;
    }
    let mut rotated = 0;
    let mut batches = 0;
    'columns: for column in SealedColumn::ALL {
        // Each row once per run: one that changed between read and write (a token rotated
        // meanwhile) is skipped and left in `remaining` for the next run.
        let mut after = RowKey::before_all(column);
        loop {
            if max_batches.is_some_and(|max| batches >= max) {
                break 'columns;
            }
            let rows = store
                .sealed_under_other_keys(column, &key_id, &after, batch_size)
                .await?;
            let Some(last) = rows.last() else {
                break;
            };
            after = last.key.clone();
            for row in &rows {
                let context = context(row);
                let plain = keyring.open(&row.sealed, &context).map_err(|e| {
                    anyhow::anyhow!(
                        "{} {}: {e}; give the key it was sealed under in ASSENT_OLD_MASTER_KEYS",
                        column.name(),
                        row.key
                    )
                })?;
                if store.replace(row, &keyring.seal(&plain, &context)).await? {
                    rotated += 1;
                }
            }
            batches += 1;
            tracing::info!(
                column = column.name(),
                rows = rows.len(),
                rotated,
                "re-encrypted a batch"
            );
        }
    }
    let mut remaining = 0;
    for column in SealedColumn::ALL {
        remaining += store.count(column, &key_id).await?.1;
    }
    Ok(Rotation {
        rotated,
        already_current,
        remaining,
        key_id,
    })
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
