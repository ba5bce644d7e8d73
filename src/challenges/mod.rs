//! Live state that expires: step-up challenges, the not-me block, login failure counters and the
//! device `jti` replay cache. `memory.rs` serves one process; `redis.rs` serves several instances.

pub mod memory;
pub mod redis;

use async_trait::async_trait;
use time::{Duration, OffsetDateTime};

use crate::domain::challenge::{Action, Challenge};

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("challenge store unavailable: {0}")]
    Unavailable(String),
}

pub type Result<T> = std::result::Result<T, LiveError>;

/// Window over which failed logins are counted.
pub const LOGIN_WINDOW: Duration = Duration::minutes(15);
/// Window of the per-person challenge limit.
pub const ISSUE_WINDOW: Duration = Duration::hours(1);

/// What `insert` did.
#[derive(Debug)]
pub enum Inserted {
    /// Stored; a still-pending challenge of the same person and action was superseded.
    Stored { superseded: Option<Box<Challenge>> },
    /// Not stored: the person already had the limit's worth of challenges in the last hour; the
    /// oldest of them leaves the window at `retry_at`.
    Limited { retry_at: OffsetDateTime },
}

#[async_trait]
pub trait ChallengeStore: Send + Sync + 'static {
    async fn ping(&self) -> Result<()>;

    /// Stores a new challenge unless its person already has `per_hour` challenges made in the
    /// last hour (0: no limit). A still-pending challenge of the same person and action is
    /// superseded (expired) in the same step and returned, so its waiters can be told. The check,
    /// the count and the store are one atomic step, so instances cannot overshoot together.
    async fn insert(
        &self,
        challenge: &Challenge,
        now: OffsetDateTime,
        per_hour: u32,
    ) -> Result<Inserted>;

    async fn get(&self, id: &str) -> Result<Option<Challenge>>;

    /// The challenges still pending at `now` that this person may decide (their own, and under
    /// the two-person rule those waiting for their second approval), newest first.
    async fn pending_for_user(&self, user_id: i64, now: OffsetDateTime) -> Result<Vec<Challenge>>;

    /// Stores `challenge` only if the stored one still has `expected_version`: of two racing
    /// transitions exactly one wins, the other re-reads and tries again.
    async fn swap(&self, challenge: &Challenge, expected_version: u64) -> Result<bool>;

    /// Challenges that are past their expiry but not yet marked expired.
    async fn due(&self, now: OffsetDateTime) -> Result<Vec<Challenge>>;

    /// Forgets challenges whose retention has passed.
    async fn purge(&self, now: OffsetDateTime) -> Result<()>;

    /// Refuses new challenges of `action` kinds for this person until `until` (after a `not_me`).
    async fn block_user(&self, user_id: i64, until: OffsetDateTime) -> Result<()>;
    async fn blocked_until(
        &self,
        user_id: i64,
        now: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>>;

    /// Counts a failed login under `key` and returns the failures in the current window.
    async fn login_failed(&self, key: &str, now: OffsetDateTime) -> Result<u32>;
    /// Failures under `key` in the current window and when the last one happened.
    async fn login_failures(
        &self,
        key: &str,
        now: OffsetDateTime,
    ) -> Result<(u32, Option<OffsetDateTime>)>;
    async fn login_succeeded(&self, key: &str) -> Result<()>;

    /// Records a device JWS id; false when the device already used it (a replay). The id is kept
    /// until `keep_until`, across restarts and instances (CONTRACT.md section 4).
    async fn remember_jti(
        &self,
        device_id: &str,
        jti: &str,
        keep_until: OffsetDateTime,
    ) -> Result<bool>;

    /// Returns once what the store keeps behind its answers (the embedded store's used ids) is
    /// written: at shutdown, so that a restart still refuses them.
    async fn flush(&self) {}
}

/// The index under which a person's current challenge for an action is kept.
pub fn slot(user_id: i64, action: Action) -> String {
    format!("{user_id}:{}", action.as_str())
}
