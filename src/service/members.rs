//! The people of a workspace as its owners and admins see and change them (CONTRACT.md section
//! 3a): the list, invitations with a one-time password, role changes (a promotion behind the
//! owner's own step-up, `member.promote`), and removal. Every change is written with its audit
//! entry in one transaction (`store/members.rs`), so neither exists without the other, and the
//! last owner can be neither demoted nor removed, even by two owners at the same moment.

use serde_json::json;
use time::{Duration, OffsetDateTime};

use super::accounts::{valid_email, SignedIn};
use super::stepup::Released;
use super::About;
use super::{Caller, ConsoleSession};
use crate::app::App;
use crate::domain::audit::Kind;
use crate::domain::challenge::{Action, Challenge, Subject};
use crate::domain::crypto::{random_b64url, sha256_hex, Secret};
use crate::domain::password;
use crate::error::{ApiError, ApiResult};
use crate::service::audit::Audit;
use crate::store::{
    AuthMethod, Invitee, Member, MemberChange, NewInvitation, Role, StoreError, User,
};

/// How long an invitation link works (issue 16).
pub const INVITATION_LIFETIME: Duration = Duration::hours(24);

/// What an invitation hands the inviter, once.
pub enum Invited {
    /// The one-time password (CONTRACT.md section 3a).
    Password(Secret),
    /// A link that works once until `expires_at`; the invitee chooses their own password, which
    /// the inviter never learns.
    Link {
        url: Secret,
        expires_at: OffsetDateTime,
    },
}

/// What a role change did: at once (a demotion, or nothing to change), or a step-up to approve.
pub enum RoleChange {
    Changed(User),
    StepUp(Box<Challenge>, usize),
}

/// The shortest password an invitee may choose (a generated one is 20 characters).
const MIN_CHOSEN_PASSWORD: usize = 12;

const LAST_OWNER: &str =
    "the workspace's last owner cannot be demoted or removed; make another owner first";

impl App {
    /// Everyone in the caller's workspace, with their phones and last sign-in; owners and admins
    /// only.
    pub async fn members(&self, session: &ConsoleSession) -> ApiResult<Vec<Member>> {
        if session.user.role < Role::Admin {
            return Err(ApiError::Forbidden(
                "only owners and admins may list the members",
            ));
        }
        Ok(self.store.members(session.workspace.id).await?)
    }

