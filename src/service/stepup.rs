//! The step-up flow: make a challenge, let the phone decide, release once to the asking session.
//! Every change goes through `transition`, a compare-and-swap loop on the challenge store, then
//! wakes the waiters through the bus.

use serde_json::json;
use time::Duration;

use super::devices::AuthedDevice;
use super::{Caller, ConsoleSession};
use crate::app::App;
use crate::domain::challenge::{
    Action, Challenge, DecideError, Decision, DenyReason, Origin, Outcome, ReleaseError, Request,
    Status,
};
use crate::domain::crypto::Secret;
use crate::domain::device::{self, DeviceKey};
use crate::error::{ApiError, ApiResult};
use crate::proto::{ChallengeChanged, ChallengeStatus};
use crate::push::{PushKind, PushMessage};
use crate::store::Role;

/// After a `not_me` denial, no new challenge for that person for this long.
pub const NOT_ME_BLOCK: Duration = Duration::minutes(15);

/// What the console gets back from a released challenge.
pub struct Released {
    pub token: Secret,
    pub action: Action,
    pub token_created_at: time::OffsetDateTime,
}

impl App {
    /// Applies `f` to the stored challenge atomically: re-read and retry when another transition
    /// won the race. Changes are announced on the bus. `f`'s result is returned with the
    /// challenge as stored afterwards.
    pub async fn transition<T>(
        &self,
        id: &str,
        mut f: impl FnMut(&mut Challenge) -> T,
    ) -> ApiResult<(Challenge, T)> {
        loop {
            let Some(mut challenge) = self.challenges.get(id).await? else {
                return Err(ApiError::NotFound);
            };
            let before = challenge.version;
            let result = f(&mut challenge);
            if challenge.version == before {
                return Ok((challenge, result));
            }
            if self.challenges.swap(&challenge, before).await? {
                self.announce(&challenge).await;
                return Ok((challenge, result));
            }
        }
    }

    async fn announce(&self, c: &Challenge) {
        let message = ChallengeChanged {
            challenge_id: c.id.clone(),
            status: ChallengeStatus::from(c.status) as i32,
            changed_at_unix_ms: (self.now().unix_timestamp_nanos() / 1_000_000) as i64,
        };
        if let Err(e) = self.bus.publish(message).await {
            // Waiters still see the change when their stream re-reads (on reconnect or expiry).
            tracing::warn!(challenge = %c.id, error = %e, "could not announce a challenge change");
        }
        if c.status == Status::Expired {
            // The phones' prompts can go: a silent "resolved" push to each of the person's devices.
            match self.store.devices_of_user(c.user_id).await {
                Ok(devices) => {
                    self.notifier
                        .fan_out(&devices, PushMessage::for_challenge(c, PushKind::Resolved));
                }
                Err(e) => {
                    tracing::warn!(challenge = %c.id, error = %e, "no resolved push after expiry")
                }
            }
            self.metrics.challenge(c.action, "expired");
            self.audit(
                Some(c.workspace_id),
                "challenge.expired",
                Some(&c.user_email),
                None,
                None,
                json!({"challenge": c.id, "action": c.action.as_str()}),
            )
            .await;
        }
    }

    /// Makes a step-up challenge for the signed-in person and pushes it to their phones.
    pub async fn request_step_up(
        &self,
        session: &ConsoleSession,
        action: Action,
        caller: &Caller,
    ) -> ApiResult<(Challenge, usize)> {
        let user = &session.user;
        if user.role < Role::Admin {
            return Err(ApiError::Forbidden("only owners and admins may do this"));
        }
        let now = self.now();
        if let Some(until) = self.challenges.blocked_until(user.id, now).await? {
            return Err(ApiError::TooManyRequests {
                detail: "a recent request was reported as not made by you; new requests are paused"
                    .into(),
                retry_after_secs: (until - now).whole_seconds().max(1) as u64,
            });
        }
        let devices = self.store.devices_of_user(user.id).await?;
        if devices.is_empty() {
            return Err(ApiError::Conflict(
                "enroll a device first: the token is only revealed after approval on your phone"
                    .into(),
            ));
        }
        let challenge = Challenge::new(
            Request {
                action,
                workspace_id: session.workspace.id,
                workspace_slug: session.workspace.slug.clone(),
                workspace_name: session.workspace.name.clone(),
                user_id: user.id,
                user_email: user.email.clone(),
                session_hash: session.id_hash.clone(),
                origin: Origin {
                    ip: caller.ip.clone(),
                    user_agent: caller.user_agent.clone(),
                },
            },
            now,
            self.config.challenge_ttl,
            &mut rand::rngs::OsRng,
        );
        if let Some(old) = self.challenges.insert(&challenge, now).await? {
            self.announce(&old).await;
        }
        self.metrics.challenge(action, "created");
        self.audit(
            Some(session.workspace.id),
            "challenge.created",
            Some(&user.email),
            Some(&caller.ip),
            None,
            json!({"challenge": challenge.id, "action": action.as_str(), "user_agent": caller.user_agent}),
        )
        .await;
        let notified = self.notifier.fan_out(
            &devices,
            PushMessage::for_challenge(&challenge, PushKind::Challenge),
        );
        Ok((challenge, notified))
    }

