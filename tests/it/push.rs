//! Push delivery against local servers that speak APNs (HTTP/2 over TLS) and FCM HTTP v1 with its
//! OAuth token endpoint. The clients are configured exactly as in production, through the
//! `ASSENT_APNS_*` / `ASSENT_FCM_*` variables, with only the endpoints and the extra CA pointing here.

use crate::support::push as support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use assent::clock::{Clock, ManualClock, SharedClock, SystemClock};
use assent::push::{
    install_crypto_provider, ApnsClient, ApnsConfig, ApnsEnvironment, Delivery, FcmClient,
    FcmConfig, Platform, PushKind, PushMessage, PushProvider, PushTarget, RetryPolicy,
};
use futures_util::future::join_all;
use hyper::http::Version;
use serde_json::{json, Value};
use support::apns_server::{ApnsReply, ApnsServer};
use support::fcm_server::{FcmReply, FcmServer};
use tempfile::TempDir;
use time::OffsetDateTime;

/// Short waits so that retry tests take milliseconds; the timeout is far above a local answer.
fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        request_timeout: Duration::from_secs(5),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        resolved_grace: Duration::from_secs(5),
    }
}

fn system_clock() -> SharedClock {
    Arc::new(SystemClock)
}

struct Apns {
    server: ApnsServer,
    client: ApnsClient,
    _files: TempDir,
}

async fn apns(clock: SharedClock, retry: RetryPolicy) -> Apns {
    install_crypto_provider();
    let server = ApnsServer::start().await;
    let files = tempfile::tempdir().unwrap();
    let key_file = files.path().join("AuthKey.p8");
    let ca_file = files.path().join("ca.pem");
    std::fs::write(&key_file, &server.credentials().private_key_pem).unwrap();
    std::fs::write(&ca_file, server.ca_pem()).unwrap();
    let vars = HashMap::from([
        ("ASSENT_APNS_KEY_FILE", key_file.display().to_string()),
        ("ASSENT_APNS_KEY_ID", server.credentials().key_id.clone()),
        ("ASSENT_APNS_TEAM_ID", server.credentials().team_id.clone()),
        ("ASSENT_APNS_TOPIC", server.credentials().topic.clone()),
        ("ASSENT_APNS_ENDPOINT", server.endpoint()),
        ("ASSENT_APNS_CA_FILE", ca_file.display().to_string()),
    ]);
    let mut config = ApnsConfig::from_lookup(|var| vars.get(var).cloned())
        .unwrap()
        .expect("configured");
    config.retry = retry;
    let client = ApnsClient::new(config, clock).unwrap();
    Apns {
        server,
        client,
        _files: files,
    }
}

struct Fcm {
    server: FcmServer,
    client: FcmClient,
    _files: TempDir,
}

async fn fcm(clock: SharedClock, retry: RetryPolicy) -> Fcm {
    install_crypto_provider();
    let server = FcmServer::start().await;
    let files = tempfile::tempdir().unwrap();
    let account_file = files.path().join("service-account.json");
    std::fs::write(&account_file, server.service_account_json()).unwrap();
    let vars = HashMap::from([
        (
            "ASSENT_FCM_SERVICE_ACCOUNT_FILE",
            account_file.display().to_string(),
        ),
        ("ASSENT_FCM_ENDPOINT", server.endpoint()),
    ]);
    let mut config = FcmConfig::from_lookup(|var| vars.get(var).cloned())
        .unwrap()
        .expect("configured");
    config.retry = retry;
    let client = FcmClient::new(config, clock).unwrap();
    Fcm {
        server,
        client,
        _files: files,
    }
}

fn apns_token(n: u32) -> String {
    format!("{:064x}", 0xa11ce_u64 * 1_000_000 + u64::from(n))
}

fn fcm_token(n: u32) -> String {
    format!("fR3g{n}:APA91bH-assent-test-registration-token-{n:04}")
}

fn apns_target(n: u32) -> PushTarget {
    PushTarget {
        device_id: format!("iphone-{n}"),
        platform: Platform::Apns,
        token: apns_token(n),
        apns_environment: Some(ApnsEnvironment::Production),
    }
}

fn fcm_target(n: u32) -> PushTarget {
    PushTarget {
        device_id: format!("pixel-{n}"),
        platform: Platform::Fcm,
        token: fcm_token(n),
        apns_environment: None,
    }
}

fn message(kind: PushKind, expires_at: OffsetDateTime) -> PushMessage {
    PushMessage {
        kind,
        challenge_id: "01JDQ7Z3M4N5P6Q7R8S9T0VWXY".into(),
        action: "scim_token.reveal".into(),
        workspace_name: "Acme Corp".into(),
        expires_at,
    }
}

fn challenge_in(secs: i64) -> PushMessage {
    message(
        PushKind::Challenge,
        OffsetDateTime::now_utc() + time::Duration::seconds(secs),
    )
}

fn failed(reason: &str) -> Delivery {
    Delivery::Failed {
        reason: reason.into(),
    }
}

fn invalid(reason: &str) -> Delivery {
    Delivery::InvalidToken {
        reason: reason.into(),
    }
}

fn apns_answers(server: &ApnsServer, token: &str) -> Vec<Option<u16>> {
    server
        .received_for(token)
        .iter()
        .map(|r| r.answer.as_ref().map(|(status, _)| *status))
        .collect()
}

fn fcm_answers(server: &FcmServer, token: &str) -> Vec<Option<u16>> {
    server
        .received_for(token)
        .iter()
        .map(|r| r.status)
        .collect()
}

#[tokio::test]
async fn apns_delivers_an_alert_over_http2_with_apples_headers() {
    let apns = apns(system_clock(), fast_retry()).await;
    let msg = challenge_in(120);

    let delivery = apns.client.deliver(&apns_target(1), &msg).await;

    assert_eq!(delivery, Delivery::Delivered);
    let received = apns.server.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.device_token, apns_token(1));
    assert_eq!(request.version, Version::HTTP_2);
    assert_eq!(request.answer, Some((200, None)));
    assert!(request.provider_token_iat.is_some(), "JWT verified");
    assert_eq!(request.header("apns-topic"), Some("com.example.assent"));
    assert_eq!(request.header("apns-push-type"), Some("alert"));
    assert_eq!(request.header("apns-priority"), Some("10"));
    let expiration = msg.expires_at.unix_timestamp().to_string();
    assert_eq!(request.header("apns-expiration"), Some(expiration.as_str()));
    assert_eq!(
        request.header("apns-collapse-id"),
        Some(msg.challenge_id.as_str())
    );
    let payload = request.json();
    assert_eq!(payload["aps"]["alert"]["title"], "Reveal the SCIM token?");
    let body = payload["aps"]["alert"]["body"].as_str().unwrap();
    assert!(body.contains("Acme Corp"), "{body}");
    assert_eq!(payload["aps"]["mutable-content"], 1);
    assert_eq!(payload["kind"], "challenge");
    assert_eq!(payload["challenge_id"], msg.challenge_id.as_str());
    assert_eq!(payload["action"], "scim_token.reveal");
    assert_eq!(payload["workspace"], "Acme Corp");
    assert_eq!(
        payload["expires_at"],
        assent::clock::rfc3339(msg.expires_at)
    );
}

