//! Unit tests of [`super`].
use super::super::error::ScimType;
use super::super::schema::ResourceKind;
use super::*;

fn rt() -> &'static ResourceType {
    ResourceKind::User.resource_type()
}

#[test]
fn pagination_rules() {
    assert_eq!(
        Page::parse(None, None).unwrap(),
        Page {
            start_index: 1,
            count: MAX_RESULTS
        }
    );
    assert_eq!(
        Page::parse(Some("0"), Some("-5")).unwrap(),
        Page {
            start_index: 1,
            count: 0
        }
    );
    assert_eq!(
        Page::parse(Some("11"), Some("10")).unwrap(),
        Page {
            start_index: 11,
            count: 10
        }
    );
    assert_eq!(
        Page::parse(None, Some("100000")).unwrap().count,
        MAX_RESULTS
    );
    assert_eq!(
        Page::parse(Some("99999999999999999999"), None)
            .unwrap()
            .start_index,
        i64::MAX as u64
    );
    assert_eq!(
        Page::parse(None, Some("-99999999999999999999"))
            .unwrap()
            .count,
        0
    );
    let e = Page::parse(Some("abc"), None).unwrap_err();
    assert_eq!(e.scim_type(), Some(ScimType::InvalidValue));
    assert!(Page::parse(None, Some("1.5")).is_err());
    assert_eq!(Page::new(Some(3), None).offset(), 2);
}

#[test]
fn entra_test_connection_query() {
    let q = ListRequest::from_query(
        [
            (
                "filter",
                "userName eq \"8f6a2f2e-6b8d-4d3c-9a0d-4a1f0e5b3c21\"",
            ),
            ("aadOptscim062020", ""),
        ],
        rt(),
    )
    .unwrap();
    assert!(q.filter.is_some());
    assert_eq!(q.page, Page::default());
    let empty = PageWindow::new(q.page, None).into_list_response(|v| v.clone());
    assert_eq!(
        empty,
        json!({"schemas": [LIST_RESPONSE_URN], "totalResults": 0, "startIndex": 1, "itemsPerPage": 0, "Resources": []})
    );
}

#[test]
fn query_errors() {
    let e = ListRequest::from_query([("filter", "userName eq")], rt()).unwrap_err();
    assert_eq!(e.scim_type(), Some(ScimType::InvalidFilter));
    let e = ListRequest::from_query([("sortBy", "shoeSize")], rt()).unwrap_err();
    assert_eq!(e.scim_type(), Some(ScimType::InvalidValue));
    let e =
        ListRequest::from_query([("sortBy", "userName"), ("sortOrder", "up")], rt()).unwrap_err();
    assert_eq!(e.scim_type(), Some(ScimType::InvalidValue));
    let e = ListRequest::from_query([("count", "ten")], rt()).unwrap_err();
    assert_eq!(e.scim_type(), Some(ScimType::InvalidValue));
}

#[test]
fn search_body() {
    let body = json!({
        "schemas": [SEARCH_REQUEST_URN],
        "attributes": ["displayName", "userName"],
        "excludedAttributes": [],
        "filter": "displayName sw \"smith\"",
        "startIndex": 1,
        "count": 10,
        "sortBy": "userName",
        "sortOrder": "descending"
    });
    let q = ListRequest::from_search(&body, rt()).unwrap();
    assert_eq!(
        q.page,
        Page {
            start_index: 1,
            count: 10
        }
    );
    assert_eq!(q.sort.as_ref().unwrap().order, SortOrder::Descending);
    assert!(q.filter.is_some());
    assert!(!q.projection.wants(rt(), "emails"));
    let e = ListRequest::from_search(&json!({"filter": "userName pr"}), rt()).unwrap_err();
    assert_eq!(e.scim_type(), Some(ScimType::InvalidSyntax));
    let e = ListRequest::from_search(
        &json!({"schemas": [SEARCH_REQUEST_URN], "count": "ten"}),
        rt(),
    )
    .unwrap_err();
    assert_eq!(e.scim_type(), Some(ScimType::InvalidValue));
    let q = ListRequest::from_search(
        &json!({"schemas": [SEARCH_REQUEST_URN], "attributes": "userName,emails", "filter": null}),
        rt(),
    )
    .unwrap();
    assert!(q.filter.is_none());
    assert!(q.projection.wants(rt(), "emails"));
}

fn u(id: &str, user_name: Option<&str>, emails: Value, modified: &str) -> Value {
    let mut v = json!({"id": id, "emails": emails, "meta": {"lastModified": modified}});
    if let Some(n) = user_name {
        v["userName"] = json!(n);
    }
    v
}

fn people() -> Vec<Value> {
    vec![
        u(
            "1",
            Some("bob"),
            json!([{"value": "z@x", "primary": true}, {"value": "a@x"}]),
            "2026-01-03T00:00:00Z",
        ),
        u(
            "2",
            Some("Alice"),
            json!([{"value": "m@x"}]),
            "2026-01-01T00:00:00Z",
        ),
        u("3", None, json!([]), "2026-01-02T00:00:00Z"),
        u(
            "4",
            Some("alice"),
            json!([{"value": "b@x"}, {"value": "c@x", "primary": true}]),
            "2026-01-04T00:00:00+05:00",
        ),
    ]
}

fn sorted_ids(by: &str, order: Option<&str>) -> Vec<String> {
    let sort = Sort::parse(by, order, rt()).unwrap();
    let mut v = people();
    v.sort_by(|a, b| sort.compare(a, b));
    v.iter()
        .map(|x| x["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn sorting() {
    // Case-insensitive, ties by id, missing last.
    assert_eq!(sorted_ids("userName", None), ["2", "4", "1", "3"]);
    assert_eq!(
        sorted_ids("userName", Some("descending")),
        ["3", "1", "4", "2"]
    );
    // Multi-valued: the primary value, else the first.
    assert_eq!(sorted_ids("emails", None), ["4", "2", "1", "3"]);
    assert_eq!(sorted_ids("emails.value", None), ["4", "2", "1", "3"]);
    // dateTime as instants: "2026-01-04T00:00:00+05:00" is Jan 3, 19:00 UTC.
    assert_eq!(sorted_ids("meta.lastModified", None), ["2", "3", "1", "4"]);
}

#[test]
fn window_without_sort_keeps_only_the_page() {
    let mut w = PageWindow::new(Page::new(Some(2), Some(2)), None);
    for p in people() {
        w.offer(p);
    }
    assert_eq!(w.total(), 4);
    let ids: Vec<Value> = w.into_page().iter().map(|v| v["id"].clone()).collect();
    assert_eq!(ids, vec![json!("2"), json!("3")]);
}

#[test]
fn window_with_sort_keeps_the_best() {
    let sort = Sort::parse("userName", None, rt()).unwrap();
    let mut w = PageWindow::new(Page::new(Some(2), Some(2)), Some(&sort));
    for p in people() {
        w.offer(p);
        assert!(w.kept.len() <= 3);
    }
    let resp = w.into_list_response(|v| json!({"id": v["id"]}));
    assert_eq!(resp["totalResults"], 4);
    assert_eq!(resp["startIndex"], 2);
    assert_eq!(resp["itemsPerPage"], 2);
    assert_eq!(resp["Resources"], json!([{"id": "4"}, {"id": "1"}]));
    // count=0 answers only totalResults.
    let mut w = PageWindow::new(Page::new(None, Some(0)), Some(&sort));
    w.offer(people().remove(0));
    assert_eq!(w.total(), 1);
    assert!(w.into_page().is_empty());
}
