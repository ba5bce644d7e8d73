-- The tables of migrations/sqlite/0004_sso.sql, in Postgres types (see src/store/sso.rs). Times are
-- Unix seconds (BIGINT), like 0001.

CREATE TABLE sso_configs (
    workspace_id           BIGINT PRIMARY KEY REFERENCES workspaces(id) ON DELETE CASCADE,
    issuer                 TEXT NOT NULL,
    client_id              TEXT NOT NULL,
    secret_key_id          TEXT NOT NULL,
    secret_nonce           BYTEA NOT NULL,
    secret_ciphertext      BYTEA NOT NULL,
    allowed_email_domains  TEXT[] NOT NULL DEFAULT '{}',
    default_role           TEXT NOT NULL CHECK (default_role IN ('admin', 'member')),
    enforce                BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at             BIGINT NOT NULL,
    updated_by             TEXT NOT NULL
);

CREATE TABLE sso_pending (
    state_hash       TEXT PRIMARY KEY,
    workspace_id     BIGINT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    issuer           TEXT NOT NULL,
    nonce_hash       TEXT NOT NULL,
    binding_hash     TEXT NOT NULL,
    pkce_key_id      TEXT NOT NULL,
    pkce_nonce       BYTEA NOT NULL,
    pkce_ciphertext  BYTEA NOT NULL,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    used_at          BIGINT
);
CREATE INDEX sso_pending_expiry ON sso_pending (expires_at);

CREATE TABLE sso_links (
    workspace_id  BIGINT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    issuer        TEXT NOT NULL,
    sub           TEXT NOT NULL,
    user_id       BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, issuer, sub),
    UNIQUE (user_id, issuer)
);
