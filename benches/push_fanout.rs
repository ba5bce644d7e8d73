//! Fans out 10,000 APNs pushes to the local APNs server (TLS, HTTP/2 by ALPN, provider JWT
//! checked) and prints pushes per second; when `npm install @parse/node-apn` works, does the same
//! with Node's node-apn against the same server in the same run and prints both.
//!
//! Fairness: each client runs on one thread (Node runs JavaScript on one) and the server on its
//! own; both keep one HTTP/2 connection open across rounds; the rounds alternate (Rust, Node,
//! Rust, …) so that load from elsewhere on the machine falls on both alike; medians are printed.
//! node-apn uses its own fan-out (one notification compiled once, sent to many tokens), its best
//! case. Besides pushes/s, each round reports the client's CPU time per push (the Rust client's
//! thread; Node's whole process, garbage collector threads included), which other load on the
//! machine disturbs less. The figures are for the README; nothing here asserts a speed.
//!
//! Then it starts the real `assent serve` with APNs configured against the same local server (each
//! push held 200 ms there) and times the reveal call for a person with 1 device and one with 10:
//! the fan-out runs beside the answer, so the two should not differ.
//!
//! `cargo bench --bench push_fanout`; PUSH_FANOUT_N and PUSH_FANOUT_ROUNDS override 10,000 and 5.

#[path = "../tests/it/support/push/mod.rs"]
mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use assent::clock::SystemClock;
use assent::push::{
    install_crypto_provider, ApnsClient, ApnsConfig, ApnsEnvironment, Delivery, Platform, PushKind,
    PushMessage, PushProvider, PushTarget,
};
use futures_util::future::join_all;
use support::apns_server::ApnsServer;
use time::OffsetDateTime;

const WARM_UP: usize = 200;
const CHALLENGE_ID: &str = "01JDQ7Z3M4N5P6Q7R8S9T0VWXY";

