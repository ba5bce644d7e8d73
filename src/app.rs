//! The shared state: every port (storage, challenge store, bus, push) as `Arc<dyn Trait>`, plus the
//! configuration, the clock and the keys. Services in `service/` are methods on `App`.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::bus::{memory::MemoryBus, Bus};
use crate::challenges::{memory::MemoryChallenges, ChallengeStore};
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, Database, MasterKeySource};
use crate::domain::crypto::{Keyring, MasterKey};
use crate::domain::password::Hasher;
use crate::metrics::Metrics;
use crate::push::{Notifier, PushProvider};
use crate::store::{sqlite::SqliteStore, Store};

pub struct App {
    pub config: Config,
    pub clock: SharedClock,
    pub store: Arc<dyn Store>,
    pub challenges: Arc<dyn ChallengeStore>,
    pub bus: Arc<dyn Bus>,
    pub notifier: Arc<Notifier>,
    pub keyring: Keyring,
    pub hasher: Hasher,
    pub metrics: Arc<Metrics>,
}

/// Reads the master key file, or creates it (mode 0600) on first use. Two processes racing to
/// create it both end up with the one that was written first.
fn load_or_create_key_file(path: &Path) -> anyhow::Result<MasterKey> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => {
            let key = MasterKey::generate();
            file.write_all(key.to_base64().as_bytes())?;
            file.sync_all()?;
            tracing::info!(path = %path.display(), "generated a new master key file; back it up with the database");
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = zeroize::Zeroizing::new(std::fs::read_to_string(path)?);
            MasterKey::from_base64(&text)
                .map_err(|e| anyhow::anyhow!("master key file {}: {e}", path.display()))
        }
        Err(e) => Err(anyhow::anyhow!(
            "cannot create master key file {}: {e}",
            path.display()
        )),
    }
}

impl App {
    /// Opens everything the configuration names. Used by `serve` and by the CLI commands.
    pub async fn open(
        config: Config,
        providers: Vec<Arc<dyn PushProvider>>,
    ) -> anyhow::Result<Arc<App>> {
        let key = match &config.master_key {
            MasterKeySource::Given(secret) => MasterKey::from_base64(secret.expose())?,
            MasterKeySource::File(path) => load_or_create_key_file(path)?,
        };
        let store: Arc<dyn Store> = match &config.database {
            Database::Sqlite { url, .. } => Arc::new(SqliteStore::open(url).await?),
        };
        Ok(Self::assemble(
            config,
            Arc::new(SystemClock),
            store,
            Arc::new(MemoryChallenges::default()),
            Arc::new(MemoryBus::default()),
            Keyring::new(key, []),
            providers,
        ))
    }

    pub fn assemble(
        config: Config,
        clock: SharedClock,
        store: Arc<dyn Store>,
        challenges: Arc<dyn ChallengeStore>,
        bus: Arc<dyn Bus>,
        keyring: Keyring,
        providers: Vec<Arc<dyn PushProvider>>,
    ) -> Arc<App> {
        let metrics = Arc::new(Metrics::default());
        let notifier = Arc::new(Notifier::new(
            providers,
            store.clone(),
            keyring.clone(),
            metrics.clone(),
        ));
        Arc::new(App {
            config,
            clock,
            store,
            challenges,
            bus,
            notifier,
            keyring,
            hasher: Hasher::default(),
            metrics,
        })
    }

    pub fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }
}
