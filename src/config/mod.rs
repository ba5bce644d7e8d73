//! Every `ASSENT_*` variable, read and validated once at start-up. A bad value stops start-up with
//! one line that names the variable (CONTRACT.md section 1).

use std::net::SocketAddr;
use std::path::PathBuf;
use time::Duration;
use url::Url;

use crate::domain::crypto::{MasterKey, Secret};

pub mod keys;
mod push;

/// Which database, as `ASSENT_DATABASE_URL` names it; the store opens it.
pub use crate::store::Database;

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
    /// `public_url`'s origin (`scheme://host[:port]`): what a browser's `Origin` header must say
    /// on a console or support write.
    pub public_origin: String,
    pub secure_cookies: bool,
    pub database: Database,
    /// `ASSENT_REDIS_URL`: challenges, the replay cache and the bus in Redis, shared by every
    /// instance; `None` keeps them in this process. A `Secret`: the URL may hold a password.
    pub redis_url: Option<Secret>,
    pub master_key: MasterKeySource,
    /// `ASSENT_OLD_MASTER_KEYS` (or `_FILE`): keys that no longer seal but still open what they
    /// sealed, during and after a rotation (`assent keys rotate`).
    pub old_master_keys: Vec<Secret>,
    pub challenge_ttl: Duration,
    /// `ASSENT_CHALLENGES_PER_HOUR`: step-up challenges one person may cause per hour (0: no
    /// limit); the next answers 429 with Retry-After.
    pub challenges_per_hour: u32,
    /// `ASSENT_NOT_ME_BLOCK_SECS`: after a `not_me` denial, no new challenge for that person for
    /// this long.
    pub not_me_block: Duration,
    /// `ASSENT_REAUTH_WINDOW_SECS`: a first phone is enrolled only this long after the session's
    /// person last proved who they are (CONTRACT.md section 3).
    pub reauth_window: Duration,
    pub session_idle: Duration,
    pub session_max: Duration,
    /// `ASSENT_SCIM_LOG_RETENTION_DAYS`: how long the provisioning log keeps an entry.
    pub scim_log_retention: Duration,
    pub log: String,
    /// `ASSENT_LOG_FORMAT`: `json` for structured logs, `text` (the default) for people.
    pub log_json: bool,
    /// `ASSENT_TRUSTED_PROXIES`: the load balancers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<crate::domain::proxy::Cidr>,
    /// `ASSENT_APNS_*`: push to iPhones; `None` when not configured (they poll).
    pub apns: Option<crate::push::ApnsConfig>,
    /// `ASSENT_FCM_*`: push to Android phones; `None` when not configured (they poll).
    pub fcm: Option<crate::push::FcmConfig>,
    /// `ASSENT_SSO_ALLOW_LOOPBACK=1`: an OpenID provider on a loopback address (and only there,
    /// plain http) is accepted, for tests and local demos. Off, every provider URL must be https
    /// on a public address (CONTRACT.md section 11).
    pub sso_allow_loopback: bool,
    /// `ASSENT_HEADER_READ_TIMEOUT_SECS`: how long a client may take to send a whole request head,
    /// counted from its connection (or, on HTTP/1.1, from the end of its previous response).
    pub header_read_timeout: Duration,
    /// `ASSENT_IDLE_TIMEOUT_SECS`: a connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// `ASSENT_MAX_CONNECTIONS`: connections served at once; beyond, new ones wait to be accepted.
    pub max_connections: usize,
    /// `ASSENT_MAX_SSE_STREAMS`: challenge event streams this instance holds open at once.
    pub max_sse_streams: usize,
    /// `ASSENT_MAX_SSE_PER_SESSION`: event streams one console or support session may hold open.
    pub max_sse_per_session: usize,
}

/// A push platform's configuration error, as the one line that names the variable.
fn push_error(e: crate::push::ConfigError) -> ConfigError {
    let var = e.var();
    let line = e.to_string();
    let reason = line
        .strip_prefix(&format!("{var}: "))
        .unwrap_or(&line)
        .to_owned();
    ConfigError { var, reason }
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

fn whole_number(
    get: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
    default: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    match get(var) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(bad(
                var,
                format!("expected a whole number from 1 to {max}, got {v:?}"),
            )),
        },
    }
}

fn positive_days(
    get: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
    default: i64,
) -> Result<Duration, ConfigError> {
    match get(var) {
        None => Ok(Duration::days(default)),
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if (1..=3650).contains(&n) => Ok(Duration::days(n)),
            _ => Err(bad(
                var,
                format!("expected a whole number of days between 1 and 3650, got {v:?}"),
            )),
        },
    }
}

