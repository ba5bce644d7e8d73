//! The embedded challenge store: one mutex over plain maps. Every method is one critical section,
//! which is what makes `insert` (with supersede) and `swap` atomic. The replay cache is the one
//! thing it does not keep in memory: a restart must not forget a used `jti`, so it goes to the
//! durable store.

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;

use super::{slot, ChallengeStore, LiveError, Result, LOGIN_WINDOW};
use crate::domain::challenge::{Challenge, Status};
use crate::store::Store;

#[derive(Default)]
struct State {
    challenges: HashMap<String, Challenge>,
    /// `slot(user, action)` → id of that person's latest challenge for the action.
    current: HashMap<String, String>,
    blocked: HashMap<i64, OffsetDateTime>,
    /// key → (failures, first failure of the window, last failure)
    failures: HashMap<String, (u32, OffsetDateTime, OffsetDateTime)>,
}

pub struct MemoryChallenges {
    state: Mutex<State>,
    durable: Arc<dyn Store>,
}

impl MemoryChallenges {
    /// `durable` keeps the replay cache (`Store::remember_jti`).
    pub fn new(durable: Arc<dyn Store>) -> Self {
        Self {
            state: Mutex::default(),
            durable,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("challenge store lock")
    }
}

#[async_trait]
impl ChallengeStore for MemoryChallenges {
    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn insert(
        &self,
        challenge: &Challenge,
        now: OffsetDateTime,
    ) -> Result<Option<Challenge>> {
        let mut state = self.lock();
        let key = slot(challenge.user_id, challenge.action);
        let mut superseded = None;
        if let Some(old_id) = state.current.get(&key).cloned() {
            if let Some(old) = state.challenges.get_mut(&old_id) {
                if old.supersede(now) {
                    superseded = Some(old.clone());
                }
            }
        }
        state.current.insert(key, challenge.id.clone());
        state
            .challenges
            .insert(challenge.id.clone(), challenge.clone());
        Ok(superseded)
    }

    async fn get(&self, id: &str) -> Result<Option<Challenge>> {
        Ok(self.lock().challenges.get(id).cloned())
    }

    async fn pending_for_user(&self, user_id: i64, now: OffsetDateTime) -> Result<Vec<Challenge>> {
        let state = self.lock();
        let mut pending: Vec<Challenge> = state
            .challenges
            .values()
            .filter(|c| c.user_id == user_id && c.status == Status::Pending && !c.is_due(now))
            .cloned()
            .collect();
        pending.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(pending)
    }

