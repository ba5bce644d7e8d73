//! The push providers' variables, `ASSENT_APNS_*` and `ASSENT_FCM_*`, read and checked with the
//! rest of the configuration (`Config::from_lookup`); `push/` only uses what they give.

use jsonwebtoken::EncodingKey;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::domain::crypto::Secret;
use crate::push::{ApnsConfig, ApnsEndpoint, ConfigError, FcmConfig, RetryPolicy, ServiceAccount};

/// FCM HTTP v1's origin, unless `ASSENT_FCM_ENDPOINT` names another (a local server in tests).
const GOOGLE_ENDPOINT: &str = "https://fcm.googleapis.com";

/// Reads configuration through `lookup` (the process environment in production), treating an
/// empty value as unset, as container runtimes pass `VAR=` for "not given".
fn lookup_var(lookup: &dyn Fn(&str) -> Option<String>, var: &str) -> Option<String> {
    lookup(var)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn read_config_file(var: &'static str, path: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
        var,
        reason: format!("cannot read {path}: {e}"),
    })
}

fn parse_endpoint(var: &'static str, value: &str) -> Result<url::Url, ConfigError> {
    let url = url::Url::parse(value).map_err(|e| ConfigError::Invalid {
        var,
        reason: format!("not a URL: {e}"),
    })?;
    let bare_origin = url.path() == "/" && url.query().is_none() && url.fragment().is_none();
    if !matches!(url.scheme(), "https" | "http") || url.host().is_none() || !bare_origin {
        return Err(ConfigError::Invalid {
            var,
            reason: "expected an origin such as https://host:port".into(),
        });
    }
    Ok(url)
}

impl ApnsConfig {
    pub const KEY_FILE: &'static str = "ASSENT_APNS_KEY_FILE";
    pub const KEY_ID: &'static str = "ASSENT_APNS_KEY_ID";
    pub const TEAM_ID: &'static str = "ASSENT_APNS_TEAM_ID";
    pub const TOPIC: &'static str = "ASSENT_APNS_TOPIC";
    pub const ENDPOINT: &'static str = "ASSENT_APNS_ENDPOINT";
    pub const CA_FILE: &'static str = "ASSENT_APNS_CA_FILE";

    /// `None` when no `ASSENT_APNS_*` variable is set (push to iPhones is off; they poll).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let all = [
            Self::KEY_FILE,
            Self::KEY_ID,
            Self::TEAM_ID,
            Self::TOPIC,
            Self::ENDPOINT,
            Self::CA_FILE,
        ];
        let Some(because) = all
            .into_iter()
            .find(|var| lookup_var(&lookup, var).is_some())
        else {
            return Ok(None);
        };
        let required = |var: &'static str| {
            lookup_var(&lookup, var).ok_or(ConfigError::Missing { var, because })
        };

        let key_path = required(Self::KEY_FILE)?;
        let signing_key = parse_signing_key(&read_config_file(Self::KEY_FILE, &key_path)?)?;
        let key_id = apple_id(Self::KEY_ID, required(Self::KEY_ID)?)?;
        let team_id = apple_id(Self::TEAM_ID, required(Self::TEAM_ID)?)?;
        let topic = required(Self::TOPIC)?;
        if !topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(ConfigError::Invalid {
                var: Self::TOPIC,
                reason: "expected the app's bundle id, such as com.example.assent".into(),
            });
        }
        let endpoint = match lookup_var(&lookup, Self::ENDPOINT) {
            None => ApnsEndpoint::Apple,
            Some(value) => {
                let url = parse_endpoint(Self::ENDPOINT, &value)?;
                // APNs is HTTP/2 over TLS only; a cleartext endpoint is a mistake.
                if url.scheme() != "https" {
                    return Err(ConfigError::Invalid {
                        var: Self::ENDPOINT,
                        reason: "APNs is only spoken over https".into(),
                    });
                }
                ApnsEndpoint::Override(url)
            }
        };
        let extra_roots = match lookup_var(&lookup, Self::CA_FILE) {
            None => Vec::new(),
            Some(path) => parse_roots(&read_config_file(Self::CA_FILE, &path)?)?,
        };
        Ok(Some(Self {
            signing_key,
            key_id,
            team_id,
            topic,
            endpoint,
            extra_roots,
            retry: RetryPolicy::default(),
        }))
    }
}

