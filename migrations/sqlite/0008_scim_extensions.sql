-- Issue 15: what Okta and the other identity providers need of the SCIM directory.
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
ALTER TABLE scim_users ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE scim_groups ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
UPDATE scim_users SET display = COALESCE(json_extract(document, '$.displayName'),
                                         json_extract(document, '$.userName')),
                      seq = rowid;
UPDATE scim_groups SET seq = rowid;
CREATE INDEX scim_users_seq ON scim_users (workspace_id, seq);
CREATE INDEX scim_groups_seq ON scim_groups (workspace_id, seq);
