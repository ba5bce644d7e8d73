//! Starts the real `assent serve` on a free port with a fresh database, and runs the CLI against
//! the same database. The database is a SQLite file in the server's directory, or, when
//! `ASSENT_TEST_POSTGRES_URL` names a Postgres cluster, a database of its own there (`postgres.rs`):
//! one suite, either backend.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::sync::OnceCell;

use super::postgres::{self, TestDatabase};

pub const BIN: &str = env!("CARGO_BIN_EXE_assent");

#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub challenge_ttl_secs: u64,
    /// `ASSENT_PUBLIC_URL`; `None` is the server's own `http://127.0.0.1:<port>`.
    pub public_url: Option<String>,
    /// The Postgres cluster to make this server's database on; `None` follows
    /// `ASSENT_TEST_POSTGRES_URL` (Postgres when set, SQLite otherwise).
    pub postgres_cluster: Option<String>,
    /// Variables set last, for the server and the CLI alike (a master key rotation changes the
    /// keys between restarts).
    pub env: Vec<(String, String)>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            challenge_ttl_secs: 120,
            public_url: None,
            postgres_cluster: postgres::selected_cluster(),
            env: Vec::new(),
        }
    }
}

/// Where a test server keeps its data.
#[derive(Clone, Debug)]
pub enum TestDb {
    Sqlite {
        path: PathBuf,
    },
    /// With a master key file of the test's making (mode 0600) in the server's directory: nothing
    /// sits beside a Postgres database for the server to generate one into.
    Postgres {
        database: TestDatabase,
        key_file: PathBuf,
    },
}

/// A running server. The binary runs under a small `sh` wrapper that holds our end of a pipe on its
/// stdin: when the pipe closes (this value is dropped, or the test process ends, even abruptly) the
/// wrapper stops the server and removes its directory. That is what lets a `static` server die with
/// the test binary.
pub struct TestServer {
    /// Where the tests connect: `http://127.0.0.1:<port>`.
    pub base: String,
    /// `ASSENT_PUBLIC_URL`: the origin browsers send and the `aud` of device JWS.
    pub public_url: String,
    pub dir: PathBuf,
    pub db: TestDb,
    pub db_url: String,
    pub log_path: PathBuf,
    pub options: ServerOptions,
    wrapper: Child,
    lifeline: Option<ChildStdin>,
}

static SHARED: OnceCell<TestServer> = OnceCell::const_new();
static UNIQUE: AtomicUsize = AtomicUsize::new(0);

/// The server most tests share (default TTL): one start per test binary.
pub async fn shared() -> &'static TestServer {
    SHARED
        .get_or_init(|| TestServer::start(ServerOptions::default()))
        .await
}

/// A name no other test in this process uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", UNIQUE.fetch_add(1, Ordering::Relaxed))
}

/// A workspace made with `assent workspace create`, and its owner's one-time password.
#[derive(Clone, Debug)]
pub struct Workspace {
    pub slug: String,
    pub name: String,
    pub owner_email: String,
    pub owner_password: String,
}

const WRAPPER: &str = r#"
bin="$1"; dir="$2"; pg_cluster="$3"; pg_drop="$4"
"$bin" serve >>"$dir/server.log" 2>&1 &
pid=$!
read -r _ignored
kill -TERM "$pid" 2>/dev/null
wait "$pid"
if [ -z "$ASSENT_TEST_KEEP" ] && [ ! -e "$dir/restarting" ]; then
    if [ -n "$pg_drop" ]; then
        psql -X -q -w -d "$pg_cluster" -c "$pg_drop" >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
fi
"#;

