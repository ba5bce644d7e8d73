//! The audit log's hash chain: what an entry's hash covers, and how a chain is verified.
//!
//! Each workspace has its own chain; entries without a workspace (a failed sign-in to an unknown
//! workspace, a forged SSO state) form the deployment's chain, keyed 0 (workspace ids start at 1).
//! An entry has a sequence number `seq` (1, 2, 3, … per chain), the hash of the entry before it
//! (`prev_hash`, [`GENESIS`] for seq 1) and its own hash: the lower-case hex SHA-256 of its
//! canonical form, a compact JSON array of exactly these ten values:
//!
//! ```text
//! ["assent.audit.v1", chain, seq, at, kind, actor, ip, device_id, detail, prev_hash]
//! ```
//!
//! `chain`, `seq` and `at` (Unix seconds) are integers; `kind` a string; `actor`, `ip` and
//! `device_id` a string or `null`; `prev_hash` a string; `detail` the entry's JSON object in
//! canonical form: no whitespace, every object's keys sorted by their UTF-8 bytes, strings escaped
//! as RFC 8259 requires and no more (non-ASCII as UTF-8), and a number with an integral value that
//! fits 64 bits written as an integer (so `1e2` and `100.0` are `100`). The last rule makes the
//! hash survive Postgres' JSONB, which rewrites numbers it stores.
//!
//! Entries written before the chain existed (migration 0003) have no `seq` and no hash: a chain
//! starts at its first entry with a `seq`. Truncating the newest entries leaves a valid shorter
//! chain; only a head recorded elsewhere (`assent audit export` to a SIEM, or the `last_hash` that
//! `assent audit verify` prints) shows that.

use serde_json::{Map, Number, Value};

use super::crypto::sha256_hex;

/// `prev_hash` of a chain's first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const VERSION: &str = "assent.audit.v1";

/// The chain an entry of `workspace_id` belongs to.
pub fn chain_key(workspace_id: Option<i64>) -> i64 {
    workspace_id.unwrap_or(0)
}

/// Everything an entry's hash covers.
#[derive(Clone, Copy, Debug)]
pub struct Content<'a> {
    pub chain: i64,
    pub seq: i64,
    /// Unix seconds.
    pub at: i64,
    pub kind: &'a str,
    pub actor: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub device_id: Option<&'a str>,
    pub detail: &'a Value,
    pub prev_hash: &'a str,
}

impl Content<'_> {
    /// The bytes that are hashed (see the module's documentation).
    pub fn canonical(&self) -> Vec<u8> {
        let form = Value::Array(vec![
            VERSION.into(),
            self.chain.into(),
            self.seq.into(),
            self.at.into(),
            self.kind.into(),
            self.actor.into(),
            self.ip.into(),
            self.device_id.into(),
            canonical_json(self.detail),
            self.prev_hash.into(),
        ]);
        serde_json::to_vec(&form).expect("a JSON value always serializes")
    }

    pub fn hash(&self) -> String {
        sha256_hex(&self.canonical())
    }
}

/// `value` with every object's keys in sorted order and integral numbers as integers. The keys are
/// inserted in order, so the output is sorted whether or not serde_json keeps insertion order.
pub fn canonical_json(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for key in keys {
                out.insert(key.clone(), canonical_json(&map[key]));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical_json).collect()),
        Value::Number(n) => Value::Number(canonical_number(n)),
        other => other.clone(),
    }
}

fn canonical_number(n: &Number) -> Number {
    if n.is_i64() || n.is_u64() {
        return n.clone();
    }
    let Some(f) = n.as_f64() else {
        return n.clone();
    };
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if f.fract() == 0.0 && (-TWO_63..TWO_63).contains(&f) {
        Number::from(f as i64)
    } else if f.fract() == 0.0 && (0.0..2.0 * TWO_63).contains(&f) {
        Number::from(f as u64)
    } else {
        n.clone()
    }
}

/// The `seq` and `prev_hash` of the entry that follows `last` (the chain's newest entry, if any).
pub fn next_link(last: Option<(i64, String)>) -> (i64, String) {
    match last {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, GENESIS.to_owned()),
    }
}

/// The first broken link of a chain, named by the entry's id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Break {
    #[error("entry {id} was edited: its hash does not match its content")]
    Edited { id: i64 },
    #[error("entry {id} (seq {seq}) follows seq {previous}: entries were deleted before it")]
    Deleted { id: i64, seq: i64, previous: i64 },
    #[error("entry {id} (seq {seq}) is stored before entry {before_id} (seq {previous}): entries were reordered")]
    Reordered {
        id: i64,
        seq: i64,
        before_id: i64,
        previous: i64,
    },
    #[error("entry {id} does not follow entry {previous_id}: its prev_hash differs, so an entry was deleted or replaced before it")]
    Unlinked { id: i64, previous_id: i64 },
    #[error("entry {id} has no seq or hash but was written after the chain began: it was inserted behind Assent's back")]
    Unchained { id: i64 },
}

/// Walks a chain in `seq` order, one entry at a time (so a long log needs no memory).
#[derive(Debug, Default)]
pub struct Verifier {
    /// id, seq and hash of the last entry checked.
    last: Option<(i64, i64, String)>,
    entries: u64,
    first_id: Option<i64>,
}

