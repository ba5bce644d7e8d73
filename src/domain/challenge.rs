//! The step-up challenge: what is asked, of whom, from where, and the two-digit number the phone
//! must match. A plain state machine (`pending → approved | denied | expired`, `approved →
//! released | expired`); stores make its transitions atomic by compare-and-swap on `version`.

use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::crypto::random_b64url;
use super::people::Role;

/// How long an ended challenge stays readable by its session (CONTRACT.md section 3).
pub const RETAIN_AFTER_END: Duration = Duration::minutes(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    #[serde(rename = "scim_token.reveal")]
    Reveal,
    #[serde(rename = "scim_token.rotate")]
    Rotate,
    #[serde(rename = "scim_token.support_rotate")]
    SupportRotate,
    /// Adding a phone when the person already has one: a session alone never adds a phone.
    #[serde(rename = "device.enroll")]
    DeviceEnroll,
    /// An owner or admin removes every phone of a member who lost theirs (`Challenge::subject`).
    #[serde(rename = "member.devices_reset")]
    MemberDevicesReset,
    /// An owner raises a member to admin or owner (`Subject::role`), on the owner's own phones.
    #[serde(rename = "member.promote")]
    MemberPromote,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Reveal => "scim_token.reveal",
            Action::Rotate => "scim_token.rotate",
            Action::SupportRotate => "scim_token.support_rotate",
            Action::DeviceEnroll => "device.enroll",
            Action::MemberDevicesReset => "member.devices_reset",
            Action::MemberPromote => "member.promote",
        }
    }

    /// The least role a person must still hold when their phone approves it: roles may change
    /// while a challenge waits (an admin demoted to member approves nothing of an admin's). A
    /// phone is only ever enrolled for itself (no role needed); support staff hold `Admin` in
    /// their realm.
    pub fn approver_role(self) -> Option<Role> {
        match self {
            Action::DeviceEnroll => None,
            Action::MemberPromote => Some(Role::Owner),
            Action::Reveal
            | Action::Rotate
            | Action::SupportRotate
            | Action::MemberDevicesReset => Some(Role::Admin),
        }
    }

    /// Approving it makes a new token.
    pub fn rotates(self) -> bool {
        matches!(self, Action::Rotate | Action::SupportRotate)
    }

    /// Its release hands over the SCIM token (the console's View Token and Regenerate).
    pub fn releases_token(self) -> bool {
        matches!(self, Action::Reveal | Action::Rotate)
    }

    /// Words for a push alert or a log line.
    pub fn describe(self) -> &'static str {
        match self {
            Action::Reveal => "View the SCIM token",
            Action::Rotate => "Regenerate the SCIM token",
            Action::SupportRotate => "Support: rotate the SCIM token",
            Action::DeviceEnroll => "Add a new phone to your account",
            Action::MemberDevicesReset => "Reset a member's phones",
            Action::MemberPromote => "Give a member more rights",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Approved,
    Denied,
    Expired,
    Released,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Expired => "expired",
            Status::Released => "released",
        }
    }

    /// Nothing more to wait for on the browser's side once a challenge is here.
    pub fn ends_the_wait(self) -> bool {
        self != Status::Pending
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    NotMe,
    Mistake,
    WrongNumber,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NotMe => "not_me",
            DenyReason::Mistake => "mistake",
            DenyReason::WrongNumber => "wrong_number",
        }
    }
}

/// Where the request came from, shown on the phone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub ip: String,
    pub user_agent: String,
}

/// Who asks for what; the rest of a challenge is made here.
#[derive(Clone, Debug)]
pub struct Request {
    pub action: Action,
    pub workspace_id: i64,
    pub workspace_slug: String,
    pub workspace_name: String,
    pub user_id: i64,
    pub user_email: String,
    /// Hash of the session that asked: only it may read and release the challenge.
    pub session_hash: String,
    pub origin: Origin,
    /// Set for a support rotation: why support acts, shown on the phone and signed by it.
    pub support: Option<SupportContext>,
    /// Under the two-person rule: who may give the second approval after the requester's.
    pub second_approvers: Vec<i64>,
    /// The person the action is about, when it is not the requester (a member's phones reset).
    pub subject: Option<Subject>,
}

