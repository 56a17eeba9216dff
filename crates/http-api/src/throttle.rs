//! Login throttling: after `max_failures` failed logins for one email, or from
//! one client IP, within `window`, further attempts for it are refused with
//! 429 until the oldest failure leaves the window.
//!
//! In memory and per process: a restart forgets, and with several API
//! processes an attacker gets `max_failures` per process. That is enough to
//! make online guessing against bcrypt hopeless without a shared store.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries are swept for expiry once the map grows past this many keys.
const SWEEP_AT: usize = 4096;

/// Emails are kept as keyed hashes: a fixed size per key however long the
/// email a client sends, and the key is random per process so nobody can
/// aim collisions at another account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Email(u64),
    Ip(IpAddr),
}

#[derive(Debug)]
pub struct LoginThrottle {
    email_hasher: RandomState,
    max_failures: usize,
    window: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The most recent failures per key, oldest first, at most `max_failures`.
    failures: HashMap<Key, VecDeque<Instant>>,
    next_sweep: usize,
}

impl LoginThrottle {
    pub fn new(max_failures: u32, window: Duration) -> LoginThrottle {
        LoginThrottle {
            email_hasher: RandomState::new(),
            max_failures: usize::try_from(max_failures).unwrap_or(usize::MAX).max(1),
            window,
            inner: Mutex::new(Inner { failures: HashMap::new(), next_sweep: SWEEP_AT }),
        }
    }

    /// `Err(wait)` if the email or the IP is locked out right now.
    pub fn check(&self, email: &str, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let inner = self.lock();
        let wait = [self.email_key(email), Key::Ip(ip)]
            .iter()
            .filter_map(|key| inner.failures.get(key))
            .filter(|times| times.len() >= self.max_failures)
            .filter_map(|times| times.front())
            .map(|oldest| (*oldest + self.window).saturating_duration_since(now))
            .filter(|wait| !wait.is_zero())
            .max();
        match wait {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    pub fn record_failure(&self, email: &str, ip: IpAddr, now: Instant) {
        let mut inner = self.lock();
        for key in [self.email_key(email), Key::Ip(ip)] {
            let times = inner.failures.entry(key).or_default();
            times.push_back(now);
            while times.len() > self.max_failures {
                times.pop_front();
            }
        }
        if inner.failures.len() >= inner.next_sweep {
            let window = self.window;
            inner.failures.retain(|_, times| times.back().is_some_and(|last| now.duration_since(*last) < window));
            // Doubling keeps sweeps rare while many keys are still live.
            inner.next_sweep = (inner.failures.len() * 2).max(SWEEP_AT);
        }
    }

    /// A correct password clears the email's failures (not the IP's).
    pub fn record_success(&self, email: &str) {
        let key = self.email_key(email);
        self.lock().failures.remove(&key);
    }

    fn email_key(&self, email: &str) -> Key {
        Key::Email(self.email_hasher.hash_one(email))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map stays consistent even if a holder panicked.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP_A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const IP_B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn locks_an_email_after_the_limit_until_the_window_passes() {
        let t = LoginThrottle::new(3, Duration::from_secs(60));
        let start = Instant::now();
        for i in 0..3 {
            assert!(t.check("a@x.io", IP_A, start).is_ok());
            // Each failure from another IP, so only the email counts.
            t.record_failure("a@x.io", if i % 2 == 0 { IP_A } else { IP_B }, start + Duration::from_secs(i));
        }
        let wait = t.check("a@x.io", IP_B, start + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(t.check("b@x.io", "10.0.0.3".parse().unwrap(), start).is_ok());
        // The oldest failure has left the window: one more try is allowed.
        assert!(t.check("a@x.io", IP_B, start + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn locks_an_ip_across_emails() {
        let t = LoginThrottle::new(2, Duration::from_secs(60));
        let now = Instant::now();
        t.record_failure("a@x.io", IP_A, now);
        t.record_failure("b@x.io", IP_A, now);
        assert!(t.check("c@x.io", IP_A, now).is_err());
        assert!(t.check("c@x.io", IP_B, now).is_ok());
    }

    #[test]
    fn success_clears_the_email() {
        let t = LoginThrottle::new(2, Duration::from_secs(60));
        let now = Instant::now();
        t.record_failure("a@x.io", IP_A, now);
        t.record_success("a@x.io");
        t.record_failure("a@x.io", IP_B, now);
        assert!(t.check("a@x.io", "10.0.0.9".parse().unwrap(), now).is_ok());
    }

    #[test]
    fn expired_entries_are_swept() {
        let t = LoginThrottle::new(1, Duration::from_secs(1));
        let now = Instant::now();
        // One key short of a sweep (the emails plus IP_A)...
        for i in 0..SWEEP_AT - 2 {
            t.record_failure(&format!("{i}@x.io"), IP_A, now);
        }
        assert_eq!(t.lock().failures.len(), SWEEP_AT - 1);
        // ...then a late failure triggers it and only its own keys survive.
        t.record_failure("late@x.io", IP_B, now + Duration::from_secs(5));
        assert_eq!(t.lock().failures.len(), 2);
    }
}
