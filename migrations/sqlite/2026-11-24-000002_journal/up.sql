CREATE TABLE file_versions (
  id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
  workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
  seq BIGINT NOT NULL,
  op TEXT NOT NULL CHECK (op IN ('put', 'delete', 'move', 'restore')),
  kind TEXT NOT NULL CHECK (kind IN ('file', 'dir')),
  path TEXT NOT NULL,
  path_hash BLOB NOT NULL,
  from_path TEXT NULL,
  from_path_hash BLOB NULL,
  size BIGINT NOT NULL,
  mtime_ms BIGINT NOT NULL,
  mode INTEGER NOT NULL,
  content_hash BLOB NOT NULL,
  manifest BLOB NOT NULL,
  author_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  device_id TEXT NOT NULL,
  deleted BOOLEAN NOT NULL,
  created_at TIMESTAMP NOT NULL,
  UNIQUE (workspace_id, seq)
);
CREATE INDEX file_versions_path_idx ON file_versions (workspace_id, path_hash, seq);
CREATE INDEX file_versions_from_path_idx ON file_versions (workspace_id, from_path_hash);

CREATE TABLE file_heads (
  workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
  path_hash BLOB NOT NULL,
  path TEXT NOT NULL,
  seq BIGINT NOT NULL,
  deleted BOOLEAN NOT NULL,
  PRIMARY KEY (workspace_id, path_hash)
);

CREATE TABLE chunks (
  hash BLOB PRIMARY KEY NOT NULL,
  size INTEGER NOT NULL,
  stored_size INTEGER NOT NULL,
  created_at TIMESTAMP NOT NULL
);

CREATE TABLE workspace_chunks (
  workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
  hash BLOB NOT NULL REFERENCES chunks (hash),
  PRIMARY KEY (workspace_id, hash)
);
