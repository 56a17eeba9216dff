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
