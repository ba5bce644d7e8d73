//! SCIM benchmark with its own ceiling (issue 18, not a test): how much of what the HTTP stack
//! alone can serve does Assent serve, measured in one run on one machine.
//!
//! 1. Assent (the release binary, started as the tests' `TestServer`: SQLite, or Postgres when
//!    `ASSENT_TEST_POSTGRES_URL` is set) gets its SCIM token the real way, then 16 Rust clients
//!    `POST /Users` with Entra ID's body: users/s; then PATCH (Entra's `Replace` of a profile's
//!    attributes) once each of the first `ASSENT_BENCH_PATCHES` (default 20,000): patches/s; then
//!    1,000 POSTs and 1,000 PATCHes from one client, one at a time: the p50 and p99 of each.
//!    Between them, `ASSENT_BENCH_GROUPS` groups (default 20) get the first
//!    `ASSENT_BENCH_MEMBERS` users (default 20,000) as members, 100 to a PATCH: members/s.
//! 2. The ceiling: a bare axum 0.8 handler in this process, on a 2-worker runtime like the
//!    server's, answering the very bytes Assent answers for one filter (same size, same content
//!    type) to the same wrk line.
//! 3. `wrk -t2 -c16` on `GET /Users?filter=userName eq "<random loaded user>"` against both,
//!    ceiling first, then Assent; Assent's requests/s printed as a fraction of the ceiling's.
//!    Between them, the same wrk line on Assent's `/healthz`: every layer a request crosses,
//!    with no work behind it, the floor of Assent's own stack. Each run also prints the CPU time
//!    per request of the process that answered (this one for the ceiling, the server for Assent).
//!
//! `ASSENT_BENCH_USERS` (default 100,000), `ASSENT_BENCH_SECS` (each wrk run, default 10, the
//! issue's `-d10s`). `ASSENT_BENCH_PERF=<file>` records the server's filter with `perf record
//! --call-graph dwarf` (Debian's linux-perf; release builds keep no frame pointers, so `-g` would
//! lose the callers) while wrk runs against it, for `perf report -i <file>`. Needs `wrk` (Debian's package; installed when missing, as root).
//!
//! Run: `cargo bench --bench scim_ceiling` (and again with `ASSENT_TEST_POSTGRES_URL` set).

#[path = "../tests/it/support/mod.rs"]
#[allow(unused_imports)]
mod support;
use support::measure::*;
use support::scim::ScimTenant;
use support::server::{ServerOptions, TestServer};

use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// As many clients in flight as wrk's 16 connections (the issue's POST load).
const CONCURRENCY: usize = 16;

/// The writes measured one at a time, from one client.
const SEQUENTIAL: usize = 1_000;

fn user_name(i: usize) -> String {
    format!("user{i}@contoso.com")
}

/// The body Entra ID posts for a new user.
fn entra_user(i: usize) -> String {
    json!({
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
    })
    .to_string()
}

/// Runs `each(client, i)` for every `i` below `n`, from `clients` clients of their own (each its
/// own connection); returns the wall time and each request's time, sorted.
async fn from_clients<F, Fut>(n: usize, clients: usize, each: F) -> (Duration, Vec<Duration>)
where
    F: Fn(reqwest::Client, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let each = std::sync::Arc::new(each);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let clients = (0..clients).map(|_| {
        let (each, next) = (each.clone(), next.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut took = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return took;
                }
                let one = Instant::now();
                each(http.clone(), i).await;
                took.push(one.elapsed());
            }
        })
    });
    let mut took = Vec::new();
    for client in futures_util::future::join_all(clients).await {
        took.extend(client.unwrap());
    }
    took.sort();
    (started.elapsed(), took)
}

/// POSTs the users numbered `from..to` from `clients` clients; returns the wall time, each
/// request's time (sorted) and the users' ids, in order.
async fn load_users(
    base: &str,
    token: &str,
    (from, to): (usize, usize),
    clients: usize,
) -> (Duration, Vec<Duration>, Vec<String>) {
    let url = format!("{base}/Users");
    let auth = format!("Bearer {token}");
    let ids = std::sync::Arc::new(std::sync::Mutex::new(vec![String::new(); to - from]));
    let kept = ids.clone();
    let (took, each) = from_clients(to - from, clients, move |http, i| {
        let (url, auth, ids) = (url.clone(), auth.clone(), kept.clone());
        async move {
            let res = http
                .post(&url)
                .header("authorization", &auth)
                .header("content-type", "application/scim+json")
                .body(entra_user(from + i))
                .send()
                .await
                .unwrap_or_else(|e| panic!("POST user {}: {e}", from + i));
            assert_eq!(res.status().as_u16(), 201, "POST user {}", from + i);
            let created: Value = res.json().await.unwrap();
            ids.lock().unwrap()[i] = created["id"].as_str().unwrap().to_owned();
        }
    })
    .await;
    let ids = std::mem::take(&mut *ids.lock().unwrap());
    (took, each, ids)
}