    async fn swap(&self, challenge: &Challenge, expected_version: u64) -> Result<bool> {
        let mut state = self.lock();
        match state.challenges.get_mut(&challenge.id) {
            Some(stored) if stored.version == expected_version => {
                *stored = challenge.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn due(&self, now: OffsetDateTime) -> Result<Vec<Challenge>> {
        Ok(self
            .lock()
            .challenges
            .values()
            .filter(|c| c.is_due(now))
            .cloned()
            .collect())
    }

    async fn purge(&self, now: OffsetDateTime) -> Result<()> {
        let mut state = self.lock();
        state.challenges.retain(|_, c| c.retain_until() > now);
        let State {
            challenges,
            current,
            blocked,
            failures,
        } = &mut *state;
        current.retain(|_, id| challenges.contains_key(id));
        blocked.retain(|_, until| *until > now);
        failures.retain(|_, (_, first, _)| *first + LOGIN_WINDOW > now);
        Ok(())
    }

    async fn block_user(&self, user_id: i64, until: OffsetDateTime) -> Result<()> {
        let mut state = self.lock();
        let entry = state.blocked.entry(user_id).or_insert(until);
        *entry = (*entry).max(until);
        Ok(())
    }

    async fn blocked_until(
        &self,
        user_id: i64,
        now: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>> {
        Ok(self
            .lock()
            .blocked
            .get(&user_id)
            .copied()
            .filter(|until| *until > now))
    }

    async fn login_failed(&self, key: &str, now: OffsetDateTime) -> Result<u32> {
        let mut state = self.lock();
        let entry = state
            .failures
            .entry(key.to_owned())
            .or_insert((0, now, now));
        if entry.1 + LOGIN_WINDOW <= now {
            *entry = (0, now, now);
        }
        entry.0 += 1;
        entry.2 = now;
        Ok(entry.0)
    }

    async fn login_failures(
        &self,
        key: &str,
        now: OffsetDateTime,
    ) -> Result<(u32, Option<OffsetDateTime>)> {
        let state = self.lock();
        Ok(match state.failures.get(key) {
            Some((count, first, last)) if *first + LOGIN_WINDOW > now => (*count, Some(*last)),
            _ => (0, None),
        })
    }

    async fn login_succeeded(&self, key: &str) -> Result<()> {
        self.lock().failures.remove(key);
        Ok(())
    }

    async fn remember_jti(
        &self,
        device_id: &str,
        jti: &str,
        keep_until: OffsetDateTime,
    ) -> Result<bool> {
        self.durable
            .remember_jti(device_id, jti, keep_until)
            .await
            .map_err(|e| LiveError::Unavailable(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::challenge::{Action, Origin, Request};
    use time::macros::datetime;
    use time::Duration;

    const NOW: OffsetDateTime = datetime!(2026-11-28 12:00 UTC);

    async fn durable(dir: &tempfile::TempDir) -> Arc<dyn Store> {
        let url = format!("sqlite://{}/t.db", dir.path().display());
        Arc::new(crate::store::sqlite::SqliteStore::open(&url).await.unwrap())
    }

    async fn store() -> (MemoryChallenges, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (MemoryChallenges::new(durable(&dir).await), dir)
    }

    fn new(user_id: i64, action: Action) -> Challenge {
        Challenge::new(
            Request {
                action,
                workspace_id: 1,
                workspace_slug: "w".into(),
                workspace_name: "W".into(),
                user_id,
                user_email: "e".into(),
                session_hash: "s".into(),
                origin: Origin::default(),
            },
            NOW,
            Duration::seconds(120),
            &mut rand::thread_rng(),
        )
    }

    #[tokio::test]
    async fn a_new_challenge_supersedes_the_pending_one_of_the_same_action() {
        let (store, _dir) = store().await;
        let first = new(1, Action::Reveal);
        assert!(store.insert(&first, NOW).await.unwrap().is_none());
        assert!(store
            .insert(&new(1, Action::Rotate), NOW)
            .await
            .unwrap()
            .is_none());
        let second = new(1, Action::Reveal);
        let superseded = store.insert(&second, NOW).await.unwrap().unwrap();
        assert_eq!(superseded.id, first.id);
        assert_eq!(
            store.get(&first.id).await.unwrap().unwrap().status,
            Status::Expired
        );
        assert_eq!(store.pending_for_user(1, NOW).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn swap_has_one_winner() {
        let (store, _dir) = store().await;
        let c = new(1, Action::Reveal);
        store.insert(&c, NOW).await.unwrap();
        let mut a = c.clone();
        a.expire_if_due(NOW + Duration::seconds(500));
        let mut b = c.clone();
        b.supersede(NOW);
        assert!(store.swap(&a, c.version).await.unwrap());
        assert!(!store.swap(&b, c.version).await.unwrap());
    }

    #[tokio::test]
    async fn due_and_purge_follow_the_clock() {
        let (store, _dir) = store().await;
        let c = new(1, Action::Reveal);
        store.insert(&c, NOW).await.unwrap();
        assert!(store.due(NOW).await.unwrap().is_empty());
        assert_eq!(
            store.due(NOW + Duration::seconds(120)).await.unwrap().len(),
            1
        );
        store.purge(NOW + Duration::minutes(11)).await.unwrap();
        assert!(
            store.get(&c.id).await.unwrap().is_some(),
            "kept 10 minutes after its end"
        );
        store.purge(NOW + Duration::minutes(13)).await.unwrap();
        assert!(store.get(&c.id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn login_failures_count_within_the_window() {
        let (store, _dir) = store().await;
        for _ in 0..3 {
            store.login_failed("k", NOW).await.unwrap();
        }
        assert_eq!(store.login_failures("k", NOW).await.unwrap().0, 3);
        assert_eq!(
            store
                .login_failures("k", NOW + LOGIN_WINDOW)
                .await
                .unwrap()
                .0,
            0
        );
        store.login_succeeded("k").await.unwrap();
        assert_eq!(store.login_failures("k", NOW).await.unwrap().0, 0);
    }

    #[tokio::test]
    async fn a_used_jti_is_refused_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let keep = OffsetDateTime::now_utc() + Duration::minutes(5);
        let before = MemoryChallenges::new(durable(&dir).await);
        assert!(before.remember_jti("d", "j", keep).await.unwrap());
        assert!(!before.remember_jti("d", "j", keep).await.unwrap());
        drop(before);
        let after = MemoryChallenges::new(durable(&dir).await);
        assert!(!after.remember_jti("d", "j", keep).await.unwrap());
        assert!(after.remember_jti("other-device", "j", keep).await.unwrap());
    }
}
