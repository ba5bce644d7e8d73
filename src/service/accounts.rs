//! Workspaces, console users, password sign-in with throttling, and server-side sessions.

use serde_json::json;
use time::{Duration, OffsetDateTime};

use super::{Caller, ConsoleSession};
use crate::app::App;
use crate::domain::audit::Kind;
use crate::domain::crypto::{random_b64url, sha256_hex, Secret};
use crate::domain::password;
use crate::domain::policy::STAFF_REALM;
use crate::error::{ApiError, ApiResult};
use crate::service::audit::Audit;
use crate::store::{AuthMethod, Role, Session, StoreError, User, Workspace};

/// Failures one address may have against one account in the window before sign-in slows down
/// for that address (and only that one: the owner still signs in from her own).
pub const ACCOUNT_FREE_FAILURES: u32 = 5;
/// Failures an account may have from all addresses together before it slows down for everyone: a
/// ceiling only a distributed attack reaches (and it is audited when it is).
pub const ACCOUNT_CEILING_FAILURES: u32 = 100;
/// Failures one IP address may have (across accounts) before it slows down.
pub const IP_FREE_FAILURES: u32 = 20;
/// Longest wait imposed after repeated failures.
pub const MAX_BACKOFF_SECS: i64 = 15 * 60;

pub fn valid_slug(slug: &str) -> bool {
    (1..=63).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-')
}

pub fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return false;
    };
    email.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Seconds still to wait after `failures` failures, the last at `last`, when `free` are allowed.
