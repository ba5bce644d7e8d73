//! `meta` (RFC 7643 §3.1) and versioning with ETags (RFC 7644 §3.14).
//!
//! The version is an integer the storage bumps on every write of a resource, member
//! changes of a Group included (its representation lists the members), and of each User a
//! membership change adds or removes (its representation lists its groups). It is rendered
//! as a weak ETag, `W/"7"`: the representation is not byte-for-byte stable (attribute
//! projection, member `display` names), so a strong ETag would promise too much.

use serde_json::{json, Value};
use time::OffsetDateTime;

use super::schema::ResourceType;
use super::value::format_time;

/// Where a resource lives: `{base_url}/Users/{id}`; `base_url` is the SCIM base
/// (`{ASSENT_PUBLIC_URL}/v1/scim/v2`), without a trailing slash.
pub fn location(rt: &ResourceType, id: &str, base_url: &str) -> String {
    format!("{}{}/{id}", base_url.trim_end_matches('/'), rt.endpoint)
}

/// The weak ETag of a version (also `meta.version` and the `ETag` header).
pub fn weak_etag(version: u64) -> String {
    format!("W/\"{version}\"")
}

/// The `meta` object of a resource.
pub fn meta_json(
    rt: &ResourceType,
    id: &str,
    created: OffsetDateTime,
    last_modified: OffsetDateTime,
    version: u64,
    base_url: &str,
) -> Value {
    json!({
        "resourceType": rt.name,
        "created": format_time(created),
        "lastModified": format_time(last_modified),
        "location": location(rt, id, base_url),
        "version": weak_etag(version),
    })
}

/// Whether an `If-Match` or `If-None-Match` header value names `current`.
///
/// `*` matches any current version. Tags compare by their opaque part, ignoring `W/`:
/// RFC 7232 §3.1 asks `If-Match` for the strong comparison, under which a weak tag never
/// matches, but SCIM's own examples send `If-Match: W/"…"` with the weak tag the server
/// gave (RFC 7644 §3.14), and clients do the same. A malformed header matches nothing
/// (so `If-Match` fails closed with 412).
pub fn etag_matches(header: &str, current: &str) -> bool {
    let header = header.trim();
    if header == "*" {
        return true;
    }
    let Some(current) = opaque(current.trim()) else {
        return false;
    };
    let mut rest = header;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
        if rest.is_empty() {
            return false;
        }
        let tag_start = rest.strip_prefix("W/").unwrap_or(rest);
        let Some(body) = tag_start.strip_prefix('"') else {
            return false;
        };
        let Some(end) = body.find('"') else {
            return false;
        };
        if &body[..end] == current {
            return true;
        }
        rest = &body[end + 1..];
    }
}

fn opaque(tag: &str) -> Option<&str> {
    tag.strip_prefix("W/")
        .unwrap_or(tag)
        .strip_prefix('"')?
        .strip_suffix('"')
}

#[cfg(test)]
mod tests {
    use super::super::schema::ResourceKind;
    use super::*;
    use time::macros::datetime;

    #[test]
    fn meta_object() {
        let rt = ResourceKind::User.resource_type();
        let m = meta_json(
            rt,
            "2819c223",
            datetime!(2026-11-28 12:00:00 UTC),
            datetime!(2026-11-28 14:30:00 +01:00),
            7,
            "https://assent.example/v1/scim/v2/",
        );
        assert_eq!(
            m,
            json!({
                "resourceType": "User",
                "created": "2026-11-28T12:00:00Z",
                "lastModified": "2026-11-28T13:30:00Z",
                "location": "https://assent.example/v1/scim/v2/Users/2819c223",
                "version": "W/\"7\"",
            })
        );
        let g = ResourceKind::Group.resource_type();
        assert_eq!(
            location(g, "g1", "https://a/v1/scim/v2"),
            "https://a/v1/scim/v2/Groups/g1"
        );
    }

    #[test]
    fn etag_comparison() {
        let cur = weak_etag(7);
        assert!(etag_matches("W/\"7\"", &cur));
        assert!(etag_matches("\"7\"", &cur));
        assert!(etag_matches("*", &cur));
        assert!(etag_matches("W/\"3\", W/\"7\"", &cur));
        assert!(etag_matches(" \"1\",\"7\" ", &cur));
        assert!(!etag_matches("W/\"6\"", &cur));
        assert!(!etag_matches("W/\"77\"", &cur));
        assert!(!etag_matches("", &cur));
        assert!(!etag_matches("7", &cur));
        assert!(!etag_matches("W/\"7", &cur));
        assert!(!etag_matches("W/\"7\"", "garbage"));
    }
}