    /// The challenge, if it belongs to this session (anything else is "not found"), with expiry
    /// applied if it is due.
    pub async fn challenge_of_session(&self, id: &str, session_hash: &str) -> ApiResult<Challenge> {
        let Some(c) = self.challenges.get(id).await? else {
            return Err(ApiError::NotFound);
        };
        if c.session_hash != session_hash {
            tracing::info!(challenge = %id, "challenge asked for by another session");
            return Err(ApiError::NotFound);
        }
        if c.is_due(self.now()) {
            let now = self.now();
            return Ok(self.transition(id, |c| c.expire_if_due(now)).await?.0);
        }
        Ok(c)
    }

    pub async fn pending_for_device(&self, me: &AuthedDevice) -> ApiResult<Vec<Challenge>> {
        Ok(self
            .challenges
            .pending_for_user(me.user.id, self.now())
            .await?)
    }

    /// Verifies a signed decision and applies it. Refusals leave the challenge unchanged.
    pub async fn decide(
        &self,
        me: &AuthedDevice,
        challenge_id: &str,
        jws: &str,
        caller: &Caller,
    ) -> ApiResult<(Challenge, Outcome)> {
        let key = DeviceKey::from_jwk(&me.device.public_key).map_err(|_| ApiError::Unauthorized)?;
        let now = self.now();
        let claims =
            device::verify_decision(jws, &key, &me.device.id, &self.config.public_url, now)
                .map_err(|e| {
                    tracing::info!(reason = %e, "decision signature refused");
                    ApiError::Unauthorized
                })?;
        let approve = match claims.decision.as_str() {
            "approve" => true,
            "deny" => false,
            _ => {
                return Err(ApiError::Unprocessable(
                    "decision must be approve or deny".into(),
                ))
            }
        };
        let reason = match claims.reason.as_deref() {
            None => None,
            Some("not_me") => Some(DenyReason::NotMe),
            Some("mistake") => Some(DenyReason::Mistake),
            Some(_) => {
                return Err(ApiError::Unprocessable(
                    "reason must be not_me or mistake".into(),
                ))
            }
        };
        let decision = Decision {
            device_id: me.device.id.clone(),
            device_user_id: me.user.id,
            challenge_id: claims.sub.clone(),
            nonce: claims.nonce.clone(),
            action: claims.action.clone(),
            approve,
            number: claims.number,
            reason,
        };
        if claims.sub != challenge_id {
            return Err(ApiError::Forbidden(
                "the decision was signed for another challenge",
            ));
        }
        let (challenge, result) = self
            .transition(challenge_id, |c| c.decide(&decision, now))
            .await?;
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(DecideError::NotTheOwner) => {
                tracing::warn!(challenge = %challenge_id, device = %me.device.id, "decision from a device of another person");
                return Err(ApiError::Forbidden(
                    "this device may not decide that challenge",
                ));
            }
            Err(DecideError::Mismatch) => {
                return Err(ApiError::Forbidden(
                    "the decision does not match the challenge (nonce or action)",
                ))
            }
            Err(DecideError::NotPending) => {
                return Err(ApiError::Conflict(format!(
                    "the challenge is already {}",
                    challenge.status.as_str()
                )))
            }
        };
        self.metrics
            .decision_seconds
            .observe((now - challenge.created_at).as_seconds_f64().max(0.0));
        let (kind, detail) = match outcome {
            Outcome::Approved => (
                "challenge.approved",
                json!({"challenge": challenge.id, "action": challenge.action.as_str()}),
            ),
            Outcome::Denied(reason) => (
                "challenge.denied",
                json!({"challenge": challenge.id, "action": challenge.action.as_str(), "reason": reason.map(DenyReason::as_str)}),
            ),
            Outcome::WrongNumber => (
                "challenge.denied",
                json!({"challenge": challenge.id, "action": challenge.action.as_str(), "reason": "wrong_number"}),
            ),
        };
        self.metrics.challenge(
            challenge.action,
            if outcome == Outcome::Approved {
                "approved"
            } else {
                "denied"
            },
        );
        self.audit(
            Some(challenge.workspace_id),
            kind,
            Some(&challenge.user_email),
            Some(&caller.ip),
            Some(&me.device.id),
            detail,
        )
        .await;

