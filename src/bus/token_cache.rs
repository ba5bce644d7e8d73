//! The verified SCIM token cache (issue 18): which workspace a token's SHA-256 hash opened, so a
//! known token authenticates without a database round trip. The bus keeps it coherent, which is
//! why it lives here: every rotation is announced on the bus (`Bus::publish_token_changed`), and
//! each instance drops that workspace's entries when the announcement arrives, in the order of
//! the one channel, so before any later "challenge changed" (the approval a browser waits on).
//!
//! What keeps it from ever answering for a token the store would refuse:
//!
//! - **a generation counter**: every invalidation bumps it; a lookup takes a `Ticket` before it
//!   reads the store and may only cache what it read if no invalidation came in between, so a
//!   lookup racing a rotation never puts the old token back;
//! - **expiry**: an entry lives at most `MAX_AGE`, and a replaced token's entry no longer than
//!   its grace period (the store's `expires_at > now`, on the caller's clock);
//! - **trust**: a Redis bus that lost its subscription may have missed an invalidation, so while
//!   it is down the cache is not trusted (no hits, no inserts) and it starts empty once the
//!   subscription is back;
//! - **a bound**: at most `MAX_ENTRIES` (only tokens that authenticated are cached, two per
//!   workspace at most, so the bound only matters against a bug).
//!
//! Keys are token hashes, never tokens; `Debug` shows neither.

use std::collections::HashMap;
use std::sync::Mutex;
use time::{Duration, OffsetDateTime};

use crate::domain::people::Workspace;

/// How long an entry may be served without asking the store again: the bound on what a missed
/// announcement could cost (a publish that failed, after its retries, while the other instances'
/// subscriptions stayed up). Short: at thousands of requests a second, one store lookup per token
/// every 10 s costs nothing, and the window an old token could slip through stays small.
pub const MAX_AGE: Duration = Duration::seconds(10);

/// More entries than any deployment has tokens; past it the cache starts again empty.
pub const MAX_ENTRIES: usize = 10_000;

pub struct TokenCache {
    inner: Mutex<Inner>,
}

struct Inner {
    entries: HashMap<[u8; 32], Entry>,
    generation: u64,
    trusted: bool,
}

struct Entry {
    workspace: Workspace,
    /// Served while `now < until`.
    until: OffsetDateTime,
}

/// The generation a lookup started in (`TokenCache::ticket`).
#[derive(Clone, Copy)]
pub struct Ticket(u64);

