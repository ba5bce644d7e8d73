//! Phones: enrollment by one-time code, device-signed requests, push tokens, removal.

use rand::Rng;
use serde_json::json;
use time::{Duration, OffsetDateTime};

use super::{About, AuthedDevice, Caller, ConsoleSession, EnrollmentOffer, NOTICE_LIFETIME};
use crate::app::App;
use crate::domain::audit::Kind;
use crate::domain::challenge::{Action, Challenge, Subject};
use crate::domain::crypto::{random_b64url, sha256_hex, Secret};
use crate::domain::device::{self, DeviceKey, CLOCK_SKEW};
use crate::error::{ApiError, ApiResult};
use crate::push::{PushKind, PushMessage};
use crate::service::audit::Audit;
use crate::store::{AuthMethod, Device, Enrollment, NewDevice, Platform, Role, User};

pub const ENROLLMENT_TTL: Duration = Duration::minutes(10);
/// Wrong enrollment codes one address may send in the counting window before it waits: a phone
/// enrolls with its first code, and a code's 60 bits are not to be guessed.
pub const ENROLL_FREE_FAILURES: u32 = 30;
/// Crockford's base32: no I, L, O or U, so a code read aloud or typed is unambiguous.
const CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A 12-character code (60 bits) shown as XXXX-XXXX-XXXX.
fn new_code() -> Secret {
    let mut rng = rand::rngs::OsRng;
    let raw: String = (0..12)
        .map(|_| CODE_ALPHABET[rng.gen_range(0..32)] as char)
        .collect();
    Secret::new(format!("{}-{}-{}", &raw[..4], &raw[4..8], &raw[8..]))
}

/// Canonical form of a typed code: case, dashes, spaces and look-alike letters do not matter.
fn normalise_code(code: &str) -> String {
    code.chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect()
}

/// Only the SHA-256 of a code is stored and looked up, so no comparison ever runs on the secret
/// itself and its timing cannot reveal a prefix of a valid code.
fn code_hash(code: &str) -> String {
    sha256_hex(format!("enroll:{}", normalise_code(code)).as_bytes())
}

/// What a phone sends to enroll.
pub struct EnrollRequest {
    pub code: Secret,
    pub name: String,
    pub platform: Platform,
    pub push_token: Option<Secret>,
    pub apns_environment: Option<String>,
    pub public_key: serde_json::Value,
}

/// What asking for an enrollment code gives (CONTRACT.md section 3).
pub enum EnrollmentStart {
    /// No phone yet, within the reauth window: the code itself.
    Code(EnrollmentOffer),
    /// A phone already: a `device.enroll` challenge on it; the code comes with its release.
    StepUp(Box<Challenge>, usize),
}

/// Which change to a person's phones a notice tells of.
#[derive(Clone, Copy)]
pub enum DeviceChange {
    Enrolled,
    Removed,
}

impl DeviceChange {
    fn as_str(self) -> &'static str {
        match self {
            DeviceChange::Enrolled => "device.enrolled",
            DeviceChange::Removed => "device.removed",
        }
    }
}

impl App {
    /// 403 `reauth_required` unless the session's person proved who they are (sign-in or
    /// re-authentication) within the reauth window: what a stolen session cookie alone cannot do.
    pub(super) fn require_fresh_authentication(&self, session: &ConsoleSession) -> ApiResult<()> {
        if self.now() - session.authenticated_at > self.config.reauth_window {
            return Err(ApiError::ReauthRequired {
                sso_url: (session.method == AuthMethod::Sso)
                    .then(|| format!("/v1/sso/{}/start?reauth=1", session.workspace.slug)),
            });
        }
        Ok(())
    }

