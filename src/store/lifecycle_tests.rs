//! The token lifecycle's storage on a real database (SQLite, and Postgres when
//! `ASSENT_TEST_POSTGRES_URL` is set): policies, and rotations with a grace period racing.

use futures_util::future::join_all;
use time::Duration;

use super::test_db::TestDb;
use crate::domain::policy::{Policy, TokenViewers};
use crate::domain::token;

#[tokio::test]
async fn policies_round_trip_and_default_when_never_set() {
    for db in TestDb::each().await {
        let app = db.app(&[]).await;
        let (ws, _) = app
            .create_workspace("acme", "Acme", "o@acme.example")
            .await
            .unwrap();
        assert_eq!(app.store.policy(ws.id).await.unwrap(), Policy::default());
        let set = Policy {
            two_person_rotation: true,
            rotation_grace_minutes: 10_080,
            token_viewers: TokenViewers::Owners,
        };
        app.store
            .put_policy(ws.id, &set, "o@acme.example", app.now())
            .await
            .unwrap();
        assert_eq!(app.store.policy(ws.id).await.unwrap(), set);
    }
}

#[tokio::test]
async fn racing_rotations_with_a_grace_period_all_succeed_and_leave_one_token_in_grace() {
    for db in TestDb::each().await {
        let app = db.app(&[]).await;
        let (ws, _) = app
            .create_workspace("acme", "Acme", "o@acme.example")
            .await
            .unwrap();
        let grace = Policy {
            rotation_grace_minutes: 30,
            ..Policy::default()
        };
        app.store
            .put_policy(ws.id, &grace, "o@acme.example", app.now())
            .await
            .unwrap();
        let first = app.reveal_token(&ws).await.unwrap().0;
        let results = join_all((0..8).map(|_| app.rotate_token(&ws, "o@acme.example"))).await;
        for r in &results {
            assert!(r.is_ok(), "a racing rotation failed");
        }
        let now = app.now();
        let until = app.store.grace_until(ws.id, now).await.unwrap().unwrap();
        assert!(until > now + Duration::minutes(29));
        // Only the token the last rotation replaced is in grace: not the first one.
        let hash = token::lookup_hash(first.expose());
        assert!(app
            .store
            .workspace_by_grace_hash(&hash, now)
            .await
            .unwrap()
            .is_none());
        let current = app.reveal_token(&ws).await.unwrap().0;
        assert!(app
            .authenticate_scim(current.expose())
            .await
            .unwrap()
            .is_some());
        assert!(app
            .authenticate_scim(first.expose())
            .await
            .unwrap()
            .is_none());
    }
}