/// PATCHes each of `ids` once as Entra ID does when a user's profile changes (`Replace` of
/// `displayName` and of the department) from `clients` clients; returns the wall time and each
/// request's time, sorted.
async fn patch_users(
    base: &str,
    token: &str,
    ids: Vec<String>,
    clients: usize,
) -> (Duration, Vec<Duration>) {
    let (base, auth) = (base.to_owned(), format!("Bearer {token}"));
    let ids = std::sync::Arc::new(ids);
    let n = ids.len();
    from_clients(n, clients, move |http, i| {
        let (base, auth, ids) = (base.clone(), auth.clone(), ids.clone());
        async move {
            let body = json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [
                    {"op": "Replace", "path": "displayName", "value": format!("Renamed {i}")},
                    {"op": "Replace",
                     "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
                     "value": format!("Dept {}", i % 7)}
                ]
            });
            let res = http
                .patch(format!("{base}/Users/{}", ids[i]))
                .header("authorization", &auth)
                .header("content-type", "application/scim+json")
                .body(body.to_string())
                .send()
                .await
                .unwrap_or_else(|e| panic!("PATCH user {i}: {e}"));
            assert_eq!(res.status().as_u16(), 200, "PATCH user {i}");
        }
    })
    .await
}

/// Members per group PATCH in `add_members` (an `add` of that many `members` values).
const MEMBERS_PER_PATCH: usize = 100;

/// Creates `groups` groups, then adds `ids` to them from `clients` clients, in PATCHes of
/// `MEMBERS_PER_PATCH` members, as Entra ID's initial cycle fills a group (each user in one
/// group); returns the wall time of the adds and each PATCH's time, sorted.
async fn add_members(
    base: &str,
    token: &str,
    ids: Vec<String>,
    groups: usize,
    clients: usize,
) -> (Duration, Vec<Duration>) {
    let http = reqwest::Client::new();
    let auth = format!("Bearer {token}");
    let mut group_ids = Vec::new();
    for g in 0..groups {
        let res = http
            .post(format!("{base}/Groups"))
            .header("authorization", &auth)
            .header("content-type", "application/scim+json")
            .body(
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                       "displayName": format!("Bench group {g}"), "externalId": format!("g-{g}")})
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 201, "POST group {g}");
        let created: Value = res.json().await.unwrap();
        group_ids.push(created["id"].as_str().unwrap().to_owned());
    }
    let chunks: Vec<Vec<String>> = ids
        .chunks(MEMBERS_PER_PATCH)
        .map(<[String]>::to_vec)
        .collect();
    let (base, chunks, group_ids) = (
        base.to_owned(),
        std::sync::Arc::new(chunks),
        std::sync::Arc::new(group_ids),
    );
    let n = chunks.len();
    from_clients(n, clients, move |http, i| {
        let (base, auth, chunks, group_ids) = (
            base.clone(),
            auth.clone(),
            chunks.clone(),
            group_ids.clone(),
        );
        async move {
            let value: Vec<Value> = chunks[i].iter().map(|id| json!({"value": id})).collect();
            let body = json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "Add", "path": "members", "value": value}]
            });
            let res = http
                .patch(format!("{base}/Groups/{}", group_ids[i % group_ids.len()]))
                .header("authorization", &auth)
                .header("content-type", "application/scim+json")
                .body(body.to_string())
                .send()
                .await
                .unwrap_or_else(|e| panic!("PATCH group members {i}: {e}"));
            assert!(res.status().is_success(), "PATCH group members {i}");
        }
    })
    .await
}

/// One filter's answer as Assent sends it: its content type and bytes.
async fn sample_answer(base: &str, token: &str, n: usize) -> (String, Vec<u8>) {
    let filter = format!("userName eq \"{}\"", user_name(n / 2));
    let res = reqwest::Client::new()
        .get(format!("{base}/Users"))
        .query(&[("filter", filter.as_str())])
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    let body = res.bytes().await.unwrap().to_vec();
    let parsed: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(parsed["totalResults"], 1, "{parsed}");
    (content_type, body)
}

