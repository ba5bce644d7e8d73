//! In-process bus: one small broadcast channel per challenge that someone waits on, removed when
//! its last subscriber leaves, so an idle waiter costs a few hundred bytes and a publish wakes
//! only that challenge's waiters.

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

use super::token_cache::TokenCache;
use super::{Bus, BusError, Subscription};
use crate::proto::ChallengeChanged;

type Channels = Arc<Mutex<HashMap<String, broadcast::Sender<ChallengeChanged>>>>;

#[derive(Clone)]
pub struct MemoryBus {
    channels: Channels,
    /// One process misses no announcement: trusted from the start.
    tokens: Arc<TokenCache>,
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self {
            channels: Channels::default(),
            tokens: Arc::new(TokenCache::new(true)),
        }
    }
}

struct Unsubscribe {
    channels: Channels,
    challenge_id: String,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let mut channels = self.channels.lock().expect("bus lock");
        // `Subscription` drops its receiver before this guard (field order), so zero receivers
        // means this was the last waiter.
        if let Some(sender) = channels.get(&self.challenge_id) {
            if sender.receiver_count() == 0 {
                channels.remove(&self.challenge_id);
            }
        }
    }
}

impl MemoryBus {
    /// Delivers a message to this process's waiters (also used by the Redis bus's listener).
    pub fn deliver(&self, message: ChallengeChanged) {
        let channels = self.channels.lock().expect("bus lock");
        if let Some(sender) = channels.get(&message.challenge_id) {
            // No receiver left is fine: nobody waits.
            let _ = sender.send(message);
        }
    }

    /// Wakes every waiter of this process, each to re-read its challenge: what the Redis bus does
    /// after it (re)subscribes, since a change published while it was away never arrives.
    pub fn wake_all(&self) {
        let channels = self.channels.lock().expect("bus lock");
        for (challenge_id, sender) in channels.iter() {
            let _ = sender.send(ChallengeChanged {
                challenge_id: challenge_id.clone(),
                status: crate::proto::ChallengeStatus::Unspecified as i32,
                changed_at_unix_ms: 0,
            });
        }
    }

    pub fn waiting_channels(&self) -> usize {
        self.channels.lock().expect("bus lock").len()
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, message: ChallengeChanged) -> Result<(), BusError> {
        self.deliver(message);
        Ok(())
    }

    async fn publish_token_changed(&self, workspace_id: i64) -> Result<(), BusError> {
        self.tokens.invalidate_workspace(workspace_id);
        Ok(())
    }

    fn token_cache(&self) -> &TokenCache {
        &self.tokens
    }

    async fn subscribe(&self, challenge_id: &str) -> Result<Subscription, BusError> {
        let mut channels = self.channels.lock().expect("bus lock");
        let receiver = channels
            .entry(challenge_id.to_owned())
            .or_insert_with(|| broadcast::channel(4).0)
            .subscribe();
        Ok(Subscription {
            receiver,
            _guard: Box::new(Unsubscribe {
                channels: self.channels.clone(),
                challenge_id: challenge_id.to_owned(),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(id: &str) -> ChallengeChanged {
        ChallengeChanged {
            challenge_id: id.into(),
            status: 2,
            changed_at_unix_ms: 0,
        }
    }

    #[tokio::test]
    async fn only_that_challenge_s_waiters_wake_and_channels_are_freed() {
        let bus = MemoryBus::default();
        let mut a = bus.subscribe("a").await.unwrap();
        let mut a2 = bus.subscribe("a").await.unwrap();
        let mut b = bus.subscribe("b").await.unwrap();
        bus.publish(changed("a")).await.unwrap();
        assert_eq!(a.changed().await, Some(()));
        assert_eq!(a2.changed().await, Some(()));
        assert!(b.receiver.try_recv().is_err());
        bus.wake_all();
        assert_eq!(a.changed().await, Some(()));
        assert_eq!(b.changed().await, Some(()));
        drop(a);
        assert_eq!(bus.waiting_channels(), 2);
        drop(a2);
        drop(b);
        assert_eq!(bus.waiting_channels(), 0);
    }
}
