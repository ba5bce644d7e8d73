//! Master-key rotation on a real database (SQLite, and Postgres when `ASSENT_TEST_POSTGRES_URL` is
//! set): every kind of sealed value moves, a stopped rotation resumes, nothing is lost.

use time::OffsetDateTime;

use super::*;
use crate::app::App;
use crate::domain::crypto::{MasterKey, Sealed};
use crate::store::sealed::SealedColumn;
use crate::store::sso::{PendingSignIn, SsoConfig, Taken};
use crate::store::test_db::TestDb;
use crate::store::{NewDevice, Platform, Role};

/// What was sealed, in plain, to compare after the rotation.
struct Secrets {
    tokens: Vec<(crate::store::Workspace, String)>,
    device_id: String,
    push_token: String,
    sso_secret: String,
    state_hash: String,
}

/// Three workspaces (three SCIM tokens), a device with a push token, an SSO provider with its
/// client secret, and a started SSO sign-in with its PKCE verifier: 6 sealed values.
async fn fill(app: &App) -> Secrets {
    let now = OffsetDateTime::now_utc();
    let mut tokens = Vec::new();
    for i in 0..3 {
        let (ws, _) = app
            .create_workspace(&format!("ws{i}"), "W", &format!("owner@ws{i}.example"))
            .await
            .unwrap();
        let (token, _) = app.reveal_token(&ws).await.unwrap();
        tokens.push((ws, token.expose().to_owned()));
    }
    let ws = tokens[0].0.clone();
    let owner = app
        .store
        .user_by_email(ws.id, "owner@ws0.example")
        .await
        .unwrap()
        .unwrap();
    app.store
        .create_enrollment(
            "code",
            owner.id,
            now,
            now + time::Duration::minutes(10),
            true,
        )
        .await
        .unwrap();
    let device_id = "dev_rotation".to_owned();
    let push_token = "fcm-push-token".to_owned();
    app.store
        .enroll_device(
            "code",
            NewDevice {
                id: device_id.clone(),
                user_id: 0,
                name: "Phone".into(),
                platform: Platform::Fcm,
                apns_environment: None,
                public_key: serde_json::json!({}),
                push_token: Some(
                    app.keyring
                        .seal(push_token.as_bytes(), device_id.as_bytes()),
                ),
            },
            now,
        )
        .await
        .unwrap();
    let sso_secret = "sso-client-secret-value".to_owned();
    app.sso
        .put_config(&SsoConfig {
            workspace_id: ws.id,
            issuer: "https://idp.example".into(),
            client_id: "assent".into(),
            client_secret: app.keyring.seal(
                sso_secret.as_bytes(),
                &super::super::sso::secret_context(&ws.slug),
            ),
            allowed_email_domains: vec![],
            default_role: Role::Member,
            enforce: false,
            updated_at: now,
            updated_by: "owner@ws0.example".into(),
        })
        .await
        .unwrap();
    let state_hash = "ab".repeat(32);
    app.sso
        .create_pending(&PendingSignIn {
            state_hash: state_hash.clone(),
            workspace_id: ws.id,
            issuer: "https://idp.example".into(),
            nonce_hash: "cd".repeat(32),
            binding_hash: "ef".repeat(32),
            pkce_verifier: app
                .keyring
                .seal(b"verifier", &super::super::sso::pkce_context(&state_hash)),
            reauth_session_hash: None,
            created_at: now,
            expires_at: now + time::Duration::minutes(10),
        })
        .await
        .unwrap();
    Secrets {
        tokens,
        device_id,
        push_token,
        sso_secret,
        state_hash,
    }
}

