//! Single sign-on rules with no I/O: which issuers and e-mail domains are acceptable, how a verified
//! identity maps to a member, and the fixed reasons a sign-in ends without a session.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use time::{Duration, OffsetDateTime};
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
    /// Too many single sign-on requests from one address, whatever the workspace: a flood, answered
    /// 429 rather than with a redirect.
    TooManyRequests,
    /// A re-authentication asked for without a live console session of that workspace.
    NoSession,
    /// A re-authentication whose ID token does not prove a login made for it (`auth_time`).
    LoginNotFresh,
    /// A re-authentication in which someone other than the session's person signed in.
    WrongPerson,
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
            Failure::TooManyRequests => "too_many_requests",
            Failure::NoSession => "no_session",
            Failure::LoginNotFresh => "login_not_fresh",
            Failure::WrongPerson => "wrong_person",
            Failure::Unavailable => "unavailable",
        }
    }

    /// Every reason: the closed label set of the `assent_sso_refusals_total` metric.
    pub const ALL: [Failure; 22] = [
        Failure::NotConfigured,
        Failure::InvalidState,
        Failure::Expired,
        Failure::ProviderError,
        Failure::ProviderUnreachable,
        Failure::TokenExchange,
        Failure::InvalidToken,
        Failure::UnknownKey,
        Failure::WrongIssuer,
        Failure::WrongAudience,
        Failure::TokenExpired,
        Failure::WrongNonce,
        Failure::EmailMissing,
        Failure::EmailNotVerified,
        Failure::DomainNotAllowed,
        Failure::LinkedElsewhere,
        Failure::RateLimited,
        Failure::TooManyRequests,
        Failure::NoSession,
        Failure::LoginNotFresh,
        Failure::WrongPerson,
        Failure::Unavailable,
    ];
}

/// A host that never leaves the machine: the only place a plain-http provider is accepted (tests,
/// a provider on the same host, with `ASSENT_SSO_ALLOW_LOOPBACK=1`). Anywhere else the ID token and
/// the client secret need TLS.
pub fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        None => false,
    }
}

const LOOPBACK_REFUSED: &str =
    "a loopback address (set ASSENT_SSO_ALLOW_LOOPBACK=1 for a local provider)";

/// Names of cloud metadata services, refused before they are even resolved (their addresses are
/// refused too, whatever name leads there).
const METADATA_NAMES: [&str; 2] = ["metadata.google.internal", "metadata"];

/// Why a host name may not be a provider's, if it may not.
pub fn forbidden_name(host: &str) -> Option<&'static str> {
    let host = host.trim_end_matches('.');
    METADATA_NAMES
        .iter()
        .any(|m| host.eq_ignore_ascii_case(m))
        .then_some("a cloud metadata service")
}

/// Why an address may not be a provider's, if it may not: Assent would be sending requests (and
/// browsers) into its own network, server-side request forgery (issue 12). Loopback is allowed
/// only with `allow_loopback`; cloud metadata never. IPv4 written inside IPv6 (mapped,
/// compatible, NAT64 RFC 6052) is judged as the IPv4 address it reaches.
pub fn forbidden_address(ip: IpAddr, allow_loopback: bool) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4, allow_loopback),
        IpAddr::V6(v6) => forbidden_v6(v6, allow_loopback),
    }
}

fn forbidden_v4(ip: Ipv4Addr, allow_loopback: bool) -> Option<&'static str> {
    let [a, b, c, d] = ip.octets();
    match (a, b) {
        _ if [a, b, c, d] == [169, 254, 169, 254] => Some("a cloud metadata address"),
        // Alibaba Cloud's metadata service, inside the shared range below.
        _ if [a, b, c, d] == [100, 100, 100, 200] => Some("a cloud metadata address"),
        (127, _) if allow_loopback => None,
        (127, _) => Some(LOOPBACK_REFUSED),
        (0, _) => Some("an unspecified address"),
        (10, _) | (192, 168) => Some("a private address"),
        (172, 16..=31) => Some("a private address"),
        (100, 64..=127) => Some("a shared (carrier-grade NAT) address"),
        (169, 254) => Some("a link-local address"),
        (192, 0) if c == 0 => Some("a reserved address"),
        (224..=239, _) => Some("a multicast address"),
        // 240/4, reserved, with 255.255.255.255, the broadcast address.
        (240..=255, _) => Some("a reserved or broadcast address"),
        _ => None,
    }
}

