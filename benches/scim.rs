//! SCIM benchmark (not a test): the real `assent serve` (release build) and the Python reference
//! server `scim2-server` (PyPI), the same workload against each, in one run, printed side by side.
//!
//! 1. Load users through the API, `POST /Users` with Entra ID's body, 16 at a time: the POST
//!    throughput (an initial Entra cycle of 100,000 users must take under a minute).
//! 2. `wrk -t2 -c16` on `GET /Users?filter=userName eq "…"` with a random loaded userName per
//!    request (Entra's lookup before every create): requests/s, p50 and p99. Assent's users also
//!    carry a custom schema extension of 10 attributes (issue 15: strings, numbers, booleans),
//!    and the same run measures `GET /Users?filter=urn:…:acme:2.0:User:costCenterCode eq "…"`
//!    (the side-table plan of `src/scim/sql.rs`) beside it. scim2-server gets Entra's body alone:
//!    it refuses schemas it does not know.
//! 3. The server's resident memory with every user loaded.
//!
//! Sizes: `ASSENT_BENCH_USERS` (Assent, default 100,000), `ASSENT_BENCH_REF_USERS` (scim2-server,
//! default 10,000: it keeps resources in a Python list and filters by scanning it, so 100,000 take
//! very long to load and to query), `ASSENT_BENCH_SECS` (each wrk run, default 20).
//! Needs `wrk` (Debian's package, installed when missing and run as root) and python3 (scim2-server
//! is installed into target/scim2-server-venv; without python3 its column is skipped).
//!
//! Run: `CARGO_TARGET_DIR=/work/target-bench cargo bench --bench scim`

#[path = "../tests/it/support/measure.rs"]
mod measure;
use measure::*;

use assent::domain::device::{DecisionClaims, DeviceSigner};
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_assent");
/// As many requests in flight as wrk's 16 connections.
const CONCURRENCY: usize = 16;

