//! Scale-out on Redis (issue 5): two real `assent serve` processes on one database and one real
//! `redis-server`, as two instances behind a load balancer. The browser's stream, the phone's
//! decision and the release land on different instances; decisions race across instances; an
//! instance dies mid-wait; Redis restarts mid-flow; a device JWS is replayed on the other instance.
//! The first tests drive the Redis challenge store directly, to pin its scripts down.

// The shared helpers re-export what other test binaries use.
use crate::support;

use std::time::Duration;

use assent::challenges::redis::RedisChallenges;
use assent::challenges::{ChallengeStore, Inserted, LOGIN_WINDOW};
use assent::domain::challenge::{Action, Challenge, Origin, Request, Status};
use futures_util::future::join_all;
use prometheus_client::metrics::family::Family;
use time::OffsetDateTime;

use support::redis::{Cluster, ClusterPhone, Console, RedisServer};
use support::{assert_token_shape, json_body, problem, WAIT};

const A: usize = 0;
const B: usize = 1;

// ---- The Redis challenge store on its own -------------------------------------------------------

fn challenge(user_id: i64, action: Action, now: OffsetDateTime, ttl_secs: i64) -> Challenge {
    Challenge::new(
        Request {
            action,
            workspace_id: 1,
            workspace_slug: "w".into(),
            workspace_name: "W".into(),
            user_id,
            user_email: "e@w.test".into(),
            session_hash: "s".into(),
            origin: Origin::default(),
            support: None,
            second_approvers: vec![],
            subject: None,
        },
        now,
        time::Duration::seconds(ttl_secs),
        &mut rand::thread_rng(),
    )
}

/// What an insert that was not limited superseded.
fn inserted(r: Result<Inserted, assent::challenges::LiveError>) -> Option<Challenge> {
    match r.expect("insert") {
        Inserted::Stored { superseded } => superseded.map(|c| *c),
        Inserted::Limited { retry_at } => panic!("limited until {retry_at}"),
    }
}

fn store(redis: &RedisServer) -> RedisChallenges {
    RedisChallenges::open(&redis.url, Family::default()).expect("open the Redis store")
}

/// Whole seconds, as the store keeps times.
fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc().replace_nanosecond(0).unwrap()
}

#[tokio::test]
async fn redis_swap_is_a_compare_and_swap_on_the_version() {
    let redis = RedisServer::start().await;
    let store = store(&redis);
    let now = now();
    let c = challenge(1, Action::Reveal, now, 120);
    assert!(inserted(store.insert(&c, now, 0).await).is_none());
    assert_eq!(store.get(&c.id).await.unwrap().as_ref(), Some(&c));
    assert!(store.get("no-such-id").await.unwrap().is_none());

    // Many racing transitions from the same version: exactly one is stored.
    let attempts: Vec<Challenge> = (0..16)
        .map(|i| {
            let mut next = c.clone();
            next.deny_reason = None;
            next.decided_by_device = Some(format!("device-{i}"));
            next.supersede(now);
            next
        })
        .collect();
    let won = join_all(attempts.iter().map(|a| store.swap(a, c.version))).await;
    let winners: Vec<usize> = won
        .iter()
        .enumerate()
        .filter(|(_, w)| *w.as_ref().unwrap())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(winners.len(), 1, "{won:?}");
    let stored = store.get(&c.id).await.unwrap().unwrap();
    assert_eq!(stored, attempts[winners[0]]);
    // A swap from a version that is no longer stored loses, and one on a missing id too.
    assert!(!store.swap(&attempts[0], c.version).await.unwrap());
    let mut ghost = challenge(1, Action::Reveal, now, 120);
    ghost.supersede(now);
    assert!(!store.swap(&ghost, 0).await.unwrap());
    assert!(store.get(&ghost.id).await.unwrap().is_none());

    // The key lives until the challenge's retention ends (10 minutes after it ended).
    let ttl: i64 = redis
        .query(&["TTL", &format!("assent:challenge:{}", c.id)])
        .await;
    let retain = (stored.retain_until() - OffsetDateTime::now_utc()).whole_seconds();
    assert!(
        (retain - 2..=retain + 1).contains(&ttl),
        "TTL {ttl}, retain {retain}"
    );
}

