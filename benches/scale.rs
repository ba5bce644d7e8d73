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

#[path = "../tests/it/support/measure.rs"]
mod measure;
use measure::*;

use assent::domain::device::{DecisionClaims, DeviceSigner};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_assent");

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Deployment {
    redis: Process,
    redis_url: String,
    instances: Vec<(Process, String)>,
    public_url: String,
    db: String,
    master_key: String,
    _dir: tempfile::TempDir,
}

async fn wait_for(url: &str) {
    let http = reqwest::Client::new();
    for _ in 0..400 {
        if let Ok(resp) = http.get(url).send().await {
            if resp.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} did not come up");
}

async fn start(instances: usize) -> Deployment {
    let dir = tempfile::tempdir().unwrap();
    let redis_port = free_port();
    let redis = Process(
        Command::new("redis-server")
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server (apt-get install redis-server)"),
    );
    let redis_url = format!("redis://127.0.0.1:{redis_port}");
    let ports: Vec<u16> = (0..instances).map(|_| free_port()).collect();
    let public_url = format!("http://127.0.0.1:{}", ports[0]);
    let db = format!("sqlite://{}/bench.db", dir.path().display());
    let master_key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    let mut deployment = Deployment {
        redis,
        redis_url,
        instances: Vec::new(),
        public_url,
        db,
        master_key,
        _dir: dir,
    };
    for port in ports {
        let url = format!("http://127.0.0.1:{port}");
        let child = deployment
            .command("serve")
            .env("ASSENT_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start assent serve");
        wait_for(&format!("{url}/readyz")).await;
        deployment.instances.push((Process(child), url));
    }
    deployment
}

impl Deployment {
    fn command(&self, sub: &str) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg(sub)
            .env("ASSENT_PUBLIC_URL", &self.public_url)
            .env("ASSENT_DATABASE_URL", &self.db)
            // A benchmark is one person asking again and again: no hourly limit.
            .env("ASSENT_CHALLENGES_PER_HOUR", "0")
            .env("ASSENT_REDIS_URL", &self.redis_url)
            .env("ASSENT_MASTER_KEY", &self.master_key)
            .env("ASSENT_CHALLENGE_TTL_SECS", "900")
            .env("ASSENT_LOG", "warn");
        cmd
    }

    fn cli(&self, args: &[&str]) -> Value {
        let out = self.command(args[0]).args(&args[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn url(&self, i: usize) -> &str {
        &self.instances[i].1
    }

    /// Sum over the instances of the Redis round-trip counters, by operation.
    async fn round_trips(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (_, url) in &self.instances {
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
    async fn new(d: &Deployment, email: &str, browser: usize, phone: usize) -> Admin {
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
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(4)
            .build()
            .unwrap();
        let res = http
            .post(format!("{}/v1/console/session", d.url(browser)))
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
            http.post(format!("{}/v1/console/devices/enrollments", d.url(browser)))
                .header("cookie", &cookie),
        )
        .await;
        let signer = DeviceSigner::generate();
        let (enrolled, _) = timed(
            http.post(format!("{}/v1/mobile/devices", d.url(phone)))
                .json(
                    &json!({"enrollment_code": offer["code"], "name": "bench", "platform": "fcm",
                    "public_key": signer.public_key().to_jwk()}),
                ),
        )
        .await;
        Admin {
            http,
            cookie,
            browser: d.url(browser).to_owned(),
            phone: d.url(phone).to_owned(),
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

async fn across_instances(d: &Deployment) {
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
    let before = d.round_trips().await;
    let started = Instant::now();
    let mut all: Vec<[Duration; 2]> = Vec::new();
    for _ in 0..rounds {
        all.extend(futures_util::future::join_all(admins.iter().map(|a| a.round())).await);
    }
    let wall = started.elapsed();
    let after = d.round_trips().await;
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

async fn idle_waiters(d: &Deployment) {
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
    let pids: Vec<u32> = d.instances.iter().map(|(p, _)| p.0.id()).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();
    let redis_before = rss_kib(d.redis.0.id());
    let mut held = Vec::with_capacity(streams);
    for chunk in (0..streams).collect::<Vec<_>>().chunks(500) {
        let opened = futures_util::future::join_all(chunk.iter().map(|i| {
            // Spread evenly: the load balancer's round robin.
            let addr = d.url(i % d.instances.len()).trim_start_matches("http://").to_owned();
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
        rss_kib(d.redis.0.id())
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
