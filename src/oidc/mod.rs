//! The OpenID provider as Assent talks to it, through the `openidconnect` crate: discovery and
//! signing keys cached per issuer (the keys fetched again when an ID token names one we do not
//! have: key rotation at the provider must not break sign-in), the authorization request, the code
//! exchange and the ID-token checks. Which member a verified identity is stays in `sso.rs`.
//!
//! Entra ID's single-tenant issuer `https://login.microsoftonline.com/{tenant}/v2.0` works like any
//! other. Its multi-tenant endpoints (`/common`, `/organizations`) publish the template
//! `https://login.microsoftonline.com/{tenantid}/v2.0` as their issuer, which no ID token carries
//! literally: supporting them would take matching `iss` against the template with the token's `tid`
//! and a list of allowed tenants. Not supported: discovery refuses the mismatch (OpenID Connect
//! Discovery 1.0 section 4.3) and the owner configures the tenant's own issuer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreClientAuthMethod,
    CoreErrorResponseType, CoreGenderClaim, CoreIdTokenVerifier, CoreJsonWebKey, CoreJsonWebKeySet,
    CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreProviderMetadata,
    CoreResponseType, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthType, AuthorizationCode, ClaimsVerificationError, Client, ClientId,
    ClientSecret, CsrfToken, DiscoveryError, EmptyExtraTokenFields, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IdTokenClaims, IdTokenFields, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope, SignatureVerificationError,
    StandardErrorResponse, StandardTokenResponse, TokenResponse,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

mod fetch;

use crate::domain::crypto::{ct_eq, sha256_hex};
use crate::domain::sso::{check_endpoint, Failure};
use fetch::{error_chain, vet_url, FetchError, ProviderHttp};

/// How long discovery and keys are trusted before they are fetched again (an unknown `kid`
/// fetches the keys at once).
pub const DISCOVERY_TTL: time::Duration = time::Duration::hours(1);
/// Clock difference tolerated with the provider for `exp` and `iat`.
pub const CLOCK_SKEW: time::Duration = time::Duration::seconds(60);
/// Oldest `iat` accepted: the ID token comes straight from the token endpoint, so it is fresh.
pub const MAX_TOKEN_AGE: time::Duration = time::Duration::minutes(10);

/// Only signatures with the provider's published public keys. HS256 and friends would make the
/// client secret a signing key (OpenID Connect Core 1.0 section 10.1), and `none` signs nothing.
const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 10] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EcdsaP521Sha512,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// What the owner and the browser are told when a provider cannot be used, whatever the cause:
/// a detail (refused address, connection refused, timeout, HTTP status) would make the settings
/// form and the audit log a port scanner of the network Assent runs in (issue 12). The cause goes
/// to the server's log.
pub const PROVIDER_REFUSED: &str =
    "the provider could not be reached or its discovery document is not valid";

/// Why the provider's documents could not be used. The text is for the server's log only: it
/// names what was wrong, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryProblem {
    #[error("the issuer could not be reached: {0}")]
    Unreachable(String),
    #[error("the issuer's discovery document is not usable: {0}")]
    Invalid(String),
}

/// The claims Assent reads beyond the standard ones. `xms_edov` is Microsoft Entra ID's optional
/// "e-mail domain owner verified" claim (`domain::sso::email_vouched`); kept as any JSON value so
/// that an unexpected type refuses nothing by itself (only the boolean `true` counts).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ExtraClaims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    xms_edov: Option<serde_json::Value>,
}

impl AdditionalClaims for ExtraClaims {}

type ExtraIdTokenFields = IdTokenFields<
    ExtraClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

/// `CoreClient` with `ExtraClaims` in its ID tokens, as built from discovery.
type ProviderClient = Client<
    ExtraClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    StandardTokenResponse<ExtraIdTokenFields, CoreTokenType>,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// A provider that could not be used during a sign-in: the cause to the log, a fixed text to the
/// audit log and the browser.
fn provider_failed(issuer: &str, problem: DiscoveryProblem) -> Refused {
    tracing::warn!(%issuer, %problem, "single sign-on: the provider could not be used");
    match problem {
        DiscoveryProblem::Unreachable(_) => {
            Refused::new(Failure::ProviderUnreachable, PROVIDER_REFUSED)
        }
        DiscoveryProblem::Invalid(_) => Refused::new(Failure::InvalidToken, PROVIDER_REFUSED),
    }
}

