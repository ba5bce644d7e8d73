//! Push delivery to phones: the port ([`PushProvider`]) and its two adapters, APNs and FCM.
//!
//! A push is a hint that a challenge waits: the phone finds the challenge by polling when a push is
//! lost, so delivery never blocks the caller and never holds a secret. Everything that makes one
//! delivery robust lives inside [`PushProvider::deliver`]: the per-attempt timeout, retries with
//! backoff (honouring `Retry-After`) while the challenge lives, and the one credential renewal each
//! provider allows (APNs provider JWT on `ExpiredProviderToken`, FCM access token on 401).
//!
//! The payload carries the challenge id, action, workspace name and expiry, never the SCIM token
//! nor the number to match (CONTRACT.md section 4).

mod apns;
mod fcm;
mod notifier;
mod retry;

use std::fmt;
use std::sync::Once;

use time::OffsetDateTime;

pub use self::apns::{ApnsClient, ApnsConfig, ApnsEndpoint};
pub use self::fcm::{FcmClient, FcmConfig, ServiceAccount};
pub use self::notifier::Notifier;
pub use self::retry::RetryPolicy;

/// The device platforms are the store's: one enum from the API to the providers.
pub use crate::domain::people::Platform;

/// Which APNs host a device's token belongs to: a sandbox token is refused by the production host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApnsEnvironment {
    Production,
    Sandbox,
}

#[derive(Clone)]
pub struct PushTarget {
    pub device_id: String,
    pub platform: Platform,
    /// The device's push token (APNs device token, FCM registration token). Never logged.
    pub token: String,
    /// Only for [`Platform::Apns`]; `None` there means production (App Store and TestFlight builds).
    pub apns_environment: Option<ApnsEnvironment>,
}

impl fmt::Debug for PushTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushTarget")
            .field("device_id", &self.device_id)
            .field("platform", &self.platform)
            .field("token", &"***")
            .field("apns_environment", &self.apns_environment)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushKind {
    /// A visible prompt: "approve this on your phone".
    Challenge,
    /// Silent: the challenge was decided or expired, so the prompt can disappear.
    Resolved,
    /// A visible notice that needs no answer: support rotated the token, or someone's request was
    /// reported as not theirs. `action` names which (`notice_title`).
    Notice,
}

impl PushKind {
    /// The `kind` key of the payload, so the app tells the two apart.
    pub fn as_str(self) -> &'static str {
        match self {
            PushKind::Challenge => "challenge",
            PushKind::Resolved => "resolved",
            PushKind::Notice => "notice",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PushMessage {
    pub kind: PushKind,
    pub challenge_id: String,
    pub action: String,
    pub workspace_name: String,
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// The provider says this push token will never work again: mark it invalid until the phone
    /// sends a fresh one. `reason` is the provider's code (`Unregistered`, `UNREGISTERED`, …).
    InvalidToken {
        reason: String,
    },
    /// Not delivered. `reason` is a short, low-cardinality code fit for a metrics label: the
    /// provider's error code (`ServiceUnavailable`, `UNAVAILABLE`, …, or `HTTP <status>` when it
    /// gave none), or one of ours: `timeout`, `connect`, `transport` (the last attempt's network
    /// failure), `expired` (the challenge ended before any attempt), `signing`, `oauth_refused`,
    /// `oauth_unavailable` (the FCM token grant), `wrong_platform`.
    Failed {
        reason: String,
    },
}

#[async_trait::async_trait]
pub trait PushProvider: Send + Sync {
    /// Delivers one push, retrying inside while it is worth it; never panics, never blocks past
    /// the challenge's expiry (a `Resolved` push gets [`RetryPolicy::resolved_grace`] more).
    async fn deliver(&self, target: &PushTarget, msg: &PushMessage) -> Delivery;
    fn platform(&self) -> Platform;
}

/// A platform's configuration was given but cannot be used. The message names the variable, so
/// start-up can stop with one line (CONTRACT.md section 1).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var} must be set when {because} is set")]
    Missing {
        var: &'static str,
        because: &'static str,
    },
    #[error("{var}: {reason}")]
    Invalid { var: &'static str, reason: String },
}

impl ConfigError {
    /// The environment variable at fault.
    pub fn var(&self) -> &'static str {
        match self {
            ConfigError::Missing { var, .. } | ConfigError::Invalid { var, .. } => var,
        }
    }
}

/// Installs ring as the process's rustls crypto provider, once; later calls do nothing.
///
/// reqwest's `rustls-tls` links ring, and rustls panics at run time when it has to pick between
/// two linked providers, so the server calls this at start-up (and tests before any TLS).
pub fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Err only means a provider is already installed: keep it, there is just one linked.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// One log line per delivery, with the device id and never its push token.
pub(crate) fn log_outcome(target: &PushTarget, delivery: &Delivery) {
    let platform = target.platform.as_str();
    match delivery {
        Delivery::Delivered => {
            tracing::debug!(device_id = %target.device_id, platform, "push delivered")
        }
        Delivery::InvalidToken { reason } => tracing::info!(
            device_id = %target.device_id, platform, %reason, "push token refused by the provider"
        ),
        Delivery::Failed { reason } => tracing::warn!(
            device_id = %target.device_id, platform, %reason, "push not delivered"
        ),
    }
}

/// Keys read from files (a `.p8` key, a service account's private key) are the crate's `Secret`.
pub(crate) use crate::domain::crypto::Secret;

/// The payload's `workspace` text, bounded so that an APNs payload stays far below Apple's 4 KB.
pub(crate) fn workspace_label(name: &str) -> String {
    const MAX_CHARS: usize = 200;
    match name.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &name[..cut]),
        None => name.to_owned(),
    }
}