#[tokio::test]
async fn fcm_delivers_a_data_message_with_an_oauth_access_token() {
    let fcm = fcm(system_clock(), fast_retry()).await;
    let msg = challenge_in(120);

    let delivery = fcm.client.deliver(&fcm_target(1), &msg).await;

    assert_eq!(delivery, Delivery::Delivered);
    assert_eq!(fcm.server.grants(), 1);
    let received = fcm.server.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.status, Some(200));
    assert!(request.bearer.as_deref().unwrap().starts_with("ya29."));
    let message = &request.body["message"];
    assert_eq!(message["token"], fcm_token(1).as_str());
    assert_eq!(
        message["data"],
        json!({
            "kind": "challenge",
            "challenge_id": msg.challenge_id,
            "action": "scim_token.reveal",
            "workspace": "Acme Corp",
            "expires_at": assent::clock::rfc3339(msg.expires_at),
        })
    );
    assert_eq!(message["android"]["priority"], "high");
    let ttl = message["android"]["ttl"].as_str().unwrap();
    assert!(ttl == "120s" || ttl == "119s", "{ttl}");
}

#[tokio::test]
async fn several_devices_on_both_platforms_are_pushed_at_once() {
    let apns = apns(system_clock(), fast_retry()).await;
    let fcm = fcm(system_clock(), fast_retry()).await;
    const DEVICES: u32 = 12;
    let hold = Duration::from_millis(400);
    for n in 0..DEVICES {
        apns.server.script(&apns_token(n), [ApnsReply::Delay(hold)]);
        fcm.server.script(&fcm_token(n), [FcmReply::Delay(hold)]);
    }
    // How the server core fans out: one provider per platform behind the trait.
    let providers: HashMap<Platform, &dyn PushProvider> = HashMap::from([
        (Platform::Apns, &apns.client as &dyn PushProvider),
        (Platform::Fcm, &fcm.client as &dyn PushProvider),
    ]);
    let targets: Vec<PushTarget> = (0..DEVICES)
        .flat_map(|n| [apns_target(n), fcm_target(n)])
        .collect();
    let msg = challenge_in(120);

    let started = Instant::now();
    let deliveries = join_all(
        targets
            .iter()
            .map(|t| providers[&t.platform].deliver(t, &msg)),
    )
    .await;
    let elapsed = started.elapsed();

    assert!(
        deliveries.iter().all(|d| *d == Delivery::Delivered),
        "{deliveries:?}"
    );
    // One after the other would take 24 × 400 ms.
    assert!(elapsed < hold * 3, "{elapsed:?}");
    assert_eq!(apns.server.max_in_flight(), DEVICES as usize);
    assert_eq!(fcm.server.max_in_flight(), DEVICES as usize);
    // All APNs streams share one HTTP/2 connection; all FCM sends share one access token.
    assert_eq!(apns.server.connections(), 1);
    assert_eq!(fcm.server.grants(), 1);
}

#[tokio::test]
async fn apns_unregistered_and_bad_device_tokens_are_invalid_not_retried() {
    let apns = apns(system_clock(), fast_retry()).await;
    apns.server.always(&apns_token(1), ApnsReply::Unregistered);
    apns.server
        .always(&apns_token(2), ApnsReply::BadDeviceToken);
    let msg = challenge_in(120);

    assert_eq!(
        apns.client.deliver(&apns_target(1), &msg).await,
        invalid("Unregistered")
    );
    assert_eq!(
        apns.client.deliver(&apns_target(2), &msg).await,
        invalid("BadDeviceToken")
    );
    assert_eq!(apns_answers(&apns.server, &apns_token(1)), [Some(410)]);
    assert_eq!(apns_answers(&apns.server, &apns_token(2)), [Some(400)]);

    // A token that is not hex never reaches the URL path.
    let mut odd = apns_target(3);
    odd.token = "../../3/device/abc".into();
    assert_eq!(
        apns.client.deliver(&odd, &msg).await,
        invalid("BadDeviceToken")
    );
    assert_eq!(apns.server.received().len(), 2);
}

#[tokio::test]
async fn fcm_unregistered_and_invalid_tokens_are_invalid_other_errors_are_not() {
    let fcm = fcm(system_clock(), fast_retry()).await;
    fcm.server.always(&fcm_token(1), FcmReply::Unregistered);
    fcm.server.always(&fcm_token(2), FcmReply::InvalidToken);
    fcm.server.always(&fcm_token(3), FcmReply::InvalidArgument);
    let msg = challenge_in(120);

    assert_eq!(
        fcm.client.deliver(&fcm_target(1), &msg).await,
        invalid("UNREGISTERED")
    );
    assert_eq!(
        fcm.client.deliver(&fcm_target(2), &msg).await,
        invalid("INVALID_ARGUMENT")
    );
    // INVALID_ARGUMENT about the message is our bug, not a dead token: keep the token.
    assert_eq!(
        fcm.client.deliver(&fcm_target(3), &msg).await,
        failed("INVALID_ARGUMENT")
    );
    for n in 1..=3 {
        assert_eq!(
            fcm_answers(&fcm.server, &fcm_token(n)).len(),
            1,
            "device {n}"
        );
    }
}

#[tokio::test]
async fn apns_429_and_503_are_retried_then_delivered() {
    let apns = apns(system_clock(), fast_retry()).await;
    apns.server.script(
        &apns_token(1),
        [ApnsReply::TooManyRequests, ApnsReply::ServiceUnavailable],
    );

    let delivery = apns
        .client
        .deliver(&apns_target(1), &challenge_in(120))
        .await;

    assert_eq!(delivery, Delivery::Delivered);
    assert_eq!(
        apns_answers(&apns.server, &apns_token(1)),
        [Some(429), Some(503), Some(200)]
    );
}

