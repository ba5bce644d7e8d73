//! The decision bus: "challenge X changed" reaches every waiting browser stream, whichever
//! instance it is on. `memory.rs` serves one process; `redis.rs` (Redis pub/sub) serves several.
//! Messages only wake waiters: they re-read the challenge store, the one source of truth.
//! The bus also keeps every instance's SCIM token cache coherent (`token_cache.rs`).

pub mod memory;
pub mod redis;
pub mod token_cache;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::proto::ChallengeChanged;
use token_cache::TokenCache;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("bus unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    async fn publish(&self, message: ChallengeChanged) -> Result<(), BusError>;
    /// Subscribes to one challenge's changes. Subscribe before reading the state, so a change
    /// between the read and the subscription is never missed.
    async fn subscribe(&self, challenge_id: &str) -> Result<Subscription, BusError>;
    /// Tells every instance that the workspace's SCIM token changed, so that each drops what its
    /// token cache holds for it. On one channel with `publish`: an instance handles it before any
    /// change published after it. This instance's cache is invalidated before the call returns,
    /// whether the bus answers or not.
    async fn publish_token_changed(&self, workspace_id: i64) -> Result<(), BusError>;
    /// This instance's verified SCIM token cache, which this bus keeps coherent.
    fn token_cache(&self) -> &TokenCache;
    /// Whether changes published on other instances reach this one now (`/readyz`): always in
    /// one process; on Redis, while the listener is subscribed.
    fn listening(&self) -> bool {
        true
    }
}

/// A live subscription; dropping it unsubscribes.
pub struct Subscription {
    pub(crate) receiver: broadcast::Receiver<ChallengeChanged>,
    pub(crate) _guard: Box<dyn Send + Sync>,
}

impl Subscription {
    /// The next change, or None when the bus is gone. A lagged receiver just re-reads the state,
    /// so lag is reported as a change.
    pub async fn changed(&mut self) -> Option<()> {
        match self.receiver.recv().await {
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => Some(()),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}
