//! The web console as a browser drives it: a session cookie sent back by hand (so the tests can
//! read its attributes), an `Origin` on every call, and an SSE reader for the challenge stream.

use std::{pin::Pin, time::Duration};

use futures_util::{Stream, StreamExt};
use reqwest::{Client, Method, RequestBuilder, Response};
use serde_json::{json, Value};

use super::{json_body, TestServer, WAIT};

pub const BROWSER_UA: &str = "Mozilla/5.0 (X11; Linux x86_64) assent-flow-test/1.0";

pub struct Browser {
    client: Client,
    pub base: String,
    /// The `Origin` a browser on the public URL sends.
    pub origin: String,
    /// `name=value` pairs from the last successful login.
    pub cookies: Vec<(String, String)>,
    /// The raw `Set-Cookie` headers of the last successful login.
    pub set_cookie: Vec<String>,
}

impl Browser {
    pub fn new(server: &TestServer) -> Self {
        let client = Client::builder()
            .user_agent(BROWSER_UA)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Browser {
            client,
            base: server.base.clone(),
            origin: server.public_url.trim_end_matches('/').to_string(),
            cookies: Vec::new(),
            set_cookie: Vec::new(),
        }
    }

    /// A browser already logged in.
    pub async fn logged_in(
        server: &TestServer,
        workspace: &str,
        email: &str,
        password: &str,
    ) -> Self {
        let mut b = Browser::new(server);
        let body = b.login_ok(workspace, email, password).await;
        assert_eq!(body["email"], email, "{body}");
        assert_eq!(body["workspace"], workspace, "{body}");
        b
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("Origin", &self.origin);
        if !self.cookies.is_empty() {
            let cookie = self
                .cookies
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            req = req.header("Cookie", cookie);
        }
        req
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path).send().await.expect("GET")
    }

    pub async fn post(&self, path: &str) -> Response {
        self.request(Method::POST, path).send().await.expect("POST")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.request(Method::POST, path)
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.request(Method::DELETE, path)
            .send()
            .await
            .expect("DELETE")
    }

    /// `POST /v1/console/session`; on 200 keeps the cookies it set.
    pub async fn login(&mut self, workspace: &str, email: &str, password: &str) -> Response {
        let resp = self
            .post_json(
                "/v1/console/session",
                &json!({"workspace": workspace, "email": email, "password": password}),
            )
            .await;
        if resp.status().as_u16() == 200 {
            self.set_cookie = resp
                .headers()
                .get_all("set-cookie")
                .iter()
                .map(|v| v.to_str().expect("ascii Set-Cookie").to_string())
                .collect();
            self.cookies = self
                .set_cookie
                .iter()
                .map(|h| {
                    let pair = h.split(';').next().unwrap().trim();
                    let (n, v) = pair.split_once('=').expect("cookie name=value");
                    (n.to_string(), v.to_string())
                })
                .collect();
        }
        resp
    }

    pub async fn login_ok(&mut self, workspace: &str, email: &str, password: &str) -> Value {
        let resp = self.login(workspace, email, password).await;
        let body = json_body(resp, 200).await;
        assert!(!self.cookies.is_empty(), "login set no cookie");
        body
    }

    /// The values of the session cookies (secrets that must never be logged).
    pub fn cookie_values(&self) -> Vec<String> {
        self.cookies.iter().map(|(_, v)| v.clone()).collect()
    }

    /// `POST /v1/console/devices/enrollments` for a first phone → 201 `{"code","uri","expires_at"}`.
    pub async fn enrollment(&self) -> Value {
        json_body(self.post("/v1/console/devices/enrollments").await, 201).await
    }

    /// Another phone for a person who has one (`prefix` `/v1/console` or `/v1/support`): 202 with
    /// a `device.enroll` challenge, which `phone` approves; the release hands the code (200).
    pub async fn enrollment_approved_at(&self, prefix: &str, phone: &super::Phone) -> Value {
        let resp = self.post(&format!("{prefix}/devices/enrollments")).await;
        let challenge = json_body(resp, 202).await;
        let id = challenge["challenge_id"].as_str().expect("challenge_id");
        let number = challenge["number"].as_i64().expect("number");
        let shown = phone.pending(id).await;
        assert_eq!(shown["action"], "device.enroll", "{shown}");
        phone.approve(id, number).await;
        let resp = self
            .post(&format!("{prefix}/challenges/{id}/release"))
            .await;
        let offer = json_body(resp, 200).await;
        assert_eq!(offer["action"], "device.enroll", "{offer}");
        offer
    }

    /// `enrollment_approved_at` on the console.
    pub async fn enrollment_approved_by(&self, phone: &super::Phone) -> Value {
        self.enrollment_approved_at("/v1/console", phone).await
    }

    pub async fn reveal(&self) -> Response {
        self.post("/v1/console/scim-token/reveal").await
    }

    pub async fn rotate(&self) -> Response {
        self.post("/v1/console/scim-token/rotate").await
    }

    /// Starts a challenge (`reveal` or `rotate`) and asserts the 202 answer's shape.
    pub async fn start(&self, verb: &str) -> Value {
        let resp = self.post(&format!("/v1/console/scim-token/{verb}")).await;
        let body = json_body(resp, 202).await;
        assert!(body["challenge_id"].is_string(), "{body}");
        let n = body["number"]
            .as_i64()
            .unwrap_or_else(|| panic!("`number` is not an integer: {body}"));
        assert!((10..=99).contains(&n), "number {n} not in 10..=99");
        assert!(body["notified_devices"].is_u64(), "{body}");
        body
    }

    pub async fn challenge_response(&self, id: &str) -> Response {
        self.get(&format!("/v1/console/challenges/{id}")).await
    }

    pub async fn challenge(&self, id: &str) -> Value {
        let body = json_body(self.challenge_response(id).await, 200).await;
        assert_eq!(body["id"], id, "{body}");
        body
    }

    pub async fn status(&self, id: &str) -> String {
        self.challenge(id).await["status"]
            .as_str()
            .expect("status")
            .to_string()
    }

    pub async fn release(&self, id: &str) -> Response {
        self.post(&format!("/v1/console/challenges/{id}/release"))
            .await
    }

    pub async fn events_response(&self, id: &str) -> Response {
        self.request(Method::GET, &format!("/v1/console/challenges/{id}/events"))
            .header("Accept", "text/event-stream")
            // The stream lives as long as the challenge; only the per-read waits bound it.
            .timeout(Duration::from_secs(3600))
            .send()
            .await
            .expect("GET events")
    }

    /// Opens the challenge's event stream and asserts it is one.
    pub async fn events(&self, id: &str) -> Sse {
        let resp = self.events_response(id).await;
        assert_eq!(resp.status().as_u16(), 200, "events for {id}");
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(
            ct.starts_with("text/event-stream"),
            "events content-type {ct:?}"
        );
        Sse::new(resp)
    }
}