/// Every secret opens with `app`'s keyring and is what was sealed.
async fn assert_all_open(app: &App, s: &Secrets) {
    for (ws, token) in &s.tokens {
        let (shown, _) = app.reveal_token(ws).await.expect("the SCIM token opens");
        assert_eq!(shown.expose(), token);
    }
    let device = app.store.device(&s.device_id).await.unwrap().unwrap();
    let push = app
        .keyring
        .open(&device.push_token.unwrap(), s.device_id.as_bytes())
        .expect("the push token opens");
    assert_eq!(push.as_slice(), s.push_token.as_bytes());
    let ws = &s.tokens[0].0;
    let config = app.sso.config(ws.id).await.unwrap().unwrap();
    let secret = app
        .keyring
        .open(
            &config.client_secret,
            &super::super::sso::secret_context(&ws.slug),
        )
        .expect("the SSO client secret opens");
    assert_eq!(secret.as_slice(), s.sso_secret.as_bytes());
    let (Taken::Fresh(pending) | Taken::Replayed(pending)) = app
        .sso
        .take_pending(&s.state_hash, OffsetDateTime::now_utc())
        .await
        .unwrap()
    else {
        panic!("the pending sign-in is gone");
    };
    let verifier = app
        .keyring
        .open(
            &pending.pkce_verifier,
            &super::super::sso::pkce_context(&s.state_hash),
        )
        .expect("the PKCE verifier opens");
    assert_eq!(verifier.as_slice(), b"verifier");
}

/// How many values of every column are under `key_id`, and under other keys.
async fn census(store: &dyn SealedStore, key_id: &str) -> (u64, u64) {
    let mut total = (0, 0);
    for column in SealedColumn::ALL {
        let (under, other) = store.count(column, key_id).await.unwrap();
        total = (total.0 + under, total.1 + other);
    }
    total
}

#[tokio::test]
async fn a_rotation_stopped_after_one_batch_resumes_and_loses_nothing() {
    for db in TestDb::each().await {
        // The old key: Postgres' given one, or SQLite's generated key file.
        let app = db.app(&[]).await;
        let old = match db.given_key() {
            Some(key) => key.to_owned(),
            None => std::fs::read_to_string(db.dir().unwrap().join("assent.db.key")).unwrap(),
        };
        let secrets = fill(&app).await;
        let store = crate::store::open(&db.config(&[]).database)
            .await
            .unwrap()
            .sealed;
        assert_eq!(
            census(store.as_ref(), app.keyring.current_id()).await,
            (6, 0)
        );

        // The servers restart with the new key and the old one, then the rotation runs.
        let new = MasterKey::generate();
        let vars = [
            ("ASSENT_MASTER_KEY", new.to_base64().to_string()),
            ("ASSENT_OLD_MASTER_KEYS", old.clone()),
        ];
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let during = db.app(&vars).await;
        let (keyring, files) = rotation_keyring(&db.config(&vars)).unwrap();
        assert!(files.is_none());
        assert_eq!(keyring.current_id(), new.id());

        let first = reseal_all(store.as_ref(), &keyring, 2, Some(1))
            .await
            .unwrap();
        assert_eq!(
            first,
            Rotation {
                rotated: 2,
                already_current: 0,
                remaining: 4,
                key_id: new.id().to_owned()
            }
        );
        // Half-way, the server opens both.
        for (ws, token) in &secrets.tokens {
            assert_eq!(during.reveal_token(ws).await.unwrap().0.expose(), token);
        }

        let rest = reseal_all(store.as_ref(), &keyring, 2, None).await.unwrap();
        assert_eq!(
            (rest.rotated, rest.already_current, rest.remaining),
            (4, 2, 0)
        );
        assert_eq!(census(store.as_ref(), new.id()).await, (6, 0));
        let again = reseal_all(store.as_ref(), &keyring, 2, None).await.unwrap();
        assert_eq!(
            (again.rotated, again.already_current, again.remaining),
            (0, 6, 0)
        );

        // The old key can go: a server with the new key alone opens everything.
        let after = db
            .app(&[("ASSENT_MASTER_KEY", new.to_base64().as_str())])
            .await;
        assert_all_open(&after, &secrets).await;
        db.remove().await;
    }
}