#[tokio::test]
async fn redis_insert_supersedes_the_pending_challenge_of_the_same_action_once() {
    let redis = RedisServer::start().await;
    let store = store(&redis);
    let now = now();
    let first = challenge(7, Action::Reveal, now, 120);
    let rotate = challenge(7, Action::Rotate, now, 120);
    assert!(inserted(store.insert(&first, now, 0).await).is_none());
    assert!(inserted(store.insert(&rotate, now, 0).await).is_none());
    let second = challenge(7, Action::Reveal, now, 120);
    let superseded = inserted(store.insert(&second, now, 0).await).expect("superseded");
    assert_eq!(superseded.id, first.id);
    assert_eq!(superseded.status, Status::Expired);
    assert_eq!(store.get(&first.id).await.unwrap().unwrap(), superseded);
    let pending: Vec<String> = store
        .pending_for_user(7, now)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(pending.len(), 2);
    assert!(pending.contains(&second.id) && pending.contains(&rotate.id));

    // An approved challenge is no longer pending: the next one supersedes nothing.
    let mut approved = second.clone();
    approved.status = Status::Approved;
    approved.version += 1;
    assert!(store.swap(&approved, second.version).await.unwrap());
    let third = challenge(7, Action::Reveal, now, 120);
    assert!(inserted(store.insert(&third, now, 0).await).is_none());
    assert_eq!(
        store.get(&second.id).await.unwrap().unwrap().status,
        Status::Approved
    );

    // Racing inserts for one slot: each supersedes at most one, and one stays pending.
    let racers: Vec<Challenge> = (0..12)
        .map(|_| challenge(8, Action::Reveal, now, 120))
        .collect();
    let results = join_all(racers.iter().map(|c| store.insert(c, now, 0))).await;
    let superseded: Vec<String> = results
        .into_iter()
        .filter_map(|r| inserted(r).map(|c| c.id))
        .collect();
    assert_eq!(superseded.len(), racers.len() - 1, "{superseded:?}");
    let pending = store.pending_for_user(8, now).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert!(!superseded.contains(&pending[0].id));
    for id in &superseded {
        assert_eq!(
            store.get(id).await.unwrap().unwrap().status,
            Status::Expired
        );
    }
}

#[tokio::test]
async fn redis_holds_the_hourly_limit_for_racing_requests_of_one_person() {
    let redis = RedisServer::start().await;
    let store = store(&redis);
    let now = now();
    let racers: Vec<Challenge> = (0..12)
        .map(|_| challenge(21, Action::Reveal, now, 120))
        .collect();
    let results = join_all(racers.iter().map(|c| store.insert(c, now, 5))).await;
    let mut stored = 0;
    for r in results {
        match r.unwrap() {
            Inserted::Stored { .. } => stored += 1,
            Inserted::Limited { retry_at } => {
                assert_eq!(retry_at, now + time::Duration::hours(1))
            }
        }
    }
    assert_eq!(stored, 5, "exactly the limit's worth get through");
    // Somebody else is not affected; an hour later the person may ask again.
    inserted(
        store
            .insert(&challenge(22, Action::Reveal, now, 120), now, 5)
            .await,
    );
    let later = now + time::Duration::hours(1);
    inserted(
        store
            .insert(&challenge(21, Action::Reveal, later, 120), later, 5)
            .await,
    );
    // The count's key expires an hour after the last request.
    let ttl: i64 = redis.query(&["PTTL", "assent:issued:21"]).await;
    assert!(ttl > 3_000_000, "PTTL {ttl}");
}

