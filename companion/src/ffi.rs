//! The API Swift, Kotlin and Python call. Blocking on purpose: every call is one short HTTP
//! exchange, apps already call such APIs from a background queue / coroutine dispatcher, and a
//! blocking call needs no async bridge between three languages' runtimes. The calls run the async
//! core (src/client.rs) on one small runtime the SDK owns, shared by every `CompanionClient`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::client::Device;
use crate::error::{CompanionError, Result};
use crate::model::{
    Challenge, DecisionStatus, DenyReason, DeviceState, EnrollRequest, EnrollmentOffer,
};
use crate::signer::DeviceKeySigner;

fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> =
        OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("assent-companion")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| CompanionError::Network {
            reason: format!("cannot start the SDK's runtime: {e}"),
        })
}

fn block_on<T>(future: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    runtime()?.block_on(future)
}

/// An enrolled phone. Keep its `state()` (not secret) and the key in the signer; `restore` both
/// on the next launch.
#[derive(uniffi::Object)]
pub struct CompanionClient {
    device: Device,
}

#[uniffi::export]
impl CompanionClient {
    /// Enrolls this phone with the console's QR code or a typed code (`enrollment_offer`).
    #[uniffi::constructor]
    pub fn enroll(
        offer: EnrollmentOffer,
        request: EnrollRequest,
        signer: Arc<dyn DeviceKeySigner>,
    ) -> Result<Arc<Self>> {
        let device = block_on(Device::enroll(&offer, &request, signer))?;
        Ok(Arc::new(Self { device }))
    }

    /// A phone enrolled before: its saved state and the same signer.
    #[uniffi::constructor]
    pub fn restore(state: DeviceState, signer: Arc<dyn DeviceKeySigner>) -> Result<Arc<Self>> {
        Ok(Arc::new(Self {
            device: Device::restore(state, signer)?,
        }))
    }

    /// What to save (never a private key).
    pub fn state(&self) -> DeviceState {
        self.device.state().clone()
    }

    /// The pending challenges of this phone's person, newest first.
    pub fn pending(&self) -> Result<Vec<Challenge>> {
        block_on(self.device.pending())
    }

    /// One pending challenge by id (the id a push carried); `None` once it is no longer pending.
    pub fn challenge(&self, challenge_id: String) -> Result<Option<Challenge>> {
        let pending = block_on(self.device.pending())?;
        Ok(pending.into_iter().find(|c| c.id == challenge_id))
    }

    /// Polls every `interval_ms` until a challenge (the one named, or any) is pending, for at
    /// most `timeout_ms`: how a phone recovers a lost push.
    pub fn wait_for_challenge(
        &self,
        challenge_id: Option<String>,
        timeout_ms: u64,
        interval_ms: u64,
    ) -> Result<Option<Challenge>> {
        let interval = Duration::from_millis(interval_ms.max(250));
        block_on(self.device.wait_for_challenge(
            challenge_id.as_deref(),
            Duration::from_millis(timeout_ms),
            interval,
        ))
    }

    /// Approves with the number the person picked (signed and sent as it is: the server judges it).
    pub fn approve(&self, challenge: Challenge, number: u8) -> Result<DecisionStatus> {
        block_on(self.device.approve(&challenge, number))
    }

    /// Denies; `NotMe` reports the request as a suspected attack.
    pub fn deny(&self, challenge: Challenge, reason: Option<DenyReason>) -> Result<DecisionStatus> {
        block_on(self.device.deny(&challenge, reason))
    }

    /// Sends the phone's new APNs or FCM token.
    pub fn update_push_token(&self, push_token: String) -> Result<()> {
        block_on(self.device.update_push_token(&push_token))
    }

    /// Removes this phone from the account; then delete the key and the saved state.
    pub fn unenroll(&self) -> Result<()> {
        block_on(self.device.unenroll())
    }
}
