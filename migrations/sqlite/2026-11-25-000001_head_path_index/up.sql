-- "Is this path a directory?" is a byte range over the workspace's head paths
-- (`path >= 'p/' AND path < 'p0'`); without an index every new file scanned all
-- heads of its workspace.
CREATE INDEX file_heads_path_idx ON file_heads (workspace_id, path);
