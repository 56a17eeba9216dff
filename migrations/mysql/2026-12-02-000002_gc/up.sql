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
