//! Which database: the parsed `ASSENT_DATABASE_URL` (read by `config`), opened by `store::open`.

use std::path::PathBuf;

use url::Url;

#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite {
        url: String,
        path: PathBuf,
    },
    /// `postgres://user:password@host:port/db`; its `Debug` hides the password.
    Postgres {
        url: String,
    },
}

impl Database {
    /// The URL with any password replaced by `***`: what may appear in a log or an error.
    pub fn redacted(&self) -> String {
        match self {
            Database::Sqlite { url, .. } => url.clone(),
            Database::Postgres { url } => redact_url(url),
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Hides the password of a URL, in its user part or as a `password=` query parameter.
fn redact_url(text: &str) -> String {
    let Ok(mut url) = Url::parse(text) else {
        return "postgres://***".to_owned();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    if url.query_pairs().any(|(k, _)| k == "password") {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}
