ALTER TABLE chunks DROP FOREIGN KEY chunks_pack_fk;
ALTER TABLE chunks DROP INDEX chunks_pack_fk, DROP COLUMN pack_id, DROP COLUMN pack_offset, DROP COLUMN format;
DROP TABLE packs;
