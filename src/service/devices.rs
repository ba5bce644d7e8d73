//! Phones: enrollment by one-time code, device-signed requests, push tokens, removal.

use rand::Rng;
use serde_json::json;
use time::{Duration, OffsetDateTime};

use super::{Caller, ConsoleSession};
use crate::app::App;
use crate::domain::crypto::{random_b64url, sha256_hex, Secret};
use crate::domain::device::{self, DeviceKey, CLOCK_SKEW};
use crate::error::{ApiError, ApiResult};
use crate::store::{Device, Enrollment, NewDevice, Platform, User};

pub const ENROLLMENT_TTL: Duration = Duration::minutes(10);
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

pub struct EnrollmentOffer {
    pub code: Secret,
    pub uri: Secret,
    pub expires_at: OffsetDateTime,
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

/// A device whose request signature checked out.
#[derive(Clone, Debug)]
pub struct AuthedDevice {
    pub device: Device,
    pub user: User,
}

impl App {
    pub async fn start_enrollment(
        &self,
        user_id: i64,
        workspace_id: Option<i64>,
        actor: &str,
    ) -> ApiResult<EnrollmentOffer> {
        let code = new_code();
        let now = self.now();
        let expires_at = now + ENROLLMENT_TTL;
        self.store
            .create_enrollment(&code_hash(code.expose()), user_id, now, expires_at)
            .await?;
        let uri = url::Url::parse_with_params(
            "assent://enroll",
            &[
                ("server", self.config.public_url.as_str()),
                ("code", code.expose()),
            ],
        )
        .expect("static scheme parses");
        self.audit(
            workspace_id,
            "enrollment.started",
            Some(actor),
            None,
            None,
            json!({}),
        )
        .await;
        Ok(EnrollmentOffer {
            code,
            uri: Secret::new(uri.to_string()),
            expires_at,
        })
    }

    pub async fn enroll(&self, req: EnrollRequest, caller: &Caller) -> ApiResult<(String, String)> {
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
            Enrollment::Enrolled { user_id } => {
                let user = self.store.user_by_id(user_id).await?;
                self.audit(
                    user.as_ref().map(|u| u.workspace_id),
                    "device.enrolled",
                    user.as_ref().map(|u| u.email.as_str()),
                    Some(&caller.ip),
                    Some(&device_id),
                    json!({"name": name, "platform": req.platform.as_str()}),
                )
                .await;
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

    pub async fn remove_device(
        &self,
        session: &ConsoleSession,
        device_id: &str,
        caller: &Caller,
    ) -> ApiResult<()> {
        if !self.store.delete_device(session.user.id, device_id).await? {
            return Err(ApiError::NotFound);
        }
        self.audit(
            Some(session.workspace.id),
            "device.removed",
            Some(&session.user.email),
            Some(&caller.ip),
            Some(device_id),
            json!({"by": "console"}),
        )
        .await;
        Ok(())
    }

    pub async fn unenroll(&self, me: &AuthedDevice, caller: &Caller) -> ApiResult<()> {
        self.store.delete_device(me.user.id, &me.device.id).await?;
        self.audit(
            Some(me.user.workspace_id),
            "device.removed",
            Some(&me.user.email),
            Some(&caller.ip),
            Some(&me.device.id),
            json!({"by": "device"}),
        )
        .await;
        Ok(())
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