#[tokio::test]
async fn fcm_429_and_503_are_retried_after_retry_after() {
    let fcm = fcm(system_clock(), fast_retry()).await;
    fcm.server.script(
        &fcm_token(1),
        [
            FcmReply::QuotaExceeded {
                retry_after_secs: 1,
            },
            FcmReply::Unavailable {
                retry_after_secs: 1,
            },
        ],
    );

    let started = Instant::now();
    let delivery = fcm.client.deliver(&fcm_target(1), &challenge_in(120)).await;

    assert_eq!(delivery, Delivery::Delivered);
    assert_eq!(
        fcm_answers(&fcm.server, &fcm_token(1)),
        [Some(429), Some(503), Some(200)]
    );
    // The policy's own backoff is 20-100 ms: only Retry-After explains two seconds.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn retries_stop_when_the_challenge_expires() {
    let apns = apns(system_clock(), fast_retry()).await;
    let fcm = fcm(system_clock(), fast_retry()).await;
    apns.server
        .always(&apns_token(1), ApnsReply::ServiceUnavailable);
    fcm.server.always(
        &fcm_token(1),
        FcmReply::Unavailable {
            retry_after_secs: 60,
        },
    );

    let started = Instant::now();
    let delivery = apns.client.deliver(&apns_target(1), &challenge_in(1)).await;
    let elapsed = started.elapsed();
    assert_eq!(delivery, failed("ServiceUnavailable"));
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert!(apns.server.received().len() > 2, "retried until expiry");

    // Retry-After past the expiry: give up at once rather than wait for nothing.
    let started = Instant::now();
    let delivery = fcm.client.deliver(&fcm_target(1), &challenge_in(30)).await;
    assert_eq!(delivery, failed("UNAVAILABLE"));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(fcm.server.received().len(), 1);

    // A challenge already over is not pushed at all.
    let delivery = apns
        .client
        .deliver(&apns_target(2), &challenge_in(-1))
        .await;
    assert_eq!(delivery, failed("expired"));
    assert!(apns.server.received_for(&apns_token(2)).is_empty());
}

#[tokio::test]
async fn apns_expired_provider_token_is_renewed_once_and_kept() {
    // The client's clock starts 25 minutes back, so its first token is 25 minutes old (by the
    // server's real clock) once the client's clock is moved to now: old enough for Apple to let
    // us renew it, young enough that the client has no reason to renew it by itself.
    let clock = Arc::new(ManualClock::new(
        OffsetDateTime::now_utc() - time::Duration::minutes(25),
    ));
    let apns = apns(clock.clone(), fast_retry()).await;
    let expiring_with = |clock: &ManualClock| {
        message(
            PushKind::Challenge,
            clock.now() + time::Duration::minutes(2),
        )
    };
    assert_eq!(
        apns.client
            .deliver(&apns_target(1), &expiring_with(&clock))
            .await,
        Delivery::Delivered
    );
    let first_iat = apns.server.received()[0].provider_token_iat.unwrap();

    clock.advance(time::Duration::minutes(25));
    apns.server
        .script(&apns_token(2), [ApnsReply::ExpiredProviderToken]);
    let delivery = apns
        .client
        .deliver(&apns_target(2), &expiring_with(&clock))
        .await;

    assert_eq!(delivery, Delivery::Delivered);
    let attempts = apns.server.received_for(&apns_token(2));
    assert_eq!(attempts.len(), 2);
    assert_eq!(
        attempts[0].answer,
        Some((403, Some("ExpiredProviderToken".into())))
    );
    assert_eq!(attempts[0].provider_token_iat, Some(first_iat));
    let renewed_iat = attempts[1].provider_token_iat.unwrap();
    assert_eq!(renewed_iat - first_iat, 25 * 60);

    // Later pushes use the renewed token.
    assert_eq!(
        apns.client
            .deliver(&apns_target(3), &expiring_with(&clock))
            .await,
        Delivery::Delivered
    );
    assert_eq!(
        apns.server.received_for(&apns_token(3))[0].provider_token_iat,
        Some(renewed_iat)
    );
}

#[tokio::test]
async fn apns_provider_token_refused_twice_fails_after_one_renewal() {
    let clock = Arc::new(ManualClock::new(
        OffsetDateTime::now_utc() - time::Duration::minutes(30),
    ));
    let apns = apns(clock.clone(), fast_retry()).await;
    let msg = |clock: &ManualClock| {
        message(
            PushKind::Challenge,
            clock.now() + time::Duration::minutes(2),
        )
    };
    assert_eq!(
        apns.client.deliver(&apns_target(1), &msg(&clock)).await,
        Delivery::Delivered
    );
    clock.advance(time::Duration::minutes(30));
    apns.server
        .always(&apns_token(2), ApnsReply::ExpiredProviderToken);

    let delivery = apns.client.deliver(&apns_target(2), &msg(&clock)).await;

    assert_eq!(delivery, failed("ExpiredProviderToken"));
    let iats: Vec<_> = apns
        .server
        .received_for(&apns_token(2))
        .iter()
        .map(|r| r.provider_token_iat)
        .collect();
    assert_eq!(iats.len(), 2, "one renewal, no loop");
    assert_ne!(iats[0], iats[1]);
}

#[tokio::test]
async fn apns_young_provider_token_called_expired_is_not_renewed() {
    // Apple refuses renewals less than 20 minutes apart; a fresh token called expired means our
    // clock is off, and a new token would not help.
    let apns = apns(system_clock(), fast_retry()).await;
    apns.server
        .script(&apns_token(1), [ApnsReply::ExpiredProviderToken]);

    let delivery = apns
        .client
        .deliver(&apns_target(1), &challenge_in(120))
        .await;

    assert_eq!(delivery, failed("ExpiredProviderToken"));
    assert_eq!(apns.server.received().len(), 1);
}

#[tokio::test]
async fn apns_provider_token_is_renewed_before_apple_would_refuse_it() {
    // Starts 55 minutes back: the first token is 55 minutes old by real time when the clock
    // moves on 50 minutes, and Apple would refuse it 5 minutes later.
    let clock = Arc::new(ManualClock::new(
        OffsetDateTime::now_utc() - time::Duration::minutes(55),
    ));
    let apns = apns(clock.clone(), fast_retry()).await;
    let msg = |clock: &ManualClock| {
        message(
            PushKind::Challenge,
            clock.now() + time::Duration::minutes(2),
        )
    };

    apns.client.deliver(&apns_target(1), &msg(&clock)).await;
    clock.advance(time::Duration::minutes(49));
    apns.client.deliver(&apns_target(2), &msg(&clock)).await;
    clock.advance(time::Duration::minutes(1));
    apns.client.deliver(&apns_target(3), &msg(&clock)).await;

    let iats: Vec<i64> = apns
        .server
        .received()
        .iter()
        .map(|r| r.provider_token_iat.expect("accepted"))
        .collect();
    assert_eq!(iats.len(), 3);
    assert_eq!(iats[0], iats[1], "reused at 49 minutes");
    assert_eq!(iats[2] - iats[0], 50 * 60, "renewed at 50 minutes");
}

