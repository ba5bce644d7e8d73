//! Unit tests of `sso.rs`.

use super::*;

#[test]
fn issuers_need_https_except_on_loopback() {
    assert!(check_issuer(
        "https://login.microsoftonline.com/7d3c8f0e-1111-2222-3333-444455556666/v2.0"
    )
    .is_ok());
    assert!(check_issuer("https://accounts.example.com/").is_ok());
    assert!(check_issuer("http://127.0.0.1:4444").is_ok());
    assert!(check_issuer("http://127.8.9.10/oidc").is_ok());
    assert!(check_issuer("http://[::1]:80").is_ok());
    assert!(check_issuer("http://localhost:3000").is_ok());
    assert!(check_issuer("http://idp.example.com").is_err());
    assert!(check_issuer("http://10.0.0.1").is_err());
    assert!(check_issuer("http://127.0.0.1.example.com").is_err());
    assert!(check_issuer("ftp://idp.example.com").is_err());
    assert!(check_issuer("https://idp.example.com/?tenant=x").is_err());
    assert!(check_issuer("https://user:pw@idp.example.com").is_err());
    assert!(check_issuer("idp.example.com").is_err());
}

#[test]
fn domains_are_normalized_and_matched_exactly() {
    assert_eq!(
        normalize_domain(" @Acme.Example ").as_deref(),
        Some("acme.example")
    );
    assert_eq!(
        normalize_domain("xn--bcher-kva.example").as_deref(),
        Some("xn--bcher-kva.example")
    );
    for bad in [
        "",
        "acme",
        "a..b",
        "-a.b",
        "a b.c",
        "a@b.c",
        "*.acme.example",
        ".acme.example",
    ] {
        assert_eq!(normalize_domain(bad), None, "{bad:?}");
    }
    let allowed = vec!["acme.example".to_owned()];
    assert!(domain_allowed("Ann@ACME.example", &allowed));
    assert!(!domain_allowed("ann@eu.acme.example", &allowed));
    assert!(!domain_allowed("ann@acme.example.evil", &allowed));
    assert!(!domain_allowed("acme.example@evil.example", &allowed));
    assert!(!domain_allowed("ann@", &allowed));
    assert!(!domain_allowed("ann@acme.example", &[]));
    assert_eq!(
        email_domain("a@b@Evil.Example").as_deref(),
        Some("evil.example")
    );
}

#[test]
fn the_link_wins_over_the_email() {
    // Linked: signs in the linked member even when the e-mail now names someone else.
    let other = EmailMatch {
        user_id: 2,
        linked_to_other: false,
    };
    assert_eq!(
        map_identity(Some(1), Some(other), false),
        Mapping::SignIn { user_id: 1 }
    );
    assert_eq!(
        map_identity(Some(1), None, false),
        Mapping::SignIn { user_id: 1 }
    );
}

#[test]
fn first_sign_in_links_the_member_with_that_email() {
    let m = EmailMatch {
        user_id: 7,
        linked_to_other: false,
    };
    // Existing members sign in whatever the allowed domains: the list is about joining.
    assert_eq!(
        map_identity(None, Some(m), false),
        Mapping::LinkAndSignIn { user_id: 7 }
    );
}

#[test]
fn a_member_linked_to_another_subject_is_not_taken_over() {
    let m = EmailMatch {
        user_id: 7,
        linked_to_other: true,
    };
    assert_eq!(
        map_identity(None, Some(m), true),
        Mapping::Refuse(Failure::LinkedElsewhere)
    );
}

#[test]
fn strangers_join_only_from_allowed_domains() {
    assert_eq!(map_identity(None, None, true), Mapping::Create);
    assert_eq!(
        map_identity(None, None, false),
        Mapping::Refuse(Failure::DomainNotAllowed)
    );
}

