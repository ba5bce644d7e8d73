//! `assent audit verify|export`: the hash chain of one workspace's audit log, walked from the
//! database (the server may be running).

use clap::{Args, Subcommand};
use serde_json::json;

use crate::app::App;
use crate::config::Config;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain; print {"workspace","entries","ok":true}, or exit 1 naming the first
    /// broken link (an edited, deleted or reordered entry).
    Verify(Target),
    /// Write every entry as JSON lines (seq, hashes, RFC 3339 times) on standard output, for a SIEM.
    Export(Target),
}

/// Whose chain: a workspace's, or the deployment's own (entries that name no workspace).
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// The workspace's slug.
    #[arg(long)]
    workspace: Option<String>,
    /// The entries without a workspace (sign-ins to unknown workspaces, forged SSO states).
    #[arg(long)]
    deployment: bool,
}

impl Target {
    /// The workspace's id and slug, `None` for the deployment.
    async fn resolve(&self, app: &App) -> anyhow::Result<Option<(i64, String)>> {
        let Some(slug) = &self.workspace else {
            return Ok(None);
        };
        let workspace = app
            .store
            .workspace_by_slug(slug)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no workspace {slug}"))?;
        Ok(Some((workspace.id, workspace.slug)))
    }
}

pub async fn run(command: AuditCommand, config: Config) -> anyhow::Result<()> {
    let app = App::open(config, Vec::new()).await?;
    match command {
        AuditCommand::Verify(target) => {
            let workspace = target.resolve(&app).await?;
            let slug = workspace.as_ref().map(|(_, slug)| slug.as_str());
            let verified = app
                .verify_audit(workspace.as_ref().map(|(id, _)| *id))
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "audit chain of {} broken: {e}",
                        slug.unwrap_or("the deployment")
                    )
                })?;
            println!(
                "{}",
                json!({"workspace": slug, "entries": verified.entries, "ok": true,
                       "unchained": verified.unchained, "last_hash": verified.last_hash})
            );
            Ok(())
        }
        AuditCommand::Export(target) => {
            let workspace = target.resolve(&app).await?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            app.export_audit(
                workspace.as_ref().map(|(id, _)| *id),
                workspace.as_ref().map(|(_, slug)| slug.as_str()),
                &mut out,
            )
            .await?;
            Ok(())
        }
    }
}
