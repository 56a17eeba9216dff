DROP TABLE devices;
ALTER TABLE users DROP COLUMN token_generation;
