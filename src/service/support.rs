//! Support staff (CONTRACT.md section 8): they see what helps them help a workspace, nothing
//! secret, and rotate its SCIM token after proving who they are on their own phone. They never
//! see the token: its admins are told and fetch it with View Token.

use serde_json::json;
use time::{Duration, OffsetDateTime};

use super::{Caller, StaffSession};
use crate::app::App;
use crate::domain::audit::Kind;
use crate::domain::challenge::{Action, Challenge, SupportContext};
use crate::domain::policy::STAFF_REALM;
use crate::error::{ApiError, ApiResult};
use crate::service::audit::Audit;
use crate::store::Workspace;

/// What support may know about a workspace.
pub struct WorkspaceSummary {
    pub workspace: Workspace,
    pub token_created_at: Option<OffsetDateTime>,
    pub token_rotated_by: Option<String>,
    pub last_scim_request_at: Option<OffsetDateTime>,
    pub scim_errors_24h: i64,
}

/// Longest ticket reference and reason support may give.
const MAX_TICKET: usize = 64;
const MAX_REASON: usize = 500;

fn checked(text: &str, field: &str, max: usize) -> ApiResult<String> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > max || text.chars().any(char::is_control) {
        return Err(ApiError::Unprocessable(format!(
            "{field} must be 1 to {max} characters, without control characters"
        )));
    }
    Ok(text.to_owned())
}

/// What a support release hands back.
pub enum SupportReleased {
    Rotated(OffsetDateTime),
    Enrollment(super::EnrollmentOffer),
}

impl App {
    /// A workspace by slug for support: the staff realm is no workspace.
    async fn supported_workspace(&self, slug: &str) -> ApiResult<Workspace> {
        self.store
            .workspace_by_slug(slug)
            .await?
            .filter(|w| w.slug != STAFF_REALM)
            .ok_or(ApiError::NotFound)
    }

    pub async fn support_summary(
        &self,
        staff: &StaffSession,
        slug: &str,
        caller: &Caller,
    ) -> ApiResult<WorkspaceSummary> {
        let workspace = self.supported_workspace(slug).await?;
        let token = self.store.scim_token(workspace.id).await?;
        // The log is written in batches: what is queued counts too.
        self.provisioning.flush().await;
        let (last_scim_request_at, scim_errors_24h) = self
            .scim
            .log_summary(workspace.id, self.now() - Duration::hours(24))
            .await?;
        // Looking is an event too: the workspace's admins see who from support looked, and when.
        self.record(
            Audit::new(Kind::SupportViewed)
                .workspace(workspace.id)
                .actor(&staff.0.user.email)
                .ip(&caller.ip),
        )
        .await?;
        Ok(WorkspaceSummary {
            token_created_at: token.as_ref().map(|t| t.created_at),
            token_rotated_by: token.map(|t| t.created_by),
            last_scim_request_at,
            scim_errors_24h,
            workspace,
        })
    }

    /// A support rotation: a challenge on the staff member's own phones, which sign the workspace
    /// and the ticket along with their decision.
    pub async fn request_support_rotation(
        &self,
        staff: &StaffSession,
        slug: &str,
        ticket: &str,
        reason: &str,
        caller: &Caller,
    ) -> ApiResult<(Challenge, usize)> {
        let support = SupportContext {
            ticket: checked(ticket, "ticket", MAX_TICKET)?,
            reason: checked(reason, "reason", MAX_REASON)?,
        };
        let workspace = self.supported_workspace(slug).await?;
        let policy = self.store.policy(workspace.id).await?;
        self.open_challenge(
            &staff.0,
            &workspace,
            Action::SupportRotate,
            super::About {
                support: Some(support),
                subject: None,
            },
            &policy,
            caller,
        )
        .await
    }

    /// Ends an approved support challenge, once: a rotation says when the token was rotated,
    /// never what it is; a `device.enroll` hands the staff member's new phone its code.
    pub async fn support_release(
        &self,
        id: &str,
        staff: &StaffSession,
        caller: &Caller,
    ) -> ApiResult<SupportReleased> {
        crate::error::unless_client_left()?;
        let asked = self.challenge_of_session(id, &staff.0.id_hash).await?;
        if asked.action == Action::DeviceEnroll {
            return match self.release(id, &staff.0, caller).await? {
                super::stepup::Released::Enrollment(offer) => {
                    Ok(SupportReleased::Enrollment(offer))
                }
                _ => Err(ApiError::Internal),
            };
        }
        let is_rotation = |a| a == Action::SupportRotate;
        let ready = asked;
        self.releasable(&ready, is_rotation)?;
        self.record(
            Audit::new(Kind::SupportRotationConfirmed)
                .workspace(ready.workspace_id)
                .actor(&staff.0.user.email)
                .ip(&caller.ip)
                .device(ready.decided_by_device.as_deref())
                .detail(json!({"challenge": ready.id})),
        )
        .await?;
        let challenge = self
            .release_challenge(id, &staff.0.id_hash, is_rotation)
            .await?;
        let rotated_at = challenge.rotated_at.ok_or(ApiError::Internal)?;
        Ok(SupportReleased::Rotated(rotated_at))
    }
}
