//! Unit tests of `challenge.rs`.

use super::*;
use rand::SeedableRng;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2026-11-28 12:00 UTC);

fn challenge() -> Challenge {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    Challenge::new(
        Request {
            action: Action::Reveal,
            workspace_id: 1,
            workspace_slug: "acme".into(),
            workspace_name: "Acme".into(),
            user_id: 10,
            user_email: "a@acme.test".into(),
            session_hash: "s".into(),
            origin: Origin::default(),
            support: None,
            second_approvers: vec![],
            subject: None,
        },
        NOW,
        Duration::seconds(120),
        &mut rng,
    )
}

fn decision(c: &Challenge, approve: bool, number: Option<u8>) -> Decision {
    Decision {
        device_id: "d".into(),
        device_user_id: c.user_id,
        challenge_id: c.id.clone(),
        nonce: c.nonce.clone(),
        action: c.action.as_str().into(),
        approve,
        number,
        reason: None,
        workspace: None,
        ticket: None,
    }
}

#[test]
fn numbers_are_two_digits_with_two_distinct_decoys() {
    for seed in 0..500 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut c = challenge();
        c = Challenge::new(
            Request {
                action: c.action,
                ..request_of(&c)
            },
            NOW,
            Duration::seconds(1),
            &mut rng,
        );
        assert!((10..=99).contains(&c.number));
        assert!(c.number_choices.contains(&c.number));
        let mut sorted = c.number_choices;
        sorted.sort();
        assert!(sorted[0] != sorted[1] && sorted[1] != sorted[2]);
    }
    assert_eq!(challenge().nonce.len(), 43, "32 bytes, base64url");
}

fn request_of(c: &Challenge) -> Request {
    Request {
        action: c.action,
        workspace_id: c.workspace_id,
        workspace_slug: c.workspace_slug.clone(),
        workspace_name: c.workspace_name.clone(),
        user_id: c.user_id,
        user_email: c.user_email.clone(),
        session_hash: c.session_hash.clone(),
        origin: c.origin.clone(),
        support: c.support.clone(),
        second_approvers: c.second_approvers.clone(),
        subject: c.subject.clone(),
    }
}

#[test]
fn approve_then_release_once() {
    let mut c = challenge();
    let d = decision(&c, true, Some(c.number));
    assert_eq!(c.decide(&d, NOW), Ok(Outcome::Approved));
    assert_eq!(c.status, Status::Approved);
    assert_eq!(c.decide(&d, NOW), Err(DecideError::NotPending));
    assert_eq!(c.release(NOW), Ok(()));
    assert_eq!(c.status, Status::Released);
    assert_eq!(c.release(NOW), Err(ReleaseError::AlreadyReleased));
}

#[test]
fn wrong_number_denies() {
    let mut c = challenge();
    let wrong = c
        .number_choices
        .iter()
        .copied()
        .find(|n| *n != c.number)
        .unwrap();
    assert_eq!(
        c.decide(&decision(&c, true, Some(wrong)), NOW),
        Ok(Outcome::WrongNumber)
    );
    assert_eq!(c.status, Status::Denied);
    assert_eq!(c.deny_reason, Some(DenyReason::WrongNumber));
    assert_eq!(c.release(NOW), Err(ReleaseError::NotApproved));
}

#[test]
fn mismatches_leave_the_challenge_unchanged() {
    let c0 = challenge();
    for tamper in 0..4 {
        let mut c = c0.clone();
        let mut d = decision(&c, true, Some(c.number));
        match tamper {
            0 => d.nonce = "other".into(),
            1 => d.action = Action::Rotate.as_str().into(),
            2 => d.challenge_id = "other".into(),
            _ => d.device_user_id = 99,
        }
        assert!(c.decide(&d, NOW).is_err());
        assert_eq!(c, c0);
    }
}

#[test]
fn expiry_comes_from_the_clock() {
    let mut c = challenge();
    assert!(!c.expire_if_due(NOW + Duration::seconds(119)));
    let d = decision(&c, true, Some(c.number));
    assert_eq!(
        c.decide(&d, NOW + Duration::seconds(120)),
        Err(DecideError::NotPending)
    );
    assert_eq!(c.status, Status::Expired);

    // An approval that is never released also expires.
    let mut c = challenge();
    c.decide(&decision(&c, true, Some(c.number)), NOW).unwrap();
    assert!(c.expire_if_due(NOW + Duration::seconds(121)));
    assert_eq!(
        c.release(NOW + Duration::seconds(121)),
        Err(ReleaseError::NotApproved)
    );
    assert_eq!(
        c.retain_until(),
        NOW + Duration::seconds(121) + RETAIN_AFTER_END
    );
}

#[test]
fn deny_records_its_reason_and_supersede_only_touches_pending() {
    let mut c = challenge();
    let mut d = decision(&c, false, None);
    d.reason = Some(DenyReason::NotMe);
    assert_eq!(
        c.decide(&d, NOW),
        Ok(Outcome::Denied(Some(DenyReason::NotMe)))
    );
    assert!(!c.supersede(NOW));
    let mut fresh = challenge();
    assert!(fresh.supersede(NOW));
    assert_eq!(fresh.status, Status::Expired);
}

#[test]
fn a_rotation_is_released_only_once_its_new_token_is_made() {
    let mut c = challenge();
    c.action = Action::Rotate;
    c.decide(&decision(&c, true, Some(c.number)), NOW).unwrap();
    assert_eq!(c.release(NOW), Err(ReleaseError::NotRotatedYet));
    assert_eq!(
        c.shown_status(),
        Status::Pending,
        "not shown approved before"
    );
    assert!(c.mark_rotated(NOW));
    assert_eq!(c.shown_status(), Status::Approved);
    assert!(!c.mark_rotated(NOW), "once");
    assert_eq!(c.release(NOW), Ok(()));
}

