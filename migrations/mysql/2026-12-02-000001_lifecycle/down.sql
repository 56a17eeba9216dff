DROP INDEX file_heads_deleted_idx ON file_heads;
ALTER TABLE file_heads DROP COLUMN expired_versions;
ALTER TABLE workspaces DROP COLUMN keep_days, DROP COLUMN trash_days, DROP COLUMN horizon_seq;
