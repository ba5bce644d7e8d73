//! Scale-out benchmark (not a test): one `redis-server` and two real `assent serve` processes
//! (release build) on one SQLite file, as two instances behind a load balancer. Prints figures for
//! the README:
//!
//! 1. Decision-to-browser latency across instances: N concurrent admins (default 100) each run
//!    reveal → SSE open → phone polls → phone decides → browser sees `approved` → release, with the
//!    browser on one instance and the phone (and the release) on the other, for several rounds.
//!    "decision → browser" runs from sending the decision to the `approved` event on the other
//!    instance's stream; it includes the decision call itself, which is also shown alone.
//! 2. Redis round trips per step-up flow, from the instances' own `assent_redis_round_trips_total`
//!    counters (one per command or script sent), by operation.
//! 3. 10,000 idle SSE waiters spread over the two instances: resident memory each instance adds
//!    per waiter, then one decision and the time until every waiter has seen it.
//!
//! `ASSENT_BENCH_ADMINS`, `ASSENT_BENCH_ROUNDS` and `ASSENT_BENCH_STREAMS` change the sizes.
//! 10,000 streams need more than 10,000 open files (`ulimit -n`; 20,000 here). Needs
//! `redis-server` on the PATH (scripts/test installs it).

#[path = "../tests/it/support/mod.rs"]
#[allow(unused_imports)]
mod support;
use support::measure::*;
use support::redis::Cluster;

use assent::domain::device::{DecisionClaims, DeviceSigner};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Two instances on one database and one Redis, through the test support's `Cluster`.
async fn start(instances: usize) -> Cluster {
    Cluster::start_with(
        instances,
        900,
        &[
            // A benchmark is one person asking again and again: no hourly limit.
            ("ASSENT_CHALLENGES_PER_HOUR", "0"),
            // 10,000 idle streams of one session (step 3): past the defaults' caps on purpose.
            ("ASSENT_MAX_CONNECTIONS", "30000"),
            ("ASSENT_MAX_SSE_STREAMS", "30000"),
            ("ASSENT_MAX_SSE_PER_SESSION", "30000"),
            ("ASSENT_LOG", "warn"),
        ],
    )
    .await
}

