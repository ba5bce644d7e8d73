//! When to try a push again: exponential backoff with jitter, `Retry-After` honoured, and never
//! past the moment the push stops being useful (the challenge's expiry).

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use time::OffsetDateTime;

use super::{Delivery, PushKind, PushMessage};
use crate::clock::Clock;

/// Timing of one delivery's attempts. The defaults suit production; tests shorten them.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// One attempt (connect, send, answer) may take this long; a hanging provider must not hold
    /// a delivery until the challenge expires.
    pub request_timeout: Duration,
    /// The first wait after a 429/5xx/timeout; doubled after each retry up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A `Resolved` push still matters a little after the challenge expired (the phone may
    /// still show the prompt), so it may be tried this long past `expires_at`.
    pub resolved_grace: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
            resolved_grace: Duration::from_secs(30),
        }
    }
}

/// What one attempt came to, before retry decisions.
#[derive(Debug)]
pub(crate) enum Attempt {
    Done(Delivery),
    /// Worth another try later: 429, 5xx, timeout, connection trouble.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The provider refused our credential and the next attempt will use a fresh one: try again
    /// at once. Only offered when the attempt was told it may renew (once per delivery).
    RetryWithFreshCredential {
        reason: String,
    },
}

/// Runs attempts until one settles the delivery, the retries run out of time, or the credential
/// was refused twice. `attempt(may_renew)` makes one request; each gets the policy's timeout,
/// shortened so that none runs past the deadline.
pub(crate) async fn deliver_with_retries<F, Fut>(
    policy: &RetryPolicy,
    clock: &dyn Clock,
    msg: &PushMessage,
    mut attempt: F,
) -> Delivery
where
    F: FnMut(bool) -> Fut,
    Fut: Future<Output = Attempt>,
{
    let mut retries = Retries::new(policy, msg, clock.now());
    let mut may_renew = true;
    let mut last_reason: Option<String> = None;
    loop {
        let Some(timeout) = retries.attempt_timeout(clock.now()) else {
            return Delivery::Failed {
                reason: last_reason.unwrap_or_else(|| "expired".to_owned()),
            };
        };
        // Dropping a timed-out request resets only its own HTTP/2 stream: the other pushes
        // sharing the connection go on.
        let outcome = match tokio::time::timeout(timeout, attempt(may_renew)).await {
            Ok(outcome) => outcome,
            // Cut short by the deadline, not by a slow provider: what failed before is the news.
            Err(_) if timeout < policy.request_timeout && last_reason.is_some() => {
                return Delivery::Failed {
                    reason: last_reason.unwrap_or_default(),
                };
            }
            Err(_) => Attempt::Transient {
                reason: "timeout".to_owned(),
                retry_after: None,
            },
        };
        match outcome {
            Attempt::Done(delivery) => return delivery,
            Attempt::RetryWithFreshCredential { reason } => {
                tracing::debug!(%reason, "push credential refused; retrying with a fresh one");
                may_renew = false;
                last_reason = Some(reason);
            }
            Attempt::Transient {
                reason,
                retry_after,
            } => {
                tracing::debug!(%reason, ?retry_after, "push attempt failed; backing off");
                if retries.wait(clock.now(), retry_after).await.is_err() {
                    return Delivery::Failed { reason };
                }
                last_reason = Some(reason);
            }
        }
    }
}

/// The retry state of one delivery.
pub(crate) struct Retries<'a> {
    policy: &'a RetryPolicy,
    deadline: OffsetDateTime,
    backoff: Duration,
}

impl<'a> Retries<'a> {
    pub(crate) fn new(policy: &'a RetryPolicy, msg: &PushMessage, now: OffsetDateTime) -> Self {
        let deadline = match msg.kind {
            PushKind::Challenge | PushKind::Notice => msg.expires_at,
            PushKind::Resolved => msg.expires_at.max(now + policy.resolved_grace),
        };
        Self {
            policy,
            deadline,
            backoff: policy.initial_backoff,
        }
    }

    /// How long the next attempt may take, or `None` once the deadline has passed: a challenge
    /// push that arrives after expiry only shows a dead prompt.
    pub(crate) fn attempt_timeout(&self, now: OffsetDateTime) -> Option<Duration> {
        let left = Duration::try_from(self.deadline - now).ok()?;
        (!left.is_zero()).then(|| left.min(self.policy.request_timeout))
    }

    /// Waits before the next attempt. `Err(())` when that attempt could only start after the
    /// deadline: give up now rather than sleep for nothing.
    pub(crate) async fn wait(
        &mut self,
        now: OffsetDateTime,
        retry_after: Option<Duration>,
    ) -> Result<(), ()> {
        // Equal jitter: half the backoff fixed, half random, so phones of one fan-out that all hit
        // a 503 do not come back in lockstep.
        let half = self.backoff / 2;
        let jitter = rand::thread_rng().gen_range(Duration::ZERO..=half);
        let wait = retry_after.unwrap_or(half + jitter);
        self.backoff = (self.backoff * 2).min(self.policy.max_backoff);
        if now + wait >= self.deadline {
            return Err(());
        }
        tokio::time::sleep(wait).await;
        Ok(())
    }
}

/// Maps a reqwest failure to a retryable attempt; the URL (which holds the device token) is
/// stripped before anything is logged.
pub(crate) fn transport_failure(error: reqwest::Error) -> Attempt {
    let reason = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else {
        "transport"
    };
    tracing::debug!(error = %error.without_url(), "push request failed");
    Attempt::Transient {
        reason: reason.into(),
        retry_after: None,
    }
}