/// A refusal with the internal cause, for the audit log.
#[derive(Debug)]
pub struct Refused {
    pub failure: Failure,
    pub cause: String,
}

impl Refused {
    pub fn new(failure: Failure, cause: impl Into<String>) -> Self {
        let mut cause: String = cause.into();
        if cause.len() > 300 {
            let mut end = 300;
            while !cause.is_char_boundary(end) {
                end -= 1;
            }
            cause.truncate(end);
        }
        Self { failure, cause }
    }
}

/// Assent as a client of one provider.
#[derive(Clone, Copy, Debug)]
pub struct RelyingParty<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
}

/// What a verified ID token says about the person.
#[derive(Clone, Debug)]
pub struct Identity {
    pub sub: String,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    /// Entra ID's `xms_edov`: `Some(true)` only for the JSON boolean `true`.
    pub xms_edov: Option<bool>,
    /// When the person last logged in at the provider (OpenID Connect Core 1.0 section 2).
    pub auth_time: Option<OffsetDateTime>,
}

#[derive(Clone)]
struct Discovered {
    metadata: CoreProviderMetadata,
    fetched_at: OffsetDateTime,
    /// Bumped at every key fetch, so concurrent sign-ins that all miss a `kid` fetch once.
    keys_generation: u64,
}

type Slot = Arc<tokio::sync::Mutex<Option<Discovered>>>;

/// The providers this instance has talked to, and the HTTP client it talks to them with.
pub struct OidcProviders {
    http: ProviderHttp,
    /// One slot per issuer; its async lock is held while that issuer is fetched, so a slow
    /// provider delays only its own sign-ins.
    cache: Mutex<HashMap<String, Slot>>,
}

fn utc(t: OffsetDateTime) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond()).unwrap_or_default()
}

fn discovery_problem(e: DiscoveryError<FetchError>) -> DiscoveryProblem {
    match e {
        DiscoveryError::Request(cause) => DiscoveryProblem::Unreachable(error_chain(&cause)),
        DiscoveryError::Response(status, _, _) => {
            DiscoveryProblem::Invalid(format!("it answered HTTP {}", status.as_u16()))
        }
        DiscoveryError::Parse(cause) => {
            DiscoveryProblem::Invalid(format!("not valid JSON metadata at {}", cause.path()))
        }
        DiscoveryError::Validation(what) => DiscoveryProblem::Invalid(what),
        other => DiscoveryProblem::Invalid(other.to_string()),
    }
}

/// What we need of a provider, beyond what `openidconnect` already checked (the issuer in the
/// document is the one asked for, the keys parse). Every endpoint we use passes the rules of
/// `check_endpoint` (the key set was fetched through the guarded client, which applied them).
fn check_metadata(md: &CoreProviderMetadata, allow_loopback: bool) -> Result<(), DiscoveryProblem> {
    let invalid = |what: String| Err(DiscoveryProblem::Invalid(what));
    let Some(token_endpoint) = md.token_endpoint() else {
        return invalid("it has no token_endpoint".into());
    };
    for (name, url) in [
        ("authorization_endpoint", md.authorization_endpoint().url()),
        ("token_endpoint", token_endpoint.url()),
        ("jwks_uri", md.jwks_uri().url()),
    ] {
        if let Err(why) = check_endpoint(url, allow_loopback) {
            return invalid(format!("{name}: {why}"));
        }
    }
    if !md
        .response_types_supported()
        .iter()
        .any(|r| r.as_slice() == [CoreResponseType::Code])
    {
        return invalid("it does not support the authorization code flow".into());
    }
    if !md
        .id_token_signing_alg_values_supported()
        .iter()
        .any(|alg| ALLOWED_ALGS.contains(alg))
    {
        return invalid("it signs ID tokens with no public-key algorithm".into());
    }
    Ok(())
}

