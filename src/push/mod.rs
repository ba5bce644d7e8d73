//! Push delivery behind one trait, one implementation per platform (APNs, FCM). A platform without
//! configuration has no provider: its devices are skipped and the phone finds challenges by polling.

use async_trait::async_trait;
use std::sync::Arc;
use time::OffsetDateTime;

use crate::domain::challenge::Challenge;
use crate::domain::crypto::Keyring;
use crate::metrics::{Metrics, PushLabels};
use crate::store::{Device, Platform, Store};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushKind {
    /// "Someone asks you to approve": an alert.
    Challenge,
    /// "That request is settled": silent, so other devices can drop their prompt.
    Resolved,
}

/// Where a push goes. Debug hides the device's push token.
#[derive(Clone)]
pub struct PushTarget {
    pub device_id: String,
    pub platform: Platform,
    pub token: String,
    pub apns_environment: Option<String>,
}

impl std::fmt::Debug for PushTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushTarget")
            .field("device_id", &self.device_id)
            .field("platform", &self.platform)
            .field("token", &"***")
            .finish()
    }
}

/// What a push says. Never the token, never the number (CONTRACT.md section 4).
#[derive(Clone, Debug)]
pub struct PushMessage {
    pub kind: PushKind,
    pub challenge_id: String,
    pub action: String,
    pub workspace_name: String,
    pub expires_at: OffsetDateTime,
}

impl PushMessage {
    pub fn for_challenge(c: &Challenge, kind: PushKind) -> Self {
        Self {
            kind,
            challenge_id: c.id.clone(),
            action: c.action.as_str().to_owned(),
            workspace_name: c.workspace_name.clone(),
            expires_at: c.expires_at,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// The provider says this device token is dead: stop using it until the phone refreshes it.
    InvalidToken {
        reason: String,
    },
    Failed {
        reason: String,
    },
}

#[async_trait]
pub trait PushProvider: Send + Sync + 'static {
    fn platform(&self) -> Platform;
    async fn deliver(&self, target: &PushTarget, message: &PushMessage) -> Delivery;
}

/// Fans a push out to all of a person's devices without making the caller wait.
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
            apns_environment: device.apns_environment.clone(),
        })
    }

    /// Starts one delivery per device concurrently and returns at once how many devices have a
    /// usable push token and a configured provider (the `notified_devices` of the API).
    pub fn fan_out(self: &Arc<Self>, devices: &[Device], message: PushMessage) -> usize {
        let mut started = 0;
        for device in devices {
            let platform = device.platform.as_str();
            let Some(provider) = self.provider(device.platform) else {
                self.metrics
                    .pushes
                    .get_or_create(&PushLabels {
                        provider: platform,
                        result: "not_configured",
                    })
                    .inc();
                continue;
            };
            let Some(target) = self.target(device) else {
                self.metrics
                    .pushes
                    .get_or_create(&PushLabels {
                        provider: platform,
                        result: "no_token",
                    })
                    .inc();
                continue;
            };
            started += 1;
            let this = Arc::clone(self);
            let message = message.clone();
            tokio::spawn(async move {
                let outcome = provider.deliver(&target, &message).await;
                let result = match &outcome {
                    Delivery::Delivered => "delivered",
                    Delivery::InvalidToken { .. } => "invalid_token",
                    Delivery::Failed { .. } => "failed",
                };
                this.metrics
                    .pushes
                    .get_or_create(&PushLabels {
                        provider: platform,
                        result,
                    })
                    .inc();
                match outcome {
                    Delivery::InvalidToken { reason } => {
                        tracing::info!(device = %target.device_id, %reason, "push token rejected; marked invalid");
                        if let Err(e) = this.store.mark_push_token_invalid(&target.device_id).await
                        {
                            tracing::warn!(device = %target.device_id, error = %e, "could not mark push token invalid");
                        }
                    }
                    Delivery::Failed { reason } => {
                        tracing::warn!(device = %target.device_id, %reason, "push not delivered");
                    }
                    Delivery::Delivered => {}
                }
            });
        }
        started
    }

    pub fn configured_platforms(&self) -> Vec<Platform> {
        self.providers.iter().map(|p| p.platform()).collect()
    }
}