/// Sum over the instances of the Redis round-trip counters, by operation.
async fn round_trips(d: &Cluster) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for instance in &d.instances {
        let url = &instance.base;
        let text = reqwest::get(format!("{url}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for line in text
            .lines()
            .filter(|l| l.starts_with("assent_redis_round_trips_total{"))
        {
            let op = line
                .split("op=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or_default()
                .to_owned();
            let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            *out.entry(op).or_default() += n;
        }
    }
    out
}

/// An admin whose browser is on one instance and whose phone is on the other.
struct Admin {
    http: reqwest::Client,
    cookie: String,
    browser: String,
    phone: String,
    audience: String,
    signer: DeviceSigner,
    device_id: String,
}

async fn timed(req: reqwest::RequestBuilder) -> (Value, Duration) {
    let started = Instant::now();
    let res = req.send().await.unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    let took = started.elapsed();
    assert!(status.is_success(), "{status} {body}");
    (body, took)
}

impl Admin {
    async fn new(d: &Cluster, email: &str, browser: usize, phone: usize) -> Admin {
        let created = d.cli(&[
            "member",
            "add",
            "--workspace",
            "bench",
            "--email",
            email,
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
            .post(format!("{}/v1/console/session", d.base(browser)))
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
        let (offer, _) = timed(
            http.post(format!(
                "{}/v1/console/devices/enrollments",
                d.base(browser)
            ))
            .header("cookie", &cookie),
        )
        .await;
        let signer = DeviceSigner::generate();
        let (enrolled, _) = timed(
            http.post(format!("{}/v1/mobile/devices", d.base(phone)))
                .json(
                    &json!({"enrollment_code": offer["code"], "name": "bench", "platform": "fcm",
                    "public_key": signer.public_key().to_jwk()}),
                ),
        )
        .await;
        Admin {
            http,
            cookie,
            browser: d.base(browser).to_owned(),
            phone: d.base(phone).to_owned(),
            audience: enrolled["audience"].as_str().unwrap().into(),
            signer,
            device_id: enrolled["device_id"].as_str().unwrap().into(),
        }
    }

    fn device_auth(&self) -> String {
        format!(
            "Device {}",
            self.signer.sign_request(
                &self.device_id,
                &self.audience,
                time::OffsetDateTime::now_utc()
            )
        )
    }

    /// One whole step-up across the two instances: [decision call, decision → browser].
    async fn round(&self) -> [Duration; 2] {
        let (created, _) = timed(
            self.http
                .post(format!("{}/v1/console/scim-token/reveal", self.browser))
                .header("cookie", &self.cookie),
        )
        .await;
        let id = created["challenge_id"].as_str().unwrap().to_owned();
        let number = created["number"].as_u64().unwrap() as u8;

        let mut sse = self
            .http
            .get(format!(
                "{}/v1/console/challenges/{id}/events",
                self.browser
            ))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        let first = sse.chunk().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&first).contains("pending"));

        let (pending, _) = timed(
            self.http
                .get(format!("{}/v1/mobile/challenges", self.phone))
                .header("authorization", self.device_auth()),
        )
        .await;
        let challenge = pending["challenges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id.as_str())
            .unwrap()
            .clone();
        let iat = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = DecisionClaims {
            iss: self.device_id.clone(),
            aud: self.audience.clone(),
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
        let decide = self
            .http
            .post(format!("{}/v1/mobile/challenges/{id}/decision", self.phone))
            .header("authorization", self.device_auth())
            .json(&body);
        let started = Instant::now();
        let ((_, decision), seen) = tokio::join!(timed(decide), async {
            let mut text = String::new();
            while !text.contains("approved") {
                text.push_str(&String::from_utf8_lossy(
                    &sse.chunk().await.unwrap().unwrap(),
                ));
            }
            started.elapsed()
        });

        // The release on the phone's instance, with the browser's session.
        let (released, _) = timed(
            self.http
                .post(format!("{}/v1/console/challenges/{id}/release", self.phone))
                .header("cookie", &self.cookie),
        )
        .await;
        assert!(released["token"]
            .as_str()
            .unwrap()
            .starts_with("assent_scim_"));
        [decision, seen]
    }
}

async fn across_instances(d: &Cluster) {
    let n = env_or("ASSENT_BENCH_ADMINS", 100);
    let rounds = env_or("ASSENT_BENCH_ROUNDS", 10);
    let mut admins = Vec::new();
    for i in 0..n {
        // Half the browsers on each instance, each phone on the other one.
        let (browser, phone) = if i % 2 == 0 { (0, 1) } else { (1, 0) };
        admins.push(Admin::new(d, &format!("admin{i}@bench.test"), browser, phone).await);
    }
    // One warm-up round, not counted.
    futures_util::future::join_all(admins.iter().map(|a| a.round())).await;
    let before = round_trips(d).await;
    let started = Instant::now();
    let mut all: Vec<[Duration; 2]> = Vec::new();
    for _ in 0..rounds {
        all.extend(futures_util::future::join_all(admins.iter().map(|a| a.round())).await);
    }
    let wall = started.elapsed();
    let after = round_trips(d).await;
    let flows = all.len();
    println!(
        "across instances: {n} concurrent admins x {rounds} rounds = {flows} flows in {:.2} s ({:.0} flows/s); browser on one instance, phone and release on the other",
        wall.as_secs_f64(),
        flows as f64 / wall.as_secs_f64()
    );
    for (i, name) in ["decision call", "decision → browser"].iter().enumerate() {
        let mut v: Vec<Duration> = all.iter().map(|r| r[i]).collect();
        v.sort();
        println!(
            "  {name:<19} p50 {:>7.2} ms   p99 {:>7.2} ms",
            pct(&v, 0.5),
            pct(&v, 0.99)
        );
    }
    let mut per_flow = 0.0;
    let mut breakdown = Vec::new();
    for (op, n) in &after {
        let delta = n - before.get(op).copied().unwrap_or(0);
        if delta == 0 {
            continue;
        }
        let share = delta as f64 / flows as f64;
        if op == "due" || op == "ping" {
            // The sweepers (once a second per instance) and readiness checks, not the flows.
            breakdown.push(format!("{op} {delta} in all"));
        } else {
            per_flow += share;
            breakdown.push(format!("{op} {share:.2}"));
        }
    }
    println!(
        "  Redis round trips per step-up flow: {per_flow:.2} ({})",
        breakdown.join(", ")
    );
}

async fn idle_waiters(d: &Cluster) {
    let streams = env_or("ASSENT_BENCH_STREAMS", 10_000);
    let admin = Admin::new(d, "streams@bench.test", 0, 1).await;
    let (created, _) = timed(
        admin
            .http
            .post(format!("{}/v1/console/scim-token/reveal", admin.browser))
            .header("cookie", &admin.cookie),
    )
    .await;
    let id = created["challenge_id"].as_str().unwrap().to_owned();
    let pids: Vec<u32> = d.instances.iter().map(|i| i.pid()).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();
    let redis_before = rss_kib(d.redis.pid());
    let mut held = Vec::with_capacity(streams);
    for chunk in (0..streams).collect::<Vec<_>>().chunks(500) {
        let opened = futures_util::future::join_all(chunk.iter().map(|i| {
            // Spread evenly: the load balancer's round robin.
            let addr = d.base(i % d.instances.len()).trim_start_matches("http://").to_owned();
            let request = format!("GET /v1/console/challenges/{id}/events HTTP/1.1\r\nHost: {addr}\r\nCookie: {}\r\nAccept: text/event-stream\r\n\r\n", admin.cookie);
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
    let per_instance = streams as f64 / pids.len() as f64;
    for (i, pid) in pids.iter().enumerate() {
        let after = rss_kib(*pid);
        let per = after.saturating_sub(before[i]) as f64 / per_instance;
        println!(
            "idle SSE waiters: instance {i}: {per_instance:.0} open; RSS {} KiB → {after} KiB; {per:.1} KiB per waiter",
            before[i]
        );
    }
    println!(
        "  Redis RSS {redis_before} KiB → {} KiB with {streams} waiters (no Redis state per waiter)",
        rss_kib(d.redis.pid())
    );

    // One decision on instance 1; every waiter on both instances must hear it.
    let (pending, _) = timed(
        admin
            .http
            .get(format!("{}/v1/mobile/challenges", admin.phone))
            .header("authorization", admin.device_auth()),
    )
    .await;
    let challenge = pending["challenges"][0].clone();
    let iat = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = DecisionClaims {
        iss: admin.device_id.clone(),
        aud: admin.audience.clone(),
        sub: id.clone(),
        nonce: challenge["nonce"].as_str().unwrap().into(),
        action: "scim_token.reveal".into(),
        decision: "approve".into(),
        number: Some(created["number"].as_u64().unwrap() as u8),
        reason: None,
        workspace: None,
        ticket: None,
        iat,
        exp: iat + 60,
    };
    let body = json!({"decision": admin.signer.sign_decision(&admin.device_id, &claims)});
    let started = Instant::now();
    let decide = timed(
        admin
            .http
            .post(format!(
                "{}/v1/mobile/challenges/{id}/decision",
                admin.phone
            ))
            .header("authorization", admin.device_auth())
            .json(&body),
    );
    let heard = futures_util::future::join_all(held.into_iter().map(|mut s| async move {
        let mut buf = vec![0u8; 1024];
        let mut got = String::new();
        while !got.contains("approved") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "stream closed before approved");
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        started.elapsed()
    }));
    let (_, mut heard) = tokio::join!(decide, heard);
    heard.sort();
    println!(
        "  one decision → all {streams} waiters: p50 {:.0} ms, p99 {:.0} ms, last {:.0} ms",
        pct(&heard, 0.5),
        pct(&heard, 0.99),
        heard.last().unwrap().as_secs_f64() * 1000.0
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let d = start(2).await;
        d.cli(&[
            "workspace",
            "create",
            "--slug",
            "bench",
            "--name",
            "Bench",
            "--owner-email",
            "owner@bench.test",
        ]);
        across_instances(&d).await;
        idle_waiters(&d).await;
    });
}
