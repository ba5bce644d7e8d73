-- The same tables as migrations/sqlite/0001_foundation.sql, in Postgres types. Times are Unix
-- seconds (BIGINT) like SQLite's, so both backends share one store contract. Secrets are stored
-- hashed (sessions, enrollment codes, token lookup) or sealed with AES-256-GCM under a named master
-- key (SCIM tokens, push tokens).

CREATE TABLE workspaces (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE users (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id   BIGINT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    email          TEXT NOT NULL,
    email_lower    TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    password_hash  TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    UNIQUE (workspace_id, email_lower)
);

CREATE TABLE sessions (
    id_hash       TEXT PRIMARY KEY,
    user_id       BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at    BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expiry ON sessions (expires_at);

CREATE TABLE enrollment_codes (
    code_hash   TEXT PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX enrollment_codes_user ON enrollment_codes (user_id);
CREATE INDEX enrollment_codes_expiry ON enrollment_codes (expires_at);

CREATE TABLE devices (
    id                  TEXT PRIMARY KEY,
    user_id             BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name                TEXT NOT NULL,
    platform            TEXT NOT NULL CHECK (platform IN ('apns', 'fcm')),
    apns_environment    TEXT CHECK (apns_environment IN ('production', 'sandbox')),
    public_key          JSONB NOT NULL,
    push_key_id         TEXT,
    push_nonce          BYTEA,
    push_ciphertext     BYTEA,
    push_token_invalid  BOOLEAN NOT NULL DEFAULT FALSE,
    created_at          BIGINT NOT NULL,
    last_seen_at        BIGINT
);
CREATE INDEX devices_user ON devices (user_id);

-- Device request JWS ids, kept while the JWS could still be accepted, so a replay is refused
-- across restarts and instances.
CREATE TABLE used_jtis (
    device_id   TEXT NOT NULL,
    jti         TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (device_id, jti)
);
CREATE INDEX used_jtis_expiry ON used_jtis (expires_at);

CREATE TABLE scim_tokens (
    workspace_id  BIGINT PRIMARY KEY REFERENCES workspaces(id) ON DELETE CASCADE,
    token_hash    BYTEA NOT NULL UNIQUE,
    key_id        TEXT NOT NULL,
    nonce         BYTEA NOT NULL,
    ciphertext    BYTEA NOT NULL,
    created_at    BIGINT NOT NULL,
    created_by    TEXT NOT NULL
);

CREATE TABLE audit_log (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id  BIGINT,
    at            BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    actor         TEXT,
    ip            TEXT,
    device_id     TEXT,
    detail        JSONB NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_workspace ON audit_log (workspace_id, id);