        if outcome == Outcome::Denied(Some(DenyReason::NotMe)) {
            self.challenges
                .block_user(challenge.user_id, now + NOT_ME_BLOCK)
                .await?;
            self.audit(
                Some(challenge.workspace_id),
                "security.suspected_attack",
                Some(&challenge.user_email),
                Some(&challenge.origin.ip),
                Some(&me.device.id),
                json!({"challenge": challenge.id, "requested_from": challenge.origin.ip, "user_agent": challenge.origin.user_agent}),
            )
            .await;
        }
        if outcome == Outcome::Approved && challenge.action == Action::Rotate {
            self.rotate_on_approval(&challenge).await?;
        }
        // Other phones of this person can drop their prompt now.
        let others: Vec<_> = self
            .store
            .devices_of_user(challenge.user_id)
            .await?
            .into_iter()
            .filter(|d| d.id != me.device.id)
            .collect();
        self.notifier.fan_out(
            &others,
            PushMessage::for_challenge(&challenge, PushKind::Resolved),
        );
        Ok((challenge, outcome))
    }

    /// "Regenerate": the new token is made the moment the phone approves (CONTRACT.md section 3).
    async fn rotate_on_approval(&self, challenge: &Challenge) -> ApiResult<()> {
        let workspace = self
            .store
            .workspace_by_id(challenge.workspace_id)
            .await?
            .ok_or(ApiError::NotFound)?;
        match self.rotate_token(&workspace, &challenge.user_email).await {
            Ok(_) => {
                self.audit(
                    Some(workspace.id),
                    "token.rotated",
                    Some(&challenge.user_email),
                    Some(&challenge.origin.ip),
                    None,
                    json!({"challenge": challenge.id}),
                )
                .await;
                Ok(())
            }
            Err(e) => {
                // Nothing to release if the rotation did not happen: end the challenge.
                let now = self.now();
                self.transition(&challenge.id, |c| {
                    if c.status == Status::Approved {
                        c.expires_at = now;
                        c.expire_if_due(now);
                    }
                })
                .await?;
                Err(e)
            }
        }
    }

    /// Hands the token to the session that asked, exactly once.
    pub async fn release(
        &self,
        id: &str,
        session: &ConsoleSession,
        caller: &Caller,
    ) -> ApiResult<Released> {
        let now = self.now();
        let (challenge, result) = self
            .transition(id, |c| {
                if c.session_hash == session.id_hash {
                    Some(c.release(now))
                } else {
                    None
                }
            })
            .await?;
        match result {
            None => {
                tracing::info!(challenge = %id, "release asked for by another session");
                return Err(ApiError::NotFound);
            }
            Some(Err(ReleaseError::AlreadyReleased)) => {
                return Err(ApiError::Gone(
                    "the token was already released for this challenge".into(),
                ))
            }
            Some(Err(ReleaseError::NotApproved)) => {
                return Err(ApiError::Conflict(format!(
                    "the challenge is {}, not approved",
                    challenge.status.as_str()
                )))
            }
            Some(Ok(())) => {}
        }
        self.metrics.challenge(challenge.action, "released");
        let (token, token_created_at) = self.reveal_token(&session.workspace).await?;
        self.audit(
            Some(session.workspace.id),
            "token.released",
            Some(&session.user.email),
            Some(&caller.ip),
            challenge.decided_by_device.as_deref(),
            json!({"challenge": challenge.id, "action": challenge.action.as_str()}),
        )
        .await;
        Ok(Released {
            token,
            action: challenge.action,
            token_created_at,
        })
    }

    /// Marks challenges past their expiry as expired (waking their waiters) and forgets old ones.
    pub async fn sweep_challenges(&self) -> ApiResult<usize> {
        let now = self.now();
        let due = self.challenges.due(now).await?;
        let mut expired = 0;
        for c in due {
            if self.transition(&c.id, |c| c.expire_if_due(now)).await?.1 {
                expired += 1;
            }
        }
        self.challenges.purge(now).await?;
        Ok(expired)
    }
}
