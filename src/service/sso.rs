//! Single sign-on to the console (CONTRACT.md section 11): the owner's provider settings, the start
//! of a sign-in, and the callback that ends it with a console session, or with a reason and no
//! session. A start with `?reauth=1` re-authenticates the console session that asks instead
//! (issue 12): the callback then opens that session's reauth window and makes no new one. Links,
//! creations and sign-ins go to the audit log; refusals as `sso_guard.rs` says.
//!
//! SSO proves who signs in; it makes an ordinary console session, so revealing the SCIM token still
//! needs the phone.

use serde_json::json;
use time::Duration;

use super::accounts::{valid_email, SignedIn};
use super::sso_guard::{store_failed, Trail};
use super::{Caller, ConsoleSession};
use crate::app::App;
use crate::domain::audit::Kind;
use crate::domain::crypto::{ct_eq, random_b64url, sha256_hex, Secret};
use crate::domain::password;
use crate::domain::sso::{
    check_issuer, domain_allowed, email_vouched, for_reauth, fresh_login, map_identity,
    normalize_domain, EmailMatch, Failure, Mapping,
};
use crate::error::{ApiError, ApiResult};
use crate::oidc::{pkce_pair, Identity, Refused, RelyingParty, CLOCK_SKEW, PROVIDER_REFUSED};
use crate::service::audit::Audit;
use crate::store::sso::{PendingSignIn, SsoConfig, Taken};
use crate::store::{Role, StoreError, User, Workspace};

/// How long a started sign-in may take at the provider.
pub const PENDING_TTL: Duration = Duration::minutes(10);
/// How long a sign-in is kept after it expired or was used: a late or replayed callback is then
/// told `expired` or logged as a replay in its workspace, rather than met as an unknown state.
const PENDING_KEPT: Duration = Duration::hours(1);
/// Sign-ins one address may start to one workspace in the counting window (`LOGIN_WINDOW`, 15
/// minutes): far beyond a person's, far below a flood's.
pub const SSO_STARTS_PER_WINDOW: u32 = 60;
/// Most domains one workspace lists.
const MAX_DOMAINS: usize = 100;

/// What the owner sends to `PUT /v1/console/sso`.
#[derive(Debug)]
pub struct SsoSettings {
    pub issuer: String,
    pub client_id: String,
    /// May be left out to keep the stored one, as long as the issuer and client id stay the same.
    pub client_secret: Option<Secret>,
    pub allowed_email_domains: Vec<String>,
    pub default_role: Role,
    pub enforce: bool,
}

/// What a start is for. Its `Debug` never shows the session cookie.
#[derive(Clone, Copy)]
pub enum StartFor<'a> {
    SignIn,
    /// `?reauth=1`: re-authenticate the console session whose cookie the request carried, if any.
    Reauth {
        session_cookie: Option<&'a str>,
    },
}

impl std::fmt::Debug for StartFor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartFor::SignIn => f.write_str("SignIn"),
            StartFor::Reauth { session_cookie } => f
                .debug_struct("Reauth")
                .field("session_cookie", &session_cookie.map(|_| "<redacted>"))
                .finish(),
        }
    }
}

/// A started sign-in: where to send the browser, and the binding its cookie must carry back.
pub struct SsoStarted {
    pub location: String,
    pub binding: Secret,
}

/// How a callback ended well.
pub enum SsoFinished {
    /// A new console session.
    SignedIn(SignedIn),
    /// The session the sign-in was started for is re-authenticated; no new session.
    Reauthenticated,
}

/// The query of `/v1/sso/callback`. Its `Debug` never shows the authorization code or the
/// state (either, with the binding cookie, finishes somebody's sign-in).
#[derive(Default)]
pub struct CallbackParams {
    pub state: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
    /// RFC 9207: the issuer of the authorization response, when the provider sends it.
    pub iss: Option<String>,
}

impl std::fmt::Debug for CallbackParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("CallbackParams")
            .field("state", &hidden(&self.state))
            .field("code", &hidden(&self.code))
            .field("error", &self.error)
            .field("iss", &self.iss)
            .finish()
    }
}

