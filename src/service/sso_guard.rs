//! What single sign-on's unauthenticated routes cost an attacker, and what they cost us (issue 13):
//! anyone may request `/v1/sso/{workspace}/start` and `/v1/sso/callback`, so they are throttled
//! per address before they read or write anything, and a refusal is written to the audit log only
//! where it means something to a workspace, a bounded number of times.
//!
//! - Each address may make `SSO_REQUESTS_PER_ADDRESS` starts, and as many callbacks, per window
//!   (`challenges::LOGIN_WINDOW`, counted in the challenge store, so shared across instances
//!   through Redis). Past that, 429 with `Retry-After`.
//! - A refusal that names no workspace (unknown workspace, forged or long-forgotten state, the
//!   throttle itself) is a count in `assent_sso_refusals_total{reason}` and a log line.
//! - A refusal in a workspace is audited, up to `SSO_AUDITED_REFUSALS` per address and workspace
//!   per window; one more entry says the rest of the window is only counted.

use serde_json::json;

use super::Caller;
use crate::app::App;
use crate::challenges::LOGIN_WINDOW;
use crate::domain::audit::Kind;
use crate::domain::sso::Failure;
use crate::oidc::Refused;
use crate::service::audit::Audit;
use crate::store::StoreError;

/// Starts (and, apart, callbacks) one address may make in `LOGIN_WINDOW`, across workspaces: room
/// for a large office behind one NAT address signing in at 9 o'clock, not for a flood (700 in 3
/// seconds was one).
pub const SSO_REQUESTS_PER_ADDRESS: u32 = 300;
/// Refusals in one workspace from one address audited one by one in `LOGIN_WINDOW`.
pub const SSO_AUDITED_REFUSALS: u32 = 30;

/// What is known of a failing sign-in, for its audit entry.
#[derive(Default)]
pub(super) struct Trail {
    pub workspace_id: Option<i64>,
    pub issuer: Option<String>,
    pub actor: Option<String>,
    /// A refusal already audited in its window (the start limit's repeats): counted, not logged.
    pub quiet: bool,
    /// A re-authentication (`?reauth=1`), not a sign-in.
    pub reauth: bool,
}

pub(super) fn store_failed(e: StoreError) -> Refused {
    tracing::error!(error = %e, "single sign-on: storage failed");
    Refused::new(Failure::Unavailable, "storage unavailable")
}

impl App {
    /// Counts one request of `route` (`start` or `callback`) from the caller's address; refuses it
    /// past `SSO_REQUESTS_PER_ADDRESS` in the window.
    pub(super) async fn sso_address_throttle(
        &self,
        route: &str,
        caller: &Caller,
    ) -> Result<(), Refused> {
        let requests = self
            .challenges
            .login_failed(&format!("sso-{route}-ip:{}", caller.ip), self.now())
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "single sign-on: the address counter is unavailable");
                Refused::new(Failure::Unavailable, "address counter unavailable")
            })?;
        if requests > SSO_REQUESTS_PER_ADDRESS {
            return Err(Refused::new(
                Failure::TooManyRequests,
                format!("more than {SSO_REQUESTS_PER_ADDRESS} {route} requests from this address"),
            ));
        }
        Ok(())
    }

    /// Records a refusal: always in the metric and the log; in the audit log as the module says.
    pub(super) async fn sso_refused(&self, trail: &Trail, refused: &Refused, caller: &Caller) {
        self.metrics.sso_refused(refused.failure);
        tracing::info!(
            reason = refused.failure.as_str(),
            cause = %refused.cause,
            workspace_id = ?trail.workspace_id,
            ip = %caller.ip,
            "single sign-on refused"
        );
        let Some(workspace_id) = trail.workspace_id else {
            return;
        };
        if trail.quiet {
            return;
        }
        let key = format!("sso-refused:{workspace_id}:{}", caller.ip);
        let refusals = match self.challenges.login_failed(&key, self.now()).await {
            Ok(n) => n,
            // Without the counter, the entry is written: better a long log than a silent one.
            Err(e) => {
                tracing::error!(error = %e, "single sign-on: the refusal counter is unavailable");
                1
            }
        };
        if refusals > SSO_AUDITED_REFUSALS + 1 {
            return;
        }
        let mut detail = json!({
            "reason": refused.failure.as_str(),
            "cause": refused.cause,
            "issuer": trail.issuer,
            "user_agent": caller.user_agent,
        });
        if trail.reauth {
            detail["reauth"] = json!(true);
        }
        if refusals == SSO_AUDITED_REFUSALS + 1 {
            detail["further_refusals_not_logged_for_minutes"] = json!(LOGIN_WINDOW.whole_minutes());
        }
        self.note(
            Audit::new(Kind::SsoLoginFailed)
                .workspace(workspace_id)
                .actor(trail.actor.as_deref())
                .ip(&caller.ip)
                .detail(detail),
        )
        .await;
    }
}