#[tokio::test]
async fn a_value_replaced_during_the_rotation_is_left_alone() {
    let db = TestDb::sqlite().await;
    let app = db.app(&[]).await;
    let (ws, _) = app
        .create_workspace("acme", "Acme", "owner@acme.example")
        .await
        .unwrap();
    let store = crate::store::open(&db.config(&[]).database)
        .await
        .unwrap()
        .sealed;
    let rows = store
        .sealed_under_other_keys(
            SealedColumn::ScimToken,
            "another-key",
            &crate::store::sealed::RowKey::before_all(SealedColumn::ScimToken),
            10,
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].binding, "acme");
    // An admin rotates the token between the read and the write.
    app.rotate_token(&ws, "owner@acme.example").await.unwrap();
    let (fresh, _) = app.reveal_token(&ws).await.unwrap();
    let stale = Sealed {
        key_id: "another-key".into(),
        nonce: vec![0; 12],
        ciphertext: vec![0; 48],
    };
    assert!(!store.replace(&rows[0], &stale).await.unwrap());
    assert_eq!(
        app.reveal_token(&ws).await.unwrap().0.expose(),
        fresh.expose()
    );
}

#[tokio::test]
async fn a_value_under_a_key_not_given_stops_the_rotation_naming_it() {
    let db = TestDb::sqlite().await;
    let app = db.app(&[]).await;
    app.create_workspace("acme", "Acme", "owner@acme.example")
        .await
        .unwrap();
    let new = MasterKey::generate();
    let config = db.config(&[("ASSENT_MASTER_KEY", new.to_base64().as_str())]);
    let (keyring, _) = rotation_keyring(&config).unwrap();
    let store = crate::store::open(&config.database).await.unwrap().sealed;
    let err = reseal_all(store.as_ref(), &keyring, 10, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("scim_tokens"), "{err}");
    assert!(err.contains("ASSENT_OLD_MASTER_KEYS"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

/// The embedded default: the new key goes to `<db>.key.new` before anything is sealed under it,
/// and replaces `<db>.key` (kept as `<db>.key.old`) only once everything is under it.
#[tokio::test]
async fn the_key_file_is_replaced_only_when_the_rotation_finishes() {
    use std::os::unix::fs::PermissionsExt;
    let db = TestDb::sqlite().await;
    let dir = db.dir().unwrap().to_owned();
    let app = db.app(&[]).await;
    let secrets = fill(&app).await;
    let key_file = dir.join("assent.db.key");
    let old = std::fs::read_to_string(&key_file).unwrap();
    drop(app);

    let config = db.config(&[]);
    let store = crate::store::open(&config.database).await.unwrap().sealed;
    let (keyring, files) = rotation_keyring(&config).unwrap();
    let files = files.expect("key files");
    let new_id = keyring.current_id().to_owned();
    let first = reseal_all(store.as_ref(), &keyring, 4, Some(1))
        .await
        .unwrap();
    // A batch is of one column: the three SCIM tokens.
    assert_eq!((first.rotated, first.remaining), (3, 3));
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), old);
    assert!(files.new.exists());

    // Interrupted here (no `finish`): a server started now opens both halves.
    let between = db.app(&[]).await;
    assert_ne!(between.keyring.current_id(), new_id);
    for (ws, token) in &secrets.tokens {
        assert_eq!(between.reveal_token(ws).await.unwrap().0.expose(), token);
    }
    drop(between);

    // Run again: the same new key, the rest of the rows, then the files swap.
    let (keyring, files) = rotation_keyring(&config).unwrap();
    let files = files.unwrap();
    assert_eq!(keyring.current_id(), new_id);
    let rest = reseal_all(store.as_ref(), &keyring, 4, None).await.unwrap();
    assert_eq!(
        (rest.rotated, rest.already_current, rest.remaining),
        (3, 3, 0)
    );
    files.finish().unwrap();
    assert!(!files.new.exists());
    assert_eq!(std::fs::read_to_string(&files.old).unwrap(), old);
    for path in [&files.current, &files.old] {
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }

    let after = db.app(&[]).await;
    assert_eq!(after.keyring.current_id(), new_id);
    assert_all_open(&after, &secrets).await;
    drop(after);

    // With the old key file deleted, everything still opens: nothing is under the old key.
    std::fs::remove_file(&files.old).unwrap();
    let alone = db.app(&[]).await;
    assert_all_open(&alone, &secrets).await;
}
