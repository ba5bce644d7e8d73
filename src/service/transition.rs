//! A challenge's life in one place: every change goes through `App::transition`, a
//! compare-and-swap loop on the challenge store, and every effect of a change (the bus, the
//! phones' resolved and second-approval pushes, the metrics, the audit entries, the not-me block)
//! is applied by `App::effects` from the challenge as it was before and as it is after. Nothing
//! else announces a change or counts it.

use serde_json::json;

use super::{AuthedDevice, Caller};
use crate::app::App;
use crate::domain::audit::Kind;
use crate::domain::challenge::{Challenge, DenyReason, Status};
use crate::error::{ApiError, ApiResult};
use crate::proto::{ChallengeChanged, ChallengeStatus};
use crate::push::{PushKind, PushMessage};
use crate::service::audit::Audit;
use crate::store::{Role, User};

/// Who made a change, for the effects that name them.
#[derive(Clone, Copy)]
pub enum By<'a> {
    /// The server: expiry, a newer request superseding, a rotation's progress, a release.
    Server,
    /// A phone's signed decision.
    Phone {
        me: &'a AuthedDevice,
        caller: &'a Caller,
    },
}

impl By<'_> {
    fn device(&self) -> Option<&str> {
        match self {
            By::Server => None,
            By::Phone { me, .. } => Some(&me.device.id),
        }
    }
}

impl App {
    /// Applies `f` to the stored challenge atomically: re-read and retry when another transition
    /// won the race, then apply the change's effects. `f`'s result is returned with the challenge
    /// as stored afterwards.
    pub async fn transition<T>(
        &self,
        id: &str,
        by: By<'_>,
        mut f: impl FnMut(&mut Challenge) -> T,
    ) -> ApiResult<(Challenge, T)> {
        loop {
            let Some(before) = self.challenges.get(id).await? else {
                return Err(ApiError::NotFound);
            };
            let mut after = before.clone();
            let result = f(&mut after);
            if after.version == before.version {
                return Ok((after, result));
            }
            if self.challenges.swap(&after, before.version).await? {
                self.effects(&before, &after, by).await?;
                return Ok((after, result));
            }
        }
    }

    /// What a change from `before` to `after` sets off. Waiters are woken when the status they are
    /// shown changes, or when the challenge starts waiting for a second approval (an approved
    /// rotation reads `pending` until its new token exists: nobody is woken to see that). Only the not-me block can fail the caller; the rest is best
    /// effort and logged (the audit entries that must exist are written fail-closed before the
    /// change by the use case).
    pub(super) async fn effects(
        &self,
        before: &Challenge,
        after: &Challenge,
        by: By<'_>,
    ) -> ApiResult<()> {
        let starts_awaiting = before.awaiting().is_none() && after.awaiting().is_some();
        if before.shown_status() != after.shown_status() || starts_awaiting {
            self.announce(after).await;
        }
        match (before.status, after.status) {
            (Status::Pending | Status::Approved, Status::Expired) => {
                self.metrics.challenge(after.action, "expired");
                self.resolved_push(before, None).await;
                self.note(
                    Audit::new(Kind::ChallengeExpired)
                        .workspace(after.workspace_id)
                        .actor(&after.user_email)
                        .detail(json!({"challenge": after.id, "action": after.action.as_str()})),
                )
                .await;
            }
            (Status::Pending, Status::Pending)
                if before.first_approval.is_none() && after.first_approval.is_some() =>
            {
                // The requester approved under the two-person rule: the prompt moves to the
                // second approvers' phones.
                self.decision_on_record(after, Kind::ChallengeFirstApproved, by, |_| {})
                    .await;
                match self.devices_of_people(&after.second_approvers).await {
                    Ok(devices) => {
                        self.notifier.fan_out(
                            &devices,
                            PushMessage::for_challenge(after, PushKind::Challenge),
                        );
                    }
                    Err(e) => {
                        tracing::warn!(challenge = %after.id, error = %e, "no push to the second approvers")
                    }
                }
            }
            (Status::Pending, decided @ (Status::Approved | Status::Denied)) => {
                self.metrics.decision_seconds.observe(
                    (after.ended_at.unwrap_or_else(|| self.now()) - after.created_at)
                        .as_seconds_f64()
                        .max(0.0),
                );
                let approved = decided == Status::Approved;
                self.metrics
                    .challenge(after.action, if approved { "approved" } else { "denied" });
                let kind = if approved {
                    Kind::ChallengeApproved
                } else {
                    Kind::ChallengeDenied
                };
                self.decision_on_record(after, kind, by, |detail| {
                    if !approved {
                        detail["reason"] = json!(after.deny_reason.map(DenyReason::as_str));
                    }
                    if let (Some(_), By::Phone { me, .. }) = (&before.first_approval, by) {
                        // The second person of the two-person rule decided.
                        detail["second_approver"] = json!(me.user.email);
                    }
                })
                .await;
                if after.deny_reason == Some(DenyReason::NotMe) {
                    if let By::Phone { me, .. } = by {
                        self.suspected_attack(after, me).await?;
                    }
                }
                // The other phones that showed the prompt can drop it now.
                self.resolved_push(before, by.device()).await;
            }
            (Status::Approved, Status::Released) => {
                self.metrics.challenge(after.action, "released");
            }
            _ => {}
        }
        Ok(())
    }

