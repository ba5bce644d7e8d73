-- Single sign-on re-authentication (issue 12): a sign-in started with `?reauth=1` remembers the
-- console session it re-authenticates, by the SHA-256 of the session id that `sessions.id_hash`
-- already holds (never the cookie itself). NULL for an ordinary sign-in.
ALTER TABLE sso_pending ADD COLUMN reauth_session_hash TEXT;
