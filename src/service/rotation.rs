//! A rotation after its approval: the new token is recorded, written and announced, and one that
//! a dead process left unfinished is taken up by the sweeper. "Regenerate" and support rotations
//! both end here (`stepup.rs` calls `rotate_on_approval` from the decision).

use serde_json::json;
use time::Duration;

use super::transition::By;
use crate::app::App;
use crate::domain::audit::Kind;
use crate::domain::challenge::{Challenge, Status};
use crate::error::{ApiError, ApiResult};
use crate::service::audit::Audit;
use crate::store::Role;

/// How long an approved rotation's work may run before the sweeper takes it up (it takes
/// milliseconds; only a process that died midway leaves it this long).
const ROTATION_STALE: Duration = Duration::seconds(15);

impl App {
    /// "Regenerate" and support rotations: the new token is made the moment the (last) phone
    /// approves (CONTRACT.md section 3); under the workspace's grace period the old one keeps
    /// working a while. The rotation is on record before it happens (fail closed), and the
    /// challenge is marked rotated after it, retrying a blinking store. After a support rotation
    /// the workspace's admins are told. Runs in the request's detached handler, so a phone that
    /// hangs up cannot cut it in half; a process that dies midway is caught up by
    /// `resume_rotations`.
    pub(super) async fn rotate_on_approval(
        &self,
        challenge: &Challenge,
        approver: &str,
    ) -> ApiResult<()> {
        let done = self.rotate_for(challenge, approver).await;
        if let Err(e) = &done {
            tracing::warn!(challenge = %challenge.id, error = %e, "the approved rotation failed");
            // Nothing to release if the rotation did not happen: end the challenge.
            let now = self.now();
            self.transition(&challenge.id, By::Server, |c| {
                if c.status == Status::Approved && c.rotated_at.is_none() {
                    c.expires_at = now;
                    c.expire_if_due(now);
                }
            })
            .await?;
        }
        done
    }

    async fn rotate_for(&self, challenge: &Challenge, approver: &str) -> ApiResult<()> {
        let workspace = self
            .store
            .workspace_by_id(challenge.workspace_id)
            .await?
            .ok_or(ApiError::NotFound)?;
        let (fresh, grace_until) = self
            .prepare_rotation(&workspace, &challenge.user_email)
            .await?;
        let created_at = fresh.created_at;
        let mut detail = json!({"challenge": challenge.id, "action": challenge.action.as_str()});
        if let Some(until) = grace_until {
            detail["old_token_valid_until"] = json!(crate::clock::rfc3339(until));
        }
        if challenge.first_approval.is_some() {
            detail["second_approver"] = json!(approver);
        }
        let admins = match &challenge.support {
            None => Vec::new(),
            Some(support) => {
                detail["ticket"] = json!(support.ticket);
                detail["reason"] = json!(support.reason);
                let admins = self
                    .store
                    .users_with_role(workspace.id, Role::Admin)
                    .await?;
                detail["admins_told"] =
                    json!(admins.iter().map(|a| a.email.as_str()).collect::<Vec<_>>());
                admins
            }
        };
        let kind = if challenge.support.is_some() {
            Kind::TokenSupportRotated
        } else {
            Kind::TokenRotated
        };
        self.record(
            Audit::new(kind)
                .workspace(workspace.id)
                .actor(&challenge.user_email)
                .ip(&challenge.origin.ip)
                .detail(detail),
        )
        .await?;
        if let Err(e) = self.store_rotated_token(fresh, grace_until).await {
            // On record as rotated, yet it did not happen: say so next to it.
            self.note(
                Audit::new(Kind::TokenRotationFailed)
                    .workspace(workspace.id)
                    .actor(&challenge.user_email)
                    .detail(json!({"challenge": challenge.id})),
            )
            .await;
            return Err(e);
        }
        // Now the approval may be seen and the new token released. The store may blink: the
        // rotation is done, so try a few times before giving up on telling it.
        let mut attempt = 0;
        loop {
            match self
                .transition(&challenge.id, By::Server, |c| c.mark_rotated(created_at))
                .await
            {
                Ok(_) => break,
                Err(ApiError::Unavailable(e)) if attempt < 3 => {
                    attempt += 1;
                    tracing::warn!(challenge = %challenge.id, error = %e, "marking the rotation failed; trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
        if !admins.is_empty() {
            if let Err(e) = self
                .notify_people(&admins, challenge, "scim_token.support_rotated")
                .await
            {
                tracing::warn!(error = %e, "could not push the support rotation's notice");
            }
        }
        Ok(())
    }

    /// Takes up approved rotations whose work began `ROTATION_STALE` ago and never ended (the
    /// process died between the approval and the marking): the token is rotated unless a rotation
    /// already happened after the approval, and the challenge is marked so that it can be
    /// released. Returns how many were taken up.
    pub async fn resume_rotations(&self) -> ApiResult<usize> {
        let now = self.now();
        let live = self.challenges.due(now + self.config.challenge_ttl).await?;
        let mut resumed = 0;
        for c in live {
            if c.status != Status::Approved || !c.action.rotates() || c.rotated_at.is_some() {
                continue;
            }
            let (claimed, began) = self
                .transition(&c.id, By::Server, |c| c.claim_rotation(now, ROTATION_STALE))
                .await?;
            let Some(began) = began else {
                continue;
            };
            resumed += 1;
            tracing::warn!(challenge = %claimed.id, "taking up an approved rotation that never finished");
            let current = self.store.scim_token(claimed.workspace_id).await?;
            match current {
                // The token was replaced after the approval: only the marking was lost. Times
                // are whole seconds: a token of the approval's own second may be older than it,
                // and rotating once more is safer than leaving a rotation undone.
                Some(token) if token.created_at > began => {
                    self.transition(&claimed.id, By::Server, |c| {
                        c.mark_rotated(token.created_at)
                    })
                    .await?;
                }
                _ => {
                    let approver = claimed.user_email.clone();
                    self.rotate_on_approval(&claimed, &approver).await?;
                }
            }
        }
        Ok(resumed)
    }
}