    /// Wakes the waiters of `c` on every instance; they re-read the challenge store.
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
    }

    /// A silent "resolved" push to every phone that may show `before`'s prompt, but the one that
    /// answered it.
    async fn resolved_push(&self, before: &Challenge, except_device: Option<&str>) {
        let mut people = vec![before.user_id];
        people.extend(&before.second_approvers);
        match self.devices_of_people(&people).await {
            Ok(mut devices) => {
                devices.retain(|d| Some(d.id.as_str()) != except_device);
                self.notifier.fan_out(
                    &devices,
                    PushMessage::for_challenge(before, PushKind::Resolved),
                );
            }
            Err(e) => tracing::warn!(challenge = %before.id, error = %e, "no resolved push"),
        }
    }

    /// A phone's decision on record: who, from where, with which device.
    async fn decision_on_record(
        &self,
        c: &Challenge,
        kind: Kind,
        by: By<'_>,
        more: impl FnOnce(&mut serde_json::Value),
    ) {
        let mut detail = json!({"challenge": c.id, "action": c.action.as_str()});
        more(&mut detail);
        let mut entry = Audit::new(kind).workspace(c.workspace_id).detail(detail);
        entry = match by {
            By::Phone { me, caller } => entry
                .actor(&me.user.email)
                .ip(&caller.ip)
                .device(&me.device.id),
            By::Server => entry.actor(&c.user_email),
        };
        self.note(entry).await;
    }

    /// A `not_me` denial: the requester may make no new challenge for a while, and the
    /// workspace's owners are told (audit entry, and a push to their phones).
    async fn suspected_attack(&self, challenge: &Challenge, me: &AuthedDevice) -> ApiResult<()> {
        let until = self.now() + self.config.not_me_block;
        self.challenges.block_user(challenge.user_id, until).await?;
        let owners: Vec<User> = self
            .store
            .users_with_role(challenge.workspace_id, Role::Owner)
            .await?;
        let alerted = self
            .notify_people(&owners, challenge, "security.suspected_attack")
            .await?;
        self.note(
            Audit::new(Kind::SecuritySuspectedAttack)
                .workspace(challenge.workspace_id)
                .actor(&challenge.user_email)
                .ip(&challenge.origin.ip)
                .device(&me.device.id)
                .detail(json!({
                    "challenge": challenge.id,
                    "action": challenge.action.as_str(),
                    "requested_from": challenge.origin.ip,
                    "user_agent": challenge.origin.user_agent,
                    "reported_by": me.user.email,
                    "blocked_until": crate::clock::rfc3339(until),
                    "owners_alerted": owners.iter().map(|o| o.email.as_str()).collect::<Vec<_>>(),
                    "owner_pushes": alerted,
                })),
        )
        .await;
        Ok(())
    }
}