#[tokio::test]
async fn apns_token_signed_with_another_key_is_refused_without_retry() {
    let apns = apns(system_clock(), fast_retry()).await;
    // A second server's key is a valid P-256 key that this server does not know.
    let other = ApnsServer::start().await;
    let files = tempfile::tempdir().unwrap();
    let key_file = files.path().join("other.p8");
    let ca_file = files.path().join("ca.pem");
    std::fs::write(&key_file, &other.credentials().private_key_pem).unwrap();
    std::fs::write(&ca_file, apns.server.ca_pem()).unwrap();
    let vars = HashMap::from([
        ("ASSENT_APNS_KEY_FILE", key_file.display().to_string()),
        (
            "ASSENT_APNS_KEY_ID",
            apns.server.credentials().key_id.clone(),
        ),
        (
            "ASSENT_APNS_TEAM_ID",
            apns.server.credentials().team_id.clone(),
        ),
        ("ASSENT_APNS_TOPIC", apns.server.credentials().topic.clone()),
        ("ASSENT_APNS_ENDPOINT", apns.server.endpoint()),
        ("ASSENT_APNS_CA_FILE", ca_file.display().to_string()),
    ]);
    let config = ApnsConfig::from_lookup(|v| vars.get(v).cloned())
        .unwrap()
        .unwrap();
    let client = ApnsClient::new(config, system_clock()).unwrap();

    let delivery = client.deliver(&apns_target(1), &challenge_in(120)).await;

    assert_eq!(delivery, failed("InvalidProviderToken"));
    assert_eq!(apns_answers(&apns.server, &apns_token(1)), [Some(403)]);
}

#[tokio::test]
async fn apns_server_is_only_trusted_through_the_configured_ca() {
    let apns = apns(system_clock(), fast_retry()).await;
    let files = tempfile::tempdir().unwrap();
    let key_file = files.path().join("AuthKey.p8");
    std::fs::write(&key_file, &apns.server.credentials().private_key_pem).unwrap();
    let vars = HashMap::from([
        ("ASSENT_APNS_KEY_FILE", key_file.display().to_string()),
        (
            "ASSENT_APNS_KEY_ID",
            apns.server.credentials().key_id.clone(),
        ),
        (
            "ASSENT_APNS_TEAM_ID",
            apns.server.credentials().team_id.clone(),
        ),
        ("ASSENT_APNS_TOPIC", apns.server.credentials().topic.clone()),
        ("ASSENT_APNS_ENDPOINT", apns.server.endpoint()),
    ]);
    let mut config = ApnsConfig::from_lookup(|v| vars.get(v).cloned())
        .unwrap()
        .unwrap();
    config.retry = fast_retry();
    let client = ApnsClient::new(config, system_clock()).unwrap();

    let delivery = client.deliver(&apns_target(1), &challenge_in(1)).await;

    assert_eq!(delivery, failed("connect"));
    assert!(apns.server.received().is_empty());
}

#[tokio::test]
async fn fcm_401_refreshes_the_access_token_once() {
    let fcm = fcm(system_clock(), fast_retry()).await;
    fcm.server
        .script(&fcm_token(1), [FcmReply::Unauthenticated]);

    let delivery = fcm.client.deliver(&fcm_target(1), &challenge_in(120)).await;

    assert_eq!(delivery, Delivery::Delivered);
    assert_eq!(fcm.server.grants(), 2);
    let attempts = fcm.server.received_for(&fcm_token(1));
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].status, Some(401));
    assert_ne!(attempts[0].bearer, attempts[1].bearer);

    fcm.server.always(&fcm_token(2), FcmReply::Unauthenticated);
    let delivery = fcm.client.deliver(&fcm_target(2), &challenge_in(120)).await;
    assert_eq!(delivery, failed("UNAUTHENTICATED"));
    assert_eq!(
        fcm_answers(&fcm.server, &fcm_token(2)),
        [Some(401), Some(401)]
    );
    assert_eq!(fcm.server.grants(), 3, "one refresh, no loop");
}

#[tokio::test]
async fn fcm_access_token_is_cached_until_shortly_before_it_expires() {
    // The client's clock starts 59 minutes back, so that every grant it signs while the clock
    // moves through the token's hour is still acceptable to the token endpoint's real clock.
    let clock = Arc::new(ManualClock::new(
        OffsetDateTime::now_utc() - time::Duration::minutes(59),
    ));
    let fcm = fcm(clock.clone(), fast_retry()).await;
    fcm.server.set_access_token_lifetime(3600);
    let msg = |clock: &ManualClock| {
        message(
            PushKind::Challenge,
            clock.now() + time::Duration::minutes(2),
        )
    };

    let first = fcm.client.deliver(&fcm_target(1), &msg(&clock)).await;
    clock.advance(time::Duration::minutes(58));
    let cached = fcm.client.deliver(&fcm_target(2), &msg(&clock)).await;
    assert_eq!([first, cached], [Delivery::Delivered, Delivery::Delivered]);
    assert_eq!(fcm.server.grants(), 1);

    clock.advance(time::Duration::minutes(1));
    let refreshed = fcm.client.deliver(&fcm_target(3), &msg(&clock)).await;
    assert_eq!(refreshed, Delivery::Delivered);
    assert_eq!(fcm.server.grants(), 2, "refreshed a minute before expiry");
    let bearers: Vec<_> = fcm
        .server
        .received()
        .into_iter()
        .map(|r| r.bearer)
        .collect();
    assert_eq!(bearers[0], bearers[1]);
    assert_ne!(bearers[1], bearers[2]);
}

