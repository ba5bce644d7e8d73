-- Invitation links (issue 16): instead of a one-time password the inviter passes on, a link that
-- works once within 24 hours and lets the invitee choose their own password. Only the link's
-- token's SHA-256 is kept; the invitation goes with its person.
CREATE TABLE invitations (
    token_hash  TEXT PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);
CREATE INDEX invitations_user ON invitations (user_id);
