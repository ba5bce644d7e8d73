//! The provisioning log (issue 3): every SCIM request a workspace's token opened, written in
//! batches off the request path, read by the console, pruned after the retention.
//!
//! Requests record through the store's `ProvisioningLog` (batched, off the request path); a
//! reader flushes first, so it sees every request answered before it asked.

use serde_json::json;

use crate::app::App;
use crate::domain::audit::Kind;
use crate::service::audit::Audit;
use crate::store::scim::{LogEntry, StatusRange};
use crate::store::StoreError;

/// Addresses named in one audit entry, the busiest first.
const NAMED_IPS: usize = 20;

/// The provisioning page's figures: the last day's requests and failures, and the last call.
pub struct ProvisioningSummary {
    pub since: time::OffsetDateTime,
    pub requests: i64,
    pub failures: i64,
    pub last_request_at: Option<time::OffsetDateTime>,
}

impl App {
    /// The workspace's SCIM traffic of the last 24 hours, and when a client last called.
    pub async fn provisioning_summary(
        &self,
        workspace_id: i64,
    ) -> Result<ProvisioningSummary, StoreError> {
        self.provisioning.flush().await;
        let since = self.now() - time::Duration::hours(24);
        let (last_request_at, failures) = self.scim.log_summary(workspace_id, since).await?;
        let requests = self
            .store
            .provisioning_requests(workspace_id, since)
            .await?;
        Ok(ProvisioningSummary {
            since,
            requests,
            failures,
            last_request_at,
        })
    }

    /// A page of the workspace's provisioning log, newest first.
    pub async fn provisioning_log(
        &self,
        workspace_id: i64,
        before: Option<i64>,
        status: StatusRange,
        limit: u32,
    ) -> Result<Vec<LogEntry>, StoreError> {
        self.provisioning.flush().await;
        self.scim
            .log_page(workspace_id, before, status, limit)
            .await
    }

    /// Once a minute: drops entries past the retention, and writes how many SCIM requests were
    /// refused for their token (never the token) to the audit log.
    pub async fn sweep_provisioning_log(&self) {
        let cutoff = self.now() - self.config.scim_log_retention;
        match self.scim.prune_log(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(entries = n, "pruned the provisioning log"),
            Err(e) => tracing::warn!(error = %e, "pruning the provisioning log failed"),
        }
        let refused = self.provisioning.take_refused();
        if refused.total > 0 {
            let mut by_ip: Vec<(String, u64)> = refused.by_ip.into_iter().collect();
            by_ip.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let sources: Vec<_> = by_ip
                .iter()
                .take(NAMED_IPS)
                .map(|(ip, n)| json!({"ip": ip, "requests": n}))
                .collect();
            self.note(Audit::new(Kind::ScimTokenRefused).detail(json!({
                "requests": refused.total,
                "sources": sources,
                "distinct_sources": by_ip.len(),
            })))
            .await;
        }
    }
}