/// The alert's title, naming the action in words a person recognises.
pub(crate) fn action_title(action: &str) -> String {
    match action {
        "scim_token.reveal" => "Reveal the SCIM token?".to_owned(),
        "scim_token.rotate" => "Regenerate the SCIM token?".to_owned(),
        "scim_token.support_rotate" => "Support: rotate the SCIM token?".to_owned(),
        "device.enroll" => "Add a new phone to your account?".to_owned(),
        "member.devices_reset" => "Reset a member's phones?".to_owned(),
        "member.promote" => "Give a member more rights?".to_owned(),
        other => format!("Approve {other}?"),
    }
}

/// The alert of a notice push: what happened, and what the reader may want to do.
pub(crate) fn notice_text(action: &str, workspace: &str) -> (String, String) {
    match action {
        "scim_token.support_rotated" => (
            "Support rotated the SCIM token".to_owned(),
            format!("{workspace}: fetch the new token with View Token and update your identity provider."),
        ),
        "security.suspected_attack" => (
            "A request was reported as not made by its admin".to_owned(),
            format!("{workspace}: someone denied a request as \"not me\". Review the activity log."),
        ),
        "device.enrolled" => (
            "A phone was added".to_owned(),
            format!("{workspace}: a new phone can now approve requests. If this was not expected, review the activity log."),
        ),
        "device.removed" => (
            "A phone was removed".to_owned(),
            format!("{workspace}: a phone can no longer approve requests. If this was not expected, review the activity log."),
        ),
        other => (other.to_owned(), workspace.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_target_debug_hides_the_token() {
        let target = PushTarget {
            device_id: "dev-1".into(),
            platform: Platform::Apns,
            token: "abcdef0123456789".into(),
            apns_environment: Some(ApnsEnvironment::Sandbox),
        };
        let printed = format!("{target:?}");
        assert!(
            printed.contains("***") && printed.contains("dev-1"),
            "{printed}"
        );
        assert!(!printed.contains("abcdef0123456789"), "{printed}");
    }

    #[test]
    fn secret_debug_is_masked() {
        assert_eq!(
            format!("{:?}", Secret::new("-----BEGIN PRIVATE KEY-----".into())),
            "***"
        );
    }

    #[test]
    fn workspace_label_is_bounded_on_a_char_boundary() {
        assert_eq!(workspace_label("Acme"), "Acme");
        let long = "é".repeat(500);
        let label = workspace_label(&long);
        assert_eq!(label.chars().count(), 201);
        assert!(label.ends_with('…'));
    }

    #[test]
    fn installing_the_crypto_provider_twice_is_harmless() {
        install_crypto_provider();
        install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