/// The ceiling: a bare axum handler answering `body` on `GET {path}/Users`, on a runtime of its
/// own with as many workers as the server's (the machine's cores). Returns its origin.
fn start_ceiling(path: &str, content_type: String, body: Vec<u8>) -> String {
    use axum::{http::header, routing::get, Router};
    let body = bytes::Bytes::from(body);
    let app = Router::new().route(
        &format!("{path}/Users"),
        get(move || {
            let (content_type, body) = (content_type.clone(), body.clone());
            async move { ([(header::CONTENT_TYPE, content_type)], body) }
        }),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                use axum::serve::ListenerExt;
                // As Assent's accepted sockets: no Nagle delay.
                let listener = tokio::net::TcpListener::from_std(listener)
                    .unwrap()
                    .tap_io(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                axum::serve(listener, app).await.unwrap();
            })
    });
    origin
}

const FILTER_SCRIPT: &str = r#"
-- GET {path}/Users?filter=userName eq "user<random>@contoso.com"
function init(args)
  token = args[1]
  n = tonumber(args[2])
  path = args[3]
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end
request = function()
  local name = "user" .. math.random(0, n - 1) .. "%40contoso.com"
  return wrk.format("GET", path .. "/Users?filter=userName%20eq%20%22" .. name .. "%22",
                    {["Authorization"] = "Bearer " .. token})
end
"#;

struct Figures {
    run: WrkRun,
    /// The serving process's CPU time over the run, per request answered.
    cpu_us: f64,
    load: String,
}

/// What wrk asks for: the filter at `origin` + `path` (`FILTER_SCRIPT`, with the token and the
/// number of users), or one plain URL.
enum Ask<'a> {
    Filter {
        path: &'a str,
        token: &'a str,
        n: usize,
    },
    Plain(&'a str),
}

/// `wrk -t2 -c16 -d{secs}s` against `origin`, while the CPU time of `serving` (the process that
/// answers) is counted.
fn wrk(origin: &str, ask: &Ask, secs: usize, scripts: &Path, serving: u32) -> Figures {
    let (cpu_before, _) = process_cost(serving);
    let run = match ask {
        Ask::Filter { path, token, n } => run_wrk(
            secs,
            &scripts.join("filter.lua"),
            origin,
            &[token, &n.to_string(), path],
        ),
        Ask::Plain(path) => run_wrk(
            secs,
            &scripts.join("plain.lua"),
            &format!("{origin}{path}"),
            &[],
        ),
    };
    let (cpu_after, _) = process_cost(serving);
    Figures {
        cpu_us: (cpu_after - cpu_before) * 1e6 / run.requests.max(1.0),
        run,
        load: load_average(),
    }
}

