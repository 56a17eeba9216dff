//! Credentials: devices (one per login, each with a refresh credential stored
//! hashed) and the user's token generation. An access token is valid only
//! while the user's `token_generation` equals the one it carries and the
//! device it names still exists, so a logout (the device is deleted), a
//! revoked device, a password change or a deleted account (the generation is
//! raised and every device deleted) refuses it on every daemon.

use diesel::prelude::*;

use super::schema::{devices, users, workspace_members, workspaces};
use super::{now, DbConn, DbError};
use crate::chunking::hex;
use crate::ids::{UserId, WorkspaceId};

/// Bytes of randomness in a refresh credential.
const SECRET_BYTES: usize = 32;
/// Every refresh credential starts with this, so one is recognisable in a leak scanner.
pub const REFRESH_PREFIX: &str = "fsr1_";

/// A device (one login) as its owner sees it. The secret's hash never leaves this module.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = devices)]
pub struct Device {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub created_at: chrono::NaiveDateTime,
    pub last_used_at: chrono::NaiveDateTime,
}

/// What a token check needs to know about a user, read in one call and cached by the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenState {
    pub username: String,
    pub email: String,
    pub generation: i64,
    /// The ids of the user's devices (live logins).
    pub devices: Vec<i64>,
}

/// A new refresh credential: the secret to hand out once, and the hash to store.
pub struct NewSecret {
    pub secret: String,
    pub hash: Vec<u8>,
}

impl std::fmt::Debug for NewSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewSecret(<redacted>)")
    }
}

/// A random refresh credential (from the thread's CSPRNG).
pub fn new_secret() -> NewSecret {
    let bytes: [u8; SECRET_BYTES] = rand::random();
    let secret = format!("{REFRESH_PREFIX}{}", hex(&bytes));
    let hash = secret_hash(&secret);
    NewSecret { secret, hash }
}

/// The stored form of a refresh credential. The secret has 256 random bits, so a fast hash
/// is enough: nobody can guess a preimage, and the lookup by hash reveals nothing.
pub fn secret_hash(secret: &str) -> Vec<u8> {
    blake3::hash(secret.as_bytes()).as_bytes().to_vec()
}

/// Records a new device (a login) for `user`.
pub fn create(conn: &mut DbConn, user: UserId, name: &str, secret_hash: &[u8]) -> Result<Device, DbError> {
    let ts = now();
    diesel::insert_into(devices::table)
        .values((
            devices::user_id.eq(user.0),
            devices::name.eq(name),
            devices::secret_hash.eq(secret_hash),
            devices::created_at.eq(ts),
            devices::last_used_at.eq(ts),
        ))
        .execute(conn)?;
    Ok(devices::table.filter(devices::secret_hash.eq(secret_hash)).select(Device::as_select()).first(conn)?)
}

/// The device holding this refresh credential, with its user's email and token generation;
/// marks it used. `None`: no such credential (never issued, or revoked).
pub fn use_secret(conn: &mut DbConn, secret: &str) -> Result<Option<(Device, String, i64)>, DbError> {
    let hash = secret_hash(secret);
    let row: Option<(Device, String, i64)> = devices::table
        .inner_join(users::table)
        .filter(devices::secret_hash.eq(&hash))
        .select((Device::as_select(), users::email, users::token_generation))
        .first(conn)
        .optional()?;
    if let Some((device, _, _)) = &row {
        diesel::update(devices::table.find(device.id)).set(devices::last_used_at.eq(now())).execute(conn)?;
    }
    Ok(row)
}

/// The user's devices, most recently used first.
pub fn list(conn: &mut DbConn, user: UserId) -> Result<Vec<Device>, DbError> {
    Ok(devices::table
        .filter(devices::user_id.eq(user.0))
        .select(Device::as_select())
        .order((devices::last_used_at.desc(), devices::id.desc()))
        .load(conn)?)
}

/// Deletes one of the user's devices; false if the user has no such device.
pub fn delete(conn: &mut DbConn, user: UserId, id: i64) -> Result<bool, DbError> {
    let n =
        diesel::delete(devices::table.filter(devices::id.eq(id)).filter(devices::user_id.eq(user.0))).execute(conn)?;
    Ok(n > 0)
}

/// The facts a token check compares a token with; `None` if the user does not exist.
pub fn token_state(conn: &mut DbConn, user: UserId) -> Result<Option<TokenState>, DbError> {
    let row: Option<(String, String, i64)> = users::table
        .find(user.0)
        .select((users::username, users::email, users::token_generation))
        .first(conn)
        .optional()?;
    let Some((username, email, generation)) = row else { return Ok(None) };
    let devices = devices::table.filter(devices::user_id.eq(user.0)).select(devices::id).load(conn)?;
    Ok(Some(TokenState { username, email, generation, devices }))
}

