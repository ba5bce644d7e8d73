//! Every `ASSENT_*` variable, read and validated once at start-up. A bad value stops start-up with
//! one line that names the variable (CONTRACT.md section 1).

use std::net::SocketAddr;
use std::path::PathBuf;
use time::Duration;
use url::Url;

use crate::domain::crypto::{MasterKey, Secret};

#[derive(Debug, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

fn bad(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        reason: reason.into(),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Database {
    Sqlite { url: String, path: PathBuf },
}

/// Where the master key comes from.
#[derive(Clone, Debug)]
pub enum MasterKeySource {
    /// `ASSENT_MASTER_KEY` (or the file named by `ASSENT_MASTER_KEY_FILE`).
    Given(Secret),
    /// Generated once into this file (mode 0600) beside the SQLite database.
    File(PathBuf),
}

#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// The origin clients use, without a trailing slash; the `aud` of device JWS.
    pub public_url: String,
    pub secure_cookies: bool,
    pub database: Database,
    pub master_key: MasterKeySource,
    pub challenge_ttl: Duration,
    pub session_idle: Duration,
    pub session_max: Duration,
    pub log: String,
}

fn positive_secs(
    get: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
    default: i64,
) -> Result<Duration, ConfigError> {
    match get(var) {
        None => Ok(Duration::seconds(default)),
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if n > 0 && n <= 86_400 * 30 => Ok(Duration::seconds(n)),
            _ => Err(bad(
                var,
                format!("expected a whole number of seconds between 1 and 2592000, got {v:?}"),
            )),
        },
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let listen_text = get("ASSENT_LISTEN").unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            bad(
                "ASSENT_LISTEN",
                format!("expected host:port such as 127.0.0.1:8080, got {listen_text:?}"),
            )
        })?;

        let public_text = get("ASSENT_PUBLIC_URL").unwrap_or_else(|| format!("http://{listen}"));
        let public = Url::parse(&public_text)
            .ok()
            .filter(|u| {
                matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.query().is_none()
            })
            .ok_or_else(|| {
                bad(
                    "ASSENT_PUBLIC_URL",
                    format!("expected an http(s) origin, got {public_text:?}"),
                )
            })?;
        let public_url = public.as_str().trim_end_matches('/').to_owned();
        let secure_cookies = public.scheme() == "https";

        let db_text = get("ASSENT_DATABASE_URL").unwrap_or_else(|| "sqlite://assent.db".into());
        let database = if let Some(rest) = db_text
            .strip_prefix("sqlite://")
            .or_else(|| db_text.strip_prefix("sqlite:"))
        {
            let path = rest.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Err(bad(
                    "ASSENT_DATABASE_URL",
                    "sqlite:// needs a file path, e.g. sqlite://assent.db",
                ));
            }
            Database::Sqlite {
                url: db_text.clone(),
                path: PathBuf::from(path),
            }
        } else if db_text.starts_with("postgres://") || db_text.starts_with("postgresql://") {
            return Err(bad(
                "ASSENT_DATABASE_URL",
                "the Postgres backend is not part of this build yet; use sqlite://FILE",
            ));
        } else {
            return Err(bad(
                "ASSENT_DATABASE_URL",
                "expected sqlite://FILE or postgres://…",
            ));
        };

        if get("ASSENT_REDIS_URL").is_some() {
            return Err(bad(
                "ASSENT_REDIS_URL",
                "the Redis challenge store and bus are not part of this build yet; unset it to run on one instance",
            ));
        }

        let master_key = match (get("ASSENT_MASTER_KEY"), get("ASSENT_MASTER_KEY_FILE")) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "ASSENT_MASTER_KEY",
                    "set ASSENT_MASTER_KEY or ASSENT_MASTER_KEY_FILE, not both",
                ))
            }
            (Some(key), None) => {
                MasterKey::from_base64(&key)
                    .map_err(|e| bad("ASSENT_MASTER_KEY", e.to_string()))?;
                MasterKeySource::Given(Secret::new(key))
            }
            (None, Some(file)) => {
                let key = std::fs::read_to_string(&file).map_err(|e| {
                    bad("ASSENT_MASTER_KEY_FILE", format!("cannot read {file}: {e}"))
                })?;
                MasterKey::from_base64(&key)
                    .map_err(|e| bad("ASSENT_MASTER_KEY_FILE", e.to_string()))?;
                MasterKeySource::Given(Secret::new(key))
            }
            (None, None) => {
                let Database::Sqlite { path, .. } = &database;
                let mut key_path = path.clone().into_os_string();
                key_path.push(".key");
                MasterKeySource::File(PathBuf::from(key_path))
            }
        };

        Ok(Self {
            listen,
            public_url,
            secure_cookies,
            database,
            master_key,
            challenge_ttl: positive_secs(get, "ASSENT_CHALLENGE_TTL_SECS", 120)?,
            session_idle: positive_secs(get, "ASSENT_SESSION_IDLE_SECS", 30 * 60)?,
            session_max: positive_secs(get, "ASSENT_SESSION_MAX_SECS", 12 * 3600)?,
            log: {
                let filter = get("ASSENT_LOG").unwrap_or_else(|| "info".into());
                tracing_subscriber::EnvFilter::try_new(&filter).map_err(|e| {
                    bad(
                        "ASSENT_LOG",
                        format!("not a tracing filter ({e}), e.g. info or assent=debug"),
                    )
                })?;
                filter
            },
        })
    }

    pub fn scim_base_url(&self) -> String {
        format!("{}/v1/scim/v2", self.public_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(&move |name| map.get(name).cloned())
    }

    #[test]
    fn defaults_are_the_embedded_deployment() {
        let c = config(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.public_url, "http://127.0.0.1:8080");
        assert!(!c.secure_cookies);
        assert_eq!(c.challenge_ttl, Duration::seconds(120));
        assert!(
            matches!(c.master_key, MasterKeySource::File(ref p) if p.to_str() == Some("assent.db.key"))
        );
        assert_eq!(c.scim_base_url(), "http://127.0.0.1:8080/v1/scim/v2");
    }

    #[test]
    fn https_public_url_makes_cookies_secure() {
        let c = config(&[("ASSENT_PUBLIC_URL", "https://assent.example.com/")]).unwrap();
        assert!(c.secure_cookies);
        assert_eq!(c.public_url, "https://assent.example.com");
    }

    #[test]
    fn each_bad_variable_is_named() {
        for (var, value) in [
            ("ASSENT_LISTEN", "nope"),
            ("ASSENT_PUBLIC_URL", "ftp://x"),
            ("ASSENT_DATABASE_URL", "mysql://x"),
            ("ASSENT_MASTER_KEY", "c2hvcnQ="),
            ("ASSENT_CHALLENGE_TTL_SECS", "-5"),
            ("ASSENT_CHALLENGE_TTL_SECS", "soon"),
            ("ASSENT_SESSION_IDLE_SECS", "0"),
            ("ASSENT_LOG", "assent=loudest"),
        ] {
            let err = config(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var);
            let line = err.to_string();
            assert!(line.starts_with(var) && !line.contains('\n'), "{line}");
        }
    }

    #[test]
    fn a_given_key_is_never_printed() {
        let key = MasterKey::generate();
        let c = config(&[("ASSENT_MASTER_KEY", key.to_base64().as_str())]).unwrap();
        assert!(!format!("{c:?}").contains(key.to_base64().as_str()));
    }
}
