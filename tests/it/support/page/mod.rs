//! Helpers for the console page's end-to-end tests (tests/it/browser.rs): a ChromeDriver shared by the
//! whole test binary, and a headless Chromium per test driven through it with `fantoccini`.
#![allow(dead_code)]

pub mod chrome;

pub use chrome::Page;
