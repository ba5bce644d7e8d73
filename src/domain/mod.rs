//! Plain Rust, no HTTP: the rules of challenges, tokens, device signatures and secrets.

pub mod challenge;
pub mod crypto;
pub mod device;
pub mod password;
pub mod token;
