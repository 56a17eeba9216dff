-- Pack files: see the MySQL migration of the same name and docs/storage.md.
CREATE TABLE packs (
  id BLOB PRIMARY KEY NOT NULL,
  size BIGINT NOT NULL,
  created_at TIMESTAMP NOT NULL
);

ALTER TABLE chunks ADD COLUMN pack_id BLOB NULL REFERENCES packs (id);
ALTER TABLE chunks ADD COLUMN pack_offset BIGINT NULL;
ALTER TABLE chunks ADD COLUMN format SMALLINT NULL;
CREATE INDEX chunks_pack_idx ON chunks (pack_id);
