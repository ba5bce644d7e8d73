//! What a workspace's owners decide about their SCIM token: who may view it, whether a rotation
//! needs a second person, and how long a replaced token keeps working.

use serde::{Deserialize, Serialize};
use time::Duration;

use super::people::Role;

/// The reserved realm whose users are the deployment's support staff (`migrations/*/0005`).
pub const STAFF_REALM: &str = "_staff";

/// Longest grace period an owner may set: a week.
pub const MAX_GRACE_MINUTES: u32 = 7 * 24 * 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenViewers {
    /// Only owners may view the token.
    Owners,
    /// Owners and admins (the default).
    Admins,
}

impl TokenViewers {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenViewers::Owners => "owners",
            TokenViewers::Admins => "admins",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "owners" => Some(TokenViewers::Owners),
            "admins" => Some(TokenViewers::Admins),
            _ => None,
        }
    }

    pub fn admit(self, role: Role) -> bool {
        match self {
            TokenViewers::Owners => role == Role::Owner,
            TokenViewers::Admins => role >= Role::Admin,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// A rotation (by an admin or by support) also needs the approval of a second owner or admin.
    pub two_person_rotation: bool,
    /// After a rotation the replaced token keeps authenticating this many minutes (0: it stops at
    /// once).
    pub rotation_grace_minutes: u32,
    pub token_viewers: TokenViewers,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            two_person_rotation: false,
            rotation_grace_minutes: 0,
            token_viewers: TokenViewers::Admins,
        }
    }
}

impl Policy {
    pub fn validate(&self) -> Result<(), String> {
        if self.rotation_grace_minutes > MAX_GRACE_MINUTES {
            return Err(format!(
                "rotation_grace_minutes must be between 0 and {MAX_GRACE_MINUTES}"
            ));
        }
        Ok(())
    }

    pub fn grace(&self) -> Option<Duration> {
        (self.rotation_grace_minutes > 0)
            .then(|| Duration::minutes(i64::from(self.rotation_grace_minutes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewers_admit_by_role() {
        assert!(TokenViewers::Admins.admit(Role::Admin));
        assert!(TokenViewers::Admins.admit(Role::Owner));
        assert!(!TokenViewers::Admins.admit(Role::Member));
        assert!(!TokenViewers::Owners.admit(Role::Admin));
        assert!(TokenViewers::Owners.admit(Role::Owner));
    }

    #[test]
    fn grace_is_bounded_and_zero_means_none() {
        let mut p = Policy::default();
        assert_eq!(p.grace(), None);
        p.rotation_grace_minutes = 30;
        assert_eq!(p.grace(), Some(Duration::minutes(30)));
        p.rotation_grace_minutes = MAX_GRACE_MINUTES + 1;
        assert!(p.validate().is_err());
    }

    #[test]
    fn the_staff_realm_is_no_valid_workspace_slug() {
        assert!(!crate::service::accounts::valid_slug(STAFF_REALM));
    }
}