impl TestServer {
    pub async fn start(options: ServerOptions) -> TestServer {
        let dir = tempfile::Builder::new()
            .prefix("assent-flow-")
            .tempdir()
            .expect("tempdir")
            .keep();
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
            l.local_addr().unwrap().port()
        };
        let base = format!("http://127.0.0.1:{port}");
        let public_url = options.public_url.clone().unwrap_or_else(|| base.clone());
        let (db, db_url) = match &options.postgres_cluster {
            None => {
                let path = dir.join("assent.db");
                let url = format!("sqlite://{}", path.display());
                (TestDb::Sqlite { path }, url)
            }
            Some(cluster) => {
                let database = postgres::create_database(cluster).await;
                let url = database.url.clone();
                let key_file = dir.join("master.key");
                write_new_master_key(&key_file);
                (TestDb::Postgres { database, key_file }, url)
            }
        };
        let log_path = dir.join("server.log");
        let (wrapper, lifeline) = spawn_wrapper(&dir, &base, &public_url, &db, &db_url, &options);
        let server = TestServer {
            base,
            public_url,
            dir,
            db,
            db_url,
            log_path,
            options,
            wrapper,
            lifeline,
        };
        server.wait_ready().await;
        server
    }

    /// Stops the server (SIGTERM, and waits for it to exit) and starts it again on the same
    /// database, port and master key file.
    pub async fn restart(&mut self) {
        self.restart_after(|_| ()).await
    }

    /// `restart`, running `between` while the server is stopped (the CLI works on the database
    /// alone, as an operator's maintenance step would).
    pub async fn restart_after<T>(&mut self, between: impl FnOnce(&Self) -> T) -> T {
        let marker = self.dir.join("restarting");
        std::fs::write(&marker, b"").expect("restart marker");
        assert!(self.stop(), "the server did not stop within 10 s");
        let out = between(self);
        std::fs::remove_file(&marker).expect("remove the restart marker");
        let (wrapper, lifeline) = spawn_wrapper(
            &self.dir,
            &self.base,
            &self.public_url,
            &self.db,
            &self.db_url,
            &self.options,
        );
        self.wrapper = wrapper;
        self.lifeline = lifeline;
        self.wait_ready().await;
        out
    }

    /// Closes the lifeline and waits (10 s at most) for the wrapper, hence the server, to exit.
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

    async fn wait_ready(&self) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(resp) = client.get(format!("{}/healthz", self.base)).send().await {
                if resp.status().as_u16() == 200 {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "server at {} not ready within 20 s; log:\n{}",
                    self.base,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The `assent serve` process's id (the wrapper's child), for measuring its memory.
    pub fn server_pid(&self) -> u32 {
        let wrapper = self.wrapper.id();
        let children = std::fs::read_to_string(format!("/proc/{wrapper}/task/{wrapper}/children"))
            .expect("read the wrapper's children");
        children
            .split_whitespace()
            .next()
            .and_then(|pid| pid.parse().ok())
            .expect("the wrapper runs the server")
    }

    /// Everything the server wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// Asserts that no secret appears in the server's logs.
    pub fn assert_log_free_of(&self, secrets: &[(&str, &str)]) {
        let log = self.log();
        for (what, secret) in secrets {
            assert!(!secret.is_empty(), "empty secret {what}");
            assert!(
                !log.contains(secret),
                "the server log contains the {what} {secret:?}"
            );
        }
    }

    /// Asserts that the database never holds these in plain text: on SQLite the main file, the
    /// provisioning log's file and their WALs byte for byte, on Postgres every column of every
    /// table.
    pub async fn assert_db_free_of(&self, secrets: &[(&str, &str)]) {
        let db_path = match &self.db {
            TestDb::Sqlite { path } => path,
            TestDb::Postgres { database, .. } => {
                return postgres::assert_free_of(database, secrets).await;
            }
        };
        let mut files = vec![db_path.clone()];
        for suffix in [
            "-wal",
            "-journal",
            ".provisioning-log",
            ".provisioning-log-wal",
        ] {
            let mut p = db_path.clone().into_os_string();
            p.push(suffix);
            files.push(PathBuf::from(p));
        }
        let mut read_any = false;
        for file in files {
            let Ok(bytes) = std::fs::read(&file) else {
                continue;
            };
            read_any = true;
            for (what, secret) in secrets {
                assert!(
                    !contains(&bytes, secret.as_bytes()),
                    "{} holds the {what} in plain text",
                    file.display()
                );
            }
        }
        assert!(read_any, "no database file at {}", db_path.display());
    }

    /// Ages the unused enrollment codes of one console user by `secs`, in the database.
    ///
    /// The only white-box step of these tests: a code lives a fixed 10 minutes (no variable sets it)
    /// and the server's clock cannot be moved from outside, so instead of sleeping 10 minutes the
    /// test moves the code's times back, as a clock jump would. Tied to `enrollment_codes`.
    pub async fn age_enrollment_codes(&self, slug: &str, email: &str, secs: i64) {
        let aged = self
            .age_rows_of_person(
                "UPDATE enrollment_codes SET created_at = created_at - $1, \
                 expires_at = expires_at - $1 WHERE used_at IS NULL AND",
                slug,
                email,
                secs,
            )
            .await;
        assert!(aged >= 1, "no enrollment code to age for {email} in {slug}");
    }

    /// Runs `update … WHERE [condition AND]` followed by "this person's rows" (`$2` the workspace
    /// slug, `$3` the e-mail, `$1` the seconds), on whichever database the server runs on.
    async fn age_rows_of_person(&self, update: &str, slug: &str, email: &str, secs: i64) -> u64 {
        use sqlx::Connection;
        let statement = format!(
            "{update} user_id IN (SELECT u.id FROM users u JOIN workspaces w \
             ON w.id = u.workspace_id WHERE w.slug = $2 AND u.email_lower = lower($3))"
        );
        if let TestDb::Postgres { database, .. } = &self.db {
            return postgres::execute_aging(database, &statement, secs, slug, email).await;
        }
        let mut conn = sqlx::SqliteConnection::connect(&self.db_url)
            .await
            .expect("open the test database");
        let done = sqlx::query(&statement)
            .bind(secs)
            .bind(slug)
            .bind(email)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
        conn.close().await.ok();
        done.rows_affected()
    }

    /// Runs SQL on the server's database, behind its back: `sqlite` or `postgres`, whichever it
    /// runs on (one or more statements).
    pub async fn execute_sql(&self, sqlite: &str, postgres: &str) {
        use sqlx::Connection;
        if let TestDb::Postgres { database, .. } = &self.db {
            postgres::execute(database, postgres).await;
            return;
        }
        let mut conn = sqlx::SqliteConnection::connect(&self.db_url)
            .await
            .expect("open the test database");
        sqlx::raw_sql(sqlite)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sqlite}: {e}"));
        conn.close().await.ok();
    }

    /// One number from the server's database (`SELECT COUNT(*) …`), in either dialect.
    pub async fn count_sql(&self, sqlite: &str, postgres: &str) -> i64 {
        use sqlx::Connection;
        if let TestDb::Postgres { database, .. } = &self.db {
            return postgres::count(database, postgres).await;
        }
        let mut conn = sqlx::SqliteConnection::connect(&self.db_url)
            .await
            .expect("open the test database");
        let n: i64 = sqlx::query_scalar(sqlite)
            .fetch_one(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sqlite}: {e}"));
        conn.close().await.ok();
        n
    }

    /// Moves the last authentication of `email`'s sessions `secs` into the past, as if the reauth
    /// window had passed.
    pub async fn age_session_authentication(&self, slug: &str, email: &str, secs: i64) {
        let aged = self
            .age_rows_of_person(
                "UPDATE sessions SET authenticated_at = authenticated_at - $1 WHERE",
                slug,
                email,
                secs,
            )
            .await;
        assert!(aged >= 1, "no session to age for {email} in {slug}");
    }

    /// The CLI as a command, configured like this server (for a caller that runs it itself).
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        apply_env(
            &mut cmd,
            &self.base,
            &self.public_url,
            &self.db,
            &self.db_url,
            &self.options,
        );
        cmd
    }

    /// Runs the CLI against this server's database; asserts success and that stdout is ONE JSON object.
    pub fn cli(&self, args: &[&str]) -> Value {
        let out = self.cli_command(args).output().expect("run the assent CLI");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "assent {args:?} failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
            out.status
        );
        let json: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!("assent {args:?}: stdout is not one JSON object ({e}): {stdout:?}")
        });
        assert!(
            json.is_object(),
            "assent {args:?}: stdout is not an object: {stdout}"
        );
        if let Some(password) = json["password"].as_str() {
            assert!(
                !stderr.contains(password),
                "assent {args:?} logged the password on stderr"
            );
        }
        json
    }

    /// Runs the CLI expecting success and JSON lines on stdout (`audit export`); returns them.
    pub fn cli_lines(&self, args: &[&str]) -> Vec<Value> {
        let out = self.cli_command(args).output().expect("run the assent CLI");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "assent {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("assent {args:?}: not a JSON line ({e}): {line:?}"))
            })
            .collect()
    }

    /// Runs the CLI expecting a failure; returns (stdout, stderr).
    pub fn cli_fails(&self, args: &[&str]) -> (String, String) {
        let out = self.cli_command(args).output().expect("run the assent CLI");
        assert!(
            !out.status.success(),
            "assent {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn create_workspace(&self) -> Workspace {
        let slug = unique("ws");
        let name = format!("Workspace {slug}");
        let owner_email = format!("owner@{slug}.example.com");
        let out = self.cli(&[
            "workspace",
            "create",
            "--slug",
            &slug,
            "--name",
            &name,
            "--owner-email",
            &owner_email,
        ]);
        assert_eq!(out["workspace"], slug.as_str(), "{out}");
        assert_eq!(out["owner_email"], owner_email.as_str(), "{out}");
        let owner_password = out["password"].as_str().expect("password").to_string();
        assert!(
            owner_password.len() >= 12,
            "generated password too short: {} chars",
            owner_password.len()
        );
        Workspace {
            slug,
            name,
            owner_email,
            owner_password,
        }
    }

    /// Adds a console user with `role`; returns (email, password).
    pub fn add_member(&self, ws: &Workspace, role: &str) -> (String, String) {
        let email = format!("{}@{}.example.com", unique(role), ws.slug);
        let out = self.cli(&[
            "member",
            "add",
            "--workspace",
            &ws.slug,
            "--email",
            &email,
            "--role",
            role,
        ]);
        assert_eq!(out["email"], email.as_str(), "{out}");
        let password = out["password"].as_str().expect("password").to_string();
        (email, password)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_wrapper(
    dir: &std::path::Path,
    base: &str,
    public_url: &str,
    db: &TestDb,
    db_url: &str,
    options: &ServerOptions,
) -> (Child, Option<ChildStdin>) {
    let (pg_cluster, pg_drop) = match db {
        TestDb::Sqlite { .. } => (String::new(), String::new()),
        TestDb::Postgres { database, .. } => (
            database.cluster_url.clone(),
            postgres::drop_statement(&database.name),
        ),
    };
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(WRAPPER)
        .arg("sh")
        .arg(BIN)
        .arg(dir)
        .arg(pg_cluster)
        .arg(pg_drop);
    apply_env(&mut cmd, base, public_url, db, db_url, options);
    let mut wrapper = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the server wrapper");
    let lifeline = wrapper.stdin.take();
    (wrapper, lifeline)
}

fn apply_env(
    cmd: &mut Command,
    base: &str,
    public_url: &str,
    db: &TestDb,
    db_url: &str,
    options: &ServerOptions,
) {
    for var in [
        "ASSENT_REDIS_URL",
        "ASSENT_MASTER_KEY",
        "ASSENT_MASTER_KEY_FILE",
        "ASSENT_OLD_MASTER_KEYS",
        "ASSENT_OLD_MASTER_KEYS_FILE",
        "ASSENT_CONFIG",
    ] {
        cmd.env_remove(var);
    }
    if let TestDb::Postgres { key_file, .. } = db {
        cmd.env("ASSENT_MASTER_KEY_FILE", key_file);
    }
    cmd.env("ASSENT_LISTEN", base.trim_start_matches("http://"))
        .env("ASSENT_PUBLIC_URL", public_url)
        .env("ASSENT_DATABASE_URL", db_url)
        .env(
            "ASSENT_CHALLENGE_TTL_SECS",
            options.challenge_ttl_secs.to_string(),
        )
        // As verbose as the server's own code goes, so that the "no secret in a log" checks see
        // every line it could ever write.
        .env("ASSENT_LOG", "info,assent=trace,tower_http=debug");
    for (var, value) in &options.env {
        cmd.env(var, value);
    }
}

/// Writes a new random master key (base64 of 32 bytes) into `path`, readable by its owner only.
pub fn write_new_master_key(path: &Path) {
    use base64::Engine;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key: [u8; 32] = rand::random();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("create the master key file");
    file.write_all(
        base64::engine::general_purpose::STANDARD
            .encode(key)
            .as_bytes(),
    )
    .expect("write the master key file");
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