impl OidcProviders {
    /// `allow_loopback`: `ASSENT_SSO_ALLOW_LOOPBACK` (see `fetch.rs`).
    pub fn new(allow_loopback: bool) -> Self {
        Self {
            http: ProviderHttp::new(allow_loopback),
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, issuer: &str) -> Slot {
        let mut cache = self.cache.lock().expect("provider cache lock");
        cache.entry(issuer.to_owned()).or_default().clone()
    }

    async fn fetch(&self, issuer: &str) -> Result<CoreProviderMetadata, DiscoveryProblem> {
        let url = IssuerUrl::new(issuer.to_owned())
            .map_err(|_| DiscoveryProblem::Invalid("the issuer is not a URL".into()))?;
        let metadata = CoreProviderMetadata::discover_async(url, &self.http)
            .await
            .map_err(discovery_problem)?;
        let allow_loopback = self.http.allow_loopback();
        check_metadata(&metadata, allow_loopback)?;
        // Not fetched now, so judged by where their hosts resolve now: the authorization endpoint
        // is where browsers are sent (never into our network), the token endpoint is judged
        // again by the client at every request.
        let token_endpoint = metadata.token_endpoint().map(|t| t.url());
        for url in std::iter::once(metadata.authorization_endpoint().url()).chain(token_endpoint) {
            vet_url(url, allow_loopback)
                .await
                .map_err(|e| DiscoveryProblem::Unreachable(e.to_string()))?;
        }
        Ok(metadata)
    }

    /// Fetches and checks the issuer's discovery document and keys now, and caches them: what
    /// saving a configuration does.
    pub async fn discover_fresh(
        &self,
        issuer: &str,
        now: OffsetDateTime,
    ) -> Result<(), DiscoveryProblem> {
        let slot = self.slot(issuer);
        let mut entry = slot.lock().await;
        let metadata = match self.fetch(issuer).await {
            Ok(metadata) => metadata,
            Err(problem) => {
                // An issuer that never worked leaves no slot behind (owners may try many).
                if entry.is_none() {
                    self.cache
                        .lock()
                        .expect("provider cache lock")
                        .remove(issuer);
                }
                return Err(problem);
            }
        };
        let keys_generation = entry.as_ref().map_or(0, |d| d.keys_generation + 1);
        *entry = Some(Discovered {
            metadata,
            fetched_at: now,
            keys_generation,
        });
        Ok(())
    }

    /// The issuer's metadata and keys, from the cache while fresh.
    async fn discovered(
        &self,
        issuer: &str,
        now: OffsetDateTime,
    ) -> Result<Discovered, DiscoveryProblem> {
        let slot = self.slot(issuer);
        let mut entry = slot.lock().await;
        if let Some(d) = entry.as_ref() {
            if now - d.fetched_at < DISCOVERY_TTL {
                return Ok(d.clone());
            }
        }
        let metadata = self.fetch(issuer).await?;
        let d = Discovered {
            metadata,
            fetched_at: now,
            keys_generation: entry.as_ref().map_or(0, |d| d.keys_generation + 1),
        };
        *entry = Some(d.clone());
        Ok(d)
    }

    /// Fetches the keys again, unless another sign-in already did since `seen` was read.
    ///
    /// No rate limit is needed: ID tokens reach us only from the provider's token endpoint, in
    /// exchange for a code it issued, so an unknown `kid` cannot be sent by anyone but the provider.
    async fn refresh_keys(
        &self,
        issuer: &str,
        seen: &Discovered,
    ) -> Result<Discovered, DiscoveryProblem> {
        let slot = self.slot(issuer);
        let mut entry = slot.lock().await;
        if let Some(d) = entry.as_ref() {
            if d.keys_generation != seen.keys_generation {
                return Ok(d.clone());
            }
        }
        let keys = CoreJsonWebKeySet::fetch_async(seen.metadata.jwks_uri(), &self.http)
            .await
            .map_err(discovery_problem)?;
        tracing::info!(%issuer, keys = keys.keys().len(), "fetched the provider's signing keys again");
        let d = Discovered {
            metadata: seen.metadata.clone().set_jwks(keys),
            fetched_at: seen.fetched_at,
            keys_generation: seen.keys_generation + 1,
        };
        *entry = Some(d.clone());
        Ok(d)
    }

    /// The URL of the provider's authorization endpoint for a new sign-in: the code flow with
    /// PKCE S256 (RFC 7636), `state`, `nonce`, and scope `openid email profile`. A
    /// re-authentication (`fresh_login`) also asks for `prompt=login` and `max_age=0` (OpenID
    /// Connect Core 1.0 section 3.1.2.1): the person logs in again whatever session they have at
    /// the provider, and the ID token carries `auth_time`.
    pub async fn authorization_url(
        &self,
        rp: RelyingParty<'_>,
        state: &str,
        nonce: &str,
        pkce_challenge: PkceCodeChallenge,
        fresh_login: bool,
        now: OffsetDateTime,
    ) -> Result<url::Url, Refused> {
        let d = self
            .discovered(rp.issuer, now)
            .await
            .map_err(|e| provider_failed(rp.issuer, e))?;
        let redirect = RedirectUrl::new(rp.redirect_uri.to_owned())
            .map_err(|_| Refused::new(Failure::NotConfigured, "bad redirect URI"))?;
        let client = ProviderClient::from_provider_metadata(
            d.metadata,
            ClientId::new(rp.client_id.to_owned()),
            None,
        )
        .set_redirect_uri(redirect);
        let (state, nonce) = (state.to_owned(), nonce.to_owned());
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state),
                move || Nonce::new(nonce),
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(pkce_challenge);
        if fresh_login {
            request = request
                .add_prompt(CoreAuthPrompt::Login)
                .set_max_age(std::time::Duration::ZERO);
        }
        let (url, _, _) = request.url();
        Ok(url)
    }