#[tokio::test]
async fn fcm_grant_signed_with_another_key_is_refused() {
    let fcm = fcm(system_clock(), fast_retry()).await;
    let mut account: Value = serde_json::from_str(fcm.server.service_account_json()).unwrap();
    let other_key = {
        use rsa::pkcs8::{EncodePrivateKey, LineEnding};
        rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
            .unwrap()
            .to_pkcs8_pem(LineEnding::LF)
            .unwrap()
            .to_string()
    };
    account["private_key"] = json!(other_key);
    let files = tempfile::tempdir().unwrap();
    let account_file = files.path().join("other.json");
    std::fs::write(&account_file, account.to_string()).unwrap();
    let vars = HashMap::from([
        (
            "ASSENT_FCM_SERVICE_ACCOUNT_FILE",
            account_file.display().to_string(),
        ),
        ("ASSENT_FCM_ENDPOINT", fcm.server.endpoint()),
    ]);
    let config = FcmConfig::from_lookup(|v| vars.get(v).cloned())
        .unwrap()
        .unwrap();
    let client = FcmClient::new(config, system_clock()).unwrap();

    let delivery = client.deliver(&fcm_target(1), &challenge_in(120)).await;

    assert_eq!(delivery, failed("oauth_refused"));
    assert_eq!(fcm.server.grants(), 0);
    assert!(fcm.server.received().is_empty());
}

/// Runs each delivery concurrently and returns it with how long it took on its own.
async fn timed(
    provider: &dyn PushProvider,
    targets: &[PushTarget],
    msg: &PushMessage,
) -> Vec<(Delivery, Duration)> {
    join_all(targets.iter().map(|target| async move {
        let started = Instant::now();
        let delivery = provider.deliver(target, msg).await;
        (delivery, started.elapsed())
    }))
    .await
}

fn hang_retry() -> RetryPolicy {
    RetryPolicy {
        request_timeout: Duration::from_secs(1),
        ..fast_retry()
    }
}

#[tokio::test]
async fn apns_hanging_device_times_out_without_delaying_the_others() {
    let apns = apns(system_clock(), hang_retry()).await;
    apns.server.always(&apns_token(0), ApnsReply::Hang);
    let targets: Vec<PushTarget> = (0..6).map(apns_target).collect();

    let results = timed(&apns.client, &targets, &challenge_in(3)).await;

    let (hung, hung_for) = &results[0];
    assert_eq!(*hung, failed("timeout"));
    // Tried until the challenge's expiry (three seconds), one timed-out attempt after another.
    assert!(*hung_for >= Duration::from_millis(2500), "{hung_for:?}");
    assert!(*hung_for < Duration::from_secs(5), "{hung_for:?}");
    assert!(
        apns.server.received_for(&apns_token(0)).len() >= 2,
        "retried"
    );
    for (delivery, took) in &results[1..] {
        assert_eq!(*delivery, Delivery::Delivered);
        // Well before the hanging push's first timeout.
        assert!(*took < Duration::from_millis(800), "{took:?}");
    }
    // Timed-out streams were reset, the connection lives on.
    assert_eq!(
        apns.client
            .deliver(&apns_target(7), &challenge_in(60))
            .await,
        Delivery::Delivered
    );
    assert_eq!(apns.server.connections(), 1);
}

#[tokio::test]
async fn fcm_hanging_device_times_out_without_delaying_the_others() {
    let fcm = fcm(system_clock(), hang_retry()).await;
    fcm.server.always(&fcm_token(0), FcmReply::Hang);
    let targets: Vec<PushTarget> = (0..6).map(fcm_target).collect();

    let results = timed(&fcm.client, &targets, &challenge_in(3)).await;

    let (hung, hung_for) = &results[0];
    assert_eq!(*hung, failed("timeout"));
    // Tried until the challenge's expiry (three seconds), one timed-out attempt after another.
    assert!(*hung_for >= Duration::from_millis(2500), "{hung_for:?}");
    assert!(*hung_for < Duration::from_secs(5), "{hung_for:?}");
    for (delivery, took) in &results[1..] {
        assert_eq!(*delivery, Delivery::Delivered);
        // Well before the hanging push's first timeout.
        assert!(*took < Duration::from_millis(800), "{took:?}");
    }
}

#[tokio::test]
async fn resolved_push_is_a_silent_background_push() {
    let apns = apns(system_clock(), fast_retry()).await;
    let fcm = fcm(system_clock(), fast_retry()).await;
    let decided = message(
        PushKind::Resolved,
        OffsetDateTime::now_utc() + time::Duration::seconds(90),
    );
    // A challenge that ran out: the prompt may still be on screen.
    let expired = message(
        PushKind::Resolved,
        OffsetDateTime::now_utc() - time::Duration::seconds(10),
    );

    for msg in [&decided, &expired] {
        assert_eq!(
            apns.client.deliver(&apns_target(1), msg).await,
            Delivery::Delivered
        );
        assert_eq!(
            fcm.client.deliver(&fcm_target(1), msg).await,
            Delivery::Delivered
        );
    }

    let apns_received = apns.server.received();
    for request in &apns_received {
        assert_eq!(request.header("apns-push-type"), Some("background"));
        assert_eq!(request.header("apns-priority"), Some("5"));
        let payload = request.json();
        assert_eq!(payload["aps"], json!({"content-available": 1}));
        assert_eq!(payload["kind"], "resolved");
        assert_eq!(payload["challenge_id"], decided.challenge_id.as_str());
    }
    let decided_expiration = decided.expires_at.unix_timestamp().to_string();
    assert_eq!(
        apns_received[0].header("apns-expiration"),
        Some(decided_expiration.as_str())
    );
    assert_eq!(apns_received[1].header("apns-expiration"), Some("0"));

    let fcm_received = fcm.server.received();
    for request in &fcm_received {
        let message = &request.body["message"];
        assert_eq!(message["data"]["kind"], "resolved");
        assert_eq!(message["android"]["priority"], "normal");
        assert!(message.get("notification").is_none());
    }
    assert_eq!(fcm_received[1].body["message"]["android"]["ttl"], "0s");
}