    /// Adds a person to the caller's workspace with a generated one-time password, returned
    /// once (only its Argon2id hash is kept), or an invitation link. Owners invite any role, admins
    /// only members; an admin or owner only from a session authenticated within the reauth window.
    pub async fn invite_member(
        &self,
        session: &ConsoleSession,
        email: &str,
        role: Role,
        link: bool,
        caller: &Caller,
    ) -> ApiResult<(User, Invited)> {
        match session.user.role {
            Role::Member => {
                return Err(ApiError::Forbidden(
                    "only owners and admins may invite people",
                ))
            }
            Role::Admin if role != Role::Member => {
                return Err(ApiError::Forbidden(
                    "admins invite members only; an owner invites admins and owners",
                ))
            }
            _ => {}
        }
        let email = email.trim();
        if !valid_email(email) {
            return Err(ApiError::BadRequest("e-mail is not a valid address".into()));
        }
        // A new admin or owner can enroll a first phone and view the token: a stolen session
        // cookie must not be able to make one (issue 12's rule, as for a first phone).
        if role > Role::Member {
            self.require_fresh_authentication(session)?;
        }
        crate::error::unless_client_left()?;
        // With a link, the password is one nobody ever sees: the invitee sets their own.
        let password = Secret::new(password::generate());
        let hash = self.hasher.hash(password.clone()).await;
        let now = self.now();
        let token = link.then(|| Secret::new(random_b64url::<32>()));
        let new_link = token.as_ref().map(|t| NewInvitation {
            token_hash: sha256_hex(t.expose().as_bytes()),
            expires_at: now + INVITATION_LIFETIME,
        });
        let entry = Audit::new(Kind::MemberInvited)
            .workspace(session.workspace.id)
            .actor(&session.user.email)
            .ip(&caller.ip)
            .detail(json!({
                "member": email,
                "role": role.as_str(),
                "delivery": if link { "link" } else { "password" },
            }));
        match self
            .store
            .invite_member(
                &Invitee {
                    workspace_id: session.workspace.id,
                    email: email.to_owned(),
                    role,
                    password_hash: hash,
                    link: new_link,
                },
                now,
                entry.into_event(),
            )
            .await
        {
            Ok(user) => Ok((
                user,
                match token {
                    // In the fragment: a browser never sends it to a server, nor in a Referer.
                    Some(token) => Invited::Link {
                        url: Secret::new(format!(
                            "{}/#invitation={}",
                            self.config.public_url.trim_end_matches('/'),
                            token.expose()
                        )),
                        expires_at: now + INVITATION_LIFETIME,
                    },
                    None => Invited::Password(password),
                },
            )),
            Err(StoreError::Conflict) => Err(ApiError::Conflict(format!(
                "{email} is already a member of this workspace"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// The invitee follows their link and chooses a password: the link is spent, the password
    /// set, and they are signed in. An unknown link is 404, a used or expired one 410.
    pub async fn accept_invitation(
        &self,
        token: &Secret,
        password: Secret,
        caller: &Caller,
    ) -> ApiResult<SignedIn> {
        let length = password.expose().chars().count();
        if !(MIN_CHOSEN_PASSWORD..=1024).contains(&length) {
            return Err(ApiError::Unprocessable(format!(
                "choose a password of at least {MIN_CHOSEN_PASSWORD} characters"
            )));
        }
        let token_hash = sha256_hex(token.expose().as_bytes());
        let invitation = self
            .store
            .invitation(&token_hash)
            .await?
            .ok_or(ApiError::NotFound)?;
        let spent = || {
            ApiError::Gone(
                "this invitation link was used or has expired; ask for a new invitation".into(),
            )
        };
        if invitation.used_at.is_some() || invitation.expires_at <= self.now() {
            return Err(spent());
        }
        let user = self
            .store
            .user_by_id(invitation.user_id)
            .await?
            .ok_or(ApiError::NotFound)?;
        let workspace = self
            .store
            .workspace_by_id(user.workspace_id)
            .await?
            .ok_or(ApiError::NotFound)?;
        if user.role != Role::Owner && self.sso_enforced(workspace.id).await? {
            return Err(ApiError::Forbidden(
                "this workspace signs in with single sign-on: use \"Sign in with single sign-on\"",
            ));
        }
        crate::error::unless_client_left()?;
        let hash = self.hasher.hash(password).await;
        let entry = Audit::new(Kind::MemberInvitationAccepted)
            .workspace(workspace.id)
            .actor(&user.email)
            .ip(&caller.ip)
            .detail(json!({"user_agent": caller.user_agent}));
        if !self
            .store
            .accept_invitation(&token_hash, user.id, &hash, self.now(), entry.into_event())
            .await?
        {
            return Err(spent());
        }
        let session_id = self.start_session(&user, AuthMethod::Password).await?;
        Ok(SignedIn {
            session_id,
            user: User {
                password_hash: hash,
                ..user
            },
            workspace,
        })
    }

    /// The member of the caller's workspace with this id; anyone else is "not found".
    async fn member_of(&self, session: &ConsoleSession, id: i64) -> ApiResult<User> {
        self.store
            .user_by_id(id)
            .await?
            .filter(|u| u.workspace_id == session.workspace.id)
            .ok_or(ApiError::NotFound)
    }

    /// An owner changes a member's role. Lowering it (or keeping it) happens at once; raising it
    /// to admin or owner is a `member.promote` challenge on the owner's own phones, applied at
    /// its release.
    pub async fn change_role(
        &self,
        session: &ConsoleSession,
        id: i64,
        role: Role,
        caller: &Caller,
    ) -> ApiResult<RoleChange> {
        if session.user.role != Role::Owner {
            return Err(ApiError::Forbidden("only owners change roles"));
        }
        let member = self.member_of(session, id).await?;
        if role == member.role {
            return Ok(RoleChange::Changed(member));
        }
        if role < member.role {
            let changed = self.set_role(session, &member, role, caller, None).await?;
            return Ok(RoleChange::Changed(changed));
        }
        let policy = self.store.policy(session.workspace.id).await?;
        let (challenge, notified) = self
            .open_challenge(
                session,
                &session.workspace,
                Action::MemberPromote,
                About {
                    support: None,
                    subject: Some(Subject {
                        user_id: member.id,
                        email: member.email.clone(),
                        role: Some(role),
                    }),
                },
                &policy,
                caller,
            )
            .await?;
        Ok(RoleChange::StepUp(Box::new(challenge), notified))
    }

    /// Writes `member`'s new role with its audit entry (naming the approved challenge, if any).
    async fn set_role(
        &self,
        session: &ConsoleSession,
        member: &User,
        role: Role,
        caller: &Caller,
        challenge: Option<&Challenge>,
    ) -> ApiResult<User> {
        let mut detail =
            json!({"member": member.email, "from": member.role.as_str(), "to": role.as_str()});
        if let Some(c) = challenge {
            detail["challenge"] = json!(c.id);
        }
        let entry = Audit::new(Kind::MemberRoleChanged)
            .workspace(session.workspace.id)
            .actor(&session.user.email)
            .ip(&caller.ip)
            .device(challenge.and_then(|c| c.decided_by_device.as_deref()))
            .detail(detail);
        let change = self
            .store
            .set_member_role(
                session.workspace.id,
                member.id,
                member.role,
                role,
                self.now(),
                entry.into_event(),
            )
            .await?;
        match change {
            MemberChange::Done(before) => Ok(User { role, ..before }),
            MemberChange::NoSuchMember => Err(ApiError::NotFound),
            MemberChange::LastOwner => Err(ApiError::Conflict(LAST_OWNER.into())),
            MemberChange::RoleMoved => Err(ApiError::Conflict(
                "the member's role changed meanwhile; reload and try again".into(),
            )),
        }
    }

    /// The release of an approved `member.promote`: once, to the owner who asked (still an
    /// owner), and only if the member is still there and below the role approved.
    pub(super) async fn release_promotion(
        &self,
        asked: &Challenge,
        session: &ConsoleSession,
        caller: &Caller,
    ) -> ApiResult<Released> {
        let is_promote = |a| a == Action::MemberPromote;
        self.releasable(asked, is_promote)?;
        if session.user.role != Role::Owner {
            return Err(ApiError::Forbidden("only owners change roles"));
        }
        let subject = asked.subject.as_ref().ok_or(ApiError::Internal)?;
        let role = subject.role.ok_or(ApiError::Internal)?;
        // The member may have been removed, or their role changed, while the phone decided.
        let member = self.member_of(session, subject.user_id).await?;
        if member.role >= role {
            return Err(ApiError::Conflict(format!(
                "{} is already {}",
                member.email,
                member.role.as_str()
            )));
        }
        // Released first (compare-and-swap, once): two releases racing apply it at most once.
        let released = self
            .release_challenge(&asked.id, &session.id_hash, is_promote)
            .await?;
        let member = self
            .set_role(session, &member, role, caller, Some(&released))
            .await?;
        Ok(Released::Promoted {
            member_id: member.id,
            role,
        })
    }

    /// An owner removes a member: their sessions, phones and password end in one transaction,
    /// with its audit entry (which names the phones); the owners' phones are told. The last
    /// owner stays.
    pub async fn remove_member(
        &self,
        session: &ConsoleSession,
        id: i64,
        caller: &Caller,
    ) -> ApiResult<()> {
        if session.user.role != Role::Owner {
            return Err(ApiError::Forbidden("only owners remove members"));
        }
        let member = self.member_of(session, id).await?;
        crate::error::unless_client_left()?;
        // Their phones go with them: on record by id, and the owners are told (CONTRACT.md
        // section 3: whenever a device is removed from a person).
        let devices = self.store.devices_of_user(member.id).await?;
        let ids: Vec<&str> = devices.iter().map(|d| d.id.as_str()).collect();
        let entry = Audit::new(Kind::MemberRemoved)
            .workspace(session.workspace.id)
            .actor(&session.user.email)
            .ip(&caller.ip)
            .detail(json!({"member": member.email, "role": member.role.as_str(), "devices": ids}));
        match self
            .store
            .remove_member(
                session.workspace.id,
                member.id,
                self.now(),
                entry.into_event(),
            )
            .await?
        {
            MemberChange::Done(_) => {
                // One notice for the lot, as a reset sends.
                if let Some(first) = devices.first() {
                    self.after_removal(&member, &first.id).await;
                }
                Ok(())
            }
            MemberChange::NoSuchMember | MemberChange::RoleMoved => Err(ApiError::NotFound),
            MemberChange::LastOwner => Err(ApiError::Conflict(LAST_OWNER.into())),
        }
    }
}
