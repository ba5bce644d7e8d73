//! The audit chain on a real database (SQLite, and Postgres when `ASSENT_TEST_POSTGRES_URL` is
//! set): appends link up per workspace even when they race, and tampering done with SQL behind the
//! app's back is found by `verify_audit`.

use serde_json::json;
use std::sync::Arc;
use time::OffsetDateTime;

use super::test_db::TestDb;
use super::{AuditEvent, AuditFilter};
use crate::app::App;
use crate::domain::audit::Break;
use crate::service::audit::VerifyError;

fn event(workspace_id: Option<i64>, kind: &'static str, n: i64) -> AuditEvent {
    AuditEvent {
        workspace_id,
        kind,
        actor: Some(format!("user{n}@acme.example")),
        ip: Some("192.0.2.7".into()),
        device_id: (n % 2 == 0).then(|| format!("dev_{n}")),
        // Numbers and key orders that Postgres' JSONB rewrites.
        detail: json!({"n": n, "z": 1.5, "a": {"y": 100.0, "big": 1e19}, "list": [3, 1]}),
    }
}

fn at(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).unwrap()
}

async fn append(app: &App, workspace_id: Option<i64>, kind: &'static str, n: i64) {
    app.store
        .append_audit(event(workspace_id, kind, n), at(n))
        .await
        .unwrap();
}

/// The ids of a chain's entries, in seq order.
async fn chain_ids(app: &App, workspace_id: Option<i64>) -> Vec<i64> {
    let entries = app.store.audit_chain(workspace_id, 0, 1000).await.unwrap();
    let seqs: Vec<i64> = entries.iter().map(|e| e.seq.unwrap()).collect();
    assert_eq!(seqs, (1..=entries.len() as i64).collect::<Vec<_>>());
    entries.iter().map(|e| e.id).collect()
}

fn broken(result: Result<crate::service::audit::Verified, VerifyError>) -> Break {
    match result {
        Err(VerifyError::Broken(b)) => b,
        other => panic!("expected a broken chain, got {other:?}"),
    }
}

#[tokio::test]
async fn each_workspace_and_the_deployment_have_a_chain_of_their_own() {
    for db in TestDb::each().await {
        let app = db.app(&[]).await;
        for n in 1..=9 {
            let ws = [Some(1), Some(2), None][(n % 3) as usize];
            append(&app, ws, "login.succeeded", n).await;
        }
        for ws in [Some(1), Some(2), None] {
            let verified = app.verify_audit(ws).await.unwrap();
            assert_eq!(verified.entries, 3, "{ws:?}");
            assert_eq!(verified.unchained, 0);
            let entries = app.store.audit_chain(ws, 0, 10).await.unwrap();
            assert_eq!(
                entries[0].prev_hash.as_deref(),
                Some(crate::domain::audit::GENESIS)
            );
            for pair in entries.windows(2) {
                assert_eq!(pair[1].prev_hash, pair[0].hash);
            }
            assert_eq!(verified.last_hash, entries[2].hash);
        }
        assert_eq!(chain_ids(&app, Some(1)).await.len(), 3);
        db.remove().await;
    }
}

#[tokio::test]
async fn the_page_filters_by_kind_and_time() {
    for db in TestDb::each().await {
        let app = db.app(&[]).await;
        for n in 1..=6 {
            let kind = if n % 2 == 0 {
                "login.failed"
            } else {
                "login.succeeded"
            };
            append(&app, Some(5), kind, n).await;
        }
        let page = |filter: AuditFilter| {
            let app = app.clone();
            async move {
                app.store
                    .audit_page(5, &filter)
                    .await
                    .unwrap()
                    .iter()
                    .map(|e| e.at.unix_timestamp() - 1_800_000_000)
                    .collect::<Vec<_>>()
            }
        };
        let all = AuditFilter {
            limit: 50,
            ..Default::default()
        };
        assert_eq!(page(all.clone()).await, [6, 5, 4, 3, 2, 1]);
        let failed = AuditFilter {
            kind: Some("login.failed".into()),
            ..all.clone()
        };
        assert_eq!(page(failed.clone()).await, [6, 4, 2]);
        let window = AuditFilter {
            since: Some(at(2)),
            until: Some(at(5)),
            ..failed.clone()
        };
        assert_eq!(page(window).await, [4, 2]);
        let first = app
            .store
            .audit_page(
                5,
                &AuditFilter {
                    limit: 2,
                    ..all.clone()
                },
            )
            .await
            .unwrap();
        let next = AuditFilter {
            before_id: Some(first[1].id),
            ..all.clone()
        };
        assert_eq!(page(next).await, [4, 3, 2, 1]);
        let entry = &first[0];
        assert_eq!(entry.seq, Some(6));
        assert_eq!(entry.hash.as_ref().map(String::len), Some(64));
        db.remove().await;
    }
}