fn parse_signing_key(pem: &str) -> Result<Secret, ConfigError> {
    use p256::pkcs8::DecodePrivateKey;
    let invalid = || ConfigError::Invalid {
        var: ApnsConfig::KEY_FILE,
        reason: "not a PKCS#8 P-256 private key (the .p8 file Apple gives)".into(),
    };
    // p256 checks the curve; jsonwebtoken only checks the PEM label until it signs.
    p256::SecretKey::from_pkcs8_pem(pem).map_err(|_| invalid())?;
    EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|_| invalid())?;
    Ok(Secret::new(pem.to_owned()))
}

/// Key ids and team ids are Apple's 10-character identifiers; they go into a JWT header and claim.
fn apple_id(var: &'static str, value: String) -> Result<String, ConfigError> {
    if value.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(value)
    } else {
        Err(ConfigError::Invalid {
            var,
            reason: "expected letters and digits only, as shown in Apple's developer account"
                .into(),
        })
    }
}

fn parse_roots(pem: &str) -> Result<Vec<reqwest::Certificate>, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        var: ApnsConfig::CA_FILE,
        reason,
    };
    let ders = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not PEM certificates: {e}")))?;
    if ders.is_empty() {
        return Err(invalid("holds no PEM certificate".into()));
    }
    ders.iter()
        .map(|der| {
            reqwest::Certificate::from_der(der)
                .map_err(|e| invalid(format!("bad certificate: {e}")))
        })
        .collect()
}

impl FcmConfig {
    pub const SERVICE_ACCOUNT_FILE: &'static str = "ASSENT_FCM_SERVICE_ACCOUNT_FILE";
    pub const ENDPOINT: &'static str = "ASSENT_FCM_ENDPOINT";

    /// `None` when no `ASSENT_FCM_*` variable is set (push to Android phones is off; they poll).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let endpoint = lookup_var(&lookup, Self::ENDPOINT);
        let Some(path) = lookup_var(&lookup, Self::SERVICE_ACCOUNT_FILE) else {
            return match endpoint {
                None => Ok(None),
                Some(_) => Err(ConfigError::Missing {
                    var: Self::SERVICE_ACCOUNT_FILE,
                    because: Self::ENDPOINT,
                }),
            };
        };
        let json = read_config_file(Self::SERVICE_ACCOUNT_FILE, &path)?;
        let service_account =
            ServiceAccount::from_json(&json).map_err(|reason| ConfigError::Invalid {
                var: Self::SERVICE_ACCOUNT_FILE,
                reason,
            })?;
        let endpoint = match endpoint {
            Some(value) => parse_endpoint(Self::ENDPOINT, &value)?,
            None => url::Url::parse(GOOGLE_ENDPOINT).expect("a valid URL"),
        };
        Ok(Some(Self {
            service_account,
            endpoint,
            retry: RetryPolicy::default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_bare_origins() {
        assert!(parse_endpoint("V", "https://127.0.0.1:8443").is_ok());
        assert!(parse_endpoint("V", "http://localhost:9000/").is_ok());
        for bad in [
            "127.0.0.1:8443",
            "ftp://host",
            "https://host/3/device",
            "not a url",
        ] {
            let err = parse_endpoint("V", bad).unwrap_err();
            assert_eq!(err.var(), "V", "{bad}");
        }
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let lookup = |k: &str| (k == "A").then(|| "  ".to_owned());
        assert_eq!(lookup_var(&lookup, "A"), None);
        assert_eq!(lookup_var(&lookup, "B"), None);
    }

    #[test]
    fn a_key_on_another_curve_is_refused() {
        // Right PEM label, wrong curve: jsonwebtoken alone would only fail at the first push.
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let pem = p384.serialize_pem();
        assert!(EncodingKey::from_ec_pem(pem.as_bytes()).is_ok());
        assert_eq!(
            parse_signing_key(&pem).unwrap_err().var(),
            ApnsConfig::KEY_FILE
        );
    }
}
