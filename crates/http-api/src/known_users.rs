//! A short-lived memory of the users that tokens name, so an authenticated
//! request does not cost a database round trip (and a blocking-pool hop)
//! each time.
//!
//! Users are never deleted and their username and email never change today,
//! so a remembered row cannot go stale. The TTL bounds how long a token of a
//! user who vanished anyway (a database reset) keeps working: at most
//! [`TTL`]. If deleting users or changing usernames is ever added, that code
//! must call [`KnownUsers::forget`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use filesync_core::UserId;

/// How long a looked-up user is trusted without asking the database again.
pub const TTL: Duration = Duration::from_secs(10);

/// More entries than this and the whole memory is dropped: simpler than LRU,
/// and refilling costs one query per active user.
const MAX_ENTRIES: usize = 100_000;

/// What `AuthUser` needs from a user row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownUser {
    pub username: String,
    pub email: String,
}

#[derive(Debug, Default)]
pub struct KnownUsers {
    entries: Mutex<HashMap<i64, (Instant, KnownUser)>>,
}

impl KnownUsers {
    /// The user, if it was looked up less than [`TTL`] before `now`.
    pub fn get(&self, id: UserId, now: Instant) -> Option<KnownUser> {
        let entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.get(&id.0).filter(|(at, _)| now.saturating_duration_since(*at) < TTL).map(|(_, u)| u.clone())
    }

    pub fn remember(&self, id: UserId, user: KnownUser, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(id.0, (now, user));
    }

    pub fn forget(&self, id: UserId) {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> KnownUser {
        KnownUser { username: "alice".into(), email: "a@example.com".into() }
    }

    #[test]
    fn a_user_is_remembered_until_the_ttl_runs_out() {
        let users = KnownUsers::default();
        let t0 = Instant::now();
        assert_eq!(users.get(UserId(1), t0), None);
        users.remember(UserId(1), alice(), t0);
        assert_eq!(users.get(UserId(1), t0 + TTL / 2), Some(alice()));
        assert_eq!(users.get(UserId(2), t0), None);
        assert_eq!(users.get(UserId(1), t0 + TTL), None);
        users.forget(UserId(1));
        assert_eq!(users.get(UserId(1), t0), None);
    }
}