/// `Retry-After` (RFC 9110 section 10.2.3): delay-seconds or an HTTP-date.
pub(crate) fn parse_retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(value, &format)
        .ok()?
        .assume_utc();
    // A date already past means "now".
    Some(Duration::try_from(at - now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use time::macros::datetime;

    fn msg(kind: PushKind, expires_at: OffsetDateTime) -> PushMessage {
        PushMessage {
            kind,
            challenge_id: "c1".into(),
            action: "scim_token.reveal".into(),
            workspace_name: "Acme".into(),
            expires_at,
        }
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = datetime!(2026-11-28 12:00:00 UTC);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sat, 28 Nov 2026 12:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sat, 28 Nov 2026 11:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn attempts_stop_at_the_challenge_expiry() {
        let policy = RetryPolicy::default();
        let now = datetime!(2026-11-28 12:00:00 UTC);
        let retries = Retries::new(
            &policy,
            &msg(PushKind::Challenge, now + time::Duration::seconds(3)),
            now,
        );
        assert_eq!(retries.attempt_timeout(now), Some(Duration::from_secs(3)));
        assert_eq!(
            retries.attempt_timeout(now - time::Duration::minutes(1)),
            Some(policy.request_timeout)
        );
        assert_eq!(
            retries.attempt_timeout(now + time::Duration::seconds(3)),
            None
        );
    }

    #[test]
    fn a_resolved_push_for_an_expired_challenge_still_gets_its_grace() {
        let policy = RetryPolicy::default();
        let now = datetime!(2026-11-28 12:00:00 UTC);
        let retries = Retries::new(
            &policy,
            &msg(PushKind::Resolved, now - time::Duration::minutes(1)),
            now,
        );
        assert_eq!(retries.attempt_timeout(now), Some(policy.request_timeout));
        assert_eq!(retries.attempt_timeout(now + policy.resolved_grace), None);
    }

    #[tokio::test]
    async fn waiting_past_the_deadline_gives_up_without_sleeping() {
        let policy = RetryPolicy::default();
        let now = datetime!(2026-11-28 12:00:00 UTC);
        let mut retries = Retries::new(
            &policy,
            &msg(PushKind::Challenge, now + time::Duration::seconds(5)),
            now,
        );
        let started = std::time::Instant::now();
        assert_eq!(
            retries.wait(now, Some(Duration::from_secs(60))).await,
            Err(())
        );
        assert!(started.elapsed() < Duration::from_millis(100));
    }

    fn quick_policy(request_timeout_ms: u64) -> RetryPolicy {
        RetryPolicy {
            request_timeout: Duration::from_millis(request_timeout_ms),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(10),
            ..RetryPolicy::default()
        }
    }

    fn expiring_in(ms: i64) -> PushMessage {
        msg(
            PushKind::Challenge,
            OffsetDateTime::now_utc() + time::Duration::milliseconds(ms),
        )
    }

    #[tokio::test]
    async fn an_attempt_cut_short_by_the_expiry_reports_the_earlier_failure() {
        let policy = quick_policy(10_000);
        let mut attempts = 0;
        let delivery = deliver_with_retries(&policy, &SystemClock, &expiring_in(300), |_| {
            attempts += 1;
            let first = attempts == 1;
            async move {
                if !first {
                    std::future::pending::<()>().await;
                }
                Attempt::Transient {
                    reason: "ServiceUnavailable".into(),
                    retry_after: None,
                }
            }
        })
        .await;
        assert_eq!(
            delivery,
            Delivery::Failed {
                reason: "ServiceUnavailable".into()
            }
        );
        assert_eq!(attempts, 2);
    }

    #[tokio::test]
    async fn attempts_that_hang_time_out_and_are_retried_until_expiry() {
        let policy = quick_policy(100);
        let mut attempts = 0;
        let delivery = deliver_with_retries(&policy, &SystemClock, &expiring_in(450), |_| {
            attempts += 1;
            std::future::pending::<Attempt>()
        })
        .await;
        assert_eq!(
            delivery,
            Delivery::Failed {
                reason: "timeout".into()
            }
        );
        assert!(attempts >= 3, "{attempts}");
    }

    #[tokio::test]
    async fn a_refused_credential_is_renewed_once_without_backoff() {
        let policy = RetryPolicy {
            initial_backoff: Duration::from_secs(60),
            ..RetryPolicy::default()
        };
        let mut offered = Vec::new();
        let delivery =
            deliver_with_retries(&policy, &SystemClock, &expiring_in(60_000), |may_renew| {
                offered.push(may_renew);
                async move {
                    if may_renew {
                        Attempt::RetryWithFreshCredential {
                            reason: "UNAUTHENTICATED".into(),
                        }
                    } else {
                        Attempt::Done(Delivery::Failed {
                            reason: "UNAUTHENTICATED".into(),
                        })
                    }
                }
            })
            .await;
        assert_eq!(offered, [true, false]);
        assert_eq!(
            delivery,
            Delivery::Failed {
                reason: "UNAUTHENTICATED".into()
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_up_to_its_cap() {
        let policy = RetryPolicy {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(4),
            ..RetryPolicy::default()
        };
        let now = datetime!(2026-11-28 12:00:00 UTC);
        let mut retries = Retries::new(
            &policy,
            &msg(PushKind::Challenge, now + time::Duration::hours(1)),
            now,
        );
        let mut waits = Vec::new();
        for _ in 0..4 {
            let before = tokio::time::Instant::now();
            retries.wait(now, None).await.unwrap();
            waits.push(before.elapsed());
        }
        // Each wait lies in [backoff/2, backoff] for backoffs 1, 2, 4, 4 seconds.
        for (wait, backoff) in waits.iter().zip([1u64, 2, 4, 4]) {
            let backoff = Duration::from_secs(backoff);
            assert!(*wait >= backoff / 2 && *wait <= backoff, "{waits:?}");
        }
    }
}
