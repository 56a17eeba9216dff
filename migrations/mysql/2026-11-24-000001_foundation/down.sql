DROP TABLE workspace_members;
DROP TABLE workspaces;
DROP TABLE users;
