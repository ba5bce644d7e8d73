//! The embedded challenge store: one mutex over plain maps. Every method is one critical section,
//! which is what makes `insert` (with supersede) and `swap` atomic.
//!
//! The replay cache is kept here too, and also on the durable store, so that a restart does not
//! forget a used `jti`: the map answers (one process is the only one asking), the ids it has
//! accepted are written to the durable store in batches behind it, and on first use the ids still
//! kept there are loaded back. A device call used to wait for its own write on SQLite's single
//! writer (issue 18). What a crash can lose: the ids accepted in the last write's few
//! milliseconds, each usable again only until its JWS expires (two minutes at most).

use async_trait::async_trait;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;

use super::{slot, ChallengeStore, Inserted, LiveError, Result, ISSUE_WINDOW, LOGIN_WINDOW};
use crate::domain::challenge::{Challenge, Status};
use crate::store::write_behind::WriteBehind;
use crate::store::{Store, UsedJti};

#[derive(Default)]
struct State {
    challenges: HashMap<String, Challenge>,
    /// `slot(user, action)` → id of that person's latest challenge for the action.
    current: HashMap<String, String>,
    blocked: HashMap<i64, OffsetDateTime>,
    /// key → (failures, first failure of the window, last failure)
    failures: HashMap<String, (u32, OffsetDateTime, OffsetDateTime)>,
    /// person → when their challenges of the last hour were made, oldest first.
    issued: HashMap<i64, VecDeque<OffsetDateTime>>,
    /// (device, jti) → kept until; swept as it grows (`remember_jti`).
    used: HashMap<(String, String), OffsetDateTime>,
    /// How large `used` may grow before its expired ids are swept (at least `SWEEP_FROM`).
    sweep_at: usize,
}

const SWEEP_FROM: usize = 1024;
/// Accepted ids queued for the durable store before callers wait.
const RECORD_QUEUE: usize = 16_384;
/// Ids per write at most.
const RECORD_BATCH: usize = 1_024;
/// How long an accepted id waits for others to share its write. Written at once, every step-up's
/// two ids were two transactions on sqlx's writer, a third of the server's context switches per
/// paced flow (issue 18). While the process lives the ids in memory refuse a replay; the durable
/// copy is for a restart, and a crash (not a shutdown, which flushes) loses at most this much.
const RECORD_GATHER: std::time::Duration = std::time::Duration::from_millis(100);

pub struct MemoryChallenges {
    state: Mutex<State>,
    durable: Arc<dyn Store>,
    /// The ids kept on the durable store, loaded once.
    loaded: tokio::sync::OnceCell<()>,
    /// Writes accepted ids to the durable store behind the answers: whatever has queued within
    /// `RECORD_GATHER`, in one statement.
    record: WriteBehind<UsedJti>,
}

impl MemoryChallenges {
    /// `durable` keeps the replay cache across restarts.
    pub fn new(durable: Arc<dyn Store>) -> Self {
        Self {
            state: Mutex::default(),
            durable: durable.clone(),
            loaded: tokio::sync::OnceCell::new(),
            record: WriteBehind::new(
                "the used device JWS ids",
                RECORD_QUEUE,
                RECORD_BATCH,
                std::time::Duration::ZERO,
                move |used: Vec<UsedJti>| {
                    let durable = durable.clone();
                    Box::pin(
                        async move { durable.record_jtis(&used).await.map_err(|e| e.to_string()) },
                    )
                },
            )
            .gathering(RECORD_GATHER),
        }
    }

    /// Loads the ids the durable store still keeps (a previous run's), once.
    async fn load_used(&self) -> Result<()> {
        self.loaded
            .get_or_try_init(|| async {
                let kept = self
                    .durable
                    .used_jtis()
                    .await
                    .map_err(|e| LiveError::Unavailable(e.to_string()))?;
                let mut state = self.lock();
                for u in kept {
                    state
                        .used
                        .entry((u.device_id, u.jti))
                        .or_insert(u.keep_until);
                }
                Ok(())
            })
            .await
            .map(|_| ())
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
        per_hour: u32,
    ) -> Result<Inserted> {
        let mut state = self.lock();
        let issued = state.issued.entry(challenge.user_id).or_default();
        while issued.front().is_some_and(|t| *t + ISSUE_WINDOW <= now) {
            issued.pop_front();
        }
        if per_hour > 0 && issued.len() >= per_hour as usize {
            let oldest = issued[issued.len() - per_hour as usize];
            return Ok(Inserted::Limited {
                retry_at: oldest + ISSUE_WINDOW,
            });
        }
        issued.push_back(now);
        let key = slot(challenge.user_id, challenge.action);
        let mut superseded = None;
        if let Some(old_id) = state.current.get(&key).cloned() {
            if let Some(old) = state.challenges.get_mut(&old_id) {
                if old.supersede(now) {
                    superseded = Some(Box::new(old.clone()));
                }
            }
        }
        state.current.insert(key, challenge.id.clone());
        state
            .challenges
            .insert(challenge.id.clone(), challenge.clone());
        Ok(Inserted::Stored { superseded })
    }

