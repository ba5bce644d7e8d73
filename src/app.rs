//! The shared state: every port (storage, challenge store, bus, push) as `Arc<dyn Trait>`, plus the
//! configuration, the clock and the keys. Services in `service/` are methods on `App`.

use std::sync::Arc;

use crate::bus::{memory::MemoryBus, redis::RedisBus, Bus};
use crate::challenges::{memory::MemoryChallenges, redis::RedisChallenges, ChallengeStore};
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::domain::crypto::Keyring;
use crate::domain::password::Hasher;
use crate::metrics::Metrics;
use crate::oidc::OidcProviders;
use crate::push::{Notifier, PushProvider};
use crate::store::provisioning_log::ProvisioningLog;
use crate::store::scim::ScimStore;
use crate::store::sso::SsoStore;
use crate::store::Store;
use crate::streams::StreamSlots;

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
    pub streams: Arc<StreamSlots>,
}

/// The outside world an `App` talks to, every port opened: `Ports::open` for what the
/// configuration names, or made by hand in tests (a manual clock, an in-process bus).
pub struct Ports {
    pub clock: SharedClock,
    pub store: Arc<dyn Store>,
    pub sso: Arc<dyn SsoStore>,
    pub scim: Arc<dyn ScimStore>,
    pub challenges: Arc<dyn ChallengeStore>,
    pub bus: Arc<dyn Bus>,
    /// The push providers configured (none: phones find challenges by polling).
    pub push: Vec<Arc<dyn PushProvider>>,
    pub keyring: Keyring,
    /// Made with the ports: the Redis adapters count their round trips there.
    pub metrics: Arc<Metrics>,
}

impl Ports {
    /// Opens everything the configuration names, with these push providers (the CLI's commands
    /// other than `serve` push nothing).
    pub async fn open(config: &Config, push: Vec<Arc<dyn PushProvider>>) -> anyhow::Result<Ports> {
        let keyring = crate::config::keys::keyring(config)?;
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
        Ok(Ports {
            clock: Arc::new(SystemClock),
            store,
            sso,
            scim,
            challenges,
            bus,
            push,
            keyring,
            metrics,
        })
    }
}

impl App {
    /// Opens the ports the configuration names and assembles the app. Used by `serve` and by
    /// the CLI commands.
    pub async fn open(
        config: Config,
        push: Vec<Arc<dyn PushProvider>>,
    ) -> anyhow::Result<Arc<App>> {
        let ports = Ports::open(&config, push).await?;
        Ok(App::new(config, ports))
    }

    /// Assembles the app from its configuration and its ports.
    pub fn new(config: Config, ports: Ports) -> Arc<App> {
        let Ports {
            clock,
            store,
            sso,
            scim,
            challenges,
            bus,
            push,
            keyring,
            metrics,
        } = ports;
        let notifier = Arc::new(Notifier::new(
            push,
            store.clone(),
            keyring.clone(),
            metrics.clone(),
        ));
        let oidc = OidcProviders::new(config.sso_allow_loopback);
        let streams = Arc::new(StreamSlots::new(
            config.max_sse_streams,
            config.max_sse_per_session,
        ));
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
