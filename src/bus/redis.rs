//! The decision bus on Redis pub/sub, for several instances serving one deployment.
//!
//! `publish` is one PUBLISH of the prost-encoded `ChallengeChanged` (proto/assent/v1/bus.proto) on
//! one channel. Each instance holds one pub/sub connection, subscribed to that channel alone, and
//! hands every message to its in-process `MemoryBus`, which wakes only that challenge's waiters
//! here. One channel rather than a subscription per challenge (or a pattern):
//!
//! - a browser stream costs Redis nothing: no SUBSCRIBE or UNSUBSCRIBE round trip when it opens or
//!   closes, and 10,000 waiting streams are entries in a local map, not 10,000 Redis subscriptions;
//! - the subscription is in place before any stream reads its challenge, so "subscribe, then read"
//!   (see `Bus::subscribe`) holds without waiting for Redis on the stream's path;
//! - after a reconnect there is one channel to subscribe again, and then every local waiter is
//!   woken to re-read the challenge store, so a change published while the connection was down
//!   is never missed;
//! - PSUBSCRIBE would make Redis match a pattern on every PUBLISH, for nothing.
//!
//! The price is that every instance receives every change: a few messages of ~40 bytes per step-up.
//!
//! The channel also carries `ScimTokenChanged` (issue 18), in the one `BusMessage` envelope, so a
//! rotation's announcement is handled before the approval published after it. While the
//! subscription is down the token cache is not trusted: an announcement may be going by unheard.

use async_trait::async_trait;
use futures_util::StreamExt;
use prometheus_client::metrics::{counter::Counter, family::Family};
use prost::Message;
use rand::Rng;
use redis::aio::ConnectionManager;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::memory::MemoryBus;
use super::token_cache::TokenCache;
use super::{Bus, BusError, Subscription};
use crate::metrics::RedisLabels;
use crate::proto::{bus_message::Kind, BusMessage, ChallengeChanged, ScimTokenChanged};
use crate::redis_link::connection_manager;
use std::sync::Arc;

pub const CHANNEL: &str = "assent:challenge-changed";

/// Reconnection backoff of the pub/sub connection: doubles from the first to the last, jittered.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_LAST: Duration = Duration::from_secs(5);
/// A Redis that vanished without closing the connection only shows when we write to it.
const PING_EVERY: Duration = Duration::from_secs(5);
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

pub struct RedisBus {
    local: MemoryBus,
    /// Trusted only while the listener is subscribed.
    tokens: Arc<TokenCache>,
    conn: ConnectionManager,
    round_trips: Family<RedisLabels, Counter>,
    listener: tokio::task::JoinHandle<()>,
    /// Whether the listener is subscribed. Redis may answer commands while it is not (a
    /// subscription refused, the pub/sub connection lost and not yet back): this instance then
    /// hears no decision made on another, and says so in `/readyz`.
    subscribed: Arc<AtomicBool>,
}

impl RedisBus {
    /// Starts the listener (it connects, and reconnects, in the background) and returns at once.
    pub fn open(url: &str, round_trips: Family<RedisLabels, Counter>) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let local = MemoryBus::default();
        let tokens = Arc::new(TokenCache::new(false));
        let subscribed = Arc::new(AtomicBool::new(false));
        let listener = tokio::spawn(listen(
            client.clone(),
            local.clone(),
            tokens.clone(),
            subscribed.clone(),
        ));
        Ok(Self {
            local,
            tokens,
            conn: connection_manager(client)?,
            round_trips,
            listener,
            subscribed,
        })
    }
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl RedisBus {
    async fn send(&self, kind: Kind) -> Result<(), BusError> {
        self.round_trips
            .get_or_create(&RedisLabels { op: "publish" })
            .inc();
        let message = BusMessage { kind: Some(kind) };
        let _receivers: i64 = redis::cmd("PUBLISH")
            .arg(CHANNEL)
            .arg(message.encode_to_vec())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| BusError::Unavailable(format!("redis: {e}")))?;
        Ok(())
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, message: ChallengeChanged) -> Result<(), BusError> {
        // Local waiters hear it through Redis too: one path for every instance.
        self.send(Kind::ChallengeChanged(message)).await
    }

    async fn publish_token_changed(&self, workspace_id: i64) -> Result<(), BusError> {
        // Here at once, not only when Redis echoes it back.
        self.tokens.invalidate_workspace(workspace_id);
        self.send(Kind::ScimTokenChanged(ScimTokenChanged { workspace_id }))
            .await
    }

    fn token_cache(&self) -> &TokenCache {
        &self.tokens
    }

    fn listening(&self) -> bool {
        self.subscribed.load(Ordering::Acquire)
    }

    async fn subscribe(&self, challenge_id: &str) -> Result<Subscription, BusError> {
        self.local.subscribe(challenge_id).await
    }
}

