//! Helpers for the integration tests: local servers that speak the push providers' protocols.
// Each test binary (and the fan-out benchmark) uses a different part of these helpers.
#![allow(dead_code)]

pub mod apns_server;
pub mod fcm_server;
pub mod jws;
pub mod tls;