fn forbidden_v6(ip: Ipv6Addr, allow_loopback: bool) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("an unspecified address");
    }
    if ip.is_loopback() {
        return (!allow_loopback).then_some(LOOPBACK_REFUSED);
    }
    if ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) {
        return Some("a cloud metadata address");
    }
    let embedded = |high: u16, low: u16| {
        Ipv4Addr::new((high >> 8) as u8, high as u8, (low >> 8) as u8, low as u8)
    };
    match s {
        // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated by RFC 4291).
        [0, 0, 0, 0, 0, 0xffff, h, l] | [0, 0, 0, 0, 0, 0, h, l] => {
            forbidden_v4(embedded(h, l), allow_loopback)
        }
        // 64:ff9b::/96, the well-known NAT64 prefix: a translator reaches the IPv4 inside.
        [0x64, 0xff9b, 0, 0, 0, 0, h, l] => forbidden_v4(embedded(h, l), allow_loopback),
        // 64:ff9b:1::/48, NAT64 for local use (RFC 8215).
        [0x64, 0xff9b, 1, ..] => Some("a private address"),
        [first, ..] if first & 0xfe00 == 0xfc00 => Some("a private (unique local) address"),
        [first, ..] if first & 0xffc0 == 0xfe80 => Some("a link-local address"),
        // fec0::/10, site-local: deprecated (RFC 3879), still private where it is used.
        [first, ..] if first & 0xffc0 == 0xfec0 => Some("a private (site-local) address"),
        [first, ..] if first & 0xff00 == 0xff00 => Some("a multicast address"),
        _ => None,
    }
}

/// Checks one URL of a provider (its issuer, or an endpoint its discovery document names) before
/// anything is sent there: https (plain http only to a loopback host where loopback is allowed),
/// no credentials, and no host that is a forbidden address or name. A host name's addresses are
/// checked when it is resolved (`oidc::fetch`), at every connection.
pub fn check_endpoint(url: &Url, allow_loopback: bool) -> Result<(), &'static str> {
    match url.scheme() {
        "https" => {}
        "http" if allow_loopback && is_loopback_host(url) => {}
        "http" => return Err("plain http (https is required)"),
        _ => return Err("not an http(s) URL"),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL");
    }
    match url.host() {
        None => Err("no host"),
        Some(url::Host::Ipv4(ip)) => {
            forbidden_address(IpAddr::V4(ip), allow_loopback).map_or(Ok(()), Err)
        }
        Some(url::Host::Ipv6(ip)) => {
            forbidden_address(IpAddr::V6(ip), allow_loopback).map_or(Ok(()), Err)
        }
        // RFC 6761 section 6.3: `localhost` and its subdomains are loopback, whatever DNS says.
        Some(url::Host::Domain(d)) if !allow_loopback && is_localhost_name(d) => {
            Err(LOOPBACK_REFUSED)
        }
        Some(url::Host::Domain(d)) => forbidden_name(d).map_or(Ok(()), Err),
    }
}

fn is_localhost_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// Checks an issuer as the owner typed it. OpenID Connect Discovery 1.0 section 4.3: the issuer is
/// compared as an exact string, so it is kept as given (Entra's
/// `https://login.microsoftonline.com/{tenant}/v2.0` has no trailing slash, others have one). Only
/// its form is checked here; where it leads is `check_endpoint`'s and the resolver's to judge, and
/// their refusal reaches the owner as the one generic answer.
pub fn check_issuer(issuer: &str) -> Result<Url, &'static str> {
    if issuer.len() > 2048 {
        return Err("issuer is too long");
    }
    let url = Url::parse(issuer).map_err(|_| "issuer is not a URL")?;
    let form_ok = match url.scheme() {
        "https" => url.host().is_some(),
        "http" => is_loopback_host(&url),
        _ => false,
    };
    if !form_ok {
        return Err("issuer must be https (plain http only on a loopback address)");
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err("issuer must not have a query, a fragment or credentials");
    }
    Ok(url)
}

/// Whether the ID token vouches for the e-mail. `email_verified` decides when present (a `false`
/// refuses whatever else is said). Microsoft Entra ID leaves it out of its ID tokens and offers
/// the optional claim `xms_edov` (the e-mail's domain is verified by the tenant that owns it): it
/// counts only where `email_verified` is absent, and only as the JSON boolean `true`.
pub fn email_vouched(email_verified: Option<bool>, xms_edov: Option<bool>) -> bool {
    match email_verified {
        Some(verified) => verified,
        None => xms_edov == Some(true),
    }
}

/// Whether the provider's `auth_time` proves a login made for this re-authentication: present
/// (we asked with `max_age=0`, so OpenID Connect Core 1.0 section 3.1.2.1 requires it), not before
/// the re-authentication started, not in the future; `skew` either way for the clocks.
pub fn fresh_login(
    auth_time: Option<OffsetDateTime>,
    started_at: OffsetDateTime,
    now: OffsetDateTime,
    skew: Duration,
) -> bool {
    auth_time.is_some_and(|t| t >= started_at - skew && t <= now + skew)
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

/// The identity rule of a re-authentication: only the session's own member passes; another member,
/// a stranger, or a subject that cannot be tied to the member is someone else signing in.
pub fn for_reauth(mapping: Mapping, session_user: i64) -> Mapping {
    match mapping {
        Mapping::SignIn { user_id } | Mapping::LinkAndSignIn { user_id }
            if user_id == session_user =>
        {
            mapping
        }
        _ => Mapping::Refuse(Failure::WrongPerson),
    }
}

#[cfg(test)]
#[path = "sso_tests.rs"]
mod tests;
