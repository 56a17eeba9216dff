DROP TABLE workspace_chunks;
DROP TABLE chunks;
DROP TABLE file_heads;
DROP TABLE file_versions;
