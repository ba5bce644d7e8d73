-- Support staff, workspace policies and the rotation grace period.
--
-- Staff are operators of the deployment, not members of any workspace. They need what console
-- users have (a password, sessions, enrolled phones, enrollment codes), so they are rows of
-- `users` in one reserved realm, the workspace `_staff`: a slug no created workspace can have
-- (slugs are a-z, 0-9 and '-'), which has no SCIM token, and whose users the console refuses
-- (and the support API accepts nobody else). Their stored role is 'admin' and means nothing.
INSERT INTO workspaces (slug, name, created_at) VALUES ('_staff', 'Assent support', 0);

-- Per workspace, set by its owners; no row means the defaults.
CREATE TABLE workspace_policies (
    workspace_id            BIGINT PRIMARY KEY REFERENCES workspaces(id) ON DELETE CASCADE,
    two_person_rotation     BOOLEAN NOT NULL DEFAULT FALSE,
    rotation_grace_minutes  BIGINT NOT NULL DEFAULT 0 CHECK (rotation_grace_minutes BETWEEN 0 AND 10080),
    token_viewers           TEXT NOT NULL DEFAULT 'admins' CHECK (token_viewers IN ('owners', 'admins')),
    updated_at              BIGINT NOT NULL,
    updated_by              TEXT NOT NULL
);

-- The token a rotation replaced, still accepted until `expires_at` (the grace period). Only its
-- SHA-256 is kept: it is never revealed again.
CREATE TABLE scim_token_grace (
    token_hash    BYTEA PRIMARY KEY,
    workspace_id  BIGINT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX scim_token_grace_workspace ON scim_token_grace (workspace_id);
