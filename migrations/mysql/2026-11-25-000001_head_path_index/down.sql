DROP INDEX file_heads_path_idx ON file_heads;
