//! Step-up benchmark (not a test): starts the real `assent serve` (release build) on a free
//! loopback port and prints figures for the README.
//!
//! 1. N concurrent admins (default 100) each run reveal → phone polls pending → browser opens the
//!    SSE stream → phone decides → browser sees `approved` → release, for several rounds. The
//!    "server overhead" of a round trip is the sum of the HTTP latencies of its five calls plus
//!    the decision-to-SSE delivery; the phone's signing is excluded.
//! 2. The same paced round trips while 16 SCIM clients POST 100,000 users (an Entra initial
//!    cycle) through the same single SQLite writer, against the idle figures of step 1.
//! 3. The resident memory the server adds for 10,000 idle SSE streams.
//!
//! `ASSENT_BENCH_ADMINS`, `ASSENT_BENCH_ROUNDS`, `ASSENT_BENCH_SCIM_USERS` and
//! `ASSENT_BENCH_STREAMS` change the sizes.
//! 10,000 streams need more than 10,000 open files on both sides (`ulimit -n`; 20,000 here).

#[path = "../tests/it/support/mod.rs"]
#[allow(unused_imports)]
mod support;
use support::measure::*;
use support::server::{ServerOptions, TestServer};

use assent::domain::device::{DecisionClaims, DeviceSigner};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The server the benchmark measures: the test support's, sized for it.
async fn start() -> TestServer {
    let env = [
        // A benchmark is one person asking again and again: no hourly limit.
        ("ASSENT_CHALLENGES_PER_HOUR", "0"),
        // 10,000 idle streams of one session (step 3): past the defaults' caps on purpose.
        ("ASSENT_MAX_CONNECTIONS", "30000"),
        ("ASSENT_MAX_SSE_STREAMS", "30000"),
        ("ASSENT_MAX_SSE_PER_SESSION", "30000"),
        // The tests' server logs at trace level for their secret checks; a benchmark does not.
        ("ASSENT_LOG", "warn"),
    ];
    TestServer::start(ServerOptions {
        challenge_ttl_secs: 900,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    })
    .await
}

struct Admin {
    http: reqwest::Client,
    cookie: String,
    url: String,
    signer: DeviceSigner,
    device_id: String,
}

impl Admin {
    async fn timed(&self, req: reqwest::RequestBuilder) -> (Value, Duration) {
        let started = Instant::now();
        let res = req.send().await.unwrap();
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        let took = started.elapsed();
        assert!(status.is_success(), "{status} {body}");
        (body, took)
    }

    fn device_auth(&self) -> String {
        format!(
            "Device {}",
            self.signer
                .sign_request(&self.device_id, &self.url, time::OffsetDateTime::now_utc())
        )
    }

