-- filesync: the MySQL/MariaDB schema, fully migrated.
--
-- Install into an empty database:
--   mysql -u USER -p -e "CREATE DATABASE filesync CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
--   mysql -u USER -p filesync < filesync.sql
--
-- This is the DDL of every migration in migrations/mysql, in order, plus
-- diesel's bookkeeping table with their versions, so `filesync-http` starts on
-- a database installed from this file without re-running them. A new
-- migration must be added here too: a test (crates/http-api/tests/schema.rs)
-- loads this file into one fresh database, migrates another, and fails if any
-- table or recorded version differs.
-- Starting the server on an empty database instead runs the same migrations.

SET NAMES utf8mb4;

-- migration 2026-11-24-000001_foundation
-- Accounts, workspaces and membership. Binary collation everywhere: names and
-- paths are compared byte for byte, exactly as on SQLite; emails are stored
-- lower-cased by the application.
CREATE TABLE users (
  id BIGINT NOT NULL AUTO_INCREMENT,
  first_name VARCHAR(255) NOT NULL,
  last_name VARCHAR(255) NOT NULL,
  username VARCHAR(32) NOT NULL,
  email VARCHAR(254) NOT NULL,
  password_hash VARCHAR(255) NOT NULL,
  created_at DATETIME NOT NULL,
  updated_at DATETIME NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY users_username_key (username),
  UNIQUE KEY users_email_key (email)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE workspaces (
  id BIGINT NOT NULL AUTO_INCREMENT,
  name VARCHAR(255) NOT NULL,
  owner_id BIGINT NOT NULL,
  head_seq BIGINT NOT NULL DEFAULT 0,
  created_at DATETIME NOT NULL,
  updated_at DATETIME NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY workspaces_owner_name_key (owner_id, name),
  CONSTRAINT workspaces_owner_fk FOREIGN KEY (owner_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE workspace_members (
  workspace_id BIGINT NOT NULL,
  user_id BIGINT NOT NULL,
  role VARCHAR(16) NOT NULL,
  added_by BIGINT NOT NULL,
  created_at DATETIME NOT NULL,
  PRIMARY KEY (workspace_id, user_id),
  KEY workspace_members_user_idx (user_id),
  KEY workspace_members_added_by_idx (added_by),
  CONSTRAINT workspace_members_workspace_fk FOREIGN KEY (workspace_id) REFERENCES workspaces (id) ON DELETE CASCADE,
  CONSTRAINT workspace_members_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
  CONSTRAINT workspace_members_added_by_fk FOREIGN KEY (added_by) REFERENCES users (id) ON DELETE CASCADE,
  CONSTRAINT workspace_members_role_check CHECK (role IN ('owner', 'editor', 'viewer'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- migration 2026-11-24-000002_journal
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

-- migration 2026-11-25-000001_head_path_index
-- "Is this path a directory?" is a byte range over the workspace's head paths
-- (`path >= 'p/' AND path < 'p0'`). Without an index every new file scanned all
-- heads of its workspace, so a large initial sync slowed down as it went. A
-- 255-character prefix covers ordinary paths; longer ones are still correct,
-- only checked on the rows the prefix selects.
CREATE INDEX file_heads_path_idx ON file_heads (workspace_id, path(255));

-- migration 2026-12-01-000001_devices
-- Revocable credentials. `token_generation` is carried by every access token:
-- raising it (a password change, a deleted account) refuses every token issued
-- before. A device is one login: its refresh credential is stored as the
-- BLAKE3 hash of a 32-byte random secret, and every access token names the
-- device it was issued to, so deleting the row (logout, `DELETE /devices/{id}`)
-- refuses that device's tokens and its refresh credential.
ALTER TABLE users ADD COLUMN token_generation BIGINT NOT NULL DEFAULT 0;

CREATE TABLE devices (
  id BIGINT NOT NULL AUTO_INCREMENT,
  user_id BIGINT NOT NULL,
  name VARCHAR(64) NOT NULL,
  secret_hash BINARY(32) NOT NULL,
  created_at DATETIME NOT NULL,
  last_used_at DATETIME NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY devices_secret_hash_key (secret_hash),
  KEY devices_user_idx (user_id),
  CONSTRAINT devices_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- migration 2026-12-01-000002_invitations
-- Pending invitations: a workspace shared with an email that has no account
-- yet. Registering with that email turns each into a membership (and deletes
-- it); the owner can cancel one. Deleting the workspace or the inviter drops it.
CREATE TABLE invitations (
  id BIGINT NOT NULL AUTO_INCREMENT,
  workspace_id BIGINT NOT NULL,
  email VARCHAR(254) NOT NULL,
  role VARCHAR(16) NOT NULL,
  invited_by BIGINT NOT NULL,
  created_at DATETIME NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY invitations_workspace_email_key (workspace_id, email),
  KEY invitations_email_idx (email),
  KEY invitations_invited_by_idx (invited_by),
  CONSTRAINT invitations_workspace_fk FOREIGN KEY (workspace_id) REFERENCES workspaces (id) ON DELETE CASCADE,
  CONSTRAINT invitations_invited_by_fk FOREIGN KEY (invited_by) REFERENCES users (id) ON DELETE CASCADE,
  CONSTRAINT invitations_role_check CHECK (role IN ('editor', 'viewer'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- migration 2026-12-01-000003_packs
-- Pack files (docs/storage.md): chunks are appended to pack objects named by a
-- random 128-bit id, so two nodes never write the same key. A chunk row with
-- a pack is read with one ranged read of `stored_size` bytes at `pack_offset`
-- (the entry's header and payload); a row without one is a chunk stored one
-- file per chunk by an earlier release, read in place until `storage migrate`
-- packs it. The first row recorded for a hash wins: another copy of the chunk
-- in another pack is dead bytes that garbage collection reclaims.
CREATE TABLE packs (
  id BINARY(16) NOT NULL,
  size BIGINT NOT NULL,
  created_at DATETIME NOT NULL,
  PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

ALTER TABLE chunks
  ADD COLUMN pack_id BINARY(16) NULL,
  ADD COLUMN pack_offset BIGINT NULL,
  ADD COLUMN format SMALLINT NULL,
  ADD CONSTRAINT chunks_pack_fk FOREIGN KEY (pack_id) REFERENCES packs (id);

-- migration 2026-12-02-000001_lifecycle
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

-- migration 2026-12-02-000002_gc
-- Garbage collection state (docs/storage.md §7). The database decides what
-- may go: a hold is released only when no retained version references its
-- chunk and it is older than the grace period; an unheld chunk is first
-- condemned (uploads stop deduplicating against it) and its row deleted a
-- grace period later if still unheld; a pack with no chunk row left is
-- retired and its object deleted a grace period later. One runner at a time
-- across processes holds the `gc` lease.
ALTER TABLE workspace_chunks ADD COLUMN held_at DATETIME NOT NULL DEFAULT '1970-01-01 00:00:00';
-- Holds that exist now may belong to uploads in flight: their grace starts now.
UPDATE workspace_chunks SET held_at = UTC_TIMESTAMP();

-- No index on condemned_at: garbage collection pages through chunks by hash, and an index an
-- upload's INSERT ... SELECT might scan would make uploads lock each other's new rows.
ALTER TABLE chunks ADD COLUMN condemned_at DATETIME NULL;

ALTER TABLE packs ADD COLUMN retired_at DATETIME NULL, ADD KEY packs_retired_idx (retired_at);

CREATE TABLE gc_leases (
  name VARCHAR(32) NOT NULL,
  holder VARCHAR(255) NOT NULL,
  expires_at DATETIME NOT NULL,
  PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
INSERT INTO gc_leases (name, holder, expires_at) VALUES ('gc', '', '1970-01-01 00:00:00');

-- diesel's record of the migrations above (their directory names without
-- dashes up to the underscore).
CREATE TABLE __diesel_schema_migrations (
  version VARCHAR(50) NOT NULL,
  run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (version)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

INSERT INTO __diesel_schema_migrations (version) VALUES
  ('20261124000001'),
  ('20261124000002'),
  ('20261125000001'),
  ('20261201000001'),
  ('20261201000002'),
  ('20261201000003'),
  ('20261202000001'),
  ('20261202000002');