/// Whether a token of `user` with `generation` issued to `device` is still valid, with the
/// user's username if so (one query: what the sync node checks at handshake).
pub fn check(conn: &mut DbConn, user: UserId, generation: i64, device: i64) -> Result<Option<String>, DbError> {
    Ok(users::table
        .inner_join(devices::table)
        .filter(users::id.eq(user.0))
        .filter(users::token_generation.eq(generation))
        .filter(devices::id.eq(device))
        .select(users::username)
        .first(conn)
        .optional()?)
}

/// Stores a new password hash, raises the token generation and deletes every device:
/// every token and refresh credential issued before is refused. Returns the new generation.
/// Run it in a transaction ([`super::Db::write`]).
pub fn change_password(conn: &mut DbConn, user: UserId, password_hash: &str) -> Result<i64, DbError> {
    let generation = raise_generation(conn, user)?;
    diesel::update(users::table.find(user.0))
        .set((users::password_hash.eq(password_hash), users::updated_at.eq(now())))
        .execute(conn)?;
    diesel::delete(devices::table.filter(devices::user_id.eq(user.0))).execute(conn)?;
    Ok(generation)
}

fn raise_generation(conn: &mut DbConn, user: UserId) -> Result<i64, DbError> {
    let n = diesel::update(users::table.find(user.0))
        .set(users::token_generation.eq(users::token_generation + 1))
        .execute(conn)?;
    if n == 0 {
        return Err(DbError::NotFound);
    }
    Ok(users::table.find(user.0).select(users::token_generation).first(conn)?)
}

/// A workspace that keeps an account from being deleted: the user owns it and others are members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedOwned {
    pub id: WorkspaceId,
    pub name: String,
    /// Members other than the owner.
    pub others: i64,
}

/// The workspaces `user` owns that have other members.
pub fn owned_with_others(conn: &mut DbConn, user: UserId) -> Result<Vec<SharedOwned>, DbError> {
    let rows: Vec<(i64, String, i64)> = workspaces::table
        .inner_join(workspace_members::table)
        .filter(workspaces::owner_id.eq(user.0))
        .filter(workspace_members::user_id.ne(user.0))
        .group_by((workspaces::id, workspaces::name))
        .select((workspaces::id, workspaces::name, diesel::dsl::count(workspace_members::user_id)))
        .order(workspaces::name.asc())
        .load(conn)?;
    Ok(rows.into_iter().map(|(id, name, others)| SharedOwned { id: WorkspaceId(id), name, others }).collect())
}

/// Deletes an account, in a transaction ([`super::Db::write`]): `Err(list)` (and nothing
/// changed) while the user owns workspaces with other members. Otherwise the user's own
/// workspaces, memberships and devices are deleted and the token generation raised; the row
/// itself stays, renamed and without a usable password, because versions the user committed
/// to other people's workspaces are part of their journals. Returns the workspaces deleted.
pub fn delete_account(conn: &mut DbConn, user: UserId) -> Result<Result<Vec<WorkspaceId>, Vec<SharedOwned>>, DbError> {
    let blocking = owned_with_others(conn, user)?;
    if !blocking.is_empty() {
        return Ok(Err(blocking));
    }
    raise_generation(conn, user)?;
    let owned: Vec<i64> =
        workspaces::table.filter(workspaces::owner_id.eq(user.0)).select(workspaces::id).load(conn)?;
    // Cascades to their members, journal, heads and chunk references.
    diesel::delete(workspaces::table.filter(workspaces::owner_id.eq(user.0))).execute(conn)?;
    diesel::delete(workspace_members::table.filter(workspace_members::user_id.eq(user.0))).execute(conn)?;
    diesel::delete(devices::table.filter(devices::user_id.eq(user.0))).execute(conn)?;
    // `~` is not allowed in usernames or emails, so these never collide with a real account
    // and free the originals for a new registration. "!" is no bcrypt hash: nothing verifies.
    let gone = format!("~deleted-{}", user.0);
    diesel::update(users::table.find(user.0))
        .set((
            users::username.eq(&gone),
            users::email.eq(&gone),
            users::first_name.eq(""),
            users::last_name.eq(""),
            users::password_hash.eq("!"),
            users::updated_at.eq(now()),
        ))
        .execute(conn)?;
    Ok(Ok(owned.into_iter().map(WorkspaceId).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_prefixed_and_hashed() {
        let a = new_secret();
        let b = new_secret();
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with(REFRESH_PREFIX));
        assert_eq!(a.secret.len(), REFRESH_PREFIX.len() + 2 * SECRET_BYTES);
        assert_eq!(secret_hash(&a.secret), a.hash);
        assert_eq!(a.hash.len(), 32);
        assert!(!format!("{a:?}").contains(&a.secret));
    }
}
