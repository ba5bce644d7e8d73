-- Times are Unix seconds (INTEGER). Secrets are stored hashed (sessions, enrollment codes, token
-- lookup) or sealed with AES-256-GCM under a named master key (SCIM tokens, push tokens).

CREATE TABLE workspaces (
    id          INTEGER PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE users (
    id             INTEGER PRIMARY KEY,
    workspace_id   INTEGER NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    email          TEXT NOT NULL,
    email_lower    TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    password_hash  TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    UNIQUE (workspace_id, email_lower)
);

CREATE TABLE sessions (
    id_hash       TEXT PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at    INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);

CREATE TABLE enrollment_codes (
    code_hash   TEXT PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);

CREATE TABLE devices (
    id                  TEXT PRIMARY KEY,
    user_id             INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name                TEXT NOT NULL,
    platform            TEXT NOT NULL CHECK (platform IN ('apns', 'fcm')),
    apns_environment    TEXT CHECK (apns_environment IN ('production', 'sandbox')),
    public_key          TEXT NOT NULL,
    push_key_id         TEXT,
    push_nonce          BLOB,
    push_ciphertext     BLOB,
    push_token_invalid  INTEGER NOT NULL DEFAULT 0,
    created_at          INTEGER NOT NULL,
    last_seen_at        INTEGER
);
CREATE INDEX devices_user ON devices (user_id);

-- Device request JWS ids, kept while the JWS could still be accepted, so a replay is refused
-- across restarts.
CREATE TABLE used_jtis (
    device_id   TEXT NOT NULL,
    jti         TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (device_id, jti)
);
CREATE INDEX used_jtis_expiry ON used_jtis (expires_at);

CREATE TABLE scim_tokens (
    workspace_id  INTEGER PRIMARY KEY REFERENCES workspaces(id) ON DELETE CASCADE,
    token_hash    BLOB NOT NULL UNIQUE,
    key_id        TEXT NOT NULL,
    nonce         BLOB NOT NULL,
    ciphertext    BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    created_by    TEXT NOT NULL
);

CREATE TABLE audit_log (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id  INTEGER,
    at            INTEGER NOT NULL,
    kind          TEXT NOT NULL,
    actor         TEXT,
    ip            TEXT,
    device_id     TEXT,
    detail        TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_workspace ON audit_log (workspace_id, id);
