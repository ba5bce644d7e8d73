//! Plain Rust, no HTTP: the rules of challenges, tokens, device signatures, secrets and the audit chain.

pub mod audit;
pub mod challenge;
pub mod crypto;
pub mod device;
pub mod password;
pub mod people;
pub mod policy;
pub mod proxy;
pub mod sso;
pub mod token;
