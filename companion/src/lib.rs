//! Assent's companion SDK: everything a phone does, in one Rust core that the iOS and Android
//! apps embed through uniffi (Swift, Kotlin) and that `assent companion` is built on.
//!
//! - enrollment from the console's QR code or a typed code ([`parse_enrollment_uri`], [`Device::enroll`]);
//! - `Authorization: Device <JWS>` with a fresh `jti` on every call, the pending list, approve with
//!   the picked number, deny with a reason, push-token updates, unenroll ([`Device`]);
//! - the APNs and FCM payloads Assent sends, read into [`PushEvent`]s;
//! - the state a phone keeps ([`DeviceState`]), never a private key: signing is the app's
//!   [`DeviceKeySigner`] (Secure Enclave, Android Keystore), checked before anything is sent.
//!
//! The guide for app developers is docs/companion-sdk.md.

uniffi::setup_scaffolding!();

mod client;
mod error;
mod ffi;
mod jws;
mod model;
mod push;
mod signer;

pub use client::Device;
pub use error::CompanionError;
pub use ffi::CompanionClient;
pub use model::{
    describe_action, enrollment_offer, parse_enrollment_uri, parse_pending, Challenge,
    DecisionStatus, DenyReason, DeviceState, EnrollRequest, EnrollmentOffer, PushPlatform,
};
pub use push::{parse_apns_payload, parse_fcm_data, PushEvent};
pub use signer::{software_signer, DeviceKeySigner, SignerError, SoftwareSigner};
