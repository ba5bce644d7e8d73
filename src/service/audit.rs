//! The audit log: appending security events, and reading a chain back to verify or export it
//! (`assent audit verify|export`; the chain's rules are in `domain/audit.rs`).

use serde_json::{json, Value};
use std::io::Write;

use crate::app::App;
use crate::clock::rfc3339;
use crate::domain::audit::{self, Break, Kind, Verifier};
use crate::error::{ApiError, ApiResult};
use crate::store::{AuditEntry, AuditEvent, StoreError};

/// How many entries one read of a chain takes.
const PAGE: i64 = 500;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Broken(#[from] Break),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A chain that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Entries in the chain.
    pub entries: u64,
    /// Entries written before the chain began (migration 0003), which no hash covers.
    pub unchained: u64,
    /// The newest entry's hash: kept elsewhere, it shows a later truncation.
    pub last_hash: Option<String>,
}

/// An audit entry being made: its kind, then what is known of it (the workspace whose chain it
/// joins, who did it, from which address, with which phone, and the details).
#[must_use = "an entry is only written by App::record or App::note"]
pub struct Audit(AuditEvent);

impl Audit {
    pub fn new(kind: Kind) -> Self {
        Audit(AuditEvent {
            kind: kind.as_str(),
            detail: Value::Object(Default::default()),
            ..AuditEvent::default()
        })
    }

    /// The workspace whose chain it joins (`None`: the deployment's own chain).
    pub fn workspace(mut self, id: impl Into<Option<i64>>) -> Self {
        self.0.workspace_id = id.into();
        self
    }

    /// Who did it (an e-mail, `operator`, `cli:<user>`).
    pub fn actor(mut self, who: impl Text) -> Self {
        self.0.actor = who.text();
        self
    }

    /// The caller's address.
    pub fn ip(mut self, ip: impl Text) -> Self {
        self.0.ip = ip.text();
        self
    }

    /// The phone that decided or is concerned.
    pub fn device(mut self, id: impl Text) -> Self {
        self.0.device_id = id.text();
        self
    }

    pub fn detail(mut self, detail: Value) -> Self {
        self.0.detail = detail;
        self
    }

    /// The entry for a store that writes it in the same transaction as the change it records.
    pub(super) fn into_event(self) -> AuditEvent {
        self.0
    }
}

/// Text an entry may or may not have: `&str`, `&String`, or an `Option` of either.
pub trait Text {
    fn text(self) -> Option<String>;
}

impl Text for &str {
    fn text(self) -> Option<String> {
        Some(self.to_owned())
    }
}

impl Text for &String {
    fn text(self) -> Option<String> {
        Some(self.clone())
    }
}

impl Text for Option<&str> {
    fn text(self) -> Option<String> {
        self.map(str::to_owned)
    }
}

impl Text for Option<&String> {
    fn text(self) -> Option<String> {
        self.cloned()
    }
}

impl App {
    /// Writes an entry that must be on record before the action goes on (issue 13: fail
    /// closed): revealing, rotating, enrolling and staff actions stop with 503 when their entry
    /// cannot be written, so nothing security-relevant happens unrecorded.
    pub async fn record(&self, entry: Audit) -> ApiResult<()> {
        let kind = entry.0.kind;
        self.store
            .append_audit(entry.0, self.now())
            .await
            .map_err(|e| {
                tracing::error!(kind, error = %e, "could not append to the audit log");
                ApiError::Unavailable(
                    "the audit log cannot be written; nothing was done, try again shortly".into(),
                )
            })
    }

    /// Writes an entry whose action cannot be held back (a failed sign-in, an expiry): a failure
    /// to record is logged loudly.
    pub async fn note(&self, entry: Audit) {
        // The cause is logged inside; the action this records has already happened.
        let _ = self.record(entry).await;
    }
}

impl App {
    /// Walks the chain of a workspace (`None`: the entries without one) and returns the first
    /// broken link, if any.
    pub async fn verify_audit(&self, workspace_id: Option<i64>) -> Result<Verified, VerifyError> {
        let mut verifier = Verifier::new();
        let mut after_seq = 0;
        loop {
            let page = self
                .store
                .audit_chain(workspace_id, after_seq, PAGE)
                .await?;
            for entry in &page {
                let content = entry.content().expect("chained entries have a seq");
                verifier.check(
                    entry.id,
                    &content,
                    entry.hash.as_deref().unwrap_or_default(),
                )?;
                after_seq = content.seq;
            }
            if (page.len() as i64) < PAGE {
                break;
            }
        }
        let mut unchained = 0;
        let mut after_id = 0;
        loop {
            let page = self
                .store
                .audit_unchained(workspace_id, after_id, PAGE)
                .await?;
            for entry in &page {
                verifier.check_unchained(entry.id)?;
                unchained += 1;
                after_id = entry.id;
            }
            if (page.len() as i64) < PAGE {
                break;
            }
        }
        Ok(Verified {
            entries: verifier.entries(),
            unchained,
            last_hash: verifier.last_hash().map(str::to_owned),
        })
    }

    /// Writes every entry of a workspace (`None`: the entries without one) to `out` as JSON
    /// lines: those written before the chain began first, then the chain in seq order. Returns
    /// how many.
    pub async fn export_audit(
        &self,
        workspace_id: Option<i64>,
        workspace_slug: Option<&str>,
        out: &mut dyn Write,
    ) -> anyhow::Result<u64> {
        let mut written = 0;
        let mut after_id = 0;
        loop {
            let page = self
                .store
                .audit_unchained(workspace_id, after_id, PAGE)
                .await?;
            for entry in &page {
                writeln!(out, "{}", export_line(entry, workspace_slug))?;
                after_id = entry.id;
            }
            written += page.len() as u64;
            if (page.len() as i64) < PAGE {
                break;
            }
        }
        let mut after_seq = 0;
        loop {
            let page = self
                .store
                .audit_chain(workspace_id, after_seq, PAGE)
                .await?;
            for entry in &page {
                writeln!(out, "{}", export_line(entry, workspace_slug))?;
                after_seq = entry.seq.unwrap_or(after_seq);
            }
            written += page.len() as u64;
            if (page.len() as i64) < PAGE {
                break;
            }
        }
        out.flush()?;
        Ok(written)
    }
}

/// One entry as a SIEM reads it, with what its hash covers (`at` is exact: whole seconds).
fn export_line(e: &AuditEntry, workspace_slug: Option<&str>) -> Value {
    json!({
        "id": e.id,
        "workspace": workspace_slug,
        "workspace_id": e.workspace_id,
        "seq": e.seq,
        "at": rfc3339(e.at),
        "kind": e.kind,
        "actor": e.actor,
        "ip": e.ip,
        "device_id": e.device_id,
        "detail": audit::canonical_json(&e.detail),
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    })
}