/// A server under test: killed when dropped.
struct Server {
    child: Child,
    /// The SCIM base URL (Tenant URL).
    base: String,
    token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_http(url: &str) {
    let http = reqwest::Client::new();
    for _ in 0..400 {
        if http.get(url).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} did not answer");
}

fn cli(db: &str, args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .args(args)
        .env("ASSENT_DATABASE_URL", db)
        .env("ASSENT_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Starts Assent on a fresh SQLite file and gets the workspace's SCIM token the real way: the
/// owner signs in, enrolls a phone (a key made here), asks View Token, the phone approves with the
/// right number, and the console releases the token.
async fn start_assent(dir: &Path) -> Server {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let db = format!("sqlite://{}/bench.db", dir.display());
    let child = Command::new(BIN)
        .arg("serve")
        .env("ASSENT_LISTEN", format!("127.0.0.1:{port}"))
        .env("ASSENT_DATABASE_URL", &db)
        .env("ASSENT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start assent serve");
    wait_http(&format!("{url}/healthz")).await;
    let owner = cli(
        &db,
        &[
            "workspace",
            "create",
            "--slug",
            "bench",
            "--name",
            "Bench",
            "--owner-email",
            "owner@bench.test",
        ],
    );
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{url}/v1/console/session"))
        .json(&json!({"workspace": "bench", "email": "owner@bench.test", "password": owner["password"]}))
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
    let post = |path: &str| http.post(format!("{url}{path}")).header("cookie", &cookie);
    let offer: Value = post("/v1/console/devices/enrollments")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let signer = DeviceSigner::generate();
    let enrolled: Value = http
        .post(format!("{url}/v1/mobile/devices"))
        .json(
            &json!({"enrollment_code": offer["code"], "name": "bench", "platform": "fcm",
                      "public_key": signer.public_key().to_jwk()}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let device_id = enrolled["device_id"].as_str().unwrap().to_owned();
    let challenge: Value = post("/v1/console/scim-token/reveal")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = challenge["challenge_id"].as_str().unwrap().to_owned();
    let pending: Value = http
        .get(format!("{url}/v1/mobile/challenges"))
        .header(
            "authorization",
            format!(
                "Device {}",
                signer.sign_request(&device_id, &url, time::OffsetDateTime::now_utc())
            ),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let nonce = pending["challenges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id.as_str())
        .unwrap()["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    let iat = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = DecisionClaims {
        iss: device_id.clone(),
        aud: url.clone(),
        sub: id.clone(),
        nonce,
        action: "scim_token.reveal".into(),
        decision: "approve".into(),
        number: Some(challenge["number"].as_u64().unwrap() as u8),
        reason: None,
        workspace: None,
        ticket: None,
        iat,
        exp: iat + 60,
    };
    let decided = http
        .post(format!("{url}/v1/mobile/challenges/{id}/decision"))
        .header(
            "authorization",
            format!(
                "Device {}",
                signer.sign_request(&device_id, &url, time::OffsetDateTime::now_utc())
            ),
        )
        .json(&json!({"decision": signer.sign_decision(&device_id, &claims)}))
        .send()
        .await
        .unwrap();
    assert!(
        decided.status().is_success(),
        "decision: {}",
        decided.status()
    );
    let released: Value = post(&format!("/v1/console/challenges/{id}/release"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Server {
        child,
        base: format!("{url}/v1/scim/v2"),
        token: released["token"].as_str().expect("token").to_owned(),
    }
}

/// `scim2-server` from PyPI in target/scim2-server-venv (installed when missing); None without
/// python3.
async fn start_reference() -> Option<Server> {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/scim2-server-venv");
    let bin = venv.join("bin/scim2-server");
    if !bin.exists() {
        Command::new("python3").arg("--version").output().ok()?;
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .ok()?
            .success()
            && Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "scim2-server"])
                .status()
                .ok()?
                .success();
        if !ok {
            return None;
        }
    }
    let port = free_port();
    let token = "bench-reference-token".to_owned();
    let child = Command::new(bin)
        .args(["--port", &port.to_string(), "--bearer-token", &token])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let base = format!("http://127.0.0.1:{port}/v2");
    wait_http(&format!("{base}/ServiceProviderConfig")).await;
    Some(Server { child, base, token })
}

fn user_name(i: usize) -> String {
    format!("user{i}@contoso.com")
}

/// The custom extension Assent's users carry in this bench.
const EXT: &str = "urn:ietf:params:scim:schemas:extension:acme:2.0:User";

/// Ten extension attributes: a unique `costCenterCode` to look up, and others of each type.
fn extension(i: usize) -> Value {
    json!({
        "costCenterCode": format!("CC-{i}"),
        "level": i % 12,
        "remote": i % 3 == 0,
        "region": format!("Region {}", i % 20),
        "team": format!("Team {}", i % 400),
        "badge": format!("B{i:08}"),
        "startYear": 2000 + i % 25,
        "contractor": i % 7 == 0,
        "site": format!("Site {}", i % 60),
        "ratio": (i % 100) as f64 / 100.0
    })
}

/// The body Entra ID posts for a new user; `extended`: with the custom extension.
fn entra_user(i: usize, extended: bool) -> String {
    let mut body = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "externalId": format!("0a21f0f2-8d2a-4f8e-bf98-{i:012}"),
        "userName": user_name(i),
        "active": true,
        "displayName": format!("User {i}"),
        "emails": [{"primary": true, "type": "work", "value": user_name(i)}],
        "name": {"formatted": format!("Given{i} Family{i}"), "familyName": format!("Family{i}"),
                 "givenName": format!("Given{i}")},
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":
            {"employeeNumber": i.to_string(), "department": format!("Dept {}", i % 50)}
    });
    if extended {
        body[EXT] = extension(i);
    }
    body.to_string()
}

/// POSTs `n` users, CONCURRENCY at a time; returns the wall time.
async fn load_users(server: &Server, n: usize, extended: bool) -> Duration {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap();
    let url = format!("{}/Users", server.base);
    let auth = format!("Bearer {}", server.token);
    let started = Instant::now();
    let mut posts = stream::iter(0..n)
        .map(|i| {
            let req = http
                .post(&url)
                .header("authorization", &auth)
                .header("content-type", "application/scim+json")
                .body(entra_user(i, extended));
            async move { (i, req.send().await.map(|r| r.status().as_u16())) }
        })
        .buffer_unordered(CONCURRENCY);
    while let Some((i, status)) = posts.next().await {
        let status = status.unwrap_or_else(|e| panic!("POST user {i}: {e}"));
        assert_eq!(status, 201, "POST user {i}");
    }
    started.elapsed()
}

/// A sample lookup must find exactly its user.
async fn check_lookup(server: &Server, filter: &str) {
    let body: Value = reqwest::Client::new()
        .get(format!("{}/Users", server.base))
        .query(&[("filter", filter)])
        .header("authorization", format!("Bearer {}", server.token))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["totalResults"], 1, "{body}");
}

const WRK_SCRIPT: &str = r#"
-- GET {base}/Users?filter=userName eq "user<random>@contoso.com", or with the 4th argument
-- "ext": GET {base}/Users?filter=urn:…:acme:2.0:User:costCenterCode eq "CC-<random>"
function init(args)
  token = args[1]
  n = tonumber(args[2])
  path = args[3]
  mode = args[4]
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end
request = function()
  local i = math.random(0, n - 1)
  local filter
  if mode == "ext" then
    filter = "urn:ietf:params:scim:schemas:extension:acme:2.0:User:costCenterCode%20eq%20%22CC-"
      .. i .. "%22"
  else
    filter = "userName%20eq%20%22user" .. i .. "%40contoso.com%22"
  end
  return wrk.format("GET", path .. "/Users?filter=" .. filter,
                    {["Authorization"] = "Bearer " .. token})
end
"#;

/// `mode`: `user` (userName eq) or `ext` (the extension's costCenterCode eq).
fn wrk_filter(server: &Server, n: usize, secs: usize, script: &Path, mode: &str) -> WrkRun {
    let base = url::Url::parse(&server.base).unwrap();
    let (origin, path) = (base.origin().ascii_serialization(), base.path().to_owned());
    run_wrk(
        secs,
        script,
        &origin,
        &[&server.token, &n.to_string(), &path, mode],
    )
}

struct Row {
    users: usize,
    post_per_s: f64,
    load_secs: f64,
    filter: WrkRun,
    /// The extension attribute's `eq`, for a server whose users carry the extension.
    ext_filter: Option<WrkRun>,
    rss_mib: f64,
}

async fn run(server: &Server, users: usize, secs: usize, script: &Path, extended: bool) -> Row {
    let took = load_users(server, users, extended).await;
    check_lookup(server, &format!("userName eq \"{}\"", user_name(users / 2))).await;
    // Warm up the connections and caches, then measure.
    wrk_filter(server, users, 3, script, "user");
    let filter = wrk_filter(server, users, secs, script, "user");
    let ext_filter = if extended {
        check_lookup(
            server,
            &format!("{EXT}:costCenterCode eq \"CC-{}\"", users / 2),
        )
        .await;
        wrk_filter(server, users, 3, script, "ext");
        Some(wrk_filter(server, users, secs, script, "ext"))
    } else {
        None
    };
    Row {
        users,
        post_per_s: users as f64 / took.as_secs_f64(),
        load_secs: took.as_secs_f64(),
        filter,
        ext_filter,
        rss_mib: measure::rss_mib(server.child.id()),
    }
}

fn main() {
    ensure_wrk();
    let users = env_or("ASSENT_BENCH_USERS", 100_000);
    let ref_users = env_or("ASSENT_BENCH_REF_USERS", 10_000);
    let secs = env_or("ASSENT_BENCH_SECS", 20);
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("filter.lua");
    std::fs::write(&script, format!("{WRK_SCRIPT}{WRK_PERCENTILES}")).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (assent, reference) = runtime.block_on(async {
        eprintln!(
            "scim bench: Assent, {users} users (load average {})",
            load_average()
        );
        let server = start_assent(dir.path()).await;
        let assent = run(&server, users, secs, &script, true).await;
        drop(server);
        let reference = match start_reference().await {
            Some(server) => {
                eprintln!(
                    "scim bench: scim2-server, {ref_users} users (load average {})",
                    load_average()
                );
                Some(run(&server, ref_users, secs, &script, false).await)
            }
            None => {
                eprintln!("scim bench: python3 missing, scim2-server skipped");
                None
            }
        };
        (assent, reference)
    });

    println!();
    println!(
        "SCIM, wrk -t2 -c16 for {secs} s, load generator on the same machine (load average {})",
        load_average()
    );
    println!("{:<50} {:>16} {:>16}", "", "Assent", "scim2-server");
    let col = |f: &dyn Fn(&Row) -> String| -> (String, String) {
        (f(&assent), reference.as_ref().map_or("-".into(), f))
    };
    let lines: Vec<(&str, (String, String))> = vec![
        ("users loaded", col(&|r| r.users.to_string())),
        (
            "POST /Users, 16 in flight (creates/s)",
            col(&|r| format!("{:.0}", r.post_per_s)),
        ),
        (
            "  time to load them (s)",
            col(&|r| format!("{:.1}", r.load_secs)),
        ),
        (
            "GET /Users?filter=userName eq (req/s)",
            col(&|r| format!("{:.0}", r.filter.rps)),
        ),
        ("  p50 (ms)", col(&|r| format!("{:.2}", r.filter.p50_ms))),
        ("  p99 (ms)", col(&|r| format!("{:.2}", r.filter.p99_ms))),
        (
            "GET /Users?filter=<ext>:costCenterCode eq (req/s)",
            col(&|r| {
                r.ext_filter
                    .as_ref()
                    .map_or("-".into(), |f| format!("{:.0}", f.rps))
            }),
        ),
        (
            "  p50 (ms)",
            col(&|r| {
                r.ext_filter
                    .as_ref()
                    .map_or("-".into(), |f| format!("{:.2}", f.p50_ms))
            }),
        ),
        (
            "  p99 (ms)",
            col(&|r| {
                r.ext_filter
                    .as_ref()
                    .map_or("-".into(), |f| format!("{:.2}", f.p99_ms))
            }),
        ),
        (
            "server resident memory (MiB)",
            col(&|r| format!("{:.0}", r.rss_mib)),
        ),
    ];
    for (label, (a, b)) in lines {
        println!("{label:<50} {a:>16} {b:>16}");
    }
    for (name, row) in [
        ("Assent", Some(&assent)),
        ("scim2-server", reference.as_ref()),
    ] {
        if let Some(r) = row.filter(|r| !r.filter.errors.is_empty()) {
            println!("{name}: wrk reported {}", r.filter.errors);
        }
        if let Some(f) = row
            .and_then(|r| r.ext_filter.as_ref())
            .filter(|f| !f.errors.is_empty())
        {
            println!("{name}, extension filter: wrk reported {}", f.errors);
        }
    }
    if let Some(r) = &reference {
        println!(
            "filter throughput: Assent at {} users / scim2-server at {} users = {:.1}x",
            assent.users,
            r.users,
            assent.filter.rps / r.filter.rps
        );
    }
}
