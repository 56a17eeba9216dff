-- Revocable credentials. `token_generation` is carried by every access token:
-- raising it (a password change, a deleted account) refuses every token issued
-- before. A device is one login: its refresh credential is stored as the
-- BLAKE3 hash of a 32-byte random secret, and every access token names the
-- device it was issued to, so deleting the row (logout, `DELETE /devices/{id}`)
-- refuses that device's tokens and its refresh credential.
ALTER TABLE users ADD COLUMN token_generation BIGINT NOT NULL DEFAULT 0;

CREATE TABLE devices (
  id BIGINT NOT NULL AUTO_INCREMENT,
  user_id BIGINT NOT NULL,
  name VARCHAR(64) NOT NULL,
  secret_hash BINARY(32) NOT NULL,
  created_at DATETIME NOT NULL,
  last_used_at DATETIME NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY devices_secret_hash_key (secret_hash),
  KEY devices_user_idx (user_id),
  CONSTRAINT devices_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
