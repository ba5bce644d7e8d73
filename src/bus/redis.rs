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

use async_trait::async_trait;
use futures_util::StreamExt;
use prometheus_client::metrics::{counter::Counter, family::Family};
use prost::Message;
use rand::Rng;
use redis::aio::ConnectionManager;
use std::time::Duration;

use super::memory::MemoryBus;
use super::{Bus, BusError, Subscription};
use crate::metrics::RedisLabels;
use crate::proto::ChallengeChanged;
use crate::redis_link::connection_manager;

pub const CHANNEL: &str = "assent:challenge-changed";

/// Reconnection backoff of the pub/sub connection: doubles from the first to the last, jittered.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_LAST: Duration = Duration::from_secs(5);
/// A Redis that vanished without closing the connection only shows when we write to it.
const PING_EVERY: Duration = Duration::from_secs(5);
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

pub struct RedisBus {
    local: MemoryBus,
    conn: ConnectionManager,
    round_trips: Family<RedisLabels, Counter>,
    listener: tokio::task::JoinHandle<()>,
}

impl RedisBus {
    /// Starts the listener (it connects, and reconnects, in the background) and returns at once.
    pub fn open(url: &str, round_trips: Family<RedisLabels, Counter>) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let local = MemoryBus::default();
        let listener = tokio::spawn(listen(client.clone(), local.clone()));
        Ok(Self {
            local,
            conn: connection_manager(client)?,
            round_trips,
            listener,
        })
    }
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, message: ChallengeChanged) -> Result<(), BusError> {
        self.round_trips
            .get_or_create(&RedisLabels { op: "publish" })
            .inc();
        // Local waiters hear it through Redis too: one path for every instance.
        let _receivers: i64 = redis::cmd("PUBLISH")
            .arg(CHANNEL)
            .arg(message.encode_to_vec())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| BusError::Unavailable(format!("redis: {e}")))?;
        Ok(())
    }

    async fn subscribe(&self, challenge_id: &str) -> Result<Subscription, BusError> {
        self.local.subscribe(challenge_id).await
    }
}

/// Follows the channel for as long as the process lives, reconnecting with backoff.
async fn listen(client: redis::Client, local: MemoryBus) {
    let mut backoff = RECONNECT_FIRST;
    loop {
        match follow(&client, &local).await {
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
async fn follow(client: &redis::Client, local: &MemoryBus) -> redis::RedisResult<()> {
    let timed_out = || redis::RedisError::from((redis::ErrorKind::Io, "timed out"));
    let pubsub = tokio::time::timeout(ANSWER_WITHIN, client.get_async_pubsub())
        .await
        .map_err(|_| timed_out())??;
    let (mut sink, mut messages) = pubsub.split();
    tokio::time::timeout(ANSWER_WITHIN, sink.subscribe(CHANNEL))
        .await
        .map_err(|_| timed_out())??;
    // Whatever was published while we were not subscribed never arrives: every waiter re-reads.
    local.wake_all();
    tracing::info!(channel = CHANNEL, "bus: subscribed on Redis");
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else { return Ok(()) };
                match ChallengeChanged::decode(message.get_payload_bytes()) {
                    Ok(changed) => local.deliver(changed),
                    Err(e) => tracing::warn!(error = %e, "bus: ignored a message that is not a ChallengeChanged"),
                }
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
