-- Data lifecycle: see the MySQL migration of the same name.
ALTER TABLE workspaces ADD COLUMN keep_days INTEGER NULL;
ALTER TABLE workspaces ADD COLUMN trash_days INTEGER NULL;
ALTER TABLE workspaces ADD COLUMN horizon_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE file_heads ADD COLUMN expired_versions BIGINT NOT NULL DEFAULT 0;
CREATE INDEX file_heads_deleted_idx ON file_heads (workspace_id, deleted, seq);
