//! The step-up flow: make a challenge, let the phone decide, release once to the asking session.
//! Every change goes through `transition`, a compare-and-swap loop on the challenge store, then
//! wakes the waiters through the bus.

use serde_json::json;

use super::transition::By;
use super::{About, AuthedDevice, Caller, ConsoleSession, EnrollmentOffer, NOTICE_LIFETIME};
use crate::app::App;
use crate::challenges::Inserted;
use crate::domain::audit::Kind;
use crate::domain::challenge::{
    Action, Challenge, DecideError, Decision, Origin, Outcome, ReleaseError, Request, Status,
};
use crate::domain::crypto::Secret;
use crate::domain::device::{self, DeviceKey};
use crate::domain::policy::Policy;
use crate::error::{ApiError, ApiResult};
use crate::push::{PushKind, PushMessage};
use crate::service::audit::Audit;
use crate::store::{Device, Role, User, Workspace};

/// Whole seconds from `now` to `then`, rounded up (at least 1): a client that waits that long is
/// not refused again.
fn seconds_until(now: time::OffsetDateTime, then: time::OffsetDateTime) -> u64 {
    let ms = (then - now).whole_milliseconds().max(1) as u64;
    ms.div_ceil(1000)
}

/// What a released challenge hands to the session that asked, by action.
pub enum Released {
    /// View Token and Regenerate: the token, once.
    Token {
        token: Secret,
        action: Action,
        token_created_at: time::OffsetDateTime,
    },
    /// `device.enroll`: a one-time code for the new phone.
    Enrollment(EnrollmentOffer),
    /// `member.devices_reset`: how many phones went.
    DevicesReset { member_id: i64, removed: u64 },
    /// `member.promote`: the member's new role, in effect.
    Promoted { member_id: i64, role: Role },
}

