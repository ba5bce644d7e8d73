-- The audit log's hash chain (src/domain/audit.rs): per chain (the workspace, or 0 for entries
-- without one) a sequence number, the previous entry's hash and the entry's own hash, both as
-- lower-case hex SHA-256. Entries written before this migration keep NULLs: a chain starts at its
-- first entry with a seq.
ALTER TABLE audit_log ADD COLUMN seq INTEGER;
ALTER TABLE audit_log ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_log ADD COLUMN hash TEXT;

-- The backstop behind the serialized appends: two entries of one chain never share a seq.
CREATE UNIQUE INDEX audit_log_chain ON audit_log (COALESCE(workspace_id, 0), seq);