fn backoff(
    failures: u32,
    free: u32,
    last: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Option<u64> {
    let excess = failures.checked_sub(free)?;
    let wait = Duration::seconds((1i64 << excess.min(20)).min(MAX_BACKOFF_SECS));
    let until = last? + wait;
    (until > now).then(|| (until - now).whole_seconds().max(1) as u64)
}

/// The counters a password check is throttled by (in the challenge store, so across instances).
struct ThrottleKeys {
    /// This account from this address: the one that slows down first.
    pair: String,
    /// This account from anywhere: a high ceiling.
    account: String,
    /// This address against any account.
    ip: String,
}

impl ThrottleKeys {
    fn new(slug: &str, email: &str, ip: &str) -> Self {
        let account = format!("login:acct:{}:{}", slug, email.to_lowercase());
        Self {
            pair: format!("{account}:{ip}"),
            account,
            ip: format!("login:ip:{ip}"),
        }
    }
}

/// What signing in hands back: the cookie value (only here, in plain) and who signed in.
pub struct SignedIn {
    pub session_id: Secret,
    pub user: User,
    pub workspace: Workspace,
}

impl App {
    pub async fn create_workspace(
        &self,
        slug: &str,
        name: &str,
        owner_email: &str,
    ) -> ApiResult<(Workspace, Secret)> {
        if !valid_slug(slug) {
            return Err(ApiError::BadRequest(
                "slug must be 1-63 of a-z, 0-9 and '-'".into(),
            ));
        }
        if name.trim().is_empty() || name.len() > 200 {
            return Err(ApiError::BadRequest("name must be 1-200 characters".into()));
        }
        if !valid_email(owner_email) {
            return Err(ApiError::BadRequest(
                "owner e-mail is not a valid address".into(),
            ));
        }
        let password = Secret::new(password::generate());
        let hash = self.hasher.hash(password.clone()).await;
        let token = self.mint_token(0, slug, owner_email);
        let workspace = match self
            .store
            .create_workspace(slug, name.trim(), owner_email, &hash, token, self.now())
            .await
        {
            Err(StoreError::Conflict) => {
                return Err(ApiError::Conflict(format!(
                    "workspace {slug} already exists"
                )))
            }
            other => other?,
        };
        self.note(
            Audit::new(Kind::WorkspaceCreated)
                .workspace(workspace.id)
                .actor(owner_email)
                .detail(json!({"slug": slug})),
        )
        .await;
        Ok((workspace, password))
    }

    pub async fn add_member(
        &self,
        slug: &str,
        email: &str,
        role: Role,
    ) -> ApiResult<(User, Secret)> {
        // Staff are made by `add_staff`, never as members of their realm.
        let workspace = self
            .store
            .workspace_by_slug(slug)
            .await?
            .filter(|w| w.slug != STAFF_REALM)
            .ok_or(ApiError::NotFound)?;
        if !valid_email(email) {
            return Err(ApiError::BadRequest("e-mail is not a valid address".into()));
        }
        let password = Secret::new(password::generate());
        let hash = self.hasher.hash(password.clone()).await;
        let user = match self
            .store
            .create_user(workspace.id, email, role, &hash, self.now())
            .await
        {
            Err(StoreError::Conflict) => {
                return Err(ApiError::Conflict(format!(
                    "{email} is already a member of {slug}"
                )))
            }
            other => other?,
        };
        self.note(
            Audit::new(Kind::MemberAdded)
                .workspace(workspace.id)
                .actor(email)
                .detail(json!({"role": role.as_str()})),
        )
        .await;
        Ok((user, password))
    }

    /// A support staff member (CONTRACT.md section 8): an operator of the deployment, in the staff
    /// realm, never a member of a workspace. The one-time password is returned once.
    pub async fn add_staff(&self, email: &str) -> ApiResult<(User, Secret)> {
        let realm = self.staff_realm().await?;
        if !valid_email(email) {
            return Err(ApiError::BadRequest("e-mail is not a valid address".into()));
        }
        let password = Secret::new(password::generate());
        let hash = self.hasher.hash(password.clone()).await;
        let user = match self
            .store
            .create_user(realm.id, email, Role::Admin, &hash, self.now())
            .await
        {
            Err(StoreError::Conflict) => {
                return Err(ApiError::Conflict(format!("{email} is already staff")))
            }
            other => other?,
        };
        self.note(
            Audit::new(Kind::StaffAdded)
                .workspace(realm.id)
                .actor(email),
        )
        .await;
        Ok((user, password))
    }

    /// Removes a staff member at once: their sessions end, their phones are unenrolled.
    pub async fn remove_staff(&self, email: &str) -> ApiResult<()> {
        let realm = self.staff_realm().await?;
        let user = self
            .store
            .user_by_email(realm.id, email)
            .await?
            .ok_or(ApiError::NotFound)?;
        self.store.delete_user(user.id).await?;
        self.note(
            Audit::new(Kind::StaffRemoved)
                .workspace(realm.id)
                .actor(&user.email),
        )
        .await;
        Ok(())
    }

    pub async fn list_staff(&self) -> ApiResult<Vec<User>> {
        let realm = self.staff_realm().await?;
        Ok(self.store.users_with_role(realm.id, Role::Member).await?)
    }

    pub async fn staff_realm(&self) -> ApiResult<Workspace> {
        self.store
            .workspace_by_slug(STAFF_REALM)
            .await?
            .ok_or_else(|| {
                tracing::error!("the staff realm is missing: migration 0005 did not run");
                ApiError::Internal
            })
    }

    /// On the very first start, a `demo` workspace so the first command leads somewhere.
    pub async fn ensure_first_workspace(&self) -> ApiResult<Option<(Workspace, String, Secret)>> {
        if self.store.count_workspaces().await? > 0 {
            return Ok(None);
        }
        let email = "owner@demo.test";
        match self.create_workspace("demo", "Demo workspace", email).await {
            Ok((workspace, password)) => Ok(Some((workspace, email.to_owned(), password))),
            // Another process created it at the same moment.
            Err(ApiError::Conflict(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// 429 while `key` has had more than `free` failures lately (`what` failed too often).
    pub(super) async fn throttled(&self, key: &str, free: u32, what: &str) -> ApiResult<()> {
        let now = self.now();
        let (failures, last) = self.challenges.login_failures(key, now).await?;
        if let Some(wait) = backoff(failures, free, last, now) {
            return Err(ApiError::TooManyRequests {
                detail: format!("too many failed {what}; wait before trying again"),
                retry_after_secs: wait,
            });
        }
        Ok(())
    }

    /// Refuses a password check while any of the three counters is past its allowance.
    async fn check_throttles(&self, keys: &ThrottleKeys) -> ApiResult<()> {
        self.throttled(&keys.pair, ACCOUNT_FREE_FAILURES, "sign-ins")
            .await?;
        self.throttled(&keys.ip, IP_FREE_FAILURES, "sign-ins")
            .await?;
        self.throttled(&keys.account, ACCOUNT_CEILING_FAILURES, "sign-ins")
            .await
    }

    /// Whether `password` matches `phc` (a decoy hash when there is no account), as sign-in and
    /// re-authentication both check it: given up for a client that left, before and after the
    /// hash's turn (a flood of hang-ups costs no hash and counts no failure), and counted on the
    /// throttles either way. The caller checked the throttles before its look-ups.
    async fn password_matches(
        &self,
        keys: &ThrottleKeys,
        password: Secret,
        phc: Option<String>,
        workspace_id: Option<i64>,
        email: &str,
        caller: &Caller,
    ) -> ApiResult<bool> {
        crate::error::unless_client_left()?;
        let ok = self.hasher.verify(password, phc).await;
        crate::error::unless_client_left()?;
        if ok {
            self.challenges.login_succeeded(&keys.pair).await?;
        } else {
            self.count_failure(keys, workspace_id, email, caller)
                .await?;
        }
        Ok(ok)
    }

    /// Counts a wrong password on every counter; the first time the account's ceiling is reached
    /// in a window, the owners can read it in the audit log.
    async fn count_failure(
        &self,
        keys: &ThrottleKeys,
        workspace_id: Option<i64>,
        email: &str,
        caller: &Caller,
    ) -> ApiResult<()> {
        let now = self.now();
        self.challenges.login_failed(&keys.pair, now).await?;
        self.challenges.login_failed(&keys.ip, now).await?;
        let on_account = self.challenges.login_failed(&keys.account, now).await?;
        // The failure that reaches the ceiling: from the next one on, everyone waits.
        if on_account == ACCOUNT_CEILING_FAILURES {
            self.note(
                Audit::new(Kind::SecurityLoginCeiling)
                    .workspace(workspace_id)
                    .actor(email)
                    .ip(&caller.ip)
                    .detail(json!({
                        "failures": on_account,
                        "window_minutes": crate::challenges::LOGIN_WINDOW.whole_minutes(),
                    })),
            )
            .await;
        }
        Ok(())
    }

    /// Password sign-in to the console. Every wrong part (workspace, e-mail, password) gives the
    /// same 401, after the same Argon2 work; repeated failures per account and per IP are slowed
    /// down (429). Staff cannot sign in here (the support API is theirs).
    pub async fn sign_in(
        &self,
        slug: &str,
        email: &str,
        password: Secret,
        caller: &Caller,
    ) -> ApiResult<SignedIn> {
        self.password_sign_in(slug, email, password, caller, false)
            .await
    }

    /// Password sign-in of a support staff member (CONTRACT.md section 8), with the console's
    /// throttles and answers.
    pub async fn staff_sign_in(
        &self,
        email: &str,
        password: Secret,
        caller: &Caller,
    ) -> ApiResult<SignedIn> {
        self.password_sign_in(STAFF_REALM, email, password, caller, true)
            .await
    }

    async fn password_sign_in(
        &self,
        slug: &str,
        email: &str,
        password: Secret,
        caller: &Caller,
        staff: bool,
    ) -> ApiResult<SignedIn> {
        let keys = ThrottleKeys::new(slug, email, &caller.ip);
        self.check_throttles(&keys).await?;

        // The staff realm is no workspace a console user can name, and staff sign in nowhere else.
        let workspace = self
            .store
            .workspace_by_slug(slug)
            .await?
            .filter(|w| (w.slug == STAFF_REALM) == staff);
        let user = match &workspace {
            Some(w) => self.store.user_by_email(w.id, email).await?,
            None => None,
        };
        let ok = self
            .password_matches(
                &keys,
                password,
                user.as_ref().map(|u| u.password_hash.clone()),
                workspace.as_ref().map(|w| w.id),
                email,
                caller,
            )
            .await?;
        let (Some(workspace), Some(user), true) = (workspace.clone(), user, ok) else {
            if workspace.is_none() {
                // Nobody's workspace: a counter, not an audit row (a flood must not write).
                self.metrics.refused("sign_in");
                return Err(ApiError::Unauthorized);
            }
            self.note(
                Audit::new(if staff {
                    Kind::StaffLoginFailed
                } else {
                    Kind::LoginFailed
                })
                .workspace(workspace.as_ref().map(|w| w.id))
                .actor(email)
                .ip(&caller.ip)
                .detail(json!({"user_agent": caller.user_agent})),
            )
            .await;
            return Err(ApiError::Unauthorized);
        };

        // With single sign-on enforced, only owners keep their password (break-glass). Checked
        // after the password, so the answer tells nothing to whoever does not know it.
        if !staff && user.role != Role::Owner && self.sso_enforced(workspace.id).await? {
            self.note(
                Audit::new(Kind::LoginRefused)
                    .workspace(workspace.id)
                    .actor(&user.email)
                    .ip(&caller.ip)
                    .detail(json!({"reason": "sso_enforced", "user_agent": caller.user_agent})),
            )
            .await;
            return Err(ApiError::Forbidden(
                "this workspace signs in with single sign-on: use \"Sign in with single sign-on\"",
            ));
        }

        let session_id = self.start_session(&user, AuthMethod::Password).await?;
        self.note(
            Audit::new(if staff {
                Kind::StaffLoginSucceeded
            } else {
                Kind::LoginSucceeded
            })
            .workspace(workspace.id)
            .actor(&user.email)
            .ip(&caller.ip)
            .detail(json!({"user_agent": caller.user_agent})),
        )
        .await;
        Ok(SignedIn {
            session_id,
            user,
            workspace,
        })
    }

    /// Re-authentication of a signed-in session with its person's password (`POST
    /// /v1/console/session/reauth`): the same throttles, Argon2 work and 401 as sign-in, and the
    /// same single sign-on rule. Opens the reauth window again (a first phone may be enrolled).
    pub async fn reauthenticate(
        &self,
        session: &ConsoleSession,
        password: Secret,
        caller: &Caller,
    ) -> ApiResult<()> {
        let staff = session.workspace.slug == STAFF_REALM;
        let keys = ThrottleKeys::new(&session.workspace.slug, &session.user.email, &caller.ip);
        self.check_throttles(&keys).await?;
        // Read again: the password may have changed since the session began.
        let user = self.store.user_by_id(session.user.id).await?;
        let ok = self
            .password_matches(
                &keys,
                password,
                user.as_ref().map(|u| u.password_hash.clone()),
                Some(session.workspace.id),
                &session.user.email,
                caller,
            )
            .await?;
        if !ok {
            self.note(
                Audit::new(Kind::ReauthFailed)
                    .workspace(session.workspace.id)
                    .actor(&session.user.email)
                    .ip(&caller.ip)
                    .detail(json!({"user_agent": caller.user_agent})),
            )
            .await;
            return Err(ApiError::Unauthorized);
        }
        if !staff
            && session.user.role != Role::Owner
            && self.sso_enforced(session.workspace.id).await?
        {
            return Err(ApiError::Forbidden(
                "this workspace signs in with single sign-on: re-authenticate with \"Sign in with single sign-on\"",
            ));
        }
        self.session_reauthenticated(session, "password", caller)
            .await
    }

    /// Opens the session's reauth window now: its person just proved who they are, with their
    /// password or at the workspace's OpenID provider (`how`).
    pub async fn session_reauthenticated(
        &self,
        session: &ConsoleSession,
        how: &str,
        caller: &Caller,
    ) -> ApiResult<()> {
        if !self
            .store
            .reauthenticate_session(&session.id_hash, self.now())
            .await?
        {
            return Err(ApiError::Unauthorized);
        }
        self.note(
            Audit::new(Kind::SessionReauthenticated)
                .workspace(session.workspace.id)
                .actor(&session.user.email)
                .ip(&caller.ip)
                .detail(json!({"method": how, "user_agent": caller.user_agent})),
        )
        .await;
        Ok(())
    }

    /// A new console session for `user`: the cookie value, returned only here, in plain. Password
    /// sign-in and single sign-on both end here.
    pub async fn start_session(&self, user: &User, method: AuthMethod) -> ApiResult<Secret> {
        let session_id = Secret::new(random_b64url::<32>());
        let now = self.now();
        self.store
            .create_session(&Session {
                id_hash: sha256_hex(session_id.expose().as_bytes()),
                user_id: user.id,
                created_at: now,
                last_seen_at: now,
                expires_at: now + self.config.session_max,
                authenticated_at: now,
                method,
            })
            .await?;
        Ok(session_id)
    }

    /// The session behind a cookie value, if it is alive and of the realm asked for (a staff
    /// member's with `staff`, a workspace member's without); each use slides its idle expiry.
    pub async fn session_of(
        &self,
        session_id: &str,
        staff: bool,
    ) -> ApiResult<Option<ConsoleSession>> {
        Ok(self
            .console_session(session_id)
            .await?
            .filter(|s| (s.workspace.slug == STAFF_REALM) == staff))
    }

    async fn console_session(&self, session_id: &str) -> ApiResult<Option<ConsoleSession>> {
        self.any_session_by_hash(&sha256_hex(session_id.as_bytes()))
            .await
    }

    /// The live console session (never a staff member's) with this `id_hash`, touched like any
    /// use: how a single sign-on re-authentication finds the session it was started for, whose
    /// cookie (SameSite=Strict) the provider's redirect back does not carry.
    pub async fn session_by_hash(&self, id_hash: &str) -> ApiResult<Option<ConsoleSession>> {
        Ok(self
            .any_session_by_hash(id_hash)
            .await?
            .filter(|s| s.workspace.slug != STAFF_REALM))
    }

    async fn any_session_by_hash(&self, id_hash: &str) -> ApiResult<Option<ConsoleSession>> {
        let id_hash = id_hash.to_owned();
        let now = self.now();
        let Some((session, user, workspace)) = self
            .store
            .touch_session(&id_hash, now, now - self.config.session_idle)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(ConsoleSession {
            id_hash,
            user,
            workspace,
            authenticated_at: session.authenticated_at,
            method: session.method,
        }))
    }

    pub async fn sign_out(&self, session: &ConsoleSession, caller: &Caller) -> ApiResult<()> {
        self.store.delete_session(&session.id_hash).await?;
        self.note(
            Audit::new(if session.workspace.slug == STAFF_REALM {
                Kind::StaffLogout
            } else {
                Kind::Logout
            })
            .workspace(session.workspace.id)
            .actor(&session.user.email)
            .ip(&caller.ip),
        )
        .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn slugs_and_emails() {
        assert!(valid_slug("acme-corp"));
        assert!(!valid_slug("Acme"));
        assert!(!valid_slug("-x"));
        assert!(!valid_slug(""));
        assert!(valid_email("a@b.co"));
        assert!(!valid_email("a@b"));
        assert!(!valid_email("a b@c.de"));
        assert!(!valid_email("@c.de"));
    }

    #[test]
    fn backoff_doubles_after_the_free_failures_and_is_capped() {
        let now = datetime!(2026-11-28 12:00 UTC);
        assert_eq!(backoff(5, 5, Some(now), now), Some(1));
        assert_eq!(backoff(4, 5, Some(now), now), None);
        assert_eq!(backoff(8, 5, Some(now), now), Some(8));
        assert_eq!(
            backoff(40, 5, Some(now), now),
            Some(MAX_BACKOFF_SECS as u64)
        );
        assert_eq!(backoff(8, 5, Some(now), now + Duration::seconds(9)), None);
    }
}
