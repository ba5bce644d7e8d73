use serde_json::Value;

use crate::app::App;
use crate::store::AuditEvent;

impl App {
    /// Appends a security event. A failure to record is logged loudly but does not undo the action
    /// that already happened.
    pub async fn audit(
        &self,
        workspace_id: Option<i64>,
        kind: &'static str,
        actor: Option<&str>,
        ip: Option<&str>,
        device_id: Option<&str>,
        detail: Value,
    ) {
        let event = AuditEvent {
            workspace_id,
            kind,
            actor: actor.map(str::to_owned),
            ip: ip.map(str::to_owned),
            device_id: device_id.map(str::to_owned),
            detail,
        };
        if let Err(e) = self.store.append_audit(event, self.now()).await {
            tracing::error!(kind, error = %e, "could not append to the audit log");
        }
    }
}
