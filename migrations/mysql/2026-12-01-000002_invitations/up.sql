-- Pending invitations: a workspace shared with an email that has no account
-- yet. Registering with that email turns each into a membership (and deletes
-- it); the owner can cancel one. Deleting the workspace or the inviter drops it.
CREATE TABLE invitations (
  id BIGINT NOT NULL AUTO_INCREMENT,
  workspace_id BIGINT NOT NULL,
  email VARCHAR(254) NOT NULL,
  role VARCHAR(16) NOT NULL,
  invited_by BIGINT NOT NULL,
  created_at DATETIME NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY invitations_workspace_email_key (workspace_id, email),
  KEY invitations_email_idx (email),
  KEY invitations_invited_by_idx (invited_by),
  CONSTRAINT invitations_workspace_fk FOREIGN KEY (workspace_id) REFERENCES workspaces (id) ON DELETE CASCADE,
  CONSTRAINT invitations_invited_by_fk FOREIGN KEY (invited_by) REFERENCES users (id) ON DELETE CASCADE,
  CONSTRAINT invitations_role_check CHECK (role IN ('editor', 'viewer'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