    /// One whole step-up; returns the server-side latencies of its steps and the token released.
    async fn round(&self) -> ([Duration; 6], String) {
        let (created, reveal) = self
            .timed(
                self.http
                    .post(format!("{}/v1/console/scim-token/reveal", self.url))
                    .header("cookie", &self.cookie),
            )
            .await;
        let id = created["challenge_id"].as_str().unwrap().to_owned();
        let number = created["number"].as_u64().unwrap() as u8;

        let auth = self.device_auth();
        let (pending, poll) = self
            .timed(
                self.http
                    .get(format!("{}/v1/mobile/challenges", self.url))
                    .header("authorization", auth),
            )
            .await;
        let challenge = pending["challenges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id.as_str())
            .unwrap()
            .clone();

        let started = Instant::now();
        let mut sse = self
            .http
            .get(format!("{}/v1/console/challenges/{id}/events", self.url))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        let first = sse.chunk().await.unwrap().unwrap();
        let open = started.elapsed();
        assert!(String::from_utf8_lossy(&first).contains("pending"));

        let iat = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = DecisionClaims {
            iss: self.device_id.clone(),
            aud: self.url.clone(),
            sub: id.clone(),
            nonce: challenge["nonce"].as_str().unwrap().into(),
            action: "scim_token.reveal".into(),
            decision: "approve".into(),
            number: Some(number),
            reason: None,
            workspace: None,
            ticket: None,
            iat,
            exp: iat + 60,
        };
        let body = json!({"decision": self.signer.sign_decision(&self.device_id, &claims)});
        let auth = self.device_auth();
        let started = Instant::now();
        let decide_req = self
            .http
            .post(format!("{}/v1/mobile/challenges/{id}/decision", self.url))
            .header("authorization", auth)
            .json(&body);
        let (decided, seen) = tokio::join!(self.timed(decide_req), async {
            let mut text = String::new();
            while !text.contains("approved") {
                text.push_str(&String::from_utf8_lossy(
                    &sse.chunk().await.unwrap().unwrap(),
                ));
            }
            started.elapsed()
        });
        let decide = decided.1;

        let (released, release) = self
            .timed(
                self.http
                    .post(format!("{}/v1/console/challenges/{id}/release", self.url))
                    .header("cookie", &self.cookie),
            )
            .await;
        let token = released["token"].as_str().unwrap().to_owned();
        assert!(token.starts_with("assent_scim_"));
        ([reveal, poll, open, decide, seen, release], token)
    }
}

async fn setup_admins(server: &TestServer, n: usize) -> Vec<Admin> {
    server.cli(&[
        "workspace",
        "create",
        "--slug",
        "bench",
        "--name",
        "Bench",
        "--owner-email",
        "owner@bench.test",
    ]);
    let mut admins = Vec::new();
    for i in 0..n {
        let email = format!("admin{i}@bench.test");
        let created = server.cli(&[
            "member",
            "add",
            "--workspace",
            "bench",
            "--email",
            &email,
            "--role",
            "admin",
        ]);
        // The server closes a connection idle for its header-read timeout (10 s): setting up 100
        // admins takes about that long, and a request sent on a connection as the server closes
        // it fails (hyper's IncompleteMessage). The client lets idle connections go first.
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(4)
            .pool_idle_timeout(std::time::Duration::from_secs(5))
            .build()
            .unwrap();
        let res = http
            .post(format!("{}/v1/console/session", server.base))
            .json(&json!({"workspace": "bench", "email": email, "password": created["password"]}))
            .send()
            .await
            .unwrap();
        let cookie = res.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let offer: Value = http
            .post(format!("{}/v1/console/devices/enrollments", server.base))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let signer = DeviceSigner::generate();
        let enrolled: Value = http
            .post(format!("{}/v1/mobile/devices", server.base))
            .json(&json!({"enrollment_code": offer["code"], "name": "bench", "platform": "fcm", "public_key": signer.public_key().to_jwk()}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        admins.push(Admin {
            http,
            cookie,
            url: server.base.clone(),
            signer,
            device_id: enrolled["device_id"].as_str().unwrap().into(),
        });
    }
    admins
}

/// Cumulative bucket counts of the server's own latency histogram, per route: (upper bound, count).
async fn server_histograms(url: &str) -> std::collections::BTreeMap<String, Vec<(f64, u64)>> {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut out: std::collections::BTreeMap<String, Vec<(f64, u64)>> = Default::default();
    for line in text
        .lines()
        .filter(|l| l.starts_with("assent_http_request_duration_seconds_bucket{"))
    {
        let route = line
            .split("route=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_default();
        let le = line
            .split("le=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_default();
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap()
        };
        let count: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        out.entry(route.to_owned()).or_default().push((le, count));
    }
    out
}

/// The upper bound of the bucket holding the p-th percentile of the requests between two scrapes.
fn bucket_pct(before: &[(f64, u64)], after: &[(f64, u64)], p: f64) -> f64 {
    let delta: Vec<(f64, u64)> = after
        .iter()
        .map(|(le, n)| {
            (
                *le,
                n - before.iter().find(|(b, _)| b == le).map_or(0, |(_, m)| *m),
            )
        })
        .collect();
    let total = delta.last().map_or(0, |(_, n)| *n);
    let want = (total as f64 * p).ceil() as u64;
    delta
        .iter()
        .find(|(_, n)| *n >= want)
        .map_or(f64::NAN, |(le, _)| le * 1000.0)
}

/// Runs `rounds` flows per admin, all admins at once. Back to back (`paced == false`) the server
/// runs flat out and latency is mostly queueing; paced, each admin pauses a random 0-2 s before
/// each flow (people click View Token now and then), so latency shows the server's own overhead.
async fn phase(
    server: &TestServer,
    admins: &[Admin],
    rounds: usize,
    paced: bool,
    until: Option<&AtomicBool>,
) {
    let before = server_histograms(&server.base).await;
    let cost_before = process_cost(server.server_pid());
    let started = Instant::now();
    let runs = admins.iter().enumerate().map(|(i, admin)| async move {
        let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
        let mut mine = Vec::with_capacity(rounds);
        // With `until`, flows go on for as long as the load lasts; otherwise `rounds` of them.
        while match until {
            Some(done) => !done.load(Ordering::Relaxed),
            None => mine.len() < rounds,
        } {
            if paced {
                tokio::time::sleep(Duration::from_millis(rng.gen_range(0..2000))).await;
            }
            mine.push(admin.round().await.0);
        }
        mine
    });
    let all: Vec<[Duration; 6]> = futures_util::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .collect();
    let wall = started.elapsed();
    let cost_after = process_cost(server.server_pid());
    let after = server_histograms(&server.base).await;
    println!(
        "{} admins, {}: {} flows in {:.2} s ({:.0} flows/s)",
        admins.len(),
        match (paced, until.is_some()) {
            (true, true) => "paced, while 16 SCIM clients POST users",
            (true, false) => "paced (random 0-2 s pause before each flow)",
            _ => "back to back",
        },
        all.len(),
        wall.as_secs_f64(),
        all.len() as f64 / wall.as_secs_f64()
    );
    let names = [
        "reveal",
        "poll pending",
        "SSE open",
        "decision",
        "decision→SSE",
        "release",
    ];
    for (i, name) in names.iter().enumerate() {
        let mut v: Vec<Duration> = all.iter().map(|r| r[i]).collect();
        v.sort();
        println!(
            "  {name:<13} p50 {:>7.2} ms   p99 {:>7.2} ms",
            pct(&v, 0.5),
            pct(&v, 0.99)
        );
    }
    // The decision→SSE figure includes the decision call itself, so it is not added twice.
    let mut total: Vec<Duration> = all
        .iter()
        .map(|r| r[0] + r[1] + r[2] + r[4] + r[5])
        .collect();
    total.sort();
    println!(
        "  whole round trip as the clients saw it (signing excluded)  p50 {:.2} ms   p99 {:.2} ms",
        pct(&total, 0.5),
        pct(&total, 0.99)
    );
    if until.is_none() {
        // Steadier than the percentiles on a shared machine: what each flow cost the server.
        let flows = all.len().max(1) as f64;
        println!(
            "  the server per flow: {:.2} ms of CPU, {:.1} context switches",
            (cost_after.0 - cost_before.0) * 1000.0 / flows,
            cost_after.1.saturating_sub(cost_before.1) as f64 / flows
        );
    }
    // The same calls measured inside the server (request in → response out), from its histogram.
    println!("  inside the server (upper bound of the histogram bucket):");
    for route in [
        "/v1/console/scim-token/reveal",
        "/v1/mobile/challenges",
        "/v1/console/challenges/{id}/events",
        "/v1/mobile/challenges/{id}/decision",
        "/v1/console/challenges/{id}/release",
    ] {
        let (b, a) = (
            before.get(route).cloned().unwrap_or_default(),
            after.get(route).cloned().unwrap_or_default(),
        );
        println!(
            "    {route:<38} p50 <= {:>6.2} ms   p99 <= {:>6.2} ms",
            bucket_pct(&b, &a, 0.5),
            bucket_pct(&b, &a, 0.99)
        );
    }
}

async fn round_trips(server: &TestServer) {
    let n = env_or("ASSENT_BENCH_ADMINS", 100);
    let rounds = env_or("ASSENT_BENCH_ROUNDS", 10);
    let admins = setup_admins(server, n).await;
    // One warm-up round, not counted.
    futures_util::future::join_all(admins.iter().map(|a| a.round())).await;
    phase(server, &admins, rounds, false, None).await;
    phase(server, &admins, rounds, true, None).await;
    under_provisioning(server, &admins).await;
}

/// The paced round trips again while 16 SCIM clients create `ASSENT_BENCH_SCIM_USERS` users
/// (Entra ID's initial cycle is thousands of POSTs a minute on the writer step-ups also need).
async fn under_provisioning(server: &TestServer, admins: &[Admin]) {
    let users = env_or("ASSENT_BENCH_SCIM_USERS", 100_000);
    let token = admins[0].round().await.1;
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (next, done, url, token) = (next.clone(), done.clone(), server.base.clone(), token.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= users {
                        break;
                    }
                    let body = json!({
                        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                        "userName": format!("load{i}@bench.test"),
                        "externalId": format!("ext-{i}"),
                        "active": true,
                        "displayName": format!("Load User {i}"),
                        "name": {"givenName": "Load", "familyName": format!("User {i}")},
                        "emails": [{"primary": true, "type": "work", "value": format!("load{i}@bench.test")}],
                    });
                    let sent = Instant::now();
                    let res = http
                        .post(format!("{url}/v1/scim/v2/Users"))
                        .bearer_auth(&token)
                        .header("content-type", "application/scim+json")
                        .body(body.to_string())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status().as_u16(), 201, "{}", res.text().await.unwrap_or_default());
                    latencies.push(sent.elapsed());
                }
                done.store(true, Ordering::Relaxed);
                latencies
            })
        })
        .collect();
    phase(server, admins, 0, true, Some(&done)).await;
    let mut latencies: Vec<Duration> = Vec::new();
    for client in clients {
        latencies.extend(client.await.unwrap());
    }
    let wall = started.elapsed();
    latencies.sort();
    println!(
        "  the load: {} SCIM users created by 16 clients in {:.1} s ({:.0} users/s), POST p50 {:.2} ms p99 {:.2} ms",
        latencies.len(),
        wall.as_secs_f64(),
        latencies.len() as f64 / wall.as_secs_f64(),
        pct(&latencies, 0.5),
        pct(&latencies, 0.99)
    );
}