/// Associated data binding a sealed client secret to its workspace (as `token_context` does for
/// the SCIM token).
pub(super) fn secret_context(workspace_slug: &str) -> Vec<u8> {
    format!("sso-client-secret:{workspace_slug}").into_bytes()
}

/// Associated data binding a sealed PKCE verifier to its sign-in.
pub(super) fn pkce_context(state_hash: &str) -> Vec<u8> {
    format!("sso-pkce:{state_hash}").into_bytes()
}

/// A binding cookie value this server could have made (32 random bytes, base64url).
fn well_formed_binding(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A provider's error code, reduced to what may be written to the audit log.
fn error_code(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .take(64)
        .collect()
}

fn session_failed(e: ApiError) -> Refused {
    tracing::error!(error = %e, "single sign-on: could not make the session");
    Refused::new(Failure::Unavailable, "could not make the session")
}

impl App {
    /// The redirect URI to register at the provider.
    pub fn sso_redirect_uri(&self) -> String {
        format!("{}/v1/sso/callback", self.config.public_url)
    }

    /// Whether password sign-in is refused (for everyone but owners) in this workspace.
    pub async fn sso_enforced(&self, workspace_id: i64) -> ApiResult<bool> {
        Ok(self
            .sso
            .config(workspace_id)
            .await?
            .is_some_and(|c| c.enforce))
    }

    /// The workspace's provider, for admins and owners; 404 when there is none.
    pub async fn sso_settings(&self, session: &ConsoleSession) -> ApiResult<SsoConfig> {
        if session.user.role < Role::Admin {
            return Err(ApiError::Forbidden(
                "only owners and admins may read the single sign-on settings",
            ));
        }
        self.sso
            .config(session.workspace.id)
            .await?
            .ok_or(ApiError::NotFound)
    }

    /// Saves the workspace's provider after fetching and checking its discovery document and keys.
    pub async fn put_sso_settings(
        &self,
        session: &ConsoleSession,
        settings: SsoSettings,
        caller: &Caller,
    ) -> ApiResult<SsoConfig> {
        if session.user.role != Role::Owner {
            return Err(ApiError::Forbidden(
                "only owners may change the single sign-on settings",
            ));
        }
        // Another provider signs people in (as admins, with `default_role`): not for a stolen
        // session cookie alone (issue 16; the rule of a first phone, issue 12).
        self.require_fresh_authentication(session)?;
        let issuer = settings.issuer.trim().to_owned();
        check_issuer(&issuer).map_err(|why| ApiError::BadRequest(why.into()))?;
        let client_id = settings.client_id.trim().to_owned();
        if client_id.is_empty() || client_id.len() > 255 || client_id.chars().any(char::is_control)
        {
            return Err(ApiError::BadRequest(
                "client_id must be 1-255 printable characters".into(),
            ));
        }
        if settings.default_role == Role::Owner {
            return Err(ApiError::BadRequest(
                "default_role must be member or admin: owners are made by owners".into(),
            ));
        }
        if settings.allowed_email_domains.len() > MAX_DOMAINS {
            return Err(ApiError::BadRequest(format!(
                "at most {MAX_DOMAINS} allowed_email_domains"
            )));
        }
        let mut domains: Vec<String> = Vec::new();
        for given in &settings.allowed_email_domains {
            let domain = normalize_domain(given).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "allowed_email_domains: {:?} is not a domain name",
                    given.chars().take(100).collect::<String>()
                ))
            })?;
            if !domains.contains(&domain) {
                domains.push(domain);
            }
        }

        let workspace = &session.workspace;
        let previous = self.sso.config(workspace.id).await?;
        let secret_given = settings
            .client_secret
            .as_ref()
            .filter(|s| !s.expose().is_empty());
        let client_secret = match (secret_given, &previous) {
            (Some(secret), _) => {
                if secret.expose().len() > 1024 {
                    return Err(ApiError::BadRequest(
                        "client_secret is longer than 1024 characters".into(),
                    ));
                }
                self.keyring
                    .seal(secret.expose().as_bytes(), &secret_context(&workspace.slug))
            }
            // Keeping the stored secret is only for the same client at the same issuer: a secret
            // is never sent to a provider it was not given for.
            (None, Some(p)) if p.issuer == issuer && p.client_id == client_id => {
                p.client_secret.clone()
            }
            (None, _) => {
                return Err(ApiError::BadRequest(
                    "client_secret is required (it may be left out only to keep the one saved for the same issuer and client_id)".into(),
                ))
            }
        };

        if let Err(problem) = self.oidc.discover_fresh(&issuer, self.now()).await {
            // The cause for the log only: the owner's answer must not tell what answered where.
            tracing::info!(%issuer, %problem, "single sign-on settings refused");
            return Err(ApiError::BadRequest(PROVIDER_REFUSED.into()));
        }

        let config = SsoConfig {
            workspace_id: workspace.id,
            issuer,
            client_id,
            client_secret,
            allowed_email_domains: domains,
            default_role: settings.default_role,
            enforce: settings.enforce,
            updated_at: self.now(),
            updated_by: session.user.email.clone(),
        };
        self.sso.put_config(&config).await?;
        // Enforcing ends the password sessions it would now refuse: every non-owner signs in again
        // (through the provider). Sessions do not record how they began, so SSO ones end too.
        let was_enforced = previous.as_ref().is_some_and(|p| p.enforce);
        let sessions_ended = if config.enforce && !was_enforced {
            self.store.end_sessions_but_owners(workspace.id).await?
        } else {
            0
        };
        self.note(
            Audit::new(Kind::SsoConfigured)
                .workspace(workspace.id)
                .actor(&session.user.email)
                .ip(&caller.ip)
                .detail(json!({
                    "issuer": config.issuer,
                    "client_id": config.client_id,
                    "allowed_email_domains": config.allowed_email_domains,
                    "default_role": config.default_role.as_str(),
                    "enforce": config.enforce,
                    "client_secret_changed": secret_given.is_some(),
                    "sessions_ended": sessions_ended,
                })),
        )
        .await;
        Ok(config)
    }

    /// Starts a sign-in to `slug` through its provider, or the re-authentication of a console
    /// session there. `binding` is the browser's binding cookie, kept when it has one (two tabs
    /// signing in at once both finish).
    pub async fn sso_start(
        &self,
        slug: &str,
        binding: Option<&str>,
        purpose: StartFor<'_>,
        caller: &Caller,
    ) -> Result<SsoStarted, Failure> {
        let mut trail = Trail {
            reauth: matches!(purpose, StartFor::Reauth { .. }),
            ..Trail::default()
        };
        let result = self
            .start_inner(slug, binding, purpose, caller, &mut trail)
            .await;
        if let Err(refused) = &result {
            self.sso_refused(&trail, refused, caller).await;
        }
        result.map_err(|r| r.failure)
    }

    async fn start_inner(
        &self,
        slug: &str,
        binding: Option<&str>,
        purpose: StartFor<'_>,
        caller: &Caller,
        trail: &mut Trail,
    ) -> Result<SsoStarted, Refused> {
        let now = self.now();
        // Before anything is read or written: a flood from one address stops here.
        self.sso_address_throttle("start", caller).await?;
        let workspace = self
            .store
            .workspace_by_slug(slug)
            .await
            .map_err(store_failed)?
            .ok_or_else(|| Refused::new(Failure::NotConfigured, "no such workspace"))?;
        trail.workspace_id = Some(workspace.id);
        let config = self
            .sso
            .config(workspace.id)
            .await
            .map_err(store_failed)?
            .ok_or_else(|| Refused::new(Failure::NotConfigured, "no single sign-on settings"))?;
        trail.issuer = Some(config.issuer.clone());
        // Each start stores a pending sign-in: one address may not pile them up for a workspace.
        let starts = self
            .challenges
            .login_failed(&format!("sso-start:{}:{}", workspace.id, caller.ip), now)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "single sign-on: the start counter is unavailable");
                Refused::new(Failure::Unavailable, "start counter unavailable")
            })?;
        if starts > SSO_STARTS_PER_WINDOW {
            // The first refusal of the window is audited; a flood after it must not fill the log.
            trail.quiet = starts > SSO_STARTS_PER_WINDOW + 1;
            return Err(Refused::new(
                Failure::RateLimited,
                "too many sign-ins started from this address",
            ));
        }
        // The session a re-authentication is for: a live console session of this very workspace.
        let reauth_session = match purpose {
            StartFor::SignIn => None,
            StartFor::Reauth { session_cookie } => {
                let session = match session_cookie {
                    Some(cookie) => self.session_of(cookie, false).await.map_err(|e| {
                        tracing::error!(error = %e, "single sign-on: cannot read the session");
                        Refused::new(Failure::Unavailable, "cannot read the session")
                    })?,
                    None => None,
                };
                let session = session
                    .filter(|s| s.workspace.id == workspace.id)
                    .ok_or_else(|| {
                        Refused::new(
                            Failure::NoSession,
                            "a re-authentication without a console session of this workspace",
                        )
                    })?;
                trail.actor = Some(session.user.email.clone());
                Some(session)
            }
        };
        self.sso
            .prune_pending(now - PENDING_KEPT)
            .await
            .map_err(store_failed)?;

        let state = random_b64url::<32>();
        let nonce = random_b64url::<32>();
        let binding = match binding.filter(|b| well_formed_binding(b)) {
            Some(b) => Secret::new(b.to_owned()),
            None => Secret::new(random_b64url::<32>()),
        };
        let (challenge, verifier) = pkce_pair();
        let location = self
            .oidc
            .authorization_url(
                RelyingParty {
                    issuer: &config.issuer,
                    client_id: &config.client_id,
                    redirect_uri: &self.sso_redirect_uri(),
                },
                &state,
                &nonce,
                challenge,
                reauth_session.is_some(),
                now,
            )
            .await?;
        let state_hash = sha256_hex(state.as_bytes());
        let pending = PendingSignIn {
            pkce_verifier: self
                .keyring
                .seal(verifier.as_bytes(), &pkce_context(&state_hash)),
            state_hash,
            workspace_id: workspace.id,
            issuer: config.issuer,
            nonce_hash: sha256_hex(nonce.as_bytes()),
            binding_hash: sha256_hex(binding.expose().as_bytes()),
            reauth_session_hash: reauth_session.map(|s| s.id_hash),
            created_at: now,
            expires_at: now + PENDING_TTL,
        };
        self.sso
            .create_pending(&pending)
            .await
            .map_err(store_failed)?;
        Ok(SsoStarted {
            location: location.to_string(),
            binding,
        })
    }

    /// Ends a sign-in: checks the state (known, unused, started in this browser, in time), takes
    /// the provider's answer, exchanges the code, verifies the ID token and maps it to a member;
    /// for a re-authentication, also that the login is fresh and is the session's own person.
    pub async fn sso_callback(
        &self,
        params: CallbackParams,
        binding: Option<&str>,
        caller: &Caller,
    ) -> Result<SsoFinished, Failure> {
        let mut trail = Trail::default();
        match self
            .callback_inner(params, binding, caller, &mut trail)
            .await
        {
            Ok((SsoFinished::SignedIn(signed_in), sub)) => {
                self.note(
                    Audit::new(Kind::SsoLoginSucceeded)
                        .workspace(signed_in.workspace.id)
                        .actor(&signed_in.user.email)
                        .ip(&caller.ip)
                        .detail(json!({"issuer": trail.issuer, "sub": sub, "user_agent": caller.user_agent}))
                )
                .await;
                Ok(SsoFinished::SignedIn(signed_in))
            }
            // `session_reauthenticated` wrote its audit entry.
            Ok((SsoFinished::Reauthenticated, _)) => Ok(SsoFinished::Reauthenticated),
            Err(refused) => {
                self.sso_refused(&trail, &refused, caller).await;
                Err(refused.failure)
            }
        }
    }

    async fn callback_inner(
        &self,
        params: CallbackParams,
        binding: Option<&str>,
        caller: &Caller,
        trail: &mut Trail,
    ) -> Result<(SsoFinished, String), Refused> {
        let now = self.now();
        self.sso_address_throttle("callback", caller).await?;
        let state = params
            .state
            .filter(|s| !s.is_empty() && s.len() <= 512)
            .ok_or_else(|| Refused::new(Failure::InvalidState, "no state"))?;
        let state_hash = sha256_hex(state.as_bytes());
        // Taken (marked used) before anything else is looked at: whatever follows, this state
        // never works again.
        let pending = match self
            .sso
            .take_pending(&state_hash, now)
            .await
            .map_err(store_failed)?
        {
            Taken::Fresh(pending) => pending,
            Taken::Replayed(pending) => {
                trail.workspace_id = Some(pending.workspace_id);
                trail.issuer = Some(pending.issuer);
                return Err(Refused::new(
                    Failure::InvalidState,
                    "a replay of a used state",
                ));
            }
            // Forged, or pruned long ago: no workspace to log it in but the deployment's.
            Taken::Unknown => {
                return Err(Refused::new(Failure::InvalidState, "an unknown state"));
            }
        };
        trail.workspace_id = Some(pending.workspace_id);
        trail.issuer = Some(pending.issuer.clone());
        trail.reauth = pending.reauth_session_hash.is_some();
        let same_browser = binding.is_some_and(|b| {
            ct_eq(
                sha256_hex(b.as_bytes()).as_bytes(),
                pending.binding_hash.as_bytes(),
            )
        });
        if !same_browser {
            return Err(Refused::new(
                Failure::InvalidState,
                "the sign-in was started in another browser",
            ));
        }
        if now >= pending.expires_at {
            return Err(Refused::new(Failure::Expired, "the sign-in took too long"));
        }
        if let Some(error) = params.error {
            return Err(Refused::new(
                Failure::ProviderError,
                format!("the provider answered {}", error_code(&error)),
            ));
        }
        if params
            .iss
            .as_deref()
            .is_some_and(|iss| iss != pending.issuer)
        {
            return Err(Refused::new(
                Failure::WrongIssuer,
                "the authorization response names another issuer",
            ));
        }
        let code = params
            .code
            .filter(|c| !c.is_empty() && c.len() <= 4096)
            .ok_or_else(|| Refused::new(Failure::ProviderError, "no code and no error"))?;

        let config = self
            .sso
            .config(pending.workspace_id)
            .await
            .map_err(store_failed)?
            .filter(|c| c.issuer == pending.issuer)
            .ok_or_else(|| {
                Refused::new(
                    Failure::NotConfigured,
                    "the provider changed during sign-in",
                )
            })?;
        let workspace = self
            .store
            .workspace_by_id(pending.workspace_id)
            .await
            .map_err(store_failed)?
            .ok_or_else(|| Refused::new(Failure::NotConfigured, "no such workspace"))?;
        let secret = self
            .keyring
            .open(&config.client_secret, &secret_context(&workspace.slug))
            .map_err(|e| {
                tracing::error!(workspace = %workspace.slug, error = %e, "cannot open the SSO client secret");
                Refused::new(Failure::Unavailable, "cannot open the client secret")
            })?;
        let secret = Secret::new(String::from_utf8(secret.to_vec()).unwrap_or_default());
        let verifier = self
            .keyring
            .open(&pending.pkce_verifier, &pkce_context(&state_hash))
            .map_err(|e| {
                tracing::error!(error = %e, "cannot open a PKCE verifier");
                Refused::new(Failure::Unavailable, "cannot open the PKCE verifier")
            })?;
        let verifier = String::from_utf8(verifier.to_vec()).unwrap_or_default();

        let identity = self
            .oidc
            .finish(
                RelyingParty {
                    issuer: &config.issuer,
                    client_id: &config.client_id,
                    redirect_uri: &self.sso_redirect_uri(),
                },
                secret.expose(),
                &code,
                verifier,
                &pending.nonce_hash,
                now,
            )
            .await?;
        let email = identity
            .email
            .clone()
            .ok_or_else(|| Refused::new(Failure::EmailMissing, "the ID token has no email"))?;
        trail.actor = Some(email.clone());
        if !email_vouched(identity.email_verified, identity.xms_edov) {
            return Err(Refused::new(
                Failure::EmailNotVerified,
                "the ID token says neither email_verified: true nor (without email_verified) xms_edov: true",
            ));
        }
        if !valid_email(&email) {
            return Err(Refused::new(
                Failure::InvalidToken,
                "the ID token's email is not an address",
            ));
        }
        if let Some(session_hash) = &pending.reauth_session_hash {
            self.finish_reauth(
                session_hash,
                &pending,
                &workspace,
                &config,
                &identity,
                &email,
                caller,
                now,
            )
            .await?;
            return Ok((SsoFinished::Reauthenticated, identity.sub));
        }
        let user = self
            .sso_member(&workspace, &config, &identity, &email, None)
            .await?;
        trail.actor = Some(user.email.clone());
        let session_id = self
            .start_session(&user, crate::store::AuthMethod::Sso)
            .await
            .map_err(session_failed)?;
        Ok((
            SsoFinished::SignedIn(SignedIn {
                session_id,
                user,
                workspace,
            }),
            identity.sub,
        ))
    }

    /// The end of a re-authentication, after every check a sign-in makes: the login happened for
    /// it (`auth_time`), the session still lives, and the person is the session's own; then that
    /// session's reauth window opens.
    #[allow(clippy::too_many_arguments)]
    async fn finish_reauth(
        &self,
        session_hash: &str,
        pending: &PendingSignIn,
        workspace: &Workspace,
        config: &SsoConfig,
        identity: &Identity,
        email: &str,
        caller: &Caller,
        now: time::OffsetDateTime,
    ) -> Result<(), Refused> {
        if !fresh_login(identity.auth_time, pending.created_at, now, CLOCK_SKEW) {
            return Err(Refused::new(
                Failure::LoginNotFresh,
                match identity.auth_time {
                    None => "the ID token has no auth_time",
                    Some(_) => {
                        "the ID token's auth_time is not a login made for this re-authentication"
                    }
                },
            ));
        }
        let session = self
            .session_by_hash(session_hash)
            .await
            .map_err(session_failed)?
            .filter(|s| s.workspace.id == workspace.id)
            .ok_or_else(|| {
                Refused::new(
                    Failure::NoSession,
                    "the session ended during re-authentication",
                )
            })?;
        self.sso_member(workspace, config, identity, email, Some(session.user.id))
            .await?;
        self.session_reauthenticated(&session, "sso", caller)
            .await
            .map_err(|e| match e {
                ApiError::Unauthorized => Refused::new(
                    Failure::NoSession,
                    "the session ended during re-authentication",
                ),
                other => session_failed(other),
            })
    }

    /// The member a verified identity signs in as (`domain::sso::map_identity`), linking or
    /// creating as the rule says; for a re-authentication (`reauth_of`, the session's member),
    /// that member only (`domain::sso::for_reauth`). A second pass covers a first sign-in racing
    /// another.
    async fn sso_member(
        &self,
        workspace: &Workspace,
        config: &SsoConfig,
        identity: &Identity,
        email: &str,
        reauth_of: Option<i64>,
    ) -> Result<User, Refused> {
        let issuer = &config.issuer;
        for _ in 0..2 {
            let now = self.now();
            let linked = self
                .sso
                .linked_user(workspace.id, issuer, &identity.sub)
                .await
                .map_err(store_failed)?;
            let member = self
                .store
                .user_by_email(workspace.id, email)
                .await
                .map_err(store_failed)?;
            let by_email = match &member {
                Some(u) => Some(EmailMatch {
                    user_id: u.id,
                    linked_to_other: self
                        .sso
                        .link_of_user(u.id, issuer)
                        .await
                        .map_err(store_failed)?
                        .is_some_and(|sub| sub != identity.sub),
                }),
                None => None,
            };
            let allowed = domain_allowed(email, &config.allowed_email_domains);
            let mapping = map_identity(linked, by_email, allowed);
            let mapping = match reauth_of {
                Some(session_user) => for_reauth(mapping, session_user),
                None => mapping,
            };
            match mapping {
                Mapping::SignIn { user_id } => {
                    let user = self.store.user_by_id(user_id).await.map_err(store_failed)?;
                    if let Some(user) = user.filter(|u| u.workspace_id == workspace.id) {
                        return Ok(user);
                    }
                }
                Mapping::LinkAndSignIn { user_id } => {
                    let Some(user) = member.filter(|u| u.id == user_id) else {
                        continue;
                    };
                    match self
                        .sso
                        .link(workspace.id, issuer, &identity.sub, user.id, now)
                        .await
                    {
                        Ok(()) => {
                            self.audit_link(
                                workspace,
                                issuer,
                                &identity.sub,
                                &user,
                                Kind::SsoLinked,
                            )
                            .await;
                            return Ok(user);
                        }
                        Err(StoreError::Conflict) => continue,
                        Err(e) => return Err(store_failed(e)),
                    }
                }
                Mapping::Create => {
                    // Never used: SSO members sign in through the provider. A real Argon2 hash
                    // keeps a password attempt on them as slow as on anyone.
                    let unusable = self.hasher.hash(Secret::new(password::generate())).await;
                    let role = config.default_role;
                    match self
                        .store
                        .create_user(workspace.id, email, role, &unusable, now)
                        .await
                    {
                        Ok(user) => {
                            match self
                                .sso
                                .link(workspace.id, issuer, &identity.sub, user.id, now)
                                .await
                            {
                                Ok(()) | Err(StoreError::Conflict) => {}
                                Err(e) => return Err(store_failed(e)),
                            }
                            self.audit_link(
                                workspace,
                                issuer,
                                &identity.sub,
                                &user,
                                Kind::SsoMemberCreated,
                            )
                            .await;
                            return Ok(user);
                        }
                        Err(StoreError::Conflict) => continue,
                        Err(e) => return Err(store_failed(e)),
                    }
                }
                Mapping::Refuse(failure) => {
                    let cause = match failure {
                        Failure::DomainNotAllowed => {
                            "no member has this e-mail and its domain may not join"
                        }
                        Failure::LinkedElsewhere => {
                            "the member with this e-mail is linked to another subject"
                        }
                        Failure::WrongPerson => {
                            "someone other than the session's person signed in at the provider"
                        }
                        _ => "refused",
                    };
                    return Err(Refused::new(failure, cause));
                }
            }
        }
        Err(Refused::new(
            Failure::Unavailable,
            "the member changed during sign-in",
        ))
    }

    async fn audit_link(
        &self,
        workspace: &Workspace,
        issuer: &str,
        sub: &str,
        user: &User,
        kind: Kind,
    ) {
        self.note(
            Audit::new(kind)
                .workspace(workspace.id)
                .actor(&user.email)
                .detail(json!({"issuer": issuer, "sub": sub, "role": user.role.as_str()})),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_cookie_the_code_or_the_state() {
        let start = StartFor::Reauth {
            session_cookie: Some("live-session-id-123"),
        };
        let shown = format!("{start:?}");
        assert!(!shown.contains("live-session-id-123"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
        let params = CallbackParams {
            state: Some("state-value-456".into()),
            code: Some("auth-code-789".into()),
            error: None,
            iss: Some("https://issuer.example".into()),
        };
        let shown = format!("{params:?}");
        for secret in ["state-value-456", "auth-code-789"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("issuer.example"), "{shown}");
    }

    #[test]
    fn binding_values_are_checked_before_reuse() {
        assert!(well_formed_binding(&random_b64url::<32>()));
        assert!(!well_formed_binding("short"));
        assert!(!well_formed_binding(&"a".repeat(42)));
        assert!(!well_formed_binding(&format!("{};x", "a".repeat(41))));
    }

    #[test]
    fn provider_error_codes_are_reduced_to_safe_characters() {
        assert_eq!(error_code("access_denied"), "access_denied");
        assert_eq!(
            error_code("<script>alert(1)</script>"),
            "scriptalert1script"
        );
        assert_eq!(error_code(&"x".repeat(200)).len(), 64);
    }
}