/// Every string inside `value`, keys included, except at the JSON pointer `skip`.
fn strings(value: &Value, path: &str, skip: &str, out: &mut Vec<String>) {
    match value {
        Value::String(s) if path != skip => out.push(s.clone()),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                strings(item, &format!("{path}/{i}"), skip, out);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                out.push(key.clone());
                strings(item, &format!("{path}/{key}"), skip, out);
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn no_push_body_holds_a_token() {
    let apns = apns(system_clock(), fast_retry()).await;
    let fcm = fcm(system_clock(), fast_retry()).await;
    // Exercise renewals and retries too, so that every credential the clients hold is in play.
    fcm.server
        .script(&fcm_token(2), [FcmReply::Unauthenticated]);
    apns.server
        .script(&apns_token(2), [ApnsReply::ServiceUnavailable]);
    let mut msg = challenge_in(120);
    for kind in [PushKind::Challenge, PushKind::Resolved] {
        msg.kind = kind;
        for n in 1..=3 {
            assert_eq!(
                apns.client.deliver(&apns_target(n), &msg).await,
                Delivery::Delivered
            );
            assert_eq!(
                fcm.client.deliver(&fcm_target(n), &msg).await,
                Delivery::Delivered
            );
        }
    }

    let apns_received = apns.server.received();
    let fcm_received = fcm.server.received();
    let mut secrets: Vec<String> = (1..=3)
        .flat_map(|n| [apns_token(n), fcm_token(n)])
        .collect();
    secrets.extend(apns_received.iter().filter_map(|r| {
        r.header("authorization")
            .and_then(|a| a.strip_prefix("bearer "))
            .map(str::to_owned)
    }));
    secrets.extend(fcm_received.iter().filter_map(|r| r.bearer.clone()));
    assert!(secrets.len() > 6, "bearer credentials were collected");

    for request in &apns_received {
        let body = String::from_utf8(request.body.to_vec()).unwrap();
        for secret in &secrets {
            assert!(
                !body.contains(secret.as_str()),
                "APNs body holds a token: {body}"
            );
        }
        assert!(!body.contains("assent_scim_"), "{body}");
    }
    for request in &fcm_received {
        // FCM HTTP v1 addresses the device by message.token and nothing else may hold it.
        assert_eq!(
            request.body["message"]["token"].as_str(),
            request.registration_token.as_deref()
        );
        let mut rest = Vec::new();
        strings(&request.body, "", "/message/token", &mut rest);
        for text in &rest {
            for secret in &secrets {
                assert!(
                    !text.contains(secret.as_str()),
                    "FCM body holds a token: {text}"
                );
            }
            assert!(!text.contains("assent_scim_"), "{text}");
        }
        assert_eq!(request.refusal, None);
    }
}

/// The real `assent serve`, configured for both platforms through its environment exactly as in
/// production, with only the endpoints and the extra CA pointing at the local servers.
struct Served {
    child: std::process::Child,
    base: String,
    db: String,
    _dir: TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve_with_push(apns: &ApnsServer, fcm: &FcmServer) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("AuthKey.p8");
    let ca_file = dir.path().join("ca.pem");
    let account_file = dir.path().join("service-account.json");
    std::fs::write(&key_file, &apns.credentials().private_key_pem).unwrap();
    std::fs::write(&ca_file, apns.ca_pem()).unwrap();
    std::fs::write(&account_file, fcm.service_account_json()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let db = format!("sqlite://{}/assent.db", dir.path().display());
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_assent"))
        .arg("serve")
        .env("ASSENT_LISTEN", format!("127.0.0.1:{port}"))
        .env("ASSENT_DATABASE_URL", &db)
        .env("ASSENT_LOG", "warn")
        .env("ASSENT_APNS_KEY_FILE", &key_file)
        .env("ASSENT_APNS_KEY_ID", &apns.credentials().key_id)
        .env("ASSENT_APNS_TEAM_ID", &apns.credentials().team_id)
        .env("ASSENT_APNS_TOPIC", &apns.credentials().topic)
        .env("ASSENT_APNS_ENDPOINT", apns.endpoint())
        .env("ASSENT_APNS_CA_FILE", &ca_file)
        .env("ASSENT_FCM_SERVICE_ACCOUNT_FILE", &account_file)
        .env("ASSENT_FCM_ENDPOINT", fcm.endpoint())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let served = Served {
        child,
        base,
        db,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{}/healthz", served.base))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    served
}

/// Waits for `check` to hold, polling; fails after `secs`.
async fn eventually(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_reveal_lights_up_every_phone_and_a_dead_token_is_marked_invalid() {
    install_crypto_provider();
    let apns = ApnsServer::start().await;
    let fcm = FcmServer::start().await;
    let (iphone, dead_iphone, android) = (apns_token(1), apns_token(2), fcm_token(3));
    apns.always(&dead_iphone, ApnsReply::Unregistered);
    let served = serve_with_push(&apns, &fcm).await;

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_assent"))
        .args([
            "workspace",
            "create",
            "--slug",
            "acme",
            "--name",
            "Acme",
            "--owner-email",
            "o@acme.test",
        ])
        .env("ASSENT_DATABASE_URL", &served.db)
        .env("ASSENT_LOG", "warn")
        .output()
        .unwrap();
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let http = reqwest::Client::new();
    let base = &served.base;
    let res = http
        .post(format!("{base}/v1/console/session"))
        .json(
            &json!({"workspace": "acme", "email": "o@acme.test", "password": created["password"]}),
        )
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

    // The first phone enrolls at once, the others through its approval. The dead iPhone comes
    // last, so nothing is pushed to it before the reveal.
    let enrollments = "/v1/console/devices/enrollments";
    let mut phones: Vec<TestPhone> = Vec::new();
    for (platform, token) in [("apns", &iphone), ("fcm", &android), ("apns", &dead_iphone)] {
        let phone = TestPhone::enroll(
            &http,
            base,
            &cookie,
            enrollments,
            platform,
            token,
            phones.first(),
        )
        .await;
        phones.push(phone);
    }
    // The first phone was asked twice ("Add a new phone?") and told twice that one was added; the
    // Android phone was told of the third.
    // The Android phone was asked about the third phone too, heard that the iPhone answered
    // (resolved), and was told the third was added.
    let described = |r: &Value| format!("{}:{}", r["kind"], r["action"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(apns.received_for(&iphone).len() == 4 && fcm.received_for(&android).len() == 3) {
        assert!(
            Instant::now() < deadline,
            "the enrollment prompts and notices: iPhone {:?}, Android {:?}",
            apns.received_for(&iphone)
                .iter()
                .map(|r| described(&r.json()))
                .collect::<Vec<_>>(),
            fcm.received_for(&android)
                .iter()
                .map(|r| described(&r.body["message"]["data"]))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut seen: Vec<(String, String)> = apns
        .received_for(&iphone)
        .iter()
        .map(|r| {
            let p = r.json();
            (
                p["kind"].as_str().unwrap().to_owned(),
                p["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    let pair = |k: &str, a: &str| (k.to_owned(), a.to_owned());
    assert_eq!(
        seen,
        vec![
            pair("challenge", "device.enroll"),
            pair("challenge", "device.enroll"),
            pair("notice", "device.enrolled"),
            pair("notice", "device.enrolled"),
        ]
    );
    let android_kinds: Vec<(String, String)> = fcm
        .received_for(&android)
        .iter()
        .map(|r| {
            let data = &r.body["message"]["data"];
            (
                data["kind"].as_str().unwrap().to_owned(),
                data["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut android_kinds = android_kinds;
    android_kinds.sort();
    assert_eq!(
        android_kinds,
        vec![
            pair("challenge", "device.enroll"),
            pair("notice", "device.enrolled"),
            pair("resolved", "device.enroll"),
        ]
    );
    assert!(apns.received_for(&dead_iphone).is_empty());
    apns.forget_received();
    fcm.forget_received();

    let reveal: Value = http
        .post(format!("{base}/v1/console/scim-token/reveal"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reveal["notified_devices"], 3, "{reveal}");
    let challenge_id = reveal["challenge_id"].as_str().unwrap().to_owned();

    eventually(10, "the APNs alert", || {
        !apns.received_for(&iphone).is_empty()
    })
    .await;
    eventually(10, "the FCM message", || {
        !fcm.received_for(&android).is_empty()
    })
    .await;
    let alert = apns.received_for(&iphone)[0].clone();
    assert_eq!(alert.header("apns-push-type"), Some("alert"));
    assert_eq!(
        alert.header("apns-collapse-id"),
        Some(challenge_id.as_str())
    );
    let payload = alert.json();
    assert_eq!(payload["challenge_id"], challenge_id.as_str());
    let android_message = fcm.received_for(&android)[0].body.clone();
    for text in [payload.to_string(), android_message.to_string()] {
        assert!(
            !text.contains("assent_scim_"),
            "a push never holds the SCIM token: {text}"
        );
        assert!(
            !text.contains("\"number\""),
            "a push never holds the number: {text}"
        );
    }

    // The dead iPhone's token is marked invalid and shown so in the console.
    eventually(10, "the dead token to be marked invalid", || {
        !apns.received_for(&dead_iphone).is_empty()
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let devices: Value = http
            .get(format!("{base}/v1/console/devices"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        // Devices enrolled in the same second list in id order: compare by id, not position.
        let states: Vec<&str> = phones
            .iter()
            .map(|TestPhone { id, .. }| {
                devices["devices"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|d| d["id"] == id.as_str())
                    .map_or("missing", |d| d["push_token_state"].as_str().unwrap())
            })
            .collect();
        if states == ["ok", "ok", "invalid"] {
            break;
        }
        assert!(Instant::now() < deadline, "device states {states:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The iPhone approves: the Android phone gets the silent "resolved" message; the dead token
    // is not tried again.
    let number = reveal["number"].as_u64().map(|n| n as u8);
    assert_eq!(phones[0].decide(&http, base, number, None).await, 200);
    eventually(10, "the resolved message", || {
        fcm.received_for(&android).len() == 2
    })
    .await;
    let resolved = fcm.received_for(&android)[1].body.to_string();
    assert!(resolved.contains("resolved"), "{resolved}");
    assert_eq!(
        apns.received_for(&dead_iphone).len(),
        1,
        "an invalid token is not used again"
    );
    assert_eq!(
        apns.received_for(&iphone).len(),
        1,
        "the deciding phone gets no resolved push"
    );

    // Removing the Android phone from the console: the iPhone is told.
    apns.forget_received();
    let removed = http
        .delete(format!("{base}/v1/console/devices/{}", phones[1].id))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status().as_u16(), 204);
    eventually(10, "the removal notice", || {
        !apns.received_for(&iphone).is_empty()
    })
    .await;
    let told = apns.received_for(&iphone)[0].json();
    assert_eq!(told["kind"], "notice", "{told}");
    assert_eq!(told["action"], "device.removed", "{told}");
    assert_eq!(
        told["aps"]["alert"]["title"], "A phone was removed",
        "{told}"
    );
}

/// A phone of the tests that run the real server: its key and its device id.
struct TestPhone {
    signer: assent::domain::device::DeviceSigner,
    id: String,
}

impl TestPhone {
    /// Enrolls a phone through `enrollments` (`{prefix}/devices/enrollments`). The person's
    /// first phone gets its code at once; any later one only through `approver`'s approval of the
    /// `device.enroll` challenge, whose release hands the code.
    async fn enroll(
        http: &reqwest::Client,
        base: &str,
        cookie: &str,
        enrollments: &str,
        platform: &str,
        token: &str,
        approver: Option<&TestPhone>,
    ) -> TestPhone {
        let resp = http
            .post(format!("{base}{enrollments}"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let mut offer: Value = resp.json().await.unwrap();
        if status == 202 {
            let approver = approver.expect("a phone to approve the new one");
            let number = offer["number"].as_u64().map(|n| n as u8);
            assert_eq!(approver.decide(http, base, number, None).await, 200);
            let prefix = enrollments.trim_end_matches("/devices/enrollments");
            let id = offer["challenge_id"].as_str().unwrap().to_owned();
            let resp = http
                .post(format!("{base}{prefix}/challenges/{id}/release"))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            offer = resp.json().await.unwrap();
        } else {
            assert_eq!(status, 201, "{offer}");
        }
        let signer = assent::domain::device::DeviceSigner::generate();
        let mut body = json!({"enrollment_code": offer["code"], "name": platform, "platform": platform,
                              "push_token": token, "public_key": signer.public_key().to_jwk()});
        if platform == "apns" {
            body["apns_environment"] = json!("sandbox");
        }
        let enrolled: Value = http
            .post(format!("{base}/v1/mobile/devices"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        TestPhone {
            signer,
            id: enrolled["device_id"].as_str().unwrap().to_owned(),
        }
    }

    fn auth(&self, base: &str) -> String {
        format!(
            "Device {}",
            self.signer
                .sign_request(&self.id, base, OffsetDateTime::now_utc())
        )
    }

    /// Signs and sends a decision on its newest pending challenge; returns the HTTP status.
    async fn decide(
        &self,
        http: &reqwest::Client,
        base: &str,
        number: Option<u8>,
        reason: Option<&str>,
    ) -> u16 {
        let pending: Value = http
            .get(format!("{base}/v1/mobile/challenges"))
            .header("authorization", self.auth(base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let c = &pending["challenges"][0];
        let support = c["action"] == "scim_token.support_rotate";
        let iat = OffsetDateTime::now_utc().unix_timestamp();
        let claims = assent::domain::device::DecisionClaims {
            iss: self.id.clone(),
            aud: base.to_owned(),
            sub: c["id"].as_str().unwrap().to_owned(),
            nonce: c["nonce"].as_str().unwrap().to_owned(),
            action: c["action"].as_str().unwrap().to_owned(),
            decision: if number.is_some() { "approve" } else { "deny" }.into(),
            number,
            reason: reason.map(str::to_owned),
            workspace: support.then(|| c["workspace"]["slug"].as_str().unwrap().to_owned()),
            ticket: support.then(|| c["context"]["ticket"].as_str().unwrap().to_owned()),
            iat,
            exp: iat + 60,
        };
        http.post(format!(
            "{base}/v1/mobile/challenges/{}/decision",
            claims.sub
        ))
        .header("authorization", self.auth(base))
        .json(&json!({"decision": self.signer.sign_decision(&self.id, &claims)}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
    }
}

fn cli_json(db: &str, args: &[&str]) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_assent"))
        .args(args)
        .env("ASSENT_DATABASE_URL", db)
        .env("ASSENT_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn session_cookie(http: &reqwest::Client, url: String, body: Value) -> String {
    let res = http.post(url).json(&body).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// The notices of the token lifecycle reach real push services: the workspace's admins hear of a
/// support rotation, its owners of a "not me" denial — visible alerts that name no token.
#[tokio::test]
async fn admins_hear_of_a_support_rotation_and_owners_of_a_not_me_by_push() {
    install_crypto_provider();
    let apns = ApnsServer::start().await;
    let fcm = FcmServer::start().await;
    let served = serve_with_push(&apns, &fcm).await;
    let (base, db) = (served.base.as_str(), served.db.as_str());
    let http = reqwest::Client::new();

    let owner = cli_json(
        db,
        &[
            "workspace",
            "create",
            "--slug",
            "acme",
            "--name",
            "Acme",
            "--owner-email",
            "o@acme.test",
        ],
    );
    let admin = cli_json(
        db,
        &[
            "member",
            "add",
            "--workspace",
            "acme",
            "--email",
            "a@acme.test",
            "--role",
            "admin",
        ],
    );
    let staff = cli_json(db, &["staff", "add", "--email", "ops@support.test"]);
    let owner_cookie = session_cookie(
        &http,
        format!("{base}/v1/console/session"),
        json!({"workspace": "acme", "email": "o@acme.test", "password": owner["password"]}),
    )
    .await;
    let admin_cookie = session_cookie(
        &http,
        format!("{base}/v1/console/session"),
        json!({"workspace": "acme", "email": "a@acme.test", "password": admin["password"]}),
    )
    .await;
    let staff_cookie = session_cookie(
        &http,
        format!("{base}/v1/support/session"),
        json!({"email": "ops@support.test", "password": staff["password"]}),
    )
    .await;
    let (owner_iphone, admin_android, staff_android) =
        (apns_token(11), fcm_token(12), fcm_token(13));
    let _owner_phone = TestPhone::enroll(
        &http,
        base,
        &owner_cookie,
        "/v1/console/devices/enrollments",
        "apns",
        &owner_iphone,
        None,
    )
    .await;
    let admin_phone = TestPhone::enroll(
        &http,
        base,
        &admin_cookie,
        "/v1/console/devices/enrollments",
        "fcm",
        &admin_android,
        None,
    )
    .await;
    let staff_phone = TestPhone::enroll(
        &http,
        base,
        &staff_cookie,
        "/v1/support/devices/enrollments",
        "fcm",
        &staff_android,
        None,
    )
    .await;
    // The owner is told that the admin added a phone.
    eventually(10, "the owner's notice of the admin's phone", || {
        !apns.received_for(&owner_iphone).is_empty()
    })
    .await;
    let told = apns.received_for(&owner_iphone)[0].json();
    assert_eq!(told["kind"], "notice", "{told}");
    assert_eq!(told["action"], "device.enrolled", "{told}");
    assert_eq!(told["aps"]["alert"]["title"], "A phone was added", "{told}");
    apns.forget_received();
    fcm.forget_received();

    // Support rotates: the staff phone gets the prompt, then owner and admin a notice.
    let started: Value = http
        .post(format!(
            "{base}/v1/support/workspaces/acme/scim-token/rotate"
        ))
        .header("cookie", &staff_cookie)
        .json(&json!({"ticket": "T-77", "reason": "lost token"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(started["notified_devices"], 1, "{started}");
    eventually(10, "the staff prompt", || {
        !fcm.received_for(&staff_android).is_empty()
    })
    .await;
    assert!(
        apns.received_for(&owner_iphone).is_empty(),
        "no prompt to the workspace"
    );
    let number = started["number"].as_u64().map(|n| n as u8);
    assert_eq!(staff_phone.decide(&http, base, number, None).await, 200);
    eventually(10, "the owner's notice", || {
        !apns.received_for(&owner_iphone).is_empty()
    })
    .await;
    eventually(10, "the admin's notice", || {
        !fcm.received_for(&admin_android).is_empty()
    })
    .await;
    let notice = apns.received_for(&owner_iphone)[0].clone();
    assert_eq!(notice.header("apns-push-type"), Some("alert"));
    let payload = notice.json();
    assert_eq!(payload["kind"], "notice");
    assert_eq!(payload["action"], "scim_token.support_rotated");
    assert_eq!(
        payload["aps"]["alert"]["title"],
        "Support rotated the SCIM token"
    );
    let android = fcm.received_for(&admin_android)[0].body.clone();
    assert_eq!(android["message"]["data"]["kind"], "notice", "{android}");
    assert_eq!(android["message"]["android"]["priority"], "high");
    for text in [payload.to_string(), android.to_string()] {
        assert!(!text.contains("assent_scim_"), "{text}");
    }

    // The admin reports a request as not theirs: the owner is alerted on the phone.
    let reveal: Value = http
        .post(format!("{base}/v1/console/scim-token/reveal"))
        .header("cookie", &admin_cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reveal["notified_devices"], 1, "{reveal}");
    assert_eq!(
        admin_phone.decide(&http, base, None, Some("not_me")).await,
        200
    );
    eventually(10, "the owner's alert", || {
        apns.received_for(&owner_iphone).len() == 2
    })
    .await;
    let alert = apns.received_for(&owner_iphone)[1].json();
    assert_eq!(alert["kind"], "notice");
    assert_eq!(alert["action"], "security.suspected_attack");
    assert!(
        alert["aps"]["alert"]["body"]
            .as_str()
            .unwrap()
            .contains("Acme"),
        "{alert}"
    );
}