async fn idle_streams(server: &TestServer) {
    let streams = env_or("ASSENT_BENCH_STREAMS", 10_000);
    let admins = setup_admins_single(server).await;
    let (created, _) = admins
        .timed(
            admins
                .http
                .post(format!("{}/v1/console/scim-token/reveal", admins.url))
                .header("cookie", &admins.cookie),
        )
        .await;
    let id = created["challenge_id"].as_str().unwrap().to_owned();
    let pid = server.server_pid();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(pid);
    let addr = server.base.trim_start_matches("http://").to_owned();
    let request = format!("GET /v1/console/challenges/{id}/events HTTP/1.1\r\nHost: {addr}\r\nCookie: {}\r\nAccept: text/event-stream\r\n\r\n", admins.cookie);
    let mut held = Vec::with_capacity(streams);
    for chunk in (0..streams).collect::<Vec<_>>().chunks(500) {
        let opened = futures_util::future::join_all(chunk.iter().map(|_| {
            let addr = addr.clone();
            let request = request.clone();
            async move {
                let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
                s.write_all(request.as_bytes()).await.unwrap();
                let mut buf = vec![0u8; 1024];
                let mut got = String::new();
                while !got.contains("pending") {
                    let n = s.read(&mut buf).await.unwrap();
                    assert!(n > 0, "stream closed early");
                    got.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
                s
            }
        }))
        .await;
        held.extend(opened);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / streams as f64;
    println!("idle SSE streams: {streams} open; server RSS {before} KiB → {after} KiB; {:.1} KiB per stream", per / 1024.0);
    drop(held);
}

async fn setup_admins_single(server: &TestServer) -> Admin {
    let created = server.cli(&[
        "member",
        "add",
        "--workspace",
        "bench",
        "--email",
        "streams@bench.test",
        "--role",
        "admin",
    ]);
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{}/v1/console/session", server.base))
        .json(&json!({"workspace": "bench", "email": "streams@bench.test", "password": created["password"]}))
        .send()
        .await
        .unwrap();
    let cookie = res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let offer: Value = http
        .post(format!("{}/v1/console/devices/enrollments", server.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let signer = DeviceSigner::generate();
    let enrolled: Value = http
        .post(format!("{}/v1/mobile/devices", server.base))
        .json(&json!({"enrollment_code": offer["code"], "name": "bench", "platform": "fcm", "public_key": signer.public_key().to_jwk()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Admin {
        http,
        cookie,
        url: server.base.clone(),
        signer,
        device_id: enrolled["device_id"].as_str().unwrap().into(),
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = start().await;
        round_trips(&server).await;
        idle_streams(&server).await;
    });
}