fn env_number(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn device_tokens(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{:064x}", 0xbe_u64 << 56 | i as u64))
        .collect()
}

/// One round of a client: pushes per second, and client CPU microseconds per push.
#[derive(Clone, Copy)]
struct Round {
    rate: f64,
    cpu_us_per_push: f64,
}

/// CPU time this thread has run, from the scheduler's own accounting (nanoseconds).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn median(rates: &[f64]) -> f64 {
    let mut sorted = rates.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// Prints a client's medians and rounds; returns the median pushes/s.
fn report(name: &str, rounds: &[Round]) -> f64 {
    let rates: Vec<f64> = rounds.iter().map(|r| r.rate).collect();
    let cpu: Vec<f64> = rounds.iter().map(|r| r.cpu_us_per_push).collect();
    let listed = |values: &[f64], decimals: usize| {
        values
            .iter()
            .map(|v| format!("{v:.decimals$}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("  {name}");
    println!(
        "      {:>8.0} pushes/s (median; rounds {})",
        median(&rates),
        listed(&rates, 0)
    );
    println!(
        "      {:>8.1} us client CPU per push (median; rounds {})",
        median(&cpu),
        listed(&cpu, 1)
    );
    median(&rates)
}

fn main() {
    install_crypto_provider();
    let n = env_number("PUSH_FANOUT_N", 10_000).max(1);
    let rounds = env_number("PUSH_FANOUT_ROUNDS", 5).max(1);

    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("server runtime");
    let server = server_runtime.block_on(ApnsServer::start());
    let files = tempfile::tempdir().expect("temp dir");
    let key_file = files.path().join("AuthKey.p8");
    let ca_file = files.path().join("ca.pem");
    let tokens_file = files.path().join("tokens.json");
    let tokens = device_tokens(n);
    std::fs::write(&key_file, &server.credentials().private_key_pem).expect("key file");
    std::fs::write(&ca_file, server.ca_pem()).expect("CA file");
    std::fs::write(&tokens_file, serde_json::to_string(&tokens).expect("JSON")).expect("tokens");

    println!(
        "push_fanout: {n} APNs pushes per round, {rounds} rounds, local APNs server on {} \
         (TLS, HTTP/2, ES256 provider token checked)",
        server.addr()
    );

    let rust = RustFanout::new(&server, &key_file, &ca_file, &tokens);
    let mut node = match NodeFanout::start(&server, &key_file, &ca_file, &tokens_file, n) {
        Ok(node) => Some(node),
        Err(why) => {
            println!("  @parse/node-apn: not run ({why})");
            None
        }
    };

    let mut rust_rounds = Vec::with_capacity(rounds);
    let mut node_rounds = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        rust_rounds.push(rust.round());
        if let Some(fanout) = node.as_mut() {
            match fanout.round() {
                Ok(round) => node_rounds.push(round),
                Err(why) => {
                    println!("  @parse/node-apn: stopped ({why})");
                    node = None;
                }
            }
        }
    }

    let rust_rate = report("assent ApnsClient (Rust)", &rust_rounds);
    if let Some(fanout) = node {
        let name = format!(
            "@parse/node-apn {} (Node {})",
            fanout.version, fanout.node_version
        );
        let node_rate = report(&name, &node_rounds);
        println!(
            "  ratio assent / node-apn, pushes/s: {:.2}x",
            rust_rate / node_rate
        );
        let cpu = |rounds: &[Round]| {
            median(&rounds.iter().map(|r| r.cpu_us_per_push).collect::<Vec<_>>())
        };
        println!(
            "  ratio node-apn / assent, client CPU per push: {:.2}x",
            cpu(&node_rounds) / cpu(&rust_rounds)
        );
        fanout.quit();
    }
    println!(
        "  the server answered {} requests in all",
        server.received().len()
    );
    server_runtime.block_on(reveal_latency(&server, &key_file, &ca_file));
    drop(server);
    server_runtime.shutdown_timeout(Duration::from_secs(1));
}

struct RustFanout {
    runtime: tokio::runtime::Runtime,
    client: ApnsClient,
    targets: Vec<PushTarget>,
    msg: PushMessage,
}

impl RustFanout {
    fn new(server: &ApnsServer, key_file: &Path, ca_file: &Path, tokens: &[String]) -> Self {
        let vars = HashMap::from([
            ("ASSENT_APNS_KEY_FILE", key_file.display().to_string()),
            ("ASSENT_APNS_KEY_ID", server.credentials().key_id.clone()),
            ("ASSENT_APNS_TEAM_ID", server.credentials().team_id.clone()),
            ("ASSENT_APNS_TOPIC", server.credentials().topic.clone()),
            ("ASSENT_APNS_ENDPOINT", server.endpoint()),
            ("ASSENT_APNS_CA_FILE", ca_file.display().to_string()),
        ]);
        let config = ApnsConfig::from_lookup(|v| vars.get(v).cloned())
            .expect("valid configuration")
            .expect("configured");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("client runtime");
        let client = runtime
            .block_on(async { ApnsClient::new(config, Arc::new(SystemClock)).expect("client") });
        let targets = tokens
            .iter()
            .enumerate()
            .map(|(i, token)| PushTarget {
                device_id: format!("device-{i}"),
                platform: Platform::Apns,
                token: token.clone(),
                apns_environment: Some(ApnsEnvironment::Production),
            })
            .collect();
        let msg = PushMessage {
            kind: PushKind::Challenge,
            challenge_id: CHALLENGE_ID.into(),
            action: "scim_token.reveal".into(),
            workspace_name: "Acme Corp".into(),
            expires_at: OffsetDateTime::now_utc() + time::Duration::minutes(10),
        };
        let fanout = Self {
            runtime,
            client,
            targets,
            msg,
        };
        fanout
            .runtime
            .block_on(fanout.fan_out(&fanout.targets[..WARM_UP.min(fanout.targets.len())]));
        fanout
    }

    /// Every push at once, as the server core fans out a challenge; all must be delivered.
    async fn fan_out(&self, targets: &[PushTarget]) {
        let deliveries = join_all(targets.iter().map(|t| self.client.deliver(t, &self.msg))).await;
        if let Some(failed) = deliveries.iter().find(|d| **d != Delivery::Delivered) {
            panic!("a push was not delivered: {failed:?}");
        }
    }

    /// The current-thread runtime runs every client task on this thread, so its CPU time is
    /// the client's.
    fn round(&self) -> Round {
        let cpu_before = thread_cpu_ns();
        let started = Instant::now();
        self.runtime.block_on(self.fan_out(&self.targets));
        let elapsed = started.elapsed();
        let pushes = self.targets.len() as f64;
        Round {
            rate: pushes / elapsed.as_secs_f64(),
            cpu_us_per_push: (thread_cpu_ns() - cpu_before) as f64 / 1e3 / pushes,
        }
    }
}

/// node-apn in a child process that runs one round per `round` line on its standard input and
/// answers each with a JSON line. The same payload, headers and provider key as the Rust client.
const NODE_SCRIPT: &str = r#"
const fs = require('fs');
const readline = require('readline');
const apn = require('@parse/node-apn');
const [address, port, keyFile, caFile, keyId, teamId, topic, tokensFile, warmUp] =
  process.argv.slice(2);
const tokens = JSON.parse(fs.readFileSync(tokensFile, 'utf8'));
const provider = new apn.Provider({
  token: { key: keyFile, keyId, teamId },
  address,
  port: Number(port),
  ca: [fs.readFileSync(caFile)],
  // Passed on to http2.connect: node's default 10 MB per session is too little for 10,000
  // streams queued at once (they fail with NGHTTP2_INTERNAL_ERROR), so node-apn gets room.
  maxSessionMemory: 256,
});
const expiresAt = new Date(Date.now() + 10 * 60 * 1000);
function notification() {
  const note = new apn.Notification();
  note.topic = topic;
  note.pushType = 'alert';
  note.priority = 10;
  note.expiry = Math.floor(expiresAt.getTime() / 1000);
  note.collapseId = '01JDQ7Z3M4N5P6Q7R8S9T0VWXY';
  note.alert = {
    title: 'Reveal the SCIM token?',
    body: 'Acme Corp: check the number on the console, then approve or deny.',
  };
  note.mutableContent = 1;
  note.payload = {
    kind: 'challenge',
    challenge_id: '01JDQ7Z3M4N5P6Q7R8S9T0VWXY',
    action: 'scim_token.reveal',
    workspace: 'Acme Corp',
    expires_at: expiresAt.toISOString().replace(/\.\d{3}Z$/, 'Z'),
  };
  return note;
}
async function fanOut(list) {
  const result = await provider.send(notification(), list);
  if (result.failed.length > 0) {
    throw new Error('node-apn failures: ' + JSON.stringify(result.failed.slice(0, 2)));
  }
}
function fail(e) { console.error(e.stack || String(e)); process.exit(1); }
(async () => {
  await fanOut(tokens.slice(0, Number(warmUp)));
  const version = require('@parse/node-apn/package.json').version;
  console.log(JSON.stringify({ ready: true, version, node: process.version }));
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (line !== 'round') break;
    const cpuBefore = process.cpuUsage();
    const started = process.hrtime.bigint();
    await fanOut(tokens);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const cpu = process.cpuUsage(cpuBefore);
    console.log(JSON.stringify({
      rate: tokens.length / seconds,
      cpu_us_per_push: (cpu.user + cpu.system) / tokens.length,
    }));
  }
  // The open stdin and node-apn's heartbeat would keep the process alive.
  provider.shutdown();
  process.exit(0);
})().catch(fail);
"#;

struct NodeFanout {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    version: String,
    node_version: String,
    _dir: tempfile::TempDir,
}

impl NodeFanout {
    fn start(
        server: &ApnsServer,
        key_file: &Path,
        ca_file: &Path,
        tokens_file: &Path,
        n: usize,
    ) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("package.json"), r#"{"private":true}"#)
            .map_err(|e| e.to_string())?;
        let install = Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--silent",
                "@parse/node-apn@8",
            ])
            .current_dir(dir.path())
            .output()
            .map_err(|e| format!("npm: {e}"))?;
        if !install.status.success() {
            let stderr = String::from_utf8_lossy(&install.stderr);
            return Err(format!(
                "npm install failed: {}",
                stderr.lines().last().unwrap_or_default()
            ));
        }
        let script = dir.path().join("fanout.js");
        std::fs::write(&script, NODE_SCRIPT).map_err(|e| e.to_string())?;
        let mut child = Command::new("node")
            .arg(&script)
            .arg("127.0.0.1")
            .arg(server.addr().port().to_string())
            .arg(key_file)
            .arg(ca_file)
            .arg(&server.credentials().key_id)
            .arg(&server.credentials().team_id)
            .arg(&server.credentials().topic)
            .arg(tokens_file)
            .arg(WARM_UP.min(n).to_string())
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("node: {e}"))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut fanout = Self {
            child,
            stdin,
            stdout,
            version: String::new(),
            node_version: String::new(),
            _dir: dir,
        };
        let ready = fanout.read_line()?;
        fanout.version = ready["version"].as_str().unwrap_or("?").to_owned();
        fanout.node_version = ready["node"].as_str().unwrap_or("?").to_owned();
        Ok(fanout)
    }

    fn read_line(&mut self) -> Result<serde_json::Value, String> {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if line.is_empty() {
            return Err("node exited (its error is above)".into());
        }
        serde_json::from_str(&line).map_err(|e| format!("unreadable node output ({e}): {line}"))
    }

    fn round(&mut self) -> Result<Round, String> {
        writeln!(self.stdin, "round").map_err(|e| e.to_string())?;
        let line = self.read_line()?;
        match (line["rate"].as_f64(), line["cpu_us_per_push"].as_f64()) {
            (Some(rate), Some(cpu_us_per_push)) => Ok(Round {
                rate,
                cpu_us_per_push,
            }),
            _ => Err(format!("node printed no round: {line}")),
        }
    }

    fn quit(mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}

