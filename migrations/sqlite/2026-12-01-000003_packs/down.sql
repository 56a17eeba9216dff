DROP INDEX chunks_pack_idx;
ALTER TABLE chunks DROP COLUMN format;
ALTER TABLE chunks DROP COLUMN pack_offset;
ALTER TABLE chunks DROP COLUMN pack_id;
DROP TABLE packs;
