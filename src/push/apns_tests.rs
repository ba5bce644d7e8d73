//! Unit tests of `apns.rs`.

use std::collections::HashMap;
use std::io::Write;

use jsonwebtoken::{DecodingKey, Validation};
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use time::macros::datetime;

use super::*;
use crate::clock::{Clock, ManualClock};

struct TestKey {
    private_pem: String,
    public_pem: String,
}

fn test_key() -> TestKey {
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    TestKey {
        private_pem: secret.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public_pem: secret
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    }
}

fn tokens(key: &TestKey) -> ProviderTokens {
    ProviderTokens {
        key: EncodingKey::from_ec_pem(key.private_pem.as_bytes()).unwrap(),
        key_id: "KEYID12345".into(),
        team_id: "TEAMID1234".into(),
        current: Mutex::new(None),
    }
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    iat: i64,
}

#[test]
fn provider_token_is_es256_with_kid_iss_and_iat() {
    let key = test_key();
    let now = datetime!(2026-11-28 12:00:00 UTC);
    let token = tokens(&key).current(now).unwrap();
    let header = jsonwebtoken::decode_header(&token.jwt).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(header.kid.as_deref(), Some("KEYID12345"));
    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let decoded = jsonwebtoken::decode::<Claims>(
        &token.jwt,
        &DecodingKey::from_ec_pem(key.public_pem.as_bytes()).unwrap(),
        &validation,
    )
    .unwrap();
    assert_eq!(decoded.claims.iss, "TEAMID1234");
    assert_eq!(decoded.claims.iat, now.unix_timestamp());
}

#[test]
fn provider_token_is_reused_then_renewed_at_fifty_minutes() {
    let clock = ManualClock::new(datetime!(2026-11-28 12:00:00 UTC));
    let tokens = tokens(&test_key());
    let first = tokens.current(clock.now()).unwrap();
    clock.advance(time::Duration::minutes(49));
    assert_eq!(tokens.current(clock.now()).unwrap().jwt, first.jwt);
    clock.advance(time::Duration::minutes(1));
    let second = tokens.current(clock.now()).unwrap();
    assert_ne!(second.jwt, first.jwt);
    assert_eq!(second.issued_at, clock.now());
}

#[test]
fn a_refused_token_is_renewed_only_if_twenty_minutes_old() {
    let clock = ManualClock::new(datetime!(2026-11-28 12:00:00 UTC));
    let tokens = tokens(&test_key());
    let first = tokens.current(clock.now()).unwrap();

    clock.advance(time::Duration::minutes(19));
    assert_eq!(
        tokens.renew_rejected(&first, clock.now()).unwrap(),
        Renewal::TooSoon {
            age: time::Duration::minutes(19)
        }
    );
    assert_eq!(tokens.current(clock.now()).unwrap().jwt, first.jwt);

    clock.advance(time::Duration::minutes(1));
    assert_eq!(
        tokens.renew_rejected(&first, clock.now()).unwrap(),
        Renewal::Renewed
    );
    let second = tokens.current(clock.now()).unwrap();
    assert_ne!(second.jwt, first.jwt);

    // A second push refused with the old token does not renew again.
    assert_eq!(
        tokens.renew_rejected(&first, clock.now()).unwrap(),
        Renewal::AlreadyRenewed
    );
    assert_eq!(tokens.current(clock.now()).unwrap().jwt, second.jwt);
}

#[test]
fn provider_token_debug_hides_the_jwt() {
    let token = tokens(&test_key())
        .current(datetime!(2026-11-28 12:00:00 UTC))
        .unwrap();
    let printed = format!("{token:?}");
    assert!(!printed.contains(&*token.jwt), "{printed}");
}

fn message(kind: PushKind) -> PushMessage {
    PushMessage {
        kind,
        challenge_id: "ch_1".into(),
        action: "scim_token.reveal".into(),
        workspace_name: "Acme".into(),
        expires_at: datetime!(2026-11-28 12:02:00 UTC),
    }
}

#[test]
fn challenge_payload_is_a_mutable_alert_with_the_challenge_data() {
    assert_eq!(
        payload(&message(PushKind::Challenge)),
        json!({
            "aps": {
                "alert": {
                    "title": "Reveal the SCIM token?",
                    "body": "Acme: check the number on the console, then approve or deny.",
                },
                "mutable-content": 1,
            },
            "kind": "challenge",
            "challenge_id": "ch_1",
            "action": "scim_token.reveal",
            "workspace": "Acme",
            "expires_at": "2026-11-28T12:02:00Z",
        })
    );
}

