//! The people of a workspace as its owners and admins see them (CONTRACT.md section 3a).

use super::ConsoleSession;
use crate::app::App;
use crate::error::{ApiError, ApiResult};
use crate::store::{Member, Role};

impl App {
    /// Everyone in the caller's workspace, with their phones and last sign-in; owners and admins
    /// only.
    pub async fn members(&self, session: &ConsoleSession) -> ApiResult<Vec<Member>> {
        if session.user.role < Role::Admin {
            return Err(ApiError::Forbidden(
                "only owners and admins may list the members",
            ));
        }
        Ok(self.store.members(session.workspace.id).await?)
    }
}
