//! Unit tests of `audit.rs`.

use super::*;
use serde_json::json;

/// A stored entry, as the verifier reads it back.
#[derive(Clone, Debug)]
struct Row {
    id: i64,
    seq: i64,
    at: i64,
    kind: String,
    actor: Option<String>,
    detail: Value,
    prev_hash: String,
    hash: String,
}

impl Row {
    fn content(&self) -> Content<'_> {
        Content {
            chain: 7,
            seq: self.seq,
            at: self.at,
            kind: &self.kind,
            actor: self.actor.as_deref(),
            ip: Some("192.0.2.1"),
            device_id: None,
            detail: &self.detail,
            prev_hash: &self.prev_hash,
        }
    }
}

/// A chain of `n` entries appended the way the stores do.
fn chain(n: i64) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for i in 1..=n {
        let last = rows.last().map(|r| (r.seq, r.hash.clone()));
        let (seq, prev_hash) = next_link(last);
        let mut row = Row {
            id: 100 + i * 3,
            seq,
            at: 1_800_000_000 + i,
            kind: "login.succeeded".into(),
            actor: Some(format!("user{i}@acme.example")),
            detail: json!({"n": i, "via": "password"}),
            prev_hash,
            hash: String::new(),
        };
        row.hash = row.content().hash();
        rows.push(row);
    }
    rows
}

fn verify(rows: &[Row]) -> Result<u64, Break> {
    let mut v = Verifier::new();
    for r in rows {
        v.check(r.id, &r.content(), &r.hash)?;
    }
    Ok(v.entries())
}

#[test]
fn the_canonical_form_is_a_fixed_json_array() {
    let detail = json!({"b": [1, {"z": true, "a": null}], "a": "é\n\"", "n": 1.5});
    let content = Content {
        chain: 0,
        seq: 1,
        at: 1_800_000_000,
        kind: "login.failed",
        actor: Some("someone@acme.example"),
        ip: None,
        device_id: Some("dev_1"),
        detail: &detail,
        prev_hash: GENESIS,
    };
    let text = String::from_utf8(content.canonical()).unwrap();
    assert_eq!(
        text,
        format!(
            r#"["assent.audit.v1",0,1,1800000000,"login.failed","someone@acme.example",null,"dev_1",{{"a":"é\n\"","b":[1,{{"a":null,"z":true}}],"n":1.5}},"{GENESIS}"]"#
        )
    );
    assert_eq!(content.hash(), sha256_hex(text.as_bytes()));
    assert_eq!(content.hash().len(), 64);
}

