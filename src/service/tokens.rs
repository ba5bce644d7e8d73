//! The workspace's SCIM token: minted, sealed, revealed, rotated, and checked on every SCIM call.

use time::OffsetDateTime;

use crate::app::App;
use crate::domain::crypto::{ct_eq, Secret};
use crate::domain::token;
use crate::error::{ApiError, ApiResult};
use crate::store::{StoredToken, Workspace};

/// Associated data binding a sealed token to its workspace.
pub(super) fn token_context(workspace_slug: &str) -> Vec<u8> {
    format!("scim-token:{workspace_slug}").into_bytes()
}

/// What a rotation did.
pub struct Rotated {
    pub created_at: OffsetDateTime,
    /// Until when the replaced token still works (the workspace's grace period), if at all.
    pub grace_until: Option<OffsetDateTime>,
}

impl App {
    /// A new token, sealed for storage. The plain token is returned only to be dropped by callers
    /// that do not need it.
    pub fn mint_token(
        &self,
        workspace_id: i64,
        workspace_slug: &str,
        created_by: &str,
    ) -> StoredToken {
        let plain = token::generate();
        StoredToken {
            workspace_id,
            token_hash: token::lookup_hash(plain.expose()),
            sealed: self
                .keyring
                .seal(plain.expose().as_bytes(), &token_context(workspace_slug)),
            created_at: self.now(),
            created_by: created_by.to_owned(),
        }
    }

    /// Replaces the workspace's token. The old one stops authenticating with this write, or
    /// when the workspace's grace period ends.
    pub async fn rotate_token(&self, workspace: &Workspace, by: &str) -> ApiResult<Rotated> {
        let (fresh, grace_until) = self.prepare_rotation(workspace, by).await?;
        let created_at = fresh.created_at;
        self.store_rotated_token(fresh, grace_until).await?;
        Ok(Rotated {
            created_at,
            grace_until,
        })
    }

    /// The token a rotation will store, and until when the one it replaces keeps working (the
    /// workspace's grace period), for a caller that records the rotation before storing it.
    pub async fn prepare_rotation(
        &self,
        workspace: &Workspace,
        by: &str,
    ) -> ApiResult<(StoredToken, Option<OffsetDateTime>)> {
        let policy = self.store.policy(workspace.id).await?;
        let fresh = self.mint_token(workspace.id, &workspace.slug, by);
        let grace_until = policy.grace().map(|grace| fresh.created_at + grace);
        Ok((fresh, grace_until))
    }

    /// Stores a rotation's token, then announces the change on the bus so that every instance's
    /// token cache drops the workspace's entries (this one's before this returns). Announced even
    /// when the write failed: it may have committed all the same, and a needless invalidation
    /// costs one lookup. An announcement that fails three times leaves other instances' caches to `MAX_AGE` (10 s).
    pub async fn store_rotated_token(
        &self,
        fresh: StoredToken,
        grace_until: Option<OffsetDateTime>,
    ) -> ApiResult<()> {
        let workspace_id = fresh.workspace_id;
        let stored = self.store.put_scim_token(fresh, grace_until).await;
        // The other instances keep serving the old token from their caches until they hear of
        // this (or `MAX_AGE` passes): worth a few tries, in this request's detached handler.
        for attempt in 1..=3u64 {
            match self.bus.publish_token_changed(workspace_id).await {
                Ok(()) => break,
                Err(e) if attempt == 3 => {
                    tracing::warn!(error = %e, "could not announce a SCIM token change on the bus; other instances' caches expire within 10 s")
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await,
            }
        }
        Ok(stored?)
    }

    pub async fn reveal_token(&self, workspace: &Workspace) -> ApiResult<(Secret, OffsetDateTime)> {
        let stored = self.store.scim_token(workspace.id).await?.ok_or_else(|| {
            tracing::error!(workspace = %workspace.slug, "workspace has no SCIM token");
            ApiError::Internal
        })?;
        let plain = self.keyring.open(&stored.sealed, &token_context(&workspace.slug)).map_err(|e| {
            tracing::error!(workspace = %workspace.slug, error = %e, "cannot open the stored SCIM token");
            ApiError::Internal
        })?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| ApiError::Internal)?;
        Ok((Secret::new(text), stored.created_at))
    }

    /// The workspace a bearer token opens, if any. Malformed tokens are refused before any lookup;
    /// a token that authenticated lately is answered from the bus's token cache (issue 18), which
    /// every rotation empties for its workspace on every instance.
    pub async fn authenticate_scim(&self, bearer: &str) -> ApiResult<Option<Workspace>> {
        if !token::is_well_formed(bearer) {
            return Ok(None);
        }
        let hash = token::lookup_hash(bearer);
        let now = self.now();
        let cache = self.bus.token_cache();
        if let Some(workspace) = cache.get(&hash, now) {
            return Ok(Some(workspace));
        }
        // Before the store is read: a rotation announced from here on voids what it answers.
        let ticket = cache.ticket();
        let (found, grace) = match self.store.workspace_by_token_hash(&hash).await? {
            Some(found) => (Some(found), false),
            // A replaced token still in its grace period (asked only when the current ones miss).
            None => (self.store.workspace_by_grace_hash(&hash, now).await?, true),
        };
        let Some(workspace) = found
            .filter(|(_, stored)| ct_eq(stored, &hash))
            .map(|(workspace, _)| workspace)
        else {
            return Ok(None);
        };
        let grace_until = if grace {
            match self.store.grace_until(workspace.id, now).await? {
                Some(until) => Some(until),
                // Its grace ended between the two reads: answer this call, cache nothing.
                None => return Ok(Some(workspace)),
            }
        } else {
            None
        };
        cache.put(ticket, hash, workspace.clone(), grace_until, now);
        Ok(Some(workspace))
    }
}
