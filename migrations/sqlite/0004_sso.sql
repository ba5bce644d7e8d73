-- Single sign-on with OpenID Connect (src/store/sso.rs). Times are Unix seconds, like 0001.

-- One provider per workspace. The client secret is sealed with AES-256-GCM under a named master key,
-- like the SCIM token; allowed_email_domains is a JSON array of lower-case domains.
CREATE TABLE sso_configs (
    workspace_id           INTEGER PRIMARY KEY REFERENCES workspaces(id) ON DELETE CASCADE,
    issuer                 TEXT NOT NULL,
    client_id              TEXT NOT NULL,
    secret_key_id          TEXT NOT NULL,
    secret_nonce           BLOB NOT NULL,
    secret_ciphertext      BLOB NOT NULL,
    allowed_email_domains  TEXT NOT NULL DEFAULT '[]',
    default_role           TEXT NOT NULL CHECK (default_role IN ('admin', 'member')),
    enforce                INTEGER NOT NULL DEFAULT 0,
    updated_at             INTEGER NOT NULL,
    updated_by             TEXT NOT NULL
);

-- A started sign-in, keyed by the SHA-256 of its `state`. The nonce and the browser binding are kept
-- hashed (only compared); the PKCE verifier is sealed (it is sent to the token endpoint). Single
-- use: `used_at` is set by the one callback that takes it.
CREATE TABLE sso_pending (
    state_hash       TEXT PRIMARY KEY,
    workspace_id     INTEGER NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    issuer           TEXT NOT NULL,
    nonce_hash       TEXT NOT NULL,
    binding_hash     TEXT NOT NULL,
    pkce_key_id      TEXT NOT NULL,
    pkce_nonce       BLOB NOT NULL,
    pkce_ciphertext  BLOB NOT NULL,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    used_at          INTEGER
);
CREATE INDEX sso_pending_expiry ON sso_pending (expires_at);

-- The provider's `sub` of a member, recorded at their first single sign-on: later sign-ins follow
-- the link, not the e-mail, so an e-mail changed at the provider cannot reach another member.
-- One subject per member and issuer.
CREATE TABLE sso_links (
    workspace_id  INTEGER NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    issuer        TEXT NOT NULL,
    sub           TEXT NOT NULL,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, issuer, sub),
    UNIQUE (user_id, issuer)
);