/// Two app instances on one database (on SQLite: two writers on the file, as a server and the CLI
/// are) append to one chain at once: every append gets its own seq and links to the one before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_appends_never_share_a_link() {
    for db in TestDb::each().await {
        let apps = [db.app(&[]).await, db.app(&[]).await];
        let tasks: Vec<_> = (0..40)
            .map(|n| {
                let app: Arc<App> = apps[n % 2].clone();
                tokio::spawn(async move {
                    append(&app, Some(9), "challenge.created", n as i64).await;
                    append(&app, None, "login.failed", n as i64).await;
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        for ws in [Some(9), None] {
            assert_eq!(
                apps[0].verify_audit(ws).await.unwrap().entries,
                40,
                "{ws:?}"
            );
            assert_eq!(chain_ids(&apps[1], ws).await.len(), 40);
        }
        db.remove().await;
    }
}

#[tokio::test]
async fn an_edited_entry_is_named() {
    for db in TestDb::each().await {
        let app = db.app(&[]).await;
        for n in 1..=5 {
            append(&app, Some(3), "login.succeeded", n).await;
        }
        let ids = chain_ids(&app, Some(3)).await;
        db.exec(&format!(
            r#"UPDATE audit_log SET detail = '{{"n": 3, "via": "nothing to see"}}' WHERE id = {}"#,
            ids[2]
        ))
        .await;
        let b = broken(app.verify_audit(Some(3)).await);
        assert_eq!(b, Break::Edited { id: ids[2] });
        assert!(
            b.to_string()
                .contains(&format!("entry {} was edited", ids[2])),
            "{b}"
        );
        db.remove().await;
    }
}

#[tokio::test]
async fn a_deleted_entry_is_found_at_the_gap() {
    for db in TestDb::each().await {
        let app = db.app(&[]).await;
        for n in 1..=5 {
            append(&app, Some(3), "login.succeeded", n).await;
        }
        let ids = chain_ids(&app, Some(3)).await;
        db.exec(&format!("DELETE FROM audit_log WHERE id = {}", ids[1]))
            .await;
        assert_eq!(
            broken(app.verify_audit(Some(3)).await),
            Break::Deleted {
                id: ids[2],
                seq: 3,
                previous: 1
            }
        );
        db.remove().await;
    }
}

#[tokio::test]
async fn an_entry_moved_to_the_end_is_found() {
    for db in TestDb::each().await {
        let app = db.app(&[]).await;
        for n in 1..=5 {
            append(&app, Some(3), "login.succeeded", n).await;
        }
        let ids = chain_ids(&app, Some(3)).await;
        // Deleted and written again, unchanged: it now sits after the entries that followed it.
        let columns = "workspace_id, at, kind, actor, ip, device_id, detail, seq, prev_hash, hash";
        db.exec(&format!(
            "CREATE TEMP TABLE moved AS SELECT {columns} FROM audit_log WHERE id = {id};
             DELETE FROM audit_log WHERE id = {id};
             INSERT INTO audit_log ({columns}) SELECT {columns} FROM moved;",
            id = ids[1]
        ))
        .await;
        let b = broken(app.verify_audit(Some(3)).await);
        assert!(
            matches!(b, Break::Reordered { id, seq: 3, .. } if id == ids[2]),
            "{b:?}"
        );
        assert!(b.to_string().contains("reordered"), "{b}");
        db.remove().await;
    }
}

#[tokio::test]
async fn entries_from_before_the_chain_are_counted_but_one_slipped_in_later_is_not() {
    for db in TestDb::each().await {
        let app = db.app(&[]).await;
        let legacy = "INSERT INTO audit_log (workspace_id, at, kind, detail) \
                      VALUES (4, 1700000000, 'login.succeeded', '{}')";
        db.exec(&format!("{legacy}; {legacy}")).await;
        for n in 1..=3 {
            append(&app, Some(4), "login.succeeded", n).await;
        }
        let verified = app.verify_audit(Some(4)).await.unwrap();
        assert_eq!((verified.entries, verified.unchained), (3, 2));

        db.exec(legacy).await;
        let b = broken(app.verify_audit(Some(4)).await);
        assert!(matches!(b, Break::Unchained { .. }), "{b:?}");
        db.remove().await;
    }
}

#[tokio::test]
async fn the_export_is_one_json_line_per_entry_that_a_siem_can_check() {
    for db in TestDb::each().await {
        let app = db.app(&[]).await;
        for n in 1..=3 {
            append(&app, Some(6), "login.succeeded", n).await;
        }
        let mut out = Vec::new();
        let written = app
            .export_audit(Some(6), Some("acme"), &mut out)
            .await
            .unwrap();
        assert_eq!(written, 3);
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(line["seq"], i as i64 + 1);
            assert_eq!(line["workspace"], "acme");
            assert_eq!(line["at"], crate::clock::rfc3339(at(i as i64 + 1)));
            // The line holds all the hash covers: recompute it from the line alone.
            let t = OffsetDateTime::parse(
                line["at"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap();
            let content = crate::domain::audit::Content {
                chain: line["workspace_id"].as_i64().unwrap(),
                seq: line["seq"].as_i64().unwrap(),
                at: t.unix_timestamp(),
                kind: line["kind"].as_str().unwrap(),
                actor: line["actor"].as_str(),
                ip: line["ip"].as_str(),
                device_id: line["device_id"].as_str(),
                detail: &line["detail"],
                prev_hash: line["prev_hash"].as_str().unwrap(),
            };
            assert_eq!(line["hash"], content.hash());
        }
        db.remove().await;
    }
}
