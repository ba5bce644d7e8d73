//! `assent keys rotate`: every sealed secret re-encrypted under a new master key, in batches,
//! resumable (`service/keys.rs`). With `ASSENT_MASTER_KEY` (or its `_FILE`) the new key is that one
//! and the old ones come from `ASSENT_OLD_MASTER_KEYS`; with the generated key file of the
//! embedded default the new key is generated into `<database>.key.new` and becomes the key file
//! when every value is under it.

use clap::Subcommand;

use crate::config::Config;
use crate::domain::audit::Kind;
use crate::service::keys;
use crate::store::{self, AuditEvent};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Re-encrypt every stored secret under the new master key; prints
    /// {"rotated","already_current","remaining","key_id"}. Run it again to resume.
    Rotate {
        /// Rows read and re-encrypted at a time.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        batch_size: u32,
        /// Stop after this many batches (the rest is left for the next run).
        #[arg(long)]
        max_batches: Option<u64>,
    },
}

pub async fn run(command: KeysCommand, config: Config) -> anyhow::Result<()> {
    let KeysCommand::Rotate {
        batch_size,
        max_batches,
    } = command;
    let stores = store::open(&config.database).await?;
    let (keyring, files) = crate::config::keys::rotation_keyring(&config)?;
    let rotation = keys::reseal_all(
        stores.sealed.as_ref(),
        &keyring,
        batch_size.into(),
        max_batches,
    )
    .await?;
    if let (Some(files), 0) = (&files, rotation.remaining) {
        files.finish()?;
        tracing::info!(old = %files.old.display(), "the new master key is in place; the old one is kept beside it until you delete it");
    }
    // In the deployment's own chain (no workspace): which key, how far, who ran it.
    let event = AuditEvent {
        workspace_id: None,
        kind: if rotation.remaining == 0 {
            Kind::KeysRotated
        } else {
            Kind::KeysRotationPaused
        }
        .as_str(),
        actor: std::env::var("USER").ok().map(|u| format!("cli:{u}")),
        detail: serde_json::to_value(&rotation)?,
        ..AuditEvent::default()
    };
    if let Err(e) = stores
        .store
        .append_audit(event, time::OffsetDateTime::now_utc())
        .await
    {
        tracing::error!(error = %e, "could not append the rotation to the audit log");
    }
    println!("{}", serde_json::to_string(&rotation)?);
    Ok(())
}
