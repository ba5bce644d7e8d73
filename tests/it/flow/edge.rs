//! The HTTP edge, against the real binary on 127.0.0.1: what a client without an account can make
//! the server hold. Half-sent heads and idle connections are closed, connections beyond the cap
//! wait instead of being served, junk methods leave no trace in `/metrics`, and SSE streams are
//! capped per session and per instance. Each test starts a server with small limits of its own.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::*;

async fn server_with(vars: &[(&str, &str)]) -> TestServer {
    TestServer::start(ServerOptions {
        env: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    })
    .await
}

fn addr_of(server: &TestServer) -> SocketAddr {
    server
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("the test server listens on 127.0.0.1:<port>")
}

const GET_HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

/// Reads one HTTP/1.1 response (its head and a `Content-Length` body) and returns its status.
async fn read_response(conn: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await.expect("read a response");
        assert!(n > 0, "the server closed the connection before answering");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().expect("a numeric content-length"))
        .expect("a response with content-length");
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await.expect("read a response body");
        assert!(n > 0, "the server closed the connection mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line")
}

/// Whether the server closes the connection (EOF or reset) within `WAIT`; anything it sends
/// first (a 408) is read and ignored.
async fn closed_by_server(mut conn: TcpStream) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

async fn healthz_answers(server: &TestServer) {
    let resp = reqwest::get(format!("{}/healthz", server.base))
        .await
        .expect("GET /healthz");
    assert_eq!(resp.status().as_u16(), 200);
}

/// The value of one unlabelled sample in Prometheus text.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn half_sent_heads_and_silent_connections_are_closed_after_the_header_read_timeout() {
    let server = server_with(&[("ASSENT_HEADER_READ_TIMEOUT_SECS", "1")]).await;
    let addr = addr_of(&server);
    // Three ways to hold a connection without ever finishing a request: half an HTTP/1.1 head,
    // nothing at all, and half of the HTTP/2 preface (the server cannot yet tell which protocol
    // it speaks, so hyper's own header timer is not running).
    let openings: [&[u8]; 3] = [
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",
        b"",
        b"PRI * HTTP/2.0\r\n",
    ];
    let mut held = Vec::new();
    for i in 0..50 {
        let mut conn = TcpStream::connect(addr).await.expect("connect");
        conn.write_all(openings[i % openings.len()])
            .await
            .expect("send half a request");
        held.push(conn);
    }
    let closed = join_all(held.into_iter().map(closed_by_server)).await;
    let open: Vec<usize> = (0..closed.len()).filter(|i| !closed[*i]).collect();
    assert!(
        open.is_empty(),
        "connections still open {WAIT:?} after a 1 s header-read timeout: {open:?} \
         (i % 3: 0 half head, 1 silent, 2 half preface)"
    );
    healthz_answers(&server).await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    // A header-read timeout far longer than the test: what closes the connections is the idle one.
    let server = server_with(&[
        ("ASSENT_HEADER_READ_TIMEOUT_SECS", "60"),
        ("ASSENT_IDLE_TIMEOUT_SECS", "1"),
    ])
    .await;
    let addr = addr_of(&server);

    // HTTP/1.1: the connection is kept alive (a second request is answered on it), then closed.
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    for _ in 0..2 {
        conn.write_all(GET_HEALTHZ).await.expect("send a request");
        assert_eq!(read_response(&mut conn).await, 200);
    }
    assert!(
        closed_by_server(conn).await,
        "an idle HTTP/1.1 connection is still open {WAIT:?} after a 1 s idle timeout"
    );

    // HTTP/2 (prior knowledge, as a balancer speaking h2c would): hyper has no idle timer of its
    // own there; the connection ends once the server says GOAWAY and closes.
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let io = TokioIo::new(TcpStream::connect(addr).await.expect("connect"));
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .expect("HTTP/2 handshake");
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get(format!("{}/healthz", server.base))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(request).await.expect("HTTP/2 request");
    assert_eq!(resp.status().as_u16(), 200);
    drop(resp);
    assert!(
        tokio::time::timeout(WAIT, driver).await.is_ok(),
        "an idle HTTP/2 connection is still open {WAIT:?} after a 1 s idle timeout"
    );
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_and_are_served_once_others_close() {
    let server = server_with(&[
        ("ASSENT_MAX_CONNECTIONS", "20"),
        ("ASSENT_HEADER_READ_TIMEOUT_SECS", "60"),
        ("ASSENT_IDLE_TIMEOUT_SECS", "60"),
    ])
    .await;
    let addr = addr_of(&server);
    // 40 clients each send a request and keep their connection until released.
    let (served_tx, mut served) = mpsc::unbounded_channel();
    let mut releases = Vec::new();
    for i in 0..40 {
        let mut conn = TcpStream::connect(addr).await.expect("connect");
        conn.write_all(GET_HEALTHZ).await.expect("send a request");
        let (release, released) = oneshot::channel::<()>();
        releases.push(Some(release));
        let served_tx = served_tx.clone();
        tokio::spawn(async move {
            let status = read_response(&mut conn).await;
            let _ = served_tx.send((i, status));
            let _ = released.await;
        });
    }
    let mut first = BTreeSet::new();
    while first.len() < 20 {
        let (i, status) = tokio::time::timeout(WAIT, served.recv())
            .await
            .expect("20 connections fit under the cap and are answered")
            .unwrap();
        assert_eq!(status, 200);
        first.insert(i);
    }
    // The other 20 sit in the listen queue: nothing answers them while the first 20 are held.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), served.recv())
            .await
            .is_err(),
        "a 21st connection was served with 20 held and ASSENT_MAX_CONNECTIONS=20"
    );
    for i in &first {
        drop(releases[*i].take());
    }
    let mut rest = BTreeSet::new();
    while rest.len() < 20 {
        let (i, status) = tokio::time::timeout(WAIT, served.recv())
            .await
            .expect("the waiting connections are served once others close")
            .unwrap();
        assert_eq!(status, 200);
        rest.insert(i);
    }
    assert!(first.is_disjoint(&rest));
    releases.clear();

    // The cap is visible to the operator: the times the server waited for a free slot.
    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap();
    let waits = sample(&metrics, "assent_http_connection_cap_waits_total");
    assert!(
        waits.is_some_and(|n| n >= 1.0),
        "no connection-cap waits counted:\n{metrics}"
    );
    let open = sample(&metrics, "assent_http_connections_open");
    assert!(
        open.is_some_and(|n| (1.0..=20.0).contains(&n)),
        "open connections {open:?} outside 1..=20:\n{metrics}"
    );
}

