DROP TABLE gc_leases;
ALTER TABLE packs DROP KEY packs_retired_idx, DROP COLUMN retired_at;
ALTER TABLE chunks DROP COLUMN condemned_at;
ALTER TABLE workspace_chunks DROP COLUMN held_at;
