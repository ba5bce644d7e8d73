-- The same as migrations/sqlite/0008_scim_extensions.sql, in Postgres types.
--
-- `display`: what a group member's `display` shows (the user's displayName, else its userName),
-- as scim_groups.display already does for groups; computed by the engine on every write.
-- scim_group_members.display: the `display` a client sent with a member, kept as sent (RFC 7643
-- §2.4 makes it immutable); NULL shows the member's own display.
-- `seq`: the order of creation, in which a listing without sortBy pages. A user created during an
-- import (Okta pages with startIndex/count) lands after every row that existed, so the pages already
-- read do not shift and no user is seen twice or missed. Set on insert as MAX(seq) + 1 of the
-- workspace (src/store/scim_write.rs).
ALTER TABLE scim_users ADD COLUMN display TEXT;
ALTER TABLE scim_group_members ADD COLUMN display TEXT;
ALTER TABLE scim_users ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE scim_groups ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
UPDATE scim_users SET display = COALESCE(document::jsonb ->> 'displayName', document::jsonb ->> 'userName');
UPDATE scim_users u SET seq = n.seq
  FROM (SELECT workspace_id, id, ROW_NUMBER() OVER (ORDER BY created_at, id) AS seq FROM scim_users) n
  WHERE u.workspace_id = n.workspace_id AND u.id = n.id;
UPDATE scim_groups g SET seq = n.seq
  FROM (SELECT workspace_id, id, ROW_NUMBER() OVER (ORDER BY created_at, id) AS seq FROM scim_groups) n
  WHERE g.workspace_id = n.workspace_id AND g.id = n.id;
CREATE INDEX scim_users_seq ON scim_users (workspace_id, seq);
CREATE INDEX scim_groups_seq ON scim_groups (workspace_id, seq);

-- The values of undeclared schema extensions (src/scim/extension.rs), one row per scalar value,
-- written in the resource's own transaction, so filters on them use an index. A side table rather
-- than expression indexes on the JSON document: the attribute paths are whatever each workspace's
-- identity provider sends (no fixed expression to index), SQLite and Postgres index JSON
-- differently, and a typed key (`s:` folded text, `n:` number, `b:` boolean) gives the
-- case-insensitive, typed equality the evaluator applies, in one statement for both databases.
CREATE TABLE scim_ext_values (
    workspace_id   BIGINT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    resource_type  TEXT COLLATE "C" NOT NULL CHECK (resource_type IN ('User', 'Group')),
    resource_id    TEXT COLLATE "C" NOT NULL,
    -- `<extension urn>:<attribute>[.<sub>]`, lower-case.
    path           TEXT COLLATE "C" NOT NULL,
    value          TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (workspace_id, resource_type, path, value, resource_id)
);
CREATE INDEX scim_ext_values_resource ON scim_ext_values (workspace_id, resource_type, resource_id);

-- The extension schemas a workspace's owner declared (PUT /v1/console/scim/schemas): their RFC 7643
-- section 7 definitions as one JSON document (src/scim/declared.rs), announced in /Schemas and
-- enforced on every write of a resource that carries them.
CREATE TABLE scim_schemas (
    workspace_id  BIGINT PRIMARY KEY REFERENCES workspaces(id) ON DELETE CASCADE,
    definitions   TEXT NOT NULL,
    updated_at    BIGINT NOT NULL
);