    /// A code for the signed-in person's own phone. A session alone never adds a phone: with a
    /// phone already, the existing phones must approve (`device.enroll`); with none, the session
    /// must have proved who its person is within the reauth window (issue 12).
    pub async fn request_enrollment(
        &self,
        session: &ConsoleSession,
        caller: &Caller,
    ) -> ApiResult<EnrollmentStart> {
        crate::error::unless_client_left()?;
        if self.store.count_devices_of_user(session.user.id).await? == 0 {
            self.require_fresh_authentication(session)?;
            self.enrollment_on_record(session, caller, None).await?;
            let offer = self.issue_enrollment_code(session, false).await?;
            return Ok(EnrollmentStart::Code(offer));
        }
        let policy = self.store.policy(session.workspace.id).await?;
        let (challenge, notified) = self
            .open_challenge(
                session,
                &session.workspace,
                Action::DeviceEnroll,
                About::default(),
                &policy,
                caller,
            )
            .await?;
        Ok(EnrollmentStart::StepUp(Box::new(challenge), notified))
    }

    /// Puts a code for the session's person on record (a code is never handed out unaudited);
    /// `approved_by` is the `device.enroll` challenge that allowed it, none for a first phone.
    pub(super) async fn enrollment_on_record(
        &self,
        session: &ConsoleSession,
        caller: &Caller,
        approved_by: Option<&Challenge>,
    ) -> ApiResult<()> {
        let mut detail = json!({"user_agent": caller.user_agent});
        if let Some(c) = approved_by {
            detail["challenge"] = json!(c.id);
        } else {
            detail["first_device"] = json!(true);
        }
        self.record(
            Audit::new(Kind::EnrollmentStarted)
                .workspace(session.workspace.id)
                .actor(&session.user.email)
                .ip(&caller.ip)
                .device(approved_by.and_then(|c| c.decided_by_device.as_deref()))
                .detail(detail),
        )
        .await
    }

    /// Makes a one-time enrollment code for the session's person (put on record before). A code
    /// without a phone's approval enrolls only a first phone.
    pub(super) async fn issue_enrollment_code(
        &self,
        session: &ConsoleSession,
        approved: bool,
    ) -> ApiResult<EnrollmentOffer> {
        let code = new_code();
        let now = self.now();
        let expires_at = now + ENROLLMENT_TTL;
        self.store
            .create_enrollment(
                &code_hash(code.expose()),
                session.user.id,
                now,
                expires_at,
                !approved,
            )
            .await?;
        let uri = url::Url::parse_with_params(
            "assent://enroll",
            &[
                ("server", self.config.public_url.as_str()),
                ("code", code.expose()),
            ],
        )
        .expect("static scheme parses");
        Ok(EnrollmentOffer {
            code,
            uri: Secret::new(uri.to_string()),
            expires_at,
        })
    }

    /// A notice to the person's other phones and to the workspace's owners' phones that a phone
    /// was added or removed; how many pushes were started.
    pub(super) async fn tell_of_device_change(
        &self,
        person: &User,
        device_id: &str,
        change: DeviceChange,
    ) -> ApiResult<usize> {
        let mut people = vec![person.id];
        for owner in self
            .store
            .users_with_role(person.workspace_id, Role::Owner)
            .await?
        {
            if !people.contains(&owner.id) {
                people.push(owner.id);
            }
        }
        let mut devices = self.devices_of_people(&people).await?;
        devices.retain(|d| d.id != device_id);
        let workspace_name = self
            .store
            .workspace_by_id(person.workspace_id)
            .await?
            .map(|w| w.name)
            .unwrap_or_default();
        let message = PushMessage {
            kind: PushKind::Notice,
            // A notice answers nothing: the id says what it is about (here, the device).
            challenge_id: device_id.to_owned(),
            action: change.as_str().to_owned(),
            workspace_name,
            expires_at: self.now() + NOTICE_LIFETIME,
        };
        Ok(self.notifier.fan_out(&devices, message))
    }

    pub async fn enroll(&self, req: EnrollRequest, caller: &Caller) -> ApiResult<(String, String)> {
        // Throttled before anything is written: a flood of made-up codes from one address ends
        // in 429, not in one write transaction each.
        let throttle = format!("enroll:ip:{}", caller.ip);
        self.throttled(&throttle, ENROLL_FREE_FAILURES, "enrollments")
            .await?;
        crate::error::unless_client_left()?;
        let result = self.enroll_with_code(req, caller).await;
        if matches!(result, Err(ApiError::NotFound | ApiError::Gone(_))) {
            self.challenges.login_failed(&throttle, self.now()).await?;
            self.metrics.refused("enrollment_code");
        }
        result
    }