fn main() {
    ensure_wrk();
    let users = env_or("ASSENT_BENCH_USERS", 100_000);
    let secs = env_or("ASSENT_BENCH_SECS", 10);
    let dir = tempfile::tempdir().unwrap();
    let scripts = dir.path();
    std::fs::write(
        scripts.join("filter.lua"),
        format!("{FILTER_SCRIPT}{WRK_PERCENTILES}"),
    )
    .unwrap();
    // `GET {url}` as it is, for a route that needs nothing more (`/healthz`).
    std::fs::write(scripts.join("plain.lua"), WRK_PERCENTILES).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = TestServer::start(ServerOptions {
            env: vec![("ASSENT_LOG".into(), "warn".into())],
            ..Default::default()
        })
        .await;
        let backend = if server.db_url.starts_with("postgres") {
            "Postgres"
        } else {
            "SQLite"
        };
        let tenant = ScimTenant::new(&server).await;
        let base = format!("{}/v1/scim/v2", server.base);
        eprintln!(
            "scim_ceiling: {users} users on {backend} (load average {})",
            load_average()
        );
        let post_load = load_average();
        let (took, _, ids) = load_users(&base, &tenant.token, (0, users), CONCURRENCY).await;
        let patches = ids.len().min(env_or("ASSENT_BENCH_PATCHES", 20_000));
        let patch_load = load_average();
        let (patched, _) =
            patch_users(&base, &tenant.token, ids[..patches].to_vec(), CONCURRENCY).await;
        let members = ids.len().min(env_or("ASSENT_BENCH_MEMBERS", 20_000));
        let groups = env_or("ASSENT_BENCH_GROUPS", 20).max(1);
        let members_load = load_average();
        let (added, member_patches) = add_members(
            &base,
            &tenant.token,
            ids[..members].to_vec(),
            groups,
            CONCURRENCY,
        )
        .await;
        // One client, one request at a time: what each write costs in round trips shows here.
        let alone = SEQUENTIAL.min(users);
        let (_, posts, _) = load_users(&base, &tenant.token, (users, users + alone), 1).await;
        let (_, patches_alone) =
            patch_users(&base, &tenant.token, ids[..alone].to_vec(), 1).await;
        let (content_type, body) = sample_answer(&base, &tenant.token, users).await;
        let path = "/v1/scim/v2";
        let ceiling = start_ceiling(path, content_type, body.clone());

        let filter = Ask::Filter {
            path,
            token: &tenant.token,
            n: users,
        };
        let (bench, assent_pid) = (std::process::id(), server.server_pid());

        // Warm both up, then measure the ceiling and Assent back to back.
        wrk(&ceiling, &filter, 2, scripts, bench);
        wrk(&server.base, &filter, 2, scripts, assent_pid);
        let bare = wrk(&ceiling, &filter, secs, scripts, bench);
        // Assent's own stack with no work behind it: every layer a request crosses (the
        // detach, metrics, the Origin check, the body cap, the headers), no handler.
        let healthz = wrk(&server.base, &Ask::Plain("/healthz"), secs, scripts, assent_pid);
        let profile = std::env::var("ASSENT_BENCH_PERF").ok().map(|out| {
            Command::new("perf")
                .args(["record", "-e", "cpu-clock", "-F", "499", "--call-graph", "dwarf,8192"])
                .args(["-o", &out, "-p"])
                .arg(server.server_pid().to_string())
                .args(["--", "sleep", &secs.to_string()])
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("run perf record")
        });
        let assent = wrk(&server.base, &filter, secs, scripts, assent_pid);
        if let Some(mut p) = profile {
            let _ = p.wait();
        }

        println!();
        println!(
            "SCIM against its ceiling, {backend}, {users} users, wrk -t2 -c16 -d{secs}s, load \
             generator on the same machine; answer {} bytes",
            body.len()
        );
        println!(
            "POST /Users, {CONCURRENCY} Rust clients: {:.0} users/s ({users} in {:.1} s; load average before {post_load})",
            users as f64 / took.as_secs_f64(),
            took.as_secs_f64()
        );
        println!(
            "PATCH /Users/{{id}}, {CONCURRENCY} Rust clients: {:.0} patches/s ({patches} in {:.1} s; load average before {patch_load})",
            patches as f64 / patched.as_secs_f64(),
            patched.as_secs_f64()
        );
        println!(
            "PATCH /Groups/{{id}} adding {MEMBERS_PER_PATCH} members, {CONCURRENCY} Rust clients, {groups} groups: {:.0} members/s ({members} in {:.1} s, PATCH p50 {:.2} ms p99 {:.2} ms; load average before {members_load})",
            members as f64 / added.as_secs_f64(),
            added.as_secs_f64(),
            pct(&member_patches, 0.50),
            pct(&member_patches, 0.99)
        );
        println!(
            "one client, one request at a time ({alone} each): POST p50 {:.2} ms p99 {:.2} ms; PATCH p50 {:.2} ms p99 {:.2} ms",
            pct(&posts, 0.50),
            pct(&posts, 0.99),
            pct(&patches_alone, 0.50),
            pct(&patches_alone, 0.99)
        );
        for (name, f) in [
            ("bare axum handler", &bare),
            ("Assent's /healthz", &healthz),
            ("Assent", &assent),
        ] {
            println!(
                "{name:<18} {:>9.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   {:>5.1} µs CPU/request   (load average {})",
                f.run.rps, f.run.p50_ms, f.run.p99_ms, f.cpu_us, f.load
            );
            if !f.run.errors.is_empty() {
                println!("{name}: wrk reported {}", f.run.errors);
            }
        }
        println!(
            "Assent serves {:.1}% of the ceiling; its /healthz, {:.1}%",
            100.0 * assent.run.rps / bare.run.rps,
            100.0 * healthz.run.rps / bare.run.rps
        );
        println!(
            "server resident memory: {:.0} MiB",
            rss_mib(server.server_pid())
        );
    });
}
