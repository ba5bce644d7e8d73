//! Helpers for the black-box tests: they start the real `assent` binary and talk to it over HTTP
//! on 127.0.0.1, as a browser (the console) and a phone (the companion app) would.
#![allow(dead_code)]

pub mod browser;
pub mod measure;
pub mod oidc;
pub mod page;
pub mod phone;
pub mod postgres;
pub mod push;
pub mod redis;
pub mod scim;
pub mod server;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Response;
use serde_json::Value;
use time::{format_description::well_known::Rfc3339, OffsetDateTime, UtcOffset};

pub use browser::Browser;
pub use phone::Phone;
#[allow(unused_imports)] // not every test binary starts a server of its own
pub use server::{ServerOptions, TestServer, Workspace};

/// How long any single wait in a test may take before it is a failure.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

fn content_type(resp: &Response) -> String {
    resp.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Asserts the status and an `application/json` body, and returns the body.
pub async fn json_body(resp: Response, status: u16) -> Value {
    let got = resp.status().as_u16();
    let ct = content_type(&resp);
    let url = resp.url().clone();
    let text = resp.text().await.expect("read body");
    assert_eq!(got, status, "{url}: expected {status}, got {got}: {text}");
    assert!(
        ct.starts_with("application/json"),
        "{url}: content-type {ct:?}, body {text}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: body is not JSON ({e}): {text}"))
}

/// Asserts an RFC 9457 problem+json answer whose status is one of `allowed`, and returns the body.
pub async fn problem(resp: Response, allowed: &[u16]) -> Value {
    let got = resp.status().as_u16();
    let ct = content_type(&resp);
    let url = resp.url().clone();
    let text = resp.text().await.expect("read body");
    assert!(
        allowed.contains(&got),
        "{url}: expected one of {allowed:?}, got {got}: {text}"
    );
    assert!(
        ct.starts_with("application/problem+json"),
        "{url}: a {got} must be application/problem+json, content-type was {ct:?}, body {text:?}"
    );
    for leak in [
        "assent_scim_",
        "panicked",
        "stack backtrace",
        "SELECT ",
        "INSERT ",
        "sqlx",
        "sqlite",
    ] {
        assert!(
            !text.contains(leak),
            "{url}: a {got} body holds {leak:?}: {text}"
        );
    }
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{url}: problem is not JSON ({e}): {text}"));
    assert!(
        body["type"].is_string(),
        "{url}: problem without `type`: {body}"
    );
    assert!(
        body["title"].is_string(),
        "{url}: problem without `title`: {body}"
    );
    assert_eq!(
        body["status"].as_u64(),
        Some(got as u64),
        "{url}: problem `status` differs from HTTP: {body}"
    );
    assert!(
        body["detail"].is_string(),
        "{url}: problem without `detail`: {body}"
    );
    body
}

/// Asserts the field is an RFC 3339 time in UTC and returns it.
pub fn utc_time(v: &Value, field: &str) -> OffsetDateTime {
    let s = v[field]
        .as_str()
        .unwrap_or_else(|| panic!("`{field}` is not a string in {v}"));
    let t = OffsetDateTime::parse(s, &Rfc3339)
        .unwrap_or_else(|e| panic!("`{field}`={s:?} is not RFC 3339: {e}"));
    assert_eq!(t.offset(), UtcOffset::UTC, "`{field}`={s:?} is not UTC");
    assert!(
        s.ends_with('Z'),
        "`{field}`={s:?}: the contract writes UTC times with `Z`"
    );
    t
}

/// Asserts `t` lies within `slack_secs` of now + `from_now_secs`.
pub fn assert_about(t: OffsetDateTime, from_now_secs: i64, slack_secs: i64, what: &str) {
    let expected = unix_now() + from_now_secs;
    let got = t.unix_timestamp();
    assert!(
        (got - expected).abs() <= slack_secs,
        "{what}: {t} is {}s away from now+{from_now_secs}s",
        got - expected
    );
}

/// The SCIM bearer check: 200 for the workspace's current token, 401 in the SCIM Error schema otherwise.
pub async fn scim_status(server: &TestServer, token: Option<&str>) -> u16 {
    let client = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    let mut req = client.get(format!("{}/v1/scim/v2/ServiceProviderConfig", server.base));
    if let Some(token) = token {
        req = req.header("Authorization", format!("Bearer {token}"));
    }
    let resp = req.send().await.expect("SCIM request");
    let status = resp.status().as_u16();
    if status == 401 {
        let text = resp.text().await.unwrap();
        let body: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("SCIM 401 is not JSON: {text}"));
        assert_eq!(
            body["schemas"],
            serde_json::json!(["urn:ietf:params:scim:api:messages:2.0:Error"]),
            "{body}"
        );
        assert_eq!(body["status"], "401", "SCIM `status` is a string: {body}");
        if let Some(token) = token {
            assert!(!text.contains(token), "SCIM error echoes the token: {text}");
        }
    }
    status
}

/// Asserts the token has the contract's shape: `assent_scim_` + base62 (>= 32 random bytes and a checksum).
pub fn assert_token_shape(token: &str) {
    let rest = token
        .strip_prefix("assent_scim_")
        .unwrap_or_else(|| panic!("token without prefix: {token:?}"));
    assert!(
        rest.chars().all(|c| c.is_ascii_alphanumeric()),
        "token body is not base62: {token:?}"
    );
    // 32 bytes need 43 base62 digits (42 when the leading digit happens to be 0), plus the checksum.
    assert!(
        rest.len() >= 44,
        "token body too short for 32 bytes and a checksum: {} chars",
        rest.len()
    );
}