/// Base64 keys separated by commas or line breaks; an error names the entry by its place, never
/// its text.
fn old_master_keys(var: &'static str, text: &str) -> Result<Vec<Secret>, ConfigError> {
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .enumerate()
        .map(|(i, key)| {
            MasterKey::from_base64(key)
                .map(|_| Secret::new(key.to_owned()))
                .map_err(|e| bad(var, format!("key {} {e}", i + 1)))
        })
        .collect()
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
            // Checked here so that a typo is a one-line error naming the variable; the message
            // never repeats the URL, which may hold a password.
            if Url::parse(&db_text)
                .ok()
                .filter(|u| u.host().is_some() || u.query().is_some_and(|q| q.contains("host=")))
                .is_none()
            {
                return Err(bad(
                    "ASSENT_DATABASE_URL",
                    "expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
                ));
            }
            Database::Postgres {
                url: db_text.clone(),
            }
        } else {
            return Err(bad(
                "ASSENT_DATABASE_URL",
                "expected sqlite://FILE or postgres://…",
            ));
        };

        // Parsed by the Redis client itself, so what passes here connects the same way later. The
        // message never repeats the URL, which may hold a password.
        let redis_url = match get("ASSENT_REDIS_URL") {
            None => None,
            Some(text) => {
                redis::Client::open(text.as_str()).map_err(|_| {
                    bad(
                        "ASSENT_REDIS_URL",
                        "expected redis://[USER:PASSWORD@]HOST[:PORT][/DB] or redis+unix:///PATH",
                    )
                })?;
                Some(Secret::new(text))
            }
        };

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
            (None, None) => match &database {
                Database::Sqlite { path, .. } => {
                    let mut key_path = path.clone().into_os_string();
                    key_path.push(".key");
                    MasterKeySource::File(PathBuf::from(key_path))
                }
                // No file sits beside a Postgres database, and every instance must seal and open
                // tokens with the same key: the operator provides it.
                Database::Postgres { .. } => {
                    return Err(bad(
                        "ASSENT_MASTER_KEY",
                        "required with a postgres:// database: set ASSENT_MASTER_KEY (or ASSENT_MASTER_KEY_FILE) to the base64 of 32 bytes, the same on every instance",
                    ))
                }
            },
        };

        let old_master_keys = match (
            get("ASSENT_OLD_MASTER_KEYS"),
            get("ASSENT_OLD_MASTER_KEYS_FILE"),
        ) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "ASSENT_OLD_MASTER_KEYS",
                    "set ASSENT_OLD_MASTER_KEYS or ASSENT_OLD_MASTER_KEYS_FILE, not both",
                ))
            }
            (Some(keys), None) => old_master_keys("ASSENT_OLD_MASTER_KEYS", &keys)?,
            (None, Some(file)) => {
                let keys =
                    zeroize::Zeroizing::new(std::fs::read_to_string(&file).map_err(|e| {
                        bad(
                            "ASSENT_OLD_MASTER_KEYS_FILE",
                            format!("cannot read {file}: {e}"),
                        )
                    })?);
                old_master_keys("ASSENT_OLD_MASTER_KEYS_FILE", &keys)?
            }
            (None, None) => Vec::new(),
        };

        Ok(Self {
            listen,
            public_origin: public.origin().ascii_serialization(),
            public_url,
            secure_cookies,
            database,
            redis_url,
            master_key,
            old_master_keys,
            challenge_ttl: positive_secs(get, "ASSENT_CHALLENGE_TTL_SECS", 120)?,
            challenges_per_hour: match get("ASSENT_CHALLENGES_PER_HOUR") {
                None => 20,
                Some(v) => v
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n <= 100_000)
                    .ok_or_else(|| {
                        bad(
                            "ASSENT_CHALLENGES_PER_HOUR",
                            format!(
                                "expected a whole number from 0 (no limit) to 100000, got {v:?}"
                            ),
                        )
                    })?,
            },
            not_me_block: positive_secs(get, "ASSENT_NOT_ME_BLOCK_SECS", 15 * 60)?,
            reauth_window: positive_secs(get, "ASSENT_REAUTH_WINDOW_SECS", 600)?,
            session_idle: positive_secs(get, "ASSENT_SESSION_IDLE_SECS", 30 * 60)?,
            session_max: positive_secs(get, "ASSENT_SESSION_MAX_SECS", 12 * 3600)?,
            scim_log_retention: positive_days(get, "ASSENT_SCIM_LOG_RETENTION_DAYS", 30)?,
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
            log_json: match get("ASSENT_LOG_FORMAT").as_deref().map(str::trim) {
                None | Some("text") => false,
                Some("json") => true,
                Some(v) => {
                    return Err(bad(
                        "ASSENT_LOG_FORMAT",
                        format!("expected json or text, got {v:?}"),
                    ))
                }
            },
            trusted_proxies: match get("ASSENT_TRUSTED_PROXIES") {
                None => Vec::new(),
                Some(list) => list
                    .split(',')
                    .filter(|item| !item.trim().is_empty())
                    .map(|item| {
                        crate::domain::proxy::Cidr::parse(item).ok_or_else(|| {
                            bad(
                                "ASSENT_TRUSTED_PROXIES",
                                format!(
                                    "{:?} is not an address or block such as 10.0.0.0/8",
                                    item.trim()
                                ),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?,
            },
            apns: crate::push::ApnsConfig::from_lookup(get).map_err(push_error)?,
            fcm: crate::push::FcmConfig::from_lookup(get).map_err(push_error)?,
            sso_allow_loopback: match get("ASSENT_SSO_ALLOW_LOOPBACK").as_deref().map(str::trim) {
                None | Some("0") => false,
                Some("1") => true,
                Some(v) => {
                    return Err(bad(
                        "ASSENT_SSO_ALLOW_LOOPBACK",
                        format!("expected 1 (allow a loopback provider) or 0, got {v:?}"),
                    ))
                }
            },
            header_read_timeout: positive_secs(get, "ASSENT_HEADER_READ_TIMEOUT_SECS", 10)?,
            idle_timeout: positive_secs(get, "ASSENT_IDLE_TIMEOUT_SECS", 60)?,
            // A connection costs a file descriptor, a task and at most 64 KiB of unread request
            // (src/http/serve.rs): 4096 fit in a few hundred MiB, and idle ones cost no CPU.
            max_connections: whole_number(get, "ASSENT_MAX_CONNECTIONS", 4096, 1_000_000)?,
            max_sse_streams: whole_number(get, "ASSENT_MAX_SSE_STREAMS", 1000, 1_000_000)?,
            // A few tabs of one person, each following a challenge.
            max_sse_per_session: whole_number(get, "ASSENT_MAX_SSE_PER_SESSION", 8, 1_000_000)?,
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
        assert_eq!(c.challenges_per_hour, 20);
        assert_eq!(c.not_me_block, Duration::minutes(15));
        assert_eq!(c.scim_log_retention, Duration::days(30));
        assert_eq!(c.header_read_timeout, Duration::seconds(10));
        assert_eq!(c.idle_timeout, Duration::seconds(60));
        assert_eq!(c.max_connections, 4096);
        assert_eq!(c.max_sse_streams, 1000);
        assert_eq!(c.max_sse_per_session, 8);
        assert!(
            matches!(c.master_key, MasterKeySource::File(ref p) if p.to_str() == Some("assent.db.key"))
        );
        assert_eq!(c.scim_base_url(), "http://127.0.0.1:8080/v1/scim/v2");
        assert!(!c.sso_allow_loopback);
    }

    #[test]
    fn a_loopback_provider_is_allowed_only_when_asked() {
        assert!(
            config(&[("ASSENT_SSO_ALLOW_LOOPBACK", "1")])
                .unwrap()
                .sso_allow_loopback
        );
        assert!(
            !config(&[("ASSENT_SSO_ALLOW_LOOPBACK", "0")])
                .unwrap()
                .sso_allow_loopback
        );
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
            ("ASSENT_CHALLENGES_PER_HOUR", "-1"),
            ("ASSENT_CHALLENGES_PER_HOUR", "many"),
            ("ASSENT_NOT_ME_BLOCK_SECS", "0"),
            ("ASSENT_REAUTH_WINDOW_SECS", "ten minutes"),
            ("ASSENT_SCIM_LOG_RETENTION_DAYS", "0"),
            ("ASSENT_SCIM_LOG_RETENTION_DAYS", "a month"),
            ("ASSENT_LOG", "assent=loudest"),
            ("ASSENT_LOG_FORMAT", "yaml"),
            ("ASSENT_TRUSTED_PROXIES", "10.0.0.0/8, nope"),
            ("ASSENT_SSO_ALLOW_LOOPBACK", "yes"),
            ("ASSENT_SSO_ALLOW_LOOPBACK", "true"),
            ("ASSENT_HEADER_READ_TIMEOUT_SECS", "0"),
            ("ASSENT_HEADER_READ_TIMEOUT_SECS", "ten"),
            ("ASSENT_IDLE_TIMEOUT_SECS", "-1"),
            ("ASSENT_MAX_CONNECTIONS", "0"),
            ("ASSENT_MAX_CONNECTIONS", "lots"),
            ("ASSENT_MAX_SSE_STREAMS", "0"),
            ("ASSENT_MAX_SSE_STREAMS", "2000000"),
            ("ASSENT_MAX_SSE_PER_SESSION", "0"),
            ("ASSENT_MAX_SSE_PER_SESSION", "8.5"),
        ] {
            let err = config(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var);
            let line = err.to_string();
            assert!(line.starts_with(var) && !line.contains('\n'), "{line}");
        }
    }

    #[test]
    fn postgres_needs_a_given_master_key_and_hides_its_password() {
        let url = "postgres://assent:s3cret-pw@db.internal:5432/assent";
        let err = config(&[("ASSENT_DATABASE_URL", url)]).unwrap_err();
        assert_eq!(err.var, "ASSENT_MASTER_KEY");
        let line = err.to_string();
        assert!(
            line.starts_with("ASSENT_MASTER_KEY") && !line.contains('\n'),
            "{line}"
        );
        assert!(!line.contains("s3cret-pw"), "{line}");

        let key = MasterKey::generate();
        let c = config(&[
            ("ASSENT_DATABASE_URL", url),
            ("ASSENT_MASTER_KEY", key.to_base64().as_str()),
        ])
        .unwrap();
        assert_eq!(c.database, Database::Postgres { url: url.into() });
        assert!(matches!(c.master_key, MasterKeySource::Given(_)));
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(
            shown.contains("postgres://assent:***@db.internal:5432/assent"),
            "{shown}"
        );
        let in_query = Database::Postgres {
            url: "postgres://db.internal/assent?user=a&password=s3cret-pw".into(),
        };
        assert!(!in_query.redacted().contains("s3cret-pw"));

        let err = config(&[("ASSENT_DATABASE_URL", "postgres://")]).unwrap_err();
        assert_eq!(err.var, "ASSENT_DATABASE_URL");
    }

    #[test]
    fn a_redis_url_is_taken_and_its_password_never_printed() {
        assert!(config(&[]).unwrap().redis_url.is_none());
        let c = config(&[("ASSENT_REDIS_URL", "redis://:hunter2@redis.internal:6380/2")]).unwrap();
        assert_eq!(
            c.redis_url.as_ref().map(|u| u.expose()),
            Some("redis://:hunter2@redis.internal:6380/2")
        );
        assert!(!format!("{c:?}").contains("hunter2"));
        let err = config(&[("ASSENT_REDIS_URL", "http://:hunter2@x")]).unwrap_err();
        assert_eq!(err.var, "ASSENT_REDIS_URL");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn old_master_keys_are_validated_and_never_printed() {
        assert!(config(&[]).unwrap().old_master_keys.is_empty());
        let (a, b) = (MasterKey::generate(), MasterKey::generate());
        let list = format!("{}, {}\n", a.to_base64().as_str(), b.to_base64().as_str());
        let c = config(&[("ASSENT_OLD_MASTER_KEYS", list.as_str())]).unwrap();
        assert_eq!(c.old_master_keys.len(), 2);
        assert!(!format!("{c:?}").contains(a.to_base64().as_str()));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("old");
        std::fs::write(
            &file,
            format!("{}\n{}\n", a.to_base64().as_str(), b.to_base64().as_str()),
        )
        .unwrap();
        let c = config(&[("ASSENT_OLD_MASTER_KEYS_FILE", file.to_str().unwrap())]).unwrap();
        assert_eq!(c.old_master_keys.len(), 2);

        let bad_list = format!("{},not-a-key", a.to_base64().as_str());
        for (var, value) in [
            ("ASSENT_OLD_MASTER_KEYS", bad_list.as_str()),
            ("ASSENT_OLD_MASTER_KEYS_FILE", "/nonexistent/old-keys"),
        ] {
            let err = config(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var);
            let line = err.to_string();
            assert!(line.starts_with(var) && !line.contains('\n'), "{line}");
            assert!(!line.contains(a.to_base64().as_str()), "{line}");
        }
        assert!(config(&[("ASSENT_OLD_MASTER_KEYS", bad_list.as_str())])
            .unwrap_err()
            .to_string()
            .contains("key 2"));
    }

    #[test]
    fn a_given_key_is_never_printed() {
        let key = MasterKey::generate();
        let c = config(&[("ASSENT_MASTER_KEY", key.to_base64().as_str())]).unwrap();
        assert!(!format!("{c:?}").contains(key.to_base64().as_str()));
    }
}
