DROP INDEX file_heads_deleted_idx;
ALTER TABLE file_heads DROP COLUMN expired_versions;
ALTER TABLE workspaces DROP COLUMN horizon_seq;
ALTER TABLE workspaces DROP COLUMN trash_days;
ALTER TABLE workspaces DROP COLUMN keep_days;