#[test]
fn key_order_and_number_spelling_do_not_change_the_hash() {
    // What Postgres' JSONB gives back: keys reordered, `100.0` as written, `1e19` spelled out.
    let written: Value = serde_json::from_str(r#"{"b":1e19,"a":{"y":100.0,"x":-0.0}}"#).unwrap();
    let read_back: Value =
        serde_json::from_str(r#"{"a": {"x": 0.0, "y": 100.0}, "b": 10000000000000000000}"#)
            .unwrap();
    assert_eq!(canonical_json(&written), canonical_json(&read_back));
    assert_eq!(
        canonical_json(&written).to_string(),
        r#"{"a":{"x":0,"y":100},"b":10000000000000000000}"#
    );
    // A real fraction stays one.
    assert_eq!(canonical_json(&json!(0.25)).to_string(), "0.25");
}

#[test]
fn every_field_is_covered() {
    let rows = chain(1);
    let base = rows[0].content();
    let hash = base.hash();
    let other_detail = json!({"n": 2, "via": "password"});
    for changed in [
        Content { chain: 8, ..base },
        Content { seq: 2, ..base },
        Content {
            at: base.at + 1,
            ..base
        },
        Content {
            kind: "login.failed",
            ..base
        },
        Content {
            actor: None,
            ..base
        },
        Content {
            ip: Some("192.0.2.2"),
            ..base
        },
        Content {
            device_id: Some("dev_x"),
            ..base
        },
        Content {
            detail: &other_detail,
            ..base
        },
        Content {
            prev_hash: &hash,
            ..base
        },
    ] {
        assert_ne!(changed.hash(), hash, "{changed:?}");
    }
    // A value moved between fields changes it too (the array keeps their places).
    let a = Content {
        actor: Some("x"),
        ip: None,
        ..base
    };
    let b = Content {
        actor: None,
        ip: Some("x"),
        ..base
    };
    assert_ne!(a.hash(), b.hash());
}

#[test]
fn an_untouched_chain_verifies() {
    assert_eq!(verify(&chain(5)), Ok(5));
    assert_eq!(verify(&[]), Ok(0));
    let rows = chain(3);
    let mut v = Verifier::new();
    for r in &rows {
        v.check(r.id, &r.content(), &r.hash).unwrap();
    }
    assert_eq!(v.last_hash(), Some(rows[2].hash.as_str()));
}

#[test]
fn an_edited_entry_is_named() {
    let mut rows = chain(5);
    rows[2].detail = json!({"n": 3, "via": "sso"});
    assert_eq!(verify(&rows), Err(Break::Edited { id: rows[2].id }));

    let mut rows = chain(5);
    rows[0].at -= 3600;
    assert_eq!(verify(&rows), Err(Break::Edited { id: rows[0].id }));
}

#[test]
fn an_edit_with_a_recomputed_hash_breaks_the_next_link() {
    let mut rows = chain(5);
    rows[1].kind = "nothing.to.see".into();
    rows[1].hash = rows[1].content().hash();
    assert_eq!(
        verify(&rows),
        Err(Break::Unlinked {
            id: rows[2].id,
            previous_id: rows[1].id
        })
    );
}

#[test]
fn a_deleted_entry_is_found_at_the_gap() {
    let mut rows = chain(5);
    rows.remove(2);
    assert_eq!(
        verify(&rows),
        Err(Break::Deleted {
            id: rows[2].id,
            seq: 4,
            previous: 2
        })
    );
    // The first entries too.
    let mut rows = chain(3);
    rows.remove(0);
    assert_eq!(
        verify(&rows),
        Err(Break::Deleted {
            id: rows[0].id,
            seq: 2,
            previous: 0
        })
    );
    // Deleted and the later ones renumbered: the links no longer hold.
    let mut rows = chain(5);
    rows.remove(2);
    for r in rows.iter_mut().skip(2) {
        r.seq -= 1;
        r.hash = r.content().hash();
    }
    assert_eq!(
        verify(&rows),
        Err(Break::Unlinked {
            id: rows[2].id,
            previous_id: rows[1].id
        })
    );
}

#[test]
fn reordered_entries_are_found() {
    // Two whole rows swapped (their ids stay): read in seq order, the ids go backwards at
    // the first entry stored before the one moved there.
    let mut rows = chain(5);
    let (a, b) = (rows[1].id, rows[3].id);
    rows[1].id = b;
    rows[3].id = a;
    let err = verify(&rows).unwrap_err();
    assert_eq!(
        err,
        Break::Reordered {
            id: rows[2].id,
            seq: 3,
            before_id: b,
            previous: 2
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "entry {} (seq 3) is stored before entry {b} (seq 2): entries were reordered",
            rows[2].id
        )
    );

    // Only the seq numbers swapped: each hash covers its seq.
    let mut rows = chain(4);
    rows[1].seq = 3;
    rows[2].seq = 2;
    rows.sort_by_key(|r| r.seq);
    assert!(verify(&rows).is_err());

    // The same seq twice (the unique index dropped).
    let mut rows = chain(3);
    rows[2].seq = 2;
    assert!(matches!(verify(&rows), Err(Break::Reordered { .. })));
}

#[test]
fn a_first_entry_must_link_to_genesis() {
    let mut rows = chain(2);
    rows[0].prev_hash = "ab".repeat(32);
    rows[0].hash = rows[0].content().hash();
    assert_eq!(verify(&rows), Err(Break::Edited { id: rows[0].id }));
}

#[test]
fn unchained_entries_are_fine_only_before_the_chain() {
    let rows = chain(3);
    let mut v = Verifier::new();
    assert_eq!(v.check_unchained(1), Ok(()));
    for r in &rows {
        v.check(r.id, &r.content(), &r.hash).unwrap();
    }
    assert_eq!(v.check_unchained(rows[0].id - 1), Ok(()));
    assert_eq!(
        v.check_unchained(rows[1].id + 1),
        Err(Break::Unchained { id: rows[1].id + 1 })
    );
}

#[test]
fn the_deployment_chain_is_zero() {
    assert_eq!(chain_key(None), 0);
    assert_eq!(chain_key(Some(3)), 3);
    assert_eq!(next_link(None), (1, GENESIS.to_owned()));
    assert_eq!(next_link(Some((4, "h".into()))), (5, "h".to_owned()));
}
