-- The per-workspace change journal. Every committed change takes the next
-- `workspaces.head_seq` inside its transaction; `file_heads` is the current
-- head per path. Paths are indexed through their BLAKE3 hash because a 4096
-- byte path does not fit an InnoDB index.
CREATE TABLE file_versions (
  id BIGINT NOT NULL AUTO_INCREMENT,
  workspace_id BIGINT NOT NULL,
  seq BIGINT NOT NULL,
  op VARCHAR(16) NOT NULL,
  kind VARCHAR(8) NOT NULL,
  path TEXT NOT NULL,
  path_hash BINARY(32) NOT NULL,
  from_path TEXT NULL,
  from_path_hash BINARY(32) NULL,
  size BIGINT NOT NULL,
  mtime_ms BIGINT NOT NULL,
  mode INT NOT NULL,
  content_hash BINARY(32) NOT NULL,
  manifest LONGBLOB NOT NULL,
  author_id BIGINT NOT NULL,
  device_id VARCHAR(64) NOT NULL,
  deleted BOOLEAN NOT NULL,
  created_at DATETIME NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY file_versions_workspace_seq_key (workspace_id, seq),
  KEY file_versions_path_idx (workspace_id, path_hash, seq),
  KEY file_versions_from_path_idx (workspace_id, from_path_hash),
  KEY file_versions_author_idx (author_id),
  CONSTRAINT file_versions_workspace_fk FOREIGN KEY (workspace_id) REFERENCES workspaces (id) ON DELETE CASCADE,
  CONSTRAINT file_versions_author_fk FOREIGN KEY (author_id) REFERENCES users (id) ON DELETE CASCADE,
  CONSTRAINT file_versions_op_check CHECK (op IN ('put', 'delete', 'move', 'restore')),
  CONSTRAINT file_versions_kind_check CHECK (kind IN ('file', 'dir'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE file_heads (
  workspace_id BIGINT NOT NULL,
  path_hash BINARY(32) NOT NULL,
  path TEXT NOT NULL,
  seq BIGINT NOT NULL,
  deleted BOOLEAN NOT NULL,
  PRIMARY KEY (workspace_id, path_hash),
  CONSTRAINT file_heads_workspace_fk FOREIGN KEY (workspace_id) REFERENCES workspaces (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Content-addressed chunks, stored once on disk for the whole node.
CREATE TABLE chunks (
  hash BINARY(32) NOT NULL,
  size INT NOT NULL,
  stored_size INT NOT NULL,
  created_at DATETIME NOT NULL,
  PRIMARY KEY (hash)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Which chunks a workspace has proven to hold (uploaded or referenced by one
-- of its versions). A client must upload a chunk's bytes to use it in a
-- workspace, so knowing a hash never grants access to another workspace's data.
CREATE TABLE workspace_chunks (
  workspace_id BIGINT NOT NULL,
  hash BINARY(32) NOT NULL,
  PRIMARY KEY (workspace_id, hash),
  KEY workspace_chunks_hash_idx (hash),
  CONSTRAINT workspace_chunks_workspace_fk FOREIGN KEY (workspace_id) REFERENCES workspaces (id) ON DELETE CASCADE,
  CONSTRAINT workspace_chunks_chunk_fk FOREIGN KEY (hash) REFERENCES chunks (hash)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
