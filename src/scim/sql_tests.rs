//! Tests of [`super`]: the rendered SQL, and a differential check that every plan is
//! exact or a superset of what the evaluator matches, on a corpus of users. (The same
//! corpus and filters were also run once through real SQLite 3 and PostgreSQL 15 with the
//! rendered SQL and binds; both agreed with the evaluator.)

use serde_json::{json, Value};

use super::super::eval::{compile, matches};
use super::super::list::Sort;
use super::super::resource::{normalise, IndexColumns};
use super::super::schema::ResourceKind;
use super::*;

fn p(filter: &str) -> Option<SqlPlan> {
    let f = compile(filter, ResourceKind::User.resource_type()).unwrap();
    plan(&f, ResourceKind::User)
}

fn text(s: &str) -> SqlBind {
    SqlBind::Text(s.into())
}

#[test]
fn user_name_eq_uses_the_lowered_column_exactly() {
    let plan = p(r#"userName eq "BJensen@Example.com""#).unwrap();
    assert_eq!(plan.where_sql, "user_name_lower = ?");
    assert_eq!(plan.binds, vec![text("bjensen@example.com")]);
    assert!(plan.exact);
}

#[test]
fn external_id_and_id_are_case_exact() {
    let plan = p(r#"externalId eq "Ext-1""#).unwrap();
    assert_eq!(
        (plan.where_sql.as_str(), plan.exact),
        ("external_id = ?", true)
    );
    assert_eq!(plan.binds, vec![text("Ext-1")]);
    let plan = p(r#"id sw "AB_""#).unwrap();
    assert_eq!(plan.where_sql, "id LIKE ? ESCAPE '\\'");
    assert_eq!(plan.binds, vec![text("AB\\_%")]);
    assert!(!plan.exact, "SQLite's LIKE ignores ASCII case");
}

#[test]
fn substring_operators_on_folded_columns_are_exact() {
    let plan = p(r#"displayName co "50%""#).unwrap();
    assert_eq!(plan.where_sql, "display_name_lower LIKE ? ESCAPE '\\'");
    assert_eq!(plan.binds, vec![text("%50\\%%")]);
    assert!(plan.exact);
    assert_eq!(
        p(r#"userName ew "@X.org""#).unwrap().binds,
        vec![text("%@x.org")]
    );
}

#[test]
fn active_and_presence() {
    let plan = p("active eq false").unwrap();
    assert_eq!((plan.where_sql.as_str(), plan.exact), ("active = ?", true));
    assert_eq!(plan.binds, vec![SqlBind::Bool(false)]);
    let plan = p(r#"active eq "True""#).unwrap();
    assert_eq!(plan.binds, vec![SqlBind::Bool(true)]);
    assert_eq!(p("active pr").unwrap().where_sql, "active IS NOT NULL");
    let plan = p("externalId pr").unwrap();
    assert_eq!(
        plan.where_sql,
        "(external_id IS NOT NULL AND external_id <> ?)"
    );
    assert_eq!(plan.binds, vec![text("")]);
    assert_eq!(
        p("externalId eq null").unwrap().where_sql,
        "(external_id IS NULL OR external_id = ?)"
    );
}

#[test]
fn negation_handles_nulls() {
    let plan = p(r#"not (externalId eq "x")"#).unwrap();
    assert_eq!(plan.where_sql, "(external_id IS NULL OR external_id <> ?)");
    assert!(plan.exact);
    let plan = p(r#"not (displayName eq "a" or active eq true)"#).unwrap();
    assert_eq!(
        plan.where_sql,
        "((display_name_lower IS NULL OR display_name_lower <> ?) AND (active IS NULL OR active <> ?))"
    );
    let plan = p(r#"displayName ne "a""#).unwrap();
    assert_eq!(
        plan.where_sql,
        "(display_name_lower IS NULL OR display_name_lower <> ?)"
    );
}

#[test]
fn emails_are_a_superset_through_overflow() {
    for f in [
        r#"emails.value eq "A@x.org""#,
        r#"emails eq "A@x.org""#,
        r#"emails[type eq "work"].value eq "A@x.org""#,
        r#"emails[type eq "work" and value eq "A@x.org"]"#,
    ] {
        let plan = p(f).unwrap();
        assert_eq!(
            plan.where_sql, "(work_email_lower = ? OR email_overflow = ?)",
            "{f}"
        );
        assert_eq!(plan.binds, vec![text("a@x.org"), SqlBind::Bool(true)]);
        assert!(!plan.exact);
    }
    assert!(p(r#"emails[type eq "work"]"#).is_none());
    assert!(p(r#"emails.value ne "a""#).is_none());
}

#[test]
fn and_or_combine_exactness() {
    let plan = p(r#"userName eq "a" and title eq "b""#).unwrap();
    assert_eq!(plan.where_sql, "(user_name_lower = ?)");
    assert!(!plan.exact, "title must be re-checked in Rust");
    let plan = p(r#"userName eq "a" or externalId eq "b""#).unwrap();
    assert_eq!(plan.where_sql, "(user_name_lower = ? OR external_id = ?)");
    assert!(plan.exact);
    assert!(
        p(r#"userName eq "a" or title eq "b""#).is_none(),
        "an unplannable branch widens to all rows"
    );
    let plan = p(r#"userName eq "a" or emails.value eq "b""#).unwrap();
    assert!(!plan.exact);
    assert!(
        p(r#"not (emails.value eq "b")"#).is_none(),
        "negating a superset plans nothing"
    );
}

#[test]
fn unplannable_filters() {
    for f in [
        r#"title eq "x""#,
        r#"userName gt "a""#,
        r#"name.familyName eq "x""#,
        r#"meta.lastModified gt "2020-01-01T00:00:00Z""#,
        r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "1""#,
    ] {
        assert!(p(f).is_none(), "{f}");
    }
}

#[test]
fn groups() {
    let g = ResourceKind::Group.resource_type();
    let f = compile(r#"displayName eq "Tour Guides""#, g).unwrap();
    let plan = plan(&f, ResourceKind::Group).unwrap();
    assert_eq!(plan.where_sql, "display_name_lower = ?");
    assert!(plan.exact);
    let f = compile(r#"members[value eq "u1"]"#, g).unwrap();
    assert!(plan_none(&f));
    let f = compile(r#"id eq "g1" and members[value eq "u1"]"#, g).unwrap();
    let plan = super::plan(&f, ResourceKind::Group).unwrap();
    assert_eq!((plan.where_sql.as_str(), plan.exact), ("(id = ?)", false));
}

fn plan_none(f: &Filter) -> bool {
    plan(f, ResourceKind::Group).is_none()
}

#[test]
fn numbered_placeholders_for_postgres() {
    let plan = p(r#"userName eq "a" or not (externalId eq "b")"#).unwrap();
    assert_eq!(
        plan.numbered(3),
        "(user_name_lower = $3 OR (external_id IS NULL OR external_id <> $4))"
    );
}

#[test]
fn sort_columns() {
    let rt = ResourceKind::User.resource_type();
    let s = Sort::parse("UserName", Some("descending"), rt).unwrap();
    assert_eq!(
        sort_column(&s, ResourceKind::User),
        Some(SortColumn {
            column: "user_name_lower",
            descending: true
        })
    );
    let s = Sort::parse("title", None, rt).unwrap();
    assert_eq!(sort_column(&s, ResourceKind::User), None);
    let s = Sort::parse("active", None, rt).unwrap();
    assert_eq!(sort_column(&s, ResourceKind::User), None);
}

/// What a database does with a plan's expression on one row's columns. NULL compares as
/// false, which is sound because the expression is in negation normal form.
fn eval_expr(e: &Expr, row: &IndexColumns, id: &str) -> bool {
    match e {
        Expr::And(v) => v.iter().all(|x| eval_expr(x, row, id)),
        Expr::Or(v) => v.iter().any(|x| eval_expr(x, row, id)),
        Expr::Ext {
            path, key, negated, ..
        } => {
            let found = row
                .extension_values
                .iter()
                .any(|(p, k)| p == path && k == key);
            found != *negated
        }
        Expr::Leaf(l) => {
            let text = |c: &str| -> Option<String> {
                match c {
                    "id" => Some(id.to_owned()),
                    "external_id" => row.external_id.clone(),
                    "user_name_lower" => row.user_name_lower.clone(),
                    "display_name_lower" => row.display_name_lower.clone(),
                    "work_email_lower" => row.work_email_lower.clone(),
                    other => panic!("{other}"),
                }
            };
            let boolean = |c: &str| -> Option<bool> {
                match c {
                    "active" => row.active,
                    "email_overflow" => Some(row.email_overflow),
                    other => panic!("{other}"),
                }
            };
            let is_bool = matches!(l.col, "active" | "email_overflow");
            let null = if is_bool {
                boolean(l.col).is_none()
            } else {
                text(l.col).is_none()
            };
            let positive = match &l.test {
                Test::Eq(SqlBind::Bool(b)) => boolean(l.col) == Some(*b),
                Test::Eq(SqlBind::Text(s)) => text(l.col).as_deref() == Some(s.as_str()),
                Test::Eq(SqlBind::Workspace) => panic!("a column is never the workspace"),
                Test::Like(p) => text(l.col).is_some_and(|v| like(&v, p)),
                Test::Present { text: true } => text(l.col).is_some_and(|v| !v.is_empty()),
                Test::Present { text: false } => boolean(l.col).is_some(),
            };
            match (l.negated, &l.test) {
                (false, _) => positive,
                // Negated leaves render as `col IS NULL OR NOT test`.
                (true, Test::Present { .. }) => !positive,
                (true, _) => null || !positive,
            }
        }
    }
}

/// SQLite's LIKE with `ESCAPE '\'`: ASCII case-insensitive.
fn like(v: &str, pattern: &str) -> bool {
    fn go(v: &[char], p: &[char]) -> bool {
        match p.split_first() {
            None => v.is_empty(),
            Some(('%', rest)) => (0..=v.len()).any(|i| go(&v[i..], rest)),
            Some(('_', rest)) => !v.is_empty() && go(&v[1..], rest),
            Some(('\\', rest)) => match rest.split_first() {
                Some((c, rest2)) => v.first() == Some(c) && go(&v[1..], rest2),
                None => false,
            },
            Some((c, rest)) => {
                v.first().is_some_and(|x| x.eq_ignore_ascii_case(c)) && go(&v[1..], rest)
            }
        }
    }
    let v: Vec<char> = v.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    go(&v, &p)
}

fn corpus() -> Vec<(String, Value, IndexColumns)> {
    let rt = ResourceKind::User.resource_type();
    let bodies = [
        json!({"userName": "Ann@X.org", "externalId": "E1", "displayName": "Ann", "active": true,
               "emails": [{"value": "Ann@X.org", "type": "work", "primary": true}]}),
        json!({"userName": "bob", "active": false,
               "emails": [{"value": "bob@home.net", "type": "home"}, {"value": "B@x.org", "type": "work"}]}),
        json!({"userName": "carl", "externalId": "e1", "displayName": "50% Carl",
               "emails": [{"value": "c1@x.org", "type": "work"}, {"value": "c2@x.org", "type": "work", "primary": true}]}),
        json!({"userName": "dora_x", "externalId": "", "emails": [{"value": "dora@y.org"}]}),
        json!({"userName": "Éva", "displayName": "ÉVA", "title": "b"}),
        json!({"userName": "o'neil", "displayName": "50\\ off"}),
        json!({"userName": "x1", "urn:ietf:params:scim:schemas:extension:acme:2.0:User":
               {"Cost": "CC-1", "level": 7, "remote": true, "tags": ["A", "b"], "badge": {"n": 2.0}}}),
        json!({"userName": "x2", "urn:ietf:params:scim:schemas:extension:acme:2.0:User":
               {"cost": "cc-1", "level": 7.5, "remote": false, "tags": "B", "badge": {"n": 2}}}),
        json!({"userName": "x3", "urn:ietf:params:scim:schemas:extension:acme:2.0:User":
               {"cost": "", "level": "7"}}),
    ];
    bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let mut body = b.clone();
            body["schemas"] = json!(["urn:ietf:params:scim:schemas:core:2.0:User"]);
            let n = normalise(&body, rt).unwrap();
            let id = format!("id-{i}");
            let mut full = n.document.clone();
            full["id"] = json!(id);
            (id, full, n.index)
        })
        .collect()
}

#[test]
fn plans_are_exact_or_supersets_on_a_corpus() {
    let rt = ResourceKind::User.resource_type();
    let filters = [
        r#"userName eq "ann@x.org""#,
        r#"userName eq "ÉVA""#,
        r#"userName sw "DORA_""#,
        r#"userName co "_""#,
        r#"userName ew "ORG""#,
        r#"userName ne "bob""#,
        r#"not (userName eq "bob")"#,
        r#"externalId eq "e1""#,
        r#"externalId eq "E1""#,
        r#"externalId sw "E""#,
        r#"externalId pr"#,
        r#"not (externalId pr)"#,
        r#"externalId eq null"#,
        r#"externalId ne null"#,
        r#"not (externalId eq "E1")"#,
        r#"displayName co "%""#,
        r#"displayName eq "éva""#,
        r#"displayName pr"#,
        r#"not (displayName pr)"#,
        r#"active eq true"#,
        r#"active eq false"#,
        r#"active ne true"#,
        r#"not (active eq true)"#,
        r#"active pr"#,
        r#"emails.value eq "b@x.org""#,
        r#"emails.value eq "bob@home.net""#,
        r#"emails.value eq "c1@x.org""#,
        r#"emails.value co "y.org""#,
        r#"emails[type eq "work"].value eq "c1@X.org""#,
        r#"emails[type eq "home" and value eq "bob@home.net"]"#,
        r#"emails[value sw "dora"]"#,
        r#"userName eq "bob" or externalId eq "E1""#,
        r#"userName eq "bob" and active eq true"#,
        r#"(userName sw "a" or userName sw "b") and not (active eq false)"#,
        r#"userName eq "carl" and title pr"#,
        r#"not (userName eq "carl" and externalId eq "e1")"#,
        r#"id eq "id-2""#,
        r#"id ne "id-2""#,
        r#"id co "D-""#,
        r#"displayName sw "50\\""#,
        r#"userName co "o'""#,
        r#"urn:ietf:params:scim:schemas:extension:acme:2.0:User:cost eq "CC-1""#,
        r#"urn:ietf:params:scim:schemas:extension:acme:2.0:User:COST ne "cc-1""#,
        r#"urn:ietf:params:scim:schemas:extension:acme:2.0:User:level eq 7"#,
        r#"urn:ietf:params:scim:schemas:extension:acme:2.0:User:level eq "7""#,
        r#"urn:ietf:params:scim:schemas:extension:acme:2.0:User:level ne "7""#,
        r#"urn:ietf:params:scim:schemas:extension:acme:2.0:User:remote eq true"#,
        r#"urn:ietf:params:scim:schemas:extension:acme:2.0:User:remote ne true"#,
        r#"not (urn:ietf:params:scim:schemas:extension:acme:2.0:User:remote eq false)"#,
        r#"urn:ietf:params:scim:schemas:extension:acme:2.0:User:tags eq "b""#,
        r#"urn:ietf:params:scim:schemas:extension:acme:2.0:User:badge.n eq 2"#,
        r#"urn:ietf:params:scim:schemas:extension:acme:2.0:User:tags eq "a" and userName sw "x""#,
    ];
    let corpus = corpus();
    let mut planned = 0;
    for f in filters {
        let compiled = compile(f, rt).unwrap();
        let Some(plan) = plan(&compiled, ResourceKind::User) else {
            continue;
        };
        planned += 1;
        let (Planned::Exact(expr) | Planned::Superset(expr)) =
            plan_node(&compiled, ResourceKind::User)
        else {
            unreachable!()
        };
        for (id, full, cols) in &corpus {
            let want = matches(&compiled, full, rt);
            let got = eval_expr(&expr, cols, id);
            if plan.exact {
                assert_eq!(got, want, "{f} on {id}: exact plan disagrees");
            } else {
                assert!(got || !want, "{f} on {id}: superset plan dropped a match");
            }
        }
    }
    assert_eq!(
        planned,
        filters.len(),
        "every filter of this list has a plan"
    );
}