    /// Exchanges the code (with the PKCE verifier and the client secret, HTTP Basic) and verifies
    /// the ID token: signature with the provider's keys, `iss`, `aud` (and `azp`), `exp` and `iat`
    /// within `CLOCK_SKEW`, and the `nonce` whose hash the sign-in kept.
    pub async fn finish(
        &self,
        rp: RelyingParty<'_>,
        client_secret: &str,
        code: &str,
        pkce_verifier: String,
        nonce_hash: &str,
        now: OffsetDateTime,
    ) -> Result<Identity, Refused> {
        let unreachable = |e: DiscoveryProblem| provider_failed(rp.issuer, e);
        let RelyingParty {
            issuer,
            client_id,
            redirect_uri,
        } = rp;
        let mut d = self.discovered(issuer, now).await.map_err(unreachable)?;
        let redirect = RedirectUrl::new(redirect_uri.to_owned())
            .map_err(|_| Refused::new(Failure::NotConfigured, "bad redirect URI"))?;
        let client = ProviderClient::from_provider_metadata(
            d.metadata.clone(),
            ClientId::new(client_id.to_owned()),
            Some(ClientSecret::new(client_secret.to_owned())),
        )
        .set_auth_type(auth_type(&d.metadata))
        .set_redirect_uri(redirect);
        let request = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| Refused::new(Failure::NotConfigured, e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier));
        let response = request
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(answer) => Refused::new(
                    Failure::TokenExchange,
                    format!("the token endpoint answered {}", answer.error()),
                ),
                RequestTokenError::Request(cause) => {
                    tracing::warn!(%issuer, cause = %error_chain(&cause), "single sign-on: the token endpoint could not be used");
                    Refused::new(Failure::ProviderUnreachable, PROVIDER_REFUSED)
                }
                // Only the path: serde's text may quote the answer, which holds tokens.
                RequestTokenError::Parse(cause, _) => Refused::new(
                    Failure::InvalidToken,
                    format!("unreadable token response at {}", cause.path()),
                ),
                RequestTokenError::Other(what) => Refused::new(Failure::TokenExchange, what),
            })?;
        let id_token = response
            .id_token()
            .ok_or_else(|| Refused::new(Failure::InvalidToken, "no ID token in the answer"))?;

        let mut refreshed = false;
        let claims: IdTokenClaims<ExtraClaims, CoreGenderClaim> = loop {
            let verifier = self.verifier(&d, client_id, now);
            match id_token.claims(&verifier, nonce_matches(nonce_hash)) {
                Ok(claims) => break claims.clone(),
                Err(ClaimsVerificationError::SignatureVerification(
                    SignatureVerificationError::NoMatchingKey,
                )) if !refreshed => {
                    refreshed = true;
                    d = self.refresh_keys(issuer, &d).await.map_err(unreachable)?;
                }
                Err(e) => return Err(refusal(e)),
            }
        };

        // OpenID Connect Core 1.0 section 3.1.3.7 steps 4 and 5. Other audiences than ours are
        // already refused by the verifier (we trust none), so `azp` only has to name us.
        if let Some(azp) = claims.authorized_party() {
            if azp.as_str() != client_id {
                return Err(Refused::new(
                    Failure::WrongAudience,
                    "azp is another client",
                ));
            }
        } else if claims.audiences().len() > 1 {
            return Err(Refused::new(
                Failure::WrongAudience,
                "several audiences and no azp",
            ));
        }
        Ok(Identity {
            sub: claims.subject().as_str().to_owned(),
            email: claims.email().map(|e| e.as_str().to_owned()),
            email_verified: claims.email_verified(),
            xms_edov: claims
                .additional_claims()
                .xms_edov
                .as_ref()
                .map(|v| *v == serde_json::Value::Bool(true)),
            auth_time: claims
                .auth_time()
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t.timestamp()).ok()),
        })
    }

    fn verifier<'a>(
        &self,
        d: &Discovered,
        client_id: &str,
        now: OffsetDateTime,
    ) -> CoreIdTokenVerifier<'a> {
        let algs: Vec<CoreJwsSigningAlgorithm> = d
            .metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .filter(|alg| ALLOWED_ALGS.contains(alg))
            .cloned()
            .collect();
        let (earliest, latest) = (utc(now - MAX_TOKEN_AGE - CLOCK_SKEW), utc(now + CLOCK_SKEW));
        // A public-client verifier: it never accepts a signature made with the client secret.
        CoreIdTokenVerifier::new_public_client(
            ClientId::new(client_id.to_owned()),
            d.metadata.issuer().clone(),
            d.metadata.jwks().clone(),
        )
        .set_allowed_algs(algs)
        // `exp` is checked against this time: moving it back by the skew accepts a token that
        // expired less than CLOCK_SKEW ago by our clock.
        .set_time_fn(move || utc(now - CLOCK_SKEW))
        .set_issue_time_verifier_fn(move |iat| {
            if iat > latest {
                Err("issued in the future".into())
            } else if iat < earliest {
                Err("issued too long ago".into())
            } else {
                Ok(())
            }
        })
    }
}