    async fn enroll_with_code(
        &self,
        req: EnrollRequest,
        caller: &Caller,
    ) -> ApiResult<(String, String)> {
        let name = req.name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(ApiError::Unprocessable(
                "name must be 1-100 characters".into(),
            ));
        }
        let apns_environment = match (req.platform, req.apns_environment.as_deref()) {
            (Platform::Apns, None) => Some("production".to_owned()),
            (Platform::Apns, Some(env @ ("production" | "sandbox"))) => Some(env.to_owned()),
            (Platform::Apns, Some(_)) => {
                return Err(ApiError::Unprocessable(
                    "apns_environment must be production or sandbox".into(),
                ))
            }
            (Platform::Fcm, Some(_)) => {
                return Err(ApiError::Unprocessable(
                    "apns_environment is only for platform apns".into(),
                ))
            }
            (Platform::Fcm, None) => None,
        };
        let key = DeviceKey::from_jwk(&req.public_key)
            .map_err(|e| ApiError::Unprocessable(e.to_string()))?;
        let device_id = format!("dev_{}", random_b64url::<16>());
        let push_token = req.push_token.as_ref().map(|t| {
            self.keyring
                .seal(t.expose().as_bytes(), device_id.as_bytes())
        });
        let device = NewDevice {
            id: device_id.clone(),
            user_id: 0,
            name: name.to_owned(),
            platform: req.platform,
            apns_environment,
            public_key: key.to_jwk(),
            push_token,
        };
        match self
            .store
            .enroll_device(&code_hash(req.code.expose()), device, self.now())
            .await?
        {
            Enrollment::Unknown => Err(ApiError::NotFound),
            Enrollment::Spent => Err(ApiError::Gone(
                "this enrollment code was already used".into(),
            )),
            Enrollment::Expired => Err(ApiError::Gone("this enrollment code has expired".into())),
            Enrollment::NotFirst => Err(ApiError::Gone(
                "this code was for a first phone and a phone is enrolled now: add another phone from the console, approved on that phone".into(),
            )),
            Enrollment::Enrolled { user_id } => {
                let user = self.store.user_by_id(user_id).await?.ok_or_else(|| {
                    tracing::error!("an enrollment code outlived its user");
                    ApiError::Internal
                })?;
                let entry = Audit::new(Kind::DeviceEnrolled)
                    .workspace(user.workspace_id)
                    .actor(&user.email)
                    .ip(&caller.ip)
                    .device(&device_id)
                    .detail(json!({
                        "name": name,
                        "platform": req.platform.as_str(),
                        "user_agent": caller.user_agent,
                    }));
                let recorded = self.record(entry).await;
                if let Err(e) = recorded {
                    // Fail closed: a phone that is not on record does not stay enrolled.
                    self.store.delete_device(user.id, &device_id).await?;
                    return Err(e);
                }
                if let Err(e) = self
                    .tell_of_device_change(&user, &device_id, DeviceChange::Enrolled)
                    .await
                {
                    tracing::warn!(error = %e, "could not tell of a new phone");
                }
                Ok((device_id, self.config.public_url.clone()))
            }
        }
    }

    /// Checks `Authorization: Device <JWS>`: signature by the device's enrolled key, audience,
    /// lifetime, and a `jti` never seen before from that device.
    pub async fn authenticate_device(&self, jws: &str) -> ApiResult<AuthedDevice> {
        let refuse = |why: &str| {
            tracing::info!(reason = why, "device authentication refused");
            ApiError::Unauthorized
        };
        let kid = device::peek_kid(jws, device::REQUEST_TYP).map_err(|e| refuse(&e.to_string()))?;
        let Some(found) = self.store.device(&kid).await? else {
            return Err(refuse("unknown device"));
        };
        let key =
            DeviceKey::from_jwk(&found.public_key).map_err(|_| refuse("stored key unusable"))?;
        let now = self.now();
        let claims = device::verify_request(jws, &key, &found.id, &self.config.public_url, now)
            .map_err(|e| refuse(&e.to_string()))?;
        let keep_until = OffsetDateTime::from_unix_timestamp(claims.exp + CLOCK_SKEW)
            .map_err(|_| refuse("bad exp"))?;
        if !self
            .challenges
            .remember_jti(&found.id, &claims.jti, keep_until)
            .await?
        {
            return Err(refuse("replayed jti"));
        }
        // `last_seen_at` is for people reading the device list: minute precision is plenty, and
        // skipping the write keeps device calls off the database's single write lock.
        if found
            .last_seen_at
            .is_none_or(|seen| now - seen >= Duration::minutes(1))
        {
            self.store.touch_device(&found.id, now).await?;
        }
        let user = self
            .store
            .user_by_id(found.user_id)
            .await?
            .ok_or_else(|| refuse("device without user"))?;
        Ok(AuthedDevice {
            device: found,
            user,
        })
    }

    pub async fn devices_of(&self, user_id: i64) -> ApiResult<Vec<Device>> {
        Ok(self.store.devices_of_user(user_id).await?)
    }

    /// The console's Remove: one of the person's own phones, on record first. Removing the last
    /// one asks every session of the person to re-authenticate before a first phone.
    pub async fn remove_device(
        &self,
        session: &ConsoleSession,
        device_id: &str,
        caller: &Caller,
    ) -> ApiResult<()> {
        let devices = self.store.devices_of_user(session.user.id).await?;
        if !devices.iter().any(|d| d.id == device_id) {
            return Err(ApiError::NotFound);
        }
        self.removed_on_record(&session.user, device_id, "console", caller)
            .await?;
        // Removing the last phone would open the first-phone path (a code under the reauth window
        // alone) to whoever holds a fresh cookie: the person's sessions prove who they are again
        // first, so a session alone never swaps a person's phone.
        if devices.len() == 1 {
            self.store.unauthenticate_sessions(session.user.id).await?;
        }
        self.store.delete_device(session.user.id, device_id).await?;
        self.after_removal(&session.user, device_id).await;
        Ok(())
    }

    /// The phone unenrolls itself.
    pub async fn unenroll(&self, me: &AuthedDevice, caller: &Caller) -> ApiResult<()> {
        self.removed_on_record(&me.user, &me.device.id, "device", caller)
            .await?;
        self.store.delete_device(me.user.id, &me.device.id).await?;
        self.after_removal(&me.user, &me.device.id).await;
        Ok(())
    }

    async fn removed_on_record(
        &self,
        person: &User,
        device_id: &str,
        by: &str,
        caller: &Caller,
    ) -> ApiResult<()> {
        self.record(
            Audit::new(Kind::DeviceRemoved)
                .workspace(person.workspace_id)
                .actor(&person.email)
                .ip(&caller.ip)
                .device(device_id)
                .detail(json!({"by": by, "user_agent": caller.user_agent})),
        )
        .await
    }

    pub(super) async fn after_removal(&self, person: &User, device_id: &str) {
        if let Err(e) = self
            .tell_of_device_change(person, device_id, DeviceChange::Removed)
            .await
        {
            tracing::warn!(error = %e, "could not tell of a removed phone");
        }
    }

    /// An owner or admin asks to remove every phone of a member who lost theirs (CONTRACT.md
    /// section 3a): a `member.devices_reset` challenge on the asker's own phones. Only an owner
    /// resets an owner.
    pub async fn request_devices_reset(
        &self,
        session: &ConsoleSession,
        member_id: i64,
        caller: &Caller,
    ) -> ApiResult<(Challenge, usize)> {
        // Before the lookup: a member learns nothing of who exists.
        may_reset_phones(session.user.role)?;
        let member = self
            .store
            .user_by_id(member_id)
            .await?
            .filter(|u| u.workspace_id == session.workspace.id)
            .ok_or(ApiError::NotFound)?;
        may_reset_phones_of(session.user.role, member.role)?;
        let policy = self.store.policy(session.workspace.id).await?;
        self.open_challenge(
            session,
            &session.workspace,
            Action::MemberDevicesReset,
            About {
                support: None,
                subject: Some(Subject {
                    user_id: member.id,
                    email: member.email.clone(),
                    role: None,
                }),
            },
            &policy,
            caller,
        )
        .await
    }

    /// Puts the reset of every phone of `member` on record; `by` is who does it (an owner or admin
    /// through an approved challenge, or the operator). Returns the phones it is about.
    pub(super) async fn reset_on_record(
        &self,
        member: &User,
        by: &str,
        ip: Option<&str>,
        challenge: Option<&Challenge>,
    ) -> ApiResult<Vec<Device>> {
        let devices = self.store.devices_of_user(member.id).await?;
        let ids: Vec<&str> = devices.iter().map(|d| d.id.as_str()).collect();
        let mut detail = json!({"member": member.email, "by": by, "devices": ids});
        if let Some(c) = challenge {
            detail["challenge"] = json!(c.id);
        }
        self.record(
            Audit::new(Kind::MemberDevicesReset)
                .workspace(member.workspace_id)
                .actor(by)
                .ip(ip)
                .device(challenge.and_then(|c| c.decided_by_device.as_deref()))
                .detail(detail),
        )
        .await?;
        Ok(devices)
    }

    /// Removes every phone of `member` (the reset put on record before, with `devices`); they
    /// enroll again under the reauth rule. Returns how many phones went.
    pub(super) async fn reset_devices(&self, member: &User, devices: &[Device]) -> ApiResult<u64> {
        let removed = self.store.delete_devices_of_user(member.id).await?;
        // One notice for the lot: the member has no phone left, the owners hear it once.
        if let Some(first) = devices.first() {
            self.after_removal(member, &first.id).await;
        }
        Ok(removed)
    }

    /// `assent devices reset`: the operator's recovery for an owner who lost every phone and has
    /// no other owner to reset them (local access to the deployment; audited).
    pub async fn operator_reset_devices(&self, slug: &str, email: &str) -> ApiResult<(User, u64)> {
        let workspace = self
            .store
            .workspace_by_slug(slug)
            .await?
            .ok_or(ApiError::NotFound)?;
        let member = self
            .store
            .user_by_email(workspace.id, email)
            .await?
            .ok_or(ApiError::NotFound)?;
        let devices = self
            .reset_on_record(&member, "operator", None, None)
            .await?;
        let removed = self.reset_devices(&member, &devices).await?;
        Ok((member, removed))
    }

    pub async fn refresh_push_token(
        &self,
        me: &AuthedDevice,
        push_token: &Secret,
    ) -> ApiResult<()> {
        if push_token.expose().is_empty() || push_token.expose().len() > 4096 {
            return Err(ApiError::Unprocessable(
                "push_token must be 1-4096 characters".into(),
            ));
        }
        let sealed = self
            .keyring
            .seal(push_token.expose().as_bytes(), me.device.id.as_bytes());
        Ok(self
            .store
            .set_push_token(&me.device.id, Some(sealed))
            .await?)
    }
}

/// Who may reset a member's phones: owners and admins.
fn may_reset_phones(asker: Role) -> ApiResult<()> {
    if asker < Role::Admin {
        return Err(ApiError::Forbidden(
            "only owners and admins may reset a member's phones",
        ));
    }
    Ok(())
}

/// Whether `asker` may reset the phones of a person with role `member`: and only an owner an
/// owner's. Checked when the reset is asked for and again at its release (roles may change while
/// the phone decides).
pub(super) fn may_reset_phones_of(asker: Role, member: Role) -> ApiResult<()> {
    may_reset_phones(asker)?;
    if member == Role::Owner && asker != Role::Owner {
        return Err(ApiError::Forbidden(
            "only an owner may reset an owner's phones",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_grouped_and_typing_variants_hash_alike() {
        let code = new_code();
        assert_eq!(code.expose().len(), 14);
        assert_eq!(code.expose().matches('-').count(), 2);
        assert_eq!(
            code_hash(code.expose()),
            code_hash(&code.expose().to_lowercase().replace('-', " "))
        );
        assert_eq!(normalise_code("o1-il"), "0111");
        assert_ne!(code_hash("AAAA-AAAA-AAAA"), code_hash("AAAA-AAAA-AAAB"));
    }
}
