//! The Postgres side of the black-box tests. `ASSENT_TEST_POSTGRES_URL` (a superuser on a cluster
//! the tests may create databases on, e.g. `postgres://postgres@127.0.0.1:5432/postgres`) selects
//! the Postgres backend for every `TestServer`: each gets a fresh database of its own there, dropped
//! when the server stops. Unset, the servers run on SQLite files. `scripts/test` runs the suite both
//! ways.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::{Connection, PgConnection, Row};

pub const URL_VAR: &str = "ASSENT_TEST_POSTGRES_URL";

static UNIQUE: AtomicUsize = AtomicUsize::new(0);

/// The cluster `ASSENT_TEST_POSTGRES_URL` names, when the Postgres backend is selected.
pub fn selected_cluster() -> Option<String> {
    std::env::var(URL_VAR).ok().filter(|v| !v.trim().is_empty())
}

/// A database made for one test server.
#[derive(Clone, Debug)]
pub struct TestDatabase {
    /// The cluster's URL the database was made from (and is dropped from).
    pub cluster_url: String,
    pub name: String,
    /// The database's own URL: the server's `ASSENT_DATABASE_URL`.
    pub url: String,
}

async fn connect(url: &str) -> PgConnection {
    PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test Postgres ({URL_VAR}): {e}"))
}

/// Creates `assent_test_<pid>_<n>_<random>` on the cluster.
pub async fn create_database(cluster_url: &str) -> TestDatabase {
    let name = format!(
        "assent_test_{}_{}_{:08x}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    );
    let mut conn = connect(cluster_url).await;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    conn.close().await.ok();
    let mut url = url::Url::parse(cluster_url).expect("ASSENT_TEST_POSTGRES_URL is a URL");
    url.set_path(&name);
    TestDatabase {
        cluster_url: cluster_url.to_owned(),
        name,
        url: url.to_string(),
    }
}

/// What the server's wrapper runs, with `psql`, once the server has exited for good. Best effort:
/// a static server outlives the test process, so no Rust code runs after it; and when the whole
/// cluster is thrown away (scripts/test), a failed drop costs nothing.
pub fn drop_statement(name: &str) -> String {
    format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")
}

/// Asserts that no row of any table holds one of `secrets`: text columns as they read, binary
/// columns as raw bytes (what the SQLite variant finds by scanning the file).
pub async fn assert_free_of(db: &TestDatabase, secrets: &[(&str, &str)]) {
    let mut conn = connect(&db.url).await;
    let columns = sqlx::query(
        "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = 'public' ORDER BY table_name, ordinal_position",
    )
    .fetch_all(&mut conn)
    .await
    .expect("list the columns");
    assert!(
        columns
            .iter()
            .any(|c| c.get::<String, _>(0) == "scim_tokens"),
        "no scim_tokens table in {}",
        db.name
    );
    for column in &columns {
        let (table, name, kind): (String, String, String) =
            (column.get(0), column.get(1), column.get(2));
        let values: Vec<Vec<u8>> = if kind == "bytea" {
            sqlx::query_scalar::<_, Option<Vec<u8>>>(&format!("SELECT \"{name}\" FROM \"{table}\""))
                .fetch_all(&mut conn)
                .await
                .expect("read a binary column")
                .into_iter()
                .flatten()
                .collect()
        } else {
            sqlx::query_scalar::<_, Option<String>>(&format!(
                "SELECT \"{name}\"::text FROM \"{table}\""
            ))
            .fetch_all(&mut conn)
            .await
            .expect("read a column as text")
            .into_iter()
            .flatten()
            .map(String::into_bytes)
            .collect()
        };
        for value in &values {
            for (what, secret) in secrets {
                assert!(
                    !super::server::contains(value, secret.as_bytes()),
                    "{table}.{name} holds the {what} in plain text"
                );
            }
        }
    }
    conn.close().await.ok();
}

/// `TestServer`'s ageing of one person's rows on Postgres: `statement` binds the seconds, the
/// workspace slug and the e-mail; returns the number of rows aged.
pub async fn execute_aging(
    db: &TestDatabase,
    statement: &str,
    secs: i64,
    slug: &str,
    email: &str,
) -> u64 {
    let mut conn = connect(&db.url).await;
    let done = sqlx::query(statement)
        .bind(secs)
        .bind(slug)
        .bind(email)
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
    conn.close().await.ok();
    done.rows_affected()
}

/// `TestServer::execute_sql` on Postgres.
pub async fn execute(db: &TestDatabase, sql: &str) {
    let mut conn = connect(&db.url).await;
    sqlx::raw_sql(sql)
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    conn.close().await.ok();
}

/// `TestServer::count_sql` on Postgres.
pub async fn count(db: &TestDatabase, sql: &str) -> i64 {
    let mut conn = connect(&db.url).await;
    let n: i64 = sqlx::query_scalar(sql)
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    conn.close().await.ok();
    n
}

/// A Postgres cluster of one test's own (scripts/postgres-cluster), for tests that stop and start
/// the database under a running server without disturbing the servers of other tests.
pub struct PrivateCluster {
    dir: PathBuf,
    /// `postgres://postgres@127.0.0.1:<port>/postgres`, the same across restarts.
    pub url: String,
}

const CLUSTER_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/postgres-cluster");

fn cluster_command(verb: &str, dir: &Path) -> String {
    let out = Command::new(CLUSTER_SCRIPT)
        .arg(verb)
        .arg(dir)
        .output()
        .expect("run scripts/postgres-cluster");
    assert!(
        out.status.success(),
        "scripts/postgres-cluster {verb} failed (the Postgres tests need the server binaries: \
         apt-get install postgresql):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl PrivateCluster {
    pub fn start() -> PrivateCluster {
        let dir = tempfile::Builder::new()
            .prefix("assent-pg-")
            .tempdir()
            .expect("tempdir")
            .keep();
        let url = cluster_command("start", &dir);
        PrivateCluster { dir, url }
    }

    /// Stops the server at once (fast shutdown: every open connection is cut).
    pub fn stop(&self) {
        cluster_command("stop", &self.dir);
    }

    /// Starts it again, on the same port with the same data.
    pub fn restart(&self) {
        let url = cluster_command("start", &self.dir);
        assert_eq!(url, self.url, "the cluster came back on another port");
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = Command::new(CLUSTER_SCRIPT)
            .arg("stop")
            .arg(&self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