impl Verifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next entry of the chain (in `seq` order) against the ones before it.
    pub fn check(
        &mut self,
        id: i64,
        content: &Content<'_>,
        stored_hash: &str,
    ) -> Result<(), Break> {
        let (expected_seq, expected_prev) = match &self.last {
            Some((_, seq, hash)) => (seq + 1, hash.as_str()),
            None => (1, GENESIS),
        };
        let previous = expected_seq - 1;
        if let Some((last_id, last_seq, _)) = &self.last {
            if id < *last_id || content.seq < expected_seq {
                return Err(Break::Reordered {
                    id,
                    seq: content.seq,
                    before_id: *last_id,
                    previous: *last_seq,
                });
            }
        }
        if content.seq > expected_seq {
            return Err(Break::Deleted {
                id,
                seq: content.seq,
                previous,
            });
        }
        if content.prev_hash != expected_prev {
            return Err(match &self.last {
                Some((previous_id, _, _)) => Break::Unlinked {
                    id,
                    previous_id: *previous_id,
                },
                // The first entry links to GENESIS; anything else was edited.
                None => Break::Edited { id },
            });
        }
        let hash = content.hash();
        if hash != stored_hash {
            return Err(Break::Edited { id });
        }
        self.first_id.get_or_insert(id);
        self.last = Some((id, content.seq, hash));
        self.entries += 1;
        Ok(())
    }

    /// An entry of the same workspace without a `seq`: fine before the chain began (written before
    /// migration 0003), a break after it.
    pub fn check_unchained(&self, id: i64) -> Result<(), Break> {
        match self.first_id {
            Some(first) if id > first => Err(Break::Unchained { id }),
            _ => Ok(()),
        }
    }

    /// How many chained entries verified.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// The hash of the newest entry verified: record it elsewhere to detect a truncated chain.
    pub fn last_hash(&self) -> Option<&str> {
        self.last.as_ref().map(|(_, _, hash)| hash.as_str())
    }
}

/// What an audit entry records: every kind the log holds, so a reader finds them in one list and
/// a typo is a compile error. The text is the entry's `kind` as stored, exported and filtered on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    ChallengeApproved,
    ChallengeCreated,
    ChallengeDenied,
    ChallengeExpired,
    ChallengeFirstApproved,
    DeviceEnrolled,
    DeviceRemoved,
    EnrollmentStarted,
    KeysRotated,
    KeysRotationPaused,
    LoginFailed,
    LoginRefused,
    LoginSucceeded,
    Logout,
    MemberAdded,
    MemberDevicesReset,
    MemberInvitationAccepted,
    MemberInvited,
    MemberRemoved,
    MemberRoleChanged,
    PolicyChanged,
    ReauthFailed,
    ScimSchemasDeclared,
    ScimTokenRefused,
    SecurityChallengeLimit,
    SecurityLoginCeiling,
    SecuritySuspectedAttack,
    SessionReauthenticated,
    SsoConfigured,
    SsoLinked,
    SsoLoginFailed,
    SsoLoginSucceeded,
    SsoMemberCreated,
    StaffAdded,
    StaffLoginFailed,
    StaffLoginSucceeded,
    StaffLogout,
    StaffRemoved,
    SupportRotationConfirmed,
    SupportViewed,
    TokenReleased,
    TokenRotated,
    TokenRotationFailed,
    TokenSupportRotated,
    WorkspaceCreated,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ChallengeApproved => "challenge.approved",
            Kind::ChallengeCreated => "challenge.created",
            Kind::ChallengeDenied => "challenge.denied",
            Kind::ChallengeExpired => "challenge.expired",
            Kind::ChallengeFirstApproved => "challenge.first_approved",
            Kind::DeviceEnrolled => "device.enrolled",
            Kind::DeviceRemoved => "device.removed",
            Kind::EnrollmentStarted => "enrollment.started",
            Kind::KeysRotated => "keys.rotated",
            Kind::KeysRotationPaused => "keys.rotation_paused",
            Kind::LoginFailed => "login.failed",
            Kind::LoginRefused => "login.refused",
            Kind::LoginSucceeded => "login.succeeded",
            Kind::Logout => "logout",
            Kind::MemberAdded => "member.added",
            Kind::MemberDevicesReset => "member.devices_reset",
            Kind::MemberInvitationAccepted => "member.invitation_accepted",
            Kind::MemberInvited => "member.invited",
            Kind::MemberRemoved => "member.removed",
            Kind::MemberRoleChanged => "member.role_changed",
            Kind::PolicyChanged => "policy.changed",
            Kind::ReauthFailed => "reauth.failed",
            Kind::ScimSchemasDeclared => "scim.schemas_declared",
            Kind::ScimTokenRefused => "scim.token_refused",
            Kind::SecurityChallengeLimit => "security.challenge_limit",
            Kind::SecurityLoginCeiling => "security.login_ceiling",
            Kind::SecuritySuspectedAttack => "security.suspected_attack",
            Kind::SessionReauthenticated => "session.reauthenticated",
            Kind::SsoConfigured => "sso.configured",
            Kind::SsoLinked => "sso.linked",
            Kind::SsoLoginFailed => "sso.login.failed",
            Kind::SsoLoginSucceeded => "sso.login.succeeded",
            Kind::SsoMemberCreated => "sso.member.created",
            Kind::StaffAdded => "staff.added",
            Kind::StaffLoginFailed => "staff.login.failed",
            Kind::StaffLoginSucceeded => "staff.login.succeeded",
            Kind::StaffLogout => "staff.logout",
            Kind::StaffRemoved => "staff.removed",
            Kind::SupportRotationConfirmed => "support.rotation_confirmed",
            Kind::SupportViewed => "support.viewed",
            Kind::TokenReleased => "token.released",
            Kind::TokenRotated => "token.rotated",
            Kind::TokenRotationFailed => "token.rotation_failed",
            Kind::TokenSupportRotated => "token.support_rotated",
            Kind::WorkspaceCreated => "workspace.created",
        }
    }
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