impl App {
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
        let policy = self.store.policy(session.workspace.id).await?;
        // Regenerating shows the new token too: both need the policy's leave to view it.
        if !policy.token_viewers.admit(user.role) {
            return Err(ApiError::Forbidden(
                "this workspace's policy lets only owners view the token",
            ));
        }
        self.open_challenge(
            session,
            &session.workspace,
            action,
            About::default(),
            &policy,
            caller,
        )
        .await
    }

    /// The owners and admins of `workspace` other than `requester` who have a phone to approve
    /// on: the second approvers of the two-person rule.
    async fn second_approvers(&self, workspace: &Workspace, requester: i64) -> ApiResult<Vec<i64>> {
        let mut ids = Vec::new();
        for u in self
            .store
            .users_with_role(workspace.id, Role::Admin)
            .await?
        {
            if u.id != requester && self.store.count_devices_of_user(u.id).await? > 0 {
                ids.push(u.id);
            }
        }
        if ids.is_empty() {
            return Err(ApiError::Conflict(
                "this workspace's two-person rule needs a second owner or admin with an enrolled device"
                    .into(),
            ));
        }
        Ok(ids)
    }

    /// Makes the challenge of `session`'s person about `workspace`, within the fatigue limits,
    /// and pushes it to their phones. Shared by the console and support.
    pub(super) async fn open_challenge(
        &self,
        session: &ConsoleSession,
        workspace: &Workspace,
        action: Action,
        about: About,
        policy: &Policy,
        caller: &Caller,
    ) -> ApiResult<(Challenge, usize)> {
        crate::error::unless_client_left()?;
        let About { support, subject } = about;
        let user = &session.user;
        let now = self.now();
        if let Some(until) = self.challenges.blocked_until(user.id, now).await? {
            return Err(ApiError::TooManyRequests {
                detail: "a recent request was reported as not made by you; new requests are paused"
                    .into(),
                retry_after_secs: seconds_until(now, until),
            });
        }
        let devices = self.store.devices_of_user(user.id).await?;
        if devices.is_empty() {
            return Err(ApiError::Conflict(
                "enroll a device first: the token is only revealed after approval on your phone"
                    .into(),
            ));
        }
        let second_approvers = if policy.two_person_rotation && action.rotates() {
            self.second_approvers(workspace, user.id).await?
        } else {
            Vec::new()
        };
        let challenge = Challenge::new(
            Request {
                action,
                workspace_id: workspace.id,
                workspace_slug: workspace.slug.clone(),
                workspace_name: workspace.name.clone(),
                user_id: user.id,
                user_email: user.email.clone(),
                session_hash: session.id_hash.clone(),
                origin: Origin {
                    ip: caller.ip.clone(),
                    user_agent: caller.user_agent.clone(),
                },
                support,
                second_approvers,
                subject,
            },
            now,
            self.config.challenge_ttl,
            &mut rand::rngs::OsRng,
        );
        match self
            .challenges
            .insert(&challenge, now, self.config.challenges_per_hour)
            .await?
        {
            Inserted::Limited { retry_at } => {
                self.metrics.challenge(action, "limited");
                self.note(
                    Audit::new(Kind::SecurityChallengeLimit)
                        .workspace(workspace.id)
                        .actor(&user.email)
                        .ip(&caller.ip)
                        .detail(json!({"action": action.as_str(), "per_hour": self.config.challenges_per_hour}))
                )
                .await;
                return Err(ApiError::TooManyRequests {
                    detail: format!(
                        "at most {} step-up requests per person per hour; try again later",
                        self.config.challenges_per_hour
                    ),
                    retry_after_secs: seconds_until(now, retry_at),
                });
            }
            Inserted::Stored { superseded } => {
                if let Some(old) = superseded {
                    // The store superseded a pending challenge in the same step as the insert.
                    let mut before = old.clone();
                    before.status = Status::Pending;
                    before.ended_at = None;
                    self.effects(&before, &old, By::Server).await?;
                }
            }
        }
        self.metrics.challenge(action, "created");
        let mut detail = json!({"challenge": challenge.id, "action": action.as_str(), "user_agent": caller.user_agent});
        if let Some(support) = &challenge.support {
            detail["ticket"] = json!(support.ticket);
            detail["reason"] = json!(support.reason);
        }
        if !challenge.second_approvers.is_empty() {
            detail["two_person_rule"] = json!(true);
        }
        if let Err(e) = self
            .record(
                Audit::new(Kind::ChallengeCreated)
                    .workspace(workspace.id)
                    .actor(&user.email)
                    .ip(&caller.ip)
                    .detail(detail),
            )
            .await
        {
            // Not on record, so not asked: the phones never see it.
            let now = self.now();
            self.transition(&challenge.id, By::Server, |c| {
                c.expires_at = now;
                c.expire_if_due(now)
            })
            .await?;
            return Err(e);
        }
        let notified = self.notifier.fan_out(
            &devices,
            PushMessage::for_challenge(&challenge, PushKind::Challenge),
        );
        Ok((challenge, notified))
    }

    /// The enrolled devices of these people, in order.
    pub(super) async fn devices_of_people(&self, people: &[i64]) -> ApiResult<Vec<Device>> {
        let mut devices = Vec::new();
        for user in people {
            devices.extend(self.store.devices_of_user(*user).await?);
        }
        Ok(devices)
    }

    /// A visible notice to the phones of these people (owners after a `not_me`, admins after a
    /// support rotation); how many pushes were started.
    pub(super) async fn notify_people(
        &self,
        users: &[User],
        challenge: &Challenge,
        what: &str,
    ) -> ApiResult<usize> {
        let ids: Vec<i64> = users.iter().map(|u| u.id).collect();
        let devices = self.devices_of_people(&ids).await?;
        let message = PushMessage {
            kind: PushKind::Notice,
            challenge_id: challenge.id.clone(),
            action: what.to_owned(),
            workspace_name: challenge.workspace_name.clone(),
            expires_at: self.now() + NOTICE_LIFETIME,
        };
        Ok(self.notifier.fan_out(&devices, message))
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
            return Ok(self
                .transition(id, By::Server, |c| c.expire_if_due(now))
                .await?
                .0);
        }
        Ok(c)
    }

    pub async fn pending_for_device(&self, me: &AuthedDevice) -> ApiResult<Vec<Challenge>> {
        Ok(self
            .challenges
            .pending_for_user(me.user.id, self.now())
            .await?)
    }

    /// Verifies a signed decision and applies it; the challenge as it is afterwards. Refusals
    /// leave the challenge unchanged; an approval with the wrong number denies it and answers 422.
    pub async fn decide(
        &self,
        me: &AuthedDevice,
        challenge_id: &str,
        jws: &str,
        caller: &Caller,
    ) -> ApiResult<Challenge> {
        crate::error::unless_client_left()?;
        let key = DeviceKey::from_jwk(&me.device.public_key).map_err(|_| ApiError::Unauthorized)?;
        let now = self.now();
        let claims =
            device::verify_decision(jws, &key, &me.device.id, &self.config.public_url, now)
                .map_err(|e| {
                    tracing::info!(reason = %e, "decision signature refused");
                    ApiError::Unauthorized
                })?;
        if claims.sub != challenge_id {
            return Err(ApiError::Forbidden(
                "the decision was signed for another challenge",
            ));
        }
        let decision = Decision::from_claims(claims, &me.device.id, me.user.id)
            .map_err(|e| decision_refused(e, None))?;
        let by = By::Phone { me, caller };
        // The role is read with the device, on this request: one lost since the challenge was
        // made approves nothing (a denial is still taken).
        let role = me.user.role;
        let (challenge, result) = self
            .transition(challenge_id, by, |c| match c.action.approver_role() {
                Some(needed) if decision.approve && role < needed => Err(DecideError::RoleLost),
                _ => c.decide(&decision, now),
            })
            .await?;
        match result {
            Err(e) => {
                if e == DecideError::NotTheOwner {
                    tracing::warn!(challenge = %challenge_id, device = %me.device.id, "decision from a device of another person");
                }
                Err(decision_refused(e, Some(&challenge)))
            }
            Ok(Outcome::WrongNumber) => Err(decision_refused(DecideError::WrongNumber, None)),
            Ok(Outcome::Approved) if challenge.action.rotates() => {
                self.rotate_on_approval(&challenge, &me.user.email).await?;
                Ok(challenge)
            }
            Ok(_) => Ok(challenge),
        }
    }

    /// Whether the session that read `challenge` (through `challenge_of_session`) may release it
    /// now: of an action `releasable` admits (anything else is "not found"), approved and ready.
    /// Nothing changes: the caller puts the release on record, then `release_challenge` makes it.
    pub(super) fn releasable(
        &self,
        challenge: &Challenge,
        releasable: impl Fn(Action) -> bool,
    ) -> ApiResult<()> {
        if !releasable(challenge.action) {
            tracing::info!(challenge = %challenge.id, "release of another kind of challenge asked for");
            return Err(ApiError::NotFound);
        }
        let mut trial = challenge.clone();
        trial
            .release(self.now())
            .map_err(|e| release_refused(e, &trial))
    }

    /// Marks the challenge released, once, if it belongs to this session and its action is one
    /// this caller may release (anything else is "not found").
    pub(super) async fn release_challenge(
        &self,
        id: &str,
        session_hash: &str,
        releasable: impl Fn(Action) -> bool,
    ) -> ApiResult<Challenge> {
        let now = self.now();
        let (challenge, result) = self
            .transition(id, By::Server, |c| {
                (c.session_hash == session_hash && releasable(c.action)).then(|| c.release(now))
            })
            .await?;
        match result {
            None => {
                tracing::info!(challenge = %id, "release asked for by another session");
                Err(ApiError::NotFound)
            }
            Some(Err(e)) => Err(release_refused(e, &challenge)),
            Some(Ok(())) => Ok(challenge),
        }
    }

    /// Hands what the challenge was for to the session that asked, exactly once: the token, an
    /// enrollment code, or a member's phones reset. Each release is on record before it happens
    /// (503 and nothing released when it cannot be). A support rotation is released by support.
    pub async fn release(
        &self,
        id: &str,
        session: &ConsoleSession,
        caller: &Caller,
    ) -> ApiResult<Released> {
        // A release nobody receives would burn the one-time answer: not for a client that left.
        crate::error::unless_client_left()?;
        let asked = self.challenge_of_session(id, &session.id_hash).await?;
        match asked.action {
            Action::Reveal | Action::Rotate => self.release_token(&asked, session, caller).await,
            Action::DeviceEnroll => {
                let is_enroll = |a| a == Action::DeviceEnroll;
                self.releasable(&asked, is_enroll)?;
                self.enrollment_on_record(session, caller, Some(&asked))
                    .await?;
                // Made before the challenge is spent, as the token is read: a write that fails
                // leaves the approval to be released again. A code whose release loses a race
                // is never shown, and expires unused.
                let offer = self.issue_enrollment_code(session, true).await?;
                self.release_challenge(id, &session.id_hash, is_enroll)
                    .await?;
                Ok(Released::Enrollment(offer))
            }
            Action::MemberDevicesReset => {
                let is_reset = |a| a == Action::MemberDevicesReset;
                self.releasable(&asked, is_reset)?;
                let subject = asked.subject.as_ref().ok_or(ApiError::Internal)?;
                // The member may have left since the challenge was made.
                let member = self
                    .store
                    .user_by_id(subject.user_id)
                    .await?
                    .filter(|u| u.workspace_id == session.workspace.id)
                    .ok_or(ApiError::NotFound)?;
                // Roles may have changed while the phone decided: the rules of the request
                // hold at its release too.
                super::devices::may_reset_phones_of(session.user.role, member.role)?;
                let devices = self
                    .reset_on_record(&member, &session.user.email, Some(&caller.ip), Some(&asked))
                    .await?;
                self.release_challenge(id, &session.id_hash, is_reset)
                    .await?;
                let removed = self.reset_devices(&member, &devices).await?;
                Ok(Released::DevicesReset {
                    member_id: member.id,
                    removed,
                })
            }
            Action::MemberPromote => self.release_promotion(&asked, session, caller).await,
            Action::SupportRotate => Err(ApiError::NotFound),
        }
    }

    /// View Token and Regenerate: the token, once, and only once its release is on record.
    async fn release_token(
        &self,
        ready: &Challenge,
        session: &ConsoleSession,
        caller: &Caller,
    ) -> ApiResult<Released> {
        // The policy may have changed since the challenge was made.
        let policy = self.store.policy(session.workspace.id).await?;
        if !policy.token_viewers.admit(session.user.role) {
            return Err(ApiError::Forbidden(
                "this workspace's policy lets only owners view the token",
            ));
        }
        self.releasable(ready, Action::releases_token)?;
        self.record(
            Audit::new(Kind::TokenReleased)
                .workspace(session.workspace.id)
                .actor(&session.user.email)
                .ip(&caller.ip)
                .device(ready.decided_by_device.as_deref())
                .detail(json!({"challenge": ready.id, "action": ready.action.as_str()})),
        )
        .await?;
        // Read (and opened) before the challenge is spent: a database or key that fails here
        // leaves it approved, to be released again, rather than released with nothing handed over.
        let (token, token_created_at) = self.reveal_token(&session.workspace).await?;
        let challenge = self
            .release_challenge(&ready.id, &session.id_hash, Action::releases_token)
            .await?;
        Ok(Released::Token {
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
            if self
                .transition(&c.id, By::Server, |c| c.expire_if_due(now))
                .await?
                .1
            {
                expired += 1;
            }
        }
        self.challenges.purge(now).await?;
        Ok(expired)
    }
}

