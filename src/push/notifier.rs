//! The fan-out: one delivery per device of a person, started concurrently and never awaited by the
//! caller, so the reveal call answers before any push finishes and one slow device delays nobody.

use std::sync::Arc;
use std::time::Instant;

use super::{ApnsEnvironment, Delivery, Platform, PushMessage, PushProvider, PushTarget};
use crate::domain::crypto::Keyring;
use crate::domain::people::Device;
use crate::metrics::{Metrics, PushLabels};
use crate::store::Store;

pub struct Notifier {
    providers: Vec<Arc<dyn PushProvider>>,
    store: Arc<dyn Store>,
    keyring: Keyring,
    metrics: Arc<Metrics>,
}

impl Notifier {
    pub fn new(
        providers: Vec<Arc<dyn PushProvider>>,
        store: Arc<dyn Store>,
        keyring: Keyring,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            providers,
            store,
            keyring,
            metrics,
        }
    }

    fn provider(&self, platform: Platform) -> Option<Arc<dyn PushProvider>> {
        self.providers
            .iter()
            .find(|p| p.platform() == platform)
            .cloned()
    }

    /// The device's push target, unless it has no token or the provider refused it before.
    fn target(&self, device: &Device) -> Option<PushTarget> {
        if device.push_token_invalid {
            return None;
        }
        let sealed = device.push_token.as_ref()?;
        let token = self.keyring.open(sealed, device.id.as_bytes()).ok()?;
        Some(PushTarget {
            device_id: device.id.clone(),
            platform: device.platform,
            token: String::from_utf8(token.to_vec()).ok()?,
            apns_environment: match device.apns_environment.as_deref() {
                Some("sandbox") => Some(ApnsEnvironment::Sandbox),
                Some(_) => Some(ApnsEnvironment::Production),
                None => None,
            },
        })
    }

    fn count(&self, platform: Platform, result: &str) {
        let labels = PushLabels {
            provider: platform.as_str(),
            result: result.to_owned(),
        };
        self.metrics.pushes.get_or_create(&labels).inc();
    }

    /// Starts one delivery per device and returns at once how many devices have a usable push
    /// token and a configured provider (the `notified_devices` of the API).
    pub fn fan_out(self: &Arc<Self>, devices: &[Device], message: PushMessage) -> usize {
        let mut started = 0;
        for device in devices {
            let Some(provider) = self.provider(device.platform) else {
                self.count(device.platform, "not_configured");
                continue;
            };
            let Some(target) = self.target(device) else {
                self.count(device.platform, "no_token");
                continue;
            };
            started += 1;
            let this = Arc::clone(self);
            let message = message.clone();
            tokio::spawn(async move {
                let began = Instant::now();
                let outcome = provider.deliver(&target, &message).await;
                this.metrics
                    .push_seconds
                    .get_or_create(&crate::metrics::ProviderLabels {
                        provider: target.platform.as_str(),
                    })
                    .observe(began.elapsed().as_secs_f64());
                match outcome {
                    Delivery::Delivered => this.count(target.platform, "delivered"),
                    Delivery::InvalidToken { reason } => {
                        this.count(target.platform, &format!("invalid_token:{reason}"));
                        this.metrics.push_tokens_invalidated.inc();
                        if let Err(e) = this.store.mark_push_token_invalid(&target.device_id).await
                        {
                            tracing::warn!(device = %target.device_id, error = %e, "could not mark a push token invalid");
                        }
                    }
                    Delivery::Failed { reason } => {
                        this.count(target.platform, &format!("failed:{reason}"))
                    }
                }
            });
        }
        started
    }

    pub fn configured_platforms(&self) -> Vec<Platform> {
        self.providers.iter().map(|p| p.platform()).collect()
    }
}

impl PushMessage {
    /// What a push says about a challenge: never its number, never the token.
    pub fn for_challenge(c: &crate::domain::challenge::Challenge, kind: super::PushKind) -> Self {
        Self {
            kind,
            challenge_id: c.id.clone(),
            action: c.action.as_str().to_owned(),
            workspace_name: c.workspace_name.clone(),
            expires_at: c.expires_at,
        }
    }
}