#[tokio::test]
async fn redis_lists_a_challenge_awaiting_its_second_approval_to_the_second_approvers() {
    let redis = RedisServer::start().await;
    let store = store(&redis);
    let now = now();
    let mut c = challenge(31, Action::Rotate, now, 120);
    c.second_approvers = vec![32, 33];
    inserted(store.insert(&c, now, 0).await);
    let ids = |list: Vec<Challenge>| list.into_iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.pending_for_user(31, now).await.unwrap()),
        [c.id.clone()]
    );
    assert!(store.pending_for_user(32, now).await.unwrap().is_empty());

    let mut first = c.clone();
    first.first_approval = Some(assent::domain::challenge::FirstApproval {
        device_id: "d31".into(),
        at: now,
    });
    first.version += 1;
    assert!(store.swap(&first, c.version).await.unwrap());
    assert!(store.pending_for_user(31, now).await.unwrap().is_empty());
    assert_eq!(
        ids(store.pending_for_user(32, now).await.unwrap()),
        [c.id.clone()]
    );
    assert_eq!(
        ids(store.pending_for_user(33, now).await.unwrap()),
        [c.id.clone()]
    );

    let mut approved = first.clone();
    approved.status = Status::Approved;
    approved.version += 1;
    assert!(store.swap(&approved, first.version).await.unwrap());
    for user in [31, 32, 33] {
        assert!(store.pending_for_user(user, now).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn redis_due_pending_blocks_counters_and_replays_follow_the_given_clock() {
    let redis = RedisServer::start().await;
    let store = store(&redis);
    let now = now();
    // Made 100 s ago with a 120 s TTL: due 20 s from now; the other one 120 s from now.
    let old = challenge(3, Action::Reveal, now - time::Duration::seconds(100), 120);
    let fresh = challenge(3, Action::Rotate, now, 120);
    store.insert(&old, now, 0).await.unwrap();
    store.insert(&fresh, now, 0).await.unwrap();
    let later = now + time::Duration::seconds(20);
    assert!(store.due(now).await.unwrap().is_empty());
    assert!(store
        .due(later - time::Duration::seconds(1))
        .await
        .unwrap()
        .is_empty());
    let due: Vec<String> = store
        .due(later)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(due, vec![old.id.clone()]);
    let pending_now: Vec<String> = store
        .pending_for_user(3, now)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(pending_now.len(), 2, "{pending_now:?}");
    let pending_later = store.pending_for_user(3, later).await.unwrap();
    assert_eq!(
        pending_later.iter().map(|c| &c.id).collect::<Vec<_>>(),
        vec![&fresh.id]
    );
    // Expired by a sweeper: it leaves the due index.
    let mut expired = old.clone();
    assert!(expired.expire_if_due(later));
    assert!(store.swap(&expired, old.version).await.unwrap());
    assert!(store.due(later).await.unwrap().is_empty());
    store.purge(later).await.unwrap();

    // The not-me block keeps its later end.
    let until = now + time::Duration::minutes(15);
    store.block_user(3, until).await.unwrap();
    store
        .block_user(3, now + time::Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(store.blocked_until(3, now).await.unwrap(), Some(until));
    assert_eq!(store.blocked_until(3, until).await.unwrap(), None);
    assert_eq!(store.blocked_until(4, now).await.unwrap(), None);

    // Login failures count within the window that the first one opened.
    for n in 1..=3 {
        assert_eq!(store.login_failed("login:ip:x", now).await.unwrap(), n);
    }
    assert_eq!(
        store.login_failures("login:ip:x", now).await.unwrap(),
        (3, Some(now))
    );
    assert_eq!(
        store
            .login_failures("login:ip:x", now + LOGIN_WINDOW)
            .await
            .unwrap(),
        (0, None)
    );
    assert_eq!(
        store
            .login_failed("login:ip:x", now + LOGIN_WINDOW)
            .await
            .unwrap(),
        1,
        "a new window"
    );
    store.login_succeeded("login:ip:x").await.unwrap();
    assert_eq!(
        store.login_failures("login:ip:x", now).await.unwrap(),
        (0, None)
    );

    // A jti is taken once per device, and forgotten when its JWS could no longer be valid.
    let keep = now + time::Duration::seconds(120);
    assert!(store.remember_jti("d1", "j", keep).await.unwrap());
    assert!(!store.remember_jti("d1", "j", keep).await.unwrap());
    assert!(store.remember_jti("d2", "j", keep).await.unwrap());
    let ttl: i64 = redis.query(&["TTL", "assent:jti:d1:j"]).await;
    assert!((100..=121).contains(&ttl), "{ttl}");
    store.ping().await.unwrap();
}

// ---- Two instances, one database, one Redis ----------------------------------------------------

/// An owner signed in on instance `at`, with a phone enrolled through instance `phone_at`.
async fn owner(cluster: &Cluster, at: usize, phone_at: usize) -> (Console, ClusterPhone) {
    let (slug, email, password) = cluster.create_workspace();
    let console = Console::sign_in(cluster, at, &slug, &email, &password).await;
    let code = console.enrollment_code(cluster.base(at)).await;
    let phone = ClusterPhone::enroll(cluster.base(phone_at), &code).await;
    (console, phone)
}

async fn approve(cluster: &Cluster, phone: &ClusterPhone, at: usize, id: &str, number: i64) {
    let listed = phone.pending(cluster.base(at), id).await;
    let jws = phone.decision(&listed, "approve", number);
    let body = json_body(phone.send_decision(cluster.base(at), id, &jws).await, 200).await;
    assert_eq!(body["status"], "approved", "{body}");
}

/// Releases on `at` and checks that it happened once.
async fn release_once(cluster: &Cluster, console: &Console, at: usize, id: &str) -> String {
    let body = json_body(console.release(cluster.base(at), id).await, 200).await;
    let token = body["token"].as_str().expect("token").to_string();
    assert_token_shape(&token);
    for i in [A, B] {
        let resp = console.release(cluster.base(i), id).await;
        problem(resp, &[410]).await;
    }
    token
}

#[tokio::test]
async fn the_decision_on_b_reaches_the_stream_on_a_and_b_releases_for_a_s_session() {
    let cluster = Cluster::start(2, 120).await;
    let (console, phone) = owner(&cluster, A, B).await;
    let (id, number) = console.reveal(cluster.base(A)).await;
    let mut stream = console.events(cluster.base(A), &id).await;
    assert_eq!(stream.next_status().await, "pending");
    // The phone sees it on the other instance, and decides there.
    approve(&cluster, &phone, B, &id, number).await;
    assert_eq!(stream.next_status().await, "approved");
    stream.expect_end().await;
    assert_eq!(console.status(cluster.base(B), &id).await, "approved");
    release_once(&cluster, &console, B, &id).await;
    assert_eq!(console.status(cluster.base(A), &id).await, "released");
    // Each instance counted its own Redis round trips: A made the challenge, B changed it.
    for (i, op) in [(A, "insert"), (B, "swap"), (B, "publish")] {
        let metrics = reqwest::get(format!("{}/metrics", cluster.base(i)))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let line = format!("assent_redis_round_trips_total{{op=\"{op}\"}}");
        assert!(metrics.contains(&line), "{line} not in {metrics}");
    }
}

#[tokio::test]
async fn two_decisions_racing_on_a_and_b_have_exactly_one_winner() {
    let cluster = Cluster::start(2, 120).await;
    let (console, phone) = owner(&cluster, A, A).await;
    for round in 0..8 {
        let (id, number) = console.reveal(cluster.base(A)).await;
        let listed = phone.pending(cluster.base(B), &id).await;
        // Half the rounds race approve against deny, half approve against approve.
        let on_a = phone.decision(&listed, "approve", number);
        let on_b = if round % 2 == 0 {
            phone.decision(&listed, "deny", number)
        } else {
            phone.decision(&listed, "approve", number)
        };
        let (a, b) = tokio::join!(
            phone.send_decision(cluster.base(A), &id, &on_a),
            phone.send_decision(cluster.base(B), &id, &on_b)
        );
        let codes = [a.status().as_u16(), b.status().as_u16()];
        let (winner, loser) = match codes {
            [200, 409] => (a, b),
            [409, 200] => (b, a),
            _ => panic!("round {round}: expected one 200 and one 409, got {codes:?}"),
        };
        problem(loser, &[409]).await;
        let status = json_body(winner, 200).await["status"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(console.status(cluster.base(B), &id).await, status);
        if status == "approved" {
            release_once(&cluster, &console, A, &id).await;
        } else {
            problem(console.release(cluster.base(B), &id).await, &[409]).await;
        }
    }
}

#[tokio::test]
async fn an_instance_killed_mid_wait_hands_the_browser_over_to_the_other() {
    let mut cluster = Cluster::start(2, 120).await;
    let (console, phone) = owner(&cluster, A, A).await;
    let (id, number) = console.reveal(cluster.base(A)).await;
    let mut on_a = console.events_response(cluster.base(A), &id).await;
    let first = tokio::time::timeout(WAIT, on_a.chunk())
        .await
        .expect("a first event")
        .expect("read the stream")
        .expect("a first chunk");
    assert!(String::from_utf8_lossy(&first).contains("pending"));

    cluster.instances[A].kill();
    // The stream is cut (an error or an end, never another event).
    loop {
        match tokio::time::timeout(WAIT, on_a.chunk()).await {
            Err(_) => panic!("the stream on the killed instance stayed open"),
            Ok(Ok(Some(chunk))) => {
                let text = String::from_utf8_lossy(&chunk);
                assert!(
                    text.trim_start().starts_with(':'),
                    "only keep-alives: {text:?}"
                );
            }
            Ok(Ok(None)) | Ok(Err(_)) => break,
        }
    }

    // EventSource reconnects; the load balancer sends it to B, with the same session.
    let mut on_b = console.events(cluster.base(B), &id).await;
    assert_eq!(on_b.next_status().await, "pending");
    approve(&cluster, &phone, B, &id, number).await;
    assert_eq!(on_b.next_status().await, "approved");
    on_b.expect_end().await;
    let body = json_body(console.release(cluster.base(B), &id).await, 200).await;
    assert_token_shape(body["token"].as_str().unwrap());
    problem(console.release(cluster.base(B), &id).await, &[410]).await;
    assert_eq!(cluster.readyz(B).await, 200);
}

#[tokio::test]
async fn redis_restarted_mid_flow_streams_survive_and_nothing_is_released_early() {
    let mut cluster = Cluster::start(2, 120).await;
    let (console, phone) = owner(&cluster, A, B).await;
    let (id, number) = console.reveal(cluster.base(A)).await;
    let mut on_a = console.events(cluster.base(A), &id).await;
    let mut on_b = console.events(cluster.base(B), &id).await;
    assert_eq!(on_a.next_status().await, "pending");
    assert_eq!(on_b.next_status().await, "pending");

    // Redis dies (its data saved first, as AOF or RDB persistence would keep it).
    cluster.redis.save().await;
    cluster.redis.kill();
    for i in [A, B] {
        cluster.wait_readyz(i, 503, WAIT).await;
    }
    problem(
        console
            .post(cluster.base(A), "/v1/console/scim-token/reveal")
            .await,
        &[503],
    )
    .await;
    problem(console.release(cluster.base(B), &id).await, &[503]).await;
    let listed = problem(
        phone.challenges_with(cluster.base(B), &phone.auth()).await,
        &[503],
    )
    .await;
    assert_eq!(listed["status"], 503);
    // The streams stay open through the outage (keep-alives only, no event, no end).
    for stream in [&mut on_a, &mut on_b] {
        assert!(
            tokio::time::timeout(
                Duration::from_secs(2),
                stream.next(Duration::from_secs(3600))
            )
            .await
            .is_err(),
            "a stream ended or spoke while Redis was down"
        );
    }

    cluster.redis.start_again().await;
    for i in [A, B] {
        cluster.wait_readyz(i, 200, WAIT).await;
    }
    assert_eq!(console.status(cluster.base(B), &id).await, "pending");
    approve(&cluster, &phone, B, &id, number).await;
    assert_eq!(on_a.next_status().await, "approved");
    assert_eq!(on_b.next_status().await, "approved");
    release_once(&cluster, &console, A, &id).await;
}

/// Redis answers commands but refuses this instance's subscription (here an ACL; in life a
/// pub/sub connection lost and not yet back): it would hear no decision made elsewhere, so
/// `/readyz` says 503 and names the bus. A decision made meanwhile is not lost: once subscribed
/// again, the waiting stream re-reads it.
#[tokio::test]
async fn an_instance_whose_subscription_is_down_is_not_ready_and_misses_nothing() {
    let cluster = Cluster::start(2, 120).await;
    let (console, phone) = owner(&cluster, A, B).await;
    let (id, number) = console.reveal(cluster.base(A)).await;
    let mut on_a = console.events(cluster.base(A), &id).await;
    assert_eq!(on_a.next_status().await, "pending");

    let _: String = cluster
        .redis
        .query(&["ACL", "SETUSER", "default", "-subscribe"])
        .await;
    // Each instance's listener is cut, and cannot subscribe again.
    let _killed: i64 = cluster
        .redis
        .query(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .await;
    for i in [A, B] {
        cluster.wait_readyz(i, 503, WAIT).await;
    }
    let ready: serde_json::Value = reqwest::get(format!("{}/readyz", cluster.base(A)))
        .await
        .expect("GET /readyz")
        .json()
        .await
        .expect("a JSON body");
    assert_eq!(
        ready,
        serde_json::json!({"database": "ok", "challenge_store": "ok", "bus": "unavailable"})
    );
    // Commands still work: the phone decides on B while nobody hears it.
    approve(&cluster, &phone, B, &id, number).await;

    let _: String = cluster
        .redis
        .query(&["ACL", "SETUSER", "default", "+subscribe"])
        .await;
    for i in [A, B] {
        cluster.wait_readyz(i, 200, WAIT).await;
    }
    assert_eq!(on_a.next_status().await, "approved");
    release_once(&cluster, &console, A, &id).await;
}

#[tokio::test]
async fn a_stream_that_reads_while_redis_is_down_waits_and_then_tells_the_expiry() {
    let mut cluster = Cluster::start(2, 2).await;
    let (console, _phone) = owner(&cluster, A, A).await;
    let (id, _) = console.reveal(cluster.base(A)).await;
    let mut stream = console.events(cluster.base(A), &id).await;
    assert_eq!(stream.next_status().await, "pending");
    cluster.redis.save().await;
    cluster.redis.kill();
    // Past the expiry the stream wakes and reads the challenge store, which is down: it must
    // neither end (EventSource would reconnect into a 503 and give up) nor say anything.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        tokio::time::timeout(
            Duration::from_secs(1),
            stream.next(Duration::from_secs(3600))
        )
        .await
        .is_err(),
        "the stream ended or spoke while Redis was down"
    );
    cluster.redis.start_again().await;
    assert_eq!(stream.next_status().await, "expired");
    stream.expect_end().await;
}

#[tokio::test]
async fn a_redis_that_lost_its_data_releases_nothing() {
    let mut cluster = Cluster::start(2, 120).await;
    let (console, phone) = owner(&cluster, A, A).await;
    let (id, number) = console.reveal(cluster.base(A)).await;
    approve(&cluster, &phone, B, &id, number).await;
    let mut stream = console.events(cluster.base(A), &id).await;
    assert_eq!(stream.next_status().await, "approved");

    // Restarted without persistence: the approval is gone with everything else.
    cluster.redis.kill();
    cluster.redis.start_again().await;
    for i in [A, B] {
        cluster.wait_readyz(i, 200, WAIT).await;
    }
    for i in [A, B] {
        problem(console.release(cluster.base(i), &id).await, &[404]).await;
    }
    // A new challenge works at once.
    let (again, _) = console.reveal(cluster.base(B)).await;
    assert_eq!(console.status(cluster.base(A), &again).await, "pending");
}

#[tokio::test]
async fn a_device_jws_replayed_on_the_other_instance_is_refused() {
    let cluster = Cluster::start(2, 120).await;
    let (_console, phone) = owner(&cluster, A, A).await;
    let auth = phone.auth();
    json_body(phone.challenges_with(cluster.base(A), &auth).await, 200).await;
    for i in [B, A] {
        let body = problem(phone.challenges_with(cluster.base(i), &auth).await, &[401]).await;
        assert_eq!(body["status"], 401);
    }
    // A fresh one is fine on either.
    for i in [A, B] {
        json_body(
            phone.challenges_with(cluster.base(i), &phone.auth()).await,
            200,
        )
        .await;
    }
}

/// SCIM with `token` on instance `at`: its status.
async fn scim_on(cluster: &Cluster, at: usize, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{}/v1/scim/v2/Users?count=1", cluster.base(at)))
        .bearer_auth(token)
        .send()
        .await
        .expect("SCIM request")
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_token_rotated_on_a_is_refused_on_b_right_after_even_when_b_had_it_cached() {
    let cluster = Cluster::start(2, 120).await;
    let (console, phone) = owner(&cluster, A, A).await;
    let (id, number) = console.reveal(cluster.base(A)).await;
    approve(&cluster, &phone, A, &id, number).await;
    let old = release_once(&cluster, &console, A, &id).await;
    // Both instances have seen (and may have cached) the token.
    for i in [A, B, A, B] {
        assert_eq!(scim_on(&cluster, i, &old).await, 200);
    }
    // Rotated on A (no grace period: the default policy), approved and released there.
    let body = json_body(
        console
            .post(cluster.base(A), "/v1/console/scim-token/rotate")
            .await,
        202,
    )
    .await;
    let id = body["challenge_id"]
        .as_str()
        .expect("challenge_id")
        .to_owned();
    approve(
        &cluster,
        &phone,
        A,
        &id,
        body["number"].as_i64().expect("number"),
    )
    .await;
    let new = release_once(&cluster, &console, A, &id).await;
    assert_ne!(new, old);
    // B refuses the old one at once, and takes the new one.
    for i in [B, A] {
        assert_eq!(scim_on(&cluster, i, &old).await, 401, "instance {i}");
        assert_eq!(scim_on(&cluster, i, &new).await, 200, "instance {i}");
    }
}
