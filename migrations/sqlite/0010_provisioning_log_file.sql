-- The provisioning log moves to a file of its own (issue 18), attached to every connection as
-- `log` (`db::open_sqlite`): `<database>.provisioning-log`. Every SCIM request appends to it, and
-- a commit to the main file empties the page cache of every connection reading that file (SQLite
-- cannot tell which pages changed), so the SCIM readers re-read their B-tree pages from disk after
-- each log batch. The log's own file leaves their caches alone.
--
-- A transaction over two WAL files is atomic in each file, not across them, and the main file
-- commits first: a crash between the two commits loses the entries copied here (the log's, not
-- the directory's). The workspace's foreign key stays behind: SQLite keeps them within one file,
-- and workspaces are never deleted.
CREATE TABLE IF NOT EXISTS log.scim_provisioning_log (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id   INTEGER NOT NULL,
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
INSERT OR IGNORE INTO log.scim_provisioning_log SELECT * FROM main.scim_provisioning_log;
DROP TABLE main.scim_provisioning_log;
CREATE INDEX IF NOT EXISTS log.scim_provisioning_log_workspace
    ON scim_provisioning_log (workspace_id, id);
CREATE INDEX IF NOT EXISTS log.scim_provisioning_log_at ON scim_provisioning_log (at);
