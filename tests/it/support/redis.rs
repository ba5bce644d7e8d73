//! Scale-out helpers: a real `redis-server` on a free loopback port, and a cluster of real
//! `assent serve` processes that share one database and that Redis, as instances behind a load
//! balancer do (one `ASSENT_PUBLIC_URL`, one master key). A console and a phone that can talk to
//! any instance of the cluster.
//!
//! Like `server.rs`, every process runs under a small `sh` wrapper holding our end of a pipe on
//! its stdin, so it stops when its handle is dropped or the test process dies.

use std::{
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::STANDARD, Engine};
use p256::ecdsa::SigningKey;
use rand::{rngs::OsRng, RngCore};
use reqwest::{Client, Method, RequestBuilder, Response};
use serde_json::{json, Value};

use super::browser::Sse;
use super::phone::{jwk_of, random_id, sign_jws};
use super::postgres::{self, TestDatabase};
use super::server::{unique, BIN};
use super::{json_body, unix_now, WAIT};

pub use super::measure::free_port;

/// A process under the lifeline wrapper; its own pid is written to `pid_file`.
struct Wrapped {
    wrapper: Child,
    lifeline: Option<ChildStdin>,
    pid_file: PathBuf,
}

const WRAPPER: &str = r#"
pidfile="$1"; log="$2"; shift 2
"$@" >>"$log" 2>&1 &
pid=$!
echo "$pid" >"$pidfile"
read -r _ignored
kill -TERM "$pid" 2>/dev/null
wait "$pid"
"#;