impl TokenCache {
    /// A cache trusted from the start (the in-process bus misses nothing), or not until
    /// `trust` (the Redis bus, once subscribed).
    pub fn new(trusted: bool) -> TokenCache {
        TokenCache {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                generation: 0,
                trusted,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The critical sections cannot panic half-way; a poisoned lock holds a whole map.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The workspace this token hash opened, if cached, trusted and not expired at `now`.
    pub fn get(&self, token_hash: &[u8; 32], now: OffsetDateTime) -> Option<Workspace> {
        let mut inner = self.lock();
        if !inner.trusted {
            return None;
        }
        match inner.entries.get(token_hash) {
            Some(entry) if now < entry.until => Some(entry.workspace.clone()),
            Some(_) => {
                inner.entries.remove(token_hash);
                None
            }
            None => None,
        }
    }

    /// Take it before reading the store; `put` refuses what was read if an invalidation came since.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.lock().generation)
    }

    /// Caches what the store answered at `now` for a lookup that began with `ticket`; a replaced
    /// token with the end of its grace period. False when it was not cached (an invalidation
    /// came since the ticket, or the cache is not trusted).
    pub fn put(
        &self,
        ticket: Ticket,
        token_hash: [u8; 32],
        workspace: Workspace,
        grace_until: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> bool {
        let mut inner = self.lock();
        if !inner.trusted || inner.generation != ticket.0 {
            return false;
        }
        let until = match grace_until {
            Some(grace) => grace.min(now + MAX_AGE),
            None => now + MAX_AGE,
        };
        if inner.entries.len() >= MAX_ENTRIES && !inner.entries.contains_key(&token_hash) {
            inner.entries.clear();
        }
        inner.entries.insert(token_hash, Entry { workspace, until });
        true
    }

    /// The workspace's token changed: its entries go, and lookups under way cache nothing.
    pub fn invalidate_workspace(&self, workspace_id: i64) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner
            .entries
            .retain(|_, entry| entry.workspace.id != workspace_id);
    }

    /// Announcements may be missed from now on (the bus's subscription is down): serve nothing.
    pub fn distrust(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.clear();
        inner.trusted = false;
    }

    /// Announcements arrive again: start empty (any missed one is moot) and serve.
    pub fn trust(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entries.clear();
        inner.trusted = true;
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for TokenCache {
    /// Counts only: no hash, no workspace.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("TokenCache")
            .field("entries", &inner.entries.len())
            .field("generation", &inner.generation)
            .field("trusted", &inner.trusted)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-12-01 12:00 UTC);

    fn ws(id: i64) -> Workspace {
        Workspace {
            id,
            slug: format!("w{id}"),
            name: format!("W{id}"),
            created_at: T0,
        }
    }

    fn cached(cache: &TokenCache, hash: u8, now: OffsetDateTime) -> Option<i64> {
        cache.get(&[hash; 32], now).map(|w| w.id)
    }

    #[test]
    fn a_known_token_is_served_until_its_workspace_is_invalidated() {
        let cache = TokenCache::new(true);
        assert!(cache.put(cache.ticket(), [1; 32], ws(1), None, T0));
        assert!(cache.put(cache.ticket(), [2; 32], ws(2), None, T0));
        assert_eq!(cached(&cache, 1, T0), Some(1));
        cache.invalidate_workspace(1);
        assert_eq!(cached(&cache, 1, T0), None);
        assert_eq!(cached(&cache, 2, T0), Some(2), "other workspaces stay");
    }

    #[test]
    fn a_lookup_that_raced_a_rotation_caches_nothing() {
        let cache = TokenCache::new(true);
        // The lookup takes its ticket and reads the store (the old token, still current)...
        let ticket = cache.ticket();
        // ...the rotation commits and is announced...
        cache.invalidate_workspace(1);
        // ...and what the lookup read must not come back.
        assert!(!cache.put(ticket, [1; 32], ws(1), None, T0));
        assert_eq!(cached(&cache, 1, T0), None);
        // A lookup begun after the announcement read the new state: cached.
        assert!(cache.put(cache.ticket(), [3; 32], ws(1), None, T0));
    }

    #[test]
    fn a_replaced_token_is_served_until_its_grace_ends_and_no_entry_beyond_max_age() {
        let cache = TokenCache::new(true);
        let grace_end = T0 + Duration::seconds(5);
        assert!(cache.put(cache.ticket(), [1; 32], ws(1), Some(grace_end), T0));
        assert_eq!(cached(&cache, 1, grace_end - Duration::seconds(1)), Some(1));
        assert_eq!(cached(&cache, 1, grace_end), None);
        assert!(cache.is_empty(), "the expired entry is gone");

        assert!(cache.put(cache.ticket(), [2; 32], ws(2), None, T0));
        assert_eq!(
            cached(&cache, 2, T0 + MAX_AGE - Duration::seconds(1)),
            Some(2)
        );
        assert_eq!(cached(&cache, 2, T0 + MAX_AGE), None);
        // A grace longer than MAX_AGE is asked again after MAX_AGE.
        assert!(cache.put(
            cache.ticket(),
            [3; 32],
            ws(3),
            Some(T0 + Duration::hours(1)),
            T0
        ));
        assert_eq!(cached(&cache, 3, T0 + MAX_AGE), None);
    }

    #[test]
    fn an_untrusted_cache_serves_and_keeps_nothing_and_starts_empty_when_trusted() {
        let cache = TokenCache::new(false);
        assert!(!cache.put(cache.ticket(), [1; 32], ws(1), None, T0));
        cache.trust();
        let before_the_outage = cache.ticket();
        assert!(cache.put(cache.ticket(), [1; 32], ws(1), None, T0));
        cache.distrust();
        assert_eq!(cached(&cache, 1, T0), None);
        assert!(!cache.put(cache.ticket(), [2; 32], ws(2), None, T0));
        cache.trust();
        assert!(
            cache.is_empty(),
            "what was cached before the outage is gone"
        );
        assert!(
            !cache.put(before_the_outage, [1; 32], ws(1), None, T0),
            "a lookup from before the outage"
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = TokenCache::new(true);
        for i in 0..MAX_ENTRIES as u32 {
            let mut hash = [0; 32];
            hash[..4].copy_from_slice(&i.to_le_bytes());
            cache.put(cache.ticket(), hash, ws(1), None, T0);
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        cache.put(cache.ticket(), [0xff; 32], ws(2), None, T0);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn debug_shows_counts_only() {
        let cache = TokenCache::new(true);
        cache.put(cache.ticket(), [0xab; 32], ws(7), None, T0);
        let shown = format!("{cache:?}");
        assert_eq!(
            shown,
            "TokenCache { entries: 1, generation: 0, trusted: true }"
        );
    }
}
