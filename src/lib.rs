//! Assent: a SCIM token is only revealed after its owner approves on their phone.
//! See README.md for the architecture in a few lines.

pub mod app;
pub mod bus;
pub mod cancel;
pub mod challenges;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod metrics;
pub mod oidc;
pub mod proto;
pub mod push;
pub mod redis_link;
pub mod scim;
pub mod service;
pub mod store;
pub mod streams;