#[test]
fn an_unfinished_rotation_is_claimed_once_it_is_stale() {
    let mut c = challenge();
    c.action = Action::Rotate;
    let d = decision(&c, true, Some(c.number));
    assert_eq!(c.decide(&d, NOW), Ok(Outcome::Approved));
    assert_eq!(c.rotation_started_at, Some(NOW));
    let stale = Duration::seconds(10);
    assert_eq!(c.claim_rotation(NOW + Duration::seconds(5), stale), None);
    let later = NOW + Duration::seconds(11);
    assert_eq!(c.claim_rotation(later, stale), Some(NOW));
    // The claim restarts the clock: a second claimant right after finds nothing.
    assert_eq!(c.claim_rotation(later, stale), None);
    assert!(c.mark_rotated(later));
    assert_eq!(c.claim_rotation(later + Duration::minutes(1), stale), None);
    // A reveal has nothing to rotate.
    let mut r = challenge();
    let d = decision(&r, true, Some(r.number));
    r.decide(&d, NOW).unwrap();
    assert_eq!(r.claim_rotation(NOW + Duration::minutes(1), stale), None);
}

#[test]
fn every_transition_bumps_the_version() {
    let mut c = challenge();
    let v0 = c.version;
    c.decide(&decision(&c, true, Some(c.number)), NOW).unwrap();
    let v1 = c.version;
    c.release(NOW).unwrap();
    assert!(v0 < v1 && v1 < c.version);
}

#[test]
fn two_person_rule_needs_a_second_person_with_a_fresh_nonce() {
    let mut c = challenge();
    c.second_approvers = vec![11, 12];
    let first = decision(&c, true, Some(c.number));
    // Nobody else may go first.
    let mut early = first.clone();
    early.device_user_id = 11;
    assert_eq!(c.decide(&early, NOW), Err(DecideError::NotTheOwner));
    let nonce = c.nonce.clone();
    let later = NOW + Duration::seconds(100);
    assert_eq!(c.decide(&first, later), Ok(Outcome::FirstApproved));
    assert_eq!(c.status, Status::Pending);
    assert_eq!(
        c.expires_at,
        later + Duration::seconds(120),
        "a fresh lifetime"
    );
    assert!(c.awaits_second_approval());
    assert_ne!(c.nonce, nonce);
    assert_eq!(c.deciders(), vec![11, 12]);
    // The requester cannot approve twice, and the old nonce is dead.
    assert_eq!(c.decide(&first, NOW), Err(DecideError::NotTheOwner));
    let mut second = decision(&c, true, Some(c.number));
    second.device_user_id = 12;
    let mut stale = second.clone();
    stale.nonce = nonce;
    assert_eq!(c.decide(&stale, NOW), Err(DecideError::Mismatch));
    assert_eq!(c.decide(&second, NOW), Ok(Outcome::Approved));
    assert_eq!(c.status, Status::Approved);
}

#[test]
fn a_support_decision_must_sign_the_workspace_and_ticket() {
    let mut c = challenge();
    c.action = Action::SupportRotate;
    c.support = Some(SupportContext {
        ticket: "T-1".into(),
        reason: "lost".into(),
    });
    let mut d = decision(&c, true, Some(c.number));
    assert_eq!(c.decide(&d, NOW), Err(DecideError::Mismatch));
    d.workspace = Some("acme".into());
    d.ticket = Some("T-2".into());
    assert_eq!(c.decide(&d, NOW), Err(DecideError::Mismatch));
    d.ticket = Some("T-1".into());
    let mut bare = c.clone();
    bare.support = None;
    assert_eq!(
        bare.decide(&d, NOW),
        Err(DecideError::Mismatch),
        "keyed on the action too"
    );
    assert_eq!(c.decide(&d, NOW), Ok(Outcome::Approved));
}

fn claims(decision: &str, reason: Option<&str>) -> crate::domain::device::DecisionClaims {
    crate::domain::device::DecisionClaims {
        iss: "dev_1".into(),
        aud: "https://assent.example".into(),
        sub: "ch_1".into(),
        nonce: "n".into(),
        action: "scim_token.reveal".into(),
        decision: decision.into(),
        number: Some(42),
        reason: reason.map(str::to_owned),
        workspace: None,
        ticket: None,
        iat: 0,
        exp: 60,
    }
}

#[test]
fn a_phone_decides_in_the_contract_words_only() {
    let approve = Decision::from_claims(claims("approve", None), "dev_1", 7).unwrap();
    assert!(approve.approve);
    assert_eq!(
        (
            approve.device_id.as_str(),
            approve.device_user_id,
            approve.number
        ),
        ("dev_1", 7, Some(42))
    );
    let deny = Decision::from_claims(claims("deny", Some("not_me")), "dev_1", 7).unwrap();
    assert!(!deny.approve);
    assert_eq!(deny.reason, Some(DenyReason::NotMe));
    assert_eq!(
        Decision::from_claims(claims("deny", Some("mistake")), "dev_1", 7)
            .unwrap()
            .reason,
        Some(DenyReason::Mistake)
    );
    assert_eq!(
        Decision::from_claims(claims("Approve", None), "dev_1", 7).unwrap_err(),
        DecideError::BadDecision
    );
    // `wrong_number` is the server's own reason, never one a phone may give.
    for reason in ["wrong_number", "NOT_ME", ""] {
        assert_eq!(
            Decision::from_claims(claims("deny", Some(reason)), "dev_1", 7).unwrap_err(),
            DecideError::BadReason,
            "{reason:?}"
        );
    }
}
