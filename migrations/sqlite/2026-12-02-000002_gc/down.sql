DROP TABLE gc_leases;
DROP INDEX packs_retired_idx;
ALTER TABLE packs DROP COLUMN retired_at;
ALTER TABLE chunks DROP COLUMN condemned_at;
DROP INDEX workspace_chunks_hash_idx;
ALTER TABLE workspace_chunks DROP COLUMN held_at;
