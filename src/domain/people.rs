//! The people of a workspace, their sessions and their phones: the types every layer speaks of.
//! The store keeps them (`store/`), the use cases decide about them (`service/`), push reaches
//! their phones (`push/`); none of those owns them.

use serde::Serialize;
use time::OffsetDateTime;

use super::crypto::Sealed;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "owner" => Some(Role::Owner),
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workspace {
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub created_at: OffsetDateTime,
}

#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub workspace_id: i64,
    pub email: String,
    pub role: Role,
    pub password_hash: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("workspace_id", &self.workspace_id)
            .field("email", &self.email)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// A person of a workspace as the members list shows them (CONTRACT.md section 3a).
#[derive(Clone, Debug)]
pub struct Member {
    pub user: User,
    pub devices: i64,
    /// When one of their phones last called (the newest of them).
    pub devices_last_seen_at: Option<OffsetDateTime>,
    pub last_sign_in_at: Option<OffsetDateTime>,
    pub sso_linked: bool,
}

#[derive(Clone, Debug)]
pub struct Session {
    pub id_hash: String,
    pub user_id: i64,
    pub created_at: OffsetDateTime,
    pub last_seen_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// When its person last proved who they are: the sign-in, or a later re-authentication.
    pub authenticated_at: OffsetDateTime,
    pub method: AuthMethod,
}

/// How a console session's person proves who they are again (the reauth window of issue 12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// With their password (`POST /v1/console/session/reauth`).
    Password,
    /// At the workspace's OpenID provider (`GET /v1/sso/{workspace}/start?reauth=1`).
    Sso,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Password => "password",
            AuthMethod::Sso => "sso",
        }
    }

    /// What the database holds; anything unknown is treated as a password session.
    pub fn parse(s: &str) -> AuthMethod {
        if s == "sso" {
            AuthMethod::Sso
        } else {
            AuthMethod::Password
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Apns,
    Fcm,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Apns => "apns",
            Platform::Fcm => "fcm",
        }
    }
    pub fn parse(s: &str) -> Option<Platform> {
        match s {
            "apns" => Some(Platform::Apns),
            "fcm" => Some(Platform::Fcm),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Device {
    pub id: String,
    pub user_id: i64,
    pub name: String,
    pub platform: Platform,
    pub apns_environment: Option<String>,
    /// The public JWK, as validated at enrollment.
    pub public_key: serde_json::Value,
    pub push_token: Option<Sealed>,
    pub push_token_invalid: bool,
    pub created_at: OffsetDateTime,
    pub last_seen_at: Option<OffsetDateTime>,
}

#[derive(Clone, Debug)]
pub struct NewDevice {
    pub id: String,
    pub user_id: i64,
    pub name: String,
    pub platform: Platform,
    pub apns_environment: Option<String>,
    pub public_key: serde_json::Value,
    pub push_token: Option<Sealed>,
}
