//! Router tests of the token lifecycle's clock-bound rules: the hourly challenge limit, the
//! rotation grace period, who may view the token, and the bulk audit of refused SCIM tokens.

use super::*;

impl Harness {
    async fn post(&self, uri: &str, cookie: &str) -> (StatusCode, axum::http::HeaderMap, Value) {
        call(&self.router, "POST", uri, Some(cookie), None, None).await
    }

    async fn get(&self, uri: &str, cookie: &str) -> Value {
        let (status, _, body) = call(&self.router, "GET", uri, Some(cookie), None, None).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        body
    }

    async fn set_policy(&self, cookie: &str, policy: Value) -> (StatusCode, Value) {
        let (status, _, body) = call(
            &self.router,
            "PUT",
            "/v1/console/policy",
            Some(cookie),
            None,
            Some(policy),
        )
        .await;
        (status, body)
    }

    /// Approves `challenge_id` on `phone` with the right number; returns the decision's answer.
    async fn approve(&self, phone: &Phone, challenge_id: &str, number: u8) -> Value {
        let challenge = self
            .pending(phone)
            .await
            .into_iter()
            .find(|c| c["id"] == challenge_id)
            .expect("listed to the phone");
        let (status, _, answer) = call(
            &self.router,
            "POST",
            &format!("/v1/mobile/challenges/{challenge_id}/decision"),
            None,
            self.device_auth(phone),
            Some(self.decision(phone, &challenge, true, number)),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answer
    }

    /// Runs View Token or Regenerate to the end; returns the released token.
    async fn step_up(&self, cookie: &str, phone: &Phone, verb: &str) -> String {
        let (status, _, started) = self
            .post(&format!("/v1/console/scim-token/{verb}"), cookie)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{started}");
        let id = started["challenge_id"].as_str().unwrap();
        self.approve(phone, id, started["number"].as_u64().unwrap() as u8)
            .await;
        let (status, _, released) = self
            .post(&format!("/v1/console/challenges/{id}/release"), cookie)
            .await;
        assert_eq!(status, StatusCode::OK, "{released}");
        released["token"].as_str().unwrap().to_owned()
    }

    async fn scim_status(&self, token: &str) -> StatusCode {
        call(
            &self.router,
            "GET",
            "/v1/scim/v2/Users",
            None,
            Some(format!("Bearer {token}")),
            None,
        )
        .await
        .0
    }

    async fn member(&self, slug: &str, email: &str, role: crate::store::Role) -> String {
        let (_, password) = self.app.add_member(slug, email, role).await.unwrap();
        self.sign_in(slug, email, password.expose()).await
    }
}

#[tokio::test]
async fn the_hourly_challenge_limit_answers_429_until_the_hour_slides() {
    let h = harness_with(&[("ASSENT_CHALLENGES_PER_HOUR", "5")]).await;
    let cookie = h.owner("acme").await;
    let _phone = h.phone(&cookie).await;
    for _ in 0..5 {
        let (status, _, _) = h.post("/v1/console/scim-token/reveal", &cookie).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        h.clock.advance(Duration::minutes(1));
    }
    let (status, headers, problem) = h.post("/v1/console/scim-token/reveal", &cookie).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{problem}");
    // The first of the five leaves the hour 55 minutes from now.
    assert_eq!(headers[header::RETRY_AFTER], "3300");
    assert!(
        problem["detail"].as_str().unwrap().contains("5"),
        "{problem}"
    );
    // Rotation counts against the same person's limit.
    let (status, _, _) = h.post("/v1/console/scim-token/rotate", &cookie).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    // Another admin of the workspace is not limited by the owner's requests.
    let admin = h
        .member("acme", "admin@acme.test", crate::store::Role::Admin)
        .await;
    let _admin_phone = h.phone(&admin).await;
    let (status, _, _) = h.post("/v1/console/scim-token/reveal", &admin).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // (with a use in between, so the session does not end idle)
    for step in [20, 20, 15] {
        h.clock.advance(Duration::minutes(step));
        h.get("/v1/console/session", &cookie).await;
    }
    let (status, _, _) = h.post("/v1/console/scim-token/reveal", &cookie).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let audit = h
        .get("/v1/console/audit?kind=security.challenge_limit", &cookie)
        .await;
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{audit}");
    assert_eq!(entries[0]["actor"], "owner@acme.test");
    assert_eq!(entries[0]["detail"]["per_hour"], 5);
}

#[tokio::test]
async fn the_old_token_works_through_the_grace_period_and_not_a_second_longer() {
    let h = harness().await;
    let cookie = h.owner("acme").await;
    let phone = h.phone(&cookie).await;
    let first = h.step_up(&cookie, &phone, "reveal").await;

    let (status, policy) = h
        .set_policy(
            &cookie,
            json!({"two_person_rotation": false, "rotation_grace_minutes": 10, "token_viewers": "admins"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{policy}");
    assert_eq!(policy["old_token_valid_until"], Value::Null);

    let rotated_at = h.clock.now();
    let second = h.step_up(&cookie, &phone, "rotate").await;
    assert_ne!(first, second);
    assert_eq!(h.scim_status(&second).await, StatusCode::OK);
    assert_eq!(h.scim_status(&first).await, StatusCode::OK, "in its grace");
    let policy = h.get("/v1/console/policy", &cookie).await;
    assert_eq!(
        policy["old_token_valid_until"],
        crate::clock::rfc3339(rotated_at + Duration::minutes(10))
    );

    h.clock
        .advance(Duration::minutes(10) - Duration::seconds(1));
    assert_eq!(h.scim_status(&first).await, StatusCode::OK);
    h.clock.advance(Duration::seconds(1));
    assert_eq!(h.scim_status(&first).await, StatusCode::UNAUTHORIZED);
    assert_eq!(h.scim_status(&second).await, StatusCode::OK);
    let policy = h.get("/v1/console/policy", &cookie).await;
    assert_eq!(policy["old_token_valid_until"], Value::Null);

    // A second rotation inside the grace ends the older token's grace at once: only the token it
    // replaced keeps one.
    let third = h.step_up(&cookie, &phone, "rotate").await;
    h.clock.advance(Duration::minutes(1));
    let fourth = h.step_up(&cookie, &phone, "rotate").await;
    assert_eq!(h.scim_status(&second).await, StatusCode::UNAUTHORIZED);
    assert_eq!(h.scim_status(&third).await, StatusCode::OK);
    assert_eq!(h.scim_status(&fourth).await, StatusCode::OK);

    let audit = h.get("/v1/console/audit?kind=token.rotated", &cookie).await;
    assert!(
        audit["entries"][0]["detail"]["old_token_valid_until"].is_string(),
        "{audit}"
    );
    let audit = h
        .get("/v1/console/audit?kind=policy.changed", &cookie)
        .await;
    assert_eq!(
        audit["entries"][0]["detail"]["after"]["rotation_grace_minutes"],
        10
    );
    assert_eq!(
        audit["entries"][0]["detail"]["before"]["rotation_grace_minutes"],
        0
    );
}

#[tokio::test]
async fn only_owners_set_the_policy_and_it_decides_who_views_the_token() {
    let h = harness().await;
    let owner = h.owner("acme").await;
    let _owner_phone = h.phone(&owner).await;
    let admin = h
        .member("acme", "admin@acme.test", crate::store::Role::Admin)
        .await;
    let admin_phone = h.phone(&admin).await;
    let member = h
        .member("acme", "member@acme.test", crate::store::Role::Member)
        .await;

    let owners_only = json!({"two_person_rotation": false, "rotation_grace_minutes": 0, "token_viewers": "owners"});
    let (status, _) = h.set_policy(&admin, owners_only.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = call(
        &h.router,
        "GET",
        "/v1/console/policy",
        Some(&member),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Bad bodies are refused and change nothing.
    for bad in [
        json!({"two_person_rotation": false, "rotation_grace_minutes": 100000, "token_viewers": "owners"}),
        json!({"two_person_rotation": false, "rotation_grace_minutes": 0, "token_viewers": "everyone"}),
        json!({"two_person_rotation": false, "rotation_grace_minutes": -1, "token_viewers": "owners"}),
        json!({"two_person_rotation": false, "rotation_grace_minutes": 0, "token_viewers": "owners", "extra": 1}),
    ] {
        let (status, problem) = h.set_policy(&owner, bad.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad} → {problem}"
        );
    }
    assert_eq!(
        h.get("/v1/console/policy", &admin).await["token_viewers"],
        "admins"
    );
    // Before: the admin may view.
    h.step_up(&admin, &admin_phone, "reveal").await;

    // A reveal the admin asked for before the change…
    let (status, _, started) = h.post("/v1/console/scim-token/reveal", &admin).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = started["challenge_id"].as_str().unwrap().to_owned();
    let (status, _) = h.set_policy(&owner, owners_only).await;
    assert_eq!(status, StatusCode::OK);
    // …is approved on the phone, yet not released: the policy is read again at release.
    h.approve(&admin_phone, &id, started["number"].as_u64().unwrap() as u8)
        .await;
    let (status, _, problem) = h
        .post(&format!("/v1/console/challenges/{id}/release"), &admin)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(
        h.get("/v1/console/policy", &admin).await["token_viewers"],
        "owners"
    );
    // Regenerating shows the token too, so it is refused as well.
    for verb in ["reveal", "rotate"] {
        let (status, _, problem) = h
            .post(&format!("/v1/console/scim-token/{verb}"), &admin)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{verb}: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains("owners"));
    }
    let (status, _, _) = h.post("/v1/console/scim-token/reveal", &owner).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn refused_scim_tokens_are_audited_in_bulk_by_source_without_the_token() {
    let h = harness().await;
    let _cookie = h.owner("acme").await;
    let forged = format!("assent_scim_{}", "A".repeat(49));
    for _ in 0..3 {
        assert_eq!(h.scim_status(&forged).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        h.scim_status("not-even-a-token").await,
        StatusCode::UNAUTHORIZED
    );
    h.app.sweep_provisioning_log().await;
    // Nothing new to report: no second entry.
    h.app.sweep_provisioning_log().await;
    let entries = h.app.store.audit_chain(None, 0, 100).await.unwrap();
    let refused: Vec<_> = entries
        .iter()
        .filter(|e| e.kind == "scim.token_refused")
        .collect();
    assert_eq!(refused.len(), 1, "{entries:?}");
    let detail = &refused[0].detail;
    assert_eq!(detail["requests"], 4, "{detail}");
    assert_eq!(detail["distinct_sources"], 1);
    assert_eq!(detail["sources"][0]["requests"], 4);
    assert!(!detail.to_string().contains(&forged));
}

/// Approves `id` in the challenge store only, as a process that died right after the approval
/// left it: approved, the rotation's work begun, no new token, not marked rotated.
async fn approved_then_died(h: &Harness, id: &str) {
    let stored = h.app.challenges.get(id).await.unwrap().unwrap();
    let mut approved = stored.clone();
    let decision = crate::domain::challenge::Decision {
        device_id: "dev".into(),
        device_user_id: stored.user_id,
        challenge_id: stored.id.clone(),
        nonce: stored.nonce.clone(),
        action: stored.action.as_str().into(),
        approve: true,
        number: Some(stored.number),
        reason: None,
        workspace: None,
        ticket: None,
    };
    approved.decide(&decision, h.clock.now()).unwrap();
    assert!(h
        .app
        .challenges
        .swap(&approved, stored.version)
        .await
        .unwrap());
}

#[tokio::test]
async fn a_rotation_left_unfinished_by_a_dead_process_is_taken_up_once() {
    let h = harness().await;
    let cookie = h.owner("acme").await;
    let phone = h.phone(&cookie).await;
    let before = h.step_up(&cookie, &phone, "reveal").await;

    // The process dies between the approval and the new token.
    let (_, _, started) = h.post("/v1/console/scim-token/rotate", &cookie).await;
    let id = started["challenge_id"].as_str().unwrap().to_owned();
    approved_then_died(&h, &id).await;
    let release = format!("/v1/console/challenges/{id}/release");
    assert_eq!(h.post(&release, &cookie).await.0, StatusCode::CONFLICT);
    // Not taken up while the work may still be running elsewhere...
    assert_eq!(h.app.resume_rotations().await.unwrap(), 0);
    // ...but once it is stale: rotated once, and released once.
    h.clock.advance(Duration::seconds(16));
    assert_eq!(h.app.resume_rotations().await.unwrap(), 1);
    assert_eq!(h.app.resume_rotations().await.unwrap(), 0);
    let (status, _, released) = h.post(&release, &cookie).await;
    assert_eq!(status, StatusCode::OK, "{released}");
    let after = released["token"].as_str().unwrap().to_owned();
    assert_ne!(after, before);
    assert_eq!(h.scim_status(&before).await, StatusCode::UNAUTHORIZED);
    assert_eq!(h.scim_status(&after).await, StatusCode::OK);
    assert_eq!(h.post(&release, &cookie).await.0, StatusCode::GONE);

    // The process dies after the new token but before the marking: only the marking is redone.
    let (_, _, started) = h.post("/v1/console/scim-token/rotate", &cookie).await;
    let id = started["challenge_id"].as_str().unwrap().to_owned();
    approved_then_died(&h, &id).await;
    let workspace = h
        .app
        .store
        .workspace_by_slug("acme")
        .await
        .unwrap()
        .unwrap();
    h.clock.advance(Duration::seconds(1));
    h.app.rotate_token(&workspace, "owner").await.unwrap();
    let (made, _) = h.app.reveal_token(&workspace).await.unwrap();
    h.clock.advance(Duration::seconds(16));
    assert_eq!(h.app.resume_rotations().await.unwrap(), 1);
    let (status, _, released) = h
        .post(&format!("/v1/console/challenges/{id}/release"), &cookie)
        .await;
    assert_eq!(status, StatusCode::OK, "{released}");
    assert_eq!(released["token"], made.expose(), "no second rotation");
}

#[tokio::test]
async fn a_cached_token_is_refused_at_once_on_rotation_and_at_its_grace_end() {
    let h = harness().await;
    let cookie = h.owner("acme").await;
    let phone = h.phone(&cookie).await;
    let first = h.step_up(&cookie, &phone, "reveal").await;
    assert_eq!(h.scim_status(&first).await, StatusCode::OK);
    assert_eq!(h.app.bus.token_cache().len(), 1, "the token is cached");
    assert_eq!(h.scim_status(&first).await, StatusCode::OK);

    // No grace period: the cached token is refused with the rotation.
    let second = h.step_up(&cookie, &phone, "rotate").await;
    assert_eq!(h.scim_status(&first).await, StatusCode::UNAUTHORIZED);
    assert_eq!(h.scim_status(&second).await, StatusCode::OK);

    // A one-minute grace: the replaced token, cached half-way through it, stops at its end,
    // not a cache lifetime (MAX_AGE) after it was cached.
    let (status, policy) = h
        .set_policy(
            &cookie,
            json!({"two_person_rotation": false, "rotation_grace_minutes": 1, "token_viewers": "admins"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{policy}");
    let _third = h.step_up(&cookie, &phone, "rotate").await;
    h.clock.advance(Duration::seconds(30));
    assert_eq!(h.scim_status(&second).await, StatusCode::OK, "in its grace");
    h.clock.advance(Duration::seconds(29));
    assert_eq!(
        h.scim_status(&second).await,
        StatusCode::OK,
        "cached, in its grace"
    );
    h.clock.advance(Duration::seconds(1));
    assert_eq!(h.scim_status(&second).await, StatusCode::UNAUTHORIZED);
}
