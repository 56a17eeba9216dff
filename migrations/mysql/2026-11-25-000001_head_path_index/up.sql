-- "Is this path a directory?" is a byte range over the workspace's head paths
-- (`path >= 'p/' AND path < 'p0'`). Without an index every new file scanned all
-- heads of its workspace, so a large initial sync slowed down as it went. A
-- 255-character prefix covers ordinary paths; longer ones are still correct,
-- only checked on the rows the prefix selects.
CREATE INDEX file_heads_path_idx ON file_heads (workspace_id, path(255));
