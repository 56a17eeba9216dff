DROP INDEX file_heads_path_idx;