impl Wrapped {
    fn spawn(program: &[&str], env: &[(String, String)], pid_file: PathBuf, log: &Path) -> Self {
        let _ = std::fs::remove_file(&pid_file);
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(WRAPPER).arg("sh").arg(&pid_file).arg(log);
        cmd.args(program);
        for var in [
            "ASSENT_REDIS_URL",
            "ASSENT_MASTER_KEY",
            "ASSENT_MASTER_KEY_FILE",
            "ASSENT_CONFIG",
        ] {
            cmd.env_remove(var);
        }
        for (name, value) in env {
            cmd.env(name, value);
        }
        let mut wrapper = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program:?}: {e}"));
        let lifeline = wrapper.stdin.take();
        Wrapped {
            wrapper,
            lifeline,
            pid_file,
        }
    }

    fn pid(&self) -> u32 {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(pid) = std::fs::read_to_string(&self.pid_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                return pid;
            }
            assert!(Instant::now() < deadline, "no pid in {:?}", self.pid_file);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL: the process gets no chance to clean up, as when a machine dies.
    fn kill_abruptly(&self) {
        let pid = self.pid();
        let status = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -KILL {pid}");
        // Gone once /proc no longer shows it running (a zombie until the wrapper reaps it).
        let deadline = Instant::now() + WAIT;
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "))
        {
            assert!(Instant::now() < deadline, "pid {pid} survived SIGKILL");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Closes the lifeline and waits (10 s at most) for the wrapper, hence the process, to exit.
    fn stop(&mut self) -> bool {
        drop(self.lifeline.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.wrapper.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Wrapped {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private `redis-server` (no persistence unless asked: `save` writes a snapshot that the next
/// start on the same directory loads, as a Redis with AOF or RDB would keep its data).
pub struct RedisServer {
    pub port: u16,
    pub url: String,
    pub dir: tempfile::TempDir,
    process: Option<Wrapped>,
}

impl RedisServer {
    pub fn pid(&self) -> u32 {
        self.process.as_ref().expect("redis is running").pid()
    }

    pub async fn start() -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("assent-redis-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let mut redis = RedisServer {
            port,
            url: format!("redis://127.0.0.1:{port}"),
            dir,
            process: None,
        };
        redis.spawn().await;
        redis
    }

    async fn spawn(&mut self) {
        let dir = self.dir.path().display().to_string();
        let program = [
            "redis-server",
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir,
        ]
        .map(String::from);
        let program: Vec<&str> = program.iter().map(String::as_str).collect();
        self.process = Some(Wrapped::spawn(
            &program,
            &[],
            self.dir.path().join("redis.pid"),
            &self.dir.path().join("redis.log"),
        ));
        let deadline = Instant::now() + WAIT;
        while self.ping().await.is_err() {
            if Instant::now() > deadline {
                panic!(
                    "redis-server on {} not ready (is it installed? scripts/test installs it); log:\n{}",
                    self.port,
                    std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        redis::Client::open(self.url.as_str())?
            .get_multiplexed_async_connection()
            .await
    }

    async fn ping(&self) -> redis::RedisResult<()> {
        let mut conn = self.connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(())
    }

    /// Runs one command and returns its answer.
    pub async fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut conn = self.connection().await.expect("connect to redis");
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// Writes a snapshot that the next start loads.
    pub async fn save(&self) {
        let _: String = self.query(&["SAVE"]).await;
    }

    /// SIGKILL, as when Redis's machine dies: clients see their connections drop.
    pub fn kill(&mut self) {
        let mut process = self.process.take().expect("redis is running");
        process.kill_abruptly();
        process.stop();
    }

    /// Starts Redis again on the same port and directory.
    pub async fn start_again(&mut self) {
        assert!(self.process.is_none(), "redis is still running");
        self.spawn().await;
    }
}

/// One `assent serve` of the cluster.
pub struct Instance {
    /// Where the tests connect to this instance: `http://127.0.0.1:<port>`.
    pub base: String,
    pub log_path: PathBuf,
    process: Option<Wrapped>,
}

impl Instance {
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    pub fn pid(&self) -> u32 {
        self.process.as_ref().expect("instance is running").pid()
    }

    /// SIGKILL: no graceful shutdown, open streams are cut.
    pub fn kill(&mut self) {
        let mut process = self.process.take().expect("instance is running");
        process.kill_abruptly();
        process.stop();
    }
}

/// Several instances on one database and one Redis.
pub struct Cluster {
    pub redis: RedisServer,
    pub instances: Vec<Instance>,
    /// `ASSENT_PUBLIC_URL` of every instance (the load balancer's origin in a deployment).
    pub public_url: String,
    pub db_url: String,
    postgres: Option<TestDatabase>,
    master_key: String,
    challenge_ttl_secs: u64,
    /// Variables set last on every instance and the CLI (a benchmark's limits and log level).
    extra_env: Vec<(String, String)>,
    pub dir: tempfile::TempDir,
}

/// A database for the cluster: a fresh Postgres database of its own when `ASSENT_TEST_POSTGRES_URL`
/// names a cluster (`postgres.rs`), otherwise a SQLite file, which two processes on one machine
/// share safely (WAL mode and a busy timeout).
async fn fresh_database(dir: &Path) -> (String, Option<TestDatabase>) {
    match postgres::selected_cluster() {
        Some(cluster) => {
            let db = postgres::create_database(&cluster).await;
            (db.url.clone(), Some(db))
        }
        None => (
            format!("sqlite://{}", dir.join("assent.db").display()),
            None,
        ),
    }
}

impl Cluster {
    pub async fn start(instances: usize, challenge_ttl_secs: u64) -> Cluster {
        Self::start_with(instances, challenge_ttl_secs, &[]).await
    }

    /// `start`, with these variables set last on every instance and the CLI.
    pub async fn start_with(
        instances: usize,
        challenge_ttl_secs: u64,
        extra_env: &[(&str, &str)],
    ) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("assent-scale-")
            .tempdir()
            .expect("tempdir");
        let redis = RedisServer::start().await;
        let ports: Vec<u16> = (0..instances).map(|_| free_port()).collect();
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        let (db_url, postgres) = fresh_database(dir.path()).await;
        let mut cluster = Cluster {
            redis,
            instances: Vec::new(),
            public_url: format!("http://127.0.0.1:{}", ports[0]),
            db_url,
            postgres,
            master_key: STANDARD.encode(key),
            challenge_ttl_secs,
            extra_env: extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            dir,
        };
        // One after the other: the first applies the migrations.
        for (i, port) in ports.into_iter().enumerate() {
            let base = format!("http://127.0.0.1:{port}");
            let log_path = cluster.dir.path().join(format!("instance-{i}.log"));
            let instance = Instance {
                process: Some(cluster.spawn(&base, &log_path, i)),
                base,
                log_path,
            };
            cluster.wait_ready(&instance).await;
            cluster.instances.push(instance);
        }
        cluster
    }

    fn env(&self, base: &str) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            (
                "ASSENT_LISTEN",
                base.trim_start_matches("http://").to_string(),
            ),
            ("ASSENT_PUBLIC_URL", self.public_url.clone()),
            ("ASSENT_DATABASE_URL", self.db_url.clone()),
            ("ASSENT_REDIS_URL", self.redis.url.clone()),
            ("ASSENT_MASTER_KEY", self.master_key.clone()),
            (
                "ASSENT_CHALLENGE_TTL_SECS",
                self.challenge_ttl_secs.to_string(),
            ),
            ("ASSENT_LOG", "info,assent=debug".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        env.extend(self.extra_env.iter().cloned());
        env
    }

    fn spawn(&self, base: &str, log: &Path, i: usize) -> Wrapped {
        Wrapped::spawn(
            &[BIN, "serve"],
            &self.env(base),
            self.dir.path().join(format!("instance-{i}.pid")),
            log,
        )
    }

    async fn wait_ready(&self, instance: &Instance) {
        let client = Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(resp) = client.get(format!("{}/readyz", instance.base)).send().await {
                if resp.status().as_u16() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "instance {} not ready within 20 s; log:\n{}",
                instance.base,
                instance.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn base(&self, i: usize) -> &str {
        &self.instances[i].base
    }

    /// Runs the CLI against the cluster's database; asserts success and returns its JSON.
    pub fn cli(&self, args: &[&str]) -> Value {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        for var in [
            "ASSENT_REDIS_URL",
            "ASSENT_MASTER_KEY_FILE",
            "ASSENT_CONFIG",
        ] {
            cmd.env_remove(var);
        }
        for (name, value) in self.env(&self.public_url) {
            cmd.env(name, value);
        }
        if !self.extra_env.iter().any(|(k, _)| k == "ASSENT_LOG") {
            cmd.env("ASSENT_LOG", "warn");
        }
        let out = cmd.output().expect("run the assent CLI");
        assert!(
            out.status.success(),
            "assent {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("the CLI prints one JSON object")
    }

    /// A new workspace; returns (slug, owner e-mail, owner password).
    pub fn create_workspace(&self) -> (String, String, String) {
        let slug = unique("scale");
        let email = format!("owner@{slug}.example.com");
        let out = self.cli(&[
            "workspace",
            "create",
            "--slug",
            &slug,
            "--name",
            &slug,
            "--owner-email",
            &email,
        ]);
        let password = out["password"].as_str().expect("password").to_string();
        (slug, email, password)
    }

    /// `/readyz`'s status on instance `i`.
    pub async fn readyz(&self, i: usize) -> u16 {
        Client::builder()
            .timeout(WAIT)
            .build()
            .unwrap()
            .get(format!("{}/readyz", self.base(i)))
            .send()
            .await
            .expect("GET /readyz")
            .status()
            .as_u16()
    }

    /// Waits until `/readyz` on instance `i` answers `status`; panics after `within`.
    pub async fn wait_readyz(&self, i: usize, status: u16, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let got = self.readyz(i).await;
            if got == status {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz of instance {i} still {got}, not {status}, after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for instance in &mut self.instances {
            if let Some(mut process) = instance.process.take() {
                process.stop();
            }
        }
        // Best effort, as `server.rs` does: a thrown-away test cluster needs no cleaning.
        if let Some(db) = &self.postgres {
            let _ = Command::new("psql")
                .arg(&db.cluster_url)
                .args(["-qc", &postgres::drop_statement(&db.name)])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A console user's browser: one session cookie, sent to whichever instance it is pointed at.
pub struct Console {
    client: Client,
    pub origin: String,
    pub cookie: String,
}

impl Console {
    pub async fn sign_in(
        cluster: &Cluster,
        i: usize,
        slug: &str,
        email: &str,
        password: &str,
    ) -> Console {
        let client = Client::builder().timeout(WAIT).build().unwrap();
        let resp = client
            .post(format!("{}/v1/console/session", cluster.base(i)))
            .header("Origin", &cluster.public_url)
            .json(&json!({"workspace": slug, "email": email, "password": password}))
            .send()
            .await
            .expect("sign in");
        let cookie = resp
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .expect("a session cookie")
            .to_string();
        json_body(resp, 200).await;
        Console {
            client,
            origin: cluster.public_url.clone(),
            cookie,
        }
    }

    pub fn request(&self, method: Method, base: &str, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{base}{path}"))
            .header("Origin", &self.origin)
            .header("Cookie", &self.cookie)
    }

    pub async fn post(&self, base: &str, path: &str) -> Response {
        self.request(Method::POST, base, path)
            .send()
            .await
            .expect("POST")
    }

    pub async fn enrollment_code(&self, base: &str) -> String {
        let body = json_body(
            self.post(base, "/v1/console/devices/enrollments").await,
            201,
        )
        .await;
        body["code"].as_str().expect("code").to_string()
    }

    /// `POST /v1/console/scim-token/reveal` → (challenge id, number).
    pub async fn reveal(&self, base: &str) -> (String, i64) {
        let body = json_body(self.post(base, "/v1/console/scim-token/reveal").await, 202).await;
        (
            body["challenge_id"]
                .as_str()
                .expect("challenge_id")
                .to_string(),
            body["number"].as_i64().expect("number"),
        )
    }

    pub async fn release(&self, base: &str, id: &str) -> Response {
        self.post(base, &format!("/v1/console/challenges/{id}/release"))
            .await
    }

    pub async fn status(&self, base: &str, id: &str) -> String {
        let resp = self
            .request(Method::GET, base, &format!("/v1/console/challenges/{id}"))
            .send()
            .await
            .expect("GET challenge");
        json_body(resp, 200).await["status"]
            .as_str()
            .expect("status")
            .to_string()
    }

    /// The raw response of the challenge's event stream (no overall timeout: it may wait long).
    pub async fn events_response(&self, base: &str, id: &str) -> Response {
        self.request(
            Method::GET,
            base,
            &format!("/v1/console/challenges/{id}/events"),
        )
        .header("Accept", "text/event-stream")
        .timeout(Duration::from_secs(3600))
        .send()
        .await
        .expect("GET events")
    }

    pub async fn events(&self, base: &str, id: &str) -> Sse {
        let resp = self.events_response(base, id).await;
        assert_eq!(resp.status().as_u16(), 200, "events of {id} on {base}");
        Sse::new(resp)
    }
}

/// A companion app with its own P-256 key, enrolled once, calling any instance.
pub struct ClusterPhone {
    client: Client,
    key: SigningKey,
    pub device_id: String,
    pub audience: String,
}

impl ClusterPhone {
    pub async fn enroll(base: &str, code: &str) -> ClusterPhone {
        let client = Client::builder().timeout(WAIT).build().unwrap();
        let key = SigningKey::random(&mut OsRng);
        let resp = client
            .post(format!("{base}/v1/mobile/devices"))
            .json(&json!({"enrollment_code": code, "name": "Pixel 8", "platform": "fcm",
                          "push_token": format!("fcm-{}", random_id()), "public_key": jwk_of(&key)}))
            .send()
            .await
            .expect("enroll");
        let body = json_body(resp, 201).await;
        ClusterPhone {
            client,
            key,
            device_id: body["device_id"].as_str().expect("device_id").to_string(),
            audience: body["audience"].as_str().expect("audience").to_string(),
        }
    }

    /// A fresh `Authorization: Device <JWS>` value (a new `jti` each time).
    pub fn auth(&self) -> String {
        let now = unix_now();
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": self.device_id});
        let claims = json!({"iss": self.device_id, "aud": self.audience, "iat": now,
                            "exp": now + 60, "jti": random_id()});
        format!("Device {}", sign_jws(&self.key, &header, &claims))
    }

    pub async fn challenges_with(&self, base: &str, authorization: &str) -> Response {
        self.client
            .get(format!("{base}/v1/mobile/challenges"))
            .header("Authorization", authorization)
            .send()
            .await
            .expect("GET challenges")
    }

    /// The challenge as listed to the phone by instance `base`.
    pub async fn pending(&self, base: &str, id: &str) -> Value {
        let body = json_body(self.challenges_with(base, &self.auth()).await, 200).await;
        body["challenges"]
            .as_array()
            .expect("challenges")
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("challenge {id} not pending on {base}: {body}"))
            .clone()
    }

    /// A signed decision for `challenge` (as listed to the phone).
    pub fn decision(&self, challenge: &Value, decision: &str, number: i64) -> String {
        let now = unix_now();
        let header = json!({"alg": "ES256", "typ": "assent-decision+jwt", "kid": self.device_id});
        let claims = json!({"iss": self.device_id, "aud": self.audience, "sub": challenge["id"],
                            "nonce": challenge["nonce"], "action": challenge["action"],
                            "decision": decision, "number": number, "iat": now, "exp": now + 60});
        sign_jws(&self.key, &header, &claims)
    }

    pub async fn send_decision(&self, base: &str, id: &str, jws: &str) -> Response {
        self.client
            .post(format!("{base}/v1/mobile/challenges/{id}/decision"))
            .header("Authorization", self.auth())
            .json(&json!({"decision": jws}))
            .send()
            .await
            .expect("POST decision")
    }
}
