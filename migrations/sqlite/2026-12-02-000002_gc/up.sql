-- Garbage collection state: see the MySQL migration of the same name and docs/storage.md §7.
ALTER TABLE workspace_chunks ADD COLUMN held_at TIMESTAMP NOT NULL DEFAULT '1970-01-01 00:00:00';
UPDATE workspace_chunks SET held_at = datetime('now');
CREATE INDEX workspace_chunks_hash_idx ON workspace_chunks (hash);

ALTER TABLE chunks ADD COLUMN condemned_at TIMESTAMP NULL;

ALTER TABLE packs ADD COLUMN retired_at TIMESTAMP NULL;
CREATE INDEX packs_retired_idx ON packs (retired_at);

CREATE TABLE gc_leases (
  name TEXT PRIMARY KEY NOT NULL,
  holder TEXT NOT NULL,
  expires_at TIMESTAMP NOT NULL
);
INSERT INTO gc_leases (name, holder, expires_at) VALUES ('gc', '', '1970-01-01 00:00:00');
