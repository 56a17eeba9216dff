-- Pending invitations: a workspace shared with an email that has no account
-- yet (see the MySQL migration of the same name).
CREATE TABLE invitations (
  id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
  workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
  email TEXT NOT NULL,
  role TEXT NOT NULL CHECK (role IN ('editor', 'viewer')),
  invited_by BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  created_at TIMESTAMP NOT NULL,
  UNIQUE (workspace_id, email)
);
CREATE INDEX invitations_email_idx ON invitations (email);
CREATE INDEX invitations_invited_by_idx ON invitations (invited_by);
