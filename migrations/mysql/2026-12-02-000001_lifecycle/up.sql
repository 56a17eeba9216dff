-- Data lifecycle (issue #13): retention of versions and of the trash.
-- `keep_days` / `trash_days`: the workspace's own retention, NULL = the
-- server's default (`FILESYNC_KEEP_DAYS`, `FILESYNC_TRASH_DAYS`).
-- `horizon_seq`: every change with seq <= horizon_seq may be gone from the
-- journal (retention raises it to the largest seq it dropped); a client whose
-- last seq is below it cannot catch up by changes and reconciles from the heads.
ALTER TABLE workspaces
  ADD COLUMN keep_days INT NULL,
  ADD COLUMN trash_days INT NULL,
  ADD COLUMN horizon_seq BIGINT NOT NULL DEFAULT 0;

-- How many versions of the path retention dropped (history reports it).
ALTER TABLE file_heads ADD COLUMN expired_versions BIGINT NOT NULL DEFAULT 0;

-- The trash is the deleted heads, newest first.
CREATE INDEX file_heads_deleted_idx ON file_heads (workspace_id, deleted, seq);
