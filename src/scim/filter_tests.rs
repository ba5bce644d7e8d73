//! Unit tests of [`super`].
use super::*;

fn parse(s: &str) -> Filter {
    Filter::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn cmp(name: &str, op: CompareOp, value: CompValue) -> Filter {
    Filter::Compare {
        path: AttrPath::parse(name).unwrap(),
        op,
        value,
    }
}

fn s(v: &str) -> CompValue {
    CompValue::Str(v.into())
}

#[test]
fn every_operator_case_insensitively() {
    for (word, op) in [
        ("eq", CompareOp::Eq),
        ("NE", CompareOp::Ne),
        ("Co", CompareOp::Co),
        ("sW", CompareOp::Sw),
        ("ew", CompareOp::Ew),
        ("GT", CompareOp::Gt),
        ("ge", CompareOp::Ge),
        ("lt", CompareOp::Lt),
        ("Le", CompareOp::Le),
    ] {
        assert_eq!(
            parse(&format!("title {word} \"x\"")),
            cmp("title", op, s("x"))
        );
    }
    assert_eq!(
        parse("title PR"),
        Filter::Present(AttrPath::simple("title"))
    );
}

#[test]
fn literals() {
    assert_eq!(
        parse("active eq TRUE"),
        cmp("active", CompareOp::Eq, CompValue::Bool(true))
    );
    assert_eq!(
        parse("active eq false"),
        cmp("active", CompareOp::Eq, CompValue::Bool(false))
    );
    assert_eq!(
        parse("title eq Null"),
        cmp("title", CompareOp::Eq, CompValue::Null)
    );
    assert_eq!(
        parse("x gt 10"),
        cmp("x", CompareOp::Gt, CompValue::Num(Number::from(10)))
    );
    assert_eq!(
        parse("x le -2.5"),
        cmp(
            "x",
            CompareOp::Le,
            CompValue::Num(Number::from_f64(-2.5).unwrap())
        )
    );
    assert_eq!(
        parse(r#"userName eq "a\"b""#),
        cmp("userName", CompareOp::Eq, s("a\"b"))
    );
}

#[test]
fn and_binds_tighter_than_or() {
    let f = parse(r#"a eq "1" or b eq "2" and c eq "3""#);
    assert_eq!(
        f,
        Filter::Or(vec![
            cmp("a", CompareOp::Eq, s("1")),
            Filter::And(vec![
                cmp("b", CompareOp::Eq, s("2")),
                cmp("c", CompareOp::Eq, s("3"))
            ]),
        ])
    );
    let f = parse(r#"a eq "1" AND b eq "2" Or c eq "3""#);
    assert_eq!(
        f,
        Filter::Or(vec![
            Filter::And(vec![
                cmp("a", CompareOp::Eq, s("1")),
                cmp("b", CompareOp::Eq, s("2"))
            ]),
            cmp("c", CompareOp::Eq, s("3")),
        ])
    );
}

#[test]
fn parentheses_and_not() {
    let f = parse(r#"(a eq "1" or b eq "2") and not (c pr)"#);
    assert_eq!(
        f,
        Filter::And(vec![
            Filter::Or(vec![
                cmp("a", CompareOp::Eq, s("1")),
                cmp("b", CompareOp::Eq, s("2"))
            ]),
            Filter::Not(Box::new(Filter::Present(AttrPath::simple("c")))),
        ])
    );
    assert_eq!(f.to_string(), r#"(a eq "1" or b eq "2") and not (c pr)"#);
    // Chains are flattened whatever the grouping.
    assert_eq!(
        parse(r#"(a pr and b pr) and c pr"#),
        Filter::And(vec![
            Filter::Present(AttrPath::simple("a")),
            Filter::Present(AttrPath::simple("b")),
            Filter::Present(AttrPath::simple("c")),
        ])
    );
}

#[test]
fn value_paths() {
    let f = parse(r#"emails[type eq "work" and primary eq true]"#);
    assert_eq!(
        f,
        Filter::ValuePath {
            attr: AttrPath::simple("emails"),
            filter: Box::new(Filter::And(vec![
                cmp("type", CompareOp::Eq, s("work")),
                cmp("primary", CompareOp::Eq, CompValue::Bool(true)),
            ])),
        }
    );
    // `.value op x` after the bracket folds into the value filter.
    let f = parse(r#"emails[type eq "work" and primary eq true].value eq "a@b.c""#);
    assert_eq!(
        f.to_string(),
        r#"emails[type eq "work" and primary eq true and value eq "a@b.c"]"#
    );
    let f = parse(r#"emails[type eq "work" or type eq "home"].value pr"#);
    assert_eq!(
        f.to_string(),
        r#"emails[(type eq "work" or type eq "home") and value pr]"#
    );
    let f =
        parse(r#"userType eq "Employee" and emails[type eq "work" and value co "@example.com"]"#);
    assert!(matches!(f, Filter::And(ref v) if v.len() == 2));
}

#[test]
fn urn_and_sub_attribute_paths() {
    let f = parse(
        r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "701984""#,
    );
    match f {
        Filter::Compare { path, .. } => {
            assert_eq!(
                path.urn.as_deref(),
                Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
            );
            assert_eq!(path.name, "employeeNumber");
        }
        other => panic!("{other:?}"),
    }
    let f = parse(r#"name.familyName co "O'Malley""#);
    assert_eq!(f, cmp("name.familyName", CompareOp::Co, s("O'Malley")));
    let f = parse(r#"meta.lastModified gt "2011-05-13T04:42:34Z""#);
    assert_eq!(
        f.to_string(),
        r#"meta.lastModified gt "2011-05-13T04:42:34Z""#
    );
}

#[test]
fn rfc7644_examples_parse() {
    for f in [
        r#"userName Eq "john""#,
        r#"name.familyName co "O'Malley""#,
        r#"userName sw "J""#,
        r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J""#,
        "title pr",
        r#"meta.lastModified gt "2011-05-13T04:42:34Z""#,
        r#"meta.lastModified ge "2011-05-13T04:42:34Z""#,
        r#"meta.lastModified lt "2011-05-13T04:42:34Z""#,
        r#"meta.lastModified le "2011-05-13T04:42:34Z""#,
        r#"title pr and userType eq "Employee""#,
        r#"title pr or userType eq "Intern""#,
        r#"schemas eq "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User""#,
        r#"userType eq "Employee" and (emails co "example.com" or emails.value co "example.org")"#,
        r#"userType ne "Employee" and not (emails co "example.com" or emails.value co "example.org")"#,
        r#"userType eq "Employee" and (emails.type eq "work")"#,
        r#"userType eq "Employee" and emails[type eq "work" and value co "@example.com"]"#,
        r#"emails[type eq "work" and value co "@example.com"] or ims[type eq "xmpp" and value co "@foo.com"]"#,
    ] {
        let parsed = parse(f);
        // Printing and parsing again is the identity.
        assert_eq!(parse(&parsed.to_string()), parsed, "{f}");
    }
}

#[test]
fn entra_test_connection_filter() {
    let f = parse(r#"userName eq "8f6a2f2e-6b8d-4d3c-9a0d-4a1f0e5b3c21""#);
    assert_eq!(
        f,
        cmp(
            "userName",
            CompareOp::Eq,
            s("8f6a2f2e-6b8d-4d3c-9a0d-4a1f0e5b3c21")
        )
    );
    let f = parse(r#"externalId eq "0a1b""#);
    assert_eq!(f, cmp("externalId", CompareOp::Eq, s("0a1b")));
}

#[test]
fn syntax_errors_are_invalid_filter() {
    for bad in [
        "",
        "   ",
        "userName",
        "userName eq",
        "userName xx \"a\"",
        "userName eq \"a\" and",
        "userName eq \"a\" or or b pr",
        "(userName pr",
        "userName pr)",
        "not userName pr",
        "emails[type eq \"work\"",
        "emails[type eq \"work\"]]",
        "emails[type[value pr]]",
        "emails.type[value pr]",
        "emails[type eq \"work\"].1 eq 2",
        "emails[type eq \"work\"].value",
        "userName eq unquoted",
        "eq eq eq",
        "userName eq \"a\" userName eq \"b\"",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User pr",
        "[a pr]",
        ".a pr",
    ] {
        let e = Filter::parse(bad).unwrap_err();
        assert_eq!(e.scim_type(), Some(ScimType::InvalidFilter), "{bad:?}: {e}");
        assert_eq!(e.status(), 400);
    }
}

#[test]
fn error_detail_does_not_echo_values() {
    let e = Filter::parse(r#"password eq "hunter2" and"#).unwrap_err();
    assert!(!e.detail().contains("hunter2"), "{e}");
    assert!(e.detail().contains("byte"), "{e}");
}

#[test]
fn length_is_bounded() {
    let long = format!("userName eq \"{}\"", "a".repeat(MAX_FILTER_LEN));
    let e = Filter::parse(&long).unwrap_err();
    assert_eq!(e.scim_type(), Some(ScimType::InvalidFilter));
    assert!(e.detail().contains("4096"));
    let ok = format!("userName eq \"{}\"", "a".repeat(MAX_FILTER_LEN - 15));
    assert!(ok.len() <= MAX_FILTER_LEN);
    parse(&ok);
}

#[test]
fn depth_is_bounded() {
    let nest = |n: usize| format!("{}a pr{}", "(".repeat(n), ")".repeat(n));
    parse(&nest(MAX_FILTER_DEPTH));
    let e = Filter::parse(&nest(MAX_FILTER_DEPTH + 1)).unwrap_err();
    assert_eq!(e.scim_type(), Some(ScimType::InvalidFilter));
    assert!(e.detail().contains("nesting"), "{e}");
    let nots = format!(
        "{}a pr{}",
        "not (".repeat(MAX_FILTER_DEPTH + 1),
        ")".repeat(MAX_FILTER_DEPTH + 1)
    );
    assert!(Filter::parse(&nots).is_err());
    // Thousands of unbalanced parentheses fail fast, without deep recursion.
    let e = Filter::parse(&"(".repeat(MAX_FILTER_LEN)).unwrap_err();
    assert!(e.detail().contains("nesting"));
}

#[test]
fn long_flat_chains_stay_shallow() {
    let chain = vec!["a pr"; 400].join(" and ");
    match parse(&chain) {
        Filter::And(v) => assert_eq!(v.len(), 400),
        other => panic!("{other:?}"),
    }
}

#[test]
fn mentions_sees_through_logic() {
    let f = parse(r#"displayName eq "x" and not (members[value eq "1"])"#);
    assert!(f.mentions("MEMBERS"));
    assert!(f.mentions("displayname"));
    assert!(!f.mentions("value"));
}
