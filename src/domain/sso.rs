//! Single sign-on rules with no I/O: which issuers and e-mail domains are acceptable, how a verified
//! identity maps to a member, and the fixed reasons a sign-in ends without a session.

use std::net::IpAddr;
use url::Url;

/// Why a single sign-on ended without a session. `as_str` is what `/?sso_error=` carries: a fixed
/// vocabulary, never text from the provider or the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No such workspace, or it has no provider (or it changed since the sign-in started).
    NotConfigured,
    /// Unknown, forged or replayed `state`, or one started in another browser.
    InvalidState,
    /// The sign-in started too long ago.
    Expired,
    /// The provider answered the authorization request with an error.
    ProviderError,
    /// The provider could not be reached (discovery, keys or token endpoint).
    ProviderUnreachable,
    /// The token endpoint refused the code.
    TokenExchange,
    /// No ID token, a malformed one, or a bad signature.
    InvalidToken,
    /// Signed by a key the provider does not publish, even after fetching its keys again.
    UnknownKey,
    WrongIssuer,
    WrongAudience,
    TokenExpired,
    WrongNonce,
    EmailMissing,
    EmailNotVerified,
    /// No member has the e-mail, and its domain may not join.
    DomainNotAllowed,
    /// The member with the e-mail is linked to another subject of the provider.
    LinkedElsewhere,
    /// Too many sign-ins started from one address to one workspace lately.
    RateLimited,
    /// Our own storage failed.
    Unavailable,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::NotConfigured => "not_configured",
            Failure::InvalidState => "invalid_state",
            Failure::Expired => "expired",
            Failure::ProviderError => "provider_error",
            Failure::ProviderUnreachable => "provider_unreachable",
            Failure::TokenExchange => "token_exchange_failed",
            Failure::InvalidToken => "invalid_token",
            Failure::UnknownKey => "unknown_key",
            Failure::WrongIssuer => "wrong_issuer",
            Failure::WrongAudience => "wrong_audience",
            Failure::TokenExpired => "token_expired",
            Failure::WrongNonce => "wrong_nonce",
            Failure::EmailMissing => "email_missing",
            Failure::EmailNotVerified => "email_not_verified",
            Failure::DomainNotAllowed => "domain_not_allowed",
            Failure::LinkedElsewhere => "linked_elsewhere",
            Failure::RateLimited => "rate_limited",
            Failure::Unavailable => "unavailable",
        }
    }
}

/// A host that never leaves the machine: the only place a plain-http provider is accepted (tests,
/// a provider on the same host). Anywhere else the ID token and the client secret need TLS.
pub fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// An endpoint of the provider (issuer, authorization, token, keys): https, or http on loopback.
pub fn acceptable_endpoint(url: &Url) -> bool {
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => is_loopback_host(url),
        _ => false,
    }
}

/// Checks an issuer as the owner typed it. OpenID Connect Discovery 1.0 section 4.3: the issuer is
/// compared as an exact string, so it is kept as given (Entra's
/// `https://login.microsoftonline.com/{tenant}/v2.0` has no trailing slash, others have one).
pub fn check_issuer(issuer: &str) -> Result<Url, &'static str> {
    if issuer.len() > 2048 {
        return Err("issuer is too long");
    }
    let url = Url::parse(issuer).map_err(|_| "issuer is not a URL")?;
    if !acceptable_endpoint(&url) {
        return Err("issuer must be https (plain http only on a loopback address)");
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err("issuer must not have a query, a fragment or credentials");
    }
    Ok(url)
}

/// A domain of `allowed_email_domains`, lower-cased; None when it is not a plain domain name.
pub fn normalize_domain(domain: &str) -> Option<String> {
    let d = domain.trim().trim_start_matches('@').to_ascii_lowercase();
    let labels_ok = d.split('.').all(|label| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    (d.len() <= 253 && d.contains('.') && labels_ok).then_some(d)
}

/// The lower-cased domain of an e-mail address.
pub fn email_domain(email: &str) -> Option<String> {
    email
        .rsplit_once('@')
        .map(|(_, domain)| domain.to_ascii_lowercase())
        .filter(|d| !d.is_empty())
}

/// Whether an e-mail of this domain may join on first sign-in: an exact, case-insensitive match
/// with an allowed domain. A subdomain is another domain (list it to allow it).
pub fn domain_allowed(email: &str, allowed: &[String]) -> bool {
    email_domain(email).is_some_and(|d| allowed.iter().any(|a| a.eq_ignore_ascii_case(&d)))
}

/// The member found by the verified e-mail, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmailMatch {
    pub user_id: i64,
    /// This member is already linked to another subject of the same issuer.
    pub linked_to_other: bool,
}

/// What a verified identity leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// The member linked to this subject: the e-mail the provider sends now does not matter.
    SignIn {
        user_id: i64,
    },
    /// First single sign-on of the member with this e-mail: link the subject, then sign in.
    LinkAndSignIn {
        user_id: i64,
    },
    /// No member yet and the domain may join: create one with the default role, link, sign in.
    Create,
    Refuse(Failure),
}

/// The identity rule. The link by `sub` wins over the e-mail, so someone who changes their e-mail
/// at the provider to another member's keeps signing in as themselves; and a member already linked
/// to one subject is not taken by another subject that now claims the same e-mail.
pub fn map_identity(
    linked: Option<i64>,
    by_email: Option<EmailMatch>,
    domain_allowed: bool,
) -> Mapping {
    match (linked, by_email) {
        (Some(user_id), _) => Mapping::SignIn { user_id },
        (None, Some(m)) if m.linked_to_other => Mapping::Refuse(Failure::LinkedElsewhere),
        (None, Some(m)) => Mapping::LinkAndSignIn { user_id: m.user_id },
        (None, None) if domain_allowed => Mapping::Create,
        (None, None) => Mapping::Refuse(Failure::DomainNotAllowed),
    }
}

#[cfg(test)]
mod tests {
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
        use Failure::*;
        let all = [
            NotConfigured,
            InvalidState,
            Expired,
            ProviderError,
            ProviderUnreachable,
            TokenExchange,
            InvalidToken,
            UnknownKey,
            WrongIssuer,
            WrongAudience,
            TokenExpired,
            WrongNonce,
            EmailMissing,
            EmailNotVerified,
            DomainNotAllowed,
            LinkedElsewhere,
            Unavailable,
        ];
        let codes: std::collections::HashSet<_> = all.iter().map(|f| f.as_str()).collect();
        assert_eq!(codes.len(), all.len());
        assert!(codes
            .iter()
            .all(|c| c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
    }
}
