//! Every black-box test of Assent in one binary: each file under `tests/` would link the whole
//! crate again, which on a 2-core machine costs more than all the tests' running. The modules are
//! the suites: `flow` (the step-up flow, enrollment, lifecycle, the attacks of issues 12 and 13 and
//! the HTTP edge), `push` (APNs and FCM against local servers), `scale` (two instances on Redis),
//! `scim` (Entra ID's sequences and the compliance tester), `sso` (OpenID Connect against a real
//! provider) and `browser` (the console page in headless Chromium). `support` holds what they
//! share: the real server on a free port, a browser, a phone, the services they need.
//!
//! `cargo test --test it flow::` runs one suite; `scripts/test` runs them all.

mod support;

mod browser;
mod flow;
mod push;
mod scale;
mod scim;
mod sso;
