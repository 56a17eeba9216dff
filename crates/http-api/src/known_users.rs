//! A short-lived memory of what token checks compare a token with — the user's
//! token generation and live devices (and the username and email `AuthUser`
//! carries) — so an authenticated request does not cost a database round trip
//! (and a blocking-pool hop) each time.
//!
//! Revocation is immediate in this process: the route that revokes calls
//! [`KnownUsers::forget`] after its commit. Every other `filesync-http` learns
//! it at once from the bus's revocations topic (`run` listens to it and
//! forgets the user; after a bus reconnect it forgets everyone), nodes from
//! the user's topic (`UserEvent::TokensRevoked`, which also makes them
//! disconnect the agents concerned). Should the bus lose a message, [`TTL`]
//! bounds how long a revoked token can still pass.
//! A token naming a device or generation the cached state does not know yet
//! (a login through another process) is looked up again, not refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use filesync_core::db::devices::TokenState;
use filesync_core::jwt::Grant;
use filesync_core::UserId;

/// How long a looked-up state is trusted without asking the database again.
pub const TTL: Duration = Duration::from_secs(10);

/// More entries than this and the whole memory is dropped: simpler than LRU,
/// and refilling costs one query per active user.
const MAX_ENTRIES: usize = 100_000;

/// What a cached state says about one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: the user's name and email.
    Valid { username: String, email: String },
    /// Revoked: an older generation than the user's.
    Revoked,
    /// Nothing cached, too old, or a device/generation the cache has not seen: ask the database.
    Unknown,
}

/// The verdict of `state` (fresh from the database) on a token with `grant`.
pub fn judge(state: &TokenState, grant: Grant) -> Verdict {
    if grant.generation < state.generation {
        return Verdict::Revoked;
    }
    if grant.generation == state.generation && state.devices.contains(&grant.device) {
        return Verdict::Valid { username: state.username.clone(), email: state.email.clone() };
    }
    Verdict::Unknown
}

#[derive(Debug, Default)]
pub struct KnownUsers {
    entries: Mutex<HashMap<i64, (Instant, TokenState)>>,
}

impl KnownUsers {
    /// The cached verdict on a token of `id` with `grant`, if the state was read less than [`TTL`] before `now`.
    pub fn verdict(&self, id: UserId, grant: Grant, now: Instant) -> Verdict {
        let entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match entries.get(&id.0).filter(|(at, _)| now.saturating_duration_since(*at) < TTL) {
            Some((_, state)) => judge(state, grant),
            None => Verdict::Unknown,
        }
    }

    pub fn remember(&self, id: UserId, state: TokenState, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(id.0, (now, state));
    }

    /// Drops what is known of the user: call after any change to their credentials.
    pub fn forget(&self, id: UserId) {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id.0);
    }

    /// Drops everything: revocations may have been missed (the bus reconnected).
    pub fn forget_all(&self) {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice(generation: i64, devices: Vec<i64>) -> TokenState {
        TokenState { username: "alice".into(), email: "a@example.com".into(), generation, devices }
    }

    fn valid() -> Verdict {
        Verdict::Valid { username: "alice".into(), email: "a@example.com".into() }
    }

    #[test]
    fn a_state_is_remembered_until_the_ttl_runs_out() {
        let users = KnownUsers::default();
        let t0 = Instant::now();
        let g = Grant { generation: 0, device: 5 };
        assert_eq!(users.verdict(UserId(1), g, t0), Verdict::Unknown);
        users.remember(UserId(1), alice(0, vec![5]), t0);
        assert_eq!(users.verdict(UserId(1), g, t0 + TTL / 2), valid());
        assert_eq!(users.verdict(UserId(2), g, t0), Verdict::Unknown);
        assert_eq!(users.verdict(UserId(1), g, t0 + TTL), Verdict::Unknown);
        users.forget(UserId(1));
        assert_eq!(users.verdict(UserId(1), g, t0), Verdict::Unknown);
    }

    #[test]
    fn old_generations_are_revoked_and_unseen_devices_looked_up() {
        let state = alice(2, vec![5, 6]);
        assert_eq!(judge(&state, Grant { generation: 2, device: 6 }), valid());
        assert_eq!(judge(&state, Grant { generation: 1, device: 6 }), Verdict::Revoked);
        assert_eq!(judge(&state, Grant { generation: 2, device: 7 }), Verdict::Unknown);
        assert_eq!(judge(&state, Grant { generation: 3, device: 5 }), Verdict::Unknown);
    }
}
