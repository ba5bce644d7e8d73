//! The shared state: every port (storage, challenge store, bus, push) as `Arc<dyn Trait>`, plus the
//! configuration, the clock and the keys. Services in `service/` are methods on `App`.

use std::sync::Arc;

use crate::bus::{memory::MemoryBus, redis::RedisBus, Bus};
use crate::challenges::{memory::MemoryChallenges, redis::RedisChallenges, ChallengeStore};
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::domain::crypto::Keyring;
use crate::domain::password::Hasher;
use crate::http::streams::StreamSlots;
use crate::metrics::Metrics;
use crate::oidc::OidcProviders;
use crate::push::{Notifier, PushProvider};
use crate::service::provisioning::ProvisioningLog;
use crate::store::scim::ScimStore;
use crate::store::sso::SsoStore;
use crate::store::Store;

pub struct App {
    pub config: Config,
    pub clock: SharedClock,
    pub store: Arc<dyn Store>,
    /// Single sign-on's provider settings, started sign-ins and subject links.
    pub sso: Arc<dyn SsoStore>,
    /// The OpenID providers' discovery documents and keys, cached per issuer.
    pub oidc: OidcProviders,
    /// The SCIM directory (Users, Groups, memberships) and the provisioning log.
    pub scim: Arc<dyn ScimStore>,
    /// Writes the provisioning log off the request path.
    pub provisioning: ProvisioningLog,
    pub challenges: Arc<dyn ChallengeStore>,
    pub bus: Arc<dyn Bus>,
    pub notifier: Arc<Notifier>,
    pub keyring: Keyring,
    pub hasher: Hasher,
    pub metrics: Arc<Metrics>,
    /// The SSE streams open on this instance, under `ASSENT_MAX_SSE_*`.
    pub streams: StreamSlots,
}

impl App {
    /// Opens everything the configuration names. Used by `serve` and by the CLI commands.
    pub async fn open(
        config: Config,
        providers: Vec<Arc<dyn PushProvider>>,
    ) -> anyhow::Result<Arc<App>> {
        let keyring = crate::service::keys::keyring(&config)?;
        let crate::store::Stores {
            store, scim, sso, ..
        } = crate::store::open(&config.database).await?;
        tracing::debug!(database = %config.database.redacted(), "database opened");
        let metrics = Arc::new(Metrics::default());
        // Live state (challenges, throttles, replay cache, bus): in Redis when ASSENT_REDIS_URL is
        // set, shared by every instance; otherwise in this process.
        let (challenges, bus): (Arc<dyn ChallengeStore>, Arc<dyn Bus>) = match &config.redis_url {
            Some(url) => {
                let round_trips = metrics.redis_round_trips.clone();
                tracing::info!("challenges, replay cache and bus in Redis");
                (
                    Arc::new(RedisChallenges::open(url.expose(), round_trips.clone())?),
                    Arc::new(RedisBus::open(url.expose(), round_trips)?),
                )
            }
            None => (
                Arc::new(MemoryChallenges::new(store.clone())),
                Arc::new(MemoryBus::default()),
            ),
        };
        Ok(Self::assemble_measured(
            config,
            Arc::new(SystemClock),
            store,
            sso,
            scim,
            challenges,
            bus,
            keyring,
            providers,
            metrics,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn assemble(
        config: Config,
        clock: SharedClock,
        store: Arc<dyn Store>,
        sso: Arc<dyn SsoStore>,
        scim: Arc<dyn ScimStore>,
        challenges: Arc<dyn ChallengeStore>,
        bus: Arc<dyn Bus>,
        keyring: Keyring,
        providers: Vec<Arc<dyn PushProvider>>,
    ) -> Arc<App> {
        let metrics = Arc::new(Metrics::default());
        Self::assemble_measured(
            config, clock, store, sso, scim, challenges, bus, keyring, providers, metrics,
        )
    }

    /// `assemble` with metrics made beforehand (the Redis adapters count their round trips there).
    #[allow(clippy::too_many_arguments)]
    fn assemble_measured(
        config: Config,
        clock: SharedClock,
        store: Arc<dyn Store>,
        sso: Arc<dyn SsoStore>,
        scim: Arc<dyn ScimStore>,
        challenges: Arc<dyn ChallengeStore>,
        bus: Arc<dyn Bus>,
        keyring: Keyring,
        providers: Vec<Arc<dyn PushProvider>>,
        metrics: Arc<Metrics>,
    ) -> Arc<App> {
        let notifier = Arc::new(Notifier::new(
            providers,
            store.clone(),
            keyring.clone(),
            metrics.clone(),
        ));
        let oidc = OidcProviders::new(config.sso_allow_loopback);
        let streams = StreamSlots::new(config.max_sse_streams, config.max_sse_per_session);
        Arc::new(App {
            config,
            clock,
            store,
            sso,
            oidc,
            provisioning: ProvisioningLog::new(scim.clone()),
            scim,
            challenges,
            bus,
            notifier,
            keyring,
            hasher: Hasher::default(),
            metrics,
            streams,
        })
    }

    pub fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }
}