/// Reveal latency with push configured, for 1 and for 10 devices.
async fn reveal_latency(apns: &ApnsServer, key_file: &Path, ca_file: &Path) {
    use serde_json::{json, Value};
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let db = format!("sqlite://{}/assent.db", dir.path().display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_assent"))
        .arg("serve")
        .env("ASSENT_LISTEN", format!("127.0.0.1:{port}"))
        .env("ASSENT_DATABASE_URL", &db)
        // A benchmark is one person asking again and again: no hourly limit.
        .env("ASSENT_CHALLENGES_PER_HOUR", "0")
        .env("ASSENT_LOG", "warn")
        .env("ASSENT_APNS_KEY_FILE", key_file)
        .env("ASSENT_APNS_KEY_ID", &apns.credentials().key_id)
        .env("ASSENT_APNS_TEAM_ID", &apns.credentials().team_id)
        .env("ASSENT_APNS_TOPIC", &apns.credentials().topic)
        .env("ASSENT_APNS_ENDPOINT", apns.endpoint())
        .env("ASSENT_APNS_CA_FILE", ca_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start assent serve");
    let http = reqwest::Client::new();
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cli = |args: &[&str]| -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_assent"))
            .args(args)
            .env("ASSENT_DATABASE_URL", &db)
            // A benchmark is one person asking again and again: no hourly limit.
            .env("ASSENT_CHALLENGES_PER_HOUR", "0")
            .env("ASSENT_LOG", "warn")
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).expect("CLI JSON")
    };
    cli(&[
        "workspace",
        "create",
        "--slug",
        "bench",
        "--name",
        "Bench",
        "--owner-email",
        "owner@bench.test",
    ]);
    let mut results = Vec::new();
    for devices in [1usize, 10] {
        let email = format!("admin{devices}@bench.test");
        let created = cli(&[
            "member",
            "add",
            "--workspace",
            "bench",
            "--email",
            &email,
            "--role",
            "admin",
        ]);
        let res = http
            .post(format!("{base}/v1/console/session"))
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
        for d in 0..devices {
            let token = format!("{:064x}", 0xbe7c4_u64 * 1_000 + (devices * 100 + d) as u64);
            apns.always(
                &token,
                support::apns_server::ApnsReply::Delay(Duration::from_millis(200)),
            );
            let offer: Value = http
                .post(format!("{base}/v1/console/devices/enrollments"))
                .header("cookie", &cookie)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let signer = assent::domain::device::DeviceSigner::generate();
            http.post(format!("{base}/v1/mobile/devices"))
                .json(&json!({"enrollment_code": offer["code"], "name": "bench", "platform": "apns", "push_token": token,
                              "public_key": signer.public_key().to_jwk()}))
                .send()
                .await
                .unwrap();
        }
        let mut took = Vec::new();
        for i in 0..300 {
            let started = Instant::now();
            let answer: Value = http
                .post(format!("{base}/v1/console/scim-token/reveal"))
                .header("cookie", &cookie)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if i >= 20 {
                took.push(started.elapsed());
            }
            assert_eq!(answer["notified_devices"], devices, "{answer}");
        }
        took.sort();
        let at =
            |p: f64| took[((took.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0;
        results.push((devices, at(0.5), at(0.99)));
    }
    println!("reveal call with push configured (each push held 200 ms by the APNs server), 280 calls each:");
    for (devices, p50, p99) in &results {
        println!("  {devices:>2} device(s): p50 {p50:.2} ms   p99 {p99:.2} ms");
    }
    println!(
        "  difference of the medians: {:.2} ms",
        results[1].1 - results[0].1
    );
    let _ = child.kill();
    let _ = child.wait();
}
