-- A stolen console session is not enough (issue 12). A session remembers when its person last
-- proved who they are (sign-in or re-authentication) and how: a first phone is enrolled only
-- within ASSENT_REAUTH_WINDOW_SECS of that, and a single sign-on session re-authenticates at its
-- provider rather than with a password.
ALTER TABLE sessions ADD COLUMN authenticated_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN method TEXT NOT NULL DEFAULT 'password' CHECK (method IN ('password', 'sso'));
UPDATE sessions SET authenticated_at = created_at;

-- A code handed out without any phone's approval (the first phone, under the reauth window)
-- enrolls only while its person still has no phone.
ALTER TABLE enrollment_codes ADD COLUMN first_device BOOLEAN NOT NULL DEFAULT FALSE;

-- When each person last signed in (password or single sign-on), for the members list.
ALTER TABLE users ADD COLUMN last_sign_in_at BIGINT;