#[test]
fn failure_codes_are_url_safe_and_distinct() {
    let codes: std::collections::HashSet<_> = Failure::ALL.iter().map(|f| f.as_str()).collect();
    assert_eq!(codes.len(), Failure::ALL.len());
    assert!(codes
        .iter()
        .all(|c| c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
    // ALL is every variant: a new one not listed there fails to compile here.
    for f in Failure::ALL {
        match f {
            Failure::NotConfigured
            | Failure::InvalidState
            | Failure::Expired
            | Failure::ProviderError
            | Failure::ProviderUnreachable
            | Failure::TokenExchange
            | Failure::InvalidToken
            | Failure::UnknownKey
            | Failure::WrongIssuer
            | Failure::WrongAudience
            | Failure::TokenExpired
            | Failure::WrongNonce
            | Failure::EmailMissing
            | Failure::EmailNotVerified
            | Failure::DomainNotAllowed
            | Failure::LinkedElsewhere
            | Failure::RateLimited
            | Failure::TooManyRequests
            | Failure::NoSession
            | Failure::LoginNotFresh
            | Failure::WrongPerson
            | Failure::Unavailable => {}
        }
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn addresses_inside_our_network_are_refused() {
    for bad in [
        "127.0.0.1",
        "127.8.9.10",
        "10.0.0.1",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.1.1",
        "169.254.169.254",
        "169.254.1.1",
        "100.64.0.1",
        "100.127.255.255",
        "100.100.100.200",
        "0.0.0.0",
        "0.1.2.3",
        "255.255.255.255",
        "224.0.0.1",
        "240.0.0.1",
        "192.0.0.170",
        "::",
        "::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "::10.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::1",
        "fc00::1",
        "fd12:3456::1",
        "fd00:ec2::254",
        "fe80::1",
        "febf::1",
        "fec0::1",
        "ff02::1",
    ] {
        assert!(forbidden_address(ip(bad), false).is_some(), "{bad}");
    }
    for good in [
        "20.190.128.10",
        "172.15.255.255",
        "172.32.0.1",
        "100.63.255.255",
        "100.128.0.1",
        "169.253.1.1",
        "192.0.2.1",
        "2603:1026::1",
        "::ffff:20.190.128.10",
        "64:ff9b::1443:800a",
    ] {
        assert_eq!(forbidden_address(ip(good), false), None, "{good}");
    }
}

#[test]
fn loopback_is_allowed_only_when_asked_and_metadata_never() {
    for lo in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
        assert!(forbidden_address(ip(lo), false).is_some(), "{lo}");
        assert_eq!(forbidden_address(ip(lo), true), None, "{lo}");
    }
    for never in [
        "169.254.169.254",
        "fd00:ec2::254",
        "10.0.0.1",
        "::ffff:169.254.169.254",
    ] {
        assert!(forbidden_address(ip(never), true).is_some(), "{never}");
    }
    assert_eq!(
        forbidden_address(ip("169.254.169.254"), true),
        Some("a cloud metadata address")
    );
}

#[test]
fn endpoints_need_https_a_public_host_and_no_credentials() {
    let url = |s: &str| Url::parse(s).unwrap();
    assert!(check_endpoint(&url("https://login.microsoftonline.com/t/v2.0"), false).is_ok());
    assert!(check_endpoint(&url("https://20.190.128.10/token"), false).is_ok());
    for (bad, allow) in [
        ("http://login.example.com/token", false),
        ("http://login.example.com/token", true),
        ("http://127.0.0.1:4444/jwks", false),
        ("https://127.0.0.1:4444/jwks", false),
        ("https://localhost/jwks", false),
        ("https://idp.localhost./jwks", false),
        ("http://10.0.0.1/jwks", true),
        ("https://10.0.0.1/jwks", true),
        ("https://169.254.169.254/latest/meta-data", true),
        ("https://[fd00:ec2::254]/", true),
        ("https://[::ffff:a9fe:a9fe]/", true),
        ("https://metadata.google.internal/computeMetadata/v1/", true),
        ("https://METADATA.google.internal./", true),
        ("https://user:pw@login.example.com/token", false),
        ("ftp://login.example.com/", false),
        ("https://0x7f.1/jwks", false),
        ("https://2130706433/jwks", false),
    ] {
        assert!(
            check_endpoint(&url(bad), allow).is_err(),
            "{bad} (loopback {allow})"
        );
    }
    // With loopback allowed: plain http to loopback, not further.
    assert!(check_endpoint(&url("http://127.0.0.1:4444/jwks"), true).is_ok());
    assert!(check_endpoint(&url("http://localhost:4444/jwks"), true).is_ok());
    assert!(check_endpoint(&url("http://[::1]:4444/jwks"), true).is_ok());
}

#[test]
fn xms_edov_counts_only_where_email_verified_is_absent() {
    assert!(email_vouched(Some(true), None));
    assert!(email_vouched(None, Some(true)));
    assert!(!email_vouched(Some(false), Some(true)));
    assert!(!email_vouched(None, Some(false)));
    assert!(!email_vouched(None, None));
    assert!(email_vouched(Some(true), Some(false)));
}

#[test]
fn a_reauthentication_needs_a_login_made_for_it() {
    use time::macros::datetime;
    let started = datetime!(2026-11-28 12:00 UTC);
    let now = started + Duration::seconds(40);
    let skew = Duration::seconds(60);
    assert!(fresh_login(
        Some(started + Duration::seconds(20)),
        started,
        now,
        skew
    ));
    assert!(fresh_login(
        Some(started - Duration::seconds(30)),
        started,
        now,
        skew
    ));
    assert!(!fresh_login(None, started, now, skew));
    assert!(!fresh_login(
        Some(started - Duration::minutes(5)),
        started,
        now,
        skew
    ));
    assert!(!fresh_login(
        Some(now + Duration::minutes(5)),
        started,
        now,
        skew
    ));
}

#[test]
fn a_reauthentication_is_the_sessions_own_member_or_nobody() {
    assert_eq!(
        for_reauth(Mapping::SignIn { user_id: 3 }, 3),
        Mapping::SignIn { user_id: 3 }
    );
    assert_eq!(
        for_reauth(Mapping::LinkAndSignIn { user_id: 3 }, 3),
        Mapping::LinkAndSignIn { user_id: 3 }
    );
    for other in [
        Mapping::SignIn { user_id: 4 },
        Mapping::LinkAndSignIn { user_id: 4 },
        Mapping::Create,
        Mapping::Refuse(Failure::LinkedElsewhere),
        Mapping::Refuse(Failure::DomainNotAllowed),
    ] {
        assert_eq!(
            for_reauth(other, 3),
            Mapping::Refuse(Failure::WrongPerson),
            "{other:?}"
        );
    }
}
