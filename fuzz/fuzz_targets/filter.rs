//! Fuzzes the bounded filter and PATCH-path parsers (STYLE.md habit 10).
//!
//! Properties checked on every input:
//! - parsing never panics, and a filter longer than MAX_FILTER_LEN is refused;
//! - an accepted filter prints to a canonical form that parses back to the same tree
//!   (unless printing made it exceed a bound, which must then be the reason it fails);
//! - compiling, evaluating and planning an accepted filter never panic;
//! - PATCH-path, attribute-path and `attributes`-list parsing never panic.
//!
//! Run: `cargo +nightly fuzz run filter -- -max_total_time=60`
#![no_main]

use libfuzzer_sys::fuzz_target;
use assent::scim::eval::{compile, matches};
use assent::scim::filter::{Filter, MAX_FILTER_LEN};
use assent::scim::path::{AttrPath, PatchPath};
use assent::scim::projection::Projection;
use assent::scim::schema::ResourceKind;
use assent::scim::sql::plan;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let _ = PatchPath::parse(input);
    let _ = AttrPath::parse(input);
    let _ = Projection::parse(Some(input), Some(input));
    let Ok(filter) = Filter::parse(input) else {
        return;
    };
    assert!(input.len() <= MAX_FILTER_LEN);

    let printed = filter.to_string();
    match Filter::parse(&printed) {
        Ok(again) => assert_eq!(again, filter, "canonical form changed the filter: {printed}"),
        Err(e) => assert!(
            printed.len() > MAX_FILTER_LEN || e.detail().contains("nesting"),
            "canonical form {printed:?} of {input:?} does not parse: {e}"
        ),
    }

    let user = json!({
        "id": "u1", "userName": "Ann", "active": true, "externalId": "e",
        "name": {"givenName": "A"},
        "emails": [{"value": "a@x.org", "type": "work", "primary": true}],
        "meta": {"lastModified": "2026-01-01T00:00:00Z"},
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": "1"}
    });
    let group = json!({"id": "g1", "displayName": "G", "members": [{"value": "u1"}]});
    for (kind, doc) in [(ResourceKind::User, &user), (ResourceKind::Group, &group)] {
        let rt = kind.resource_type();
        if let Ok(compiled) = compile(input, rt) {
            let _ = matches(&compiled, doc, rt);
            if let Some(p) = plan(&compiled, kind) {
                assert_eq!(p.where_sql.matches('?').count(), p.binds.len());
            }
        }
    }
});
