//! A real database for the store-level tests: a SQLite file in a temporary directory, and, when
//! `ASSENT_TEST_POSTGRES_URL` names a cluster (as for `tests/it/`), a Postgres database of its
//! own there, dropped at the end.

use sqlx::Connection;
use std::collections::HashMap;
use std::sync::Arc;

use crate::app::App;
use crate::config::Config;
use crate::domain::crypto::MasterKey;

pub struct TestDb {
    pub url: String,
    /// `ASSENT_MASTER_KEY` on Postgres (required there); SQLite uses its generated key file.
    key: Option<String>,
    backend: Backend,
}

enum Backend {
    Sqlite { dir: tempfile::TempDir },
    Postgres { cluster: String, name: String },
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        TestDb {
            url: format!("sqlite://{}/assent.db", dir.path().display()),
            key: None,
            backend: Backend::Sqlite { dir },
        }
    }

    /// A SQLite database, and a Postgres one when a cluster is named.
    pub async fn each() -> Vec<TestDb> {
        let mut all = vec![TestDb::sqlite().await];
        let Some(cluster) = std::env::var("ASSENT_TEST_POSTGRES_URL")
            .ok()
            .filter(|v| !v.trim().is_empty())
        else {
            return all;
        };
        let name = format!(
            "assent_unit_{}_{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let mut conn = sqlx::PgConnection::connect(&cluster)
            .await
            .expect("connect to ASSENT_TEST_POSTGRES_URL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create a test database");
        let mut url = url::Url::parse(&cluster).expect("a URL");
        url.set_path(&name);
        all.push(TestDb {
            url: url.to_string(),
            key: Some(MasterKey::generate().to_base64().to_string()),
            backend: Backend::Postgres { cluster, name },
        });
        all
    }

    /// The directory of the SQLite file (where its key file is generated).
    pub fn dir(&self) -> Option<&std::path::Path> {
        match &self.backend {
            Backend::Sqlite { dir } => Some(dir.path()),
            Backend::Postgres { .. } => None,
        }
    }

    /// The configuration of a server on this database, with these variables on top.
    pub fn config(&self, vars: &[(&str, &str)]) -> Config {
        let mut map: HashMap<String, String> =
            HashMap::from([("ASSENT_DATABASE_URL".to_owned(), self.url.clone())]);
        if let Some(key) = &self.key {
            map.insert("ASSENT_MASTER_KEY".into(), key.clone());
        }
        for (k, v) in vars {
            map.insert(k.to_string(), v.to_string());
        }
        Config::from_lookup(&move |name| map.get(name).cloned()).expect("a valid test config")
    }

    /// The master key a Postgres database starts with (SQLite: in its key file).
    pub fn given_key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    pub async fn app(&self, vars: &[(&str, &str)]) -> Arc<App> {
        App::open(self.config(vars), Vec::new())
            .await
            .expect("open the app")
    }

    /// Runs SQL (no parameters) behind the app's back, as an intruder with database access would.
    pub async fn exec(&self, sql: &str) {
        match &self.backend {
            Backend::Sqlite { .. } => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
            }
            Backend::Postgres { .. } => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
            }
        }
    }

    /// Drops a Postgres database (a SQLite directory goes with the value).
    pub async fn remove(self) {
        if let Backend::Postgres { cluster, name } = &self.backend {
            if let Ok(mut conn) = sqlx::PgConnection::connect(cluster).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        }
    }
}