/// The person an action is about, shown on the phone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub user_id: i64,
    pub email: String,
    /// For a promotion: the role the member gets at the release, shown on the phone.
    #[serde(default)]
    pub role: Option<Role>,
}

/// Why a support engineer asks to rotate a workspace's token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupportContext {
    pub ticket: String,
    pub reason: String,
}

/// The requester's own approval, kept while the challenge waits for a second person's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstApproval {
    pub device_id: String,
    #[serde(with = "time::serde::timestamp")]
    pub at: OffsetDateTime,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub id: String,
    pub action: Action,
    pub workspace_id: i64,
    pub workspace_slug: String,
    pub workspace_name: String,
    pub user_id: i64,
    pub user_email: String,
    pub session_hash: String,
    pub nonce: String,
    pub number: u8,
    pub number_choices: [u8; 3],
    pub origin: Origin,
    #[serde(with = "time::serde::timestamp")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::timestamp")]
    pub expires_at: OffsetDateTime,
    pub status: Status,
    #[serde(with = "time::serde::timestamp::option")]
    pub ended_at: Option<OffsetDateTime>,
    pub decided_by_device: Option<String>,
    pub deny_reason: Option<DenyReason>,
    #[serde(default)]
    pub support: Option<SupportContext>,
    /// Under the two-person rule, the people who may give the second approval (never the
    /// requester); empty when one approval is enough.
    #[serde(default)]
    pub second_approvers: Vec<i64>,
    #[serde(default)]
    pub subject: Option<Subject>,
    /// The requester's approval once given under the two-person rule; the challenge then stays
    /// `pending`, with a fresh nonce, until one of `second_approvers` decides.
    #[serde(default)]
    pub first_approval: Option<FirstApproval>,
    /// For a rotation: when the new token was made, after the approval. Only then may it be
    /// released (and only then are waiters told it is approved).
    #[serde(default, with = "time::serde::timestamp::option")]
    pub rotated_at: Option<OffsetDateTime>,
    /// For a rotation: when the work after its approval (the new token, then `rotated_at`) last
    /// began; set by the approval. Work that began long ago and never ended (the process died in
    /// between) is taken up again by `claim_rotation`.
    #[serde(default, with = "time::serde::timestamp::option")]
    pub rotation_started_at: Option<OffsetDateTime>,
    /// Bumped by every transition; stores swap only when it is unchanged (one winner per race).
    pub version: u64,
}

/// A verified decision, already known to come from `device_id` (its signature checked).
#[derive(Clone, Debug)]
pub struct Decision {
    pub device_id: String,
    pub device_user_id: i64,
    pub challenge_id: String,
    pub nonce: String,
    pub action: String,
    pub approve: bool,
    pub number: Option<u8>,
    pub reason: Option<DenyReason>,
    /// The workspace slug and ticket a support rotation's decision signed (None otherwise).
    pub workspace: Option<String>,
    pub ticket: Option<String>,
}