/// How the client secret goes to the token endpoint: HTTP Basic, the default when the provider does
/// not say (OpenID Connect Discovery 1.0 section 3), unless it lists only `client_secret_post`.
fn auth_type(md: &CoreProviderMetadata) -> AuthType {
    match md.token_endpoint_auth_methods_supported() {
        Some(methods)
            if methods.contains(&CoreClientAuthMethod::ClientSecretPost)
                && !methods.contains(&CoreClientAuthMethod::ClientSecretBasic) =>
        {
            AuthType::RequestBody
        }
        _ => AuthType::BasicAuth,
    }
}

/// The nonce check against the hash kept at start, in constant time.
fn nonce_matches(nonce_hash: &str) -> impl FnOnce(Option<&Nonce>) -> Result<(), String> + '_ {
    move |nonce| match nonce {
        Some(n)
            if ct_eq(
                sha256_hex(n.secret().as_bytes()).as_bytes(),
                nonce_hash.as_bytes(),
            ) =>
        {
            Ok(())
        }
        Some(_) => Err("nonce mismatch".into()),
        None => Err("no nonce".into()),
    }
}

fn refusal(e: ClaimsVerificationError) -> Refused {
    let failure = match &e {
        ClaimsVerificationError::InvalidIssuer(_) => Failure::WrongIssuer,
        ClaimsVerificationError::InvalidAudience(_) => Failure::WrongAudience,
        ClaimsVerificationError::Expired(_) => Failure::TokenExpired,
        ClaimsVerificationError::InvalidNonce(_) => Failure::WrongNonce,
        ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey,
        ) => Failure::UnknownKey,
        _ => Failure::InvalidToken,
    };
    let cause = match &e {
        ClaimsVerificationError::SignatureVerification(inner) => format!("signature: {inner}"),
        other => other.to_string(),
    };
    Refused::new(failure, cause)
}

/// A fresh PKCE pair (RFC 7636, S256): the challenge for the authorization request, the verifier
/// (in plain) for the token request.
pub fn pkce_pair() -> (PkceCodeChallenge, String) {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    (challenge, verifier.into_secret())
}