#[test]
fn resolved_payload_is_silent() {
    let payload = payload(&message(PushKind::Resolved));
    assert_eq!(payload["aps"], json!({ "content-available": 1 }));
    assert_eq!(payload["kind"], "resolved");
    assert_eq!(payload["challenge_id"], "ch_1");
}

#[test]
fn apple_hosts_are_picked_per_environment_unless_overridden() {
    assert_eq!(
        ApnsEndpoint::Apple
            .origin(ApnsEnvironment::Production)
            .as_str(),
        "https://api.push.apple.com/"
    );
    assert_eq!(
        ApnsEndpoint::Apple
            .origin(ApnsEnvironment::Sandbox)
            .as_str(),
        "https://api.sandbox.push.apple.com/"
    );
    let local = ApnsEndpoint::Override("https://127.0.0.1:8443".parse().unwrap());
    assert_eq!(
        local.origin(ApnsEnvironment::Sandbox).as_str(),
        "https://127.0.0.1:8443/"
    );
}

#[test]
fn device_tokens_must_be_hex() {
    assert!(is_device_token(&"ab12".repeat(16)));
    for bad in ["", "zz", "ab/../x", "ab?x=1", &"a".repeat(201)] {
        assert!(!is_device_token(bad), "{bad}");
    }
}

struct Vars(HashMap<&'static str, String>);

impl Vars {
    fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        |var| self.0.get(var).cloned()
    }
}

fn write_temp(contents: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(contents.as_bytes()).unwrap();
    file
}

fn full_vars(key_file: &tempfile::NamedTempFile) -> Vars {
    Vars(HashMap::from([
        (ApnsConfig::KEY_FILE, key_file.path().display().to_string()),
        (ApnsConfig::KEY_ID, "KEYID12345".to_owned()),
        (ApnsConfig::TEAM_ID, "TEAMID1234".to_owned()),
        (ApnsConfig::TOPIC, "com.example.assent".to_owned()),
    ]))
}

#[test]
fn unconfigured_apns_is_none() {
    assert!(ApnsConfig::from_lookup(|_| None).unwrap().is_none());
}

#[test]
fn a_complete_configuration_uses_apple_hosts_by_default() {
    let key_file = write_temp(&test_key().private_pem);
    let config = ApnsConfig::from_lookup(full_vars(&key_file).lookup())
        .unwrap()
        .unwrap();
    assert_eq!(config.endpoint, ApnsEndpoint::Apple);
    assert!(config.extra_roots.is_empty());
    assert!(!format!("{config:?}").contains("PRIVATE KEY"));
}

#[test]
fn each_missing_variable_is_named() {
    let key_file = write_temp(&test_key().private_pem);
    for var in [
        ApnsConfig::KEY_FILE,
        ApnsConfig::KEY_ID,
        ApnsConfig::TEAM_ID,
        ApnsConfig::TOPIC,
    ] {
        let mut vars = full_vars(&key_file);
        vars.0.remove(var);
        let err = ApnsConfig::from_lookup(vars.lookup()).unwrap_err();
        assert_eq!(err.var(), var);
        assert!(err.to_string().starts_with(var), "{err}");
    }
    // An endpoint alone is a half-made configuration, not "APNs off".
    let only_endpoint =
        |var: &str| (var == ApnsConfig::ENDPOINT).then(|| "https://127.0.0.1:1".to_owned());
    assert_eq!(
        ApnsConfig::from_lookup(only_endpoint).unwrap_err().var(),
        ApnsConfig::KEY_FILE
    );
}

#[test]
fn malformed_values_are_named() {
    let key_file = write_temp(&test_key().private_pem);
    let not_a_key = write_temp("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    let not_a_cert = write_temp("hello");
    let cases = [
        (ApnsConfig::KEY_FILE, not_a_key.path().display().to_string()),
        (ApnsConfig::KEY_FILE, "/nonexistent/AuthKey.p8".to_owned()),
        (ApnsConfig::KEY_ID, "KEY ID".to_owned()),
        (ApnsConfig::TOPIC, "com.example/app".to_owned()),
        (ApnsConfig::ENDPOINT, "http://127.0.0.1:8443".to_owned()),
        (
            ApnsConfig::ENDPOINT,
            "https://127.0.0.1:8443/3/device".to_owned(),
        ),
        (ApnsConfig::CA_FILE, not_a_cert.path().display().to_string()),
    ];
    for (var, value) in cases {
        let mut vars = full_vars(&key_file);
        vars.0.insert(var, value.clone());
        let err = ApnsConfig::from_lookup(vars.lookup()).unwrap_err();
        assert_eq!(err.var(), var, "{value}: {err}");
    }
}
