//! The workspace policy: read by its admins, set by its owners, every change audited.

use serde_json::json;
use time::OffsetDateTime;

use super::{Caller, ConsoleSession};
use crate::app::App;
use crate::domain::audit::Kind;
use crate::domain::policy::Policy;
use crate::error::{ApiError, ApiResult};
use crate::service::audit::Audit;
use crate::store::Role;

/// The policy as the console shows it, with the grace period of the last rotation if it lasts.
pub struct PolicyView {
    pub policy: Policy,
    pub old_token_valid_until: Option<OffsetDateTime>,
}

impl App {
    pub async fn workspace_policy(&self, session: &ConsoleSession) -> ApiResult<PolicyView> {
        if session.user.role < Role::Admin {
            return Err(ApiError::Forbidden(
                "only owners and admins may read the policy",
            ));
        }
        Ok(PolicyView {
            policy: self.store.policy(session.workspace.id).await?,
            old_token_valid_until: self
                .store
                .grace_until(session.workspace.id, self.now())
                .await?,
        })
    }

    pub async fn set_workspace_policy(
        &self,
        session: &ConsoleSession,
        policy: Policy,
        caller: &Caller,
    ) -> ApiResult<PolicyView> {
        if session.user.role != Role::Owner {
            return Err(ApiError::Forbidden("only owners may change the policy"));
        }
        policy.validate().map_err(ApiError::Unprocessable)?;
        let before = self.store.policy(session.workspace.id).await?;
        self.store
            .put_policy(
                session.workspace.id,
                &policy,
                &session.user.email,
                self.now(),
            )
            .await?;
        self.note(
            Audit::new(Kind::PolicyChanged)
                .workspace(session.workspace.id)
                .actor(&session.user.email)
                .ip(&caller.ip)
                .detail(json!({"before": before, "after": policy})),
        )
        .await;
        self.workspace_policy(session).await
    }
}