/// Follows the channel for as long as the process lives, reconnecting with backoff.
async fn listen(
    client: redis::Client,
    local: MemoryBus,
    tokens: Arc<TokenCache>,
    subscribed: Arc<AtomicBool>,
) {
    let mut backoff = RECONNECT_FIRST;
    loop {
        let followed = follow(&client, &local, &tokens, &subscribed).await;
        subscribed.store(false, Ordering::Release);
        tokens.distrust();
        match followed {
            Ok(()) => {
                tracing::warn!("bus: lost the Redis pub/sub connection; reconnecting");
                backoff = RECONNECT_FIRST;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "bus: cannot subscribe on Redis")
            }
        }
        let jitter = rand::thread_rng().gen_range(0.5..1.0);
        tokio::time::sleep(backoff.mul_f64(jitter)).await;
        backoff = (backoff * 2).min(RECONNECT_LAST);
    }
}

/// Subscribes, wakes every local waiter, then delivers messages until the connection is lost
/// (`Ok`); `Err` when it could not subscribe at all.
async fn follow(
    client: &redis::Client,
    local: &MemoryBus,
    tokens: &TokenCache,
    subscribed: &AtomicBool,
) -> redis::RedisResult<()> {
    let timed_out = || redis::RedisError::from((redis::ErrorKind::Io, "timed out"));
    let pubsub = tokio::time::timeout(ANSWER_WITHIN, client.get_async_pubsub())
        .await
        .map_err(|_| timed_out())??;
    let (mut sink, mut messages) = pubsub.split();
    tokio::time::timeout(ANSWER_WITHIN, sink.subscribe(CHANNEL))
        .await
        .map_err(|_| timed_out())??;
    // Whatever was published while we were not subscribed never arrives: every waiter re-reads,
    // and the token cache starts empty.
    tokens.trust();
    subscribed.store(true, Ordering::Release);
    local.wake_all();
    tracing::info!(channel = CHANNEL, "bus: subscribed on Redis");
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else { return Ok(()) };
                handle(message.get_payload_bytes(), local, tokens);
            }
            _ = ping.tick() => {
                let answered = tokio::time::timeout(ANSWER_WITHIN, sink.ping::<redis::Value>()).await;
                if !matches!(answered, Ok(Ok(_))) {
                    return Ok(());
                }
            }
        }
    }
}

/// One message of the channel, handled before the next: a token change empties that workspace's
/// cache entries before a later challenge change wakes anyone.
fn handle(payload: &[u8], local: &MemoryBus, tokens: &TokenCache) {
    match BusMessage::decode(payload) {
        Ok(BusMessage {
            kind: Some(Kind::ChallengeChanged(changed)),
        }) => local.deliver(changed),
        Ok(BusMessage {
            kind: Some(Kind::ScimTokenChanged(changed)),
        }) => tokens.invalidate_workspace(changed.workspace_id),
        // A bare ChallengeChanged, as instances before the envelope publish it.
        _ => match ChallengeChanged::decode(payload) {
            Ok(changed) => local.deliver(changed),
            Err(e) => tracing::warn!(error = %e, "bus: ignored a message it cannot read"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::people::Workspace;
    use time::macros::datetime;

    #[tokio::test]
    async fn a_token_change_is_handled_before_the_challenge_change_after_it() {
        let now = datetime!(2026-12-01 12:00 UTC);
        let local = MemoryBus::default();
        let tokens = TokenCache::new(true);
        let workspace = Workspace {
            id: 7,
            slug: "w".into(),
            name: "W".into(),
            created_at: now,
        };
        tokens.put(tokens.ticket(), [1; 32], workspace, None, now);
        let mut waiter = local.subscribe("c1").await.unwrap();
        let token = BusMessage {
            kind: Some(Kind::ScimTokenChanged(ScimTokenChanged { workspace_id: 7 })),
        };
        let approval = BusMessage {
            kind: Some(Kind::ChallengeChanged(ChallengeChanged {
                challenge_id: "c1".into(),
                status: 2,
                changed_at_unix_ms: 0,
            })),
        };
        handle(&token.encode_to_vec(), &local, &tokens);
        handle(&approval.encode_to_vec(), &local, &tokens);
        assert_eq!(waiter.changed().await, Some(()));
        assert!(
            tokens.get(&[1; 32], now).is_none(),
            "gone before the waiter woke"
        );
        // An old publisher's bare ChallengeChanged still wakes its waiter.
        let bare = ChallengeChanged {
            challenge_id: "c1".into(),
            status: 2,
            changed_at_unix_ms: 0,
        };
        handle(&bare.encode_to_vec(), &local, &tokens);
        assert_eq!(waiter.changed().await, Some(()));
    }
}
