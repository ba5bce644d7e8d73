-- The SCIM directory a workspace's identity provider provisions (issue 3), and the log of every
-- SCIM request. A resource's JSON document holds neither `id` nor `meta` nor a Group's members
-- (src/scim/resource.rs): the columns do. The *_lower, external_id, work_email_lower,
-- email_overflow and active columns are the ones src/scim/sql.rs plans filters onto; they are
-- computed by the engine (`IndexColumns`) with the same case folding as its evaluator.
-- Times are Unix seconds.

CREATE TABLE scim_users (
    workspace_id        INTEGER NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    id                  TEXT NOT NULL,
    document            TEXT NOT NULL,
    user_name_lower     TEXT NOT NULL,
    external_id         TEXT,
    display_name_lower  TEXT,
    work_email_lower    TEXT,
    -- 1 when an email differs from the work one: email filters must then look at the document.
    email_overflow      INTEGER NOT NULL DEFAULT 0,
    active              INTEGER,
    manager_id          TEXT,
    version             INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    last_modified       INTEGER NOT NULL,
    UNIQUE (workspace_id, id)
);
-- userName is unique per workspace, case-insensitively: a POST Entra ID retries after a timeout
-- gets 409 instead of making a duplicate.
CREATE UNIQUE INDEX scim_users_user_name ON scim_users (workspace_id, user_name_lower);
CREATE INDEX scim_users_external_id ON scim_users (workspace_id, external_id);
CREATE INDEX scim_users_display_name ON scim_users (workspace_id, display_name_lower);
CREATE INDEX scim_users_work_email ON scim_users (workspace_id, work_email_lower);
CREATE INDEX scim_users_email_overflow ON scim_users (workspace_id, email_overflow);
CREATE INDEX scim_users_active ON scim_users (workspace_id, active);
CREATE INDEX scim_users_manager ON scim_users (workspace_id, manager_id) WHERE manager_id IS NOT NULL;

CREATE TABLE scim_groups (
    workspace_id        INTEGER NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    id                  TEXT NOT NULL,
    document            TEXT NOT NULL,
    -- displayName as given: what a member's `groups[].display` shows.
    display             TEXT,
    display_name_lower  TEXT NOT NULL,
    external_id         TEXT,
    version             INTEGER NOT NULL,
    created_at          INTEGER NOT NULL,
    last_modified       INTEGER NOT NULL,
    UNIQUE (workspace_id, id)
);
-- A Group's displayName is unique per workspace (Entra ID matches groups by it).
CREATE UNIQUE INDEX scim_groups_display_name ON scim_groups (workspace_id, display_name_lower);
CREATE INDEX scim_groups_external_id ON scim_groups (workspace_id, external_id);

-- Memberships are rows, so that concurrent PATCHes add and remove members as set operations in one
-- transaction each (src/scim/members.rs). A member is a User or a Group of the same workspace; the
-- store checks it exists when it is added and deletes its rows when it is deleted.
CREATE TABLE scim_group_members (
    workspace_id  INTEGER NOT NULL,
    group_id      TEXT NOT NULL,
    member_id     TEXT NOT NULL,
    member_type   TEXT NOT NULL CHECK (member_type IN ('User', 'Group')),
    PRIMARY KEY (workspace_id, group_id, member_id),
    FOREIGN KEY (workspace_id, group_id) REFERENCES scim_groups (workspace_id, id) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX scim_group_members_member ON scim_group_members (workspace_id, member_id);

-- Every SCIM request a workspace's token opened: never the token, never a body. (Requests whose
-- token opened no workspace belong to nobody: they are counted in the audit log instead.) Pruned
-- after ASSENT_SCIM_LOG_RETENTION_DAYS.
CREATE TABLE scim_provisioning_log (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id   INTEGER NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    at             INTEGER NOT NULL,
    method         TEXT NOT NULL,
    path           TEXT NOT NULL,
    resource_type  TEXT,
    resource_id    TEXT,
    status         INTEGER NOT NULL,
    scim_type      TEXT,
    latency_us     INTEGER NOT NULL,
    detail         TEXT
);
CREATE INDEX scim_provisioning_log_workspace ON scim_provisioning_log (workspace_id, id);
CREATE INDEX scim_provisioning_log_at ON scim_provisioning_log (at);