impl Decision {
    /// The decision a phone signed (its signature already verified by `device_id`'s key), in
    /// the words of CONTRACT.md section 4: `approve` or `deny`, a reason `not_me` or `mistake`.
    pub fn from_claims(
        claims: crate::domain::device::DecisionClaims,
        device_id: &str,
        device_user_id: i64,
    ) -> Result<Decision, DecideError> {
        let approve = match claims.decision.as_str() {
            "approve" => true,
            "deny" => false,
            _ => return Err(DecideError::BadDecision),
        };
        let reason = match claims.reason.as_deref() {
            None => None,
            Some("not_me") => Some(DenyReason::NotMe),
            Some("mistake") => Some(DenyReason::Mistake),
            Some(_) => return Err(DecideError::BadReason),
        };
        Ok(Decision {
            device_id: device_id.to_owned(),
            device_user_id,
            challenge_id: claims.sub,
            nonce: claims.nonce,
            action: claims.action,
            approve,
            number: claims.number,
            reason,
            workspace: claims.workspace,
            ticket: claims.ticket,
        })
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    #[error("decision must be approve or deny")]
    BadDecision,
    #[error("reason must be not_me or mistake")]
    BadReason,
    /// An approval with the wrong number: the challenge was denied.
    #[error("the number does not match the one shown")]
    WrongNumber,
    #[error("the device does not belong to the person the challenge asks")]
    NotTheOwner,
    #[error("the decision was signed for another challenge, nonce or action")]
    Mismatch,
    #[error("the challenge is no longer pending")]
    NotPending,
    /// The approving person no longer holds the role the action needs (`Action::approver_role`).
    #[error("the approving person no longer holds the role this action needs")]
    RoleLost,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Approved,
    /// The requester approved under the two-person rule: the challenge now waits for a second
    /// person (still `pending`).
    FirstApproved,
    Denied(Option<DenyReason>),
    /// An approval with the wrong number: the challenge is denied, the caller answers 422.
    WrongNumber,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    #[error("the challenge is not approved")]
    NotApproved,
    #[error("the token was already released")]
    AlreadyReleased,
    #[error("the new token is still being made")]
    NotRotatedYet,
}

fn two_digit(rng: &mut impl Rng) -> u8 {
    rng.gen_range(10..=99)
}

impl Challenge {
    pub fn new(req: Request, now: OffsetDateTime, ttl: Duration, rng: &mut impl Rng) -> Self {
        let number = two_digit(rng);
        let mut choices = vec![number];
        while choices.len() < 3 {
            let decoy = two_digit(rng);
            if !choices.contains(&decoy) {
                choices.push(decoy);
            }
        }
        choices.shuffle(rng);
        Self {
            id: random_b64url::<16>(),
            action: req.action,
            workspace_id: req.workspace_id,
            workspace_slug: req.workspace_slug,
            workspace_name: req.workspace_name,
            user_id: req.user_id,
            user_email: req.user_email,
            session_hash: req.session_hash,
            nonce: random_b64url::<32>(),
            number,
            number_choices: [choices[0], choices[1], choices[2]],
            origin: req.origin,
            created_at: now,
            expires_at: now + ttl,
            status: Status::Pending,
            ended_at: None,
            decided_by_device: None,
            deny_reason: None,
            support: req.support,
            second_approvers: req.second_approvers,
            subject: req.subject,
            first_approval: None,
            rotated_at: None,
            rotation_started_at: None,
            version: 0,
        }
    }

    fn end(&mut self, status: Status, now: OffsetDateTime) {
        self.status = status;
        self.ended_at = Some(now);
        self.version += 1;
    }

    /// A pending or approved (not yet released) challenge expires at `expires_at`.
    pub fn is_due(&self, now: OffsetDateTime) -> bool {
        matches!(self.status, Status::Pending | Status::Approved) && now >= self.expires_at
    }

    /// Applies expiry if it is due; true when the status changed.
    pub fn expire_if_due(&mut self, now: OffsetDateTime) -> bool {
        if self.is_due(now) {
            self.end(Status::Expired, now);
            true
        } else {
            false
        }
    }

    /// A newer challenge for the same person and action replaces this one while it is pending.
    pub fn supersede(&mut self, now: OffsetDateTime) -> bool {
        if self.status == Status::Pending {
            self.end(Status::Expired, now);
            true
        } else {
            false
        }
    }

    /// Who may decide now: the requester, or under the two-person rule once the requester has
    /// approved, one of the second approvers.
    pub fn deciders(&self) -> Vec<i64> {
        if self.first_approval.is_some() {
            self.second_approvers.clone()
        } else {
            vec![self.user_id]
        }
    }

    /// The status clients are shown: an approved rotation reads `pending` until its new token is
    /// made, so nobody tries to release it before that.
    pub fn shown_status(&self) -> Status {
        match self.status {
            Status::Approved if self.action.rotates() && self.rotated_at.is_none() => {
                Status::Pending
            }
            status => status,
        }
    }

    pub fn awaits_second_approval(&self) -> bool {
        self.status == Status::Pending && self.first_approval.is_some()
    }