/// Why a phone's decision was refused, as the phone is told: the one mapping of `DecideError`.
fn decision_refused(e: DecideError, challenge: Option<&Challenge>) -> ApiError {
    match e {
        DecideError::BadDecision | DecideError::BadReason => ApiError::Unprocessable(e.to_string()),
        DecideError::WrongNumber => ApiError::Unprocessable(
            "the number does not match the one shown in the console; the request was denied".into(),
        ),
        DecideError::NotTheOwner => {
            ApiError::Forbidden("this device may not decide that challenge")
        }
        DecideError::Mismatch => {
            ApiError::Forbidden("the decision does not match the challenge (nonce or action)")
        }
        DecideError::RoleLost => {
            ApiError::Forbidden("your role no longer allows approving this request")
        }
        DecideError::NotPending => ApiError::Conflict(format!(
            "the challenge is already {}",
            challenge.map_or("decided", |c| c.status.as_str())
        )),
    }
}

/// Why a challenge cannot be released, as the caller is told.
fn release_refused(e: ReleaseError, challenge: &Challenge) -> ApiError {
    match e {
        ReleaseError::AlreadyReleased => {
            ApiError::Gone("this challenge was already released".into())
        }
        ReleaseError::NotRotatedYet => {
            ApiError::Conflict("the new token is still being made; try again in a moment".into())
        }
        ReleaseError::NotApproved => ApiError::Conflict(format!(
            "the challenge is {}, not approved",
            challenge.status.as_str()
        )),
    }
}