    async fn get(&self, id: &str) -> Result<Option<Challenge>> {
        Ok(self.lock().challenges.get(id).cloned())
    }

    async fn pending_for_user(&self, user_id: i64, now: OffsetDateTime) -> Result<Vec<Challenge>> {
        let state = self.lock();
        let mut pending: Vec<Challenge> = state
            .challenges
            .values()
            .filter(|c| {
                c.status == Status::Pending && !c.is_due(now) && c.deciders().contains(&user_id)
            })
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
            issued,
            used,
            sweep_at: _,
        } = &mut *state;
        used.retain(|_, kept| *kept >= now);
        issued.retain(|_, times| times.back().is_some_and(|t| *t + ISSUE_WINDOW > now));
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
        self.load_used().await?;
        {
            let mut state = self.lock();
            let key = (device_id.to_owned(), jti.to_owned());
            // Kept until swept, as a row is kept until `prune`.
            if state.used.contains_key(&key) {
                return Ok(false);
            }
            state.used.insert(key, keep_until);
            if state.used.len() >= state.sweep_at.max(SWEEP_FROM) {
                let now = OffsetDateTime::now_utc();
                state.used.retain(|_, kept| *kept >= now);
                state.sweep_at = state.used.len() * 2;
            }
        }
        self.record
            .record(UsedJti {
                device_id: device_id.to_owned(),
                jti: jti.to_owned(),
                keep_until,
            })
            .await;
        Ok(true)
    }

    async fn flush(&self) {
        self.record.flush().await
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
        let database = crate::config::Database::Sqlite {
            url: format!("sqlite://{}/t.db", dir.path().display()),
            path: dir.path().join("t.db"),
        };
        crate::store::open(&database).await.unwrap().store
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
                support: None,
                subject: None,
                second_approvers: vec![],
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
        assert!(stored(store.insert(&first, NOW, 0).await).is_none());
        assert!(stored(store.insert(&new(1, Action::Rotate), NOW, 0).await).is_none());
        let second = new(1, Action::Reveal);
        let superseded = stored(store.insert(&second, NOW, 0).await).unwrap();
        assert_eq!(superseded.id, first.id);
        assert_eq!(
            store.get(&first.id).await.unwrap().unwrap().status,
            Status::Expired
        );
        assert_eq!(store.pending_for_user(1, NOW).await.unwrap().len(), 2);
    }

    fn stored(r: Result<Inserted>) -> Option<Challenge> {
        match r.unwrap() {
            Inserted::Stored { superseded } => superseded.map(|c| *c),
            Inserted::Limited { .. } => panic!("limited"),
        }
    }

    #[tokio::test]
    async fn the_hourly_limit_counts_per_person_and_frees_up_as_the_hour_slides() {
        let (store, _dir) = store().await;
        for i in 0..3 {
            let at = NOW + Duration::minutes(i * 10);
            stored(store.insert(&new(1, Action::Reveal), at, 3).await);
        }
        let later = NOW + Duration::minutes(30);
        match store
            .insert(&new(1, Action::Reveal), later, 3)
            .await
            .unwrap()
        {
            Inserted::Limited { retry_at } => assert_eq!(retry_at, NOW + Duration::hours(1)),
            other => panic!("{other:?}"),
        }
        // Somebody else is not affected; the limit frees up when the oldest leaves the hour.
        stored(store.insert(&new(2, Action::Reveal), later, 3).await);
        stored(
            store
                .insert(&new(1, Action::Reveal), NOW + Duration::hours(1), 3)
                .await,
        );
        assert!(matches!(
            store
                .insert(&new(1, Action::Reveal), NOW + Duration::hours(1), 3)
                .await
                .unwrap(),
            Inserted::Limited { .. }
        ));
    }

    #[tokio::test]
    async fn a_challenge_awaiting_its_second_approval_is_pending_for_the_second_approvers() {
        let (store, _dir) = store().await;
        let mut c = new(1, Action::Rotate);
        c.second_approvers = vec![2, 3];
        store.insert(&c, NOW, 0).await.unwrap();
        assert_eq!(store.pending_for_user(1, NOW).await.unwrap().len(), 1);
        assert!(store.pending_for_user(2, NOW).await.unwrap().is_empty());
        let before = c.version;
        c.first_approval = Some(crate::domain::challenge::FirstApproval {
            device_id: "d".into(),
            at: NOW,
        });
        c.version += 1;
        assert!(store.swap(&c, before).await.unwrap());
        assert!(store.pending_for_user(1, NOW).await.unwrap().is_empty());
        assert_eq!(store.pending_for_user(2, NOW).await.unwrap()[0].id, c.id);
        assert_eq!(store.pending_for_user(3, NOW).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn swap_has_one_winner() {
        let (store, _dir) = store().await;
        let c = new(1, Action::Reveal);
        store.insert(&c, NOW, 0).await.unwrap();
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
        store.insert(&c, NOW, 0).await.unwrap();
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
        // As the server does when it stops.
        before.flush().await;
        drop(before);
        let after = MemoryChallenges::new(durable(&dir).await);
        assert!(!after.remember_jti("d", "j", keep).await.unwrap());
        assert!(after.remember_jti("other-device", "j", keep).await.unwrap());
    }
}