    /// What a pending challenge still waits for beyond a phone's answer, as clients are told.
    pub fn awaiting(&self) -> Option<&'static str> {
        self.awaits_second_approval().then_some("second_approval")
    }

    pub fn decide(&mut self, d: &Decision, now: OffsetDateTime) -> Result<Outcome, DecideError> {
        if !self.deciders().contains(&d.device_user_id) {
            return Err(DecideError::NotTheOwner);
        }
        if d.challenge_id != self.id || d.nonce != self.nonce || d.action != self.action.as_str() {
            return Err(DecideError::Mismatch);
        }
        // What a support rotation's phone showed is what it signed: the workspace and the ticket.
        if self.action == Action::SupportRotate || self.support.is_some() {
            let Some(support) = &self.support else {
                return Err(DecideError::Mismatch);
            };
            if d.workspace.as_deref() != Some(self.workspace_slug.as_str())
                || d.ticket.as_deref() != Some(support.ticket.as_str())
            {
                return Err(DecideError::Mismatch);
            }
        }
        self.expire_if_due(now);
        if self.status != Status::Pending {
            return Err(DecideError::NotPending);
        }
        self.decided_by_device = Some(d.device_id.clone());
        if !d.approve {
            self.deny_reason = d.reason;
            self.end(Status::Denied, now);
            return Ok(Outcome::Denied(d.reason));
        }
        if d.number != Some(self.number) {
            self.deny_reason = Some(DenyReason::WrongNumber);
            self.end(Status::Denied, now);
            return Ok(Outcome::WrongNumber);
        }
        if !self.second_approvers.is_empty() && self.first_approval.is_none() {
            // The second person signs a fresh nonce: the first approval cannot be replayed as it.
            self.first_approval = Some(FirstApproval {
                device_id: d.device_id.clone(),
                at: now,
            });
            self.nonce = random_b64url::<32>();
            // The second person gets a whole lifetime of their own, not what the first left.
            self.expires_at = now + (self.expires_at - self.created_at);
            self.version += 1;
            return Ok(Outcome::FirstApproved);
        }
        // Approved is not an end: the release (or expiry) still follows.
        self.status = Status::Approved;
        if self.action.rotates() {
            self.rotation_started_at = Some(now);
        }
        self.version += 1;
        Ok(Outcome::Approved)
    }

    /// Takes up an approved rotation whose work began at least `stale` ago and never ended. Returns
    /// when that work had begun (the approval, at first), or None when there is nothing to take
    /// up; of two racing claims, the compare-and-swap lets one win.
    pub fn claim_rotation(
        &mut self,
        now: OffsetDateTime,
        stale: Duration,
    ) -> Option<OffsetDateTime> {
        if self.status != Status::Approved || !self.action.rotates() || self.rotated_at.is_some() {
            return None;
        }
        let began = self.rotation_started_at.unwrap_or(self.created_at);
        if now - began < stale {
            return None;
        }
        self.rotation_started_at = Some(now);
        self.version += 1;
        Some(began)
    }

    /// Records that the approved rotation made its new token; true when this changed anything.
    pub fn mark_rotated(&mut self, at: OffsetDateTime) -> bool {
        if self.status == Status::Approved && self.rotated_at.is_none() {
            self.rotated_at = Some(at);
            self.version += 1;
            true
        } else {
            false
        }
    }

    pub fn release(&mut self, now: OffsetDateTime) -> Result<(), ReleaseError> {
        self.expire_if_due(now);
        match self.status {
            Status::Approved if self.action.rotates() && self.rotated_at.is_none() => {
                Err(ReleaseError::NotRotatedYet)
            }
            Status::Approved => {
                self.end(Status::Released, now);
                Ok(())
            }
            Status::Released => Err(ReleaseError::AlreadyReleased),
            _ => Err(ReleaseError::NotApproved),
        }
    }

    /// When a store may forget this challenge.
    pub fn retain_until(&self) -> OffsetDateTime {
        self.ended_at
            .unwrap_or(self.expires_at)
            .max(self.expires_at)
            + RETAIN_AFTER_END
    }
}

#[cfg(test)]
#[path = "challenge_tests.rs"]
mod tests;