#[tokio::test]
async fn junk_methods_leave_no_trace_in_metrics() {
    let server = server_with(&[]).await;
    let client = reqwest::Client::new();
    for batch in 0..10 {
        let sends = (0..20).map(|i| {
            let method = format!("JUNK{batch:02}{i:02}{}", "X".repeat(60_000));
            let method = Method::from_bytes(method.as_bytes()).expect("a token");
            let path = if i % 2 == 0 { "/healthz" } else { "/nowhere" };
            client
                .request(method, format!("{}{path}", server.base))
                .send()
        });
        for resp in join_all(sends).await {
            let resp = resp.expect("a junk-method request is answered");
            assert!(resp.status().is_client_error(), "{}", resp.status());
        }
    }
    let metrics = client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains("JUNK"),
        "a client-chosen method is a metrics label"
    );
    assert!(
        metrics.len() < 64 * 1024,
        "/metrics grew to {} bytes",
        metrics.len()
    );
    assert!(
        metrics.contains(r#"method="other""#),
        "junk methods are not counted as `other`:\n{metrics}"
    );
}

/// A 429 problem+json with a `Retry-After` in seconds.
async fn assert_refused(resp: reqwest::Response, what: &str) {
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert_eq!(resp.status().as_u16(), 429, "{what}");
    assert!(
        retry.is_some_and(|s| s > 0),
        "{what}: 429 without Retry-After"
    );
    problem(resp, &[429]).await;
}

#[tokio::test]
async fn sse_streams_are_capped_per_session_and_per_instance() {
    let server = server_with(&[
        ("ASSENT_MAX_SSE_PER_SESSION", "8"),
        ("ASSENT_MAX_SSE_STREAMS", "10"),
    ])
    .await;
    let a = owner_with_phone(&server).await;
    let a_id = id_of(&a.browser.start("reveal").await);
    let mut a_streams = Vec::new();
    for _ in 0..8 {
        let mut sse = a.browser.events(&a_id).await;
        assert_eq!(sse.next_status().await, "pending");
        a_streams.push(sse);
    }
    assert_refused(
        a.browser.events_response(&a_id).await,
        "the session's 9th stream",
    )
    .await;

    // Another session still has room, until the instance's 10 are open.
    let b = owner_with_phone(&server).await;
    let b_id = id_of(&b.browser.start("reveal").await);
    let mut b_streams = Vec::new();
    for _ in 0..2 {
        let mut sse = b.browser.events(&b_id).await;
        assert_eq!(sse.next_status().await, "pending");
        b_streams.push(sse);
    }
    assert_refused(
        b.browser.events_response(&b_id).await,
        "the instance's 11th stream",
    )
    .await;

    // Closing one stream frees its place (once the server sees the connection go).
    drop(a_streams.pop());
    let deadline = Instant::now() + WAIT;
    loop {
        let resp = b.browser.events_response(&b_id).await;
        if resp.status().as_u16() == 200 {
            break;
        }
        assert_eq!(resp.status().as_u16(), 429, "{}", resp.status());
        assert!(
            Instant::now() < deadline,
            "a closed stream did not free its place within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
