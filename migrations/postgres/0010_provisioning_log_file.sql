-- Nothing to do on Postgres: SQLite's provisioning log moved to a file of its own (issue 18,
-- migrations/sqlite/0010), a question of SQLite's page cache. Kept so both folders count alike.
SELECT 1;