#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

type ByteStream = Pin<Box<dyn Stream<Item = Result<Vec<u8>, reqwest::Error>> + Send>>;

/// Reads `text/event-stream` frames; comment lines (`:` keep-alives) are skipped.
pub struct Sse {
    stream: ByteStream,
    buf: Vec<u8>,
    ended: bool,
}

impl Sse {
    pub fn new(resp: Response) -> Self {
        Sse {
            stream: Box::pin(resp.bytes_stream().map(|r| r.map(|b| b.to_vec()))),
            buf: Vec::new(),
            ended: false,
        }
    }

    /// The next event, or `None` once the server closed the stream. Panics after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        tokio::time::timeout(timeout, self.next_inner())
            .await
            .unwrap_or_else(|_| panic!("no SSE event within {timeout:?}"))
    }

    async fn next_inner(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(frame) = self.take_frame() {
                if let Some(event) = parse_frame(&frame) {
                    return Some(event);
                }
                continue;
            }
            if self.ended {
                return None;
            }
            match self.stream.next().await {
                Some(Ok(chunk)) => {
                    self.buf.extend_from_slice(&chunk);
                    // Normalise CRLF line endings (the whole buffer, so a split CRLF joins up).
                    let s = String::from_utf8_lossy(&self.buf).replace("\r\n", "\n");
                    self.buf = s.into_bytes();
                }
                Some(Err(e)) => panic!("SSE stream error: {e}"),
                None => self.ended = true,
            }
        }
    }

    fn take_frame(&mut self) -> Option<String> {
        let pos = self.buf.windows(2).position(|w| w == b"\n\n")?;
        let frame = String::from_utf8(self.buf[..pos].to_vec()).expect("utf-8 SSE");
        self.buf.drain(..pos + 2);
        Some(frame)
    }

    /// The next event must be `event: status` with `data: {"status": …}`; returns the status.
    pub async fn next_status(&mut self) -> String {
        let ev = self
            .next(WAIT)
            .await
            .expect("the stream ended before a status event");
        assert_eq!(ev.event, "status", "{ev:?}");
        let data: Value = serde_json::from_str(&ev.data)
            .unwrap_or_else(|e| panic!("data is not JSON ({e}): {ev:?}"));
        data["status"]
            .as_str()
            .unwrap_or_else(|| panic!("no status in {ev:?}"))
            .to_string()
    }

    /// The server must close the stream (after a final status) without sending anything more.
    pub async fn expect_end(&mut self) {
        if let Some(ev) = self.next(WAIT).await {
            panic!("expected the stream to close, got {ev:?}");
        }
    }
}

fn parse_frame(frame: &str) -> Option<SseEvent> {
    let mut event = None;
    let mut data: Vec<String> = Vec::new();
    for line in frame.lines() {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = Some(value.to_string()),
            "data" => data.push(value.to_string()),
            _ => {}
        }
    }
    if event.is_none() && data.is_empty() {
        return None;
    }
    Some(SseEvent {
        event: event.unwrap_or_else(|| "message".into()),
        data: data.join("\n"),
    })
}
